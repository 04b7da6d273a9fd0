"""Env steps/s per native task and camera setting, beside the same model's bare mj_step (+ render) loop, and
robosuite tasks through our adapter beside robosuite stepped directly.

Prints one JSON object. ``ratio`` is our env's steps/s over the bare loop's in the same run: the cost of
control (IK), observation packing and the gymnasium API. The bare loop replays the env's own
initial state and actuator controls, so both simulate the same contacts. ``robosuite.<task>.<setting>``: the
adapter's ``env.step`` against ``step`` of the very robosuite env inside it (same controller, cameras, render
flags), alternated in blocks; ``overhead`` = 1 - adapter/direct; ``libero.<task>`` likewise against LIBERO's
``OffScreenRenderEnv.step``. Run it from the robosuite / LIBERO venv for those rows::

    python benchmarks/env_throughput.py [--steps 300] [--tasks push,lift] [--robosuite robosuite/Lift]
    .venv-robosuite/bin/python benchmarks/env_throughput.py --tasks lift --robosuite robosuite/Lift,robosuite/Stack
    .venv-libero/bin/python benchmarks/env_throughput.py --tasks "" --robosuite "" --libero libero_spatial/0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from robot_rl.config import EnvConfig  # noqa: E402
from robot_rl.envs import get_task, make_env, task_names  # noqa: E402

SETTINGS = {
    "no_camera": ([], 84),
    "one_84": (["front"], 84),
    "two_84": (["front", "wrist"], 84),
    "two_128": (["front", "wrist"], 128),
}


def measure_env(task: str, cameras: list[str], size: int, steps: int) -> tuple[float, dict]:
    """Our env under random actions, in one long episode; returns steps/s and what the bare loop replays."""
    env = make_env(EnvConfig(task=task, cameras=cameras, image_size=size, max_steps=steps + 1,
                             terminate_on_success=False))
    sim = env.unwrapped
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    replay = {"qpos": sim.data.qpos.copy(), "qvel": sim.data.qvel.copy(), "act": sim.data.act.copy(),
              "mocap_pos": sim.data.mocap_pos.copy(), "ctrl": [], "model": sim.model, "n_substeps": sim.n_substeps}
    actions = rng.uniform(-1, 1, (steps, 7)).astype(np.float32)
    start = time.perf_counter()
    for action in actions:
        env.step(action)
        replay["ctrl"].append(sim.data.ctrl.copy())
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed, replay


def measure_bare(replay: dict, cameras: list[str], size: int) -> float:
    """The floor: the same model, initial state, controls, substeps and renders, with nothing around them."""
    model, n_substeps = replay["model"], replay["n_substeps"]
    data = mujoco.MjData(model)
    data.qpos[:], data.qvel[:], data.mocap_pos[:] = replay["qpos"], replay["qvel"], replay["mocap_pos"]
    mujoco.mj_forward(model, data)
    renderer = mujoco.Renderer(model, size, size) if cameras else None
    if renderer is not None:
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
    start = time.perf_counter()
    for ctrl in replay["ctrl"]:
        data.ctrl[:] = ctrl
        mujoco.mj_step(model, data, nstep=n_substeps)
        for cam in cameras:
            renderer.update_scene(data, camera=cam)
            renderer.render()
    elapsed = time.perf_counter() - start
    if renderer is not None:
        renderer.close()
    return len(replay["ctrl"]) / elapsed


def measure_adapter(task: str, cameras: list[str], size: int, steps: int, blocks: int = 6) -> dict:
    """Our adapter and the robosuite env inside it, the same random actions, alternating blocks of steps (a
    shared, noisy machine drifts: alternation gives both sides the same conditions)."""
    env = make_env(EnvConfig(task=task, cameras=cameras, image_size=size, terminate_on_success=False,
                             max_steps=10**9))
    inner = getattr(env.unwrapped, "libero", None) or env.unwrapped.rs  # what the adapter steps
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    per_block = max(1, steps // blocks)
    spent = {"adapter": 0.0, "direct": 0.0}
    for block in range(2 * blocks):
        actions = rng.uniform(-1, 1, (per_block, 7)).astype(np.float32)
        side = "adapter" if block % 2 == 0 else "direct"
        step = env.step if side == "adapter" else inner.step
        start = time.perf_counter()
        for action in actions:
            step(action)
        spent[side] += time.perf_counter() - start
    env.close()
    ours, theirs = per_block * blocks / spent["adapter"], per_block * blocks / spent["direct"]
    return {"adapter_steps_per_s": round(ours, 1), "direct_steps_per_s": round(theirs, 1),
            "overhead": round(1 - ours / theirs, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--tasks", default=",".join(t for t in task_names() if get_task(t).suite == "native"))
    parser.add_argument("--robosuite", default="robosuite/Lift", help="robosuite tasks through the adapter ('' none)")
    parser.add_argument("--libero", default="libero_spatial/0", help="LIBERO tasks through the adapter ('' none)")
    args = parser.parse_args()

    result: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "mujoco": mujoco.__version__,
                    "MUJOCO_GL": os.environ.get("MUJOCO_GL")},
        "steps": args.steps,
        "tasks": {},
    }
    for task in filter(None, args.tasks.split(",")):
        rows = {}
        for name, (cameras, size) in SETTINGS.items():
            ours, replay = measure_env(task, cameras, size, args.steps)
            bare = measure_bare(replay, cameras, size)
            rows[name] = {"env_steps_per_s": round(ours, 1), "bare_steps_per_s": round(bare, 1),
                          "ratio": round(ours / bare, 3)}
        result["tasks"][task] = rows
    robosuite_tasks = list(filter(None, args.robosuite.split(",")))
    if robosuite_tasks:
        try:
            import robosuite  # noqa: F401
        except ImportError:
            result["robosuite"] = "robosuite is not installed here: run this from .venv-robosuite (make test builds it)"
        else:
            result["robosuite"] = {
                task: {name: measure_adapter(task, cameras, size, args.steps) for name, (cameras, size) in
                       SETTINGS.items()} for task in robosuite_tasks}
    libero_tasks = list(filter(None, args.libero.split(",")))
    if libero_tasks:
        import importlib.util

        if importlib.util.find_spec("libero") is None:
            result["libero"] = "LIBERO is not installed here: run this from .venv-libero (make test builds it)"
        else:
            result["libero"] = {
                task: {name: measure_adapter(task, cameras, size, args.steps) for name, (cameras, size) in
                       SETTINGS.items()} for task in libero_tasks}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
