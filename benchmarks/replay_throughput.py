"""Replay read throughput for a learner: random batches of 256 steps (two cameras + state + action) from
the in-memory ring and from the on-disk store, beside the numpy bound (fancy indexing of the same arrays
in memory) and TorchRL's ``LazyTensorStorage`` where torchrl is installed, in one run.

The stores hold real rendered steps of the push task's expert (its 25-step episodes joined into episodes of
about 200 steps, so that writing 50k steps takes a minute, not ten), appended over and over up to
``--steps``: one with
the default layout (raw camera chunks, read row by row) and one with compressed camera chunks (the
layout before). The stores are freshly written, so they are page-cached; the on-disk readers first read
each store once in order (checking every chunk's crc32c, which they remember). Every round draws one set
of random indices and times each reader on it in turn (the order rotating), so the drift of a shared
machine falls on all; the JSON reports medians and ratios to the numpy bound.

    python benchmarks/replay_throughput.py [--steps 50000] [--batches 60]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).parent))

from store_throughput import append_until, real_episodes  # noqa: E402

from robot_rl.core.schema import STEP_FIELDS, Episode  # noqa: E402
from robot_rl.replay import EpisodeStore  # noqa: E402
from robot_rl.replay.ring import StepRing  # noqa: E402
from robot_rl.replay.store import ChunkRows  # noqa: E402

BATCH = 256


def joined(episodes) -> Episode:
    """One episode made of several, end to end (the layout is what is measured, not the task)."""
    steps = {k: np.concatenate([ep.step_arrays()[k] for ep in episodes]) for k in episodes[0].step_arrays()}
    obs = {k[4:]: v for k, v in steps.items() if k.startswith("obs/")}
    fields = {k: steps[k] for k in STEP_FIELDS}
    extras = {k: v for k, v in steps.items() if not k.startswith("obs/") and k not in STEP_FIELDS}
    return Episode(obs=obs, final_obs=episodes[-1].final_obs, meta=episodes[-1].meta, extras=extras, **fields)


def write(path: Path, episodes, steps: int, compress: bool) -> float:
    """Append episodes until ``steps``; returns append steps/s."""
    written, elapsed, _ = append_until(path, episodes, steps, chunks=ChunkRows(compress_images=compress))
    return written / elapsed


def warm(store: EpisodeStore, keys: list[str]) -> float:
    """Read every committed row once, in order (each chunk checked once); returns seconds."""
    t = time.perf_counter()
    for start in range(0, store.num_steps, 4096):
        store.get_steps(np.arange(start, min(start + 4096, store.num_steps)), keys)
    return time.perf_counter() - t


def torchrl_reader(arrays: dict[str, np.ndarray]) -> Callable[[np.ndarray], object] | None:
    try:
        import torch
        from tensordict import TensorDict
        from torchrl.data import LazyTensorStorage
    except ImportError:
        return None
    logging.getLogger("torchrl").setLevel(logging.WARNING)  # it logs to stdout, which carries the JSON
    n = len(next(iter(arrays.values())))
    storage = LazyTensorStorage(n)
    data = TensorDict({k.replace("/", "_"): torch.from_numpy(v) for k, v in arrays.items()}, batch_size=[n])
    storage.set(torch.arange(n), data)
    return lambda idx: storage.get(torch.from_numpy(idx))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50000, help="steps in each store")
    parser.add_argument("--batches", type=int, default=60, help="rounds; each times every fast reader on one batch")
    parser.add_argument("--compressed-batches", type=int, default=10,
                        help="batches read from the compressed store (it is slow)")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--dir", default=None, help="where to write the stores (default: a temp folder)")
    args = parser.parse_args()
    pieces = real_episodes(16, args.image_size)
    episodes = [joined(pieces[i::2]) for i in range(2)]
    root = Path(args.dir or tempfile.mkdtemp(prefix="replay_bench_"))
    root.mkdir(parents=True, exist_ok=True)
    append = {"raw": write(root / "raw.zarr", episodes, args.steps, False),
              "compressed": write(root / "compressed.zarr", episodes, args.steps, True)}
    stores = {name: EpisodeStore.open(root / f"{name}.zarr") for name in append}
    raw = stores["raw"]
    keys = [k for k in raw.step_keys if k.startswith("obs/")] + ["action"]
    warm_s = {name: warm(store, keys) for name, store in stores.items()}
    arrays = {k: np.asarray(raw.read_field(k)) for k in keys}
    ring = StepRing.from_stores([raw], capacity=raw.num_steps, keys=keys)
    out_buffers = ring.buffers(BATCH, keys)
    readers: dict[str, Callable[[np.ndarray], object]] = {
        "numpy_bound": lambda idx: {k: a[idx] for k, a in arrays.items()},
        "ring": lambda idx: ring.get(idx, keys),  # a full ring: slot i holds step i
        "ring_into_buffers": lambda idx: ring.get(idx, keys, out=out_buffers),
        "store": lambda idx: raw.get_steps(idx, keys),
    }
    tr = torchrl_reader(arrays)
    if tr is not None:
        readers["torchrl_lazy_tensor_storage"] = tr
    rng = np.random.default_rng(0)
    rates: dict[str, list[float]] = {name: [] for name in readers}
    names = list(readers)
    for b in range(args.batches):
        idx = rng.integers(0, raw.num_steps, BATCH)
        for name in names[b % len(names):] + names[: b % len(names)]:
            t = time.perf_counter()
            readers[name](idx)
            rates[name].append(BATCH / (time.perf_counter() - t))
    compressed = []
    for _ in range(args.compressed_batches):
        idx = rng.integers(0, raw.num_steps, BATCH)
        t = time.perf_counter()
        stores["compressed"].get_steps(idx, keys)
        compressed.append(BATCH / (time.perf_counter() - t))
    bound = statistics.median(rates["numpy_bound"])
    result: dict = {
        "machine": platform.machine(), "cpus": os.cpu_count(), "steps": raw.num_steps, "batch": BATCH,
        "fields": {k: list(arrays[k].shape[1:]) for k in keys}, "batches": args.batches,
        "steps_per_s": {name: round(statistics.median(r), 1) for name, r in rates.items()},
        "ratio_to_numpy_bound": {name: round(statistics.median(r) / bound, 3) for name, r in rates.items()},
        "ring_vs_numpy_paired_median": round(statistics.median(
            a / b for a, b in zip(rates["ring"], rates["numpy_bound"], strict=True)), 3),
        "compressed_store_steps_per_s": round(statistics.median(compressed), 1),
        "store_vs_compressed": round(statistics.median(rates["store"]) / statistics.median(compressed), 2),
        "append_steps_per_s": {k: round(v, 1) for k, v in append.items()},
        "first_pass_s": {k: round(v, 2) for k, v in warm_s.items()},
        "size_bytes": {name: store.size_bytes() for name, store in stores.items()},
        "ring_bytes": ring.nbytes(),
        "torchrl": "measured" if tr is not None else "not installed",
    }
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=1), flush=True)  # torchrl's exit hooks can end the process unflushed


if __name__ == "__main__":
    main()
