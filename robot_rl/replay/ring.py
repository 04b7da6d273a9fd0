"""A bounded in-memory ring of the newest committed steps, fed episode by episode from episode stores.

The stores stay the source of truth: the ring only copies committed episodes, remembers how many of
each store it took (so a store is never read twice), and after a restart is rebuilt from the stores'
tails. Sampling is numpy indexing of preallocated arrays, optionally restricted to the newest steps
(a staleness bound) and written into caller-owned buffers (no allocation per batch).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from robot_rl.core.errors import ConfigError
from robot_rl.replay.store import EpisodeStore


class StepRing:
    """The newest ``capacity`` steps of chosen fields; the oldest are overwritten first."""

    def __init__(self, capacity: int, fields: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ConfigError(f"ring capacity must be a positive number of steps, got {capacity!r}")
        if not fields:
            raise ConfigError("a ring needs at least one step field")
        self.capacity = capacity
        self.fields = {k: (tuple(shape), np.dtype(dtype)) for k, (shape, dtype) in fields.items()}
        self._arrays = {k: np.empty((capacity, *shape), dtype) for k, (shape, dtype) in self.fields.items()}
        self.size = 0  # steps held
        self.inserted = 0  # steps ever added (the insert clock: slot of step t is t % capacity)
        self.taken: dict[str, int] = {}  # store path -> episodes copied from it

    @classmethod
    def for_store(cls, store: EpisodeStore, capacity: int, keys: list[str] | None = None) -> StepRing:
        """An empty ring for the fields ``keys`` (default: all) of ``store``'s schema."""
        if store.schema is None:
            raise ConfigError(f"{store.path} holds no episodes yet: its fields are unknown")
        keys = store.step_keys if keys is None else keys
        unknown = [k for k in keys if k not in store.step_keys]
        if unknown:
            raise ConfigError(f"unknown step field(s) {unknown}; the store has {store.step_keys}")
        steps = store.schema["steps"]
        return cls(capacity, {k: (tuple(steps[k]["shape"]), np.dtype(steps[k]["dtype"])) for k in keys})

    @classmethod
    def from_stores(cls, stores: Iterable[EpisodeStore], capacity: int, keys: list[str] | None = None) -> StepRing:
        """Rebuild a ring from stores (after a restart): the newest episodes of each, up to ``capacity``
        steps in all, in store order; every committed episode counts as taken."""
        stores = list(stores)
        if not stores:
            raise ConfigError("no episode stores given")
        ring = cls.for_store(stores[0], capacity, keys)
        for store in stores:
            ring.ingest(store)
        return ring

    # -------------------------------------------------------------------------------- writing
    def add(self, steps: dict[str, np.ndarray]) -> None:
        """Append one episode's rows (every field of the ring, same length); an episode longer than the
        ring keeps its last ``capacity`` steps."""
        missing = [k for k in self.fields if k not in steps]
        if missing:
            raise ConfigError(f"episode lacks ring field(s) {missing}")
        lengths = {k: len(steps[k]) for k in self.fields}
        n = next(iter(lengths.values()))
        if any(v != n for v in lengths.values()):
            raise ConfigError(f"episode fields differ in length: {lengths}")
        for key, (shape, _) in self.fields.items():
            if tuple(np.shape(steps[key])[1:]) != shape:
                raise ConfigError(f"field {key!r} rows have shape {np.shape(steps[key])[1:]}, the ring holds {shape}")
        skip = max(0, n - self.capacity)
        slots = (self.inserted + skip + np.arange(n - skip)) % self.capacity
        for key, arr in self._arrays.items():
            arr[slots] = np.asarray(steps[key])[skip:]
        self.inserted += n
        self.size = min(self.capacity, self.size + n)

    def ingest(self, store: EpisodeStore, limit: int | None = None) -> int:
        """Copy the episodes ``store`` committed since the last call (at most ``limit``); returns how many.

        Episodes that could not stay in the ring anyway (older than the newest ``capacity`` steps) are
        counted as taken without being read."""
        store.refresh()
        key = str(store.path)
        start = self.taken.get(key, 0)
        stop = store.num_episodes if limit is None else min(store.num_episodes, start + limit)
        if stop <= start:
            return 0
        ends, starts = store.episode_ends, store.episode_starts
        first = start
        while first < stop - 1 and ends[stop - 1] - ends[first] >= self.capacity:
            first += 1  # episode `first` would be overwritten by the ones after it
        if first < stop:
            rows = np.arange(starts[first], ends[stop - 1])
            data = store.get_steps(rows, list(self.fields))
            bounds = ends[first:stop] - starts[first]
            begin = 0
            for end in bounds:
                self.add({k: v[begin:end] for k, v in data.items()})
                begin = int(end)
        self.taken[key] = stop
        return stop - start

    # -------------------------------------------------------------------------------- reading
    def sample_slots(self, batch_size: int, rng: np.random.Generator, newest: int | None = None) -> np.ndarray:
        """Uniform slots over the held steps, or over only the ``newest`` ones (a staleness bound)."""
        if self.size == 0:
            raise ConfigError("cannot sample from an empty ring")
        span = self.size if newest is None else min(self.size, int(newest))
        if span < 1:
            raise ConfigError(f"newest must be >= 1 step, got {newest}")
        age = rng.integers(0, span, size=batch_size)
        return (self.inserted - 1 - age) % self.capacity

    def get(self, slots: np.ndarray, keys: list[str] | None = None,
            out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Rows at ``slots``; with ``out`` (arrays of the right shape, e.g. from :meth:`buffers`) they are
        written there instead of into new arrays."""
        keys = list(self.fields) if keys is None else keys
        slots = np.asarray(slots)
        if slots.size and (slots.min() < 0 or slots.max() >= self.size):
            raise ConfigError(f"ring slots must be in [0, {self.size}), got {slots.min()}..{slots.max()}")
        # mode="wrap": with the default "raise", numpy buffers a copy when writing into `out`
        return {k: np.take(self._arrays[k], slots, axis=0, out=None if out is None else out[k], mode="wrap")
                for k in keys}

    def buffers(self, batch_size: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """Arrays to pass as ``out`` to :meth:`get` for batches of ``batch_size``."""
        keys = list(self.fields) if keys is None else keys
        return {k: np.empty((batch_size, *self.fields[k][0]), self.fields[k][1]) for k in keys}

    def sample(self, batch_size: int, rng: np.random.Generator, keys: list[str] | None = None,
               newest: int | None = None, out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        return self.get(self.sample_slots(batch_size, rng, newest), keys, out)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())
