"""Image augmentation for training from demonstrations."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(images: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by up to ``pad`` pixels (replicate padding, then a random crop), as in DrQ.

    ``images``: (N, C, H, W) float. One integer shift per image, applied with a single gather.
    """
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=images.device)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=images.device)
    rows = (torch.arange(h, device=images.device)[None, :] + dy[:, None])  # (N, H)
    cols = (torch.arange(w, device=images.device)[None, :] + dx[:, None])  # (N, W)
    idx_rows = rows[:, None, :, None].expand(n, images.shape[1], h, w + 2 * pad)
    out = padded.gather(2, idx_rows)
    idx_cols = cols[:, None, None, :].expand(n, images.shape[1], h, w)
    return out.gather(3, idx_cols)
