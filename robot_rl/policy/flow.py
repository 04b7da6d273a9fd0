"""Flow-matching action-chunk policy: rectified flow, and the shortcut-model variant for 1-4 steps.

Convention: t runs from 0 (noise x_0 ~ N(0, I)) to 1 (data x_1, a normalised action chunk);
x_t = (1 - t) x_0 + t x_1 and the network predicts the velocity x_1 - x_0. Acting integrates with Euler.

For RL fine-tuning (ReinFlow), ``sample_chain`` injects Gaussian noise at every Euler step,
x_{k+1} ~ N(x_k + v(x_k, t_k) dt, sigma_k^2), with sigma_k from any function (a learnable noise network),
making the chain a Markov process with an exact log-probability; ``chain_log_prob`` recomputes it for a
stored chain under the current parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from robot_rl.nn import ChunkDenoiser
from robot_rl.policy.base import ObservationEncoder, Policy
from robot_rl.policy.chain import Chain, gaussian_log_prob, run_chain
from robot_rl.policy.config import FlowConfig, ShortcutConfig

NoiseStd = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | float
"""sigma for a step: a constant, or a function (x_k, t_k, cond) -> std of shape (B, D) or broadcastable."""


class FlowPolicy(Policy):
    name = "flow"
    config_cls = FlowConfig

    def __init__(self, config: FlowConfig, encoder_factory=ObservationEncoder) -> None:
        super().__init__(config)
        if config.shortcut and config.shortcut_max_steps & (config.shortcut_max_steps - 1):
            raise ValueError(f"shortcut_max_steps must be a power of two, got {config.shortcut_max_steps}")
        self.obs_encoder = encoder_factory(config, self.state_norm)
        self.velocity_net = ChunkDenoiser(
            self.chunk_dim, self.obs_encoder.out_dim, config.hidden_dim, config.n_blocks,
            n_scalars=2 if config.shortcut else 1,
        )

    def encode(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.obs_encoder(batch)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, d: torch.Tensor | None = None):
        scalars = [t]
        if self.config.shortcut:
            scalars.append(d if d is not None else torch.zeros_like(t))
        return self.velocity_net(x, scalars, cond)

    # ------------------------------------------------------------------------------- training
    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        self.check_batch(batch, with_actions=True)
        x1 = self.normalized_actions(batch)
        cond = self.encode(batch)
        b = x1.shape[0]
        x0 = torch.randn_like(x1)
        n_sc = int(b * self.config.shortcut_fraction) if self.config.shortcut else 0
        # flow matching on rows n_sc..b (for shortcut models: step size 0)
        flow_loss = self._flow_matching(cond[n_sc:], x1[n_sc:], x0[n_sc:], torch.rand(b - n_sc, device=x1.device))
        metrics = {"flow_loss": flow_loss.item()}
        loss = flow_loss
        if n_sc:
            sc_loss = self._self_consistency_loss(x0[:n_sc], x1[:n_sc], cond[:n_sc])
            loss = (flow_loss * (b - n_sc) + sc_loss * n_sc) / b
            metrics["shortcut_loss"] = sc_loss.item()
        metrics["loss"] = loss.item()
        return loss, metrics

    def _flow_matching(self, cond: torch.Tensor, x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xt = (1 - t[:, None]) * x0 + t[:, None] * x1
        return ((self.velocity(xt, t, cond) - (x1 - x0)) ** 2).mean()

    def chunk_loss(self, cond: torch.Tensor, chunks: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        x0 = torch.randn(chunks.shape, generator=generator, device=chunks.device)
        t = torch.rand(chunks.shape[0], generator=generator, device=chunks.device)
        return self._flow_matching(cond, chunks, x0, t)

    def _self_consistency_loss(self, x0, x1, cond) -> torch.Tensor:
        """Two steps of size d must equal one step of size 2d (targets without gradient)."""
        n = x0.shape[0]
        levels = int(math.log2(self.config.shortcut_max_steps))
        k = torch.randint(0, levels, (n,), device=x0.device)
        d_big = 1.0 / (2.0**k)  # 1, 1/2, ..., 2/max_steps
        d = d_big / 2
        t = torch.floor(torch.rand(n, device=x0.device) / d_big) * d_big  # on the coarse grid
        xt = (1 - t[:, None]) * x0 + t[:, None] * x1
        # the finest level is anchored to the flow-matching model (step size 0)
        d_query = torch.where(d <= 1.0 / self.config.shortcut_max_steps + 1e-9, torch.zeros_like(d), d)
        with torch.no_grad():
            v1 = self.velocity(xt, t, cond, d_query)
            v2 = self.velocity(xt + d[:, None] * v1, t + d, cond, d_query)
            target = (v1 + v2) / 2
        return ((self.velocity(xt, t, cond, d_big) - target) ** 2).mean()

    # -------------------------------------------------------------------------------- sampling
    def sample(self, cond: torch.Tensor, steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sample_chain(cond, steps=steps, generator=generator).actions

    def decode_noise(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.sample_chain(cond, x0=noise).actions

    @torch.no_grad()
    def invert_noise(self, cond: torch.Tensor, chunks: torch.Tensor, iterations: int = 6) -> torch.Tensor:
        """``decode_noise`` run backwards: each Euler step x' = x + dt v(x, t) solved for x by fixed-point
        iteration (x = x' - dt v(x, t)), exact up to the iteration's tolerance where v is smooth."""
        k, x = self._steps(None), chunks
        dt = 1.0 / k
        for i in reversed(range(k)):
            t = torch.full((x.shape[0],), i * dt, device=x.device)
            d = torch.full_like(t, dt) if self.config.shortcut else None
            prev = x
            for _ in range(iterations):
                prev = x - dt * self.velocity(prev, t, cond, d)
            x = prev
        return x

    def _steps(self, steps: int | None) -> int:
        steps = steps or self.config.num_inference_steps
        if steps < 1:
            raise ValueError(f"sampling steps must be >= 1, got {steps}")
        return steps

    def sample_chain(self, cond: torch.Tensor, steps: int | None = None, noise_std: NoiseStd | None = None,
                     generator: torch.Generator | None = None, x0: torch.Tensor | None = None) -> Chain:
        """Euler integration from noise; with ``noise_std`` every step is a Gaussian transition."""
        k = self._steps(steps)
        b = cond.shape[0]
        if x0 is None:
            x0 = torch.randn(b, self.chunk_dim, generator=generator, device=cond.device)
        return run_chain(x0, [self._transition(i, k, cond, noise_std) for i in range(k)], generator)

    def _transition(self, i: int, k: int, cond: torch.Tensor, noise_std: NoiseStd | None):
        dt = 1.0 / k

        def step(x: torch.Tensor):
            t = torch.full((x.shape[0],), i * dt, device=x.device)
            d = torch.full_like(t, dt) if self.config.shortcut else None
            mean = x + dt * self.velocity(x, t, cond, d)
            if noise_std is None:
                return mean, 0.0
            std = noise_std(x, t, cond) if callable(noise_std) else noise_std
            return mean, std

        return step

    def chain_log_prob(self, cond: torch.Tensor, xs: torch.Tensor, noise_std: NoiseStd) -> torch.Tensor:
        """Per-transition log-probabilities (B, K) of a stored chain ``xs`` (B, K+1, D), with gradients."""
        k = xs.shape[1] - 1
        out = []
        for i in range(k):
            mean, std = self._transition(i, k, cond, noise_std)(xs[:, i])
            std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device).expand_as(mean)
            out.append(gaussian_log_prob(xs[:, i + 1], mean, std))
        return torch.stack(out, dim=1)


class ShortcutPolicy(FlowPolicy):
    """A flow policy trained as a shortcut model: good samples in 1-4 steps."""

    name = "shortcut"
    config_cls = ShortcutConfig

    def __init__(self, config: FlowConfig) -> None:
        if not config.shortcut:
            raise ValueError("a ShortcutPolicy needs config.shortcut = True")
        super().__init__(config)
