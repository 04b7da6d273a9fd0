"""A small trainable instruction encoder that needs no pretrained tokenizer (for non-VLM policies)."""

from __future__ import annotations

import re
import zlib

import torch
from torch import nn


class HashedInstructionEncoder(nn.Module):
    """Bag of hashed lower-case words -> mean embedding. crc32 keeps hashes stable across processes."""

    def __init__(self, dim: int = 32, buckets: int = 1024) -> None:
        super().__init__()
        self.buckets = buckets
        self.embedding = nn.EmbeddingBag(buckets, dim, mode="mean")

    def token_ids(self, text: str) -> list[int]:
        words = re.findall(r"[a-z0-9]+", text.lower()) or ["<empty>"]
        return [zlib.crc32(w.encode()) % self.buckets for w in words]

    def forward(self, instructions: list[str]) -> torch.Tensor:
        ids = [self.token_ids(t) for t in instructions]
        flat = torch.tensor([i for seq in ids for i in seq], dtype=torch.long, device=self.embedding.weight.device)
        offsets = torch.tensor([0, *torch.tensor([len(s) for s in ids]).cumsum(0)[:-1].tolist()],
                               dtype=torch.long, device=flat.device)
        return self.embedding(flat, offsets)
