"""A frozen pre-trained policy steered by small heads trained on a chunk critic: a noise-space actor that
picks the initial noise of the whole chunk (DSRL), a bounded residual on the executed chunk, and best-of-N
by a Q-ensemble. It saves as a policy folder (the base policy in ``base/``, the heads beside it) that
``load_policy``, ``robot-rl eval`` and the policy server run like any other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import draccus
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from robot_rl import __version__
from robot_rl.core.errors import ConfigError
from robot_rl.nn import BoundedResidual, QEnsemble, TanhGaussianHead
from robot_rl.policy.base import CONFIG_FILE, WEIGHTS_FILE, Policy
from robot_rl.policy.config import PolicyConfig

BASE_DIR = "base"
MODES = ("base", "noise", "residual")


@dataclass
class SteeredConfig(PolicyConfig):
    """How the frozen base policy (saved in ``base/``) is steered; features, horizon and the other shared
    fields are the base's."""

    base_type: str = "flow"
    """The base policy's registered type."""
    mode: str = "noise"
    """``noise``: a learned actor picks the initial noise x_0 of the chunk; ``residual``: a bounded edit of
    the executed actions; ``base``: the base policy's own N(0, I) noise (with ``best_of`` > 1: best-of-N)."""
    best_of: int = 1
    """Candidate chunks scored by the Q-ensemble at every decision, the best executed (1: no scoring)."""
    feature_dim: int = 0
    """Width of the base policy's condition vector (what the heads read)."""
    noise_bound: float = 2.0
    """mode=noise: |x_0| per dim is at most this."""
    residual_scale: float = 0.05
    """mode=residual: the largest edit per action dim, in the normalised range [-1, 1]."""
    rank_std_coef: float = 0.0
    """Candidates are ranked by the ensemble's mean minus this many of its standard deviations: a chunk the
    members disagree on (one unlike the data) is not picked on an extrapolation."""
    head_hidden_dim: int = 256
    head_layers: int = 2
    q_ensemble: int = 5
    """Members of the Q-ensemble over (features, executed chunk) (0: none)."""
    q_hidden_dim: int = 256
    q_layers: int = 2

    def validate(self) -> None:
        super().validate()
        if self.mode not in MODES:
            raise ValueError(f"steering mode must be one of {MODES}, got {self.mode!r}")
        if self.best_of < 1:
            raise ValueError(f"best_of must be >= 1, got {self.best_of}")
        if self.best_of > 1 and self.q_ensemble < 1:
            raise ValueError(f"best_of={self.best_of} ranks candidates with the Q-ensemble: q_ensemble must be >= 1")
        if self.feature_dim < 1:
            raise ValueError(f"feature_dim must be the base policy's condition width, got {self.feature_dim}")


