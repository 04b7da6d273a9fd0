"""LeRobot export and import per video codec, beside a store-to-store copy of the same episodes, in one run:
steps/s each way, dataset size against the store, and how closely camera images come back (PSNR).

The store holds real rendered expert episodes of a native task (two cameras). The baseline is the cheapest
thing that moves the same steps: reading every episode of the store and appending it to a new store. Each
measurement is repeated ``--repeats`` times in rotating order; the JSON reports medians and ratios to the
baseline.

    python benchmarks/data_formats.py [--task push] [--episodes 20] [--image-size 84] [--repeats 3]
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
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from robot_rl.config import EnvConfig  # noqa: E402
from robot_rl.replay.store import EpisodeStore  # noqa: E402
from robot_rl.runtime.data.lerobot import export_lerobot, import_lerobot  # noqa: E402
from robot_rl.runtime.training.collect import collect_demos  # noqa: E402

CODECS = ("ffv1", "h264", "av1")


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def copy_store(src: Path, dst: Path) -> None:
    with EpisodeStore.open(src) as a, EpisodeStore.create(dst, overwrite=True) as b:
        for i in range(a.num_episodes):
            b.append(a.episode(i))


def psnr_of(src: Path, back: Path) -> dict[str, float]:
    values = []
    with EpisodeStore.open(src) as a, EpisodeStore.open(back) as b:
        for i in range(a.num_episodes):
            x, y = a.episode(i), b.episode(i)
            for key in x.obs:
                if key.startswith("images/"):
                    mse = float(((x.obs[key].astype(np.float64) - y.obs[key]) ** 2).mean())
                    values.append(float("inf") if mse == 0 else 10 * np.log10(255**2 / mse))
    finite = [v for v in values if np.isfinite(v)]
    return {"worst_db": min(values), "mean_db": statistics.mean(finite) if finite else float("inf"),
            "exact": all(not np.isfinite(v) for v in values)}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--task", default="push")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--image-size", type=int, default=84)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="data_formats_"))
    try:
        store = tmp / "src.zarr"
        collect_demos(EnvConfig(task=args.task, image_size=args.image_size), args.episodes, store, progress=False)
        with EpisodeStore.open(store) as s:
            steps = s.num_steps
        store_bytes = folder_bytes(store)
        times: dict[str, list[float]] = {"copy": [], **{f"export_{c}": [] for c in CODECS},
                                         **{f"import_{c}": [] for c in CODECS}}
        for r in range(args.repeats):
            order = ["copy", *CODECS]
            order = order[r % len(order):] + order[: r % len(order)]
            for name in order:
                if name == "copy":
                    times["copy"].append(timed(lambda: copy_store(store, tmp / "copy.zarr")))
                    continue
                ds, back = tmp / f"ds_{name}", tmp / f"back_{name}.zarr"
                times[f"export_{name}"].append(timed(lambda ds=ds, name=name: export_lerobot(
                    store, ds, codec=name, overwrite=True, progress=False)))
                times[f"import_{name}"].append(timed(lambda ds=ds, back=back: import_lerobot(
                    ds, back, overwrite=True, progress=False)))
        baseline = steps / statistics.median(times["copy"])
        rows = {}
        for codec in CODECS:
            ds = tmp / f"ds_{codec}"
            export_rate = steps / statistics.median(times[f"export_{codec}"])
            import_rate = steps / statistics.median(times[f"import_{codec}"])
            rows[codec] = {"export_steps_per_s": round(export_rate, 1), "import_steps_per_s": round(import_rate, 1),
                           "export_vs_copy": round(export_rate / baseline, 3),
                           "import_vs_copy": round(import_rate / baseline, 3),
                           "dataset_bytes": folder_bytes(ds),
                           "size_vs_store": round(folder_bytes(ds) / store_bytes, 3),
                           # dB, or null where every image came back exactly (JSON has no infinity)
                           "image_psnr": {k: (None if v == float("inf") else round(v, 2) if isinstance(v, float)
                                              else v)
                                          for k, v in psnr_of(store, tmp / f"back_{codec}.zarr").items()}}
        print(json.dumps({"benchmark": "data_formats", "task": args.task, "episodes": args.episodes, "steps": steps,
                          "image_size": args.image_size, "cameras": 2, "repeats": args.repeats,
                          "store_bytes": store_bytes, "copy_steps_per_s": round(baseline, 1), "codecs": rows,
                          "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
