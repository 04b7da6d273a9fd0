"""The off-policy learner's replay: every step of every episode (demos and online) as frozen-policy features,
its normalised action, its reward and the base policy's candidate chunks, in memory.

All of it is derived from the episode stores (the source of truth) and the frozen base policy and progress
critic: a resumed run rebuilds it from the stores. A sample at step t is the chunk decision "from the
observation at t, execute actions t .. t+h-1" (any t: the dynamics do not care which decision chose them),
with its per-step rewards, which of its steps ran, the features and candidates after it, and whether the
episode terminated inside it.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robot_rl.algos.rewards import RewardConfig, takeover_steps
from robot_rl.core.schema import Episode
from robot_rl.critic.reward import CriticReward
from robot_rl.policy import Policy


class _Growable:
    """A numpy array that grows along axis 0 by doubling."""

    def __init__(self, shape: tuple[int, ...], dtype) -> None:
        self.data = np.zeros((1024, *shape), dtype)
        self.n = 0

    def extend(self, rows: np.ndarray) -> None:
        need = self.n + len(rows)
        if need > len(self.data):
            grown = np.zeros((max(need, 2 * len(self.data)), *self.data.shape[1:]), self.data.dtype)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        self.data[self.n : need] = rows
        self.n = need

    @property
    def view(self) -> np.ndarray:
        return self.data[: self.n]


@dataclass
class Derived:
    """What the replay keeps of one episode."""

    features: np.ndarray  # (T, F)
    actions: np.ndarray  # (T, A) normalised
    rewards: np.ndarray  # (T,)
    candidates: np.ndarray  # (T, N, h*A) normalised executed parts of base-policy chunks
    final_features: np.ndarray  # (F,)
    final_candidates: np.ndarray  # (N, h*A)
    terminated: bool
    success: bool
    interventions: np.ndarray | None = None  # (T,) bool: an operator (or the protocol's helper) acted

    def __post_init__(self) -> None:
        if self.interventions is None:
            self.interventions = np.zeros(len(self.actions), bool)


def _actions_digest(ep: Episode) -> int:
    return zlib.crc32(np.ascontiguousarray(ep.action, np.float32).tobytes())


def save_derived(path: Path, d: Derived, ep: Episode, key: str) -> None:
    """Write ``d`` (computed from ``ep`` by a featurizer described by ``key``) where a learner will look for it,
    written then renamed. It names the episode by its actions' digest, so a file left by an actor killed before
    its commit is never taken for the episode that gets that index later."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, features=d.features, actions=d.actions, rewards=d.rewards, candidates=d.candidates,
             final_features=d.final_features, final_candidates=d.final_candidates,
             flags=np.array([d.terminated, d.success]), interventions=d.interventions,
             digest=np.array(_actions_digest(ep), np.int64), key=np.array(key))
    os.replace(tmp, path)


