"""LIBERO through our adapter, in its own venv (`make test` runs these with .venv-libero and the scene assets;
elsewhere they skip saying why). Images come from substitute assets for 15 files (../shared/libero-assets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from robot_rl.config.env import EnvConfig
from robot_rl.core.errors import ConfigError
from robot_rl.envs import get_task, make_env

pytestmark = pytest.mark.libero
HEADLINE = ("libero_spatial", "libero_object", "libero_goal", "libero_10")


@pytest.fixture(autouse=True)
def _libero_config(tmp_path, monkeypatch):
    monkeypatch.setenv("LIBERO_CONFIG_PATH", str(tmp_path / "libero_config"))  # written by the adapter


@pytest.mark.slow
@pytest.mark.parametrize("suite", HEADLINE)
def test_every_task_builds_resets_to_its_init_states_and_steps(suite):
    from robot_rl.envs.libero.env import suite_tasks

    tasks = suite_tasks(suite)
    assert len(tasks) == 10
    for task in tasks:
        env = make_env(EnvConfig(task=task, cameras=[]))
        try:
            n = len(env.unwrapped.init_states)
            assert n == 50, f"{task} has {n} init states"
            for i in range(n):  # ~0.05 s each without cameras
                obs, info = env.reset(options={"init_state": i})
                assert info["instruction"] == get_task(task).instruction and info["instruction"], task
                assert env.unwrapped.init_state == i and not info["success"]
                after, reward, terminated, truncated, _ = env.step(np.zeros(7, np.float32))
                assert np.all(np.isfinite(after["state"])) and reward == 0.0 and not terminated, (task, i)
        finally:
            env.close()


def test_observations_init_states_and_errors():
    env = make_env(EnvConfig(task="libero_spatial/0", image_size=32))
    try:
        a, _ = env.reset(seed=7)
        b, _ = env.reset(options={"init_state": 7})
        np.testing.assert_array_equal(a["state"], b["state"])  # seed s starts from init state s % 50
        c, _ = env.reset(seed=57)
        np.testing.assert_array_equal(a["state"], c["state"])
        assert a["state"].shape == (22,) and set(a["images"]) == {"front", "wrist"}
        assert a["images"]["front"].shape == (32, 32, 3) and a["images"]["front"].std() > 0
        assert env.unwrapped.max_steps == 110  # LIBERO's 220 steps at 20 Hz, at our 10 Hz
        with pytest.raises(ConfigError, match="init states 0..49, got 50"):
            env.reset(options={"init_state": 50})
    finally:
        env.close()
    with pytest.raises(ConfigError, match="libero_spatial has tasks 0..9, got 10"):
        make_env("libero_spatial/10")
    with pytest.raises(ConfigError, match="named libero_goal/<index>"):
        make_env("libero_goal/first")


@pytest.mark.slow
def test_eval_over_a_suite_writes_the_per_task_table(tmp_path):
    """`robot-rl eval --suite libero_spatial --episodes 1` with a tiny random policy (episodes cut at 10 steps:
    the table is what is tested, and the full 110-step episodes cost CI 90 s)."""
    from robot_rl.policy import make_policy, policy_class
    from robot_rl.policy.config import PolicyFeatures

    cls = policy_class("flow")
    features = PolicyFeatures(cameras=["front", "wrist"], image_size=32, state_dim=22, action_dim=7)
    policy = make_policy("flow", cls.config_cls(features=features, hidden_dim=32, n_blocks=1, image_feature_dim=8,
                                                horizon=4, n_action_steps=4))
    policy.save(tmp_path / "policy")
    out = tmp_path / "table"
    res = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "eval", "--checkpoint", str(tmp_path / "policy"),
                          "--suite", "libero_spatial", "--episodes", "1", "--max-steps", "10", "--out", str(out),
                          "--json"],
                         capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads(res.stdout)  # nothing but the JSON on stdout
    assert result["tasks"] == 10 and len(result["per_task"]) == 10
    rows = (out / "suite_libero_spatial.csv").read_text().splitlines()
    assert rows[0].startswith("task,instruction,success_rate") and len(rows) == 11
    assert rows[1].startswith("libero_spatial/0,pick up the black bowl")
    assert json.loads((out / "suite_libero_spatial.json").read_text())["episodes_per_task"] == 1
    assert all(row["mean_length"] <= 10 for row in result["per_task"])  # --max-steps reached the envs
    assert (out / "suite_libero_spatial.png").stat().st_size > 1000
