"""RL fine-tuning side by side, in one run on one task, one cloned policy and one env-step budget; prints JSON.

1. The off-policy chunk learner (the main job's) against ReinFlow (and, with a diffusion policy, DPPO):
   success against env steps, and the env steps each took to reach the cloned policy's level + 15 points.
2. The chunk learner on the critic's dense reward (the job's reward) against the env's sparse reward: env
   steps to reach the target success (80%) on held-out evaluation, as a ratio; and with the progress critic
   fine-tuned on the run's own episodes (rl.progress_finetune) against it frozen.
3. ReinFlow (flow policy, few denoising steps) against DPPO (diffusion policy, DDPM chain): seconds per
   iteration and success after the same env steps.

It reuses a finished ``robot-rl train`` job folder (demos, BC flow policy, critic, the BC evaluation), and
pre-trains a diffusion policy on the same demos with the same BC budget where the folder has none.

    python benchmarks/rl_compare.py --job data/quickstart --iterations 24 [--skip dppo]
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from pathlib import Path

from robot_rl.config import load_config
from robot_rl.runtime.training.job import TrainJobConfig
from robot_rl.runtime.training.offpolicy import ChunkRLTrainer
from robot_rl.runtime.training.pretrain import Pretrainer
from robot_rl.runtime.training.rl import RLTrainer


def steps_to(rows: list[dict], target: float) -> int | None:
    for r in rows:
        if float(r["success_rate"]) >= target:
            return int(r["env_steps"])
    return None


def run_one(name: str, policy_dir: Path, critic_dir: Path | None, job: TrainJobConfig, out: Path,
            demos: list[str] | None = None, **changes) -> dict:
    import csv

    cfg = copy.deepcopy(job.rl)
    for key, value in changes.items():
        obj = cfg
        *path, last = key.split(".")
        for p in path:
            obj = getattr(obj, p)
        setattr(obj, last, value)
    env = copy.deepcopy(job.env)
    env.terminate_on_success = True
    run = out / name
    shutil.rmtree(run, ignore_errors=True)
    if cfg.algo == "chunk":
        trainer = ChunkRLTrainer(policy_dir, env, run, cfg, critic_dir=critic_dir, demos=demos, progress=False)
    else:
        trainer = RLTrainer(policy_dir, env, run, cfg, critic_dir=critic_dir, progress=False)
    start = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - start
    with (run / "metrics.csv").open() as f:
        metrics = list(csv.DictReader(f))
    with (run / "eval.csv").open() as f:
        evals = list(csv.DictReader(f))
    mean = lambda k: sum(float(r[k]) for r in metrics) / len(metrics)  # noqa: E731
    return {
        "algo": cfg.algo, "reward": cfg.reward.kind,
        "iterations": result["iterations"], "env_steps": result["env_steps"], "wall_s": round(wall, 1),
        "s_per_iteration": round(wall / max(result["iterations"], 1), 3),
        "rollout_s_per_iteration": round(mean("rollout_s"), 3), "update_s_per_iteration": round(mean("update_s"), 3),
        "success_curve": [(int(r["env_steps"]), float(r["success_rate"]), int(r["episodes"])) for r in evals],
        "success_after": float(evals[-1]["success_rate"]) if evals else None,
        "steps_to_target": steps_to(evals, TARGET),
        "steps_to_bc_plus_15": steps_to(evals, BC_PLUS_15) if BC_PLUS_15 is not None else None,
    }


class _PartialRuns(dict):
    """The runs finished so far, written to ``path`` (with the report's header) after each one."""

    def __init__(self, path: Path, header: dict) -> None:
        super().__init__()
        self.path, self.header = path, header

    def __setitem__(self, key: str, value: dict) -> None:
        super().__setitem__(key, value)
        self.path.write_text(json.dumps({**self.header, "runs": dict(self)}, indent=2))


TARGET = 0.8
BC_PLUS_15: float | None = None


def main() -> None:
    global TARGET, BC_PLUS_15
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", default="data/quickstart", help="a finished `robot-rl train` job folder")
    ap.add_argument("--config", default="configs/quickstart.yaml", help="the job's config")
    ap.add_argument("--iterations", type=int, default=None, help="RL iterations per run (default: the config's)")
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--eval-episodes", type=int, default=24)
    ap.add_argument("--target", type=float, default=0.8, help="success rate for 'env steps to target'")
    ap.add_argument("--skip", default="", help="comma-separated runs to skip: reinflow, dppo, sparse, finetune")
    args = ap.parse_args()
    TARGET = args.target
    job = load_config(TrainJobConfig, args.config, [f"--out={args.job}"])
    root = Path(args.job)
    for need in ("bc/policy", "critic/critic", "demos.zarr", "eval_before.json"):
        if not (root / need).exists():
            raise SystemExit(f"{root / need} is missing: run `robot-rl train {args.config} --out={root}` first")
    bc_success = json.loads((root / "eval_before.json").read_text())["success_rate"]
    BC_PLUS_15 = bc_success + 0.15
    job.rl.eval_every, job.rl.eval_episodes = args.eval_every, args.eval_episodes
    if args.iterations:
        job.rl.iterations = args.iterations
    skip = set(filter(None, args.skip.split(",")))
    out = root / "rl_compare"
    out.mkdir(exist_ok=True)
    report: dict = {"task": job.env.task, "iterations": job.rl.iterations, "num_envs": job.rl.num_envs,
                    "steps_per_iteration": job.rl.steps_per_iteration, "target_success": TARGET,
                    "bc_success": bc_success, "bc_plus_15": round(BC_PLUS_15, 4),
                    "eval_episodes": args.eval_episodes}
    kind = job.rl.reward.kind  # the job's own reward: critic, or critic + success (mix)
    critic, demos = root / "critic/critic", [str(root / "demos.zarr")]
    runs = _PartialRuns(out / "partial.json", report)  # each finished run is on disk if the benchmark is stopped
    runs[f"chunk_{kind}"] = run_one(f"chunk_{kind}", root / "bc/policy", critic, job, out, demos, algo="chunk")
    if "finetune" not in skip:  # the same learner with the progress critic fine-tuned on the run's episodes
        runs[f"chunk_{kind}_finetune"] = run_one(f"chunk_{kind}_finetune", root / "bc/policy", critic, job, out, demos,
                                                 algo="chunk", **{"progress_finetune.every": 2})
    if "sparse" not in skip:
        runs["chunk_sparse"] = run_one("chunk_sparse", root / "bc/policy", None, job, out, demos,
                                       **{"reward.kind": "sparse", "algo": "chunk"})
    if "reinflow" not in skip:
        runs[f"reinflow_{kind}"] = run_one(f"reinflow_{kind}", root / "bc/policy", critic, job, out,
                                           algo="reinflow")
    if "dppo" not in skip:
        bc_diffusion = root / "bc_diffusion"
        trainer = Pretrainer("diffusion", demos, bc_diffusion, job.pretrain,
                             resume=(bc_diffusion / "pretrain.json").is_file(), progress=False)
        if trainer.step < job.pretrain.steps:
            trainer.train()
        runs["dppo"] = run_one(f"dppo_{kind}", bc_diffusion / "policy", critic, job, out, algo="dppo")
    report["runs"] = dict(runs)
    chunk = runs[f"chunk_{kind}"]
    if f"reinflow_{kind}" in runs:
        r = runs[f"reinflow_{kind}"]
        report["chunk_vs_reinflow"] = {
            "success_after": {"chunk": chunk["success_after"], "reinflow": r["success_after"]},
            "env_steps": {"chunk": chunk["env_steps"], "reinflow": r["env_steps"]},
            "steps_to_bc_plus_15": {"chunk": chunk["steps_to_bc_plus_15"], "reinflow": r["steps_to_bc_plus_15"]},
            "success_after_ratio": round(chunk["success_after"] / r["success_after"], 3)
            if chunk["success_after"] and r["success_after"] else None,
        }
    if "dppo" in runs and f"reinflow_{kind}" in runs:
        r, d = runs[f"reinflow_{kind}"], runs["dppo"]
        report["reinflow_vs_dppo"] = {
            "s_per_iteration_ratio": round(r["s_per_iteration"] / d["s_per_iteration"], 3),
            "update_s_ratio": round(r["update_s_per_iteration"] / d["update_s_per_iteration"], 3),
            "success_after": {"reinflow": r["success_after"], "dppo": d["success_after"]},
            "denoising_steps": {"reinflow": job.rl.reinflow.denoising_steps, "dppo": job.rl.dppo.denoising_steps},
        }
    if f"chunk_{kind}_finetune" in runs:
        f = runs[f"chunk_{kind}_finetune"]
        report["progress_finetune"] = {
            "success_after": {"frozen_critic": chunk["success_after"], "finetuned_critic": f["success_after"]},
            "steps_to_target": {"frozen_critic": chunk["steps_to_target"], "finetuned_critic": f["steps_to_target"]},
        }
    if "chunk_sparse" in runs:
        c, s = chunk["steps_to_target"], runs["chunk_sparse"]["steps_to_target"]
        report["critic_vs_sparse"] = {
            "learner": "chunk",
            "steps_to_target": {"critic": c, "sparse": s},
            "ratio": round(c / s, 3) if c and s else None,
            "note": None if c and s else "a run that never reached the target within its budget has None",
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
