"""N envs that execute whole action chunks, in worker processes or in this one.

A chunk runs until it is used up or its episode ends; the result carries the observation to act on
next (after an automatic reset where the episode ended), the final observation of an ended episode,
and whether the task succeeded during the chunk. Episode seeds follow ``seed + i + N * k`` for the k-th
episode of env i, so a run is reproducible and a resumed run does not repeat episodes.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_rl.config import EnvConfig
from robot_rl.core.errors import ConfigError, RobotRLError


@dataclass
class ChunkResult:
    obs: dict[str, Any]
    """The observation to act on next (a fresh episode's first one if this one ended)."""
    steps: int
    """Env steps the chunk ran (fewer than its length if the episode ended)."""
    success: bool
    """The task succeeded at some step of the chunk."""
    terminated: bool
    truncated: bool
    final_obs: dict[str, Any] | None = None
    """The last observation of the episode that ended, else None."""
    info: dict[str, Any] = field(default_factory=dict)
    intervened: list[bool] = field(default_factory=list)
    """Per executed step: an operator (or the protocol's helper) acted, not the chunk (always filled)."""
    taken: np.ndarray | None = None
    """(steps, A): the actions executed (the operator's where it acted; always filled)."""
    helped: bool = False
    """The graded protocol opened the episode these steps belong to."""
    trace: dict[str, list] | None = None
    """With ``record``: per executed step, the observation after it (``obs``), ``reward``, ``success``,
    ``terminated``, ``truncated``, the action executed (``action``: the operator's where it took over, else the
    chunk's), ``intervention`` and ``helped`` (the graded protocol opened this episode); what an episode store
    needs to keep the episode."""

    @property
    def ended(self) -> bool:
        return self.terminated or self.truncated


class _EnvSlot:
    """One env with its seed stream; runs chunks."""

    def __init__(self, env_config: EnvConfig | None, index: int, num_envs: int, seed: int, episode: int,
                 env: Any = None, wrap: Callable[[Any, int], Any] | None = None) -> None:
        from robot_rl.envs import make_env

        self.env = env if env is not None else make_env(env_config)
        if wrap is not None:
            self.env = wrap(self.env, index)
        self.index, self.num_envs, self.seed = index, num_envs, seed
        self.episode = episode  # episodes started so far

    def reset(self, seed: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        if seed is None:
            seed = self.seed + self.index + self.num_envs * self.episode
            self.episode += 1
        return self.env.reset(seed=int(seed))

    def run_chunk(self, chunk: np.ndarray, auto_reset: bool, record: bool = False) -> ChunkResult:
        success = terminated = truncated = False
        steps = 0
        obs, info = None, {}
        trace: dict[str, list] | None = (
            {"obs": [], "reward": [], "success": [], "terminated": [], "truncated": [], "action": [],
             "intervention": [], "helped": []} if record else None)
        handback = getattr(self.env, "handback_pending", None)  # an InterventionWrapper's operator let go
        intervened, taken, helped = [], [], False
        for action in chunk:
            if steps and handback is not None and handback():
                break  # the rest of this chunk was planned before the takeover: a fresh one from here
            obs, reward, terminated, truncated, info = self.env.step(action)
            steps += 1
            step_success, step_helped = bool(info.get("success", False)), bool(info.get("helped", False))
            success, helped = success or step_success, helped or step_helped
            intervened.append(bool(info.get("intervention", False)))
            taken.append(np.asarray(info.get("taken_action", action), np.float32))
            if trace is not None:
                step = {"obs": obs, "reward": float(reward), "success": step_success, "terminated": bool(terminated),
                        "truncated": bool(truncated), "action": taken[-1], "intervention": intervened[-1],
                        "helped": step_helped}
                for key, value in step.items():
                    trace[key].append(value)
            if terminated or truncated:
                break
        result = ChunkResult(obs, steps, success, bool(terminated), bool(truncated), info=info, trace=trace,
                             intervened=intervened, taken=np.stack(taken) if taken else None, helped=helped)
        if result.ended and auto_reset:
            result.final_obs = obs
            result.obs, _ = self.reset()
        return result

    def set_help(self, steps: int) -> None:
        from robot_rl.hil.protocol import find_protocol

        protocol = find_protocol(self.env)
        if protocol is not None:
            protocol.set_help(steps)

    def close(self) -> None:
        self.env.close()


def _worker(conn, env_config: EnvConfig, indices: list[int], num_envs: int, seed: int, episodes: list[int],
            wrap) -> None:
    import torch

    torch.set_num_threads(1)
    slots = []
    try:
        slots = [_EnvSlot(env_config, i, num_envs, seed, e, wrap=wrap) for i, e in zip(indices, episodes)]
        conn.send(("ok", None))
        while True:
            cmd, arg = conn.recv()
            if cmd == "reset":
                conn.send(("ok", [slots[j].reset(seed)[0] for j, seed in arg]))
            elif cmd == "step":
                conn.send(("ok", [slots[j].run_chunk(*a) for j, a in arg]))
            elif cmd == "help":
                conn.send(("ok", [slots[j].set_help(k) for j, k in arg]))
            elif cmd == "episodes":
                conn.send(("ok", [s.episode for s in slots]))
            elif cmd == "close":
                break
    except Exception as exc:  # the parent gets the worker's error with its traceback
        try:
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        except Exception:
            pass
    finally:
        for s in slots:
            s.close()
        conn.close()


class ChunkVectorEnv:
    """``num_envs`` envs of one config spread over ``workers`` processes (0: all in this process)."""

    def __init__(self, env_config: EnvConfig, num_envs: int, workers: int = 0, seed: int = 0,
                 episodes: list[int] | None = None, wrap: Callable[[Any, int], Any] | None = None) -> None:
        """``wrap(env, index)`` (picklable: it travels to the workers) wraps each env, e.g. for takeovers."""
        if num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
        if workers < 0:
            raise ConfigError(f"workers must be >= 0, got {workers}")
        from robot_rl.envs import get_task

        get_task(env_config.task)  # an unknown task fails here, before any process starts
        self.num_envs, self.env_config = num_envs, env_config
        episodes = episodes or [0] * num_envs
        self.workers = min(workers, num_envs)
        self._slots: list[_EnvSlot] = []
        self._conns = []
        self._procs = []
        if self.workers == 0:
            self._slots = [_EnvSlot(env_config, i, num_envs, seed, episodes[i], wrap=wrap) for i in range(num_envs)]
            self._groups = [list(range(num_envs))]
        else:
            ctx = mp.get_context("spawn")  # no forked GL contexts or torch thread pools
            self._groups = [list(range(num_envs))[w :: self.workers] for w in range(self.workers)]
            for group in self._groups:
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker, daemon=True,
                                   args=(child, env_config, group, num_envs, seed, [episodes[i] for i in group], wrap))
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
            for conn in self._conns:
                self._receive(conn)

    @classmethod
    def from_envs(cls, envs: list[Any], env_config: EnvConfig, seed: int = 0,
                  episodes: list[int] | None = None) -> ChunkVectorEnv:
        """Chunks run in envs built elsewhere (e.g. ``RosRobotEnv`` on a robot), in this process."""
        if not envs:
            raise ConfigError("from_envs needs at least one env")
        self = cls.__new__(cls)
        self.num_envs, self.env_config, self.workers = len(envs), env_config, 0
        episodes = episodes or [0] * len(envs)
        self._slots = [_EnvSlot(None, i, len(envs), seed, episodes[i], env=e) for i, e in enumerate(envs)]
        self._groups, self._conns, self._procs = [list(range(len(envs)))], [], []
        return self

    def _receive(self, conn):
        try:
            status, payload = conn.recv()
        except EOFError:
            raise RobotRLError("an env worker process died (see its output above)") from None
        if status == "error":
            raise RobotRLError(f"env worker failed: {payload}")
        return payload

    def _call(self, cmd: str, per_env: dict[int, Any]) -> dict[int, Any]:
        """Send each env in ``per_env`` its argument; gather its result."""
        if self.workers == 0:
            return {i: self._local(cmd, i, arg) for i, arg in per_env.items()}
        asked = []
        for conn, group in zip(self._conns, self._groups):
            rows = [i for i in group if i in per_env]
            if rows:
                conn.send((cmd, [(group.index(i), per_env[i]) for i in rows]))
                asked.append((conn, rows))
        out: dict[int, Any] = {}
        for conn, rows in asked:
            out.update(zip(rows, self._receive(conn)))
        return out

    def _local(self, cmd: str, i: int, arg):
        slot = self._slots[i]
        if cmd == "step":
            return slot.run_chunk(*arg)
        if cmd == "help":
            return slot.set_help(arg)
        return slot.reset(arg)[0]

    def reset(self, seeds: list[int | None] | None = None) -> list[dict[str, Any]]:
        """Reset every env (to the given seeds, else the next of its stream)."""
        seeds = seeds if seeds is not None else [None] * self.num_envs
        if len(seeds) != self.num_envs:
            raise ConfigError(f"reset needs {self.num_envs} seeds, got {len(seeds)}")
        out = self._call("reset", dict(enumerate(seeds)))
        return [out[i] for i in range(self.num_envs)]

    def reset_one(self, i: int, seed: int | None = None) -> dict[str, Any]:
        """Reset env ``i`` alone (to the next seed of its stream by default)."""
        return self._call("reset", {i: seed})[i]

    def step_chunks(self, chunks: np.ndarray | list, active: list[bool] | None = None,
                    auto_reset: bool = True, record: bool = False) -> list[ChunkResult | None]:
        """Run chunk i (K, A) in env i; inactive envs are left alone and give None. With ``record`` every
        result carries the per-step trace of its chunk."""
        if len(chunks) != self.num_envs:
            raise ConfigError(f"step_chunks needs {self.num_envs} chunks, got {len(chunks)}")
        active = active or [True] * self.num_envs
        for c in chunks:
            if c is not None and not np.all(np.isfinite(c)):
                raise ConfigError("an action chunk contains NaN or inf")
        out = self._call("step", {i: (np.asarray(c), auto_reset, record)
                                  for i, (c, a) in enumerate(zip(chunks, active)) if a})
        return [out.get(i) for i in range(self.num_envs)]

    def set_help(self, steps: int) -> None:
        """The graded protocol's k for the episodes that start from now on (envs without one ignore it)."""
        self._call("help", {i: int(steps) for i in range(self.num_envs)})

    def episode_counters(self) -> list[int]:
        """Episodes started by each env (to resume its seed stream)."""
        if self.workers == 0:
            return [s.episode for s in self._slots]
        out = []
        for conn in self._conns:
            conn.send(("episodes", None))
        for conn, group in zip(self._conns, self._groups):
            out.extend(zip(group, self._receive(conn)))
        return [e for _, e in sorted(out)]

    def close(self) -> None:
        for slot in self._slots:
            slot.close()
        for conn in self._conns:
            try:
                conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        self._slots, self._conns, self._procs = [], [], []

    def __enter__(self) -> ChunkVectorEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
