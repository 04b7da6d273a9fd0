"""Sim in the loop: the asynchronous run's actor drives a robot over DDS (``RosRobotEnv`` against an
``EnvBridge`` serving a simulated arm in this process), the learner trains on what the actor commits, and the
weights it publishes reach the acting policy; an operator who takes over at the bridge is recorded as such."""

from __future__ import annotations

import json
import random
import threading
import time

import numpy as np
import pytest
import torch

from robot_rl.config import EnvConfig
from robot_rl.envs import make_env
from robot_rl.replay.store import EpisodeStore
from robot_rl.runtime.robot.env_bridge import BridgeConfig, EnvBridge
from robot_rl.transport.convert import RobotTopics, chunk_to_msg
from robot_rl.transport.messages import Bool, Float64MultiArray, String
from tests.runtime.conftest import fresh_rl
from tests.runtime.training.test_offpolicy import _tiny_chunk_run

dds = pytest.importorskip("robot_rl.transport.dds", reason="the DDS backend needs the ros extra (cyclonedds)")


@pytest.mark.slow
def test_actor_driving_a_robot_over_dds_feeds_the_learner(tmp_path, tiny_chunk_job):
    out = fresh_rl(tiny_chunk_job, tmp_path / "job")
    env_config = EnvConfig(**json.loads((out / "job.json").read_text())["env"])
    domain = random.randint(1, 200)
    transport = dds.DDSTransport(domain_id=domain, interface="lo", peers=["127.0.0.1"])
    topics = RobotTopics(namespace="/sim_arm")
    bridge = EnvBridge(make_env(env_config), transport, BridgeConfig(realtime=False, topics=topics))
    executed, lock = [], threading.Lock()
    takeover = transport.publisher(topics.takeover, Bool)
    released = threading.Event()

    def on_step(msg: String) -> None:  # the operator lets go as soon as it sees its sixth step executed
        report = json.loads(msg.data)
        if report.get("answers") is not None:
            with lock:
                executed.append(report)
                if sum(r["intervention"] for r in executed) >= 6 and not released.is_set():
                    takeover.publish(Bool(data=False))
                    released.set()

    transport.subscribe(topics.step, String, on_step)
    op = np.array([0.0, 0.0, 0.6, 0, 0, 0, 1.0], np.float32)
    done = threading.Event()

    def operator() -> None:  # takes over after 10 executed steps and drives until on_step releases
        teleop = transport.publisher(topics.teleop_action, Float64MultiArray)
        while not done.is_set() and not released.is_set():
            with lock:  # never takes over again once on_step has let go
                if len(executed) >= 10 and not released.is_set():
                    teleop.publish(chunk_to_msg(op[None]))  # fresh every few ms: the bridge drops stale teleop
                    takeover.publish(Bool(data=True))
            time.sleep(0.01)

    driver = threading.Thread(target=operator, daemon=True)
    driver.start()
    try:
        res = _tiny_chunk_run(out, "--rl.iterations=3", "--rl.steps_per_iteration=4", "--rl.backend=local",
                              "--rl.distributed.publish_every=5", "--rl.distributed.robot.namespaces=[/sim_arm]",
                              f"--rl.distributed.robot.domain_id={domain}", "--rl.distributed.robot.interface=lo",
                              "--rl.distributed.robot.peers=[127.0.0.1]", "--rl.distributed.robot.timeout_s=30")
    finally:
        done.set()
        driver.join(timeout=5)
        bridge.close()
        transport.close()
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    actors = out / "rl" / "actors"
    assert sorted(p.name for p in actors.glob("actor_*.zarr")) == ["actor_0.zarr"]  # one actor: one robot
    with EpisodeStore.open(actors / "actor_0.zarr") as store:
        lengths = [int(n) for n in np.diff(np.concatenate([[0], store.episode_ends]))]
        versions = np.concatenate([store.read_episode(i, ["policy_version"])["policy_version"]
                                   for i in range(store.num_episodes)])
        actions = np.concatenate([store.read_episode(i, ["action"])["action"] for i in range(store.num_episodes)])
        flags = np.concatenate([store.read_episode(i, ["intervention"])["intervention"]
                                for i in range(store.num_episodes)])
    # every committed step was executed by the robot, with the action the store holds
    assert sum(lengths) <= len(executed)
    sent = np.array([r["action"] for r in executed[: len(actions)]], dtype=np.float32)
    np.testing.assert_allclose(sent, actions, atol=1e-5)
    # the operator's steps reached the store flagged, with the operator's action (not the policy's)
    reported = np.array([r["intervention"] for r in executed[: len(actions)]])
    np.testing.assert_array_equal(flags, reported)
    # it took over for 6 steps (one more may run while its release travels), in one stretch
    assert 6 <= flags.sum() <= 7 and np.count_nonzero(np.diff(flags.astype(int)) == 1) == 1
    np.testing.assert_allclose(actions[flags], np.tile(op, (int(flags.sum()), 1)), atol=1e-6)
    # weights the learner published reached the acting policy, and versions never went back
    assert versions.max() > 0 and (np.diff(versions) >= 0).all()
    status = json.loads((actors / "actor_0.status.json").read_text())
    assert status["version"] >= versions.max() and status["state"] == "stopped"
    state = torch.load(out / "rl" / "learner.pt", weights_only=True)
    # the learner took committed episodes in order until its budget (the robot acted on, unwaited for)
    taken = state["ingested"]["actor_0.zarr"]
    assert 0 < taken <= len(lengths)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] == state["env_steps"] == sum(lengths[:taken])
