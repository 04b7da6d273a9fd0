"""Versioned weights between a learner and its actors: the learner publishes numbered safetensors files
(written, then renamed into place, so a reader never sees half a file), an actor takes the newest and skips
the ones in between. Versions only increase; the publish time travels in the file, so the actor can measure
publish-to-acting latency."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

_NAME = re.compile(r"^v(\d{10})\.safetensors$")


def _versions(folder: Path) -> list[int]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := _NAME.match(n)))


Mirror = Callable[[dict[str, torch.Tensor], int, float], None]


class WeightPublisher:
    """Writes ``folder/vNNNNNNNNNN.safetensors`` and keeps the newest ``keep`` of them; ``mirror`` (e.g. Ray's
    object store) also gets every version once its file is in place (tensors, version, publish time)."""

    def __init__(self, folder: str | Path, keep: int = 3, mirror: Mirror | None = None) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.folder, self.keep, self.mirror = Path(folder), keep, mirror
        self.folder.mkdir(parents=True, exist_ok=True)
        found = _versions(self.folder)
        self.version = found[-1] if found else -1

    def publish(self, tensors: dict[str, torch.Tensor], version: int) -> Path:
        """Publish ``tensors`` as ``version``, which must be above every version published before (a
        restarted learner resumes with its update count, which only grows)."""
        if version <= self.version:
            raise ValueError(f"weight version {version} is not above the last published {self.version}")
        path = self.folder / f"v{version:010d}.safetensors"
        tmp = path.with_name(path.name + ".tmp")
        cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        published = time.time()
        save_file(cpu, str(tmp), metadata={"version": str(version), "published": repr(published)})
        os.replace(tmp, path)
        self.version = version
        if self.mirror is not None:
            self.mirror(cpu, version, published)
        for old in _versions(self.folder)[: -self.keep]:
            (self.folder / f"v{old:010d}.safetensors").unlink(missing_ok=True)
        return path


class WeightSubscriber:
    """An actor's side: ``poll()`` returns the newest weights above the ones it holds, or None."""

    source = "files"

    def __init__(self, folder: str | Path, version: int = -1) -> None:
        self.folder, self.version = Path(folder), version
        self.published_at: float | None = None

    def latest_version(self) -> int:
        found = _versions(self.folder)
        return found[-1] if found else -1

    def poll(self) -> dict[str, torch.Tensor] | None:
        for version in reversed(_versions(self.folder)):
            if version <= self.version:
                return None
            path = self.folder / f"v{version:010d}.safetensors"
            try:
                with safe_open(str(path), framework="pt") as f:
                    tensors = {k: f.get_tensor(k) for k in f.keys()}
                    meta = f.metadata() or {}
            except (FileNotFoundError, OSError):
                continue  # dropped by the publisher's clean-up while we read: take the next one down
            self.version, self.published_at = version, float(meta.get("published", "nan"))
            return tensors
        return None