def load_derived(path: Path, ep: Episode, key: str) -> Derived | None:
    """What :func:`save_derived` wrote for ``ep`` with the same featurizer; None if there is none, or it was
    written for another episode, another featurizer or is unreadable (the caller computes it then)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["key"]) != key or int(f["digest"]) != _actions_digest(ep) or len(f["actions"]) != len(ep):
                return None
            terminated, success = (bool(x) for x in f["flags"])
            interventions = f["interventions"] if "interventions" in f.files else np.asarray(ep.intervention, bool)
            return Derived(features=f["features"], actions=f["actions"], rewards=f["rewards"],
                           candidates=f["candidates"], final_features=f["final_features"],
                           final_candidates=f["final_candidates"], terminated=terminated, success=success,
                           interventions=interventions)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def until_first_success(ep: Episode) -> Episode:
    """A demo recorded past its first success (done frames for the critic) ends there, terminated, as an
    online episode does."""
    hits = np.flatnonzero(ep.success)
    if not len(hits) or hits[0] == len(ep) - 1:
        return ep
    s = int(hits[0])
    final = {k: v[s + 1] for k, v in ep.obs.items()}
    term = np.zeros(s + 1, bool)
    term[-1] = True
    return Episode(obs={k: v[: s + 1] for k, v in ep.obs.items()}, action=ep.action[: s + 1],
                   reward=ep.reward[: s + 1], terminated=term, truncated=np.zeros(s + 1, bool),
                   success=ep.success[: s + 1], intervention=ep.intervention[: s + 1],
                   policy_version=ep.policy_version[: s + 1], final_obs=final, meta=ep.meta)


class ChunkFeaturizer:
    """Episode -> ``Derived``, with the frozen policy (features, candidates) and critic (dense rewards)."""

    def __init__(self, policy: Policy, reward: RewardConfig, scorer: CriticReward | None, candidates: int,
                 instruction: str, batch_size: int = 256) -> None:
        self.policy, self.reward, self.scorer = policy, reward, scorer
        self.n, self.instruction, self.batch_size = candidates, instruction, batch_size
        pc = policy.config
        self.h, self.exec_dim = pc.n_action_steps, pc.n_action_steps * pc.features.action_dim

    def windows(self, ep: Episode) -> dict[str, Any]:
        """Policy batches for the T steps and the final observation (T + 1 windows of n_obs_steps)."""
        n = self.policy.config.n_obs_steps
        out: dict[str, Any] = {}
        for key, frames in ep.obs.items():
            seq = np.concatenate([frames, ep.final_obs[key][None]])
            idx = np.arange(len(seq))[:, None] + np.arange(-n + 1, 1)[None]
            out[f"obs/{key}"] = seq[np.clip(idx, 0, None)]
        out["instruction"] = [self.instruction] * (len(ep) + 1)
        return out

    @torch.no_grad()
    def features(self, batch: dict[str, Any]) -> torch.Tensor:
        rows = len(batch["instruction"])
        parts = []
        for s in range(0, rows, self.batch_size):
            sub = {k: (v[s : s + self.batch_size]) for k, v in batch.items()}
            parts.append(self.policy.encode(sub))
        return torch.cat(parts)

    @torch.no_grad()
    def candidates(self, cond: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """N base-policy chunks per state from N(0, I) noise: the executed parts (B, N, h*A)."""
        rep = cond.repeat_interleave(self.n, dim=0)
        noise = torch.randn(rep.shape[0], self.policy.chunk_dim, generator=generator)
        out = []
        for s in range(0, rep.shape[0], self.batch_size * 4):
            out.append(self.policy.decode_noise(rep[s : s + self.batch_size * 4], noise[s : s + self.batch_size * 4]))
        return torch.cat(out)[:, : self.exec_dim].reshape(cond.shape[0], self.n, -1)

    def step_rewards(self, ep: Episode) -> np.ndarray:
        r = np.zeros(len(ep), np.float32)
        if self.reward.kind in ("sparse", "mix"):
            hits = np.flatnonzero(ep.success)
            if len(hits):
                r[hits[0]] += self.reward.success_reward
        if self.reward.kind in ("critic", "mix"):
            frames = {c: np.concatenate([ep.obs[f"images/{c}"], ep.final_obs[f"images/{c}"][None]])
                      for c in self.scorer.critic.config.cameras}
            progress, _ = self.scorer.score_frames(frames, self.instruction)
            r += self.reward.critic_weight * np.diff(progress).astype(np.float32)
        if self.reward.takeover_penalty:
            r[takeover_steps(ep.intervention)] -= self.reward.takeover_penalty
        return r

    def __call__(self, ep: Episode, seed: int) -> Derived:
        self.policy.eval()
        cond = self.features(self.windows(ep))
        cands = self.candidates(cond, torch.Generator().manual_seed(seed))
        actions = self.policy.action_norm(torch.as_tensor(ep.action, dtype=torch.float32)).numpy()
        return Derived(features=cond[:-1].numpy(), actions=actions, rewards=self.step_rewards(ep),
                       candidates=cands[:-1].numpy(), final_features=cond[-1].numpy(),
                       final_candidates=cands[-1].numpy(), terminated=bool(ep.terminated[-1]),
                       success=bool(ep.success.any()), interventions=np.asarray(ep.intervention, bool))


def _draw(demo_rows: np.ndarray, online_rows: np.ndarray, batch: int, demo_fraction: float,
          rng: np.random.Generator) -> np.ndarray:
    """``batch`` rows, ``demo_fraction`` of them demo rows (all from one side while the other is empty)."""
    n_demo = batch if not len(online_rows) else (0 if not len(demo_rows) else int(round(batch * demo_fraction)))
    return np.concatenate([rng.choice(demo_rows, n_demo) if n_demo else np.zeros(0, np.int64),
                           rng.choice(online_rows, batch - n_demo) if batch - n_demo else np.zeros(0, np.int64)])


class ChunkReplay:
    """Steps of demo and online episodes; samples chunk decisions with a fixed demo fraction. Steps an operator
    drove (interventions) are drawn in both parts, as HIL-SERL keeps them in its demo and its online buffer."""

    def __init__(self, feature_dim: int, action_dim: int, horizon: int, candidates: int, gamma: float = 0.99,
                 full_horizon: int | None = None) -> None:
        self.h, self.a, self.gamma = horizon, action_dim, gamma
        self.full_h = full_horizon or horizon  # the policy's whole chunk (what noise inversion needs)
        self.intervened = _Growable((), bool)
        self.returns = _Growable((), np.float32)
        self.features = _Growable((feature_dim,), np.float32)
        self.actions = _Growable((action_dim,), np.float32)
        self.rewards = _Growable((), np.float32)
        self.cands = _Growable((candidates, horizon * action_dim), np.float32)
        self.episode_of = _Growable((), np.int64)
        self.source_demo = _Growable((), bool)
        self.ep_end: list[int] = []
        self.ep_final_features: list[np.ndarray] = []
        self.ep_final_cands: list[np.ndarray] = []
        self.ep_terminated: list[bool] = []
        self.ep_success: list[bool] = []
        self.ep_demo: list[bool] = []
        self._index: dict[bool, np.ndarray] | None = None
        self._success_index: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, d: Derived, demo: bool) -> None:
        t = len(d.actions)
        ep = len(self.ep_end)
        self.features.extend(d.features)
        self.actions.extend(d.actions)
        self.rewards.extend(d.rewards)
        ret, acc = np.zeros(t, np.float32), 0.0
        for k in range(t - 1, -1, -1):  # the discounted return-to-go of every step (what happened after it)
            acc = float(d.rewards[k]) + self.gamma * acc
            ret[k] = acc
        self.returns.extend(ret)
        self.cands.extend(d.candidates)
        self.episode_of.extend(np.full(t, ep, np.int64))
        self.source_demo.extend(np.full(t, demo))
        self.intervened.extend(np.asarray(d.interventions, bool) & (not demo))
        self.ep_end.append(self.actions.n)
        self.ep_final_features.append(d.final_features)
        self.ep_final_cands.append(d.final_candidates)
        self.ep_terminated.append(d.terminated)
        self.ep_success.append(d.success)
        self.ep_demo.append(demo)
        self._index = self._success_index = None

    @property
    def num_steps(self) -> dict[str, int]:
        demo = int(self.source_demo.view.sum())
        return {"demo": demo, "online": self.actions.n - demo, "intervention": int(self.intervened.view.sum())}

    def _rows(self, demo: bool) -> np.ndarray:
        """The rows of the demo part (the demos and every online intervention step) or the online part."""
        if self._index is None:
            src = self.source_demo.view
            self._index = {True: np.flatnonzero(src | self.intervened.view), False: np.flatnonzero(~src)}
        return self._index[demo]

    def sample_successes(self, batch: int, horizon: int, demo_fraction: float,
                         rng: np.random.Generator) -> dict[str, torch.Tensor] | None:
        """Steps of successful episodes and operator steps, with the full ``horizon``-step chunk from each
        (normalised; past the episode's end the last action repeats, as in pre-training): behaviour-cloning
        data. None while there is none."""
        if self._success_index is None:  # and the operator's steps, successful or not (HIL-SERL's BC data)
            success = np.asarray(self.ep_success, bool)[self.episode_of.view]
            self._success_index = (np.flatnonzero(success & self.source_demo.view),
                                   np.flatnonzero((success | self.intervened.view) & ~self.source_demo.view))
        demo_rows, online_rows = self._success_index
        if not len(demo_rows) and not len(online_rows):
            return None
        t = _draw(demo_rows, online_rows, batch, demo_fraction, rng)
        end = np.asarray(self.ep_end)[self.episode_of.view[t]]
        idx = np.minimum(t[:, None] + np.arange(horizon)[None], end[:, None] - 1)
        return {"features": torch.from_numpy(self.features.view[t]),
                "chunks": torch.from_numpy(self.actions.view[idx].reshape(batch, -1))}

    def sample(self, batch: int, demo_fraction: float, rng: np.random.Generator,
               online_window: int | None = None) -> dict[str, torch.Tensor]:
        """A batch of chunk decisions; with ``online_window`` the online ones come from the newest that many
        online steps only (they are added in the order they were ingested)."""
        online = self._rows(False)
        if online_window is not None:
            online = online[-online_window:]
        t = _draw(self._rows(True), online, batch, demo_fraction, rng)
        ep = self.episode_of.view[t]
        end = np.asarray(self.ep_end)[ep]
        idx = t[:, None] + np.arange(self.h)[None]
        executed = idx < end[:, None]
        idx = np.minimum(idx, end[:, None] - 1)  # past the end: the last action again (never rewarded)
        nxt = t + self.h
        inside = nxt < end
        next_features = np.where(inside[:, None], self.features.view[np.minimum(nxt, self.actions.n - 1)],
                                 np.stack([self.ep_final_features[e] for e in ep]))
        next_cands = np.where(inside[:, None, None], self.cands.view[np.minimum(nxt, self.actions.n - 1)],
                              np.stack([self.ep_final_cands[e] for e in ep]))
        terminated = ~inside & np.asarray(self.ep_terminated)[ep]
        full = np.minimum(t[:, None] + np.arange(self.full_h)[None], end[:, None] - 1)
        operator = self.intervened.view[t] & (self.intervened.view[idx] | ~executed).all(axis=1)
        return {
            "intervention": torch.from_numpy(operator),
            "full_action": torch.from_numpy(self.actions.view[full].reshape(batch, -1)),
            "features": torch.from_numpy(self.features.view[t]),
            "action": torch.from_numpy(self.actions.view[idx].reshape(batch, -1)),
            "rewards": torch.from_numpy(self.rewards.view[idx] * executed),
            "executed": torch.from_numpy(executed),
            "terminated": torch.from_numpy(terminated),
            "next_features": torch.from_numpy(next_features),
            "next_candidates": torch.from_numpy(next_cands),
            "candidates": torch.from_numpy(self.cands.view[t]),
            "returns": torch.from_numpy(self.returns.view[t]),
        }
