"""Checking an episode store on disk, without trusting it: which arrays, chunks and episodes are damaged,
and which episodes can be recovered byte for byte (what ``repair`` keeps).

Works from the commit record alone, so it also runs on a store that ``EpisodeStore.open`` refuses (lost
episode ends, say). The cheap check reads every array's metadata; the deep one reads every committed
chunk (existence, crc32c, decode) and, in version-2 stores, checks every episode's rows against the
digests in its manifest entry and its row of the episode table against the manifest's copy.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from tqdm import tqdm
from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import LocalStore, WrapperStore

from robot_rl.core.errors import ConfigError
from robot_rl.core.schema import EpisodeMeta
from robot_rl.replay.layout import (
    EPISODE_FIELDS,
    MANIFEST,
    chunk_count,
    chunk_key,
    committed_rows,
    crc_ok,
    read_record,
    row_digest,
)

# decoded at once while verifying: large enough to amortise zarr's per-call cost, small enough for any RAM
SPAN_BYTES = 64 * 2**20

_META_FIELDS = ("success", "seed", "source", "task", "instruction")


@dataclass
class Damage:
    """One thing wrong with one array: a file, a chunk, or an episode's rows."""

    array: str
    problem: str
    file: str | None = None
    rows: tuple[int, int] | None = None  # first and last affected row of the array
    episodes: list[int] = field(default_factory=list)

    def describe(self) -> str:
        where = ""
        if self.rows:
            where = f" row {self.rows[0]}" if self.rows[0] == self.rows[1] else f" rows {self.rows[0]}-{self.rows[1]}"
        eps = ""
        if self.episodes:
            eps = f" (episode{'s' if len(self.episodes) > 1 else ''} {index_ranges(self.episodes)})"
        return f"{self.array}{where}{eps}: {self.problem}"

    def to_dict(self) -> dict[str, Any]:
        return {"array": self.array, "problem": self.problem, "file": self.file,
                "rows": list(self.rows) if self.rows else None, "episodes": self.episodes}


@dataclass
class EpisodeCheck:
    """What the check learned of one committed episode."""

    index: int
    start: int | None = None
    end: int | None = None
    meta: EpisodeMeta | None = None
    digests: dict[str, str] | None = None
    lost: list[str] = field(default_factory=list)  # why its data cannot be recovered exactly
    restorable: list[str] = field(default_factory=list)  # damage that repair undoes from a second copy
    extras: list[str] = field(default_factory=list)  # damaged derived rows (repair cuts the extra there)

    @property
    def keep(self) -> bool:
        return not self.lost and self.start is not None and self.end is not None and self.meta is not None

    @property
    def damaged(self) -> bool:
        return bool(self.lost or self.restorable or self.extras)


@dataclass
class IntegrityReport:
    path: Path
    version: int
    num_episodes: int
    num_steps: int
    deep: bool
    checked: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)
    episodes: list[EpisodeCheck] = field(default_factory=list)  # deep checks only
    extras_cut: dict[str, int] = field(default_factory=dict)  # extra -> first damaged row
    metadata_restorable: list[str] = field(default_factory=list)
    leftovers: int = 0  # temporary files of a writer that was killed (harmless)
    # for repair: the record, metadata restored from it, arrays that can be read, extras of a version-1 store
    record: dict[str, Any] = field(default_factory=dict, repr=False)
    restored: dict[str, bytes] = field(default_factory=dict, repr=False)
    readable: set[str] = field(default_factory=set, repr=False)
    legacy_extras: list[str] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return not self.damage

    def damaged_episodes(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for d in self.damage:
            for e in d.episodes:
                out.setdefault(e, []).append(d.describe())
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "version": self.version, "ok": self.ok, "deep": self.deep,
            "checked": self.checked, "unchecked": self.unchecked,
            "damage": [d.to_dict() for d in self.damage],
            "damaged_episodes": sorted(self.damaged_episodes()),
            "lost_episodes": [e.index for e in self.episodes if not e.keep],
            "leftover_temp_files": self.leftovers,
        }


