"""Training pairs for the progress critic, labelled from an episode store.

Frames of an episode are its T observations plus the final one (T+1 frames). Labels:
- done: frame k is done when the env reported success after action k-1 (``steps/success``), so the
  labels are the task's own success test, not a guess;
- progress: in a successful episode with first done frame t*, p_k = min(k / t*, 1); failed episodes
  have no progress labels;
- pairs (i, j) with several skips, in both directions, target p_j - p_i (so regress is learned);
  stagnation pairs (i, i) target 0; a mismatched instruction (another task's, or a distractor) targets
  0 progress and not done; failed episodes give done = 0;
- with ``label_failures`` every frame of a failed episode (a policy's own failed rollout, a near miss)
  is labelled progress 0, so its pairs target delta 0: where a failed and a successful episode pass
  through alike-looking frames the critic learns their average, the progress one can expect from there,
  and a failed episode ends low instead of wherever its last frames resemble a success.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_rl.core.errors import ConfigError
from robot_rl.core.schema import Episode
from robot_rl.replay.store import EpisodeStore

DISTRACTORS = ["open the top drawer", "pour water into the cup", "wipe the table with the sponge",
               "press the red button", "fold the towel"]
SKIPS = (1, 2, 4, 8, 16)


@dataclass
class EpisodeFrames:
    frames: dict[str, np.ndarray]  # camera -> (T+1, H, W, 3)
    done: np.ndarray  # (T+1,) bool
    progress: np.ndarray | None  # (T+1,) in [0, 1]; None for a failed episode
    task: str
    instruction: str

    @property
    def first_done(self) -> int | None:
        hits = np.flatnonzero(self.done)
        return int(hits[0]) if hits.size else None


def label_episode(success_steps: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(done per frame, progress per frame or None) from the per-step success flags of one episode."""
    done = np.concatenate([[False], np.asarray(success_steps, dtype=bool)])
    hits = np.flatnonzero(done)
    if not hits.size:
        return done, None
    t_star = int(hits[0])
    return done, np.minimum(np.arange(len(done)) / t_star, 1.0).astype(np.float32)


def episode_frames(ep: Episode, cameras: list[str]) -> EpisodeFrames:
    """The critic's view of one in-memory episode (its frames and its outcome labels)."""
    missing = [c for c in cameras if f"images/{c}" not in ep.obs]
    if missing:
        raise ConfigError(f"the episode has no images of camera(s) {missing}")
    frames = {c: np.concatenate([ep.obs[f"images/{c}"], ep.final_obs[f"images/{c}"][None]]) for c in cameras}
    done, progress = label_episode(ep.success)
    return EpisodeFrames(frames, done, progress, ep.meta.task, ep.meta.instruction)


def load_episodes(store: EpisodeStore, cameras: list[str], indices: list[int] | None = None) -> list[EpisodeFrames]:
    missing = [c for c in cameras if f"obs/images/{c}" not in store.step_keys]
    if missing:
        raise ConfigError(f"{store.path} has no images of camera(s) {missing}")
    out = []
    for i in range(store.num_episodes) if indices is None else indices:
        data = store.read_episode(i, [f"obs/images/{c}" for c in cameras] + ["success"])
        final = store.final_obs(i)
        frames = {c: np.concatenate([data[f"obs/images/{c}"], final[f"images/{c}"][None]]) for c in cameras}
        done, progress = label_episode(data["success"])
        meta = store.episode_meta(i)
        out.append(EpisodeFrames(frames, done, progress, meta.task, meta.instruction))
    return out


@dataclass
class PairBatch:
    frames_a: dict[str, np.ndarray]
    frames_b: dict[str, np.ndarray]
    instructions: list[str]
    delta: np.ndarray  # target delta
    delta_mask: np.ndarray  # whether the delta target is known
    value_a: np.ndarray
    value_b: np.ndarray
    value_mask: np.ndarray  # whether value targets are known
    done_b: np.ndarray
    kind: list[str]


