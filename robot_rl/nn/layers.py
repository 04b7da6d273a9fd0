"""MLPs, time embeddings and the conditional chunk denoiser shared by flow and diffusion policies."""

from __future__ import annotations

import math

import torch
from torch import nn


class MLP(nn.Sequential):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int = 2, act: type[nn.Module] = nn.Mish):
        mods: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers - 1):
            mods += [nn.Linear(dim, hidden), act()]
            dim = hidden
        mods.append(nn.Linear(dim, out_dim))
        super().__init__(*mods)


class SinusoidalEmbedding(nn.Module):
    """Embedding of a scalar in [0, 1] (flow time, normalised diffusion step, step size)."""

    def __init__(self, dim: int, max_period: float = 1000.0) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half) / max(half - 1, 1))
        self.register_buffer("freqs", freqs * 1000.0, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t.float().reshape(-1, 1) * self.freqs[None]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class FiLMBlock(nn.Module):
    """A residual MLP block whose normalised input is scaled and shifted by the condition."""

    def __init__(self, dim: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.film = nn.Linear(cond_dim, 2 * dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.Mish(), nn.Linear(dim, dim))
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(cond).chunk(2, dim=-1)
        return h + self.mlp(self.norm(h) * (1 + scale) + shift)


class ChunkDenoiser(nn.Module):
    """Predicts a velocity (flow) or noise (diffusion) for a flattened action chunk.

    Inputs: ``x`` (B, H*A), one or more scalars in [0, 1] per sample (time, and for shortcut models the
    step size), and a condition vector (B, C) from the observation encoder.
    """

    def __init__(self, chunk_dim: int, cond_dim: int, hidden: int = 512, blocks: int = 3,
                 n_scalars: int = 1, embed_dim: int = 64) -> None:
        super().__init__()
        self.n_scalars = n_scalars
        self.embed = SinusoidalEmbedding(embed_dim)
        cond_in = cond_dim + n_scalars * embed_dim
        self.cond_mlp = MLP(cond_in, hidden, hidden, layers=2)
        self.inp = nn.Linear(chunk_dim, hidden)
        self.blocks = nn.ModuleList(FiLMBlock(hidden, hidden) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, chunk_dim))

    def forward(self, x: torch.Tensor, scalars: list[torch.Tensor], cond: torch.Tensor) -> torch.Tensor:
        if len(scalars) != self.n_scalars:
            raise ValueError(f"expected {self.n_scalars} scalar inputs, got {len(scalars)}")
        emb = [self.embed(s.expand(x.shape[0]) if s.dim() == 0 else s) for s in scalars]
        c = self.cond_mlp(torch.cat([cond, *emb], dim=-1))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, c)
        return self.out(h)


class AttentionPool(nn.Module):
    """Learned queries attend over the backbone's tokens (padding masked) -> one vector."""

    def __init__(self, dim: int, queries: int, out_dim: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, dim) * 0.02)
        heads = next(h for h in (8, 4, 2, 1) if dim % h == 0)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.proj = nn.Sequential(nn.Linear(queries * dim, out_dim), nn.LayerNorm(out_dim))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self.queries[None].expand(hidden.shape[0], -1, -1)
        out, _ = self.attn(q, hidden, hidden, key_padding_mask=~mask.bool())
        return self.proj(out.flatten(1))
