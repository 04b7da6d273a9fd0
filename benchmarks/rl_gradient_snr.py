"""How much learning signal one PPO batch carries: the cosine between policy gradients of independent
rollout batches, at the BC policy of a finished job; prints JSON.

At ratio 1 the PPO surrogate's gradient is the score-function estimate mean(A * grad log p(chain)).
If two independent batches give gradients with cosine ~0, an update follows noise, not the task; the
cosine grows with the batch where there is signal (E[cos] ~ n s^2 / (1 + n s^2) for per-decision
signal-to-noise s). The same run compares batches of 1, 2 and 4 iterations' decisions, for the actor
(velocity or denoiser) and the exploration-noise network.

    python benchmarks/rl_gradient_snr.py --job data/quickstart --batches 8
    python benchmarks/rl_gradient_snr.py --job data/quickstart --reward critic -- --rl.ppo.gae_lambda=0.5

Anything after ``--`` overrides the job config, as on the ``robot-rl train`` command line.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from robot_rl.config import load_config
from robot_rl.runtime.training.job import TrainJobConfig
from robot_rl.runtime.training.rl import TRAIN_SEED, RLTrainer
from robot_rl.runtime.training.vec_env import ChunkVectorEnv


def mean_cosine(grads: list[torch.Tensor], gap: tuple[int, int] = (1, 10**9)) -> dict[str, float] | None:
    """Mean cosine over pairs of batches whose distance in collection order is within ``gap``."""
    pairs = [torch.nn.functional.cosine_similarity(grads[i], grads[j], dim=0).item()
             for i, j in itertools.combinations(range(len(grads)), 2) if gap[0] <= j - i <= gap[1]]
    if not pairs:
        return None
    sem = float(np.std(pairs) / np.sqrt(len(pairs))) if len(pairs) > 1 else None
    return {"mean": round(float(np.mean(pairs)), 4), "sem": None if sem is None else round(sem, 4), "pairs": len(pairs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", default="data/quickstart", help="a finished `robot-rl train` job folder")
    ap.add_argument("--config", default="configs/quickstart.yaml", help="the job's config")
    ap.add_argument("--batches", type=int, default=8, help="independent rollout batches (iterations) to compare")
    ap.add_argument("--warmup", type=int, default=3, help="value-only iterations before measuring")
    ap.add_argument("--reward", default=None, help="reward kind (default: the config's)")
    ap.add_argument("overrides", nargs="*", help="job-config overrides after --, e.g. --rl.ppo.gae_lambda=0.5")
    args = ap.parse_args()
    if args.batches < 4:
        raise SystemExit(f"--batches must be >= 4 to compare merged batches, got {args.batches}")
    job = load_config(TrainJobConfig, args.config, [f"--out={args.job}", *args.overrides])
    root = Path(args.job)
    for need in ("bc/policy", "critic/critic"):
        if not (root / need).exists():
            raise SystemExit(f"{root / need} is missing: run `robot-rl train {args.config} --out={root}` first")
    cfg = copy.deepcopy(job.rl)
    if args.reward:
        cfg.reward.kind = args.reward
    cfg.value_warmup_iterations = args.warmup + args.batches + 1  # the actor never moves
    env = copy.deepcopy(job.env)
    env.terminate_on_success = True
    run = root / "rl_gradient_snr"
    shutil.rmtree(run, ignore_errors=True)
    trainer = RLTrainer(root / "bc/policy", env, run, cfg, critic_dir=root / "critic/critic", progress=False)
    groups = trainer.actor.trainable_groups()
    start = time.perf_counter()
    envs = ChunkVectorEnv(env, cfg.num_envs, cfg.workers, seed=TRAIN_SEED)
    grads: dict[str, list[torch.Tensor]] = {"actor": [], "noise": []}
    episodes, wins = 0, 0
    try:
        obs = envs.reset()
        for _ in range(args.warmup):
            rollout, obs = trainer.collect(envs, obs)
            trainer.update(rollout)
            trainer.iteration += 1
        for _ in range(args.batches):
            rollout, obs = trainer.collect(envs, obs)
            a = trainer.advantages(rollout)
            adv = torch.as_tensor(a["advantages"].reshape(-1))
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            log_prob, _ = trainer.actor.log_prob(a["cond"], torch.cat(rollout["chain"]))
            loss = -(adv * log_prob).mean()
            for name, params in groups.items():
                if params:
                    g = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
                    grads[name].append(torch.cat([(x if x is not None else torch.zeros_like(p)).flatten()
                                                  for x, p in zip(g, params)]))
            episodes += len(rollout["finished"])
            wins += sum(rollout["finished"])
            trainer.update(rollout, a)  # value net only (still warming up): a fair baseline for the next batch
            trainer.iteration += 1
    finally:
        envs.close()
    decisions = cfg.num_envs * cfg.steps_per_iteration
    report = {"task": env.task, "algo": cfg.algo, "reward": cfg.reward.kind, "overrides": args.overrides,
              "gae_lambda": cfg.ppo.gae_lambda, "gamma": cfg.ppo.gamma, "decisions_per_batch": decisions,
              "batches": args.batches, "episodes": episodes, "train_success": round(wins / max(episodes, 1), 3),
              "wall_s": round(time.perf_counter() - start, 1), "cosine": {}}
    for name, gs in grads.items():
        if not gs:
            continue
        report["cosine"][name] = {
            str(decisions * m): mean_cosine([sum(gs[i : i + m]) for i in range(0, len(gs) - m + 1, m)])
            for m in (1, 2, 4)
        }
        # consecutive batches share the episodes that cross their boundary and the value net between them
        report["cosine"][name]["consecutive"] = mean_cosine(gs, (1, 1))
        report["cosine"][name]["apart"] = mean_cosine(gs, (2, 10**9))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
