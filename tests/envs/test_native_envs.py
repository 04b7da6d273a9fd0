"""The native task envs: observation layout, control, rendering, experts and clear errors (the contract every
env keeps, gymnasium's checker and determinism included, is test_env_contract.py)."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest

from robot_rl.config.env import EnvConfig
from robot_rl.core.errors import ConfigError, UnknownTaskError
from robot_rl.envs import get_task, make_env, make_expert, task_names
from tests.conftest import SMALL_IMAGE, small_env

TASKS = [t for t in task_names() if get_task(t).suite == "native"]  # every registry entry: test_env_contract.py


def test_at_least_three_native_tasks_of_rising_difficulty():
    native = [get_task(t) for t in TASKS if get_task(t).suite == "native"]
    assert len(native) >= 3
    assert len({t.difficulty for t in native}) == len(native)
    assert all(t.instruction for t in native)


@pytest.mark.parametrize("task", TASKS)
def test_gym_make_and_render(task):
    env = gym.make(f"robot_rl/{task}-v0", render_mode="rgb_array", cameras=[], render_size=64)
    try:
        obs, info = env.reset(seed=0)
        assert set(obs) == {"state"}
        assert info["instruction"] == get_task(task).instruction
        frame = env.render()
        assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and frame.std() > 0
    finally:
        env.close()


def test_seeds_randomise_initial_state():
    env = small_env("push", cameras=[])
    starts = {tuple(np.round(env.reset(seed=s)[0]["state"][:3], 4)) for s in range(5)}
    cubes = set()
    for s in range(5):
        env.reset(seed=s)
        cubes.add(tuple(np.round(env.unwrapped.privileged_state()["cube_pos"], 4)))
    env.close()
    assert len(starts) == 5 and len(cubes) == 5


def test_observation_layout():
    env = small_env("lift")
    obs, info = env.reset(seed=0)
    assert set(obs["images"]) == {"front", "wrist"}
    for img in obs["images"].values():
        assert img.shape == (SMALL_IMAGE, SMALL_IMAGE, 3) and img.dtype == np.uint8
    assert obs["state"].dtype == np.float32 and obs["state"].shape == env.observation_space["state"].shape
    assert info["success"] is False
    env.close()


def test_actions_move_the_tool_point():
    env = small_env("reach", cameras=[])
    obs, _ = env.reset(seed=0)
    start = obs["state"][:3].copy()
    for _ in range(3):
        obs, *_ = env.step(np.array([1, 0, 0, 0, 0, 0, -1], dtype=np.float32))
    moved = obs["state"][:3] - start
    assert 0.06 < moved[0] < 0.14, moved  # about 3 x 4 cm along +x
    assert abs(moved[1]) < 0.01 and abs(moved[2]) < 0.01
    env.close()


def test_shadows_off_by_default_and_on_as_option():
    for shadows in (False, True):
        env = small_env("reach", shadows=shadows)
        env.reset(seed=0)
        renderer = next(iter(env.unwrapped._renderers.values()))
        assert bool(renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW]) is shadows
        env.close()


def test_bad_input_gets_clear_errors():
    with pytest.raises(UnknownTaskError, match="unknown task 'nope'.*push"):
        make_env("nope")
    with pytest.raises(ConfigError, match=r"unknown camera\(s\) \['top'\]"):
        make_env(EnvConfig(task="push", cameras=["top"]))
    with pytest.raises(ConfigError, match="image_size"):
        make_env(EnvConfig(task="push", image_size=2))
    env = small_env("push", cameras=[])
    env.reset(seed=0)
    with pytest.raises(ConfigError, match=r"shape \(7,\)"):
        env.step(np.zeros(6))
    with pytest.raises(ConfigError, match="NaN"):
        env.step(np.full(7, np.nan))
    env.close()


def test_expert_noise_varies_demos():
    env = small_env("push", cameras=[])
    actions = []
    for rng_seed in (0, 1):
        env.reset(seed=0)
        expert = make_expert("push", noise=0.2, rng=np.random.default_rng(rng_seed))
        actions.append(expert.act(env.unwrapped.privileged_state()))
    env.close()
    assert not np.allclose(actions[0], actions[1])


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_expert_success_rate(task):
    """Each scripted expert succeeds in >= 95 of 100 seeded episodes, with the CLI's default noise."""
    env = small_env(task, cameras=[])
    successes = 0
    for seed in range(100):
        env.reset(seed=seed)
        expert = make_expert(task, noise=0.1, rng=np.random.default_rng(seed))
        while True:
            _, _, terminated, truncated, info = env.step(expert.act(env.unwrapped.privileged_state()))
            if terminated or truncated:
                break
        successes += info["success"]
    env.close()
    assert successes >= 95, f"{task}: expert succeeded in {successes}/100 episodes"
