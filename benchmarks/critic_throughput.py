"""Critic pairs scored per second at batch 1, 16 and 64, tiny and small presets (and a ~0.45B backbone
in bf16 on a CUDA GPU), with the ratio to batch 1 of the same model in the same run. Prints JSON.

    python benchmarks/critic_throughput.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from robot_rl.critic.config import CriticConfig  # noqa: E402
from robot_rl.critic.model import ProgressCritic  # noqa: E402


@torch.no_grad()
def pairs_per_s(critic: ProgressCritic, batch: int, repeats: int, device: str) -> float:
    rng = np.random.default_rng(0)
    frames = {c: rng.integers(0, 255, (batch, 84, 84, 3), dtype=np.uint8) for c in critic.config.cameras}
    instr = ["push the red cube into the green goal region"] * batch
    critic(frames, frames, instr)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        critic(frames, frames, instr)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def measure(preset: str, repeats: int, device: str = "cpu", image_size: int = 64, bf16: bool = False) -> dict:
    torch.manual_seed(0)
    critic = ProgressCritic(CriticConfig(backbone_preset=preset, backbone_image_size=image_size)).to(device).eval()
    if bf16:
        critic.backbone.model.to(torch.bfloat16)
    rows = {f"batch_{b}": round(pairs_per_s(critic, b, repeats, device), 1) for b in (1, 16, 64)}
    rows.update({f"ratio_batch_{b}_to_1": round(rows[f"batch_{b}"] / rows["batch_1"], 2) for b in (16, 64)})
    rows["params"] = sum(p.numel() for p in critic.parameters())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    out = {"device": "cpu", "threads": torch.get_num_threads(), "unit": "pairs/s",
           "cpu": {p: measure(p, args.repeats) for p in ("tiny", "small")}}
    if torch.cuda.is_available():
        out["gpu"] = {"name": torch.cuda.get_device_name(0),
                      "base_bf16": measure("base", args.repeats, "cuda", image_size=384, bf16=True)}
    else:
        out["gpu"] = "no CUDA GPU on this machine: the ~0.45B backbone was not timed"
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
