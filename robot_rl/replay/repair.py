"""Repair a damaged episode store: copy every episode that can be recovered byte for byte into a new
store (a version-2 one, so repairing also upgrades an old store), and say which were dropped and why.

Nothing is deleted: ``--out`` writes a new store beside the damaged one; ``in_place`` builds the new store
beside it, verifies it, and only then swaps it in, keeping the damaged original under a new name.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from robot_rl.core.errors import ConfigError, StoreError
from robot_rl.core.schema import STEP_FIELDS, Episode
from robot_rl.replay.integrity import IntegrityReport, check_store, open_for_check
from robot_rl.replay.layout import is_image
from robot_rl.replay.store import ChunkRows, EpisodeStore, is_store, writer_lock


@dataclass
class RepairResult:
    source: Path
    report: IntegrityReport
    out: Path | None = None  # None: a dry run
    kept: list[int] = field(default_factory=list)
    dropped: dict[int, list[str]] = field(default_factory=dict)
    restored: dict[int, list[str]] = field(default_factory=dict)  # kept, with damage undone from a copy
    extras_rows: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (rows kept, rows before)
    backup: Path | None = None  # in place: where the damaged original now lies

    def to_dict(self) -> dict[str, Any]:
        return {"source": str(self.source), "out": str(self.out) if self.out else None, "dry_run": self.out is None,
                "kept": len(self.kept), "dropped": {str(k): v for k, v in self.dropped.items()},
                "restored": {str(k): v for k, v in self.restored.items()},
                "extras_rows": {k: {"kept": a, "before": b} for k, (a, b) in self.extras_rows.items()},
                "backup": str(self.backup) if self.backup else None, "integrity": self.report.to_dict()}


def repair_store(path: str | Path, out: str | Path | None = None, in_place: bool = False,
                 progress: bool = True) -> RepairResult:
    """Check ``path`` and, unless this is a dry run (no ``out``, not ``in_place``), write its intact
    episodes into ``out`` or, in place, into a new store swapped in for the damaged one."""
    path = Path(path)
    if out is not None and in_place:
        raise ConfigError("give either --out or --in-place, not both")
    lock = writer_lock(path) if path.is_dir() else None  # no writer may append while we read
    try:
        report = check_store(path, deep=True, progress=progress)
        result = _plan(path, report)
        if out is None and not in_place:
            return result
        if in_place and report.ok and report.version >= 2:
            return result  # nothing to repair; the plan says so
        target = Path(out) if out is not None else path.with_name(path.name + ".repairing")
        _check_target(target, in_place)
        _copy(path, report, result, target, progress)
        check = check_store(target, deep=True)
        if not check.ok:  # never hand over a store that does not verify
            raise StoreError(f"the repaired store {target} does not verify: {check.damage[0].describe()}; "
                             f"{path} is untouched")
        result.out = target
        if in_place:
            backup = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            os.rename(path, backup)
            os.rename(target, path)
            result.out, result.backup = path, backup
        return result
    finally:
        if lock is not None:
            os.close(lock)


def _plan(path: Path, report: IntegrityReport) -> RepairResult:
    result = RepairResult(path, report)
    for ep in report.episodes:
        if ep.keep:
            result.kept.append(ep.index)
            if ep.restorable:
                result.restored[ep.index] = list(ep.restorable)
        else:
            result.dropped[ep.index] = list(ep.lost) or ["its boundaries or metadata are unknown"]
    return result


def _check_target(target: Path, in_place: bool) -> None:
    if not target.exists():
        return
    if in_place and is_store(target):  # a repair interrupted earlier left its unfinished copy
        shutil.rmtree(target)
        return
    raise StoreError(f"{target} already exists; repair writes a new store and never replaces one")


def _copy(path: Path, report: IntegrityReport, result: RepairResult, target: Path, progress: bool) -> None:
    record = report.record
    group = open_for_check(path, report.restored)
    steps = list(record["schema"]["steps"]) if record.get("schema") else []
    new = EpisodeStore.create(target, chunks=_chunk_rows_of(record, group))
    try:
        if record.get("env") is not None:
            new.set_env_config(record["env"])
        new_starts: dict[int, int] = {}
        for i in tqdm(result.kept, desc="repair", unit="ep", disable=not progress):
            ep = report.episodes[i]
            rows = {k: np.asarray(group[f"steps/{k}"][ep.start : ep.end]) for k in steps}
            final = {k[4:]: np.asarray(group[f"final_obs/{k[4:]}"][i]) for k in steps if k.startswith("obs/")}
            new_starts[i] = new.num_steps
            new.append(_episode(rows, final, ep.meta))
        _copy_extras(group, report, result, new, new_starts)
    finally:
        new.close()


def _chunk_rows_of(record: dict[str, Any], group: Any) -> ChunkRows:
    """The source's rows per chunk, so that a repaired store is laid out as the original was."""
    steps = (record.get("schema") or {}).get("steps", {})
    found: dict[str, int] = {}

    def rows_of(name: str) -> int | None:
        try:
            return int(group[name].chunks[0])
        except Exception:  # its metadata is lost: keep the default
            return None

    compress_images = False
    for key, spec in steps.items():
        kind = "image" if is_image(tuple(spec["shape"]), np.dtype(spec["dtype"])) else "lowdim"
        if kind not in found and (rows := rows_of(f"steps/{key}")) is not None:
            found[kind] = rows
            if kind == "image":  # camera chunks stay compressed (or raw) as they were
                meta = (record.get("arrays") or {}).get(f"steps/{key}", {})
                compress_images = "zstd" in json.dumps(meta.get("codecs", [])) or record["version"] < 2
    if steps and (rows := rows_of("episodes/end")) is not None:
        found["episode"] = rows
    return ChunkRows(**found, compress_images=compress_images)


