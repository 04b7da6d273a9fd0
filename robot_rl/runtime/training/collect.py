"""Rollouts of scripted experts into Episodes, and demo collection into an episode store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from robot_rl.config import EnvConfig, config_to_dict
from robot_rl.core.errors import StoreError
from robot_rl.core.schema import Episode, EpisodeMeta, flatten_obs, step_schema
from robot_rl.envs import make_env, make_expert
from robot_rl.replay.store import EpisodeStore, is_store


def rollout(
    env: gym.Env,
    act: Callable[[dict[str, Any], gym.Env], np.ndarray],
    seed: int,
    source: str = "policy",
    extra_steps: int | None = None,
) -> Episode:
    """Run one episode with ``act(obs, env) -> action`` and return it whole.

    With ``extra_steps`` (and an env that does not end on success) the episode goes on that many steps
    past the first success and then ends as terminated: frames of the done state, for critics."""
    obs, info = env.reset(seed=seed)
    observations, actions, rewards, terms, truncs, successes = [], [], [], [], [], []
    while True:
        action = np.asarray(act(obs, env), dtype=np.float32)
        observations.append(obs)
        actions.append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        terms.append(terminated)
        truncs.append(truncated)
        successes.append(bool(info["success"]))
        if extra_steps is not None and any(successes) and len(successes) - successes.index(True) > extra_steps:
            terms[-1], truncs[-1] = True, False
            break
        if terminated or truncated:
            break
    unwrapped = env.unwrapped
    meta = EpisodeMeta(
        task=info.get("task", unwrapped.spec.id if unwrapped.spec else "unknown"),
        instruction=info.get("instruction", ""),
        success=any(successes),
        source=source,
        seed=seed,
    )
    return Episode.from_steps(observations, actions, rewards, terms, truncs, successes, obs, meta)


def expert_rollout(env: gym.Env, task: str, seed: int, noise: float, extra_steps: int | None = None) -> Episode:
    expert = make_expert(task, noise=noise, rng=np.random.default_rng(seed + 1_000_003))
    return rollout(env, lambda _obs, e: expert.act(e.unwrapped.privileged_state()), seed, source="expert",
                   extra_steps=extra_steps)


def env_step_schema(env: gym.Env) -> dict[str, dict]:
    """The per-step store fields that episodes of ``env`` will have."""
    spaces = flatten_obs(_space_tree(env.observation_space))
    return step_schema({k: (s.dtype, s.shape) for k, s in spaces.items()}, int(np.prod(env.action_space.shape)))


def _space_tree(space: gym.Space):
    if isinstance(space, gym.spaces.Dict):
        return {k: _space_tree(v) for k, v in space.spaces.items()}
    return space


@dataclass
class CollectResult:
    episodes: int
    successes: int
    steps: int
    first_seed: int

    @property
    def success_rate(self) -> float:
        return self.successes / max(self.episodes, 1)


def check_output_store(out: str | Path, append: bool, overwrite: bool) -> None:
    """Raise StoreError now if :func:`open_output_store` would refuse ``out`` (before any long work)."""
    out = Path(out)
    if append and overwrite:
        raise StoreError("pass only one of --append and --overwrite")
    if not out.exists():
        return
    if not (append or overwrite):
        raise StoreError(f"{out} already exists; pass --append to add episodes or --overwrite to replace it")
    if append:
        EpisodeStore.open(out).close()  # names what is wrong: not a store, corrupt
    elif not is_store(out) and not (out.is_dir() and not any(out.iterdir())):
        raise StoreError(f"refusing to overwrite {out}: it is not a robot_rl episode store")


def open_output_store(out: str | Path, append: bool, overwrite: bool) -> EpisodeStore:
    """Open ``out`` for writing as the flags allow; never deletes anything that is not a store."""
    check_output_store(out, append, overwrite)
    out = Path(out)
    if out.exists() and append:
        return EpisodeStore.open(out, mode="a")
    return EpisodeStore.create(out, overwrite=overwrite)


def collect_demos(
    env_config: EnvConfig,
    episodes: int,
    out: str | Path,
    noise: float = 0.1,
    seed: int | None = None,
    append: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    extra_steps: int | None = None,
) -> CollectResult:
    """Run the task's scripted expert for ``episodes`` episodes and append each to the store at ``out``.

    Episode ``i`` uses seed ``seed + i``; by default seeds continue after the episodes already stored,
    so appending never repeats a demo. ``extra_steps``: go on this many steps after the first success
    (the env then does not end episodes on success).
    """
    if episodes < 1:
        raise StoreError(f"--episodes must be >= 1, got {episodes}")
    if extra_steps is not None:
        if extra_steps < 0:
            raise StoreError(f"--extra-steps must be >= 0, got {extra_steps}")
        env_config.terminate_on_success = False
    env = make_env(env_config)  # fails on an unknown task before any file is touched
    store = open_output_store(out, append, overwrite)
    try:
        store.check_step_schema(env_step_schema(env))
        if store.env_config is None:
            store.set_env_config(config_to_dict(env_config))
    except Exception:
        store.close()
        env.close()
        raise
    first = store.num_episodes if seed is None else seed
    successes = steps = 0
    try:
        bar = tqdm(range(episodes), desc=f"collect {env_config.task}", unit="ep", disable=not progress)
        for i in bar:
            episode = expert_rollout(env, env_config.task, first + i, noise, extra_steps)
            store.append(episode)
            successes += int(episode.meta.success)
            steps += len(episode)
            bar.set_postfix(success=f"{successes / (i + 1):.2f}")
    finally:
        store.close()
        env.close()
    return CollectResult(episodes=episodes, successes=successes, steps=steps, first_seed=first)
