"""Demos by hand: an operator drives a simulated task live with a teleop device at the control rate, and every
finished episode is committed to an episode store (``source: human``, every step an intervention). The
operator's keys end an episode as a success or a failure (the label overrides the task's own test), reset it
(discarded), or stop the session (the e-stop: the episode in flight is discarded)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.config import EnvConfig, config_to_dict
from robot_rl.core.schema import Episode, EpisodeMeta
from robot_rl.envs import get_task, make_env
from robot_rl.replay.store import EpisodeStore


def record_teleop(env_config: EnvConfig, device: Any, reader: Any, out: str | Path, episodes: int, seed: int = 0,
                  status_s: float = 0.5, stream=sys.stderr) -> dict[str, Any]:
    """Drive ``episodes`` episodes (seeds ``seed``, ``seed + 1``, ...) with ``device`` fed by ``reader`` and
    append them to the store at ``out`` (created if missing). Returns what was recorded."""
    env = store = None
    kept, discarded, labels, stopped = 0, 0, {"success": 0, "failure": 0}, False
    try:  # whatever fails, the reader restores the terminal (or closes the device) on the way out
        env_config.validate()
        task = get_task(env_config.task)
        out = Path(out)
        if not out.exists():
            EpisodeStore.create(out).close()
        store = EpisodeStore.open(out, mode="a")
        store.set_env_config(config_to_dict(env_config))
        env = make_env(env_config)
        period = 1.0 / env_config.control_hz
        while kept < episodes and not stopped:
            ep_seed = seed + kept + discarded
            obs, info = env.reset(seed=ep_seed)
            steps: dict[str, list] = {k: [] for k in ("obs", "action", "reward", "term", "trunc", "success")}
            next_tick, last_status, outcome = time.monotonic(), 0.0, None
            while outcome is None:
                reader.read(next_tick - time.monotonic())  # input until this step is due
                next_tick = max(next_tick + period, time.monotonic())
                cmd = device.command()
                if cmd.estop:
                    outcome, stopped = "stop", True
                elif cmd.reset:
                    outcome = "reset"
                elif (cmd.success or cmd.failure) and steps["action"]:
                    outcome = "success" if cmd.success else "failure"
                    steps["term"][-1], steps["trunc"][-1] = True, False
                    steps["success"][-1] = outcome == "success"
                else:
                    steps["obs"].append(obs)
                    steps["action"].append(cmd.action.copy())
                    obs, reward, term, trunc, info = env.step(cmd.action)
                    for k, v in (("reward", reward), ("term", term), ("trunc", trunc),
                                 ("success", bool(info["success"]))):
                        steps[k].append(v)
                    if term or trunc:
                        outcome = "env"
                if time.monotonic() - last_status > status_s:
                    stream.write(f"\repisode {kept + 1}/{episodes}  step {len(steps['action'])}  "
                                 f"action {np.round(cmd.action, 2).tolist()}  success {bool(info.get('success'))}  ")
                    stream.flush()
                    last_status = time.monotonic()
            if outcome in ("stop", "reset") or not steps["action"]:
                discarded += 1
                stream.write(f"\nepisode discarded ({outcome})\n")
                continue
            if outcome in labels:
                labels[outcome] += 1
            success = bool(steps["success"][-1]) if outcome in labels else any(steps["success"])
            meta = EpisodeMeta(task=task.name, instruction=task.instruction, success=success, source="human",
                               seed=ep_seed)
            n = len(steps["action"])
            store.append(Episode.from_steps(steps["obs"], steps["action"], steps["reward"], steps["term"],
                                            steps["trunc"], steps["success"], obs, meta, interventions=[True] * n))
            kept += 1
            stream.write(f"\nepisode {kept} committed: {n} steps, {'success' if success else 'failure'}"
                         f"{' (operator label)' if outcome in labels else ''}\n")
    finally:
        for thing in (env, store, reader):
            if thing is not None:
                thing.close()
    return {"store": str(out), "episodes": kept, "discarded": discarded, "labels": labels, "stopped": stopped}
