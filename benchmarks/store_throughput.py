"""Episode store throughput with integrity (version 2: crc32c on every chunk, every chunk written, the
episode manifest, the read guard) beside the layout before it (version 1), in one run.

Both stores get the same episodes: real expert episodes of the push task with two 84x84 cameras,
appended over and over up to ``--steps``. Stores are written in the order v1, v2, v2, v1, ... and random
batches of 256 are read from the two in turn, each batch timed on its own, so that the drift of a shared
machine falls on both; the JSON reports medians and ``ratio`` = v2 / v1 (for reads also the median of the
batch-by-batch ratios).

    python benchmarks/store_throughput.py [--steps 20000] [--repeats 2] [--batches 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")


from robot_rl.config import EnvConfig  # noqa: E402
from robot_rl.envs import make_env  # noqa: E402
from robot_rl.replay import EpisodeStore, UniformSampler  # noqa: E402
from robot_rl.replay.integrity import check_store  # noqa: E402
from robot_rl.replay.store import ChunkRows  # noqa: E402
from robot_rl.runtime.training.collect import expert_rollout  # noqa: E402


def real_episodes(n: int, size: int):
    env = make_env(EnvConfig(task="push", image_size=size))
    try:
        return [expert_rollout(env, "push", seed=s, noise=0.1) for s in range(n)]
    finally:
        env.close()


def append_until(path: Path, episodes, steps: int, **create) -> tuple[int, float, int]:
    """Append ``episodes`` over and over (new seeds) to a new store until it holds ``steps``; returns the steps
    written, the seconds spent in ``append`` and the episodes written."""
    written, elapsed, i = 0, 0.0, 0
    with EpisodeStore.create(path, overwrite=True, **create) as store:
        while written < steps:
            ep = episodes[i % len(episodes)]
            ep = replace(ep, meta=replace(ep.meta, seed=i))
            t = time.perf_counter()
            store.append(ep)
            elapsed += time.perf_counter() - t
            written += len(ep)
            i += 1
    return written, elapsed, i


def write(version: int, episodes, steps: int, root: Path) -> dict:
    path = root / f"v{version}.zarr"
    shutil.rmtree(path, ignore_errors=True)
    # version 2 with compressed camera chunks, as version 1 has them: the difference is the integrity layer alone
    written, elapsed, i = append_until(path, episodes, steps, version=version, chunks=ChunkRows(compress_images=True))
    t = time.perf_counter()
    report = check_store(path, deep=True)
    verify = time.perf_counter() - t
    assert report.ok, report.damage
    return {"append_steps_per_s": written / elapsed, "verify_s": verify,
            "size_bytes": EpisodeStore.open(path).size_bytes(), "steps": written, "episodes": i}


def read_paired(root: Path, batches: int) -> dict[int, dict[str, list[float]]]:
    """Random reads of both stores, batch by batch in turn (v1, v2, v2, v1, ...), so that the machine's drift
    falls on both layouts alike; every batch is timed on its own."""
    samplers, keys = {}, {}
    for version in (1, 2):
        store = EpisodeStore.open(root / f"v{version}.zarr")
        keys[version] = [k for k in store.step_keys if k.startswith("obs/")] + ["action"]
        samplers[version] = UniformSampler(store, seed=0)
        samplers[version].sample_steps(256, keys[version])  # first touch of each array's metadata
    rates: dict[int, dict[str, list[float]]] = {v: {"steps": [], "windows": []} for v in (1, 2)}
    for b in range(batches):
        for version in ((1, 2) if b % 2 == 0 else (2, 1)):
            t = time.perf_counter()
            samplers[version].sample_steps(256, keys[version])
            rates[version]["steps"].append(256 / (time.perf_counter() - t))
            windows = {k: (0, 1) for k in keys[version] if k != "action"} | {"action": (0, 16)}
            t = time.perf_counter()
            samplers[version].sample_windows(256, windows)
            rates[version]["windows"].append(256 / (time.perf_counter() - t))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20000, help="steps per store")
    parser.add_argument("--repeats", type=int, default=2, help="measurements per layout")
    parser.add_argument("--batches", type=int, default=60, help="random batches of 256 read from each layout")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--dir", default=None, help="where to write the stores (default: a temp folder)")
    args = parser.parse_args()
    episodes = real_episodes(8, args.image_size)
    root = Path(args.dir or tempfile.mkdtemp(prefix="store_bench_"))
    root.mkdir(parents=True, exist_ok=True)
    runs: dict[int, list[dict]] = {1: [], 2: []}
    order = [1, 2, 2, 1] * ((args.repeats + 1) // 2)
    for version in order[: 2 * args.repeats]:
        runs[version].append(write(version, episodes, args.steps, root))
    rates = read_paired(root, args.batches)
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)
    out: dict = {"machine": platform.machine(), "cpus": os.cpu_count(), "image_size": args.image_size,
                 "cameras": sorted(k for k in episodes[0].obs if k.startswith("images/")),
                 "steps": runs[2][0]["steps"], "repeats": args.repeats, "batch": 256}
    for metric, kind in (("random_read_steps_per_s", "steps"), ("window_read_samples_per_s", "windows")):
        v1, v2 = statistics.median(rates[1][kind]), statistics.median(rates[2][kind])
        paired = [b / a for a, b in zip(rates[1][kind], rates[2][kind], strict=True)]
        out[metric] = {"v1_before": round(v1, 2), "v2_integrity": round(v2, 2), "ratio": round(v2 / v1, 3),
                       "median_paired_ratio": round(statistics.median(paired), 3), "batches": args.batches}
    for metric in ("append_steps_per_s", "verify_s", "size_bytes"):
        v1 = statistics.median(r[metric] for r in runs[1])
        v2 = statistics.median(r[metric] for r in runs[2])
        out[metric] = {"v1_before": round(v1, 2), "v2_integrity": round(v2, 2), "ratio": round(v2 / v1, 3),
                       "v1_runs": [round(r[metric], 2) for r in runs[1]],
                       "v2_runs": [round(r[metric], 2) for r in runs[2]]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
