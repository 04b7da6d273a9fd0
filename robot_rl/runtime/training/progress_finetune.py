"""The progress critic keeps learning during an RL run: short bursts of its own training loss on the data it
was trained on plus the run's committed episodes, labelled by their outcome, so the policy's new failures
(and new ways to succeed) become its examples as they happen."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robot_rl.core.errors import ConfigError
from robot_rl.core.files import replace_folder
from robot_rl.core.schema import Episode
from robot_rl.critic.dataset import EpisodeFrames, PairSampler, episode_frames, load_episodes
from robot_rl.critic.model import ProgressCritic
from robot_rl.replay.store import EpisodeStore
from robot_rl.runtime.training.critic_train import CriticTrainConfig, augment, critic_loss


@dataclass
class ProgressFinetuneConfig:
    """Online fine-tuning of the progress critic (the dense reward) on the run's own episodes."""

    every: int = 0
    """Rounds between bursts (0: the progress critic stays as it was trained)."""
    steps: int = 40
    """Critic updates per burst."""
    lr: float = 3e-5
    """AdamW learning rate (a tenth of the critic's first training: the reward must not jump)."""
    batch_size: int = 32
    """Pairs per update."""
    recent_episodes: int = 256
    """Online episodes kept for it, newest first (their frames stay in memory)."""
    augment_shift: int = 4

    def validate(self) -> None:
        if self.every < 0 or self.steps < 1 or self.lr <= 0 or self.batch_size < 1 or self.recent_episodes < 1:
            raise ValueError("progress_finetune: every >= 0, steps, batch_size, recent_episodes >= 1 and lr > 0, "
                             f"got {self.every}, {self.steps}, {self.batch_size}, {self.recent_episodes}, {self.lr}")

    @property
    def enabled(self) -> bool:
        return self.every > 0


class ProgressFinetuner:
    """Holds the critic's training episodes and the run's recent ones; ``burst()`` trains the critic (the
    very object that scores new episodes) for ``steps`` updates. ``state`` (from ``state_dict()``) resumes
    it."""

    def __init__(self, critic: ProgressCritic, cfg: ProgressFinetuneConfig, critic_dir: Path,
                 state: dict | None = None, seed: int = 0) -> None:
        self.critic, self.cfg = critic, cfg
        self._loss_cfg = CriticTrainConfig()
        self.base: list[EpisodeFrames] = []
        meta = Path(critic_dir).parent / "critic_train.json"
        # the data the critic first learned from (demos, failures, earlier rollouts): kept in every burst so
        # that it does not forget them while it learns the run's episodes
        for path in json.loads(meta.read_text())["data"] if meta.is_file() else []:
            if Path(path).exists():
                with EpisodeStore.open(path) as store:
                    self.base += load_episodes(store, critic.config.cameras)
        self.online: list[EpisodeFrames] = []
        self.updates, self.bursts = 0, 0
        self.params = [p for p in critic.parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError("the progress critic has no trainable parameters to fine-tune")
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=1e-4)
        self.rng = np.random.default_rng(seed)
        if state is not None:  # a resumed run: the fine-tuned weights, not the original ones
            critic.load_state_dict(state["critic"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.updates, self.bursts = int(state["updates"]), int(state["bursts"])
        critic.eval()

    def add(self, ep: Episode) -> None:
        self.online.append(episode_frames(ep, self.critic.config.cameras))
        del self.online[:-self.cfg.recent_episodes]

    def burst(self) -> dict[str, float]:
        """``steps`` updates on pairs from the first training data and the recent online episodes."""
        episodes = self.base + self.online
        if not any(e.progress is not None for e in episodes):
            return {}
        sampler = PairSampler(episodes, seed=int(self.rng.integers(2**31)))
        sums: dict[str, float] = {}
        self.critic.train()
        try:
            for _ in range(self.cfg.steps):
                batch = augment(sampler.sample(self.cfg.batch_size), self.cfg.augment_shift)
                loss, metrics = critic_loss(self.critic, batch, self._loss_cfg)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.params, 1.0)
                self.optimizer.step()
                self.updates += 1
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
        finally:
            self.critic.eval()
        self.bursts += 1
        return {f"progress_{k}": v / self.cfg.steps for k, v in sums.items()}

    def state_dict(self) -> dict:
        """Weights, optimiser and counts: the run commits them with its learner, in one file."""
        return {"critic": self.critic.state_dict(), "optimizer": self.optimizer.state_dict(),
                "updates": self.updates, "bursts": self.bursts}

    def export(self, folder: Path) -> None:
        """The fine-tuned critic as a critic folder (``robot-rl critic eval --checkpoint``), replaced whole."""
        replace_folder(folder, self.critic.save)
