"""ReinFlow (Zhang et al. 2025): RL fine-tuning of a flow policy through a learnable noise network.

Every Euler step of the flow becomes a Gaussian transition x_{k+1} ~ N(x_k + v(x_k, t_k) dt, sigma^2),
with sigma = noise_net(x_k, t_k, cond) bounded in [sigma_min, sigma_max]. The chain is then a Markov
process with an exact log-probability, so PPO applies at 1-4 denoising steps. Works for any
``FlowPolicy``: rectified flow, shortcut, and the VLA's action expert (backbone frozen or LoRA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robot_rl.algos.ppo import ChainActor
from robot_rl.nn import MLP, SinusoidalEmbedding
from robot_rl.policy.chain import standard_normal_log_prob
from robot_rl.policy.flow import FlowPolicy


@dataclass
class ReinFlowConfig:
    """The noise-injected flow chain that ReinFlow fine-tunes."""

    denoising_steps: int = 4
    """Euler steps of the fine-tuned chain (1-4 keeps it cheap; the policy acts with these after)."""
    sigma_min: float = 0.05
    """Lower bound of the injected noise std (normalised action units): keeps every step a density."""
    sigma_max: float = 0.20
    """Upper bound of the injected noise std: exploration never drowns the pre-trained flow."""
    sigma_init: float = 0.10
    """Noise std the network starts from."""
    noise_hidden: int = 128
    """Width of the noise network."""
    train_velocity: bool = True
    """Fine-tune the velocity field (False: learn only the exploration noise)."""

    def validate(self) -> None:
        if not 1 <= self.denoising_steps <= 128:
            raise ValueError(f"denoising_steps must be in [1, 128], got {self.denoising_steps}")
        if not 0 < self.sigma_min <= self.sigma_init <= self.sigma_max:
            raise ValueError("need 0 < sigma_min <= sigma_init <= sigma_max, got "
                             f"{self.sigma_min}, {self.sigma_init}, {self.sigma_max}")


class NoiseNetwork(nn.Module):
    """sigma(x_k, t_k, cond) per action dimension, squashed into [sigma_min, sigma_max]."""

    def __init__(self, chunk_dim: int, cond_dim: int, cfg: ReinFlowConfig) -> None:
        super().__init__()
        self.lo, self.hi = cfg.sigma_min, cfg.sigma_max
        self.embed = SinusoidalEmbedding(32)
        self.mlp = MLP(chunk_dim + cond_dim + 32, cfg.noise_hidden, chunk_dim, layers=2)
        last = self.mlp[-1]
        nn.init.zeros_(last.weight)
        frac = (cfg.sigma_init - self.lo) / max(self.hi - self.lo, 1e-8)
        frac = min(max(frac, 1e-3), 1 - 1e-3)
        nn.init.constant_(last.bias, math.log(frac / (1 - frac)))  # sigmoid(bias) = frac at the start

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, self.embed(t), cond], dim=-1)
        return self.lo + (self.hi - self.lo) * torch.sigmoid(self.mlp(h))


class ReinFlowActor(ChainActor):
    """A FlowPolicy plus its noise network; the stored sample is the whole chain x_0..x_K."""

    def __init__(self, policy: FlowPolicy, cfg: ReinFlowConfig) -> None:
        super().__init__()
        if not isinstance(policy, FlowPolicy):
            raise TypeError(f"ReinFlow fine-tunes flow policies, got {type(policy).__name__}")
        cfg.validate()
        self.policy, self.cfg = policy, cfg
        self.noise_net = NoiseNetwork(policy.chunk_dim, policy.obs_encoder.out_dim, cfg)

    def trainable_groups(self) -> dict[str, list[nn.Parameter]]:
        actor = list(self.policy.velocity_net.parameters()) if self.cfg.train_velocity else []
        return {"actor": actor, "noise": list(self.noise_net.parameters())}

    def sample(self, cond, deterministic=False, generator=None):
        noise = None if deterministic else self.noise_net
        chain = self.policy.sample_chain(cond, steps=self.cfg.denoising_steps, noise_std=noise, generator=generator)
        log_prob = torch.zeros(cond.shape[0], device=cond.device) if deterministic else chain.log_probs.sum(1)
        return chain.actions, chain.xs, log_prob

    def log_prob(self, cond, chain):
        per_step = self.policy.chain_log_prob(cond, chain, self.noise_net)
        k = chain.shape[1] - 1
        # entropy of each Gaussian transition, per action dimension, averaged over the chain
        stds = torch.stack([self.noise_net(chain[:, i], torch.full((chain.shape[0],), i / k, device=chain.device), cond)
                            for i in range(k)], dim=1)
        entropy = (0.5 * math.log(2 * math.pi * math.e) + stds.log()).mean(dim=(1, 2))
        return per_step.sum(1), entropy

    def full_log_prob(self, cond: torch.Tensor, chain: torch.Tensor) -> torch.Tensor:
        """log p(x_0, ..., x_K) including the initial noise (for checks against brute force)."""
        return standard_normal_log_prob(chain[:, 0]) + self.log_prob(cond, chain)[0]

    def bc_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.policy.loss(batch)[0]

    def export_policy(self) -> FlowPolicy:
        """The fine-tuned policy, set (in place) to act with the fine-tuned step count (deterministic
        Euler); the actor itself never reads that setting."""
        self.policy.config.num_inference_steps = self.cfg.denoising_steps
        return self.policy
