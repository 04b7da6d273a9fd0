"""``RosRobotEnv``: a gymnasium Env whose steps go over a transport to an ``EnvBridge`` (a simulated arm)
or to a real robot stack that speaks the same topics, so training and evaluation code run unchanged
against a robot.

``reset`` asks the robot for a new episode (``robot_rl/episode`` request/reply); ``step`` publishes a
one-action chunk tagged with the stamp of the observation it answers and waits for the robot's step
report that executed it, then for that step's state and images (all stamped alike).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

import gymnasium as gym
import numpy as np

from robot_rl.core.errors import ConfigError
from robot_rl.transport import ServiceClient, Transport, TransportError
from robot_rl.transport.convert import RobotTopics, chunk_to_msg
from robot_rl.transport.messages import Bool, Float64MultiArray, String, Time
from robot_rl.transport.observations import StampedObservations, stamp_key

_KEEP = 64  # step reports kept until their step() collects them


class RosRobotEnv(gym.Env):
    """A robot on ROS 2 topics as a gymnasium Env (dict observations like the native tasks')."""

    metadata = {"render_modes": []}

    def __init__(self, transport: Transport, topics: RobotTopics | None = None, timeout_s: float = 10.0,
                 owns_transport: bool = False) -> None:
        self.topics, self.timeout_s = topics or RobotTopics(), timeout_s
        self._transport = transport if owns_transport else None  # closed with the env
        self._client = ServiceClient(transport, self.topics.episode)
        self._cond = threading.Condition()
        self._reports: OrderedDict[tuple[int, int], dict] = OrderedDict()  # by the stamp their action answered
        self._step_sub = transport.subscribe(self.topics.step, String, self._on_step)
        self._takeover_now, self._operator_acted = False, False
        self._handback_late = False  # the robot reported a hand-back this env had not heard when it acted
        self._takeover_sub = transport.subscribe(self.topics.takeover, Bool, self._on_takeover)
        self.spec_info = self._client.call({"op": "spec"}, timeout=timeout_s)
        self.cameras = list(self.spec_info["cameras"])
        if self.spec_info.get("image_transport", "raw") != self.topics.image_transport:
            raise ConfigError(f"the robot publishes {self.spec_info['image_transport']} images, this env expects "
                              f"{self.topics.image_transport}")
        self.action_dim, self.state_dim = int(self.spec_info["action_dim"]), int(self.spec_info["state_dim"])
        self._observations = StampedObservations(transport, self.topics, self.cameras, self.state_dim, keep=_KEEP)
        self._action_pub = transport.publisher(self.topics.action, Float64MultiArray)
        self.instruction = self.spec_info.get("instruction", "")
        self.metadata = {**self.metadata, "render_fps": self.spec_info["control_hz"]}
        spaces: dict[str, gym.Space] = {"state": gym.spaces.Box(-np.inf, np.inf, (self.state_dim,), np.float32)}
        if self.cameras:
            shape = tuple(self.spec_info["image_shape"])
            spaces["images"] = gym.spaces.Dict({c: gym.spaces.Box(0, 255, shape, np.uint8) for c in self.cameras})
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.action_dim,), np.float32)
        self._stamp: Time | None = None
        self._done = True

    # --------------------------------------------------------------------------------- receiving
    def _on_step(self, msg: String) -> None:
        report = json.loads(msg.data)
        if report.get("answers") is None:
            return
        with self._cond:
            self._reports[tuple(report["answers"])] = report
            while len(self._reports) > _KEEP:
                self._reports.popitem(last=False)
            self._cond.notify_all()

    def _on_takeover(self, msg: Bool) -> None:
        self._takeover_now = bool(msg.data)

    def handback_pending(self) -> bool:
        """The operator drove the last step and has let go: the chunk executor should ask the policy for a
        fresh chunk from the current observation (the rest of the old one was planned before the takeover).

        The release travels on its own topic, so it can reach the robot before this env: the robot then runs one
        more action of the old chunk and flags that step ``handed_back``, and the chunk stops after it (at most
        one stale step). Answers True once per hand-back: the caller is expected to stop its chunk."""
        if self._handback_late:
            self._handback_late = False
            return True
        if self._operator_acted and not self._takeover_now:
            self._operator_acted = False
            return True
        return False

    def _report_for(self, answers: tuple[int, int]) -> dict:
        with self._cond:
            if not self._cond.wait_for(lambda: answers in self._reports, timeout=self.timeout_s):
                raise TransportError(f"no step report for the action sent from the robot on {self.topics.namespace} "
                                     f"within {self.timeout_s} s")
            return self._reports[answers]

    # --------------------------------------------------------------------------------------- API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        reply = self._client.call({"op": "reset", "seed": seed}, timeout=self.timeout_s)
        key = tuple(reply["stamp"])
        self._stamp, self._done, self._operator_acted = Time(sec=key[0], nanosec=key[1]), False, False
        self._handback_late = False
        obs = self._observations.wait(key, self.timeout_s)
        return obs, {"success": reply["success"], "instruction": reply.get("instruction", self.instruction),
                     "task": self.spec_info.get("task", "")}

    def step(self, action: np.ndarray):
        if self._done or self._stamp is None:
            raise ConfigError("step() called before reset() or after the episode ended")
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (self.action_dim,):
            raise ConfigError(f"action must have shape ({self.action_dim},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ConfigError(f"action contains NaN or inf: {action.tolist()}")
        answers = stamp_key(self._stamp)
        sent_under_takeover = self._takeover_now
        self._action_pub.publish(chunk_to_msg(action[None], stamp=self._stamp))
        report = self._report_for(answers)
        key = tuple(report["stamp"])
        obs = self._observations.wait(key, self.timeout_s)
        self._stamp = Time(sec=key[0], nanosec=key[1])
        terminated, truncated = bool(report["terminated"]), bool(report["truncated"])
        self._done = terminated or truncated
        executed = np.asarray(report["action"], np.float32)
        self._operator_acted = bool(report["intervention"])
        # the robot's first policy step after the operator let go ran an action sent before this env heard of it
        self._handback_late = bool(report.get("handed_back")) and sent_under_takeover
        info = {"success": report["success"], "intervention": report["intervention"], "executed_action": executed,
                "taken_action": executed, "instruction": self.instruction}
        if report.get("label") is not None:
            info["operator_label"] = report["label"]
        return obs, float(report["reward"]), terminated, truncated, info

    def close(self) -> None:
        self._step_sub.close()
        self._takeover_sub.close()
        self._observations.close()
        self._client.close()
        if self._transport is not None:
            self._transport.close()
