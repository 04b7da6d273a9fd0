"""The off-policy chunk learner: a chunk critic and one way of improving on a frozen policy, as update steps
on replay batches (see ``runtime/training/chunk_replay.py`` for the batch). It never touches an env.

Modes (``SteeredPolicy.config.mode``):

- ``base``: best-of-N over the frozen policy's own samples; the critic backs up the best of the next
  state's cached candidates (EMaQ: a max over N behaviour samples, with a pessimistic target);
- ``noise``: DSRL with noise aliasing; the target bootstraps from the noise critic at the actor's next noise;
- ``residual``: a bounded edit on the executed chunk; the target evaluates the edited next candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from robot_rl.algos.chunk_critic import ChunkCritic, ChunkCriticConfig, chunk_targets, pessimistic
from robot_rl.algos.steering import NoiseActor, ResidualActor, SteeringConfig
from robot_rl.policy.steered import SteeredPolicy


@dataclass
class ChunkLearnerConfig:
    """The off-policy learner over action chunks (``rl.algo=chunk``)."""

    mode: str = "base"
    """``base`` (best-of-N of the frozen policy), ``noise`` (noise-space actor) or ``residual``."""
    candidates: int = 8
    """Chunks sampled per training decision and ranked by the critic (best-of-N)."""
    target_candidates: int = 4
    """Base-policy chunks cached per replay step (derived data): the backup's max over the next state's
    (mode=base, backup=td), the base chunk a residual edits. Where no update reads them (mode=base with
    backup=mc or greedy) one is cached, whatever this says: they cost more than the rest of the derived data."""

    @property
    def cached_candidates(self) -> int:
        """Candidates the replay caches per step: only as many as an update reads."""
        return self.target_candidates if self.backup == "td" or self.mode != "base" else 1
    eval_best_of: int = 8
    """Candidates ranked when the saved policy acts (1: the actor alone)."""
    backup: str = "td"
    """``td``: the chunk backup bootstraps from the next state (see the modes above); ``mc``: the target
    is the discounted return-to-go of the episode the step came from (Q of the policies that acted, no
    bootstrapping error: one step of policy improvement by best-of-N, stable on little data); ``greedy``:
    the chunk's own discounted reward, no bootstrap (with the critic's dense reward: the progress the chunk
    makes, a local function of state and chunk that little data can fit)."""
    rank_std_coef: float = 1.0
    """Candidates are ranked by the ensemble mean minus this many standard deviations (acting and the saved
    policy): pessimism against chunks the critic has not seen the like of."""
    base_rounds: int = 0
    """Rounds at the start that act with the frozen policy alone (the critic sees its own outcomes first)."""
    explore: float = 0.1
    """Probability that a training decision executes a random candidate instead of the best."""
    critic: ChunkCriticConfig = field(default_factory=ChunkCriticConfig)
    steering: SteeringConfig = field(default_factory=SteeringConfig)
    batch_size: int = 256
    demo_fraction: float = 0.5
    """Share of every batch drawn from the demos (the rest from the run's own episodes)."""
    online_window: int | None = None
    """A staleness bound: draw the run's own steps only from the newest this many (None: all of them, as
    RLPD does; an off-policy critic learns from old steps too, but a learner far behind fast actors may
    want to weigh the present)."""
    utd: float = 0.5
    """Critic updates per env step."""
    actor_every: int = 2
    """Actor (noise / residual) updates once every this many critic updates."""
    distill_batch: int = 64
    """mode=noise: states per update on which the noise critic is distilled (each decodes a chunk)."""
    warmup_updates: int = 500
    """Critic updates on the demos before the first online decision."""
    base_bc: float = 0.0
    """Behaviour-cloning updates of the base policy's action head per env step, on the demos and the run's
    successful episodes (filtered BC, as EXPO keeps its base policy learning by imitation), on the cached
    features: the observation encoder stays frozen, so features and the critic stay valid. 0: the base
    policy stays frozen."""
    base_bc_lr: float = 1e-4
    """Learning rate of those updates (AdamW)."""
    intervention_bc: float = 1.0
    """Weight of a behaviour-cloning term on the operator's chunks (intervention steps) in every steering
    actor update: mode=noise pulls the actor's noise toward the noise the frozen flow maps to the operator's
    chunk (the flow inverted); mode=residual pulls the edit toward the operator's chunk. 0: interventions
    reach the actor only through the critic."""

    def validate(self) -> None:
        if self.backup not in ("td", "mc", "greedy"):
            raise ValueError(f"chunk learner backup must be 'td', 'mc' or 'greedy', got {self.backup!r}")
        if self.mode not in ("base", "noise", "residual"):
            raise ValueError(f"chunk learner mode must be 'base', 'noise' or 'residual', got {self.mode!r}")
        if min(self.candidates, self.eval_best_of, self.target_candidates) < 1:
            raise ValueError(f"candidates, target_candidates and eval_best_of must be >= 1, got {self.candidates}, "
                             f"{self.target_candidates}, {self.eval_best_of}")
        if self.online_window is not None and self.online_window < 1:
            raise ValueError(f"online_window must be >= 1 step or None, got {self.online_window}")
        if not 0.0 <= self.demo_fraction <= 1.0 or not 0.0 <= self.explore <= 1.0:
            raise ValueError(f"demo_fraction and explore must be in [0, 1], got {self.demo_fraction}, {self.explore}")
        if self.intervention_bc < 0:
            raise ValueError(f"intervention_bc must be >= 0, got {self.intervention_bc}")
        if self.base_bc < 0 or self.base_bc_lr <= 0:
            raise ValueError(f"base_bc must be >= 0 and base_bc_lr > 0, got {self.base_bc}, {self.base_bc_lr}")
        if self.utd <= 0 or self.batch_size < 1 or self.actor_every < 1:
            raise ValueError(f"utd, batch_size and actor_every must be positive, got {self.utd}, {self.batch_size}, "
                             f"{self.actor_every}")
        self.critic.validate()


class ChunkLearner(nn.Module):
    """Trains a ``SteeredPolicy``'s Q-ensemble and (for noise / residual) its head."""

    def __init__(self, policy: SteeredPolicy, cfg: ChunkLearnerConfig) -> None:
        super().__init__()
        cfg.validate()
        if policy.config.mode != cfg.mode:
            raise ValueError(f"the policy steers by {policy.config.mode!r}, the learner by {cfg.mode!r}")
        self.cfg, self.policy = cfg, policy
        f = policy.config.feature_dim
        self.critic = ChunkCritic(f, policy.exec_dim, cfg.critic, q=policy.heads["q"])
        self.noise = NoiseActor(policy.heads["noise"], f, cfg.steering, cfg.critic) if cfg.mode == "noise" else None
        self.residual = ResidualActor(policy.heads["residual"], cfg.steering) if cfg.mode == "residual" else None
        self.updates = 0
        self.base_opt: torch.optim.Optimizer | None = None
        if cfg.base_bc > 0:
            head = policy.base.head_parameters()
            for p in head:
                p.requires_grad_(True)
            self.base_opt = torch.optim.AdamW(head, lr=cfg.base_bc_lr, weight_decay=1e-4)

    def q_mean(self, features: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.critic.value(features, action)

    @torch.no_grad()
    def next_value(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        nf, nc = batch["next_features"], batch["next_candidates"]
        b, n, d = nc.shape
        if self.cfg.mode == "noise":
            w, _ = self.noise(nf, generator=generator)
            return pessimistic(self.noise.noise_critic(nf, w), self.noise.noise_critic.ensemble)
        if self.cfg.mode == "residual":
            return self.critic.target_value(nf, self.residual(nf, nc[:, 0]), generator)
        q = self.critic.target(nf.repeat_interleave(n, dim=0), nc.reshape(b * n, d))  # (E, B*N)
        pick = torch.randperm(q.shape[0], generator=generator)[: self.cfg.critic.min_over]
        return q[pick].min(dim=0).values.reshape(b, n).max(dim=1).values

    def update(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None,
               critic_only: bool = False) -> dict[str, float]:
        """One critic step (and, every ``actor_every``, one actor step) on a replay batch."""
        if self.cfg.backup == "mc":
            targets = batch["returns"]
        elif self.cfg.backup == "greedy":
            targets = chunk_targets(batch["rewards"], batch["executed"], torch.ones_like(batch["terminated"]),
                                    torch.zeros_like(batch["returns"]), self.cfg.critic.gamma)
        else:
            targets = chunk_targets(batch["rewards"], batch["executed"], batch["terminated"],
                                    self.next_value(batch, generator), self.cfg.critic.gamma)
        metrics = self.critic.update(batch["features"], batch["action"], targets)
        self.updates += 1
        if critic_only or self.updates % self.cfg.actor_every:
            return metrics
        feats = batch["features"]
        if self.noise is not None:
            k = min(self.cfg.distill_batch, feats.shape[0])
            with torch.no_grad():
                w_actor, _ = self.noise(feats[:k], generator=generator)
                w_prior = torch.randn(w_actor.shape, generator=generator).clamp(-self.noise.cfg.noise_bound,
                                                                                self.noise.cfg.noise_bound)
                w = torch.cat([w_actor, w_prior])
                f2 = torch.cat([feats[:k], feats[:k]])
                chunks = self.policy.base.decode_noise(f2, w)[:, : self.policy.exec_dim]
                q = self.q_mean(f2, chunks)
            metrics.update(self.noise.distill(f2, w, q))
            metrics.update(self.noise.improve(feats, generator, bc=self._noise_bc_targets(batch)))
        elif self.residual is not None:
            mask = self._operator_rows(batch)
            bc = None if mask is None else (mask, batch["action"], self.cfg.intervention_bc)
            metrics.update(self.residual.improve(self.q_mean, feats, batch["candidates"][:, 0], bc=bc))
        return metrics

    def _operator_rows(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Which rows are the operator's chunks, if the BC term is on and there are any."""
        mask = batch.get("intervention")
        if self.cfg.intervention_bc <= 0 or mask is None or not bool(mask.any()):
            return None
        return mask

    def _noise_bc_targets(self, batch: dict[str, torch.Tensor]):
        """(rows, the noise the frozen policy maps to each operator chunk, weight), or None."""
        mask = self._operator_rows(batch)
        if mask is None:
            return None
        bound = self.noise.cfg.noise_bound
        target = self.policy.base.invert_noise(batch["features"][mask], batch["full_action"][mask])
        return mask, target.clamp(-0.99 * bound, 0.99 * bound), self.cfg.intervention_bc

    def imitate(self, features: torch.Tensor, chunks: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, float]:
        """One behaviour-cloning step of the base policy's action head on (cached features, normalised full
        chunks) of successful episodes."""
        if self.base_opt is None:
            raise ValueError("imitate needs base_bc > 0")
        base = self.policy.base
        loss = base.chunk_loss(features, chunks, generator)
        self.base_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in self.base_opt.param_groups for p in g["params"]], 1.0)
        self.base_opt.step()
        return {"bc_loss": loss.item()}
