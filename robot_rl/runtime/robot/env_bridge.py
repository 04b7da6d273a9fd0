"""Any robot_rl Env exposed on ROS 2 topics as a real arm would be: state, joint states and camera images
out, action chunks in, episode control as request/reply, an e-stop, a teleop takeover, and a watchdog.

The robot's side of the loop. It steps the env at ``control_hz`` from the queue of the last action chunk
received; with no fresh action (none yet, the chunk used up, or older than ``action_timeout_s``), after
an e-stop, or between episodes, it holds still: delta dims zero, absolute ones (the gripper) kept.
Each step is reported on ``robot_rl/step`` (JSON: reward, done flags, the action executed, whether an
operator or the watchdog chose it) with the same header stamp as that step's observation messages.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from robot_rl.core.errors import ConfigError
from robot_rl.transport import SENSOR_DATA, ServiceServer, Transport
from robot_rl.transport.convert import (
    RobotTopics,
    image_to_compressed,
    image_to_msg,
    msg_to_chunk,
    state_to_msg,
)
from robot_rl.transport.messages import Bool, Float64MultiArray, Header, JointState, String

log = logging.getLogger(__name__)


@dataclass
class BridgeConfig:
    """How the bridge drives its env and keeps it safe."""

    topics: RobotTopics = field(default_factory=RobotTopics)
    """Topic names and image transport."""
    action_timeout_s: float = 0.5
    """Watchdog: an action executed more than this after it was due (its chunk's arrival plus its index in
    the chunk over the control rate) is dropped with the rest of its chunk; the arm holds still."""
    action_limit: float = 1.0
    """Every executed action is clipped to [-action_limit, action_limit] (the env's own box is [-1, 1])."""
    absolute_dims: list[int] = field(default_factory=lambda: [6])
    """Action dims that are absolute commands (the gripper): holding keeps their last value, not zero."""
    jpeg_quality: int = 90
    """JPEG quality with ``topics.image_transport = jpeg``."""
    realtime: bool = True
    """Step on a clock at the env's control rate (a real arm). False: step as soon as an action is queued
    and never on a hold (lock-step simulation, as fast as the consumer)."""

    def validate(self) -> None:
        if self.action_timeout_s <= 0:
            raise ConfigError(f"action_timeout_s must be > 0, got {self.action_timeout_s}")
        if not 0 < self.action_limit <= 1:
            raise ConfigError(f"action_limit must be in (0, 1], got {self.action_limit}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")


def state_names(env: gym.Env, dim: int) -> list[str]:
    names = getattr(env.unwrapped, "state_names", None)
    return list(names) if names is not None and len(names) == dim else [f"s{i}" for i in range(dim)]


class EnvBridge:
    """Serves ``env`` on ``transport`` until :meth:`close`, which also closes the env. Every env call runs
    on the bridge's thread; pass a factory (``lambda: make_env(config)``) to build the env there too, as envs
    whose renderer is bound to its thread need (robosuite, LIBERO). ``control_hz`` defaults to the env's rate."""

    def __init__(self, env: gym.Env | Callable[[], gym.Env], transport: Transport, config: BridgeConfig | None = None,
                 control_hz: float | None = None) -> None:
        self.transport = transport
        self._closed, self._serving = threading.Event(), threading.Event()
        self._built: queue.SimpleQueue = queue.SimpleQueue()
        factory = None if isinstance(env, gym.Env) else env
        self.env = env if factory is None else None
        self._thread = threading.Thread(target=self._run, args=(factory,), name="env-bridge", daemon=True)
        self._thread.start()
        if factory is not None:
            built = self._built.get()
            if isinstance(built, BaseException):
                raise built
            self.env = built
        try:
            self._setup(self.env, transport, config, control_hz)
        except BaseException:
            self._closed.set()
            self._serving.set()
            raise
        self._serving.set()

    def _setup(self, env: gym.Env, transport: Transport, config: BridgeConfig | None, control_hz: float | None) -> None:
        self.cfg = config or BridgeConfig()
        self.cfg.validate()
        self.topics = self.cfg.topics
        self.action_dim = int(np.prod(env.action_space.shape))
        bad = [d for d in self.cfg.absolute_dims if not 0 <= d < self.action_dim]
        if bad:
            raise ConfigError(f"absolute_dims {bad} are outside the action's {self.action_dim} dims")
        self.control_hz = float(control_hz or env.metadata.get("render_fps", 10.0))
        space = env.observation_space
        self.cameras = list(space["images"].spaces) if "images" in space.spaces else []
        self.state_dim = int(space["state"].shape[0])
        self.state_names = state_names(env, self.state_dim)
        self.joint_names = list(getattr(env.unwrapped, "joint_names", []))

        self._lock = threading.RLock()  # env, episode state
        self._queue: deque[np.ndarray] = deque()
        self._queue_stamp: Any = None
        self._action_at = 0.0
        self._queue_index = 0
        self._last_action = np.zeros(self.action_dim, np.float32)
        self._estop = False
        self._takeover = False
        self._operated_last = False  # the last executed step was the operator's
        self._label: str | None = None  # the operator's outcome label, applied at the next step
        self._teleop: np.ndarray | None = None
        self._teleop_at = 0.0
        self.episode, self.steps, self.active = -1, 0, False
        self._wake = threading.Event()
        self._calls: queue.SimpleQueue = queue.SimpleQueue()

        # Reliable writers match reliable and best-effort readers alike.
        self._pub_images = {c: transport.publisher(self.topics.image(c), self.topics.image_type) for c in self.cameras}
        self._pub_state = transport.publisher(self.topics.state, JointState)
        self._pub_joints = transport.publisher(self.topics.joint_states, JointState, SENSOR_DATA)
        self._pub_step = transport.publisher(self.topics.step, String)
        self._subs = [
            transport.subscribe(self.topics.action, Float64MultiArray, self._on_action),
            transport.subscribe(self.topics.estop, Bool, self._on_estop),
            transport.subscribe(self.topics.takeover, Bool, self._on_takeover),
            transport.subscribe(self.topics.teleop_action, Float64MultiArray, self._on_teleop),
            transport.subscribe(self.topics.label, String, self._on_label),
        ]
        self._service = ServiceServer(transport, self.topics.episode, self._on_request)

    # ------------------------------------------------------------------------------------ inputs
    def _on_action(self, msg: Float64MultiArray) -> None:
        chunk, stamp = msg_to_chunk(msg, self.action_dim)  # raises on a malformed chunk: logged, dropped
        with self._lock:
            self._queue = deque(chunk)
            self._queue_stamp, self._action_at, self._queue_index = stamp, time.monotonic(), 0
        self._wake.set()

    def _on_estop(self, msg: Bool) -> None:
        with self._lock:
            if msg.data and not self._estop:
                log.warning("e-stop engaged: holding still until released")
            self._estop = bool(msg.data)
            if self._estop:
                self._queue.clear()

    def _on_takeover(self, msg: Bool) -> None:
        with self._lock:
            self._takeover = bool(msg.data)

    def _on_label(self, msg: String) -> None:
        if msg.data not in ("success", "failure"):
            raise ConfigError(f"an operator label must be 'success' or 'failure', got {msg.data!r}")
        with self._lock:
            self._label = msg.data if self.active else None

    def _on_teleop(self, msg: Float64MultiArray) -> None:
        chunk, _ = msg_to_chunk(msg, self.action_dim)
        with self._lock:
            self._teleop, self._teleop_at = chunk[0], time.monotonic()
        self._wake.set()

    def _on_request(self, request: dict) -> dict:
        op = request.get("op")
        if op == "spec":
            return self.spec()
        if op == "reset":
            seed = request.get("seed")
            if seed is not None and not isinstance(seed, int):
                raise ConfigError(f"reset seed must be an integer or null, got {seed!r}")
            return self.reset(seed)
        if op == "stop":
            with self._lock:
                self.active = False
                self._queue.clear()
            return {"episode": self.episode, "step": self.steps}
        raise ConfigError(f"unknown episode request op {op!r}; expected 'spec', 'reset' or 'stop'")

    def _on_loop(self, fn, timeout: float = 60.0) -> Any:
        """Run ``fn`` on the bridge's own thread: renderers (EGL/OSMesa contexts) and real-arm drivers are
        bound to the thread that made them."""
        future: Future = Future()
        self._calls.put((fn, future))
        self._wake.set()
        return future.result(timeout=timeout)

    # ------------------------------------------------------------------------------------- episode
    @property
    def task_name(self) -> str:
        return getattr(getattr(self.env.unwrapped, "task", None), "name", "")

    def spec(self) -> dict:
        return {"action_dim": self.action_dim, "cameras": self.cameras, "state_dim": self.state_dim,
                "state_names": self.state_names, "control_hz": self.control_hz,
                "image_shape": list(self.env.observation_space["images"][self.cameras[0]].shape) if self.cameras
                else None, "task": self.task_name, "instruction": getattr(self.env.unwrapped, "instruction", ""),
                "realtime": self.cfg.realtime, "image_transport": self.topics.image_transport}

    def reset(self, seed: int | None = None) -> dict:
        """Start an episode (on the bridge's thread); returns its first step report and instruction."""
        return self._on_loop(lambda: self._reset(seed))

    def _reset(self, seed: int | None) -> dict:
        with self._lock:
            obs, info = self.env.reset(seed=seed)
            self.episode += 1
            self.steps, self.active, self._operated_last = 0, True, False
            self._queue.clear()
            self._label = None
            self._last_action = np.zeros(self.action_dim, np.float32)
            header = self._publish_obs(obs)
            # the first report names the episode's task, so a recording of the topics is self-contained
            report = self._report(header, 0.0, False, False, bool(info.get("success", False)), None, None, None,
                                  task=self.task_name, control_hz=self.control_hz,
                                  instruction=info.get("instruction", getattr(self.env.unwrapped, "instruction", "")))
        return report

    # ---------------------------------------------------------------------------------------- loop
    def _choose(self) -> tuple[np.ndarray | None, str | None, Any, bool]:
        """(action, why held or None, stamp of the chunk it came from, operator's?) for the next step."""
        now = time.monotonic()
        if self._estop:
            return None, "estop", None, False
        if self._takeover:
            if self._teleop is None or now - self._teleop_at > self.cfg.action_timeout_s:
                return None, "stale_teleop", None, True
            stamp = None
            if self._queue:  # the operator's action answers the policy's (the rest of its chunk is dropped)
                stamp = self._queue_stamp
                self._queue.clear()
            elif not self.cfg.realtime:
                return None, "awaiting_action", None, True  # lock-step: time moves on the client's action only
            return self._teleop, None, stamp, True
        if not self._queue:
            return None, "no_action", None, False
        # action i of a chunk is due i periods after the chunk came; later than the timeout past that, the
        # sender has fallen behind or died, and the rest of the chunk is dropped
        due = self._action_at + self._queue_index / self.control_hz
        if now - due > self.cfg.action_timeout_s:
            self._queue.clear()
            return None, "stale_action", None, False
        self._queue_index += 1
        return self._queue.popleft(), None, self._queue_stamp, False

    def _hold(self) -> np.ndarray:
        hold = np.zeros(self.action_dim, np.float32)
        hold[self.cfg.absolute_dims] = self._last_action[self.cfg.absolute_dims]
        return hold

    def _run(self, factory: Callable[[], gym.Env] | None) -> None:
        if factory is not None:
            try:
                self.env = factory()
            except BaseException as exc:  # noqa: BLE001 - raised in the constructor
                self._built.put(exc)
                return
            self._built.put(self.env)
        self._serving.wait()
        try:
            if not self._closed.is_set():
                self._loop()
        finally:
            self.env.close()  # on the thread that made its renderers

    def _loop(self) -> None:
        period = 1.0 / self.control_hz
        next_tick = time.monotonic()
        while not self._closed.is_set():
            if self.cfg.realtime:
                next_tick += period
                delay = next_tick - time.monotonic()
                if delay < -period:  # fell far behind (a slow reset): do not try to catch up
                    next_tick = time.monotonic()
                elif delay > 0:
                    self._closed.wait(delay)
            else:
                self._wake.wait(0.05)
                self._wake.clear()
            while not self._calls.empty():
                fn, future = self._calls.get()
                try:
                    future.set_result(fn())
                except Exception as exc:  # noqa: BLE001 - handed to the caller
                    future.set_exception(exc)
            with self._lock:
                if not self.active or self._closed.is_set():
                    continue
                action, held, stamp, operator = self._choose()
                if held is not None and not self.cfg.realtime:
                    continue  # lock-step: time only moves on an action
                try:
                    self._step(action, held, stamp, operator)
                except Exception as exc:  # noqa: BLE001 - the bridge must stay up for the next reset
                    log.error("env step failed, episode %d stopped: %s: %s", self.episode, type(exc).__name__, exc)
                    self.active = False

    def _step(self, action: np.ndarray | None, held: str | None, stamp: Any, operator: bool) -> None:
        executed = self._hold() if action is None else np.clip(action, -self.cfg.action_limit, self.cfg.action_limit)
        obs, reward, terminated, truncated, info = self.env.step(executed.astype(np.float32))
        self._last_action = executed.astype(np.float32)
        self.steps += 1
        header = self._publish_obs(obs)
        success, label, self._label = bool(info.get("success", False)), self._label, None
        if label is not None:  # the operator's word ends the episode, whatever the task's own check says
            terminated, truncated, success = True, False, label == "success"
        if terminated or truncated:
            self.active = False
            self._queue.clear()
        extra: dict[str, Any] = {"label": label} if label is not None else {}
        if self._operated_last and not operator:
            # the first policy step after the operator let go: a client that had not yet heard the hand-back
            # when it sent this action learns from the report that its chunk predates the takeover
            extra["handed_back"] = True
        self._operated_last = bool(operator)
        self._report(header, float(reward), bool(terminated), bool(truncated), success, held, stamp, operator,
                     executed, **extra)

    def _publish_obs(self, obs: dict[str, Any]) -> Header:
        header = Header.now("base")
        for cam, pub in self._pub_images.items():
            h = Header(stamp=header.stamp, frame_id=cam)
            image = obs["images"][cam]
            if self.topics.image_transport == "jpeg":
                pub.publish(image_to_compressed(image, self.cfg.jpeg_quality, h))
            else:
                pub.publish(image_to_msg(image, h))
        self._pub_state.publish(state_to_msg(obs["state"], self.state_names, header))
        joints = getattr(self.env.unwrapped, "joint_state", None)
        if callable(joints):
            pos, vel = joints()
            self._pub_joints.publish(JointState(header=header, name=self.joint_names, position=pos, velocity=vel))
        return header

    def _report(self, header: Header, reward: float, terminated: bool, truncated: bool, success: bool,
                held: str | None, stamp: Any, operator: bool | None, executed: np.ndarray | None = None,
                **extra: Any) -> dict:
        report = {"episode": self.episode, "step": self.steps, "stamp": [header.stamp.sec, header.stamp.nanosec],
                  "reward": reward, "terminated": terminated, "truncated": truncated, "success": success,
                  "held": held, "intervention": bool(operator),
                  "answers": None if stamp is None else [stamp.sec, stamp.nanosec],
                  "action": None if executed is None else [float(x) for x in executed], **extra}
        self._pub_step.publish(String(data=json.dumps(report)))
        return report

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)
        self._service.close()
        for sub in self._subs:
            sub.close()

