"""Env wrappers. ``ProgressRewardWrapper`` turns any frame scorer (the progress critic's
``CriticReward``) into a dense reward that replaces or adds to the env's sparse one."""

from __future__ import annotations

from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from robot_rl.core.errors import ConfigError


class FrameScorer(Protocol):
    done_threshold: float

    def score_frames(self, frames: dict[str, np.ndarray], instruction: str) -> tuple[np.ndarray, np.ndarray]: ...


class ProgressRewardWrapper(gym.Wrapper):
    """reward = progress(obs_{t+1}) - progress(obs_t) (one scorer pass per step: the previous frame's
    progress is kept), in ``mode`` ``replace`` or ``add`` (weight * dense + sparse). With ``critic_done``
    the episode also terminates when the scorer says done. ``info`` gets ``critic_progress``,
    ``critic_done`` and the env's own ``sparse_reward``."""

    def __init__(self, env: gym.Env, scorer: FrameScorer, mode: str = "replace", weight: float = 1.0,
                 critic_done: bool = False) -> None:
        super().__init__(env)
        if mode not in ("replace", "add"):
            raise ConfigError(f"reward mode must be 'replace' or 'add', got {mode!r}")
        self.scorer, self.mode, self.weight, self.critic_done = scorer, mode, weight, critic_done
        self._progress = 0.0
        self._instruction = ""

    def _score(self, obs: dict[str, Any]) -> tuple[float, float]:
        frames = {c: img[None] for c, img in obs["images"].items()}
        progress, done = self.scorer.score_frames(frames, self._instruction)
        return float(progress[0]), float(done[0])

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._instruction = info.get("instruction", getattr(self.env.unwrapped, "instruction", ""))
        self._progress, _ = self._score(obs)
        info["critic_progress"] = self._progress
        return obs, info

    def step(self, action):
        obs, sparse, terminated, truncated, info = self.env.step(action)
        progress, done_prob = self._score(obs)
        dense = progress - self._progress
        self._progress = progress
        reward = self.weight * dense + (sparse if self.mode == "add" else 0.0)
        done = done_prob > self.scorer.done_threshold
        info.update(sparse_reward=sparse, critic_progress=progress, critic_done=done)
        if self.critic_done and done:
            terminated = True
        return obs, reward, terminated, truncated, info
