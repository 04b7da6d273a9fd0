"""The PPO core shared by ReinFlow and DPPO: GAE, the clipped surrogate, the value loss, advantage
normalisation, KL early stopping and gradient clipping, as update functions on batches.

An algorithm supplies a ``ChainActor`` (how to score a stored sample under the current weights); the
update never sees an env: how the batch was collected is the runtime's business.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass
class PPOConfig:
    """PPO settings over action-chunk decisions (one decision = one executed chunk)."""

    gamma: float = 0.99
    """Discount per decision."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_ratio: float = 0.05
    """Clip of the likelihood ratio; small because a chain's log-probability sums many Gaussian steps."""
    value_clip: float | None = None
    """Clip of the value update around the old values (None: unclipped)."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus (ReinFlow's entropy regularisation of its noise)."""
    epochs: int = 5
    """Passes over each batch of rollouts."""
    minibatch_size: int = 64
    target_kl: float | None = 0.05
    """Stop the epochs of an update early once the approximate KL exceeds this (None: never)."""
    max_grad_norm: float = 1.0
    normalize_advantages: bool = True
    log_prob_per_dim: bool = True
    """Form the ratio from the chain's log-probability averaged over its steps and action dimensions
    (as DPPO and ReinFlow do); the exact sum over hundreds of dimensions swings the ratio wildly."""
    is_clip: float = 1.0
    """Asynchronous runs: truncation of the importance ratio between the learner's weights at an update's start
    and the (older) weights a decision was acted with, on the surrogate's weight and the V-trace traces."""
    actor_lr: float = 3e-5
    """Learning rate of the actor (the pre-trained policy's trainable part)."""
    noise_lr: float = 3e-4
    """Learning rate of the exploration-noise network (ReinFlow)."""
    critic_lr: float = 1e-3
    """Learning rate of the value network."""
    lr_schedule: str = "constant"
    """``constant`` or ``linear`` (decays to 0 at the last iteration)."""

    def validate(self) -> None:
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"gamma must be in (0, 1] and gae_lambda in [0, 1], got {self.gamma}, {self.gae_lambda}")
        if self.is_clip <= 0:
            raise ValueError(f"is_clip must be > 0, got {self.is_clip}")
        if self.clip_ratio <= 0:
            raise ValueError(f"clip_ratio must be > 0, got {self.clip_ratio}")
        if self.epochs < 1 or self.minibatch_size < 1:
            raise ValueError(f"epochs and minibatch_size must be >= 1, got {self.epochs}, {self.minibatch_size}")
        if self.lr_schedule not in ("constant", "linear"):
            raise ValueError(f"lr_schedule must be 'constant' or 'linear', got {self.lr_schedule!r}")


