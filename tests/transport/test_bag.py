"""Recording a robot's topics as rosbag2 (MCAP) and importing them as episodes: `robot-rl record` as a real
process over DDS against an EnvBridge on a native task, a teleop episode and a policy episode, a clean stop
and a killed recorder, then `robot-rl import-bag` and a replay of the imported actions in a local env."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

dds = pytest.importorskip("robot_rl.transport.dds", reason="the DDS transport needs the ros extra (cyclonedds)")
bag = pytest.importorskip("robot_rl.transport.bag", reason="recording bags needs the ros extra (rosbags)")

from robot_rl.replay.store import EpisodeStore  # noqa: E402
from robot_rl.runtime.robot.env_bridge import BridgeConfig, EnvBridge  # noqa: E402
from robot_rl.transport import QoS, ServiceClient  # noqa: E402
from robot_rl.transport.convert import RobotTopics, chunk_to_msg  # noqa: E402
from robot_rl.transport.messages import Bool, Float64MultiArray, JointState, String  # noqa: E402
from tests.cli.test_cli import ROBOT_RL, assert_clean_error, run  # noqa: E402
from tests.conftest import small_env  # noqa: E402

pytestmark = pytest.mark.slow
TOPICS = RobotTopics()
STEPS = 8


class Robot:
    """An EnvBridge on the push task over DDS, and the operator's and a policy's sides of it."""

    def __init__(self, domain: int) -> None:
        self.t = dds.DDSTransport(domain_id=domain, interface="lo", peers=["127.0.0.1"])
        self.bridge = EnvBridge(small_env("push", max_steps=STEPS), self.t, BridgeConfig(realtime=True),
                                control_hz=20)
        self.reports: list[dict] = []
        self.t.subscribe(TOPICS.step, String, lambda m: self.reports.append(json.loads(m.data)), QoS(depth=1000))
        self.client = ServiceClient(self.t, TOPICS.episode)
        self.actions = self.t.publisher(TOPICS.action, Float64MultiArray)
        self.takeover = self.t.publisher(TOPICS.takeover, Bool)
        self.teleop = self.t.publisher(TOPICS.teleop_action, Float64MultiArray)

    def episode(self, seed: int, operator: bool, wait_end: bool = True) -> np.ndarray:
        """Run one episode (the operator's or a chunk of policy actions); returns the actions sent."""
        rng = np.random.default_rng(seed)
        actions = rng.uniform(-0.5, 0.5, (STEPS, 7)).astype(np.float32)
        n = len(self.reports)
        stop = threading.Event()
        if operator:
            self.takeover.publish(Bool(data=True))
            time.sleep(0.2)

            def drive():  # a teleop device streams at 50 Hz; this one always commands the first action
                while not stop.is_set():
                    self.teleop.publish(Float64MultiArray(data=actions[0].astype(np.float64)))
                    stop.wait(0.02)
            threading.Thread(target=drive, daemon=True).start()
            time.sleep(0.1)
        else:
            self.takeover.publish(Bool(data=False))
            time.sleep(0.2)
        first = self.client.call({"op": "reset", "seed": seed}, timeout=30)
        if not operator:
            from robot_rl.transport.messages import Time

            self.actions.publish(chunk_to_msg(actions, stamp=Time(sec=first["stamp"][0], nanosec=first["stamp"][1])))
        deadline = time.monotonic() + 20
        while wait_end and not any(r["terminated"] or r["truncated"] for r in self.reports[n:]):
            assert time.monotonic() < deadline, "the episode did not end"
            time.sleep(0.02)
        stop.set()
        return actions

    def close(self) -> None:
        self.bridge.close()
        self.t.close()


def _record(out, domain: int) -> subprocess.Popen:
    proc = subprocess.Popen([str(ROBOT_RL), "record", "--out", str(out), "--domain-id", str(domain),
                             "--interface", "lo", "--peers", "127.0.0.1", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    line = proc.stdout.readline()
    assert line.startswith("recording /robot"), line + proc.stderr.read()
    time.sleep(1.5)  # discovery: the recorder's readers match the bridge's writers
    return proc


def _replays_exactly(store: EpisodeStore, index: int, seed: int) -> None:
    """The imported actions, replayed from the same seed in a local env, give the imported observations."""
    steps = store.read_episode(index)
    env = small_env("push", max_steps=STEPS)
    try:
        obs, _ = env.reset(seed=seed)
        for i, action in enumerate(steps["action"]):
            np.testing.assert_allclose(steps["obs/state"][i], obs["state"], atol=1e-5)
            for cam in ("front", "wrist"):
                assert np.array_equal(steps[f"obs/images/{cam}"][i], obs["images"][cam]), (index, i, cam)
            obs, *_ = env.step(action)
    finally:
        env.close()


def test_record_and_import_teleop_and_policy_episodes(tmp_path):
    domain = random.randint(1, 200)
    robot = Robot(domain)
    out, killed = tmp_path / "session", tmp_path / "killed"
    try:
        rec = _record(out, domain)
        teleop = robot.episode(seed=3, operator=True)
        n = len(robot.reports)
        policy = robot.episode(seed=4, operator=False)
        policy_reports = [r for r in robot.reports[n:] if r["step"] > 0]
        time.sleep(0.8)  # the recorder writes with a 0.5 s lag
        rec.send_signal(signal.SIGINT)
        stdout, stderr = rec.communicate(timeout=30)
        assert rec.returncode == 0, stderr
        summary = json.loads(stdout.strip().splitlines()[-1])
        assert summary["episodes"] == 2 and summary["bags"] == 2, summary
        assert summary["messages"]["/robot/front/image_raw"] == 2 * (STEPS + 1)

        rec = _record(killed, domain)  # one whole episode, then killed during the next
        robot.episode(seed=5, operator=False)
        robot.episode(seed=6, operator=False, wait_end=False)
        deadline = time.monotonic() + 20  # killed once the first bag is closed and the second one begun
        while not ((killed / "bag_0000" / "metadata.yaml").is_file() and list(killed.glob("bag_0001/*.mcap"))):
            assert time.monotonic() < deadline, "the recorder did not start a bag for the second episode"
            time.sleep(0.05)
        rec.send_signal(signal.SIGKILL)
        rec.wait(timeout=10)
    finally:
        robot.close()
    assert sorted(p.name for p in out.iterdir()) == ["bag_0000", "bag_0001"]

    # what ROS 2 reads: each bag is rosbag2 v9 on MCAP
    meta = (out / "bag_0000" / "metadata.yaml").read_text()
    assert "storage_identifier: mcap" in meta and "version: 9" in meta
    states = [m for t, m, _ in bag.read_bag(out / "bag_0000", {TOPICS.state})]
    assert len(states) == STEPS + 1 and all(isinstance(m, JointState) and m.position.shape == (22,) for m in states)

    store_path = tmp_path / "imported.zarr"
    proc = run("import-bag", str(out), "--out", str(store_path), "--quiet")
    assert f"imported 2 episodes ({2 * STEPS} steps, {STEPS} operator steps)" in proc.stdout, proc.stdout
    with EpisodeStore.open(store_path) as store:
        first, second = store.episode_meta(0), store.episode_meta(1)
        assert (first.source, second.source) == ("human", "policy")
        assert first.task == "push" and first.instruction.startswith("push the red cube")
        steps = [store.read_episode(i) for i in (0, 1)]
        assert steps[0]["intervention"].all() and not steps[1]["intervention"].any()
        assert steps[0]["truncated"][-1] and not steps[0]["truncated"][:-1].any()
        # the operator held one action the whole time (bar a hold before the first teleop message arrived)
        assert (np.abs(steps[0]["action"] - teleop[0]).max(axis=1) < 1e-6).sum() >= STEPS - 1
        # what the arm executed, holds included (the bridge may tick once before the chunk arrives) ...
        np.testing.assert_allclose(steps[1]["action"], [r["action"] for r in policy_reports], atol=1e-6)
        # ... and the policy's chunk, in order, on the steps it drove
        acted = np.array([r["held"] is None for r in policy_reports])
        assert acted.sum() >= STEPS // 2  # a loaded machine may make the arm hold for a late chunk
        np.testing.assert_allclose(steps[1]["action"][acted], policy[: acted.sum()], atol=1e-6)
        assert store.env_config["task"] == "push" and store.env_config["image_size"] == 32
        _replays_exactly(store, 0, seed=3)
        _replays_exactly(store, 1, seed=4)

    # a killed recorder loses only the episode in progress; the store is refused, never half-written
    assert list(killed.glob("bag_0001/*.mcap")) and not (killed / "bag_0001" / "metadata.yaml").exists()
    proc = run("import-bag", str(killed), "--out", str(store_path), "--append", "--quiet")
    assert "imported 1 episodes" in proc.stdout
    assert "bag_0001" in proc.stderr and "not closed" in proc.stderr
    with EpisodeStore.open(store_path) as store:
        assert store.num_episodes == 3
        _replays_exactly(store, 2, seed=5)

    assert_clean_error(run("import-bag", str(out), "--out", str(store_path), check=False), "already exists")
    assert_clean_error(run("import-bag", str(tmp_path), "--out", str(tmp_path / "x.zarr"), check=False),
                       "no rosbag2 bag in")
    assert not (tmp_path / "x.zarr").exists()
