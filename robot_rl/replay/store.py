"""The zarr episode store: append-only, crash-safe, random-access.

Layout (zarr v3)::

    zarr.json                      root attributes: format, version, schema and the commit record
    steps/<field>                  per-step arrays over all episodes (obs/images/<cam>, obs/state,
                                   action, reward, terminated, truncated, success, intervention, ...)
    episodes/{end,success,seed,source,task,instruction}
    final_obs/<obs key>            the observation after each episode's last action

Commit protocol: an episode's arrays are written past the committed end first; the commit record
(``num_episodes``, ``num_steps`` in the root attributes) is rewritten last. zarr (>= 3.1.5) writes
every file to a temporary name and renames it, so a writer killed at any moment leaves each file
either old or new, and readers see exactly the committed episodes. One writer at a time (a lock
file); any number of readers, which call ``refresh()`` to see new episodes.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from robot_rl.core.errors import ConfigError, StoreCorruptError, StoreError
from robot_rl.core.schema import Episode, EpisodeMeta

FORMAT = "robot_rl.episode_store"
VERSION = 1
_ATTR = "robot_rl"
_EPISODE_FIELDS = {
    "end": np.dtype(np.int64),
    "success": np.dtype(bool),
    "seed": np.dtype(np.int64),
    "source": str,
    "task": str,
    "instruction": str,
}
IMAGE_CHUNK_STEPS = 32  # see FACTS: per-step image chunks are slow to read, episode-sized ones to sample
LOWDIM_CHUNK_STEPS = 4096
EPISODE_CHUNK = 1024

warnings.filterwarnings("ignore", message=".*vlen-utf8.*")
warnings.filterwarnings("ignore", message=".*not part of the Zarr format 3 specification.*")


def _is_image(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    return dtype == np.uint8 and len(shape) == 3


def _chunk_steps(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return IMAGE_CHUNK_STEPS if _is_image(shape, dtype) else LOWDIM_CHUNK_STEPS


def is_store(path: str | Path) -> bool:
    """Whether ``path`` holds a robot_rl episode store (cheap: reads the root metadata only)."""
    meta = Path(path) / "zarr.json"
    if not meta.is_file():
        return False
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False
    return attrs.get(_ATTR, {}).get("format") == FORMAT


class EpisodeStore:
    """An episode store on disk. Open with :meth:`open` (read) or :meth:`create` / ``mode="a"``."""

    def __init__(self, path: Path, group: zarr.Group, writable: bool) -> None:
        self.path = path
        self._group = group
        self.writable = writable
        self._lock_fd: int | None = None
        self._arrays: dict[str, zarr.Array] = {}
        self._load_record()

    # ---------------------------------------------------------------------------- open / create
    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> EpisodeStore:
        """Open an existing store for reading (``"r"``) or appending (``"a"``)."""
        path = Path(path)
        if mode not in ("r", "a"):
            raise ConfigError(f"mode must be 'r' or 'a', got {mode!r}")
        if not path.exists():
            raise StoreError(f"no episode store at {path}")
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{path} is not a robot_rl episode store (no zarr.json)")
        try:
            json.loads((path / "zarr.json").read_text())
        except ValueError as exc:
            raise StoreCorruptError(f"episode store {path} is corrupt: unreadable zarr.json ({exc})") from None
        if not is_store(path):
            raise StoreError(f"{path} is not a robot_rl episode store (zarr.json has no {FORMAT} record)")
        store = cls(path, cls._open_group(path, "r+" if mode == "a" else "r"), writable=mode == "a")
        if mode == "a":
            store._acquire_lock()
            store._remove_partial_files()
        return store

    @classmethod
    def create(cls, path: str | Path, overwrite: bool = False) -> EpisodeStore:
        """Create an empty store. With ``overwrite`` an existing *store* is replaced; any other existing
        path is refused, so that no user data is deleted by mistake."""
        path = Path(path)
        if path.exists():
            if not overwrite:
                raise StoreError(f"{path} already exists (use append or overwrite)")
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
            elif is_store(path):
                shutil.rmtree(path)
            else:
                raise StoreError(f"refusing to overwrite {path}: it is not a robot_rl episode store")
        path.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(str(path), mode="w-")
        record = {"format": FORMAT, "version": VERSION, "num_episodes": 0, "num_steps": 0, "schema": None}
        group.attrs[_ATTR] = record
        store = cls(path, group, writable=True)
        store._acquire_lock()
        return store

    @staticmethod
    def _open_group(path: Path, mode: str) -> zarr.Group:
        try:
            return zarr.open_group(str(path), mode=mode)
        except Exception as exc:  # zarr raises several types for broken metadata
            raise StoreCorruptError(f"episode store {path} is corrupt: {exc}") from None

    def _acquire_lock(self) -> None:
        fd = os.open(self.path / ".writer.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"{self.path} is being written by another process") from None
        self._lock_fd = fd

    def _remove_partial_files(self) -> None:
        for leftover in self.path.rglob("*.partial"):  # temp files of a writer that was killed
            leftover.unlink(missing_ok=True)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------ the record
    def _load_record(self) -> None:
        record = self._group.attrs.get(_ATTR)
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise StoreError(f"{self.path} is not a robot_rl episode store")
        if record.get("version") != VERSION:
            raise StoreError(f"{self.path} has store version {record.get('version')}, expected {VERSION}")
        self.num_episodes = int(record["num_episodes"])
        self.num_steps = int(record["num_steps"])
        self.schema: dict[str, Any] | None = record.get("schema")
        self.env_config: dict[str, Any] | None = record.get("env")
        self._arrays.clear()
        if self.num_episodes:
            self._check_index()

    def refresh(self) -> None:
        """Re-read the commit record to see episodes appended by a writer since opening."""
        self._group = self._open_group(self.path, "r+" if self.writable else "r")
        self._load_record()

    def _array(self, name: str) -> zarr.Array:
        arr = self._arrays.get(name)
        if arr is None:
            try:
                arr = self._group[name]
            except KeyError:
                raise StoreCorruptError(f"episode store {self.path} is corrupt: array {name!r} is missing") from None
            except Exception as exc:
                raise StoreCorruptError(f"episode store {self.path} is corrupt: array {name!r}: {exc}") from None
            self._arrays[name] = arr
        return arr

    def _check_index(self) -> None:
        assert self.schema is not None
        for key in self.step_keys:
            if self._array(f"steps/{key}").shape[0] < self.num_steps:
                raise StoreCorruptError(
                    f"episode store {self.path} is corrupt: steps/{key} holds "
                    f"{self._array(f'steps/{key}').shape[0]} steps, the record commits {self.num_steps}"
                )
        for key in _EPISODE_FIELDS:
            if self._array(f"episodes/{key}").shape[0] < self.num_episodes:
                raise StoreCorruptError(
                    f"episode store {self.path} is corrupt: episodes/{key} holds fewer than "
                    f"{self.num_episodes} episodes"
                )
        ends = self.episode_ends
        if ends[-1] != self.num_steps or np.any(np.diff(ends) <= 0) or ends[0] <= 0:
            raise StoreCorruptError(
                f"episode store {self.path} is corrupt: episode ends do not add up to {self.num_steps} steps"
            )

    # ------------------------------------------------------------------------------- writing
    def set_env_config(self, env: dict[str, Any]) -> None:
        """Record how the env that produced the episodes was configured (read back by training and eval)."""
        if not self.writable:
            raise StoreError(f"{self.path} is open read-only")
        record = dict(self._group.attrs[_ATTR])
        record["env"] = env
        self._group.attrs[_ATTR] = record
        self.env_config = env

    @property
    def step_keys(self) -> list[str]:
        return list(self.schema["steps"]) if self.schema else []

    @staticmethod
    def _schema_of(episode: Episode) -> dict[str, Any]:
        steps = {k: {"dtype": v.dtype.str, "shape": list(v.shape[1:])} for k, v in episode.step_arrays().items()}
        return {"steps": steps}

    def _check_schema(self, episode: Episode) -> None:
        self.check_step_schema(self._schema_of(episode)["steps"])

    def check_step_schema(self, steps: dict[str, dict[str, Any]]) -> None:
        """Raise ConfigError unless ``{field: {"dtype", "shape"}}`` matches what the store holds.

        Writers call this before producing data, so a mismatch costs nothing."""
        if self.schema is None:
            return
        ours = self.schema["steps"]
        if set(steps) != set(ours):
            missing, extra = sorted(set(ours) - set(steps)), sorted(set(steps) - set(ours))
            raise ConfigError(f"episode fields differ from the store's: missing {missing}, unexpected {extra}")
        for key, spec in ours.items():
            theirs = {"dtype": np.dtype(steps[key]["dtype"]).str, "shape": list(steps[key]["shape"])}
            if theirs != spec:
                raise ConfigError(
                    f"episode field {key!r} has dtype {theirs['dtype']} shape {theirs['shape']}, "
                    f"the store holds dtype {spec['dtype']} shape {spec['shape']}"
                )

    def _create_arrays(self, episode: Episode) -> None:
        for key, arr in episode.step_arrays().items():
            shape = tuple(arr.shape[1:])
            self._group.create_array(
                f"steps/{key}", shape=(0, *shape), dtype=arr.dtype,
                chunks=(_chunk_steps(shape, arr.dtype), *shape),
            )
        for key, arr in episode.final_obs.items():
            self._group.create_array(
                f"final_obs/{key}", shape=(0, *arr.shape), dtype=arr.dtype,
                chunks=(IMAGE_CHUNK_STEPS if _is_image(arr.shape, arr.dtype) else EPISODE_CHUNK, *arr.shape),
            )
        for key, dtype in _EPISODE_FIELDS.items():
            self._group.create_array(f"episodes/{key}", shape=(0,), dtype=dtype, chunks=(EPISODE_CHUNK,))

    def append(self, episode: Episode) -> int:
        """Write one whole episode and commit it; returns its index. Nothing is visible to readers
        until the commit record is rewritten at the very end."""
        if not self.writable:
            raise StoreError(f"{self.path} is open read-only")
        episode.validate()
        if self.schema is None:
            self._create_arrays(episode)
            self.schema = self._schema_of(episode)
        else:
            self._check_schema(episode)
        start, length, index = self.num_steps, len(episode), self.num_episodes
        for key, data in episode.step_arrays().items():
            self._write_rows(f"steps/{key}", start, data)
        for key, data in episode.final_obs.items():
            self._write_rows(f"final_obs/{key}", index, data[None])
        meta = episode.meta
        values = {
            "end": start + length, "success": meta.success, "seed": meta.seed,
            "source": meta.source, "task": meta.task, "instruction": meta.instruction,
        }
        for key, value in values.items():
            dtype = object if _EPISODE_FIELDS[key] is str else _EPISODE_FIELDS[key]
            self._write_rows(f"episodes/{key}", index, np.array([value], dtype=dtype))
        record = dict(self._group.attrs[_ATTR])
        record.update(num_episodes=index + 1, num_steps=start + length, schema=self.schema)
        self._group.attrs[_ATTR] = record  # the commit point
        self.num_episodes, self.num_steps = index + 1, start + length
        return index

    def _write_rows(self, name: str, start: int, data: np.ndarray) -> None:
        arr = self._array(name)
        end = start + data.shape[0]
        if arr.shape[0] != end:  # also drops rows a killed writer left past the committed end
            arr.resize((end, *arr.shape[1:]))
        arr[start:end] = data

    # ------------------------------------------------------------------------- after-the-fact arrays
    def extra_array(self, name: str, dtype: Any = np.float32, create: bool = False) -> zarr.Array:
        """A per-step array added after the episodes were written (``extras/<name>``, e.g. critic rewards).

        Extras never touch the episodes' own arrays; their ``attrs`` hold what the writer needs to resume."""
        key = f"extras/{name}"
        if key in self._arrays:
            return self._arrays[key]
        try:
            arr = self._group[key]
        except KeyError:
            if not create:
                raise ConfigError(f"{self.path} has no extra array {name!r}") from None
            if not self.writable:
                raise StoreError(f"{self.path} is open read-only") from None
            arr = self._group.create_array(key, shape=(0,), dtype=dtype, chunks=(LOWDIM_CHUNK_STEPS,))
        self._arrays[key] = arr
        return arr

    def write_extra_rows(self, name: str, start: int, data: np.ndarray) -> None:
        if not self.writable:
            raise StoreError(f"{self.path} is open read-only")
        if start + len(data) > self.num_steps:
            raise ConfigError(f"rows {start}..{start + len(data)} of {name!r} pass the store's {self.num_steps} steps")
        self._write_rows(f"extras/{name}", start, np.asarray(data))

    # ------------------------------------------------------------------------------- reading
    @property
    def episode_ends(self) -> np.ndarray:
        return np.asarray(self._array("episodes/end")[: self.num_episodes], dtype=np.int64)

    @property
    def episode_starts(self) -> np.ndarray:
        ends = self.episode_ends
        return np.concatenate([[0], ends[:-1]]) if len(ends) else ends

    def episode_meta(self, index: int) -> EpisodeMeta:
        self._check_episode_index(index)
        get = {k: self._array(f"episodes/{k}")[index] for k in ("task", "instruction", "success", "source", "seed")}
        return EpisodeMeta(
            task=str(get["task"]), instruction=str(get["instruction"]), success=bool(get["success"]),
            source=str(get["source"]), seed=int(get["seed"]),
        )

    def episode_field(self, name: str) -> np.ndarray:
        """A per-episode metadata column (``success``, ``task``, ...) over committed episodes."""
        if name not in _EPISODE_FIELDS:
            raise ConfigError(f"unknown episode field {name!r}; known: {list(_EPISODE_FIELDS)}")
        return np.asarray(self._array(f"episodes/{name}")[: self.num_episodes])

    def _check_episode_index(self, index: int) -> None:
        if not 0 <= index < self.num_episodes:
            raise ConfigError(f"episode {index} does not exist; the store has {self.num_episodes} episodes (0-based)")

    def read_episode(self, index: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """Per-step arrays of one episode (all fields, or ``keys``), read without touching others."""
        self._check_episode_index(index)
        start, end = int(self.episode_starts[index]), int(self.episode_ends[index])
        return {k: self._array(f"steps/{k}")[start:end] for k in self._keys(keys)}

    def final_obs(self, index: int) -> dict[str, np.ndarray]:
        self._check_episode_index(index)
        return {k[4:]: self._array(f"final_obs/{k[4:]}")[index] for k in self.step_keys if k.startswith("obs/")}

    def _keys(self, keys: list[str] | None) -> list[str]:
        if keys is None:
            return self.step_keys
        unknown = [k for k in keys if k not in self.step_keys]
        if unknown:
            raise ConfigError(f"unknown step field(s) {unknown}; the store has {self.step_keys}")
        return list(keys)

    def get_steps(self, indices: np.ndarray, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """Rows at global step ``indices`` (any order, repeats allowed), read chunk-wise from disk."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_steps):
            raise ConfigError(f"step indices must be in [0, {self.num_steps}), got {indices.min()}..{indices.max()}")
        unique, inverse = np.unique(indices, return_inverse=True)
        out = {}
        for key in self._keys(keys):
            rows = self._array(f"steps/{key}").get_orthogonal_selection((unique,))
            out[key] = rows[inverse.reshape(indices.shape)]
        return out

    def episode_of_steps(self, indices: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.episode_ends, np.asarray(indices), side="right")

    # ------------------------------------------------------------------------------- summary
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def summary(self) -> dict[str, Any]:
        tasks, sources = {}, {}
        success = self.episode_field("success") if self.num_episodes else np.zeros(0, bool)
        for name in ("task", "source"):
            values = self.episode_field(name) if self.num_episodes else []
            counts = tasks if name == "task" else sources
            for v in values:
                counts[str(v)] = counts.get(str(v), 0) + 1
        return {
            "path": str(self.path),
            "episodes": self.num_episodes,
            "steps": self.num_steps,
            "success_rate": float(success.mean()) if len(success) else 0.0,
            "tasks": tasks,
            "sources": sources,
            "fields": {k: v for k, v in (self.schema or {}).get("steps", {}).items()},
            "size_bytes": self.size_bytes(),
        }

    def verify(self) -> None:
        """Decode every committed chunk; raise StoreCorruptError on the first that fails."""
        for key in self.step_keys:
            arr = self._array(f"steps/{key}")
            step = arr.chunks[0]
            for start in range(0, self.num_steps, step):
                try:
                    arr[start : min(start + step, self.num_steps)]
                except Exception as exc:
                    raise StoreCorruptError(
                        f"episode store {self.path} is corrupt: steps/{key} rows {start}+ unreadable ({exc})"
                    ) from None
