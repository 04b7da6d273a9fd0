"""Critic metrics: value-order correlation (VOC) forward and reversed, response to a mismatched
instruction, done precision/recall/F1, and latency per pair."""

from __future__ import annotations

import time

import numpy as np
import torch

from robot_rl.critic.dataset import DISTRACTORS, EpisodeFrames
from robot_rl.critic.model import ProgressCritic
from robot_rl.critic.reward import CriticReward


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties (0 where either side is constant)."""
    def ranks(a):
        a = np.asarray(a, dtype=float)
        order = np.argsort(a, kind="mergesort")
        r = np.empty(len(a))
        r[order] = np.arange(len(a))
        for value in np.unique(a):  # average ranks of ties
            tie = a == value
            r[tie] = r[tie].mean()
        return r
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


@torch.no_grad()
def pair_deltas(critic: ProgressCritic, frames: dict[str, np.ndarray], order: np.ndarray, instruction: str,
                batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Deltas and done probabilities of consecutive pairs (order[k], order[k+1])."""
    deltas, dones = [], []
    for s in range(0, len(order) - 1, batch):
        a, b = order[s : s + batch], order[s + 1 : s + 1 + batch]
        a = a[: len(b)]
        out = critic({c: frames[c][a] for c in frames}, {c: frames[c][b] for c in frames}, [instruction] * len(a))
        deltas.append(out.delta.cpu().numpy())
        dones.append(out.done.cpu().numpy())
    return np.concatenate(deltas), np.concatenate(dones)


def value_curve(deltas: np.ndarray) -> np.ndarray:
    """The value of each frame accumulated from consecutive deltas, starting at 0."""
    return np.concatenate([[0.0], np.cumsum(deltas)])


@torch.no_grad()
def evaluate_critic(critic: ProgressCritic, episodes: list[EpisodeFrames], seed: int = 0) -> dict:
    critic.eval()
    rng = np.random.default_rng(seed)
    instructions = sorted({e.instruction for e in episodes})
    voc, voc_rev, mismatch = [], [], []
    done_true, done_pred = [], []
    for ep in episodes:
        n = len(ep.done)
        frames = ep.frames
        if ep.progress is not None and ep.first_done and ep.first_done >= 2:
            span = np.arange(ep.first_done + 1)  # the way to done
            deltas, _ = pair_deltas(critic, frames, span, ep.instruction)
            voc.append(spearman(value_curve(deltas), span))
            rev_deltas, _ = pair_deltas(critic, frames, span[::-1].copy(), ep.instruction)
            voc_rev.append(spearman(value_curve(rev_deltas), span))
            others = [x for x in instructions + DISTRACTORS if x != ep.instruction]
            wrong = others[rng.integers(len(others))]
            mis, _ = pair_deltas(critic, frames, span, wrong)
            mismatch.append(np.abs(mis).mean())
        # done of every frame but the first (each is the B of a consecutive pair)
        _, dones = pair_deltas(critic, frames, np.arange(n), ep.instruction)
        done_pred.append(dones > critic.config.done_threshold)
        done_true.append(ep.done[1:])
    pred, true = np.concatenate(done_pred), np.concatenate(done_true)
    tp, fp, fn = int((pred & true).sum()), int((pred & ~true).sum()), int((~pred & true).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "episodes": len(episodes),
        "voc": float(np.mean(voc)) if voc else float("nan"),
        "voc_reversed": float(np.mean(voc_rev)) if voc_rev else float("nan"),
        "mismatch_abs_delta": float(np.mean(mismatch)) if mismatch else float("nan"),
        "done_precision": precision, "done_recall": recall, "done_f1": f1,
        "latency_ms_per_pair": pair_latency_ms(critic, episodes[0]),
    }


@torch.no_grad()
def pair_latency_ms(critic: ProgressCritic, episode: EpisodeFrames, repeats: int = 10) -> float:
    frames = {c: v[:1] for c, v in episode.frames.items()}
    critic(frames, frames, [episode.instruction])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        critic(frames, frames, [episode.instruction])
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def auroc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half (the Mann-Whitney U statistic)."""
    pos, neg = np.asarray(scores_pos, float), np.asarray(scores_neg, float)
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


@torch.no_grad()
def evaluate_on_rollouts(critic: ProgressCritic, episodes: list[EpisodeFrames]) -> dict:
    """How well the critic ranks a policy's own episodes by outcome (the env's success, or an operator's
    label): AUROC of the final value (the summed deltas from the first frame to the last) separating
    successes from failures; the share of failed episodes on which the done head fires on any frame; and
    a failed episode's mean return (its final value) relative to a successful one's."""
    critic.eval()
    final, fired, success = [], [], []
    for ep in episodes:
        # a pair's delta is the difference of its frames' values: one backbone pass per frame suffices
        values, dones = CriticReward(critic).score_frames(ep.frames, ep.instruction)
        final.append(float(values[-1] - values[0]))
        fired.append(bool((dones[1:] > critic.config.done_threshold).any()))
        success.append(ep.progress is not None)
    final_a, fired_a, success_a = np.array(final), np.array(fired), np.array(success)
    succ_return = float(final_a[success_a].mean()) if success_a.any() else float("nan")
    fail_return = float(final_a[~success_a].mean()) if (~success_a).any() else float("nan")
    return {
        "rollouts": len(episodes), "successes": int(success_a.sum()), "failures": int((~success_a).sum()),
        "final_value_auroc": auroc(final_a[success_a], final_a[~success_a]),
        "done_fpr_failed": float(fired_a[~success_a].mean()) if (~success_a).any() else float("nan"),
        "done_tpr_success": float(fired_a[success_a].mean()) if success_a.any() else float("nan"),
        "mean_return_success": succ_return, "mean_return_failed": fail_return,
        "failed_return_ratio": fail_return / succ_return if succ_return and np.isfinite(succ_return) else float("nan"),
    }
