"""Policy evaluation in an env: action chunks (optionally temporally ensembled), success with a 95%
Wilson interval, episode length, latency per chunk, and optional videos; and of chunk policies in chunked
vector envs (what the RL trainers evaluate with, held-out seeds in waves)."""

from __future__ import annotations

import json
import math
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from robot_rl.config import EnvConfig, config_to_dict
from robot_rl.core.errors import ConfigError
from robot_rl.core.schema import Episode, flatten_obs
from robot_rl.envs import get_task, make_env
from robot_rl.policy import Policy, load_policy
from robot_rl.replay.store import EpisodeStore
from robot_rl.replay.video import write_mp4
from robot_rl.runtime.training.rollouts import EpisodeAssembler
from robot_rl.runtime.training.vec_env import ChunkVectorEnv

EVAL_SEED = 1_000_000  # held-out seeds: demos are collected from seed 0 upwards


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


class ObservationWindows:
    """The last ``n`` observations of each of ``envs`` envs as one policy batch; an episode's window
    starts padded with its first observation."""

    def __init__(self, envs: int, n: int, instruction: str) -> None:
        self.frames: list[deque[dict[str, np.ndarray]]] = [deque(maxlen=n) for _ in range(envs)]
        self.n, self.instruction = n, instruction

    def start(self, i: int, obs: dict[str, Any]) -> None:
        self.frames[i].clear()
        self.frames[i].extend([flatten_obs(obs)] * self.n)

    def push(self, i: int, obs: dict[str, Any]) -> None:
        self.frames[i].append(flatten_obs(obs))

    def batch(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"obs/{k}": np.stack([np.stack([f[k] for f in window]) for window in self.frames])
                               for k in self.frames[0][0]}
        out["instruction"] = [self.instruction] * len(self.frames)
        return out


def load_checkpoint(path: str | Path) -> tuple[Policy, dict | None]:
    """A policy from a run folder (its latest EMA weights) or a saved-policy folder, and the env config
    its demos were collected with, where known."""
    path = Path(path)
    policy_dir = path / "policy" if (path / "policy" / "config.json").is_file() else path
    if not (policy_dir / "config.json").is_file():
        raise ConfigError(f"no saved policy in {path} (expected {path}/policy/config.json or {path}/config.json)")
    env_file = policy_dir.parent / "env.json"
    env = json.loads(env_file.read_text()) if env_file.is_file() else None
    return load_policy(policy_dir), env


def env_config_for(policy: Policy, task: str, saved: dict | None) -> EnvConfig:
    f = policy.config.features
    cfg = EnvConfig(**{k: v for k, v in (saved or {}).items() if k in EnvConfig.__dataclass_fields__})
    cfg.task, cfg.cameras, cfg.image_size = task, list(f.cameras), f.image_size
    cfg.terminate_on_success = True  # demos may run past success (--extra-steps); an evaluation ends there
    return cfg


def run_episode(env, policy: Policy, seed: int, steps: int | None, temporal_ensemble: float | None,
                generator: torch.Generator, record: bool) -> dict[str, Any]:
    cfg = policy.config
    obs, info = env.reset(seed=seed)
    history = ObservationWindows(1, cfg.n_obs_steps, info["instruction"])
    history.start(0, obs)
    queue: deque[np.ndarray] = deque()
    ensemble: list[tuple[int, np.ndarray]] = []  # (step the chunk was predicted at, chunk)
    latencies, frames, t = [], [], 0
    while True:
        if record:
            frames.append(np.concatenate([obs["images"][c] for c in cfg.features.cameras], axis=1))
        if temporal_ensemble is not None or not queue:
            start = time.perf_counter()
            chunk = policy.act(history.batch(), steps=steps, generator=generator)[0]
            latencies.append(time.perf_counter() - start)
            if temporal_ensemble is None:
                queue.extend(chunk[: cfg.n_action_steps])
            else:
                ensemble = [(s, c) for s, c in ensemble if t - s < cfg.horizon] + [(t, chunk)]
        if temporal_ensemble is None:
            action = queue.popleft()
        else:  # ACT: average every live prediction for this step, older ones weighted more
            preds = np.stack([c[t - s] for s, c in ensemble])
            weights = np.exp(-temporal_ensemble * np.arange(len(preds)))
            action = (weights[:, None] * preds).sum(0) / weights.sum()
        obs, _, terminated, truncated, info = env.step(np.clip(action, -1, 1))
        history.push(0, obs)
        t += 1
        if terminated or truncated:
            break
    if record:
        frames.append(np.concatenate([obs["images"][c] for c in cfg.features.cameras], axis=1))
    return {"success": bool(info["success"]), "length": t, "latencies": latencies, "frames": frames}


