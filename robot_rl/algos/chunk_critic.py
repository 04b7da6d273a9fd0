"""A critic over action chunks (Q-chunking): Q(observation features, executed chunk), an ensemble of small
LayerNorm MLPs with target copies and a pessimistic target (the min over a random subset, as RLPD).

A decision executes ``h`` actions; its target sums the per-step rewards with discount and bootstraps at
gamma^k, k the steps actually executed: k = h when the episode goes on, k < h when it was truncated inside the
chunk (bootstrapping from the final observation), no bootstrap when it terminated. Inputs are features from
the frozen policy's encoder, computed once per step, so an update never runs a CNN or a backbone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from robot_rl.nn import QEnsemble


@dataclass
class ChunkCriticConfig:
    """The chunk critic's size and update rule."""

    ensemble: int = 5
    """Q-networks in the ensemble (RLPD uses 10; 5 keeps CPU updates cheap)."""
    min_over: int = 2
    """The target is the min over this many randomly chosen target networks (RLPD: 2 of 10)."""
    hidden_dim: int = 256
    layers: int = 2
    """Hidden layers per Q-network (each Linear -> LayerNorm -> ReLU)."""
    lr: float = 3e-4
    weight_decay: float = 0.0
    gamma: float = 0.99
    """Discount per env step (a chunk of h steps bootstraps at gamma^h)."""
    tau: float = 0.005
    """Polyak rate of the target networks."""

    def validate(self) -> None:
        if self.ensemble < 1 or not 1 <= self.min_over <= self.ensemble:
            raise ValueError(f"need ensemble >= 1 and 1 <= min_over <= ensemble, got {self.ensemble}, {self.min_over}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")


def chunk_targets(rewards: torch.Tensor, executed: torch.Tensor, terminated: torch.Tensor,
                  next_value: torch.Tensor, gamma: float) -> torch.Tensor:
    """TD targets (B,) of chunk decisions.

    rewards (B, h): per-step rewards of the chunk; executed (B, h): which of its steps ran (a prefix: an
    episode that ended inside the chunk ran fewer); terminated (B,): it ended in a terminal state (no
    bootstrap); next_value (B,): the value of the observation after the last executed step (the next
    decision's, or the final observation of a truncated episode).
    """
    h = rewards.shape[1]
    executed = executed.to(rewards.dtype)
    discounts = gamma ** torch.arange(h, dtype=rewards.dtype, device=rewards.device)
    ret = (rewards * executed * discounts).sum(dim=1)
    k = executed.sum(dim=1)
    alive = 1.0 - terminated.to(rewards.dtype)
    return ret + alive * gamma**k * next_value


def pessimistic(q: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The min over ``k`` randomly chosen members of an ensemble's values (E, B) -> (B,)."""
    if k >= q.shape[0]:
        return q.min(dim=0).values
    pick = torch.randperm(q.shape[0], generator=generator)[:k].to(q.device)
    return q[pick].min(dim=0).values


class ChunkCritic(nn.Module):
    """The Q-ensemble over (features, executed chunk) with its target copy and optimiser."""

    def __init__(self, feature_dim: int, action_dim: int, cfg: ChunkCriticConfig, q: QEnsemble | None = None) -> None:
        """``q``: an existing ensemble to train (a steered policy's own, so that it ranks candidates when
        the policy acts); by default a new one of ``cfg``'s size."""
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.q = q if q is not None else QEnsemble(feature_dim, action_dim, cfg.ensemble, cfg.hidden_dim, cfg.layers)
        if (self.q.feature_dim, self.q.action_dim) != (feature_dim, action_dim) or self.q.ensemble < cfg.min_over:
            raise ValueError(f"the Q-ensemble reads ({self.q.feature_dim}, {self.q.action_dim}) with "
                             f"{self.q.ensemble} members; the critic needs ({feature_dim}, {action_dim}) and "
                             f">= {cfg.min_over}")
        self.target = copy.deepcopy(self.q).requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.q.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def value(self, features: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The ensemble mean (B,): what an actor climbs and best-of-N ranks by."""
        return self.q(features, action).mean(dim=0)

    @torch.no_grad()
    def target_value(self, features: torch.Tensor, action: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        return pessimistic(self.target(features, action), self.cfg.min_over, generator)

    def update(self, features: torch.Tensor, action: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """One gradient step of every member toward the same targets (B,), then a Polyak step."""
        q = self.q(features, action)
        loss = ((q - targets.detach().unsqueeze(0)) ** 2).mean(dim=1).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.soft_update()
        return {"q_loss": loss.item() / q.shape[0], "q_mean": q.mean().item(), "q_std": q.std(dim=0).mean().item(),
                "target_mean": targets.mean().item()}

    @torch.no_grad()
    def soft_update(self) -> None:
        for p, tp in zip(self.q.parameters(), self.target.parameters()):
            tp.lerp_(p, self.cfg.tau)
