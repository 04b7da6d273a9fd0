"""A policy over every task of a benchmark suite (LIBERO's ``libero_spatial`` ...): one row per task with its
success rate and Wilson interval, written as CSV, JSON and a bar plot."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

from robot_rl.config import EnvConfig
from robot_rl.envs import get_task
from robot_rl.policy import Policy
from robot_rl.runtime.training.evaluate import evaluate, wilson_interval


def evaluate_suite(policy: Policy, base: EnvConfig, suite: str, episodes: int, out: str | Path, seed: int,
                   steps: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate ``policy`` on each task of ``suite`` for ``episodes`` episodes (LIBERO: init states
    ``seed % 50`` onwards) and write ``suite_<suite>.{csv,json,png}`` into ``out``."""
    from robot_rl.envs.libero.env import suite_tasks  # names an unknown suite, and LIBERO missing, in one line

    tasks = suite_tasks(suite)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for task in tasks:
        result = evaluate(policy, dataclasses.replace(base, task=task), episodes, seed=seed, steps=steps,
                          progress=progress)
        rows.append({"task": task, "instruction": get_task(task).instruction,
                     "success_rate": result["success_rate"], "ci_low": result["success_ci95"][0],
                     "ci_high": result["success_ci95"][1], "episodes": result["episodes"],
                     "mean_length": result["mean_length"]})
    successes = sum(round(r["success_rate"] * r["episodes"]) for r in rows)
    total = sum(r["episodes"] for r in rows)
    low, high = wilson_interval(successes, total)
    summary = {"suite": suite, "tasks": len(rows), "episodes_per_task": episodes, "first_seed": seed,
               "success_rate": successes / max(total, 1), "success_ci95": [low, high], "per_task": rows}
    stem = out / f"suite_{suite}"
    with stem.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    _plot(rows, suite, stem.with_suffix(".png"))
    summary.update(csv=str(stem.with_suffix(".csv")), json=str(stem.with_suffix(".json")),
                   plot=str(stem.with_suffix(".png")))
    return summary


def _plot(rows: list[dict], suite: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["task"].split("/")[-1] for r in rows]
    rates = [r["success_rate"] for r in rows]
    err = [[r["success_rate"] - r["ci_low"] for r in rows], [r["ci_high"] - r["success_rate"] for r in rows]]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(rows) + 1.5), 3.2))
    ax.bar(names, rates, yerr=err, capsize=2, color="tab:blue")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(f"{suite} task")
    ax.set_ylabel("success (95% CI)")
    ax.set_title(f"{suite}: {rows[0]['episodes']} episode(s) per task")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