def evaluate(policy: Policy, env_config: EnvConfig, episodes: int, seed: int = EVAL_SEED,
             steps: int | None = None, temporal_ensemble: float | None = None,
             video_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Success rate (with a 95% interval), mean length and latency of ``policy`` over ``episodes``."""
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    env = make_env(env_config)
    generator = torch.Generator().manual_seed(seed)
    results = []
    try:
        bar = tqdm(range(episodes), desc=f"eval {env_config.task}", unit="ep", disable=not progress)
        for i in bar:
            res = run_episode(env, policy, seed + i, steps, temporal_ensemble, generator, video_dir is not None)
            if video_dir is not None:
                tag = "success" if res["success"] else "failure"
                write_mp4(res["frames"], Path(video_dir) / f"episode_{i:03d}_{tag}.mp4", fps=env_config.control_hz)
            res.pop("frames")
            results.append(res)
            bar.set_postfix(success=f"{np.mean([r['success'] for r in results]):.2f}")
    finally:
        env.close()
    successes = sum(r["success"] for r in results)
    low, high = wilson_interval(successes, episodes)
    latencies = [x for r in results for x in r["latencies"]]
    return {
        "task": env_config.task,
        "episodes": episodes,
        "success_rate": successes / episodes,
        "success_ci95": [low, high],
        "mean_length": float(np.mean([r["length"] for r in results])),
        "latency_ms": 1000 * float(np.mean(latencies)),
        "latency_p95_ms": 1000 * float(np.percentile(latencies, 95)),
        "sampling_steps": steps or getattr(policy.config, "num_inference_steps", None),
        "temporal_ensemble": temporal_ensemble,
        "first_seed": seed,
    }


# ---------------------------------------------------------------- chunk policies in vector envs
def action_chunks(policy: Policy, actions: torch.Tensor) -> np.ndarray:
    """Normalised flat chunks (B, H*A) -> the first ``n_action_steps`` actions of each, in env units."""
    pc = policy.config
    a = policy.action_norm.unnormalize(actions.reshape(-1, pc.horizon, pc.features.action_dim))
    return np.clip(a[:, : pc.n_action_steps].cpu().numpy(), -1.0, 1.0)


def evaluate_saved(policy: Policy, env_config: EnvConfig, episodes: int, seed: int, num_envs: int, workers: int,
                   record: Path | None = None, overwrite: bool = False, steps: int | None = None) -> dict[str, Any]:
    """Success of ``policy`` as it acts (its own sampler; ``steps`` sampling steps where given) on episodes
    ``seed``, ``seed + 1``, ... in chunked vector envs. With ``record`` every episode is committed to that new
    store (``overwrite``: replace a store already there)."""
    generator = torch.Generator().manual_seed(seed)
    policy.eval()
    store = None
    if record is not None:
        EpisodeStore.create(record, overwrite=overwrite).close()
        store = EpisodeStore.open(record, mode="a")
        store.set_env_config(config_to_dict(env_config))
    start = time.perf_counter()
    try:
        with ChunkVectorEnv(env_config, num_envs, workers) as envs, torch.no_grad():
            res = evaluate_chunked(envs, lambda cond: policy.sample(cond, steps=steps, generator=generator), policy,
                                   episodes, seed, store=store)
    finally:
        if store is not None:
            store.close()
    res["wall_s"] = time.perf_counter() - start
    return res


def evaluate_chunked(envs: ChunkVectorEnv, act, policy: Policy, episodes: int, seed: int,
                     store: EpisodeStore | None = None) -> dict[str, Any]:
    """Episodes ``seed``, ``seed + 1``, ... in waves of ``envs.num_envs``; ``act(cond)`` gives
    normalised chunks. With ``store`` (open for appending) every episode is committed to it, in seed
    order (``source: policy``), e.g. to evaluate a critic on the policy's own rollouts."""
    n = envs.num_envs
    task = get_task(envs.env_config.task)
    successes, lengths = [], []
    for wave in range(0, episodes, n):
        count = min(n, episodes - wave)
        seeds = [seed + wave + i if i < count else seed + wave + i + 10**8 for i in range(n)]
        obs = envs.reset(seeds)
        hist = ObservationWindows(n, policy.config.n_obs_steps, task.instruction)
        asm = [EpisodeAssembler(task.name, task.instruction) for _ in range(n)]
        done: dict[int, Episode] = {}
        for i, o in enumerate(obs):
            hist.start(i, o)
            asm[i].start(o)
        active = [i < count for i in range(n)]
        length = [0] * n
        while any(active):
            chunks = action_chunks(policy, act(policy.encode(hist.batch())))
            results = envs.step_chunks(list(chunks), active=active, auto_reset=False, record=store is not None)
            for i, r in enumerate(results):
                if r is None:
                    continue
                length[i] += r.steps
                hist.push(i, r.obs)
                if store is not None and (ep := asm[i].add(chunks[i], r, 0)) is not None:
                    done[i] = ep
                if r.ended:
                    active[i] = False
                    successes.append(bool(r.success))
                    lengths.append(length[i])
        for i in sorted(done):
            store.append(done[i])
    k = sum(successes)
    low, high = wilson_interval(k, len(successes))
    return {"episodes": len(successes), "success_rate": k / len(successes), "success_ci95": [low, high],
            "mean_length": float(np.mean(lengths)), "first_seed": seed}