def index_ranges(indices: Iterable[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    out, run = [], []
    for i in sorted(set(indices)):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)


class MetadataOverlay(WrapperStore):
    """Serves array metadata restored from the commit record in place of a lost or damaged zarr.json."""

    def __init__(self, store: Any, restored: dict[str, bytes]) -> None:
        super().__init__(store)
        self.restored = restored

    def _with_store(self, store: Any) -> MetadataOverlay:
        return type(self)(store, self.restored)

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        if key in self.restored:
            return prototype.buffer.from_bytes(self.restored[key])
        return await self._store.get(key, prototype, byte_range)


def open_for_check(path: Path, restored: dict[str, bytes]) -> zarr.Group:
    return zarr.open_group(store=MetadataOverlay(LocalStore(path, read_only=True), restored), mode="r")


# ----------------------------------------------------------------------------------------- metadata
def _metadata_problem(path: Path, record: dict[str, Any], name: str, rows: int) -> str | None:
    meta_file = path / name / "zarr.json"
    if not meta_file.is_file():
        return f"metadata file {name}/zarr.json is missing"
    try:
        meta = json.loads(meta_file.read_text())
        shape = [int(x) for x in meta["shape"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"metadata file {name}/zarr.json is unreadable ({type(exc).__name__})"
    if meta.get("node_type") != "array":
        return f"{name}/zarr.json does not describe an array"
    copy = record.get("arrays", {}).get(name)
    if copy is not None:
        keys = (set(copy) | set(meta)) - {"shape", "attributes"}
        differ = sorted(k for k in keys if copy.get(k) != meta.get(k))
        if differ:
            return f"metadata {name}/zarr.json disagrees with the commit record in {differ}"
    else:
        from robot_rl.replay.layout import expected_dtype

        want = expected_dtype(record, name)
        if want is not None:
            try:
                dtype = np.dtype(meta["data_type"]).str
            except (TypeError, KeyError):
                return f"metadata {name}/zarr.json has an unknown data_type"
            if (dtype, shape[1:]) != (np.dtype(want[0]).str, want[1]):
                return f"{name} holds dtype {dtype} rows {shape[1:]}, the record's schema says {want[0]} {want[1]}"
    if shape[0] < rows:
        return f"{name} holds {shape[0]} rows, the record commits {rows}"
    return None


def _restored_metadata(record: dict[str, Any], name: str, rows: int) -> bytes:
    return json.dumps({**record["arrays"][name], "shape": [rows, *_row_shape(record, name)], "attributes": {}}).encode()


def _row_shape(record: dict[str, Any], name: str) -> list[int]:
    grid = record["arrays"][name]["chunk_grid"]["configuration"]["chunk_shape"]
    return list(grid[1:])  # every dimension but rows is one chunk


# ------------------------------------------------------------------------------------------ the check
class _Checker:
    def __init__(self, path: Path, deep: bool, progress: bool) -> None:
        self.path = path
        self.record = read_record(path)
        self.version = int(self.record["version"])
        self.deep, self.progress = deep, progress
        self.rows = committed_rows(self.record)
        self.n_eps, self.n_steps = int(self.record["num_episodes"]), int(self.record["num_steps"])
        self.report = IntegrityReport(path, self.version, self.n_eps, self.n_steps, deep, record=self.record)
        self.restored = self.report.restored
        self.usable = self.report.readable
        self.eps = [EpisodeCheck(i) for i in range(self.n_eps)]
        self.starts = np.full(self.n_eps, -1, np.int64)
        self.ends = np.full(self.n_eps, -1, np.int64)

    def damage(self, array: str, problem: str, file: str | None = None, rows: tuple[int, int] | None = None,
               episodes: Iterable[int] = ()) -> Damage:
        d = Damage(array, problem, file, rows, sorted(set(int(e) for e in episodes)))
        self.report.damage.append(d)
        return d

    def episodes_of(self, name: str, first: int, last: int) -> np.ndarray:
        if name.startswith(("steps/", "extras/")):
            return np.nonzero((self.starts >= 0) & (self.starts <= last) & (self.ends > first))[0]
        return np.arange(first, min(last + 1, self.n_eps))

    def run(self) -> IntegrityReport:
        self._legacy_extras()
        self._check_metadata()
        self.report.leftovers = sum(1 for _ in self.path.rglob("*.partial"))
        self._describe_guarantees()
        if not self.deep or not self.rows:
            return self.report
        self.group = open_for_check(self.path, self.restored)
        names = [n for n in self.rows if n in self.usable]
        total = sum(chunk_count(self.rows[n], int(self.group[n].chunks[0])) for n in names)
        self.bar = tqdm(total=total, desc="verify", unit="chunk", disable=not self.progress)
        try:
            self._boundaries()
            self._unreadable_arrays()
            for name in names:
                if name.startswith(("steps/", "final_obs/")):
                    self._check_data(name)
                elif name.startswith("extras/"):
                    self._check_extra(name)
        finally:
            self.bar.close()
        self._settle_episodes()
        return self.report

    def _legacy_extras(self) -> None:
        """Version-1 records do not list extras: check what lies on disk up to the committed steps."""
        if self.version >= 2 or not self.record.get("schema"):
            return
        known = set(self.record.get("extras", {}))
        for meta in sorted((self.path / "extras").glob("*/zarr.json")):
            name = f"extras/{meta.parent.name}"
            if meta.parent.name in known:
                continue
            self.report.legacy_extras.append(meta.parent.name)
            try:
                held = int(json.loads(meta.read_text())["shape"][0])
            except (OSError, ValueError, KeyError, TypeError, IndexError):
                held = 0
            self.rows[name] = min(held, self.n_steps)

    def _check_metadata(self) -> None:
        for name, rows in self.rows.items():
            problem = _metadata_problem(self.path, self.record, name, rows)
            if problem is None:
                self.usable.add(name)
                continue
            episodes = range(self.n_eps) if rows else []
            if name in self.record.get("arrays", {}):
                self.restored[f"{name}/zarr.json"] = _restored_metadata(self.record, name, rows)
                self.usable.add(name)
                self.report.metadata_restorable.append(name)
                problem += " (repair restores it from the commit record)"
                for ep in self.eps:
                    ep.restorable.append(f"{name} metadata restored from the commit record")
            self.damage(name, problem, f"{name}/zarr.json", (0, max(rows - 1, 0)) if rows else None, episodes)

    def _describe_guarantees(self) -> None:
        r = self.report
        if self.version >= 2:
            r.checked.append("every array's metadata exists and agrees with the commit record")
            deep = ["every committed chunk file exists", "every chunk's crc32c checksum", "every chunk decodes",
                    "every episode's rows against the digests in its manifest entry",
                    "the episode table against the manifest"]
        else:
            r.checked.append("every array's metadata exists and matches the record's schema")
            deep = ["every chunk that is present decodes"]
            r.unchecked += [
                "missing chunks: version-1 stores skip chunks that hold only the fill value, so a lost chunk "
                "reads as zeros and cannot be told from one",
                "chunk checksums: version-1 stores have none",
                "episode digests: version-1 stores have no manifest",
                "how many rows of an extra are committed: version-1 records do not say",
                "`robot-rl repair STORE --out NEW` writes a version-2 copy with every guarantee",
            ]
        if self.deep:
            r.checked += deep
        else:
            r.unchecked.insert(0, "chunks and episode contents (run `robot-rl info --verify`)")

    # ------------------------------------------------------------------------------ chunk scanning
    def _chunks(self, name: str):
        """Yield (first row, last row, decoded rows or None) for every committed chunk of ``name``,
        recording the damage of each chunk that is missing, fails its checksum or cannot be decoded.
        Runs of chunks whose files pass their checksum are decoded in one read of up to ``SPAN_BYTES``
        (one trip through zarr's event loop instead of one per chunk); a run that fails to decode is
        read again chunk by chunk, so the damage is still pinned to its chunk."""
        arr = self.group[name]
        rows, step = self.rows[name], int(arr.chunks[0])
        row_bytes = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize)
        per_span = max(1, SPAN_BYTES // (row_bytes * step))
        spans: list[list[tuple[int, int, str, str | None]]] = []
        for index in range(chunk_count(rows, step)):
            first, last = index * step, min((index + 1) * step, rows) - 1
            key = chunk_key(name, index, arr.ndim)
            chunk = (first, last, key, self._chunk_problem(key))
            if chunk[3] is None and spans and spans[-1][-1][3] is None and len(spans[-1]) < per_span:
                spans[-1].append(chunk)
            else:
                spans.append([chunk])
        for span in spans:
            whole = None
            if span[0][3] is None and len(span) > 1:
                try:
                    whole = np.asarray(arr[span[0][0] : span[-1][1] + 1])
                except Exception:  # noqa: BLE001 - one of them does not decode: find which, one by one
                    whole = None
            for first, last, key, problem in span:
                data = None
                if problem is None:
                    if whole is not None:
                        data = whole[first - span[0][0] : last + 1 - span[0][0]]
                    else:
                        try:
                            data = np.asarray(arr[first : last + 1])
                        except Exception as exc:
                            problem = f"chunk file {key} cannot be decoded ({type(exc).__name__})"
                if problem is not None:
                    self.damage(name, problem, key, (first, last), self.episodes_of(name, first, last))
                self.bar.update(1)
                yield first, last, data

    def _chunk_problem(self, key: str) -> str | None:
        file = self.path / key
        if not file.is_file():
            if self.version < 2:
                return None  # may be an all-fill chunk zarr never wrote: unknowable in version 1
            return f"chunk file {key} is missing"
        if self.version >= 2 and not crc_ok(file.read_bytes()):
            return f"chunk file {key} fails its crc32c checksum (damaged or truncated)"
        return None

    def _boundaries(self) -> None:
        """Each episode's boundaries and metadata, from its manifest entry (version 2) and its row of the
        episode table; where both exist they must agree."""
        table: dict[str, list[Any]] = {}
        for key in EPISODE_FIELDS:
            name = f"episodes/{key}"
            values: list[Any] = [None] * self.n_eps
            if name in self.usable:
                for first, _, data in self._chunks(name):
                    if data is not None:
                        values[first : first + len(data)] = list(data)
            table[key] = values
        manifest: list[dict[str, Any] | None] = [None] * self.n_eps
        if MANIFEST in self.usable:
            for first, _, data in self._chunks(MANIFEST):
                if data is not None:
                    for i, text in enumerate(data, start=first):
                        manifest[i] = self._parse_manifest(i, text)
        previous_end = 0
        for i, ep in enumerate(self.eps):
            row = {k: table[k][i] for k in EPISODE_FIELDS}
            entry = manifest[i]
            if self.version >= 2 and entry is None:
                ep.restorable.append("its manifest entry is lost (its rows are checked by chunk checksums only)")
            table_ok = all(v is not None for v in row.values())
            if entry is not None:
                ep.start, ep.end, ep.digests = int(entry["start"]), int(entry["end"]), entry["digests"]
                ep.meta = _meta_of(entry)
                differ = [k for k in EPISODE_FIELDS if row[k] is not None and _norm(row[k]) != _norm(entry[k])]
                if differ:
                    self.damage("episodes/" + differ[0], f"row {i} disagrees with its manifest entry in {differ}",
                                rows=(i, i), episodes=[i])
                if differ or not table_ok:
                    ep.restorable.append("its row of the episode table is damaged (restored from its manifest entry)")
            else:
                if table_ok:
                    ep.meta = _meta_of(row)
                if row["end"] is not None and previous_end is not None:
                    ep.start, ep.end = previous_end, int(row["end"])
                if not table_ok:
                    ep.lost.append("its row of the episode table is damaged and no manifest entry holds a copy")
            previous_end = ep.end
            if ep.start is not None and ep.end is not None:
                follows = not i or self.ends[i - 1] < 0 or ep.start == self.ends[i - 1]
                if not 0 <= ep.start < ep.end <= self.n_steps or not follows:
                    ep.lost.append(f"its boundaries {ep.start}-{ep.end} do not fit its neighbours")
                    self.damage("episodes/end", f"episode {i} boundaries {ep.start}-{ep.end} are inconsistent",
                                rows=(i, i), episodes=[i])
                    ep.start = ep.end = None
                else:
                    self.starts[i], self.ends[i] = ep.start, ep.end
            elif not ep.lost:
                ep.lost.append("its boundaries are unknown")
        if self.n_eps and self.ends[-1] >= 0 and self.ends[-1] != self.n_steps:
            self.damage("episodes/end",
                        f"the last episode ends at {self.ends[-1]}, the record commits {self.n_steps} steps",
                        rows=(self.n_eps - 1, self.n_eps - 1), episodes=[self.n_eps - 1])
            self.eps[-1].lost.append("its end disagrees with the commit record")

    def _parse_manifest(self, i: int, text: Any) -> dict[str, Any] | None:
        try:
            entry = json.loads(str(text))
            if all(k in entry for k in ("start", "end", "digests", *_META_FIELDS)):
                entry["end"] = int(entry["end"])
                return entry
        except (ValueError, TypeError):
            pass
        self.damage(MANIFEST, f"entry {i} is unreadable", rows=(i, i), episodes=[i])
        return None

    def _unreadable_arrays(self) -> None:
        """Arrays whose metadata is lost with no copy to restore it from (version 1): all their rows are."""
        for name in self.rows:
            if name in self.usable:
                continue
            if name.startswith(("steps/", "final_obs/")):
                for ep in self.eps:
                    ep.lost.append(f"{name} metadata is lost")
            elif name.startswith("extras/"):
                self.report.extras_cut[name] = 0
                for ep in self.eps:
                    ep.extras.append(f"{name} metadata is lost")

    def _check_data(self, name: str) -> None:
        """Chunks of a steps/ or final_obs/ array, then each episode's rows against its digest."""
        per_step = name.startswith("steps/")
        crc = np.zeros(self.n_eps, np.int64)
        bad: set[int] = set()
        for first, last, data in self._chunks(name):
            eps = self.episodes_of(name, first, last)
            if data is None:
                bad.update(int(e) for e in eps)
                continue
            for e in eps:
                lo, hi = (max(self.starts[e], first), min(self.ends[e], last + 1)) if per_step else (e, e + 1)
                crc[e] = row_digest(data[lo - first : hi - first], int(crc[e]))
        for e in bad:
            self.eps[e].lost.append(f"{name} rows are damaged")
        for ep in self.eps:
            if ep.index in bad or ep.digests is None or self.starts[ep.index] < 0:
                continue
            want = ep.digests.get(name)
            if want is not None and int(want, 16) != int(crc[ep.index]):
                rows = (ep.start, ep.end - 1) if per_step else (ep.index, ep.index)
                self.damage(name, f"rows of episode {ep.index} do not match the digest in its manifest entry "
                                  "(a chunk was replaced or altered)", rows=rows, episodes=[ep.index])
                ep.lost.append(f"{name} rows do not match their digest")

    def _check_extra(self, name: str) -> None:
        for first, last, data in self._chunks(name):
            if data is None:
                self.report.extras_cut.setdefault(name, first)
                for e in self.episodes_of(name, first, last):
                    self.eps[e].extras.append(f"{name} rows are damaged")

    def _settle_episodes(self) -> None:
        """Name every damaged episode in the report, including those only the episode walk found."""
        self.report.episodes = self.eps
        named = set(self.report.damaged_episodes())
        for ep in self.eps:
            if ep.damaged and ep.index not in named:
                reason = (ep.lost or ep.restorable or ep.extras)[0]
                array = MANIFEST if "manifest" in reason else "episodes"
                self.damage(array, f"episode {ep.index}: {reason}", episodes=[ep.index])


def _norm(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _meta_of(values: dict[str, Any]) -> EpisodeMeta | None:
    try:
        return EpisodeMeta(task=str(values["task"]), instruction=str(values["instruction"]),
                           success=bool(_norm(values["success"])), source=str(values["source"]),
                           seed=int(_norm(values["seed"])))
    except (ConfigError, KeyError, TypeError, ValueError):
        return None


def check_store(path: str | Path, deep: bool = False, progress: bool = False) -> IntegrityReport:
    """Check a store: its arrays' metadata (cheap), and with ``deep`` every committed chunk and episode.

    Raises StoreError only when ``path`` is no readable episode store at all (its root record is lost)."""
    return _Checker(Path(path), deep, progress).run()
