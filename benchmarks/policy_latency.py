"""Latency per action chunk of every policy type, as a ratio to DDPM with 20 steps, in one run.

Prints one JSON object. Batch 1 (acting), two 84x84 cameras, 22-d state, chunks of 8x7, default network
sizes; median over repeats after warm-up. On a CUDA GPU the VLA is also timed with a ~0.45B random
backbone (SmolVLM-500M-like) in bf16. Usage::

    python benchmarks/policy_latency.py [--repeats 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from robot_rl.policy import make_policy, policy_class  # noqa: E402
from robot_rl.policy.config import PolicyFeatures  # noqa: E402


def _batch(features: PolicyFeatures, device: str) -> dict:
    rng = np.random.default_rng(0)
    size = features.image_size
    batch = {f"obs/images/{c}": torch.as_tensor(rng.integers(0, 255, (1, 1, size, size, 3), dtype=np.uint8),
                                                 device=device) for c in features.cameras}
    batch["obs/state"] = torch.as_tensor(rng.standard_normal((1, 1, features.state_dim), dtype=np.float32),
                                         device=device)
    batch["instruction"] = ["push the red cube into the green goal region"]
    return batch


def time_policy(name: str, steps: int, repeats: int, device: str = "cpu", backbone_dtype=None, **fields) -> dict:
    features = PolicyFeatures()
    policy = make_policy(name, policy_class(name).config_cls(features=features, **fields)).to(device)
    if backbone_dtype is not None:  # the VLM in bf16; its hidden states are cast back to float32
        policy.obs_encoder.backbone.model.to(backbone_dtype)
    policy.eval()
    batch = _batch(features, device)
    for _ in range(3):
        policy.act(batch, steps=steps)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        policy.act(batch, steps=steps)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in policy.parameters())
    return {"latency_ms": round(1000 * statistics.median(times), 3), "params": params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cases = {
        "flow_1": ("flow", 1, {}),
        "flow_4": ("flow", 4, {}),
        "flow_10": ("flow", 10, {}),
        "shortcut_1": ("shortcut", 1, {}),
        "shortcut_4": ("shortcut", 4, {}),
        "diffusion_ddim_5": ("diffusion", 5, {"sampler": "ddim"}),
        "diffusion_ddpm_20": ("diffusion", 20, {"sampler": "ddpm"}),
        "vla_tiny_smolvlm_flow_10": ("vla", 10, {"tiny_backbone": "smolvlm"}),
        "vla_tiny_paligemma_flow_10": ("vla", 10, {"tiny_backbone": "paligemma"}),
    }
    results = {k: time_policy(name, steps, args.repeats, **fields) for k, (name, steps, fields) in cases.items()}
    base = results["diffusion_ddpm_20"]["latency_ms"]
    for row in results.values():
        row["ratio_to_ddpm_20"] = round(row["latency_ms"] / base, 3)
    out = {"device": "cpu", "threads": torch.get_num_threads(), "python": platform.python_version(),
           "torch": torch.__version__, "batch": 1, "policies": results}
    if torch.cuda.is_available():
        gpu = {k: time_policy(name, steps, args.repeats, device="cuda", **fields)
               for k, (name, steps, fields) in cases.items() if name != "vla"}
        gpu["vla_base_smolvlm_bf16_flow_10"] = time_policy(
            "vla", 10, args.repeats, device="cuda", backbone_dtype=torch.bfloat16, tiny_backbone="smolvlm",
            backbone_preset="base", backbone_image_size=384)
        gpu_base = gpu["diffusion_ddpm_20"]["latency_ms"]
        for row in gpu.values():
            row["ratio_to_ddpm_20"] = round(row["latency_ms"] / gpu_base, 3)
        out["gpu"] = {"name": torch.cuda.get_device_name(0), "policies": gpu}
    else:
        out["gpu"] = "no CUDA GPU on this machine: the ~0.45B backbone was not timed"
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
