"""Random access for training: batches of steps and of windows (observation history, action chunks).

A window is given per field as ``(first_offset, length)`` relative to the sampled step, e.g.
``{"obs/state": (-1, 2), "action": (0, 16)}`` reads the previous and current state and the next 16
actions. Offsets that leave the episode repeat its first or last row and are marked in ``<field>_pad``.
"""

from __future__ import annotations

import numpy as np

from robot_rl.core.errors import ConfigError
from robot_rl.replay.store import EpisodeStore


def read_windows(
    store: EpisodeStore, indices: np.ndarray, windows: dict[str, tuple[int, int]]
) -> dict[str, np.ndarray]:
    """For each global step index, the rows of each field in its window, clamped to the episode."""
    indices = np.asarray(indices, dtype=np.int64)
    episodes = store.episode_of_steps(indices)
    starts, ends = store.episode_starts[episodes], store.episode_ends[episodes]
    out: dict[str, np.ndarray] = {}
    for key, (first, length) in windows.items():
        if length < 1:
            raise ConfigError(f"window length for {key!r} must be >= 1, got {length}")
        raw = indices[:, None] + first + np.arange(length)[None, :]
        clamped = np.clip(raw, starts[:, None], ends[:, None] - 1)
        out[key] = store.get_steps(clamped.ravel(), [key])[key].reshape(*clamped.shape, *_row_shape(store, key))
        out[f"{key}_pad"] = raw != clamped
    return out


def _row_shape(store: EpisodeStore, key: str) -> tuple[int, ...]:
    return tuple(store.schema["steps"][key]["shape"])


class UniformSampler:
    """Uniform over the committed steps of a store (optionally only some episodes)."""

    def __init__(self, store: EpisodeStore, seed: int | None = None, episodes: np.ndarray | None = None) -> None:
        self.store = store
        self.rng = np.random.default_rng(seed)
        self.episodes = None if episodes is None else np.asarray(episodes, dtype=np.int64)
        self._refresh_index()

    def _refresh_index(self) -> None:
        starts, ends = self.store.episode_starts, self.store.episode_ends
        chosen = np.arange(len(ends)) if self.episodes is None else self.episodes
        if len(chosen) == 0:
            raise ConfigError(f"cannot sample from {self.store.path}: it holds no episodes")
        self._steps = np.concatenate([np.arange(starts[e], ends[e]) for e in chosen])

    def refresh(self) -> None:
        """See episodes committed since the last call (a learner sampling while actors write)."""
        self.store.refresh()
        self._refresh_index()

    def sample_indices(self, batch_size: int) -> np.ndarray:
        return self.rng.choice(self._steps, size=batch_size, replace=True)

    def sample_steps(self, batch_size: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        idx = self.sample_indices(batch_size)
        batch = self.store.get_steps(idx, keys)
        batch["index"] = idx
        return batch

    def sample_windows(self, batch_size: int, windows: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
        idx = self.sample_indices(batch_size)
        batch = read_windows(self.store, idx, windows)
        batch["index"] = idx
        return batch
