"""Rewards from the progress critic: value curves, dense per-step rewards, done detection.

Because the critic is a Siamese pair model, a trajectory is scored with one backbone pass per frame
(batched); the dense reward of step t is delta(frame_t, frame_{t+1}) and the rewards of an episode sum
exactly to its value change. ``skip`` > 1 compares frames k steps apart (smoother, over k).
"""

from __future__ import annotations

import numpy as np
import torch

from robot_rl.critic.model import ProgressCritic


class CriticReward:
    def __init__(self, critic: ProgressCritic, batch_size: int = 64, skip: int = 1,
                 done_threshold: float | None = None) -> None:
        if skip < 1:
            raise ValueError(f"skip must be >= 1, got {skip}")
        self.critic = critic.eval()
        self.batch_size = batch_size
        self.skip = skip
        self.done_threshold = critic.config.done_threshold if done_threshold is None else done_threshold

    @torch.no_grad()
    def score_frames(self, frames: dict[str, np.ndarray], instruction: str) -> tuple[np.ndarray, np.ndarray]:
        """Progress (N,) and done probability (N,) of N observations, many per forward pass."""
        n = len(next(iter(frames.values())))
        values, dones = [], []
        for s in range(0, n, self.batch_size):
            chunk = {c: np.asarray(v[s : s + self.batch_size]) for c, v in frames.items()}
            count = len(next(iter(chunk.values())))
            value, done_logit = self.critic.heads(self.critic.encode(chunk, [instruction] * count))
            values.append(value.cpu().numpy())
            dones.append(torch.sigmoid(done_logit).cpu().numpy())
        return np.concatenate(values), np.concatenate(dones)

    def value_curve(self, frames: dict[str, np.ndarray], instruction: str) -> np.ndarray:
        """Accumulated deltas from the first frame: V_0 = 0, V_k = sum of delta(f_{i-1}, f_i)."""
        values, _ = self.score_frames(frames, instruction)
        return values - values[0]

    def rewards(self, frames: dict[str, np.ndarray], instruction: str) -> tuple[np.ndarray, np.ndarray]:
        """Dense rewards (T,) and done flags (T,) for the T steps between T+1 frames."""
        values, dones = self.score_frames(frames, instruction)
        t = np.arange(1, len(values))
        rewards = (values[t] - values[np.maximum(t - self.skip, 0)]) / np.minimum(t, self.skip)
        return rewards.astype(np.float32), dones[1:] > self.done_threshold


class ObservationProgress:
    """The progress the critic at ``critic_dir`` gives one observation (a dict with ``images``): what a simulated
    operator watches for a stall. Picklable: the critic is loaded where it is first called (an env worker)."""

    def __init__(self, critic_dir: str, instruction: str) -> None:
        self.critic_dir, self.instruction = str(critic_dir), instruction
        self._scorer: CriticReward | None = None

    def __getstate__(self) -> dict:
        return {"critic_dir": self.critic_dir, "instruction": self.instruction, "_scorer": None}

    def __call__(self, obs: dict) -> float:
        if self._scorer is None:
            torch.set_num_threads(1)
            self._scorer = CriticReward(ProgressCritic.load(self.critic_dir))
        frames = {c: np.asarray(obs["images"][c])[None] for c in self._scorer.critic.config.cameras}
        return float(self._scorer.score_frames(frames, self.instruction)[0][0])
