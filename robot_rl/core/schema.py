"""The Step/Episode schema that travels env -> actor -> replay -> learner unchanged.

Observations are nested dicts: ``{"images": {camera: uint8 HxWx3}, "state": float32 (D,)}``. In an
Episode every per-step field is stacked along time; the observation after the last action is kept
apart in ``final_obs`` so per-step arrays stay aligned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_rl.core.errors import ConfigError

# Per-step fields besides the observation, with their dtype and per-step shape (None: from the spec).
STEP_FIELDS: dict[str, tuple[np.dtype, tuple[int, ...] | None]] = {
    "action": (np.dtype(np.float32), None),
    "reward": (np.dtype(np.float32), ()),
    "terminated": (np.dtype(bool), ()),
    "truncated": (np.dtype(bool), ()),
    "success": (np.dtype(bool), ()),
    "intervention": (np.dtype(bool), ()),
    "policy_version": (np.dtype(np.int32), ()),
}

EPISODE_SOURCES = ("expert", "policy", "human")


def step_schema(obs_spec: dict[str, tuple[np.dtype, tuple[int, ...]]], action_dim: int) -> dict[str, dict]:
    """The per-step fields of episodes with these flat observation specs, as stores record them."""
    steps = {f"obs/{k}": {"dtype": np.dtype(d).str, "shape": list(s)} for k, (d, s) in obs_spec.items()}
    for name, (dtype, shape) in STEP_FIELDS.items():
        steps[name] = {"dtype": dtype.str, "shape": list(shape if shape is not None else (action_dim,))}
    return steps


def flatten_obs(obs: dict[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Nested observation dict -> ``{"images/front": ..., "state": ...}``."""
    flat: dict[str, np.ndarray] = {}
    for key, value in obs.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_obs(value, prefix=path + "/"))
        else:
            flat[path] = value
    return flat


def unflatten_obs(flat: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_obs`."""
    nested: dict[str, Any] = {}
    for path, value in flat.items():
        node = nested
        *parents, leaf = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


@dataclass
class EpisodeMeta:
    """What is known of an episode as a whole."""

    task: str
    instruction: str
    success: bool
    source: str = "expert"
    seed: int = -1

    def __post_init__(self) -> None:
        if self.source not in EPISODE_SOURCES:
            raise ConfigError(f"episode source {self.source!r} is not one of {EPISODE_SOURCES}")


@dataclass
class Episode:
    """One whole episode: per-step arrays of equal length, the final observation and metadata."""

    obs: dict[str, np.ndarray]  # flat keys, each (T, ...)
    action: np.ndarray  # (T, A)
    reward: np.ndarray  # (T,)
    terminated: np.ndarray
    truncated: np.ndarray
    success: np.ndarray
    intervention: np.ndarray
    policy_version: np.ndarray
    final_obs: dict[str, np.ndarray]  # flat keys, each (...)
    meta: EpisodeMeta
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.action.shape[0])

    def step_arrays(self) -> dict[str, np.ndarray]:
        """Every per-step array under its store path (``obs/images/front``, ``action``, ...)."""
        arrays = {f"obs/{k}": v for k, v in self.obs.items()}
        for name in STEP_FIELDS:
            arrays[name] = getattr(self, name)
        arrays.update(self.extras)
        return arrays

    def validate(self) -> None:
        """Raise ConfigError naming the first field whose length or values are wrong."""
        length = len(self)
        if length == 0:
            raise ConfigError("an episode must have at least one step")
        for name, arr in self.step_arrays().items():
            if arr.shape[:1] != (length,):
                raise ConfigError(
                    f"episode field {name!r} has {arr.shape[0] if arr.ndim else 0} steps, "
                    f"expected {length} (the length of 'action')"
                )
        if not np.all(np.isfinite(self.action)):
            bad = int(np.argwhere(~np.isfinite(self.action))[0, 0])
            raise ConfigError(f"episode action at step {bad} is not finite (NaN or inf)")
        if set(self.final_obs) != set(self.obs):
            raise ConfigError(
                f"final_obs keys {sorted(self.final_obs)} differ from obs keys {sorted(self.obs)}"
            )

    @classmethod
    def from_steps(
        cls,
        observations: list[dict[str, Any]],
        actions: list[np.ndarray],
        rewards: list[float],
        terminated: list[bool],
        truncated: list[bool],
        successes: list[bool],
        final_obs: dict[str, Any],
        meta: EpisodeMeta,
        interventions: list[bool] | None = None,
        policy_versions: list[int] | None = None,
    ) -> Episode:
        """Stack per-step records (nested observations) into an Episode."""
        length = len(actions)
        flat = [flatten_obs(o) for o in observations]
        obs = {k: np.stack([f[k] for f in flat]) for k in flat[0]} if flat else {}
        return cls(
            obs=obs,
            action=np.asarray(actions, dtype=np.float32).reshape(length, -1),
            reward=np.asarray(rewards, dtype=np.float32),
            terminated=np.asarray(terminated, dtype=bool),
            truncated=np.asarray(truncated, dtype=bool),
            success=np.asarray(successes, dtype=bool),
            intervention=np.asarray(interventions or [False] * length, dtype=bool),
            policy_version=np.asarray(policy_versions or [0] * length, dtype=np.int32),
            final_obs={k: np.asarray(v) for k, v in flatten_obs(final_obs).items()},
            meta=meta,
        )
