"""Policy improvement that keeps a pre-trained chunk policy intact, on a chunk critic's values.

- ``NoiseActor`` (DSRL, the noise-aliasing variant): a tanh-bounded Gaussian over the initial noise x_0 of the
  whole chunk (every horizon x action dim); the frozen flow / diffusion (DDIM) / VLA action expert maps it to
  actions. A noise-space critic Q_W(s, w) is distilled from the chunk critic Q_A(s, decode(s, w)), so Q_A
  learns from any stored action (demos, interventions) and the actor climbs Q_W without backpropagating
  through the denoising chain.
- ``ResidualActor``: a bounded edit of the executed chunk, its last layer zero-initialised (the identity at
  the start), trained to climb Q_A directly.
- ``best_of_n``: of N candidate chunks, the one the critic rates highest.

``decode(cond, noise)`` is the frozen policy's deterministic map from initial noise to a normalised chunk.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from robot_rl.algos.chunk_critic import ChunkCriticConfig
from robot_rl.nn import BoundedResidual, QEnsemble, TanhGaussianHead

Decode = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def best_of_n(q: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], features: torch.Tensor,
              candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The index (B,) and value (B,) of the best of the candidates (B, N, D) by ``q(features, actions)``."""
    b, n, d = candidates.shape
    values = q(features.repeat_interleave(n, dim=0), candidates.reshape(b * n, d)).reshape(b, n)
    best = values.argmax(dim=1)
    return best, values.gather(1, best[:, None]).squeeze(1)


@dataclass
class SteeringConfig:
    """The small actor trained on the chunk critic."""

    hidden_dim: int = 256
    layers: int = 2
    lr: float = 3e-4
    noise_bound: float = 2.0
    """Noise actor: |x_0| <= this bound per dim (tanh-squashed)."""
    init_temperature: float = 0.1
    target_entropy_per_dim: float = -0.5
    """Noise actor: SAC's automatic temperature aims at this entropy per noise dim."""
    noise_critic_ensemble: int = 2
    residual_scale: float = 0.05
    """Residual actor: the largest edit, as a fraction of the normalised action range [-1, 1]."""
    residual_bc_coef: float = 0.0
    """Residual actor: weight of a penalty on the edit's size."""


class NoiseActor(nn.Module):
    """Trains pi_W(w | s) (a ``TanhGaussianHead`` over the full initial noise of a chunk) with SAC on a noise
    critic Q_W distilled from the chunk critic."""

    def __init__(self, head: TanhGaussianHead, feature_dim: int, cfg: SteeringConfig,
                 critic_cfg: ChunkCriticConfig) -> None:
        super().__init__()
        self.cfg, self.head, self.noise_dim = cfg, head, head.dim
        self.noise_critic = QEnsemble(feature_dim, head.dim, cfg.noise_critic_ensemble, critic_cfg.hidden_dim,
                                      critic_cfg.layers)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.init_temperature)))
        self.actor_opt = torch.optim.Adam(self.head.parameters(), lr=cfg.lr)
        self.critic_opt = torch.optim.Adam(self.noise_critic.parameters(), lr=cfg.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.lr)

    def forward(self, features: torch.Tensor, deterministic: bool = False,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(features, deterministic, generator)

    def distill(self, features: torch.Tensor, noise: torch.Tensor, q_of_decoded: torch.Tensor) -> dict[str, float]:
        """Fit Q_W(s, w) to the chunk critic's value of decode(s, w)."""
        q = self.noise_critic(features, noise)
        loss = ((q - q_of_decoded.detach().unsqueeze(0)) ** 2).mean(dim=1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        return {"noise_critic_loss": loss.item() / q.shape[0]}

    def improve(self, features: torch.Tensor, generator: torch.Generator | None = None,
                bc: tuple[torch.Tensor, torch.Tensor, float] | None = None) -> dict[str, float]:
        """One SAC actor and temperature step on Q_W; with ``bc`` = (rows, target noise, weight) the
        deterministic noise of those rows is also pulled toward the target (the operator's chunk, inverted)."""
        w, log_prob = self(features, generator=generator)
        alpha = self.log_alpha.exp().detach()
        q = self.noise_critic(features, w).mean(dim=0)
        loss = (alpha * log_prob - q).mean()
        bc_loss = None
        if bc is not None:
            rows, target, weight = bc
            mean, _ = self(features[rows], deterministic=True)
            bc_loss = ((mean - target) ** 2).mean()
            loss = loss + weight * bc_loss
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        target_entropy = self.cfg.target_entropy_per_dim * self.noise_dim
        alpha_loss = -(self.log_alpha * (log_prob.detach() + target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        out = {"actor_loss": loss.item(), "actor_q": q.mean().item(), "entropy": -log_prob.mean().item(),
               "alpha": alpha.item()}
        if bc_loss is not None:
            out["intervention_bc_loss"] = bc_loss.item()
        return out


class ResidualActor(nn.Module):
    """Trains a ``BoundedResidual`` edit of the executed chunk to climb the chunk critic (TD3-style)."""

    def __init__(self, head: BoundedResidual, cfg: SteeringConfig) -> None:
        super().__init__()
        self.cfg, self.head = cfg, head
        self.optimizer = torch.optim.Adam(self.head.parameters(), lr=cfg.lr)

    def forward(self, features: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return self.head(features, base)

    def improve(self, q: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], features: torch.Tensor,
                base: torch.Tensor, bc: tuple[torch.Tensor, torch.Tensor, float] | None = None) -> dict[str, float]:
        """One deterministic policy-gradient step (TD3-style) on the chunk critic ``q``; with ``bc`` = (rows,
        operator chunks, weight) the edited chunk of those rows is also pulled toward the operator's."""
        action = self(features, base)
        value = q(features, action)
        loss = -value.mean() + self.cfg.residual_bc_coef * ((action - base) ** 2).sum(-1).mean()
        bc_loss = None
        if bc is not None:
            rows, target, weight = bc
            bc_loss = ((action[rows] - target[rows]) ** 2).sum(-1).mean()
            loss = loss + weight * bc_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        out = {"actor_loss": loss.item(), "actor_q": value.mean().item(),
               "residual_size": (action - base).abs().mean().item()}
        if bc_loss is not None:
            out["intervention_bc_loss"] = bc_loss.item()
        return out
