"""The policy interface: ``act(batch) -> action chunks`` and ``loss(batch)``, plus save/load.

A batch is a dict with, for each camera, ``obs/images/<cam>`` (B, n_obs, H, W, 3) uint8, ``obs/state``
(B, n_obs, D), ``instruction`` (a list of B strings) and, for training, ``action`` (B, horizon, A).
Numpy arrays or torch tensors are accepted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import draccus
import numpy as np
import torch
from safetensors.torch import save_model
from torch import nn

from robot_rl import __version__
from robot_rl.core.errors import ConfigError
from robot_rl.nn import HashedInstructionEncoder, Normalizer, build_image_encoder, random_shift
from robot_rl.policy.config import PolicyConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def to_tensor(x: Any, device: torch.device | str = "cpu") -> torch.Tensor:
    return x.to(device) if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), device=device)


class ObservationEncoder(nn.Module):
    """Camera images, proprio state and instruction -> one condition vector per sample."""

    def __init__(self, config: PolicyConfig, state_norm: Normalizer) -> None:
        super().__init__()
        f = config.features
        self.config = config
        self.state_norm = state_norm
        self.cameras = nn.ModuleDict({
            cam: build_image_encoder(config.image_encoder, f.image_size, config.image_feature_dim,
                                     config.hf_vision_path, config.hf_vision_config)
            for cam in f.cameras
        })
        self.language = HashedInstructionEncoder(32) if config.use_language else None
        self.out_dim = config.n_obs_steps * (len(f.cameras) * config.image_feature_dim + f.state_dim)
        self.out_dim += 32 if config.use_language else 0

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        state = to_tensor(batch["obs/state"]).float()
        b, n = state.shape[:2]
        parts = []
        for cam, encoder in self.cameras.items():
            images = to_tensor(batch[f"obs/images/{cam}"])
            x = images.reshape(b * n, *images.shape[2:]).permute(0, 3, 1, 2).float()
            if self.training and self.config.augment_shift > 0:
                x = random_shift(x, self.config.augment_shift)
            parts.append(encoder(x).reshape(b, -1))
        parts.append(self.state_norm(state).reshape(b, -1))
        if self.language is not None:
            parts.append(self.language(list(batch["instruction"])))
        return torch.cat(parts, dim=-1)


class Policy(nn.Module):
    """Base class of every action-chunk policy."""

    name: ClassVar[str]
    config_cls: ClassVar[type[PolicyConfig]]
    cloned: ClassVar[bool] = True
    """Built from a config and trained by behaviour cloning (a steered policy wraps one instead)."""

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        try:
            config.validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.config = config
        f = config.features
        self.state_norm = Normalizer(f.state_dim, "meanstd")
        self.action_norm = Normalizer(f.action_dim, "minmax")
        self.chunk_dim = config.horizon * f.action_dim

    # ----------------------------------------------------------------------------- to implement
    def encode(self, batch: dict[str, Any]) -> torch.Tensor:
        """Condition vectors (B, C) for a batch of observations."""
        raise NotImplementedError

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def sample(self, cond: torch.Tensor, steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalised flattened action chunks (B, H*A)."""
        raise NotImplementedError

    def decode_noise(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The deterministic map from an initial noise (B, H*A) to normalised flat chunks (B, H*A): what a
        noise-space actor steers (DSRL)."""
        raise ConfigError(f"policy {self.name!r} cannot be steered in noise space: it has no noise -> chunk map")

    def invert_noise(self, cond: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        """The initial noise that ``decode_noise`` maps to these normalised flat chunks (B, H*A): where a
        noise-space actor must point to act as an operator did."""
        raise ConfigError(f"policy {self.name!r} cannot invert its noise -> chunk map")

    def chunk_loss(self, cond: torch.Tensor, chunks: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """The cloning loss of normalised flat chunks (B, H*A) given condition vectors: what trains the action
        head on cached features, with the observation encoder left as it is."""
        raise ConfigError(f"policy {self.name!r} has no cloning loss on condition vectors")

    def head_parameters(self) -> list[torch.nn.Parameter]:
        """The action head's parameters: every parameter outside the observation encoder."""
        encoder = getattr(self, "obs_encoder", None)
        skip = {id(p) for p in encoder.parameters()} if encoder is not None else set()
        return [p for p in self.parameters() if id(p) not in skip]

    # -------------------------------------------------------------------------------- shared
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def fit_normalizers(self, states: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor) -> None:
        self.state_norm.fit(to_tensor(states).float())
        self.action_norm.fit(to_tensor(actions).float())

    def normalized_actions(self, batch: dict[str, Any]) -> torch.Tensor:
        actions = to_tensor(batch["action"], self.device).float()
        return self.action_norm(actions).reshape(actions.shape[0], -1)

    def check_batch(self, batch: dict[str, Any], with_actions: bool = False) -> None:
        """Raise ConfigError naming the first missing key or wrong shape."""
        f, n = self.config.features, self.config.n_obs_steps
        if "obs/state" not in batch:
            raise ConfigError("batch has no 'obs/state'")
        state = batch["obs/state"]
        b = state.shape[0]
        if tuple(state.shape[1:]) != (n, f.state_dim):
            raise ConfigError(
                f"obs/state has shape {tuple(state.shape)}, the policy expects (B, {n}, {f.state_dim})"
            )
        for cam in f.cameras:
            key = f"obs/images/{cam}"
            if key not in batch:
                raise ConfigError(f"camera {cam!r} is missing: the policy reads {f.cameras}")
            shape = tuple(batch[key].shape)
            if shape != (b, n, f.image_size, f.image_size, 3):
                raise ConfigError(
                    f"{key} has shape {shape}, the policy expects ({b}, {n}, {f.image_size}, {f.image_size}, 3)"
                )
        if self.config.use_language and len(batch.get("instruction", [])) != b:
            raise ConfigError(f"batch needs 'instruction': a list of {b} strings")
        if with_actions:
            shape = tuple(batch["action"].shape)
            if shape[1:] != (self.config.horizon, f.action_dim):
                raise ConfigError(
                    f"action has shape {shape}, the policy expects (B, {self.config.horizon}, {f.action_dim})"
                )

    @torch.no_grad()
    def act(self, batch: dict[str, Any], steps: int | None = None,
            generator: torch.Generator | None = None) -> np.ndarray:
        """Action chunks (B, horizon, action_dim) in the env's units."""
        self.check_batch(batch)
        was_training = self.training
        self.eval()
        cond = self.encode(batch)
        chunk = self.sample(cond, steps=steps, generator=generator)
        actions = self.action_norm.unnormalize(chunk.reshape(-1, self.config.horizon, self.config.features.action_dim))
        self.train(was_training)
        return actions.cpu().numpy()

    # ------------------------------------------------------------------------------ save / load
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"type": self.name, "robot_rl_version": __version__, "config": draccus.encode(self.config)}
        tmp = directory / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        save_model(self, str(directory / WEIGHTS_FILE))
        tmp.replace(directory / CONFIG_FILE)  # the config appears last: a half-saved policy has none
        return directory
