"""Episodes held in memory (numpy), with the read API of the store, for fast training on small datasets."""

from __future__ import annotations

import numpy as np

from robot_rl.core.errors import ConfigError
from robot_rl.replay.store import EpisodeStore


class InMemoryEpisodes:
    """A read-only copy of chosen step fields of one or more stores, concatenated in order.

    Exposes what samplers and ``read_windows`` use: ``episode_starts``, ``episode_ends``, ``num_steps``,
    ``schema``, ``get_steps`` and ``episode_of_steps``, plus per-episode ``instructions``.
    """

    def __init__(self, arrays: dict[str, np.ndarray], episode_ends: np.ndarray, instructions: list[str],
                 schema: dict) -> None:
        self._arrays = arrays
        self.episode_ends = np.asarray(episode_ends, dtype=np.int64)
        self.episode_starts = np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)
        self.num_steps = int(self.episode_ends[-1]) if len(self.episode_ends) else 0
        self.num_episodes = len(self.episode_ends)
        self.instructions = list(instructions)
        self.schema = schema

    @classmethod
    def from_stores(cls, stores: list[EpisodeStore], keys: list[str]) -> InMemoryEpisodes:
        if not stores:
            raise ConfigError("no episode stores given")
        parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        ends, instructions, offset = [], [], 0
        for store in stores:
            if store.num_episodes == 0:
                raise ConfigError(f"{store.path} holds no episodes")
            missing = [k for k in keys if k not in store.step_keys]
            if missing:
                raise ConfigError(f"{store.path} lacks field(s) {missing}; it has {store.step_keys}")
            for key in keys:
                parts[key].append(np.asarray(store.read_field(key)))
            ends.append(store.episode_ends + offset)
            instructions += [str(x) for x in store.episode_field("instruction")]
            offset += store.num_steps
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        schema = {"steps": {k: stores[0].schema["steps"][k] for k in keys}}
        return cls(arrays, np.concatenate(ends), instructions, schema)

    @property
    def step_keys(self) -> list[str]:
        return list(self._arrays)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())

    def get_steps(self, indices: np.ndarray, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        keys = self.step_keys if keys is None else keys
        return {k: self._arrays[k][indices] for k in keys}

    def episode_of_steps(self, indices: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.episode_ends, np.asarray(indices), side="right")

    def field(self, key: str) -> np.ndarray:
        return self._arrays[key]


def estimate_bytes(store: EpisodeStore, keys: list[str]) -> int:
    """Bytes the chosen fields of ``store`` take uncompressed in memory."""
    total = 0
    for key in keys:
        spec = store.schema["steps"][key]
        total += store.num_steps * int(np.prod(spec["shape"], dtype=np.int64)) * np.dtype(spec["dtype"]).itemsize
    return total
