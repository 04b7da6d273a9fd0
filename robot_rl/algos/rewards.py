"""Rewards for RL fine-tuning: the env's sparse success, the progress critic's dense delta, or a
weighted mix; and random network distillation (RND) as an optional exploration bonus."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class RewardConfig:
    """What a decision (one executed chunk) is rewarded with."""

    kind: str = "critic"
    """``sparse`` (success from the env), ``critic`` (the critic's progress delta) or ``mix`` (both)."""
    critic_weight: float = 1.0
    """Scale of the critic's progress delta (``critic`` and ``mix``)."""
    success_reward: float = 1.0
    """Reward of the decision in which the task succeeds (``sparse`` and ``mix``)."""
    done: str = "env"
    """Where episode ends come from: ``env`` (its success test) or ``critic`` (its done head)."""
    done_threshold: float | None = None
    """Done probability above which the critic ends an episode (None: the critic's own threshold)."""
    normalize: bool = True
    """Scale rewards by the running std of the discounted return."""
    rnd_coef: float = 0.0
    """Weight of the RND novelty bonus (0: off)."""
    takeover_penalty: float = 0.5
    """rl.algo=chunk: subtracted from the reward of the policy's last step before an operator takes over (RLIF:
    the operator's judgment that the policy was about to fail is a reward; help that opens an episode is not
    a takeover). Without takeovers it changes nothing."""

    def validate(self) -> None:
        if self.takeover_penalty < 0:
            raise ValueError(f"reward takeover_penalty must be >= 0, got {self.takeover_penalty}")
        if self.kind not in ("sparse", "critic", "mix"):
            raise ValueError(f"reward kind must be 'sparse', 'critic' or 'mix', got {self.kind!r}")
        if self.done not in ("env", "critic"):
            raise ValueError(f"reward done must be 'env' or 'critic', got {self.done!r}")

    @property
    def needs_critic(self) -> bool:
        return self.kind in ("critic", "mix") or self.done == "critic"


def takeover_steps(interventions: np.ndarray) -> np.ndarray:
    """The policy's steps right before each takeover: step t - 1 wherever an operator starts acting at step t
    after the policy had acted (the opening help of an episode is not one)."""
    flags = np.asarray(interventions, bool)
    if not len(flags):
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(flags[1:] & ~flags[:-1]) + 1
    return starts - 1


def combine_rewards(success: np.ndarray, progress_delta: np.ndarray | None, cfg: RewardConfig) -> np.ndarray:
    """Per-decision rewards from the success flags (the task succeeded during the decision) and the
    critic's progress delta over it."""
    rewards = np.zeros(success.shape, dtype=np.float32)
    if cfg.kind in ("sparse", "mix"):
        rewards += cfg.success_reward * success.astype(np.float32)
    if cfg.kind in ("critic", "mix"):
        if progress_delta is None:
            raise ValueError(f"reward kind {cfg.kind!r} needs the critic's progress deltas")
        rewards += cfg.critic_weight * progress_delta.astype(np.float32)
    return rewards


class RND(nn.Module):
    """Random network distillation (Burda et al. 2018): the bonus is how badly a trained predictor
    matches a fixed random network on a feature vector, scaled by its running std."""

    def __init__(self, in_dim: int, out_dim: int = 64, hidden: int = 256) -> None:
        super().__init__()

        def net() -> nn.Module:
            return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

        self.target, self.predictor = net().requires_grad_(False), net()
        self.register_buffer("err_var", torch.ones(()))
        self.register_buffer("count", torch.zeros(()))

    def error(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.predictor(x) - self.target(x)) ** 2).mean(-1)

    @torch.no_grad()
    def bonus(self, x: torch.Tensor) -> torch.Tensor:
        err = self.error(x)
        self.count += 1
        self.err_var.lerp_(err.var() if err.numel() > 1 else err.pow(2).mean(), 1.0 / float(min(self.count, 100)))
        return err / (self.err_var.sqrt() + 1e-8)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.error(x).mean()
