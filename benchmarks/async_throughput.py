"""The chunk learner (or ReinFlow / DPPO: ``--algo``) run synchronously (one loop alternates acting and learning)
and asynchronously (actor processes act while a learner process trains: rl.backend=local), from the same cloned
policy, critic and demos, with the same env-step budget and evaluation seeds; prints JSON.

    python benchmarks/async_throughput.py --job data/quickstart [--iterations 16] [--actors 2] [--algo reinflow]

``sync.*`` / ``async.*``: env steps per second (the steps each learned from, over the run's wall time, its
final evaluation included), learner updates per second, held-out success after the run (with its Wilson
interval); ``weight_sync_ms``: from a version's publication to the first decision an actor makes with it
(median and p99 over the actors' last 200 swaps each). It reuses a finished ``robot-rl train`` job folder.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from pathlib import Path

import numpy as np

from robot_rl.config import load_config
from robot_rl.runtime.training.job import TrainJobConfig
from robot_rl.runtime.training.offpolicy import ChunkRLTrainer
from robot_rl.runtime.training.rl import RLTrainer


def run(name: str, job: TrainJobConfig, root: Path, backend: str, actors: int, algo: str = "chunk") -> dict:
    cfg = copy.deepcopy(job.rl)
    cfg.algo, cfg.backend = algo, backend
    cfg.distributed.actors = actors
    env = copy.deepcopy(job.env)
    env.terminate_on_success = True
    out = root / "async_throughput" / name
    shutil.rmtree(out, ignore_errors=True)
    kind = ChunkRLTrainer if algo == "chunk" else RLTrainer
    trainer = kind(root / "bc/policy", env, out, cfg, critic_dir=root / "critic/critic",
                   demos=[str(root / "demos.zarr")], progress=False)
    start = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - start
    last = result["last_eval"]
    updates = result.get("updates", result["iterations"])  # PPO: one update per iteration
    report = {"wall_s": round(wall, 1), "env_steps": result["env_steps"], "updates": updates,
              "env_steps_per_s": round(result["env_steps"] / wall, 2),
              "updates_per_s": round(updates / wall, 3),
              "success": last["success_rate"], "success_ci95": [last["ci_low"], last["ci_high"]],
              "eval_episodes": last["episodes"]}
    if backend != "sync":
        sync = []
        for path in sorted((out / "actors").glob("actor_*.status.json")):
            sync += json.loads(path.read_text()).get("sync_ms", [])
        report.update(acted_env_steps=result["acted_env_steps"],
                      acted_env_steps_per_s=round(result["acted_env_steps"] / wall, 2),
                      weight_versions=result["weight_version"], updates_dropped=result["updates_dropped"],
                      stale_episodes=result.get("stale_episodes"),
                      actor_restarts=result["actor_restarts"], learner_restarts=result["learner_restarts"],
                      weight_sync_ms={"median": round(float(np.median(sync)), 1) if sync else None,
                                      "p99": round(float(np.percentile(sync, 99)), 1) if sync else None,
                                      "swaps": len(sync)})
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", default="data/quickstart", help="a finished `robot-rl train` job folder")
    ap.add_argument("--config", default="configs/quickstart.yaml", help="the job's config")
    ap.add_argument("--iterations", type=int, default=None, help="rounds of env steps (default: the config's)")
    ap.add_argument("--eval-episodes", type=int, default=48)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--skip", default="", help="sync or async: leave that run out")
    ap.add_argument("--algo", default="chunk", choices=("chunk", "reinflow", "dppo"),
                    help="the learner (reinflow / dppo: the job's policy must be a flow / diffusion policy)")
    args = ap.parse_args()
    job = load_config(TrainJobConfig, args.config, [f"--out={args.job}"])
    root = Path(args.job)
    for need in ("bc/policy", "critic/critic", "demos.zarr"):
        if not (root / need).exists():
            raise SystemExit(f"{root / need} is missing: run `robot-rl train {args.config} --out={root}` first")
    if args.iterations:
        job.rl.iterations = args.iterations
    job.rl.eval_every, job.rl.eval_episodes = 0, args.eval_episodes  # one evaluation, at the end
    report: dict = {"task": job.env.task, "algo": args.algo, "iterations": job.rl.iterations, "actors": args.actors,
                    "num_envs": job.rl.num_envs, "utd": job.rl.chunk.utd}
    skip = set(args.skip.split(","))
    partial = root / "async_throughput" / f"partial_{args.algo}.json"
    partial.parent.mkdir(parents=True, exist_ok=True)
    for name, backend in (("sync", "sync"), ("async", "local")):
        if name not in skip:
            report[name] = run(f"{name}_{args.algo}" if args.algo != "chunk" else name, job, root, backend,
                               args.actors, args.algo)
            partial.write_text(json.dumps(report, indent=2))
    if "sync" in report and "async" in report:
        s, a = report["sync"], report["async"]
        report["ratios"] = {"env_steps_per_s": round(a["env_steps_per_s"] / s["env_steps_per_s"], 3),
                            "updates_per_s": round(a["updates_per_s"] / s["updates_per_s"], 3),
                            "wall_s": round(a["wall_s"] / s["wall_s"], 3),
                            "success_points": round(100 * (a["success"] - s["success"]), 1)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
