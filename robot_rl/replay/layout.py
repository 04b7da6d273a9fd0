"""The on-disk layout of an episode store: its commit record, which arrays and chunk files the record
commits, per-episode digests, and the guard that turns a missing or damaged committed chunk into an
error instead of zarr's fill values.

zarr reads a missing chunk as its fill value and, by default, does not write a chunk that holds only
the fill value, so "file lost" and "all zeros" look alike. Version-2 stores close that gap: every chunk
is written (zeros too) and ends with a crc32c of its bytes (zarr's own ``crc32c`` codec), so the commit
record alone says which chunk files must exist, and each file says whether its bytes are intact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore

from robot_rl.core.errors import StoreCorruptError, StoreError

FORMAT = "robot_rl.episode_store"
VERSION = 2  # 1: before chunk checksums, written empty chunks and the episode manifest
READABLE_VERSIONS = (1, 2)
ATTR = "robot_rl"

EPISODE_FIELDS: dict[str, Any] = {
    "end": np.dtype(np.int64),
    "success": np.dtype(bool),
    "seed": np.dtype(np.int64),
    "source": str,
    "task": str,
    "instruction": str,
}
# One JSON record per episode, one chunk file each (written once, never rewritten): the episode's
# boundaries and metadata (a second copy of its row of the episode table) and the crc32c digest of each
# of its rows in every steps/ and final_obs/ array.
MANIFEST = "episodes/manifest"

IMAGE_CHUNK_STEPS = 32  # see FACTS: per-step image chunks are slow to read, episode-sized ones to sample
LOWDIM_CHUNK_STEPS = 4096
EPISODE_CHUNK = 1024

REPAIR_HINT = ("`robot-rl info --verify {path}` lists the damage; "
               "`robot-rl repair {path} --out NEW` keeps every intact episode")


def corrupt(path: Path | str, what: str) -> StoreCorruptError:
    return StoreCorruptError(f"episode store {path} is corrupt: {what}; " + REPAIR_HINT.format(path=path))


# ------------------------------------------------------------------------------------ the commit record
def read_record(path: Path) -> dict[str, Any]:
    """The commit record in the root ``zarr.json``; StoreError when ``path`` is no episode store."""
    if not path.exists():
        raise StoreError(f"no episode store at {path}")
    meta = path / "zarr.json"
    if not meta.is_file():
        raise StoreError(f"{path} is not a robot_rl episode store (no zarr.json)")
    try:
        root = json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise StoreCorruptError(f"episode store {path} is corrupt: unreadable zarr.json ({exc})") from None
    record = root.get("attributes", {}).get(ATTR) if isinstance(root, dict) else None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise StoreError(f"{path} is not a robot_rl episode store (zarr.json has no {FORMAT} record)")
    if record.get("version") not in READABLE_VERSIONS:
        raise StoreError(f"{path} has store version {record.get('version')}; this robot_rl reads {READABLE_VERSIONS}")
    return record


def committed_rows(record: dict[str, Any]) -> dict[str, int]:
    """Every array the record commits, with how many of its rows are committed.

    Extras of a version-1 store are not in its record: they are left out here."""
    schema = record.get("schema")
    if not schema:
        return {}
    n_steps, n_eps = int(record["num_steps"]), int(record["num_episodes"])
    rows = {f"steps/{k}": n_steps for k in schema["steps"]}
    rows.update({f"final_obs/{k[4:]}": n_eps for k in schema["steps"] if k.startswith("obs/")})
    rows.update({f"episodes/{k}": n_eps for k in EPISODE_FIELDS})
    if record["version"] >= 2:
        rows[MANIFEST] = n_eps
    rows.update({f"extras/{k}": int(v["rows"]) for k, v in record.get("extras", {}).items()})
    return rows


def expected_dtype(record: dict[str, Any], name: str) -> tuple[str, list[int]] | None:
    """(dtype str, per-row shape) the record implies for array ``name``; None where it does not say."""
    steps = record["schema"]["steps"]
    family, _, key = name.partition("/")
    if family == "steps":
        return steps[key]["dtype"], list(steps[key]["shape"])
    if family == "final_obs":
        return steps[f"obs/{key}"]["dtype"], list(steps[f"obs/{key}"]["shape"])
    if family == "episodes" and EPISODE_FIELDS.get(key, str) is not str:
        return EPISODE_FIELDS[key].str, []
    return None


def is_image(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    return dtype == np.uint8 and len(shape) == 3


# ------------------------------------------------------------------------------------------- chunks
def chunk_key(name: str, index: int, ndim: int) -> str:
    """The file (relative to the store) of chunk ``index`` along rows; other dimensions are one chunk."""
    return "/".join([name, "c", str(index), *["0"] * (ndim - 1)])


def chunk_count(rows: int, chunk_rows: int) -> int:
    return -(-rows // chunk_rows)


def crc_ok(data: bytes | np.ndarray) -> bool:
    """Whether a chunk file's last 4 bytes are the crc32c of the rest (zarr's crc32c codec)."""
    view = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data.reshape(-1).view(np.uint8)
    if len(view) < 4:
        return False
    return google_crc32c.value(view[:-4]) == int.from_bytes(view[-4:].tobytes(), "little")


def row_digest(rows: np.ndarray, crc: int = 0) -> int:
    """crc32c of rows' bytes as stored (C order, the store's dtype), continuing from ``crc``."""
    return google_crc32c.extend(crc, np.ascontiguousarray(rows).reshape(-1).view(np.uint8))


class ChunkGuard(WrapperStore):
    """A zarr store wrapper that knows which chunks the commit record says must exist.

    ``extents`` maps array path -> (committed rows, rows per chunk); it is shared with the
    EpisodeStore, which updates it at every commit. Chunks past the committed rows (an episode being
    written, or left by a killed writer) read as zarr reads them. A committed chunk that is missing or
    fails its crc32c is recorded in ``failures`` (chunk key -> what is wrong) and read as absent; the
    EpisodeStore raises for it once the read returns, so no exception crosses zarr's concurrent reads.
    With ``strict`` (while writing) it raises at once, so that a damaged chunk is never read, merged
    with new rows and written back as if it were whole.

    A reading guard (``strip``) also does the crc32c codec's work for the arrays in ``stripped``: it
    checks each chunk's trailing crc32c and hands zarr the bytes before it, for array handles opened
    without the codec (see ``EpisodeStore._reader``). The files stay what zarr's own crc32c codec
    writes and reads; the check just runs here, once, instead of as one more stage of zarr's codec
    pipeline, which measured about 10% of random-read throughput."""

    def __init__(self, store: Any, root: Path, extents: dict[str, tuple[int, int]], strip: bool = False) -> None:
        super().__init__(store)
        self.root = root
        self.extents = extents
        self.failures: dict[str, str] = {}
        self.strict = False
        self.strip = strip
        self.stripped: set[str] = set()

    def _with_store(self, store: Any) -> ChunkGuard:
        guard = type(self)(store, self.root, self.extents, self.strip)
        guard.failures, guard.stripped = self.failures, self.stripped
        return guard

    def _committed_chunk(self, name: str, coords: str) -> tuple[int, int] | None:
        extent = self.extents.get(name)
        if extent is None:
            return None
        rows, chunk_rows = extent
        first = int(coords.split("/", 1)[0]) * chunk_rows
        if first >= rows:
            return None
        return first, min(first + chunk_rows, rows) - 1

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        value = await self._store.get(key, prototype, byte_range)
        name, sep, coords = key.rpartition("/c/")
        if not sep:
            return value
        strip = self.strip and name in self.stripped
        if strip and byte_range is not None:
            raise StoreError(f"{self.root}: partial read of checksummed chunk {key} is not supported")
        committed = self._committed_chunk(name, coords)
        if committed is None and not strip:
            return value
        data = None if value is None else value.as_numpy_array()
        if data is not None and (byte_range is not None or crc_ok(data)):
            if committed is not None:
                self.failures.pop(key, None)
            return prototype.buffer.from_array_like(data[:-4]) if strip else value
        if committed is None:  # a chunk past the committed rows: not ours to judge
            return None if strip else value
        first, last = committed
        if data is None:
            problem = f"{name} rows {first}-{last}: chunk file {key} is missing"
        else:
            problem = f"{name} rows {first}-{last}: chunk file {key} fails its crc32c checksum (damaged or truncated)"
        if self.strict:
            raise corrupt(self.root, problem)
        self.failures[key] = problem
        return None

    def check(self, name: str, chunk_indices: Iterable[int], ndim: int) -> None:
        """Raise StoreCorruptError if a read of these chunks of ``name`` met a missing or damaged one."""
        if not self.failures:
            return
        for index in chunk_indices:
            problem = self.failures.get(chunk_key(name, int(index), ndim))
            if problem is not None:
                raise corrupt(self.root, problem)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]


# ------------------------------------------------------------------------------ raw random rows
class RawRows:
    """Random rows of an uncompressed checksummed array (codecs: bytes, crc32c) read straight from its
    chunk files: one read per row at its offset, rows sorted so each chunk file is opened once per batch.

    A row's bytes are trusted only after its whole chunk passed its crc32c: a chunk that is full and
    committed is checked at its first read and remembered (such a chunk is never rewritten: the store is
    append-only); the chunk that still has room for rows is read and checked whole every time."""

    def __init__(self, root: Path, name: str, row_shape: tuple[int, ...], dtype: np.dtype, chunk_rows: int) -> None:
        self.root, self.name = root, name
        self.row_shape, self.dtype, self.chunk_rows = row_shape, np.dtype(dtype), chunk_rows
        self.row_nbytes = int(np.prod(row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.ndim = 1 + len(row_shape)
        self.verified: set[int] = set()
        key = chunk_key(name, 0, self.ndim)  # name/c/0/0/...: the chunk index goes between these two
        self._prefix, self._suffix = key[: key.rindex("/c/") + 3], key[key.rindex("/c/") + 4 :]

    @classmethod
    def of(cls, root: Path, name: str, arr: Any) -> RawRows | None:
        """A reader for zarr array ``arr`` if its chunks are raw C-order bytes plus a crc32c, else None."""
        from zarr.codecs import BytesCodec, Crc32cCodec

        meta = arr.metadata
        codecs = getattr(meta, "codecs", ())
        dtype = np.dtype(arr.dtype)
        if (len(codecs) != 2 or not isinstance(codecs[0], BytesCodec) or not isinstance(codecs[1], Crc32cCodec)
                or getattr(arr, "order", "C") != "C" or dtype.byteorder == ">" or dtype.hasobject
                or tuple(arr.chunks[1:]) != tuple(arr.shape[1:])):
            return None
        return cls(root, name, tuple(arr.shape[1:]), dtype, int(arr.chunks[0]))

    def read(self, rows: np.ndarray, committed: int) -> np.ndarray:
        """The rows at sorted, unique indices ``rows`` (all < ``committed``)."""
        out = np.empty((len(rows), *self.row_shape), self.dtype)
        flat = out.reshape(len(rows), -1).view(np.uint8)
        wanted = rows.tolist()
        size, nbytes, j = self.chunk_rows, self.row_nbytes, 0
        while j < len(wanted):  # one chunk file per pass
            chunk = wanted[j] // size
            first = chunk * size
            k = j + 1
            while k < len(wanted) and wanted[k] < first + size:
                k += 1
            key = f"{self._prefix}{chunk}{self._suffix}"
            full = first + size <= committed
            if full and chunk in self.verified:
                self._read_rows(key, first, wanted, j, k, flat, committed)
            else:
                data = self._whole_chunk(key, first, committed)
                for i in range(j, k):
                    at = (wanted[i] - first) * nbytes
                    flat[i] = data[at : at + nbytes]
                if full:
                    self.verified.add(chunk)
            j = k
        return out

    def _problem(self, first: int, committed: int, what: str) -> StoreCorruptError:
        last = min(first + self.chunk_rows, committed) - 1
        return corrupt(self.root, f"{self.name} rows {first}-{last}: {what}")

    def _whole_chunk(self, key: str, first: int, committed: int) -> np.ndarray:
        try:
            data = np.fromfile(os.path.join(self.root, key), np.uint8)
        except FileNotFoundError:
            raise self._problem(first, committed, f"chunk file {key} is missing") from None
        if len(data) != self.chunk_rows * self.row_nbytes + 4 or not crc_ok(data):
            raise self._problem(first, committed, f"chunk file {key} fails its crc32c checksum (damaged or truncated)")
        return data

    def _read_rows(self, key: str, first: int, wanted: list[int], j: int, k: int, flat: np.ndarray,
                   committed: int) -> None:
        try:
            fd = os.open(os.path.join(self.root, key), os.O_RDONLY)
        except FileNotFoundError:
            raise self._problem(first, committed, f"chunk file {key} is missing") from None
        nbytes = self.row_nbytes
        try:
            for i in range(j, k):
                if os.preadv(fd, [flat[i]], (wanted[i] - first) * nbytes) != nbytes:
                    raise self._problem(first, committed, f"chunk file {key} is truncated")
        finally:
            os.close(fd)