def compute_gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray, terminated: np.ndarray,
                episode_end: np.ndarray, gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns of (T, N) rollouts.

    ``next_values[t]`` is V of the observation after decision t (the final observation where an episode
    ended); ``terminated`` cuts the bootstrap (a true end), ``episode_end`` (terminated or truncated)
    cuts the recursion; a truncated episode still bootstraps from its final observation.
    """
    rewards, values, next_values = (np.asarray(a, dtype=np.float64) for a in (rewards, values, next_values))
    if not rewards.shape == values.shape == next_values.shape == terminated.shape == episode_end.shape:
        raise ValueError(f"GAE inputs must share one (T, N) shape, got {rewards.shape}, {values.shape}, "
                         f"{next_values.shape}, {terminated.shape}, {episode_end.shape}")
    adv = np.zeros_like(rewards)
    last = np.zeros(rewards.shape[1:])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * (1.0 - terminated[t]) * next_values[t] - values[t]
        last = delta + gamma * lam * (1.0 - episode_end[t]) * last
        adv[t] = last
    return adv.astype(np.float32), (adv + values).astype(np.float32)


def off_policy_gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray, terminated: np.ndarray,
                   episode_end: np.ndarray, gamma: float, lam: float, log_ratio: np.ndarray,
                   is_clip: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """GAE for decisions acted with older weights: advantages and value targets of (T, N) rollouts, where
    ``log_ratio[t]`` is log pi(a_t) - log mu(a_t) (the learner's weights over the acting ones).

    Value targets are V-trace's (Espeholt et al. 2018) with lambda: v_t = V_t + rho_t delta_t + gamma lambda c_t
    (v_{t+1} - V_{t+1}). The advantage of a_t leaves a_t's own ratio to the loss (decoupled PPO, Hilton et al.
    2022) and cuts the trace by the later decisions' ratios: A_t = delta_t + gamma lambda c_{t+1} A_{t+1}.
    rho and c are the ratio truncated at ``is_clip``; with ratio 1 (fresh data) both are ``compute_gae``'s.
    """
    rewards, values, next_values = (np.asarray(a, dtype=np.float64) for a in (rewards, values, next_values))
    if not rewards.shape == values.shape == next_values.shape == terminated.shape == episode_end.shape \
            == np.shape(log_ratio):
        raise ValueError(f"off-policy GAE inputs must share one (T, N) shape, got {rewards.shape}, {values.shape}, "
                         f"{next_values.shape}, {terminated.shape}, {episode_end.shape}, {np.shape(log_ratio)}")
    rho = np.minimum(np.exp(np.asarray(log_ratio, dtype=np.float64)), is_clip)
    adv, target = np.zeros_like(rewards), np.zeros_like(rewards)
    last_adv = last_target = np.zeros(rewards.shape[1:])
    next_c = np.ones(rewards.shape[1:])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * (1.0 - terminated[t]) * next_values[t] - values[t]
        cont = gamma * lam * (1.0 - episode_end[t])
        last_adv = delta + cont * next_c * last_adv
        last_target = rho[t] * delta + cont * rho[t] * last_target
        adv[t], target[t] = last_adv, last_target
        next_c = rho[t]
    return adv.astype(np.float32), (target + values).astype(np.float32)


class ChainActor(nn.Module):
    """What PPO needs of a policy whose action is the end of a Gaussian chain."""

    def sample(self, cond: torch.Tensor, deterministic: bool = False,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised chunks (B, D), the stored chain (B, K+1, D) and its log-probability (B,)."""
        raise NotImplementedError

    def log_prob(self, cond: torch.Tensor, chain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability (B,) of stored chains under the current weights, and an entropy estimate (B,)."""
        raise NotImplementedError

    def bc_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The pre-training loss on a demo batch (BC regularisation)."""
        raise NotImplementedError


def ppo_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
             entropy: torch.Tensor, values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
             cfg: PPOConfig, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate + value loss - entropy bonus, and diagnostics. ``weights``: per-sample weights of the
    surrogate (stale decisions' truncated importance ratios, with ``old_log_prob`` the learner's own)."""
    log_ratio = log_prob - old_log_prob
    ratio = log_ratio.exp()
    surrogate = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - cfg.clip_ratio, 1 + cfg.clip_ratio))
    policy_loss = (surrogate * weights).mean() if weights is not None else surrogate.mean()
    if cfg.value_clip is not None:
        clipped = old_values + (values - old_values).clamp(-cfg.value_clip, cfg.value_clip)
        value_loss = 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2).mean()
    else:
        value_loss = 0.5 * ((values - returns) ** 2).mean()
    entropy_mean = entropy.mean()
    loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy_mean
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean().item()  # Schulman's low-variance estimator
        clipfrac = ((ratio - 1).abs() > cfg.clip_ratio).float().mean().item()
    return loss, {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(),
                  "entropy": entropy_mean.item(), "approx_kl": approx_kl, "clipfrac": clipfrac,
                  "ratio_mean": ratio.mean().item()}


def ppo_update(actor: ChainActor, value_fn: nn.Module, optimizer: torch.optim.Optimizer,
               batch: dict[str, torch.Tensor], cfg: PPOConfig,
               encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
               bc_loss: Callable[[], torch.Tensor] | None = None, bc_coef: float = 0.0,
               generator: torch.Generator | None = None) -> dict[str, float]:
    """Epochs of minibatch PPO on one batch: ``cond`` (B, C) or ``obs_index`` through ``encode``,
    ``chain`` (B, K+1, D), ``log_prob``, ``advantages``, ``returns``, ``values`` (B,), and optionally
    ``weights`` (B,): the surrogate's per-sample weights (see ``off_policy_gae``)."""
    n, steps_plus_one, dim = batch["chain"].shape
    scale = 1.0 / ((steps_plus_one - 1) * dim) if cfg.log_prob_per_dim else 1.0
    adv = batch["advantages"]
    if cfg.normalize_advantages and n > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    history: list[dict[str, float]] = []
    stopped_epoch = cfg.epochs
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=generator)
        epoch_kl = []
        for start in range(0, n, cfg.minibatch_size):
            idx = perm[start : start + cfg.minibatch_size]
            cond = encode(idx) if encode is not None else batch["cond"][idx]
            log_prob, entropy = actor.log_prob(cond, batch["chain"][idx])
            values = value_fn(cond.detach()).squeeze(-1)
            loss, metrics = ppo_loss(log_prob * scale, batch["log_prob"][idx] * scale, adv[idx], entropy, values,
                                     batch["values"][idx], batch["returns"][idx], cfg,
                                     weights=batch["weights"][idx] if "weights" in batch else None)
            if bc_loss is not None and bc_coef > 0:
                bc = bc_loss()
                loss = loss + bc_coef * bc
                metrics["bc_loss"] = bc.item()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
            optimizer.step()
            history.append(metrics)
            epoch_kl.append(metrics["approx_kl"])
        if cfg.target_kl is not None and float(np.mean(epoch_kl)) > cfg.target_kl:
            stopped_epoch = epoch + 1
            break
    out = {k: float(np.mean([h[k] for h in history])) for k in history[0]}
    out["epochs_run"] = float(stopped_epoch)
    return out


def explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
    var = float(np.var(returns))
    return float("nan") if var == 0 else 1.0 - float(np.var(returns - values)) / var


class ReturnNormalizer:
    """Scales rewards by the running std of the discounted return (no mean shift: signs stay)."""

    def __init__(self, gamma: float, eps: float = 1e-8) -> None:
        self.gamma, self.eps = gamma, eps
        self.count, self.mean, self.m2 = 0, 0.0, 0.0
        self._ret: np.ndarray | None = None

    def update(self, rewards: np.ndarray, episode_end: np.ndarray) -> None:
        """Feed (T, N) rewards in time order."""
        if self._ret is None or self._ret.shape != rewards.shape[1:]:
            self._ret = np.zeros(rewards.shape[1:])
        for t in range(rewards.shape[0]):
            self._ret = self._ret * self.gamma + rewards[t]
            for x in self._ret:
                self.count += 1
                d = x - self.mean
                self.mean += d / self.count
                self.m2 += d * (x - self.mean)
            self._ret = np.where(episode_end[t], 0.0, self._ret)

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.count)) if self.count > 1 else 1.0

    def __call__(self, rewards: np.ndarray) -> np.ndarray:
        return (rewards / max(self.std, 1e-2)).astype(np.float32)  # the floor: no blow-up before rewards vary

    def state_dict(self) -> dict[str, Any]:
        return {"count": int(self.count), "mean": float(self.mean), "m2": float(self.m2),
                "ret": None if self._ret is None else self._ret.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count, self.mean, self.m2 = state["count"], state["mean"], state["m2"]
        self._ret = None if state["ret"] is None else np.asarray(state["ret"])


def value_network(in_dim: int, hidden: int = 256) -> nn.Module:
    """The state-value MLP read off the policy's (detached) condition vector."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.Mish(), nn.Linear(hidden, hidden), nn.Mish(),
                         nn.Linear(hidden, 1))
