"""Which keys of someone else's dataset are our cameras, state and action: the feature map of an import.

A map is a small YAML file (or the same dict)::

    cameras:                 # our camera name: the dataset's key (a video/image feature)
      front: observation.images.top
      wrist: observation.images.wrist
    state: [observation.state, observation.gripper]   # concatenated in this order into obs/state
    action: action
    success: next.success    # optional per-step flags (bool or 0/1)
    intervention: null
    reward: next.reward      # optional per-step reward (default 0, or 1 on the last step of a success)
    task: so100_pick         # optional: our task name for the episodes (default: the dataset's name)
    instruction: null        # optional: one instruction for every episode (default: the dataset's tasks)
    image_size: 96           # optional: resize every camera to this square size (default: keep)

Every importer checks the map against the dataset before it writes anything, and names the key that is
missing together with the keys the dataset has.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from robot_rl.core.errors import ConfigError


@dataclass
class FeatureMap:
    """Dataset keys for each of our fields (see the module's docstring)."""

    cameras: dict[str, str] = field(default_factory=dict)
    state: list[str] = field(default_factory=list)
    action: list[str] = field(default_factory=list)
    success: str | None = None
    intervention: str | None = None
    reward: str | None = None
    task: str | None = None
    instruction: str | None = None
    image_size: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "the feature map") -> FeatureMap:
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must be a mapping of field names, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where} has unknown fields {unknown}; expected some of {sorted(known)}")
        values = dict(data)
        for name in ("state", "action"):
            v = values.get(name)
            if isinstance(v, str):
                values[name] = [v]
            elif v is None:
                values[name] = []
            elif not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                raise ConfigError(f"{where}: {name!r} must be a key or a list of keys, got {v!r}")
        cams = values.get("cameras") or {}
        if isinstance(cams, list):  # a list of keys: camera names are their last dotted part
            cams = {str(k).replace("/", ".").split(".")[-1]: str(k) for k in cams}
        if not isinstance(cams, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in cams.items()):
            raise ConfigError(f"{where}: 'cameras' must map our camera names to dataset keys, got {cams!r}")
        for name in cams:
            if not name or "/" in name:
                raise ConfigError(f"{where}: camera name {name!r} must be non-empty and without '/'")
        values["cameras"] = dict(cams)
        size = values.get("image_size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
            raise ConfigError(f"{where}: image_size must be an integer >= 8, got {size!r}")
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> FeatureMap:
        return cls.from_dict(load_yaml(path, "the feature map") or {}, where=str(path))

    def filled(self, default: FeatureMap) -> FeatureMap:
        """This map with every key field it leaves empty taken from ``default`` (the format's own names)."""
        return replace(self, cameras=self.cameras or default.cameras, state=self.state or default.state,
                       action=self.action or default.action, success=self.success or default.success,
                       intervention=self.intervention or default.intervention, reward=self.reward or default.reward)

    def keys(self) -> list[str]:
        """Every dataset key the map reads."""
        optional = [k for k in (self.success, self.intervention, self.reward) if k]
        return [*self.cameras.values(), *self.state, *self.action, *optional]

    def check(self, available: dict[str, Any] | list[str], where: str) -> None:
        """ConfigError naming the first mapped key that ``where`` lacks, and the keys it has."""
        if not self.action:
            raise ConfigError("the feature map names no action key")
        if not self.state:
            raise ConfigError("the feature map names no state key")
        for key in self.keys():
            if key not in available:
                raise ConfigError(f"{where} has no feature {key!r} (the feature map asks for it); it has "
                                  f"{sorted(available)}")


def load_yaml(path: str | Path, what: str) -> Any:
    """A small YAML file the user wrote (a feature map, a bag mapping); ConfigError in one line when it cannot
    be read or parsed."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {' '.join(str(exc).split())}") from None


def camera_size_note(sizes: set[tuple[int, int]], image_size: int | None) -> str | None:
    """The summary note for cameras of these (height, width) sizes when pretraining could not use them as they
    are (it needs one square size), or None."""
    if image_size is not None or (len(sizes) <= 1 and all(h == w for h, w in sizes)):
        return None
    return f"the cameras are {sorted(sizes)} (height, width): pretraining needs one square size; import again " \
           "with --image-size N"


def resize_frames(frames: np.ndarray, size: int | None) -> np.ndarray:
    """(T, H, W, 3) uint8 frames resized to ``size`` x ``size`` (area filter); unchanged when None or equal."""
    if size is None or frames.shape[1:3] == (size, size):
        return frames
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])


def as_flags(values: np.ndarray | None, length: int, name: str) -> np.ndarray:
    """Per-step booleans from a bool / 0-1 column (or all False when the map names none)."""
    if values is None:
        return np.zeros(length, dtype=bool)
    values = np.asarray(values).reshape(length, -1)[:, 0]
    if values.dtype != bool and not np.isin(values, (0, 1)).all():
        raise ConfigError(f"feature {name!r} must hold booleans or 0/1, got values {np.unique(values)[:5]}")
    return values.astype(bool)
