"""The policy registry: a new policy type is one module plus one ``register_policy`` call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import draccus
from safetensors.torch import load_model

from robot_rl.core.errors import ConfigError
from robot_rl.policy.base import CONFIG_FILE, WEIGHTS_FILE, Policy
from robot_rl.policy.config import PolicyConfig

_POLICIES: dict[str, type[Policy]] = {}


def register_policy(cls: type[Policy]) -> type[Policy]:
    if cls.name in _POLICIES:
        raise ValueError(f"policy {cls.name!r} is already registered")
    _POLICIES[cls.name] = cls
    return cls


def policy_names() -> list[str]:
    return list(_POLICIES)


def policy_class(name: str) -> type[Policy]:
    try:
        return _POLICIES[name]
    except KeyError:
        raise ConfigError(f"unknown policy {name!r}; registered policies: {', '.join(_POLICIES)}") from None


def make_policy(name: str, config: PolicyConfig | None = None, **fields: Any) -> Policy:
    cls = policy_class(name)
    config = config or cls.config_cls(**fields)
    if not isinstance(config, cls.config_cls):
        raise ConfigError(f"policy {name!r} needs a {cls.config_cls.__name__}, got {type(config).__name__}")
    return cls(config)


def load_policy(directory: str | Path) -> Policy:
    """Rebuild a saved policy (config + safetensors weights); reads no pickles."""
    directory = Path(directory)
    meta_path = directory / CONFIG_FILE
    if not meta_path.is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise ConfigError(f"{directory} is not a saved policy (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{meta_path} is not valid JSON: {exc}") from None
    cls = policy_class(meta.get("type", "?"))
    config = draccus.decode(cls.config_cls, meta["config"])
    if getattr(cls, "loads_own_weights", False):  # a composite (a frozen base policy in a subfolder + heads)
        policy = cls.from_saved(config, directory)
        policy.eval()
        return policy
    policy = cls.from_saved(config, directory) if hasattr(cls, "from_saved") else cls(config)
    missing, unexpected = load_model(policy, str(directory / WEIGHTS_FILE), strict=False)
    if missing or unexpected:
        raise ConfigError(f"{directory}: weights do not match the config (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    policy.eval()
    return policy
