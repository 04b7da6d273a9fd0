"""Action-chunk policies: flow (rectified flow, shortcut), diffusion (DDPM/DDIM), a VLA, and any of them
steered by small heads trained on a chunk critic."""

from robot_rl.policy.base import Policy
from robot_rl.policy.chain import Chain
from robot_rl.policy.config import (
    DiffusionConfig,
    FlowConfig,
    PolicyConfig,
    PolicyFeatures,
    ShortcutConfig,
    VLAConfig,
)
from robot_rl.policy.diffusion import DiffusionPolicy
from robot_rl.policy.flow import FlowPolicy, ShortcutPolicy
from robot_rl.policy.registry import load_policy, make_policy, policy_class, policy_names, register_policy
from robot_rl.policy.steered import SteeredConfig, SteeredPolicy
from robot_rl.policy.vla import VLAPolicy

for _cls in (FlowPolicy, ShortcutPolicy, DiffusionPolicy, VLAPolicy, SteeredPolicy):
    register_policy(_cls)

__all__ = [
    "Chain",
    "DiffusionConfig",
    "DiffusionPolicy",
    "FlowConfig",
    "FlowPolicy",
    "Policy",
    "PolicyConfig",
    "PolicyFeatures",
    "ShortcutConfig",
    "ShortcutPolicy",
    "SteeredConfig",
    "SteeredPolicy",
    "VLAConfig",
    "VLAPolicy",
    "load_policy",
    "make_policy",
    "policy_class",
    "policy_names",
    "register_policy",
]
