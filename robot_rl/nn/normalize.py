"""Normalisation of state and action features from dataset statistics, saved with the model."""

from __future__ import annotations

import torch
from torch import nn


class Normalizer(nn.Module):
    """``minmax`` maps [min, max] to [-1, 1]; ``meanstd`` maps to zero mean, unit std.

    Statistics are buffers, so they travel in the policy's state dict. Near-constant features keep a
    minimum scale so that they neither blow up nor divide by zero.
    """

    def __init__(self, dim: int, mode: str = "minmax", min_scale: float = 1e-2) -> None:
        super().__init__()
        if mode not in ("minmax", "meanstd"):
            raise ValueError(f"normalisation mode must be 'minmax' or 'meanstd', got {mode!r}")
        self.mode = mode
        self.min_scale = min_scale
        self.register_buffer("center", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    @torch.no_grad()
    def fit(self, data: torch.Tensor) -> Normalizer:
        data = data.reshape(-1, data.shape[-1]).double()
        if self.mode == "minmax":
            lo, hi = data.min(0).values, data.max(0).values
            center, scale = (hi + lo) / 2, (hi - lo) / 2
        else:
            center, scale = data.mean(0), data.std(0)
        self.center.copy_(center.float())
        self.scale.copy_(scale.clamp_min(self.min_scale).float())
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.center) / self.scale

    def unnormalize(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.scale + self.center
