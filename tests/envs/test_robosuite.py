"""robosuite through our adapter, in its own venv (`make test` runs these with .venv-robosuite; elsewhere they
skip saying why): experts that make demos, any robosuite env by name, and the main job end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from robot_rl.config.env import EnvConfig
from robot_rl.core.errors import ConfigError
from robot_rl.envs import make_env, make_expert
from tests.conftest import SMALL_IMAGE

pytestmark = pytest.mark.robosuite


@pytest.mark.slow
@pytest.mark.parametrize("task", ["robosuite/Lift", "robosuite/PickPlaceCan", "robosuite/Stack"])
def test_expert_succeeds_in_nine_of_ten(task):
    """Each scripted expert, with the CLI's default noise, succeeds in >= 18 of 20 seeded episodes (the square-nut
    expert, 15 of 20 when measured, is checked only by the contract test's one episode ending in success)."""
    env = make_env(EnvConfig(task=task, cameras=[]))
    successes = 0
    try:
        for seed in range(20):
            env.reset(seed=seed)
            expert = make_expert(task, noise=0.1, rng=np.random.default_rng(seed))
            while True:
                _, _, terminated, truncated, info = env.step(expert.act(env.unwrapped.privileged_state()))
                if terminated or truncated:
                    break
            successes += info["success"]
    finally:
        env.close()
    assert successes >= 18, f"{task}: expert succeeded in {successes}/20 episodes"


def test_images_are_upright_and_shadows_off_by_default():
    import mujoco

    for shadows in (False, True):
        env = make_env(EnvConfig(task="robosuite/Lift", image_size=SMALL_IMAGE, shadows=shadows))
        try:
            obs, _ = env.reset(seed=0)
            flags = env.unwrapped.rs.sim._render_context_offscreen.scn.flags
            assert bool(flags[mujoco.mjtRndFlag.mjRND_SHADOW]) is shadows
            # robosuite renders bottom row first; ours is row 0 at the top, as the simulator's own camera sees it
            raw = env.unwrapped.rs.sim.render(camera_name="agentview", width=SMALL_IMAGE, height=SMALL_IMAGE)
            np.testing.assert_array_equal(obs["images"]["front"], raw[::-1])
        finally:
            env.close()


def test_any_robosuite_env_by_name_and_clear_errors():
    env = make_env(EnvConfig(task="robosuite/Door", cameras=[]))
    try:
        obs, info = env.reset(seed=0)
        assert obs["state"].shape == (22,) and info["task"] == "robosuite/Door"
        assert env.step(np.zeros(7, np.float32))[0]["state"].shape == (22,)
    finally:
        env.close()
    with pytest.raises(ConfigError, match="robosuite could not build 'Flyaway'"):
        make_env(EnvConfig(task="robosuite/Flyaway", cameras=[]))
    with pytest.raises(ConfigError, match="robosuite could not build 'Lift' with cameras"):
        make_env(EnvConfig(task="robosuite/Lift", cameras=["ceiling"]))
    with pytest.raises(ConfigError, match="robosuite could not build 'TwoArmLift'"):  # one arm only
        make_env(EnvConfig(task="robosuite/TwoArmLift", cameras=[]))


@pytest.mark.slow
def test_main_job_runs_end_to_end_on_robosuite_lift(tmp_path):
    """The quickstart job with the task switched by one override: collect, clone, critic, RL, evaluation."""
    from tests.runtime.training.test_rl import _train

    out = tmp_path / "job"
    res = _train(out, "--env.task=robosuite/Lift", "--rl.algo=chunk", "--rl.iterations=1",
                 "--rl.chunk.warmup_updates=5", "--rl.chunk.batch_size=16", "--rl.chunk.candidates=2",
                 "--rl.chunk.eval_best_of=2")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "robosuite/Lift" and summary["env_steps"] > 0
    for stage in ("demos.zarr", "bc", "critic", "rl/policy", "rl/online.zarr", "eval_after.json"):
        assert (out / stage).exists(), stage
