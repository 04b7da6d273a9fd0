"""DDPM action-chunk policy with DDPM and DDIM sampling at a chosen number of steps.

Epsilon prediction on a cosine schedule of ``num_train_timesteps``. Sampling with fewer steps respaces
the chain over an evenly spaced subset of timesteps. ``denoise_chain`` exposes each denoising step as a
Gaussian transition with a log-probability, as DPPO's two-layer MDP needs; ``min_std`` floors the std
of every step (DPPO's noise floor) and ``chain_log_prob`` recomputes the log-probs of a stored chain.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from robot_rl.nn import ChunkDenoiser
from robot_rl.policy.base import ObservationEncoder, Policy
from robot_rl.policy.chain import Chain, gaussian_log_prob, run_chain
from robot_rl.policy.config import DiffusionConfig


def cosine_alpha_bars(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cumulative products of (1 - beta_t) for the cosine schedule (Nichol & Dhariwal 2021)."""
    f = lambda t: math.cos((t / num_steps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    betas = [min(1 - f(i + 1) / f(i), max_beta) for i in range(num_steps)]
    return torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), dim=0)


class DiffusionPolicy(Policy):
    name = "diffusion"
    config_cls = DiffusionConfig

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__(config)
        if config.sampler not in ("ddpm", "ddim"):
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {config.sampler!r}")
        self.obs_encoder = ObservationEncoder(config, self.state_norm)
        self.noise_net = ChunkDenoiser(self.chunk_dim, self.obs_encoder.out_dim, config.hidden_dim, config.n_blocks)
        self.register_buffer("alpha_bars", cosine_alpha_bars(config.num_train_timesteps).float(), persistent=False)

    def encode(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.obs_encoder(batch)

    def predict_noise(self, x: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.noise_net(x, [timesteps.float() / self.config.num_train_timesteps], cond)

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        self.check_batch(batch, with_actions=True)
        loss = self.chunk_loss(self.encode(batch), self.normalized_actions(batch))
        return loss, {"loss": loss.item()}

    def chunk_loss(self, cond: torch.Tensor, chunks: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        x0 = chunks
        t = torch.randint(0, self.config.num_train_timesteps, (x0.shape[0],), generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        ab = self.alpha_bars[t][:, None]
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        return ((self.predict_noise(xt, t, cond) - noise) ** 2).mean()

    # -------------------------------------------------------------------------------- sampling
    def timesteps(self, steps: int | None = None) -> list[int]:
        """The descending timesteps a chain of ``steps`` denoising steps visits."""
        steps = steps or self.config.num_inference_steps
        total = self.config.num_train_timesteps
        if not 1 <= steps <= total:
            raise ValueError(f"denoising steps must be in [1, {total}], got {steps}")
        return sorted({round(x) for x in torch.linspace(0, total - 1, steps).tolist()}, reverse=True)

    def _transition(self, t: int, t_prev: int | None, cond: torch.Tensor, sampler: str, eta: float,
                    min_std: float):
        ab_t = self.alpha_bars[t]
        ab_prev = self.alpha_bars[t_prev] if t_prev is not None else torch.ones_like(ab_t)

        def step(x: torch.Tensor):
            ts = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            eps = self.predict_noise(x, ts, cond)
            x0 = (x - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
            if self.config.clip_sample:
                x0 = x0.clamp(-1, 1)
                eps = (x - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
            if sampler == "ddpm":
                beta = 1 - ab_t / ab_prev
                mean = (ab_prev.sqrt() * beta / (1 - ab_t)) * x0 + ((1 - beta).sqrt() * (1 - ab_prev) / (1 - ab_t)) * x
                var = beta * (1 - ab_prev) / (1 - ab_t)
            else:
                var = eta**2 * (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)
                mean = ab_prev.sqrt() * x0 + (1 - ab_prev - var).clamp_min(0).sqrt() * eps
            std = var.clamp_min(0).sqrt()
            if min_std > 0:
                std = std.clamp_min(min_std)
            return mean, std

        return step

    def _transitions(self, cond, steps, sampler, eta, min_std):
        ts = self.timesteps(steps)
        return [self._transition(t, ts[i + 1] if i + 1 < len(ts) else None, cond, sampler, eta, min_std)
                for i, t in enumerate(ts)]

    def denoise_chain(self, cond: torch.Tensor, steps: int | None = None, sampler: str | None = None,
                      eta: float | None = None, min_std: float = 0.0,
                      generator: torch.Generator | None = None, x_init: torch.Tensor | None = None) -> Chain:
        """Run the reverse process from noise; every step is Gaussian (with ``min_std`` > 0, all have
        densities, so ``Chain.log_probs`` is defined)."""
        sampler = sampler or self.config.sampler
        eta = self.config.ddim_eta if eta is None else eta
        if x_init is None:
            x_init = torch.randn(cond.shape[0], self.chunk_dim, generator=generator, device=cond.device)
        return run_chain(x_init, self._transitions(cond, steps, sampler, eta, min_std), generator)

    def chain_log_prob(self, cond: torch.Tensor, xs: torch.Tensor, steps: int | None = None,
                       sampler: str | None = None, eta: float | None = None, min_std: float = 0.1) -> torch.Tensor:
        """Per-step log-probabilities (B, K) of a stored chain under the current parameters."""
        sampler = sampler or self.config.sampler
        eta = self.config.ddim_eta if eta is None else eta
        transitions = self._transitions(cond, steps, sampler, eta, min_std)
        if len(transitions) != xs.shape[1] - 1:
            raise ValueError(f"chain has {xs.shape[1] - 1} steps, the schedule {len(transitions)}")
        out = []
        for i, step in enumerate(transitions):
            mean, std = step(xs[:, i])
            out.append(gaussian_log_prob(xs[:, i + 1], mean, std.expand_as(mean)))
        return torch.stack(out, dim=1)

    def decode_noise(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """DDIM with eta = 0 from the given x_T: deterministic, whatever sampler the policy acts with."""
        return self.denoise_chain(cond, sampler="ddim", eta=0.0, x_init=noise).actions.clamp(-1, 1)

    def sample(self, cond: torch.Tensor, steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        return self.denoise_chain(cond, steps=steps, generator=generator).actions.clamp(-1, 1)