class PairSampler:
    """Balanced pairs: progress (both directions, several skips), stagnation, mismatch, failed."""

    KINDS = ("progress", "stagnation", "mismatch", "failed")

    def __init__(self, episodes: list[EpisodeFrames], weights=(0.5, 0.1, 0.2, 0.2), seed: int = 0,
                 label_failures: bool = True) -> None:
        self.label_failures = label_failures
        self.successes = [e for e in episodes if e.progress is not None]
        self.failures = [e for e in episodes if e.progress is None]
        if not self.successes:
            raise ConfigError("the critic needs successful episodes to learn progress from")
        self.cameras = list(episodes[0].frames)
        weights = np.array(weights, dtype=float)
        if not self.failures:
            weights[3] = 0.0
        self.weights = weights / weights.sum()
        instructions = sorted({e.instruction for e in episodes})
        self.other = {i: [x for x in instructions + DISTRACTORS if x != i] for i in instructions}
        self.rng = np.random.default_rng(seed)

    def _pair_indices(self, length: int, done_frame: int | None, failed: bool = False) -> tuple[int, int]:
        rng = self.rng
        skip = int(rng.choice(SKIPS))
        i = int(rng.integers(0, length))
        if done_frame is not None and rng.random() < 0.25:  # balance done labels: end on a done frame
            j = int(rng.integers(done_frame, length))
        elif failed and rng.random() < 0.25:  # a failure's last frames: the near misses the done head must reject
            j = int(rng.integers(max(0, length - 4), length))
        else:
            j = int(np.clip(i + skip * rng.choice([-1, 1]), 0, length - 1))
        return i, j

    def sample(self, batch_size: int) -> PairBatch:
        rng = self.rng
        cams = {c: ([], []) for c in self.cameras}
        rows: dict[str, list] = {k: [] for k in ("instr", "delta", "dmask", "va", "vb", "vmask", "done", "kind")}
        for kind in rng.choice(self.KINDS, size=batch_size, p=self.weights):
            pool = self.failures if kind == "failed" else self.successes
            if kind == "mismatch" and self.failures and rng.random() < 0.5:
                pool = self.failures
            ep = pool[rng.integers(len(pool))]
            length = len(ep.done)
            i, j = self._pair_indices(length, ep.first_done, failed=ep.progress is None)
            if kind == "stagnation":
                j = i
            instr, delta, dmask, va, vb, vmask, done = ep.instruction, 0.0, True, 0.0, 0.0, False, bool(ep.done[j])
            if ep.progress is not None:
                va, vb, vmask = float(ep.progress[i]), float(ep.progress[j]), True
                delta = vb - va
            elif self.label_failures:
                vmask = True  # progress 0 at both frames, delta 0
            else:
                dmask = kind == "stagnation"  # a failed episode's progress is unknown, but i == i is 0
            if kind == "mismatch":
                instr = self.other[ep.instruction][rng.integers(len(self.other[ep.instruction]))]
                delta, dmask, va, vb, vmask, done = 0.0, True, 0.0, 0.0, True, False
            for c in self.cameras:
                cams[c][0].append(ep.frames[c][i])
                cams[c][1].append(ep.frames[c][j])
            for key, value in zip(rows, (instr, delta, dmask, va, vb, vmask, done, kind)):
                rows[key].append(value)
        return PairBatch(
            frames_a={c: np.stack(a) for c, (a, _) in cams.items()},
            frames_b={c: np.stack(b) for c, (_, b) in cams.items()},
            instructions=rows["instr"], delta=np.array(rows["delta"], np.float32),
            delta_mask=np.array(rows["dmask"]), value_a=np.array(rows["va"], np.float32),
            value_b=np.array(rows["vb"], np.float32), value_mask=np.array(rows["vmask"]),
            done_b=np.array(rows["done"]), kind=rows["kind"],
        )