def _episode(rows: dict[str, np.ndarray], final: dict[str, np.ndarray], meta: Any) -> Episode:
    obs = {k[4:]: v for k, v in rows.items() if k.startswith("obs/")}
    extras = {k: v for k, v in rows.items() if not k.startswith("obs/") and k not in STEP_FIELDS}
    return Episode(obs=obs, final_obs=final, meta=meta, extras=extras, **{k: rows[k] for k in STEP_FIELDS})


def _copy_extras(group: Any, report: IntegrityReport, result: RepairResult, new: EpisodeStore,
                 new_starts: dict[int, int]) -> None:
    """Extras are derived data (recomputable): a damaged row never costs an episode. Each extra is
    copied for the kept episodes in order up to the first one whose rows are damaged or uncommitted;
    the rest is left for the writer (e.g. ``robot-rl critic relabel``) to recompute."""
    for name, entry in _extras_of(group, report).items():
        if f"extras/{name}" not in report.readable:  # its metadata is lost with no copy: nothing to read
            result.extras_rows[name] = (0, entry["rows"])
            continue
        arr = group[f"extras/{name}"]
        committed = min(entry["rows"], report.extras_cut.get(f"extras/{name}", entry["rows"]))
        new.extra_array(name, arr.dtype, create=True)
        copied, had = 0, 0  # rows copied; rows the kept episodes had committed
        for i in result.kept:
            ep = report.episodes[i]
            had += max(0, min(ep.end, entry["rows"]) - ep.start)
            if ep.end > committed or copied < new_starts[i]:
                continue
            new.write_extra_rows(name, new_starts[i], np.asarray(arr[ep.start : ep.end]))
            copied = new_starts[i] + ep.end - ep.start
        new.commit_extras({name: copied}, info={name: entry["info"]})
        result.extras_rows[name] = (copied, had)


def _extras_of(group: Any, report: IntegrityReport) -> dict[str, dict[str, Any]]:
    recorded = report.record.get("extras", {})
    extras = {k: {"rows": int(v["rows"]), "info": v.get("info", {})} for k, v in recorded.items()}
    for name in report.legacy_extras:  # version 1: the relabeller kept its progress in the array's attributes
        if f"extras/{name}" not in report.readable:
            continue
        attrs = dict(group[f"extras/{name}"].attrs)
        done = int(attrs.get("episodes_done", 0))
        ends = [e.end for e in report.episodes[:done]]
        rows = ends[-1] if done and all(e is not None for e in ends) else 0
        extras[name] = {"rows": rows, "info": {k: v for k, v in attrs.items() if k != "episodes_done"}}
    return extras

