"""Env steps/s per native task and camera setting, beside the same model's bare mj_step (+ render) loop.

Prints one JSON object. ``ratio`` is our env's steps/s over the bare loop's in the same run: the cost of
control (IK), observation packing and the gymnasium API. The bare loop replays the env's own
initial state and actuator controls, so both simulate the same contacts. Robosuite Lift with the same cameras is
measured too when robosuite is installed. Usage::

    python benchmarks/env_throughput.py [--steps 300] [--tasks push,lift]
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
from robot_rl.envs import make_env, task_names  # noqa: E402

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


def measure_robosuite(cameras: int, size: int, steps: int) -> float:
    import robosuite

    names = ["agentview", "robot0_eye_in_hand"][:cameras]
    env = robosuite.make(
        "Lift", robots="Panda", has_renderer=False, has_offscreen_renderer=bool(cameras),
        use_camera_obs=bool(cameras), camera_names=names or "agentview", camera_heights=size,
        camera_widths=size, control_freq=20, horizon=steps + 1, ignore_done=True,  # a huge horizon slows it 6x
    )
    env.reset()
    rng = np.random.default_rng(0)
    low, high = env.action_spec
    start = time.perf_counter()
    for _ in range(steps):
        env.step(rng.uniform(low, high))
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--tasks", default=",".join(task_names()))
    args = parser.parse_args()

    result: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "mujoco": mujoco.__version__,
                    "MUJOCO_GL": os.environ.get("MUJOCO_GL")},
        "steps": args.steps,
        "tasks": {},
    }
    for task in args.tasks.split(","):
        rows = {}
        for name, (cameras, size) in SETTINGS.items():
            ours, replay = measure_env(task, cameras, size, args.steps)
            bare = measure_bare(replay, cameras, size)
            rows[name] = {"env_steps_per_s": round(ours, 1), "bare_steps_per_s": round(bare, 1),
                          "ratio": round(ours / bare, 3)}
        result["tasks"][task] = rows
    try:
        import robosuite  # noqa: F401
    except ImportError:
        result["robosuite_lift"] = "robosuite is not installed (pip install 'robot-rl[robosuite]')"
    else:
        rows = {}
        for name, (cams, size) in SETTINGS.items():
            theirs = measure_robosuite(len(cams), size, args.steps)
            rows[name] = {"env_steps_per_s": round(theirs, 1)}
            if "lift" in result["tasks"]:
                rows[name]["our_lift_ratio"] = round(result["tasks"]["lift"][name]["env_steps_per_s"] / theirs, 2)
        result["robosuite_lift"] = {
            "note": "robosuite Panda Lift, OSC at 20 Hz, its default rendering; ours at 10 Hz, shadows off",
            **rows,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
