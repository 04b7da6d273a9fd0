"""One Env contract for every registered task (native, robosuite, any other backend) and the ROS robot env:
gymnasium's checker, the documented spaces, determinism under a seed, reset after an episode ends, and a
clear refusal of NaN or wrongly shaped actions (nothing is simulated for them)."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from robot_rl.config.env import EnvConfig
from robot_rl.core.errors import ConfigError
from robot_rl.envs import get_task, make_env, make_expert, task_names
from robot_rl.envs.ros_robot import RosRobotEnv
from robot_rl.runtime.robot.env_bridge import BridgeConfig, EnvBridge
from robot_rl.transport import InProcBus, InProcTransport
from robot_rl.transport.convert import RobotTopics
from robot_rl.transport.messages import String
from tests.conftest import SMALL_IMAGE


def _param(task: str):
    marks = [pytest.mark.robosuite] if get_task(task).suite == "robosuite" else []
    return pytest.param(task, marks=marks, id=task)


ROBOT = "ros_robot:"  # a RosRobotEnv talking to an EnvBridge around a task's env, over the in-process transport
# LIBERO's 130 tasks are a family, not listed one by one: one stands for them here (they share one adapter;
# every task of the four headline suites is built, reset to its init states and stepped in test_libero.py)
LIBERO = [pytest.param("libero_spatial/0", marks=[pytest.mark.libero], id="libero_spatial/0")]
TASKS = [_param(t) for t in task_names()] + LIBERO + [
    pytest.param(ROBOT + "push", id="ros_robot:push"),
    pytest.param(ROBOT + "robosuite/Lift", marks=[pytest.mark.robosuite], id="ros_robot:robosuite/Lift"),
    pytest.param(ROBOT + "libero_spatial/0", marks=[pytest.mark.libero], id="ros_robot:libero_spatial/0")]


class _Robot:
    """The robot env and the bridge behind it (around ``task``'s env), closed together."""

    def __init__(self, task: str, **overrides) -> None:
        self.transport = InProcTransport(InProcBus())
        config = EnvConfig(task=task, image_size=SMALL_IMAGE, **overrides)
        self.bridge = EnvBridge(lambda: make_env(config), self.transport, BridgeConfig(realtime=False))  # built there
        self.env = RosRobotEnv(self.transport, timeout_s=10)

    def close(self) -> None:
        self.env.close()
        self.bridge.close()


def _make(task: str, **overrides):
    """(env, closer) for a registry entry or the robot env."""
    if task.startswith(ROBOT):
        robot = _Robot(task[len(ROBOT):], **overrides)
        return robot.env, robot.close
    env = make_env(EnvConfig(task=task, image_size=SMALL_IMAGE, **overrides))
    return env, env.close


@pytest.mark.parametrize("task", TASKS)
def test_gymnasium_checker_and_documented_spaces(task):
    env, close = _make(task)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any checker warning fails the test ...
            # ... but an unbounded proprio vector (joint velocities) is intended.
            warnings.filterwarnings("ignore", message=".*Box observation space m.* value is .*infinity")
            check_env(env.unwrapped, skip_render_check=True)
        obs, info = env.reset(seed=0)
        space = env.observation_space
        assert obs["state"].dtype == np.float32 and obs["state"].shape == space["state"].shape
        names = getattr(env.unwrapped, "state_names", None) or env.unwrapped.spec_info.get("state_names")
        assert names is None or len(names) == obs["state"].shape[0]
        assert set(obs["images"]) == {"front", "wrist"}
        for cam, img in obs["images"].items():
            assert img.shape == (SMALL_IMAGE, SMALL_IMAGE, 3) and img.dtype == np.uint8, cam
            assert img.std() > 0, f"camera {cam} renders a blank image"
        assert env.action_space.shape == (7,) and env.action_space.low.min() == -1 and env.action_space.high.max() == 1
        assert isinstance(info["success"], bool) and isinstance(info.get("instruction", ""), str)
    finally:
        close()


@pytest.mark.parametrize("task", TASKS)
def test_deterministic_under_a_seed(task):
    def run():
        env, close = _make(task)
        try:
            obs, _ = env.reset(seed=7)
            rng = np.random.default_rng(3)
            trace = [obs["state"], obs["images"]["front"]]
            for _ in range(6):
                obs, reward, *_ = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
                trace += [obs["state"], obs["images"]["wrist"], np.float32(reward)]
            other, _ = env.reset(seed=8)
            return trace, other["state"]
        finally:
            close()

    (first, other), (second, _) = run(), run()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other), "another seed starts the same episode"


def _end_by_success(task: str, env, robot: _Robot | None) -> tuple[bool, dict]:
    """Drive an episode to its successful end: the scripted expert, or on the robot the operator's label."""
    if robot is not None:
        robot.transport.publisher(RobotTopics().label, String).publish(String(data="success"))
        deadline = time.monotonic() + 5
        while robot.bridge._label is None:
            assert time.monotonic() < deadline, "the label never reached the bridge"
            time.sleep(0.01)
        *_, terminated, _, info = env.step(np.zeros(7, np.float32))
        return terminated, info
    expert = make_expert(task, noise=0.0, rng=np.random.default_rng(0))
    for _ in range(400):
        *_, terminated, truncated, info = env.step(expert.act(env.unwrapped.privileged_state()))
        if terminated or truncated:
            return terminated, info
    return False, {}


@pytest.mark.parametrize("task", TASKS)
def test_reset_after_truncated_and_after_terminated(task):
    env, close = _make(task, max_steps=3, cameras=[])
    try:
        env.reset(seed=0)
        zero = np.zeros(7, np.float32)
        results = [env.step(zero) for _ in range(3)]
        assert [r[3] for r in results] == [False, False, True] and not any(r[2] for r in results)
        obs, _ = env.reset(seed=1)
        assert env.step(zero)[0]["state"].shape == obs["state"].shape
    finally:
        close()
    robot_task = task[len(ROBOT):] if task.startswith(ROBOT) else None
    if robot_task is None and get_task(task).make_expert is None:
        return  # no way to reach success without a policy: truncation above is its contract
    robot = _Robot(robot_task, cameras=[]) if robot_task else None
    env, close = (robot.env, robot.close) if robot else _make(task, cameras=[])
    try:
        env.reset(seed=0)
        terminated, info = _end_by_success(task, env, robot)
        assert terminated and info["success"], f"{task}: the episode did not end by success"
        _, info = env.reset(seed=1)
        assert info["success"] is False
        assert np.all(np.isfinite(env.step(np.zeros(7, np.float32))[0]["state"]))
    finally:
        close()


@pytest.mark.parametrize("task", TASKS)
def test_bad_actions_are_refused_before_anything_is_simulated(task):
    env, close = _make(task, cameras=[])
    try:
        zero = np.zeros(7, np.float32)
        env.reset(seed=0)
        clean = env.step(zero)[0]["state"]
        env.reset(seed=0)
        for bad, match in ((np.zeros(6), r"shape \(7,\)"), (np.full(7, np.nan), "NaN"),
                           (np.array([0, 0, np.inf, 0, 0, 0, 0]), "NaN or inf")):
            with pytest.raises(ConfigError, match=match):
                env.step(bad)
        # the refused actions moved nothing: the next step lands where it lands without them
        np.testing.assert_array_equal(env.step(zero)[0]["state"], clean)
    finally:
        close()
