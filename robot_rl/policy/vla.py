"""VLA: a Hugging Face vision-language backbone whose hidden states condition a flow-matching action
expert that also reads the proprio state (pi0 / SmolVLA style).

The backbone sees the camera images and the instruction through its own processor; learned queries
attention-pool its last hidden states into the expert's condition. The expert is ``FlowPolicy``
unchanged, so rectified-flow training, shortcut sampling and ReinFlow's noise-injected chains apply
to the VLA as they are. The backbone can be frozen or carry LoRA adapters (peft).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robot_rl.core.errors import ConfigError
from robot_rl.nn import AttentionPool, Normalizer, random_shift
from robot_rl.nn.hf_backbone import VisionLanguageBackbone, make_backbone
from robot_rl.policy.base import to_tensor
from robot_rl.policy.config import VLAConfig
from robot_rl.policy.flow import FlowPolicy

BACKBONE_DIR = "backbone"


class VLAObservationEncoder(nn.Module):
    def __init__(self, config: VLAConfig, state_norm: Normalizer, backbone: VisionLanguageBackbone) -> None:
        super().__init__()
        self.config = config
        self.state_norm = state_norm
        self.backbone = backbone
        self.pool = AttentionPool(backbone.hidden_size, config.pool_queries, 4 * config.image_feature_dim)
        self.out_dim = 4 * config.image_feature_dim + config.n_obs_steps * config.features.state_dim

    def _images(self, batch: dict[str, Any], b: int) -> list[list[np.ndarray]]:
        per_camera = []
        for cam in self.config.features.cameras:
            images = to_tensor(batch[f"obs/images/{cam}"])
            if self.training and self.config.augment_shift > 0:
                flat = images.reshape(-1, *images.shape[2:]).permute(0, 3, 1, 2).float()
                shifted = random_shift(flat, self.config.augment_shift).round().clamp(0, 255).to(torch.uint8)
                images = shifted.permute(0, 2, 3, 1).reshape(images.shape)
            per_camera.append(images.cpu().numpy())
        # per sample: every observation step of every camera, in a fixed order
        steps = per_camera[0].shape[1]
        return [[frames[i, t] for t in range(steps) for frames in per_camera] for i in range(b)]

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        state = to_tensor(batch["obs/state"]).float()
        b = state.shape[0]
        frozen = not any(p.requires_grad for p in self.backbone.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            hidden, mask = self.backbone(self._images(batch, b), [str(x) for x in batch["instruction"]])
        return torch.cat([self.pool(hidden.to(state.device), mask.to(state.device)),
                          self.state_norm(state).reshape(b, -1)], dim=-1)


class VLAPolicy(FlowPolicy):
    name = "vla"
    config_cls = VLAConfig

    def __init__(self, config: VLAConfig, backbone: VisionLanguageBackbone | None = None) -> None:
        if not config.use_language:
            raise ConfigError("a VLA always reads the instruction: use_language must be true")
        if backbone is None:
            backbone = self._make_backbone(config)
        super().__init__(config, encoder_factory=lambda cfg, norm: VLAObservationEncoder(cfg, norm, backbone))

    @staticmethod
    def _make_backbone(config: VLAConfig, weights: bool = True, path: Path | None = None) -> VisionLanguageBackbone:
        return make_backbone(path or config.backbone_path, config.tiny_backbone, config.backbone_preset,
                             config.backbone_image_size, config.freeze_backbone, config.lora_rank,
                             config.lora_targets, weights=weights)

    @classmethod
    def from_saved(cls, config: VLAConfig, directory: Path) -> VLAPolicy:
        """The architecture from a saved policy folder; the registry then loads its weights."""
        return cls(config, backbone=cls._make_backbone(config, weights=False, path=directory / BACKBONE_DIR))

    def save(self, directory: str | Path) -> Path:
        self.obs_encoder.backbone.save_architecture(Path(directory) / BACKBONE_DIR)
        return super().save(directory)