class SteeredPolicy(Policy):
    name = "steered"
    config_cls = SteeredConfig
    loads_own_weights = True
    cloned = False

    def __init__(self, config: SteeredConfig, base: Policy | None = None) -> None:
        super().__init__(config)
        if base is None:
            raise ConfigError("a SteeredPolicy is built around a base policy: SteeredPolicy.wrap(base, ...) or "
                              "load_policy(folder)")
        if base.name != config.base_type:
            raise ConfigError(f"config says the base is a {config.base_type!r} policy, got {base.name!r}")
        self.base = base.requires_grad_(False)
        self.state_norm, self.action_norm = base.state_norm, base.action_norm
        f = config.features
        self.exec_dim = config.n_action_steps * f.action_dim
        heads: dict[str, nn.Module] = {}
        if config.mode == "noise":
            heads["noise"] = TanhGaussianHead(config.feature_dim, base.chunk_dim, config.head_hidden_dim,
                                              config.head_layers, config.noise_bound)
        if config.mode == "residual":
            heads["residual"] = BoundedResidual(config.feature_dim, self.exec_dim, config.head_hidden_dim,
                                                config.head_layers, config.residual_scale)
        if config.q_ensemble > 0:  # trained by the off-policy learner; ranks candidates when best_of > 1
            heads["q"] = QEnsemble(config.feature_dim, self.exec_dim, config.q_ensemble, config.q_hidden_dim,
                                   config.q_layers)
        self.heads = nn.ModuleDict(heads)

    @classmethod
    def wrap(cls, base: Policy, **fields: Any) -> SteeredPolicy:
        """Steer ``base``: the shared fields are copied from its config, ``fields`` set the rest."""
        shared = {k: getattr(base.config, k) for k in PolicyConfig.__dataclass_fields__}
        with torch.no_grad():
            probe = {"obs/state": torch.zeros(1, base.config.n_obs_steps, base.config.features.state_dim)}
            for cam in base.config.features.cameras:
                s = base.config.features.image_size
                probe[f"obs/images/{cam}"] = torch.zeros(1, base.config.n_obs_steps, s, s, 3, dtype=torch.uint8)
            probe["instruction"] = [""]
            was = base.training
            base.eval()
            feature_dim = base.encode(probe).shape[-1]
            base.train(was)
        config = SteeredConfig(**shared, base_type=base.name, feature_dim=int(feature_dim), **fields)
        return cls(config, base)

    # ------------------------------------------------------------------------------------ acting
    def encode(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.base.encode(batch)

    def propose(self, cond: torch.Tensor, n: int = 1, deterministic: bool = False,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` candidates per state: their initial noises and normalised flat chunks, each (B, n, H*A)."""
        b = cond.shape[0]
        rep = cond.repeat_interleave(n, dim=0)
        if "noise" in self.heads:
            noise = self.heads["noise"](rep, deterministic=deterministic and n == 1, generator=generator)[0]
        else:
            noise = torch.randn(b * n, self.base.chunk_dim, generator=generator, device=cond.device)
            if deterministic and n == 1:
                noise = torch.zeros_like(noise)
        chunks = self.base.decode_noise(rep, noise)
        if "residual" in self.heads:
            edited = self.heads["residual"](rep, chunks[:, : self.exec_dim])
            chunks = torch.cat([edited, chunks[:, self.exec_dim :]], dim=1)
        return noise.reshape(b, n, -1), chunks.reshape(b, n, -1)

    def score(self, cond: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        """The ranking score (B, n) of candidate chunks (B, n, H*A): the Q-ensemble's mean, less
        ``rank_std_coef`` of its standard deviation."""
        b, n, _ = chunks.shape
        q = self.heads["q"](cond.repeat_interleave(n, dim=0), chunks[..., : self.exec_dim].reshape(b * n, -1))
        score = q.mean(dim=0)
        if self.config.rank_std_coef and q.shape[0] > 1:
            score = score - self.config.rank_std_coef * q.std(dim=0)
        return score.reshape(b, n)

    def sample(self, cond: torch.Tensor, steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Evaluation: the steered chunk; with best_of > 1 the best of that many candidates."""
        n = self.config.best_of
        _, chunks = self.propose(cond, n, deterministic=True, generator=generator)
        if n == 1:
            return chunks[:, 0]
        best = self.score(cond, chunks).argmax(dim=1)
        return chunks[torch.arange(chunks.shape[0]), best]

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        raise ConfigError("a steered policy is trained by the off-policy learner, not by behaviour cloning")

    # -------------------------------------------------------------------------------- save / load
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.base.save(directory / BASE_DIR)
        save_model(self.heads, str(directory / WEIGHTS_FILE))
        meta = {"type": self.name, "robot_rl_version": __version__, "config": draccus.encode(self.config)}
        tmp = directory / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.replace(directory / CONFIG_FILE)  # the config appears last: a half-saved policy has none
        return directory

    @classmethod
    def from_saved(cls, config: SteeredConfig, directory: Path) -> SteeredPolicy:
        from robot_rl.policy.registry import load_policy

        policy = cls(config, load_policy(directory / BASE_DIR))
        if not (directory / WEIGHTS_FILE).is_file():
            raise ConfigError(f"{directory} has no {WEIGHTS_FILE} (the steering heads)")
        missing, unexpected = load_model(policy.heads, str(directory / WEIGHTS_FILE), strict=False)
        if missing or unexpected:
            raise ConfigError(f"{directory}: head weights do not match the config (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
        return policy
