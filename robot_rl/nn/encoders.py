"""Image encoders: a small ResNet-style CNN with spatial-softmax keypoints, or any HF vision tower."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class SpatialSoftmax(nn.Module):
    """Per channel, the expected (x, y) image position under a softmax over the feature map."""

    def __init__(self, channels: int, height: int, width: int) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1), persistent=False)
        self.channels = channels

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        attn = torch.softmax(feats.flatten(2), dim=-1)  # (B, C, HW)
        return (attn @ self.grid).flatten(1)  # (B, 2C)


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(8, channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(8, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class ConvImageEncoder(nn.Module):
    """uint8-range float images (B, 3, H, W) -> features (B, out_dim). Small enough for CPU training."""

    def __init__(self, image_size: int, out_dim: int = 64, channels: int = 16, keypoints: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            # 16/32 channels train 4x faster than 32/64 on a 2-core CPU (fwd+bwd of 128 84x84 images)
            nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.GroupNorm(8, channels), nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * channels), nn.ReLU(),
            ResBlock(2 * channels),
            nn.Conv2d(2 * channels, keypoints, 1),
        )
        size = (image_size + 1) // 2
        size = (size + 1) // 2
        self.pool = SpatialSoftmax(keypoints, size, size)
        self.proj = nn.Sequential(nn.Linear(2 * keypoints, out_dim), nn.LayerNorm(out_dim))
        self.out_dim = out_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images / 127.5 - 1.0
        return self.proj(self.pool(self.stem(x)))


class HFVisionEncoder(nn.Module):
    """Any Hugging Face vision tower (SigLIP, CLIP, DINOv2, ...), from a local directory or a config dict.

    Pooled output (or mean of the last hidden states) -> linear projection to ``out_dim``.
    """

    def __init__(self, image_size: int, out_dim: int = 64, path: str | None = None,
                 config: dict | None = None, freeze: bool = False) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if path is not None:
            if not Path(path).is_dir():
                raise FileNotFoundError(f"vision tower directory {path!r} does not exist (nothing is downloaded)")
            self.tower = AutoModel.from_pretrained(path, local_files_only=True)
        elif config is not None:
            cfg = dict(config)
            self.tower = AutoModel.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg))
        else:
            raise ValueError("HFVisionEncoder needs a local path or a config dict")
        if hasattr(self.tower, "vision_model") and not hasattr(self.tower, "embeddings"):
            self.tower = self.tower.vision_model
        self.input_size = int(getattr(self.tower.config, "image_size", image_size))
        hidden = int(self.tower.config.hidden_size)
        self.proj = nn.Sequential(nn.Linear(hidden, out_dim), nn.LayerNorm(out_dim))
        self.out_dim = out_dim
        if freeze:
            self.tower.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images / 127.5 - 1.0
        if x.shape[-1] != self.input_size:
            x = nn.functional.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                                          align_corners=False)
        out = self.tower(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state.mean(dim=1)
        return self.proj(pooled)


def build_image_encoder(kind: str, image_size: int, out_dim: int, hf_path: str | None = None,
                        hf_config: dict | None = None, freeze: bool = False) -> nn.Module:
    if kind == "conv":
        return ConvImageEncoder(image_size, out_dim)
    if kind == "hf":
        return HFVisionEncoder(image_size, out_dim, path=hf_path, config=hf_config, freeze=freeze)
    raise ValueError(f"image encoder must be 'conv' or 'hf', got {kind!r}")
