"""The progress critic: given observations A and B and a language goal, how much closer to done B is
than A (a delta in [-1, 1], negative when B regressed) and whether B is done.

Design: a Siamese pair model. Each observation (all its cameras, optional in-context reference frames,
and the instruction) goes through the VLM backbone once, is attention-pooled, and read by a progress
head ``v`` in [0, 1] and a done head. ``delta(A, B) = v(B) - v(A)``: exactly antisymmetric, exactly 0
for identical frames, and a trajectory's value curve costs one backbone pass per frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import draccus
import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from robot_rl import __version__
from robot_rl.core.errors import ConfigError
from robot_rl.critic.config import CriticConfig
from robot_rl.nn import AttentionPool
from robot_rl.nn.hf_backbone import make_backbone

CONFIG_FILE, WEIGHTS_FILE, BACKBONE_DIR = "config.json", "model.safetensors", "backbone"


@dataclass
class CriticOutput:
    delta: torch.Tensor  # (N,) progress from A to B, in [-1, 1]
    done: torch.Tensor  # (N,) probability that B is done
    value_a: torch.Tensor  # (N,) progress of A in [0, 1]
    value_b: torch.Tensor


class ProgressCritic(nn.Module):
    def __init__(self, config: CriticConfig, weights: bool = True, backbone_dir: Path | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = make_backbone(backbone_dir or config.backbone_path, config.tiny_backbone,
                                      config.backbone_preset, config.backbone_image_size, config.freeze_backbone,
                                      config.lora_rank, config.lora_targets, weights=weights)
        width = 4 * config.head_dim
        self.pool = AttentionPool(self.backbone.hidden_size, config.pool_queries, width)
        self.value_head = nn.Sequential(nn.Linear(width, config.head_dim), nn.Mish(), nn.Linear(config.head_dim, 1))
        self.done_head = nn.Sequential(nn.Linear(width, config.head_dim), nn.Mish(), nn.Linear(config.head_dim, 1))
        self.reference: list[np.ndarray] = []

    def set_reference(self, frames: list[dict[str, np.ndarray]]) -> None:
        """In-context reference: observations (camera -> image) of one successful episode, in time order."""
        if len(frames) != self.config.reference_frames:
            raise ConfigError(f"the critic takes {self.config.reference_frames} reference frames, got {len(frames)}")
        self.reference = [f[c] for f in frames for c in self.config.cameras]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _check(self, frames: dict[str, np.ndarray]) -> int:
        n = None
        for cam in self.config.cameras:
            if cam not in frames:
                raise ConfigError(f"camera {cam!r} is missing: the critic reads {self.config.cameras}")
            shape = tuple(frames[cam].shape)
            if len(shape) != 4 or shape[3] != 3:
                raise ConfigError(f"images of camera {cam!r} must be (N, H, W, 3) uint8, got {shape}")
            n = shape[0] if n is None else n
            if shape[0] != n:
                raise ConfigError(f"cameras hold different numbers of frames: {shape[0]} vs {n}")
        return int(n or 0)

    def encode(self, frames: dict[str, np.ndarray], instructions: list[str]) -> torch.Tensor:
        """Pooled features (N, W) of N observations (camera -> (N, H, W, 3) uint8) under their instructions."""
        n = self._check(frames)
        if len(instructions) != n:
            raise ConfigError(f"{n} observations need {n} instructions, got {len(instructions)}")
        images = [self.reference + [np.asarray(frames[c][i]) for c in self.config.cameras] for i in range(n)]
        hidden, mask = self.backbone(images, [str(t) for t in instructions])
        return self.pool(hidden.to(self.device), mask.to(self.device))

    def heads(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(progress in [0, 1], done logit) per feature row."""
        return torch.sigmoid(self.value_head(z)).squeeze(-1), self.done_head(z).squeeze(-1)

    def forward(self, frames_a: dict[str, np.ndarray], frames_b: dict[str, np.ndarray],
                instructions: list[str]) -> CriticOutput:
        """Score N pairs in one backbone pass over the 2N observations."""
        n = self._check(frames_a)
        both = {c: np.concatenate([np.asarray(frames_a[c]), np.asarray(frames_b[c])]) for c in self.config.cameras}
        value, done_logit = self.heads(self.encode(both, list(instructions) * 2))
        return CriticOutput(value[n:] - value[:n], torch.sigmoid(done_logit[n:]), value[:n], value[n:])

    # ------------------------------------------------------------------------------ save / load
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backbone.save_architecture(directory / BACKBONE_DIR)
        save_model(self, str(directory / WEIGHTS_FILE))
        if self.reference:
            np.save(directory / "reference.npy", np.stack(self.reference))
        tmp = directory / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps({"type": "progress_critic", "robot_rl_version": __version__,
                                   "config": draccus.encode(self.config)}, indent=2))
        tmp.replace(directory / CONFIG_FILE)  # written last: a half-saved critic has no config
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ProgressCritic:
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
            raise ConfigError(f"{directory} is not a saved critic (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
        meta = json.loads((directory / CONFIG_FILE).read_text())
        if meta.get("type") != "progress_critic":
            raise ConfigError(f"{directory} holds a {meta.get('type')!r}, not a progress critic")
        config = draccus.decode(CriticConfig, meta["config"])
        critic = cls(config, weights=False, backbone_dir=directory / BACKBONE_DIR)
        missing, unexpected = load_model(critic, str(directory / WEIGHTS_FILE), strict=False)
        if missing or unexpected:
            raise ConfigError(f"{directory}: weights do not match the config ({missing[:3]}, {unexpected[:3]})")
        if (directory / "reference.npy").is_file():
            critic.reference = list(np.load(directory / "reference.npy"))
        critic.eval()
        return critic
