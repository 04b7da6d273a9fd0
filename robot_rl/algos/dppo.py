"""DPPO (Ren et al. 2024): PPO through the denoising steps of a diffusion policy.

The two-layer MDP: the env's MDP outside, the denoising chain inside, each denoising step a Gaussian
transition with a log-probability. Only the last ``ft_denoising_steps`` steps are fine-tuned (and
scored); the earlier ones run a frozen copy of the pre-trained network. Every scored step's std is
floored at ``min_std`` so the ratio stays well defined. DDPM or DDIM (eta > 0) chains.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch

from robot_rl.algos.ppo import ChainActor
from robot_rl.policy.chain import gaussian_log_prob
from robot_rl.policy.diffusion import DiffusionPolicy


@dataclass
class DPPOConfig:
    """The diffusion chain that DPPO fine-tunes."""

    denoising_steps: int = 10
    """Denoising steps of the whole chain (respaced from the training schedule)."""
    ft_denoising_steps: int = 10
    """The last K steps are fine-tuned and scored; the first ones run the frozen pre-trained network
    (K = all: the saved policy acts exactly as the fine-tuned chain; K smaller: cheaper updates)."""
    sampler: str = "ddpm"
    """``ddpm``, or ``ddim`` (DDIM fine-tuning: each step Gaussian with ``ddim_eta``)."""
    ddim_eta: float = 1.0
    """DDIM stochasticity while fine-tuning."""
    min_std: float = 0.1
    """Floor of every scored step's std (DPPO's exploration-noise floor)."""

    def validate(self) -> None:
        if not 1 <= self.ft_denoising_steps <= self.denoising_steps:
            raise ValueError(f"ft_denoising_steps must be in [1, denoising_steps={self.denoising_steps}], "
                             f"got {self.ft_denoising_steps}")
        if self.sampler not in ("ddpm", "ddim"):
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {self.sampler!r}")
        if self.min_std <= 0:
            raise ValueError(f"min_std must be > 0 (every scored step needs a density), got {self.min_std}")


class DPPOActor(ChainActor):
    """A DiffusionPolicy whose last K denoising steps are fine-tuned; the stored sample is x_{T-K}..x_T."""

    def __init__(self, policy: DiffusionPolicy, cfg: DPPOConfig) -> None:
        super().__init__()
        if not isinstance(policy, DiffusionPolicy):
            raise TypeError(f"DPPO fine-tunes diffusion policies, got {type(policy).__name__}")
        cfg.validate()
        self.policy, self.cfg = policy, cfg
        self.frozen = copy.deepcopy(policy.noise_net).requires_grad_(False)
        n = len(policy.timesteps(cfg.denoising_steps))
        if cfg.ft_denoising_steps > n:
            raise ValueError(f"the respaced chain has {n} steps, fewer than "
                             f"ft_denoising_steps={cfg.ft_denoising_steps}")
        self.n_steps = n

    def trainable_groups(self):
        return {"actor": list(self.policy.noise_net.parameters()), "noise": []}

    def _transitions(self, cond, explore: bool):
        # evaluation runs the policy's own sampler: DDPM keeps its scheduled noise, DDIM turns eta off
        eta = self.cfg.ddim_eta if explore else 0.0
        return self.policy._transitions(cond, self.cfg.denoising_steps, self.cfg.sampler, eta,
                                        self.cfg.min_std if explore else 0.0)

    def _frozen_prefix(self, cond, x, transitions, generator):
        live = self.policy.noise_net
        self.policy.noise_net = self.frozen  # the early steps run the pre-trained weights
        try:
            with torch.no_grad():
                for step in transitions[: self.n_steps - self.cfg.ft_denoising_steps]:
                    mean, std = step(x)
                    noise = torch.randn(mean.shape, generator=generator, device=mean.device)
                    x = mean + std.expand_as(mean) * noise
        finally:
            self.policy.noise_net = live
        return x

    def sample(self, cond, deterministic=False, generator=None):
        """``deterministic``: evaluation mode, the policy's own sampler with no exploration floor."""
        transitions = self._transitions(cond, explore=not deterministic)
        x = torch.randn(cond.shape[0], self.policy.chunk_dim, generator=generator, device=cond.device)
        x = self._frozen_prefix(cond, x, transitions, generator)
        xs, log_prob = [x], torch.zeros(cond.shape[0], device=cond.device)
        for step in transitions[self.n_steps - self.cfg.ft_denoising_steps :]:
            mean, std = step(x)
            std = std.expand_as(mean)
            x = mean + std * torch.randn(mean.shape, generator=generator, device=mean.device)
            if not deterministic:
                log_prob = log_prob + gaussian_log_prob(x, mean, std)
            xs.append(x)
        return x.clamp(-1, 1), torch.stack(xs, 1), log_prob

    def log_prob(self, cond, chain):
        transitions = self._transitions(cond, explore=True)[self.n_steps - self.cfg.ft_denoising_steps :]
        if len(transitions) != chain.shape[1] - 1:
            raise ValueError(f"chain has {chain.shape[1] - 1} steps, the actor scores {len(transitions)}")
        total = torch.zeros(chain.shape[0], device=chain.device)
        entropies = []
        for i, step in enumerate(transitions):
            mean, std = step(chain[:, i])
            std = std.expand_as(mean)
            total = total + gaussian_log_prob(chain[:, i + 1], mean, std)
            entropies.append((0.5 * math.log(2 * math.pi * math.e) + std.log()).mean(-1))
        return total, torch.stack(entropies, 1).mean(1)

    def bc_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.policy.loss(batch)[0]

    def export_policy(self) -> DiffusionPolicy:
        """The fine-tuned policy, set (in place; the actor passes its own settings) to act with the
        fine-tuned chain's sampler and step count. With
        ft_denoising_steps < denoising_steps its first steps use the fine-tuned weights too, where the
        training chain ran the frozen ones: evaluate through the actor for the exact chain."""
        self.policy.config.num_inference_steps = self.cfg.denoising_steps
        self.policy.config.sampler = self.cfg.sampler
        self.policy.config.ddim_eta = 0.0
        return self.policy
