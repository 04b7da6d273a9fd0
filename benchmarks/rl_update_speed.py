"""The learner side of RL fine-tuning alone (no env): seconds to sample a rollout's action chains and to
run one PPO update on them, ReinFlow (flow policy, few steps) against DPPO (diffusion policy, DDPM chain)
on the same batch; plus ReinFlow on the VLA's action expert (frozen backbone). Prints JSON.

    python benchmarks/rl_update_speed.py [--samples 512] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from robot_rl.algos.dppo import DPPOActor, DPPOConfig
from robot_rl.algos.ppo import PPOConfig, ppo_update, value_network
from robot_rl.algos.reinflow import ReinFlowActor, ReinFlowConfig
from robot_rl.policy import DiffusionConfig, FlowConfig, VLAConfig, make_policy


def batch_of(n: int, cfg, rng, device: str) -> dict:
    f = cfg.features
    out = {f"obs/images/{c}": torch.as_tensor(rng.integers(0, 255, (n, 1, f.image_size, f.image_size, 3),
                                                           dtype=np.uint8), device=device)
           for c in f.cameras}
    out["obs/state"] = torch.as_tensor(rng.normal(size=(n, 1, f.state_dim)).astype(np.float32), device=device)
    out["instruction"] = ["push the red cube into the green goal region"] * n
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_actor(name: str, policy, actor, obs: dict, args, device: str) -> dict:
    """Seconds per rollout batch of chain sampling, and per PPO update on it (frozen observation encoder)."""
    policy.to(device)
    actor.to(device)
    policy.obs_encoder.requires_grad_(False)
    value = value_network(policy.obs_encoder.out_dim).to(device)
    groups = actor.trainable_groups()
    opt = torch.optim.Adam([{"params": groups["actor"] + groups["noise"], "lr": 1e-5},
                            {"params": list(value.parameters()), "lr": 1e-3}])
    cfg = PPOConfig(epochs=args.epochs, minibatch_size=args.minibatch, target_kl=None)
    with torch.no_grad():
        cond = torch.cat([policy.encode({k: v[i : i + 64] for k, v in obs.items()})
                          for i in range(0, args.samples, 64)])
    if hasattr(actor, "frozen"):
        actor.frozen.to(device)

    def sample():
        with torch.no_grad():
            return actor.sample(cond.to(device))

    def update(chain, log_prob):
        n = chain.shape[0]
        batch = {"cond": cond, "chain": chain, "log_prob": log_prob,
                 "advantages": torch.randn(n, device=device), "returns": torch.randn(n, device=device),
                 "values": torch.zeros(n, device=device)}
        ppo_update(actor, value, opt, batch, cfg)

    _, chain, log_prob = sample()  # warm-up
    update(chain, log_prob)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        _, chain, log_prob = sample()
    sync(device)
    t1 = time.perf_counter()
    for _ in range(args.repeats):
        update(chain, log_prob)
    sync(device)
    t2 = time.perf_counter()
    return {"sample_s": round((t1 - t0) / args.repeats, 4), "update_s": round((t2 - t1) / args.repeats, 4),
            "chain_steps": chain.shape[1] - 1, "samples": args.samples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=512, help="decisions in one rollout batch")
    ap.add_argument("--minibatch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--vla-preset", default=None, help="tiny (CPU default) or base (~0.45B, GPU default)")
    args = ap.parse_args()
    device = args.device
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    report: dict = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
                    "threads": torch.get_num_threads(), "samples": args.samples, "epochs": args.epochs,
                    "minibatch": args.minibatch}
    flow = make_policy("flow", FlowConfig())
    diffusion = make_policy("diffusion", DiffusionConfig())
    obs_dev = batch_of(args.samples, flow.config, rng, device)
    reinflow = ReinFlowActor(flow, ReinFlowConfig(denoising_steps=4))
    report["reinflow_flow_4"] = time_actor("reinflow", flow, reinflow, obs_dev, args, device)
    dppo10 = DPPOActor(diffusion, DPPOConfig(denoising_steps=10))
    report["dppo_ddpm_10"] = time_actor("dppo", diffusion, dppo10, obs_dev, args, device)
    report["dppo_ddpm_20"] = time_actor("dppo", diffusion, DPPOActor(diffusion, DPPOConfig(denoising_steps=20,
                                                                                           ft_denoising_steps=20)),
                                        obs_dev, args, device)
    r, d = report["reinflow_flow_4"], report["dppo_ddpm_10"]
    report["ratio_reinflow_over_dppo10"] = {"sample": round(r["sample_s"] / d["sample_s"], 3),
                                            "update": round(r["update_s"] / d["update_s"], 3)}
    preset = args.vla_preset or ("base" if device.startswith("cuda") else "tiny")
    vla = make_policy("vla", VLAConfig(backbone_preset=preset))
    vla_obs = batch_of(args.samples, vla.config, rng, device)
    report[f"reinflow_vla_{preset}_4"] = time_actor("reinflow", vla,
                                                    ReinFlowActor(vla, ReinFlowConfig(denoising_steps=4)),
                                                    vla_obs, args, device)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
