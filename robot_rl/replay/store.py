"""The zarr episode store: append-only, crash-safe, random-access, and verifiable.

Layout (zarr v3)::

    zarr.json                      root attributes: format, version, schema and the commit record
    steps/<field>                  per-step arrays over all episodes (obs/images/<cam>, obs/state,
                                   action, reward, terminated, truncated, success, intervention, ...)
    episodes/{end,success,seed,source,task,instruction}
    episodes/manifest              one JSON record per episode: boundaries, metadata, row digests
    final_obs/<obs key>            the observation after each episode's last action
    extras/<name>                  per-step arrays added after the fact (e.g. critic rewards)

Commit protocol: an episode's arrays are written past the committed end first; the commit record
(``num_episodes``, ``num_steps`` in the root attributes) is rewritten last. zarr (>= 3.1.5) writes
every file to a temporary name and renames it, so a writer killed at any moment leaves each file
either old or new, and readers see exactly the committed episodes. One writer at a time (a lock
file); any number of readers, which call ``refresh()`` to see new episodes.

Integrity (version 2, see ``layout.py``): every chunk file is written, ends with a crc32c, and the
record holds each array's metadata, so reading a committed row whose chunk is missing or damaged
raises StoreCorruptError; ``verify()`` also checks every episode against its manifest digests.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.core.array import AsyncArray
from zarr.storage import LocalStore, StorePath

from robot_rl.core.errors import ConfigError, StoreCorruptError, StoreError
from robot_rl.core.schema import STEP_FIELDS, Episode, EpisodeMeta
from robot_rl.replay.layout import (
    ATTR,
    EPISODE_CHUNK,
    EPISODE_FIELDS,
    FORMAT,
    IMAGE_CHUNK_STEPS,
    LOWDIM_CHUNK_STEPS,
    MANIFEST,
    VERSION,
    ChunkGuard,
    RawRows,
    committed_rows,
    corrupt,
    is_image,
    read_record,
    row_digest,
)

warnings.filterwarnings("ignore", message=".*vlen-utf8.*")
warnings.filterwarnings("ignore", message=".*not part of the Zarr format 3 specification.*")


RESIDENT_ROW_BYTES = 4096  # arrays with rows up to this size are kept decoded in memory for random reads ...
RESIDENT_BYTES = 64 << 20  # ... while all their committed rows fit in this


@dataclasses.dataclass(frozen=True)
class ChunkRows:
    """Rows per chunk file, per kind of array, and whether camera chunks are compressed (recorded in each
    array's metadata when it is created)."""

    image: int = IMAGE_CHUNK_STEPS  # steps of a camera (and final observations of a camera)
    lowdim: int = LOWDIM_CHUNK_STEPS  # steps of a state, action, flag or extra
    episode: int = EPISODE_CHUNK  # episodes of the episode table and of a low-dimensional final observation
    # Camera chunks are stored raw (plus their crc32c) by default, so that a random row is one read at a
    # known offset: ~10x faster random batches than decompressing a whole chunk per row. zstd shrinks
    # simulator renders (flat colours) ~10-20x on disk but real camera images little; turn it on to keep
    # large simulated stores small, at the cost of random-read speed.
    compress_images: bool = False

    def __post_init__(self) -> None:
        for name in ("image", "lowdim", "episode"):
            rows = getattr(self, name)
            if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
                raise ConfigError(f"chunk rows for {name} arrays must be a positive integer, got {rows!r}")


def is_store(path: str | Path) -> bool:
    """Whether ``path`` holds a robot_rl episode store (cheap: reads the root metadata only)."""
    meta = Path(path) / "zarr.json"
    if not meta.is_file():
        return False
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False
    return attrs.get(ATTR, {}).get("format") == FORMAT


def writer_lock(path: Path) -> int:
    """Take the store's one-writer lock (a file descriptor to close); StoreError if another process holds it."""
    fd = os.open(path / ".writer.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(f"{path} is being written by another process") from None
    return fd


def episode_record(start: int, end: int, meta: EpisodeMeta, digests: dict[str, str]) -> dict[str, Any]:
    """An episode's manifest entry (see ``layout.MANIFEST``)."""
    return {"start": start, "end": end, "success": bool(meta.success), "seed": int(meta.seed),
            "source": meta.source, "task": meta.task, "instruction": meta.instruction, "digests": digests}



def _write_empty_chunks(arr: zarr.Array) -> zarr.Array:
    """The same array, writing chunks even when they hold only the fill value. ``Array.with_config`` is new in
    zarr 3.1.6; 3.1.5 (the newest an environment with robosuite's numpy<2 gets) builds it from its parts."""
    if hasattr(arr, "with_config"):
        return arr.with_config({"write_empty_chunks": True})
    inner = arr._async_array
    config = dataclasses.replace(_array_config(inner), write_empty_chunks=True)
    return zarr.Array(AsyncArray(metadata=inner.metadata, store_path=inner.store_path, config=config))


def _array_config(arr: AsyncArray):
    """An async array's ArrayConfig (``config`` from zarr 3.1.6, ``_config`` before)."""
    return arr.config if hasattr(arr, "config") else arr._config

class EpisodeStore:
    """An episode store on disk. Open with :meth:`open` (read) or :meth:`create` / ``mode="a"``."""

    def __init__(self, path: Path, writable: bool) -> None:
        self.path = path
        self.writable = writable
        self._lock_fd: int | None = None
        self.chunks = ChunkRows()  # for arrays this store object creates
        self._arrays: dict[str, zarr.Array] = {}
        self._extents: dict[str, tuple[int, int]] = {}  # shared with the ChunkGuard of version-2 stores
        self._raw: dict[str, RawRows | None] = {}  # fast random rows of raw arrays; kept across refresh()
        self._resident: dict[str, np.ndarray] = {}  # committed rows of small arrays, decoded; grown on refresh
        self.version = int(read_record(path)["version"])
        self._group = self._open_group()
        self._load_record()

    # ---------------------------------------------------------------------------- open / create
    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> EpisodeStore:
        """Open an existing store for reading (``"r"``) or appending (``"a"``)."""
        path = Path(path)
        if mode not in ("r", "a"):
            raise ConfigError(f"mode must be 'r' or 'a', got {mode!r}")
        read_record(path)  # names what is wrong: no store, not a store, unreadable record, unknown version
        store = cls(path, writable=mode == "a")
        if mode == "a":
            store._acquire_lock()
            store._remove_partial_files()
        return store

    @classmethod
    def create(cls, path: str | Path, overwrite: bool = False, version: int = VERSION,
               chunks: ChunkRows | None = None) -> EpisodeStore:
        """Create an empty store. With ``overwrite`` an existing *store* is replaced; any other existing
        path is refused, so that no user data is deleted by mistake.

        ``version=1`` writes the layout of stores made before chunk checksums (no crc32c, no manifest,
        all-fill chunks skipped): kept to test that old stores still read, and as a benchmark baseline.
        ``chunks`` sets rows per chunk file (the defaults suit training; tests use small ones)."""
        path = Path(path)
        if version not in (1, VERSION):
            raise ConfigError(f"store version must be 1 or {VERSION}, got {version}")
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
        record: dict[str, Any] = {"format": FORMAT, "version": version, "num_episodes": 0, "num_steps": 0,
                                  "schema": None}
        if version >= 2:
            record.update(arrays={}, extras={},
                          integrity={"chunk_checksum": "crc32c", "empty_chunks_written": True, "manifest": MANIFEST})
        group.attrs[ATTR] = record
        store = cls(path, writable=True)
        store._acquire_lock()
        store.chunks = chunks or ChunkRows()
        return store

    def _open_group(self) -> zarr.Group:
        store: Any = LocalStore(self.path, read_only=not self.writable)
        self._readers: dict[str, zarr.Array] = {}
        self._guard = self._reading_guard = None
        if self.version >= 2:
            self._guard = ChunkGuard(store, self.path, self._extents)
            self._reading_guard = ChunkGuard(store, self.path, self._extents, strip=True)
            self._reading_guard.failures = self._guard.failures
            store = self._guard
        try:
            return zarr.open_group(store=store, mode="r+" if self.writable else "r")
        except Exception as exc:  # zarr raises several types for broken metadata
            raise StoreCorruptError(f"episode store {self.path} is corrupt: {exc}") from None

    def _acquire_lock(self) -> None:
        self._lock_fd = writer_lock(self.path)

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
        record = self._group.attrs.get(ATTR)
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise StoreError(f"{self.path} is not a robot_rl episode store")
        self._record = record
        self.version = int(record["version"])
        self.num_episodes = int(record["num_episodes"])
        self.num_steps = int(record["num_steps"])
        self.schema: dict[str, Any] | None = record.get("schema")
        self.env_config: dict[str, Any] | None = record.get("env")
        self._arrays.clear()
        self._readers.clear()
        self._update_extents()
        if self.num_episodes:
            self._check_index()

    def _update_extents(self) -> None:
        """Tell the guard which rows are committed now (version 2; version-1 stores skipped all-fill
        chunks, so a missing chunk there may be legitimate)."""
        self._extents.clear()
        if self.version < 2:
            return
        arrays = self._record.get("arrays", {})
        for name, rows in committed_rows(self._record).items():
            if name in arrays:
                self._extents[name] = (rows, int(arrays[name]["chunk_grid"]["configuration"]["chunk_shape"][0]))

    def _write_record(self, **updates: Any) -> None:
        record = {**self._record, **updates}
        self._group.attrs[ATTR] = record  # the commit point
        self._record = record
        self._update_extents()

    def refresh(self) -> None:
        """Re-read the commit record to see episodes appended by a writer since opening."""
        self.version = int(read_record(self.path)["version"])
        self._group = self._open_group()
        self._load_record()

    def _array(self, name: str) -> zarr.Array:
        arr = self._arrays.get(name)
        if arr is None:
            try:
                arr = self._group[name]
            except KeyError:
                raise corrupt(self.path, f"array {name!r} is missing (no {name}/zarr.json)") from None
            except StoreCorruptError:
                raise
            except Exception as exc:
                raise corrupt(self.path, f"array {name!r} has unreadable metadata ({exc})") from None
            if self.version >= 2:
                arr = _write_empty_chunks(arr)  # so that a missing chunk is never legitimate
            self._arrays[name] = arr
        return arr

    def _reader(self, name: str) -> zarr.Array:
        """The handle reads go through: in version 2, the array without its trailing crc32c codec, on
        the reading guard, which checks and strips the checksum itself (see ``ChunkGuard``)."""
        arr = self._readers.get(name)
        if arr is None:
            arr = self._array(name)
            meta = arr.metadata
            codecs = getattr(meta, "codecs", ())
            if self._reading_guard is not None and codecs and isinstance(codecs[-1], Crc32cCodec):
                self._reading_guard.stripped.add(name)
                handle = AsyncArray(metadata=dataclasses.replace(meta, codecs=codecs[:-1]),
                                    store_path=StorePath(self._reading_guard, name),
                                    config=_array_config(arr._async_array))
                arr = zarr.Array(handle)
            self._readers[name] = arr
        return arr

    def _raw_rows(self, name: str) -> RawRows | None:
        if name not in self._raw:
            self._raw[name] = RawRows.of(self.path, name, self._array(name)) if self.version >= 2 else None
        return self._raw[name]

    def _resident_rows(self, name: str, committed: int) -> np.ndarray | None:
        """All committed rows of a small array (state, action, flags: a few bytes a row), decoded once and
        grown as rows are committed, so that random rows skip zarr's per-call cost. None for a large
        array, or where a chunk is damaged (the caller's own read then names it)."""
        held = self._resident.get(name)
        if held is not None and len(held) >= committed:
            return held
        arr = self._array(name)
        try:
            dtype = np.dtype(arr.dtype)
        except TypeError:  # zarr's string dtypes
            return None
        row_bytes = int(np.prod(arr.shape[1:], dtype=np.int64)) * dtype.itemsize
        if dtype.hasobject or row_bytes > RESIDENT_ROW_BYTES or committed * row_bytes > RESIDENT_BYTES:
            return None
        start = 0 if held is None else len(held)
        try:
            new = self._read(name, slice(start, committed))
        except StoreCorruptError:
            return None
        held = new if held is None else np.concatenate([held, new])
        self._resident[name] = held
        return held

    def _read(self, name: str, selection: Any) -> np.ndarray:
        """Rows of array ``name``; a chunk that cannot be decoded raises StoreCorruptError."""
        if isinstance(selection, np.ndarray) and name in self._extents and name.startswith("steps/"):
            # steps/ arrays are append-only: their committed rows never change, so they may be remembered
            committed = self._extents[name][0]
            if (raw := self._raw_rows(name)) is not None:
                if len(selection) < 2 or bool(np.all(selection[1:] > selection[:-1])):  # sorted and unique
                    return raw.read(selection, committed)
            elif (rows := self._resident_rows(name, committed)) is not None:
                return rows[selection]
        arr = self._reader(name)
        try:
            data = arr.get_orthogonal_selection((selection,)) if isinstance(selection, np.ndarray) else arr[selection]
        except StoreCorruptError:
            raise
        except Exception as exc:
            problem = f"{name} rows {selection!r} cannot be decoded ({type(exc).__name__}: {exc})"
            raise corrupt(self.path, problem) from None
        if self._guard is not None and self._guard.failures:
            if isinstance(selection, slice):
                rows = np.arange(*selection.indices(arr.shape[0]))
            else:
                rows = np.atleast_1d(np.asarray(selection))
            self._guard.check(name, np.unique(rows // arr.chunks[0]), arr.ndim)
        return data

    def _check_index(self) -> None:
        assert self.schema is not None
        for name, rows in committed_rows(self._record).items():
            if not name.startswith(("steps/", "episodes/")):
                continue
            held = self._array(name).shape[0]
            if held < rows:
                raise corrupt(self.path, f"{name} holds {held} rows, the record commits {rows}")
        ends = self.episode_ends
        if ends[-1] != self.num_steps or np.any(np.diff(ends) <= 0) or ends[0] <= 0:
            raise corrupt(self.path, f"episode ends do not add up to {self.num_steps} steps")

    # ------------------------------------------------------------------------------- writing
    def set_env_config(self, env: dict[str, Any]) -> None:
        """Record how the env that produced the episodes was configured (read back by training and eval)."""
        self._check_writable()
        self._write_record(env=env)
        self.env_config = env

    def _check_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"{self.path} is open read-only")

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

    def _new_array(self, name: str, row_shape: tuple[int, ...], dtype: Any, chunk_rows: int,
                   overwrite: bool = False, compress: bool = True) -> None:
        kwargs: dict[str, Any] = {"overwrite": overwrite}
        if self.version >= 2:
            codecs = [ZstdCodec(level=0), Crc32cCodec()] if compress else [Crc32cCodec()]
            kwargs = {"compressors": codecs, "config": {"write_empty_chunks": True}}
        self._group.create_array(name, shape=(0, *row_shape), dtype=dtype, chunks=(chunk_rows, *row_shape), **kwargs)
        if self.version >= 2:  # a copy of the metadata, from which a lost zarr.json can be restored
            meta = json.loads((self.path / name / "zarr.json").read_text())
            self._record["arrays"][name] = {k: v for k, v in meta.items() if k not in ("shape", "attributes")}

    def _create_arrays(self, episode: Episode) -> None:
        # Overwrite: nothing is committed yet, but a writer killed during its first append may have left arrays.
        rows = self.chunks
        for key, arr in episode.step_arrays().items():
            shape = tuple(arr.shape[1:])
            image = is_image(shape, arr.dtype)
            self._new_array(f"steps/{key}", shape, arr.dtype, rows.image if image else rows.lowdim, overwrite=True,
                            compress=rows.compress_images or not image)
        for key, arr in episode.final_obs.items():
            image = is_image(arr.shape, arr.dtype)
            self._new_array(f"final_obs/{key}", arr.shape, arr.dtype, rows.image if image else rows.episode,
                            overwrite=True, compress=rows.compress_images or not image)
        for key, dtype in EPISODE_FIELDS.items():
            self._new_array(f"episodes/{key}", (), dtype, rows.episode, overwrite=True)
        if self.version >= 2:
            self._new_array(MANIFEST, (), str, 1, overwrite=True)

    def append(self, episode: Episode) -> int:
        """Write one whole episode and commit it; returns its index. Nothing is visible to readers
        until the commit record is rewritten at the very end."""
        self._check_writable()
        episode.validate()
        if self.schema is None:
            self._create_arrays(episode)
            self.schema = self._schema_of(episode)
        else:
            self._check_schema(episode)
        start, length, index = self.num_steps, len(episode), self.num_episodes
        steps, digests = self.schema["steps"], {}
        for key, data in episode.step_arrays().items():
            self._write_rows(f"steps/{key}", start, data)
            digests[f"steps/{key}"] = f"{row_digest(np.asarray(data, steps[key]['dtype'])):08x}"
        for key, data in episode.final_obs.items():
            self._write_rows(f"final_obs/{key}", index, data[None])
            digests[f"final_obs/{key}"] = f"{row_digest(np.asarray(data, steps[f'obs/{key}']['dtype'])):08x}"
        meta = episode.meta
        values = {
            "end": start + length, "success": meta.success, "seed": meta.seed,
            "source": meta.source, "task": meta.task, "instruction": meta.instruction,
        }
        for key, value in values.items():
            dtype = object if EPISODE_FIELDS[key] is str else EPISODE_FIELDS[key]
            self._write_rows(f"episodes/{key}", index, np.array([value], dtype=dtype))
        if self.version >= 2:
            entry = json.dumps(episode_record(start, start + length, meta, digests), sort_keys=True)
            self._write_rows(MANIFEST, index, np.array([entry], dtype=object))
        self._write_record(num_episodes=index + 1, num_steps=start + length, schema=self.schema)
        self.num_episodes, self.num_steps = index + 1, start + length
        return index

    def _write_rows(self, name: str, start: int, data: np.ndarray) -> None:
        arr = self._array(name)
        end = start + data.shape[0]
        if arr.shape[0] != end:  # also drops rows a killed writer left past the committed end
            arr.resize((end, *arr.shape[1:]))
            self._readers.pop(name, None)  # it holds the old shape
        if self._guard is not None:
            self._guard.strict = True  # a damaged committed chunk must not be merged with new rows
        try:
            arr[start:end] = data
        finally:
            if self._guard is not None:
                self._guard.strict = False

    # ------------------------------------------------------------------------- after-the-fact arrays
    def extra_array(self, name: str, dtype: Any = np.float32, create: bool = False) -> zarr.Array:
        """A per-step array added after the episodes were written (``extras/<name>``, e.g. critic rewards).

        Extras never touch the episodes' own arrays. Rows become committed with :meth:`commit_extras`."""
        key = f"extras/{name}"
        if key in self._arrays:
            return self._arrays[key]
        try:
            self._group[key]
        except KeyError:
            if not create:
                raise ConfigError(f"{self.path} has no extra array {name!r}") from None
            self._check_writable()
            # as many rows per chunk as the store's own per-step flags, so that its chunks line up with theirs
            chunk = self._array("steps/reward").chunks[0] if "reward" in self.step_keys else self.chunks.lowdim
            self._new_array(key, (), dtype, int(chunk))
            extras = {**self._record.get("extras", {}), name: {"rows": 0, "info": {}}}
            self._write_record(extras=extras)
        return self._array(key)

    def write_extra_rows(self, name: str, start: int, data: np.ndarray) -> None:
        """Write rows of an extra past its committed ones; they count once :meth:`commit_extras` says so."""
        self._check_writable()
        if start + len(data) > self.num_steps:
            raise ConfigError(f"rows {start}..{start + len(data)} of {name!r} pass the store's {self.num_steps} steps")
        self.extra_array(name)
        self._write_rows(f"extras/{name}", start, np.asarray(data))

    def commit_extras(self, rows: dict[str, int], info: dict[str, dict[str, Any]] | None = None) -> None:
        """Commit the first ``rows[name]`` rows of each named extra (one atomic record write), and
        optionally replace its ``info`` (e.g. which critic wrote it)."""
        self._check_writable()
        extras = {k: dict(v) for k, v in self._record.get("extras", {}).items()}
        for name, n in rows.items():
            held = self.extra_array(name).shape[0]
            if not 0 <= n <= min(held, self.num_steps):
                raise ConfigError(f"cannot commit {n} rows of extra {name!r}: "
                                  f"it holds {held}, the store {self.num_steps}")
            extras.setdefault(name, {"rows": 0, "info": {}})["rows"] = int(n)
        for name, value in (info or {}).items():
            extras.setdefault(name, {"rows": 0, "info": {}})["info"] = value
        self._write_record(extras=extras)

    def extra_names(self) -> list[str]:
        """Every extra of the store: those its record lists, and any from before the record listed them."""
        folder = self.path / "extras"
        on_disk = {p.name for p in folder.iterdir() if (p / "zarr.json").is_file()} if folder.is_dir() else set()
        return sorted(set(self._record.get("extras", {})) | on_disk)

    def extra_rows(self, name: str) -> int | None:
        """Committed rows of an extra; None for an extra the record does not know (an older store)."""
        entry = self._record.get("extras", {}).get(name)
        return None if entry is None else int(entry["rows"])

    def extra_info(self, name: str) -> dict[str, Any]:
        return dict(self._record.get("extras", {}).get(name, {}).get("info", {}))

    def get_extra(self, name: str, indices: np.ndarray) -> np.ndarray:
        """Rows of an extra at global step ``indices``; only committed rows can be read."""
        indices = np.asarray(indices, dtype=np.int64)
        committed = self.extra_rows(name)
        limit = self.extra_array(name).shape[0] if committed is None else committed
        if indices.size and (indices.min() < 0 or indices.max() >= limit):
            raise ConfigError(f"rows of extra {name!r} must be in [0, {limit}), got {indices.min()}..{indices.max()}")
        unique, inverse = np.unique(indices, return_inverse=True)
        return self._read(f"extras/{name}", unique)[inverse.reshape(indices.shape)]

    # ------------------------------------------------------------------------------- reading
    @property
    def episode_ends(self) -> np.ndarray:
        return np.asarray(self._read("episodes/end", slice(0, self.num_episodes)), dtype=np.int64)

    @property
    def episode_starts(self) -> np.ndarray:
        ends = self.episode_ends
        return np.concatenate([[0], ends[:-1]]) if len(ends) else ends

    def episode_meta(self, index: int) -> EpisodeMeta:
        self._check_episode_index(index)
        get = {k: self._read(f"episodes/{k}", index) for k in ("task", "instruction", "success", "source", "seed")}
        return EpisodeMeta(
            task=str(get["task"]), instruction=str(get["instruction"]), success=bool(get["success"]),
            source=str(get["source"]), seed=int(get["seed"]),
        )

    def episode_field(self, name: str) -> np.ndarray:
        """A per-episode metadata column (``success``, ``task``, ...) over committed episodes."""
        if name not in EPISODE_FIELDS:
            raise ConfigError(f"unknown episode field {name!r}; known: {list(EPISODE_FIELDS)}")
        return np.asarray(self._read(f"episodes/{name}", slice(0, self.num_episodes)))

    def _check_episode_index(self, index: int) -> None:
        if not 0 <= index < self.num_episodes:
            raise ConfigError(f"episode {index} does not exist; the store has {self.num_episodes} episodes (0-based)")

    def read_episode(self, index: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """Per-step arrays of one episode (all fields, or ``keys``), read without touching others."""
        self._check_episode_index(index)
        start, end = int(self.episode_starts[index]), int(self.episode_ends[index])
        return {k: self._read(f"steps/{k}", slice(start, end)) for k in self._keys(keys)}

    def episode(self, index: int) -> Episode:
        """Episode ``index`` whole: its steps, final observation and metadata (extras are left out)."""
        rows = self.read_episode(index)
        obs = {k[4:]: v for k, v in rows.items() if k.startswith("obs/")}
        return Episode(obs=obs, final_obs=self.final_obs(index), meta=self.episode_meta(index),
                       **{k: rows[k] for k in STEP_FIELDS})

    def read_field(self, key: str) -> np.ndarray:
        """One step field over every committed step (for loading a small store into memory)."""
        return self._read(f"steps/{self._keys([key])[0]}", slice(0, self.num_steps))

    def manifest(self, index: int) -> dict[str, Any]:
        """Episode ``index``'s manifest entry: boundaries, metadata and row digests (version 2)."""
        self._check_episode_index(index)
        if self.version < 2:
            raise StoreError(f"{self.path} is a version-{self.version} store: it has no episode manifest")
        return json.loads(str(self._read(MANIFEST, index)))

    def final_obs(self, index: int) -> dict[str, np.ndarray]:
        self._check_episode_index(index)
        return {k[4:]: self._read(f"final_obs/{k[4:]}", index) for k in self.step_keys if k.startswith("obs/")}

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
            out[key] = self._read(f"steps/{key}", unique)[inverse.reshape(indices.shape)]
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
            "version": self.version,
            "episodes": self.num_episodes,
            "steps": self.num_steps,
            "success_rate": float(success.mean()) if len(success) else 0.0,
            "tasks": tasks,
            "sources": sources,
            "fields": {k: v for k, v in (self.schema or {}).get("steps", {}).items()},
            "extras": {k: v["rows"] for k, v in self._record.get("extras", {}).items()},
            "size_bytes": self.size_bytes(),
        }

    def verify(self, progress: bool = False):
        """Check every chunk of every array (and, in version 2, every episode against its manifest);
        raise StoreCorruptError naming the damage, else return the IntegrityReport."""
        from robot_rl.replay.integrity import check_store

        report = check_store(self.path, deep=True, progress=progress)
        if report.damage:
            raise corrupt(self.path, "; ".join(d.describe() for d in report.damage[:5])
                          + (f" (+{len(report.damage) - 5} more)" if len(report.damage) > 5 else ""))
        return report
