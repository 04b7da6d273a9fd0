"""Gaussian sampling chains: what RL fine-tuning needs of flow and diffusion policies.

Sampling an action chunk is a chain x_0 -> x_1 -> ... -> x_K whose every transition is Gaussian,
x_{k+1} ~ N(mean_k(x_k), std_k^2). ``Chain`` keeps the states, means and stds and the per-transition
log-probabilities, and ``gaussian_log_prob`` recomputes them for PPO-style ratios (ReinFlow, DPPO).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Chain:
    xs: torch.Tensor  # (B, K+1, D): x_0 (the initial noise) ... x_K (the normalised action chunk)
    means: torch.Tensor  # (B, K, D)
    stds: torch.Tensor  # (B, K, D); zero where a transition is deterministic
    log_probs: torch.Tensor | None  # (B, K) per-transition log densities; None if any std is zero
    init_log_prob: torch.Tensor  # (B,) log density of x_0 under N(0, I)

    @property
    def actions(self) -> torch.Tensor:
        return self.xs[:, -1]

    def total_log_prob(self) -> torch.Tensor:
        """log p(x_0, ..., x_K): the exact density of the whole sampled chain."""
        if self.log_probs is None:
            raise ValueError("the chain has deterministic transitions: it has no density")
        return self.init_log_prob + self.log_probs.sum(dim=1)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Sum over the last dim of log N(x; mean, std^2) (diagonal)."""
    var = std**2
    return (-0.5 * ((x - mean) ** 2 / var + torch.log(2 * math.pi * var))).sum(dim=-1)


def standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    return (-0.5 * (x**2 + math.log(2 * math.pi))).sum(dim=-1)


def run_chain(x0: torch.Tensor, transitions, generator: torch.Generator | None = None) -> Chain:
    """Sample a chain from ``x0``; ``transitions`` yields, for step k, a function x_k -> (mean, std)."""
    xs, means, stds = [x0], [], []
    x = x0
    for step in transitions:
        mean, std = step(x)
        std = torch.as_tensor(std, dtype=x.dtype, device=x.device).expand_as(mean)
        noise = torch.randn(mean.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = mean + std * noise
        xs.append(x)
        means.append(mean)
        stds.append(std)
    means_t, stds_t, xs_t = torch.stack(means, 1), torch.stack(stds, 1), torch.stack(xs, 1)
    log_probs = None
    if bool((stds_t > 0).all()):
        log_probs = gaussian_log_prob(xs_t[:, 1:], means_t, stds_t)
    return Chain(xs_t, means_t, stds_t, log_probs, standard_normal_log_prob(x0))
