"""How much a run leaned on its helpers: takeover rate, steps to the first takeover, success with and without
help; and the plot of them over a run.

An episode's steps split three ways: the protocol's help that opens it (a demo replayed, the operator
guiding; a restored start counts as help with no steps), the operator's takeovers after the policy first
acted, and the policy's own steps.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class EpisodeHelp:
    """One finished episode, as the metrics see it."""

    steps: int
    success: bool
    helped: bool  # the protocol opened it (replay, restore or guidance)
    takeover_steps: int
    first_takeover: int | None  # the step of the first takeover (None: none)

    @classmethod
    def of(cls, interventions: np.ndarray, success: bool, helped: bool) -> EpisodeHelp:
        flags = np.asarray(interventions, bool)
        own = np.flatnonzero(~flags)
        later = flags.copy()
        later[: own[0] if len(own) else len(flags)] = False  # the opening help is not a takeover
        hits = np.flatnonzero(later)
        return cls(steps=len(flags), success=bool(success), helped=bool(helped) or (len(flags) > 0 and flags[0]),
                   takeover_steps=int(later.sum()), first_takeover=int(hits[0]) if len(hits) else None)


def help_metrics(episodes: list[EpisodeHelp]) -> dict[str, float]:
    """Per round: ``intervention_rate`` (share of steps the operator took over), ``takeover_episodes`` (share
    of episodes with a takeover), ``steps_to_first_intervention`` (mean, over those), ``helped_episodes``,
    ``success_helped`` / ``success_unhelped`` (helped: opened by the protocol or taken over)."""
    nan = float("nan")
    if not episodes:
        return {k: nan for k in ("intervention_rate", "takeover_episodes", "steps_to_first_intervention",
                                 "helped_episodes", "success_helped", "success_unhelped")}
    steps = sum(e.steps for e in episodes)
    firsts = [e.first_takeover for e in episodes if e.first_takeover is not None]
    helped = [e.helped or e.takeover_steps > 0 for e in episodes]
    wins_h = [e.success for e, h in zip(episodes, helped) if h]
    wins_u = [e.success for e, h in zip(episodes, helped) if not h]
    return {"intervention_rate": sum(e.takeover_steps for e in episodes) / max(steps, 1),
            "takeover_episodes": float(np.mean([e.takeover_steps > 0 for e in episodes])),
            "steps_to_first_intervention": float(np.mean(firsts)) if firsts else nan,
            "helped_episodes": float(np.mean([e.helped for e in episodes])),
            "success_helped": float(np.mean(wins_h)) if wins_h else nan,
            "success_unhelped": float(np.mean(wins_u)) if wins_u else nan}


def plot_help(run: Path, out: Path | None = None) -> Path | None:
    """``interventions.png`` in the run folder: intervention rate and training success per round (from
    ``metrics.csv``), held-out success (``eval.csv``) against env steps. None if there is nothing to plot."""
    run = Path(run)
    rows = _read(run / "metrics.csv")
    if not rows or "intervention_rate" not in rows[0]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def col(rs, key):
        return [float(r[key]) if r.get(key) not in (None, "") else math.nan for r in rs]

    steps = col(rows, "env_steps")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, col(rows, "intervention_rate"), "o-", color="tab:red", label="intervention rate (steps)")
    ax.plot(steps, col(rows, "train_success"), "s-", color="tab:blue", alpha=0.6, label="training success")
    evals = _read(run / "eval.csv")
    if evals:
        ax.plot(col(evals, "env_steps"), col(evals, "success_rate"), "D-", color="tab:green", label="held-out success")
    ax.set_xlabel("env steps")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="center right")
    ax.set_title("Human in the loop: help falls as success rises")
    out = Path(out) if out is not None else run / "interventions.png"
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _read(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
