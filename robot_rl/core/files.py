"""Replacing a folder of files (a policy, a critic, a checkpoint) so that a crash at any point leaves either
the old folder or the new one under its name, never a half-written one."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path


def replace_folder(final: Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` fills a fresh ``final.tmp``; then the old ``final`` is moved aside to ``final.old``, the new
    one moved in, and the old one dropped. After a crash ``final`` is the old or the new folder (or, in the
    instant between the two renames, absent with the old one intact as ``final.old``)."""
    final = Path(final)
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final
