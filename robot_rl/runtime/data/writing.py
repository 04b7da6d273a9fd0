"""Writing episodes converted from another format into an episode store, all or nothing.

Every importer (LeRobot, robomimic, bags of any arm) yields episodes, or the reason it skipped one, and
:func:`write_imported` stores them: into a scratch store beside ``out`` first, which replaces (or is
appended to) ``out`` only once the whole import succeeded. An import that fails half-way, a file that
turns out unreadable on its tenth episode, or Ctrl-C leaves ``out`` exactly as it was.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from robot_rl.core.errors import ConfigError
from robot_rl.core.schema import Episode
from robot_rl.replay.store import EpisodeStore


@dataclass
class Skipped:
    """An episode an importer left out, and why (``name`` says which, in the source's own terms)."""

    name: str
    why: str

    def __str__(self) -> str:
        return f"{self.name}: {self.why}"


@dataclass
class ImportSummary:
    """What an import wrote."""

    source: str
    out: str
    episodes: int = 0
    steps: int = 0
    interventions: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Per-episode remarks that did not skip it (e.g. frames dropped and filled from the previous one)."""

    def line(self) -> str:
        """The one summary line a command prints at its end."""
        text = (f"imported {self.episodes} episodes ({self.steps} steps, {self.interventions} operator steps) "
                f"from {self.source} into {self.out}")
        if self.skipped:
            text += f"; skipped {len(self.skipped)}: " + "; ".join(str(s) for s in self.skipped)
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "out": self.out, "episodes": self.episodes, "steps": self.steps,
                "interventions": self.interventions, "skipped": [str(s) for s in self.skipped],
                "notes": list(self.notes)}


def check_import_target(out: str | Path, append: bool, overwrite: bool) -> None:
    """Raise before any work if ``out`` cannot receive the import as the flags ask."""
    from robot_rl.runtime.training.collect import check_output_store

    check_output_store(out, append, overwrite)


def write_imported(items: Iterable[Episode | Skipped], out: str | Path, source: str, *, append: bool = False,
                   overwrite: bool = False, env_config: dict[str, Any] | None = None, total: int | None = None,
                   progress: bool = True) -> ImportSummary:
    """Store every episode of ``items`` into ``out`` (see the module's docstring); returns what was written.

    ``total``: how many items to expect, for the progress bar. Raises ConfigError, naming the source, when
    no episode could be imported; ``out`` is then untouched."""
    out = Path(out)
    check_import_target(out, append, overwrite)
    scratch = out.with_name(f".{out.name}.importing-{os.getpid()}")
    if scratch.exists():
        shutil.rmtree(scratch)
    summary = ImportSummary(source=str(source), out=str(out))
    bar = tqdm(total=total, desc=f"import {Path(source).name}", unit="ep", disable=not progress)
    try:
        with EpisodeStore.create(scratch) as store:
            if env_config is not None:
                store.set_env_config(env_config)
            for item in items:
                bar.update(1)
                if isinstance(item, Skipped):
                    summary.skipped.append(item)
                    bar.write(f"skipped {item}")
                    continue
                item.validate()
                store.append(item)
                summary.episodes += 1
                summary.steps += len(item)
                summary.interventions += int(item.intervention.sum())
        bar.close()
        if summary.episodes == 0:
            why = f": {'; '.join(str(s) for s in summary.skipped)}" if summary.skipped else ""
            raise ConfigError(f"no episode could be imported from {source}{why}")
        _publish(scratch, out, append, progress)
    finally:
        bar.close()
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return summary


def _publish(scratch: Path, out: Path, append: bool, progress: bool) -> None:
    """Move the finished scratch store to ``out``, or append its episodes to the store there."""
    if append and out.exists():
        with EpisodeStore.open(scratch) as src, EpisodeStore.open(out, mode="a") as dst:
            if dst.env_config is None and src.env_config is not None:
                dst.set_env_config(src.env_config)
            for i in tqdm(range(src.num_episodes), desc=f"append to {out.name}", unit="ep", disable=not progress):
                dst.append(src.episode(i))
        return
    if out.exists():  # --overwrite, checked to be a store (or an empty folder) by check_import_target
        old = out.with_name(f".{out.name}.replaced-{os.getpid()}")
        out.rename(old)
        scratch.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        scratch.rename(out)
