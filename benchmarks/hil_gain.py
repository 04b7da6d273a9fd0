"""What human help buys in env steps: the chunk learner from the same cloned policy, critic and demos, with the
same seeds and budget, without help, with a simulated operator who takes over, and with each mode of the graded
protocol; prints JSON.

    python benchmarks/hil_gain.py --job data/quickstart [--iterations 16] [--eval-every 2] [--arms none,operator]

``steps_to_80``: env steps at the first held-out evaluation (``--eval-episodes``, the same seeds for every
arm) whose success reaches ``--target``; None if the budget ran out first (its ratio is then a bound).
``ratio_steps_to_80``: steps without help / steps with the operator (VLAC's anchor: 1.5). Every arm's whole
curve is in ``arms.<name>.curve``; ``intervention_rate``: the operator's takeover steps over all the run's
steps, and per half of the run (it should fall as success rises). Protocol arms give help to half of the
episodes, k = 20 steps x (1 - the run's recent success). Env steps count every step executed (replayed demo
steps and the operator's too); a restored state (return-and-explore) costs none in sim.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from robot_rl.config import load_config
from robot_rl.hil.metrics import EpisodeHelp, help_metrics
from robot_rl.hil.protocol import HILConfig, OperatorConfig, ProtocolConfig
from robot_rl.replay.store import EpisodeStore
from robot_rl.runtime.training.job import TrainJobConfig
from robot_rl.runtime.training.offpolicy import ChunkRLTrainer

ARMS = ("none", "operator", "demo_replay", "return_explore", "human_guided")


def arm_config(name: str, help_steps: int) -> HILConfig:
    if name == "none":
        return HILConfig()
    if name == "operator":
        return HILConfig(operator=OperatorConfig(kind="simulated"))
    protocol = ProtocolConfig(mode=name, help_steps=help_steps, fraction=0.5)
    if name == "human_guided":  # the operator guides the start and never takes over later: the protocol alone
        return HILConfig(operator=OperatorConfig(kind="simulated", max_takeovers=0), protocol=protocol)
    return HILConfig(protocol=protocol)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def run_arm(name: str, job: TrainJobConfig, root: Path, out: Path, target: float, help_steps: int) -> dict:
    cfg = copy.deepcopy(job.rl)
    cfg.hil = arm_config(name, help_steps)
    env = copy.deepcopy(job.env)
    env.terminate_on_success = True
    shutil.rmtree(out, ignore_errors=True)
    trainer = ChunkRLTrainer(root / "bc/policy", env, out, cfg, critic_dir=root / "critic/critic",
                             demos=[str(root / "demos.zarr")], progress=False)
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the trainer's progress lines: stdout is this script's JSON
        result = trainer.train()
    curve = [{"env_steps": int(r["env_steps"]), "success": float(r["success_rate"]),
              "ci95": [float(r["ci_low"]), float(r["ci_high"])]} for r in _rows(out / "eval.csv")]
    reached = next((c["env_steps"] for c in curve if c["success"] >= target), None)
    report = {"steps_to_80": reached, "env_steps": result["env_steps"], "curve": curve,
              "final_success": curve[-1]["success"], "final_ci95": curve[-1]["ci95"],
              "wall_s": round(time.perf_counter() - start, 1)}
    with EpisodeStore.open(out / "online.zarr") as store:
        eps = [store.read_episode(i, ["intervention", "success"]) for i in range(store.num_episodes)]
    helps = [EpisodeHelp.of(e["intervention"], bool(np.any(e["success"])), helped=False) for e in eps]
    half = len(helps) // 2
    report["intervention_rate"] = help_metrics(helps)["intervention_rate"] if helps else None
    report["intervention_rate_halves"] = [help_metrics(helps[:half])["intervention_rate"],
                                          help_metrics(helps[half:])["intervention_rate"]]
    report["train_success_halves"] = [float(np.mean([h.success for h in helps[:half]])),
                                      float(np.mean([h.success for h in helps[half:]]))]
    report["helped_step_share"] = float(np.mean(np.concatenate([e["intervention"] for e in eps])))
    return report


def ratio(base: dict, other: dict) -> dict:
    """steps without help / steps with it; a bound where one side never reached the target."""
    b, o = base["steps_to_80"], other["steps_to_80"]
    if b is not None and o is not None:
        return {"value": round(b / o, 3), "bound": None}
    if b is None and o is not None:  # without help it never got there: the ratio is at least budget / o
        return {"value": None, "bound": f">= {round(base['env_steps'] / o, 3)}"}
    if b is not None:
        return {"value": None, "bound": f"<= {round(b / other['env_steps'], 3)}"}
    return {"value": None, "bound": "neither reached the target"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", default="data/quickstart", help="a finished `robot-rl train` job folder")
    ap.add_argument("--config", default="configs/quickstart.yaml", help="the job's config")
    ap.add_argument("--iterations", type=int, default=None, help="rounds of env steps (default: the config's)")
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument("--eval-episodes", type=int, default=48)
    ap.add_argument("--target", type=float, default=0.8)
    ap.add_argument("--help-steps", type=int, default=20, help="the protocol's k while the run fails")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--tag", default="default", help="runs go to JOB/hil_gain/TAG/<arm>")
    ap.add_argument("--set", action="append", default=[], metavar="--rl.X=V",
                    help="a job config override for every arm (e.g. --set=--rl.chunk.base_bc=0.5)")
    args = ap.parse_args()
    job = load_config(TrainJobConfig, args.config, [f"--out={args.job}", *args.set])
    root = Path(args.job)
    for need in ("bc/policy", "critic/critic", "demos.zarr"):
        if not (root / need).exists():
            raise SystemExit(f"{root / need} is missing: run `robot-rl train {args.config} --out={root}` first")
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; known: {', '.join(ARMS)}")
    if args.iterations:
        job.rl.iterations = args.iterations
    job.rl.eval_every, job.rl.eval_episodes = args.eval_every, args.eval_episodes
    report: dict = {"task": job.env.task, "iterations": job.rl.iterations, "num_envs": job.rl.num_envs,
                    "target": args.target, "eval_episodes": args.eval_episodes, "overrides": args.set, "arms": {}}
    partial = root / "hil_gain" / args.tag / "partial.json"
    partial.parent.mkdir(parents=True, exist_ok=True)
    for name in arms:
        report["arms"][name] = run_arm(name, job, root, root / "hil_gain" / args.tag / name, args.target,
                                       args.help_steps)
        partial.write_text(json.dumps(report, indent=2))
    runs = report["arms"]
    if "none" in runs:
        if "operator" in runs:
            r = ratio(runs["none"], runs["operator"])
            report["ratio_steps_to_80"] = r["value"] if r["value"] is not None else r["bound"]
            report["intervention_rate"] = runs["operator"]["intervention_rate"]
        report["protocol"] = {m: ratio(runs["none"], runs[m]) for m in ("demo_replay", "return_explore",
                                                                        "human_guided") if m in runs}
    partial.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
