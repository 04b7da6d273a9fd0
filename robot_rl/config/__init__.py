"""Typed dataclass configs, YAML loading and ``--a.b=value`` overrides (draccus)."""

from robot_rl.config.base import config_to_dict, load_config
from robot_rl.config.env import EnvConfig

__all__ = ["EnvConfig", "config_to_dict", "load_config"]
