"""The inference node's logic: observations in from a robot's topics, action chunks out, the critic's
progress reward beside them, and new weights picked up from a directory while it runs.

It acts on each step report of the robot whose observation has fully arrived: at the start of an
episode and whenever the last chunk it sent has been executed (``execute_steps`` actions), or when the
robot reports it is holding for want of an action. An observation that completed longer than
``obs_timeout_s`` ago is never acted on (the robot's watchdog then holds it still).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robot_rl.core.errors import ConfigError
from robot_rl.runtime.training.evaluate import ObservationWindows, load_checkpoint
from robot_rl.transport import ServiceClient, Transport
from robot_rl.transport.base import ServiceTimeout
from robot_rl.transport.convert import RobotTopics, array_to_msg, chunk_to_msg
from robot_rl.transport.messages import Float64MultiArray, String, Time
from robot_rl.transport.observations import StampedObservations, StampKey

log = logging.getLogger(__name__)


@dataclass
class PolicyServerConfig:
    """What the inference node runs and how."""

    checkpoint: str = ""
    """A saved policy folder (``config.json`` + weights) or a run folder holding ``policy/``."""
    critic: str | None = None
    """A saved progress critic: its progress, delta and done probability go out on ``robot_rl/reward``."""
    topics: RobotTopics = field(default_factory=RobotTopics)
    """The robot's topics."""
    steps: int | None = None
    """Sampling steps per chunk (None: the policy's own)."""
    execute_steps: int | None = None
    """Actions of each chunk sent to the robot (None: the policy's ``n_action_steps``)."""
    obs_timeout_s: float = 0.5
    """Observations older than this are not acted on."""
    reload_every_s: float = 2.0
    """How often to look for new weights in ``checkpoint`` (0: never)."""
    seed: int = 0
    """Seed of the policy's sampling noise."""
    instruction: str | None = None
    """The language goal (None: ask the robot's episode service, which knows its task)."""

    def validate(self) -> None:
        if not self.checkpoint:
            raise ConfigError("checkpoint is required: a saved policy folder")
        if self.obs_timeout_s <= 0:
            raise ConfigError(f"obs_timeout_s must be > 0, got {self.obs_timeout_s}")


def _weights_version(policy_dir: Path) -> float:
    files = list(policy_dir.glob("*.safetensors")) + [policy_dir / "config.json"]
    return max((f.stat().st_mtime for f in files if f.is_file()), default=0.0)


class PolicyServer:
    """Serves a policy (and optionally a critic) to the robot on ``transport`` until :meth:`close`."""

    def __init__(self, transport: Transport, config: PolicyServerConfig) -> None:
        config.validate()
        self.cfg, self.topics = config, config.topics
        self.policy, _ = load_checkpoint(config.checkpoint)
        path = Path(config.checkpoint)
        self.policy_dir = path / "policy" if (path / "policy" / "config.json").is_file() else path
        self._version = _weights_version(self.policy_dir)
        self.weights_loaded = 1
        pcfg = self.policy.config
        self.cameras = list(pcfg.features.cameras)
        self.state_dim = int(pcfg.features.state_dim)
        self.action_dim = int(pcfg.features.action_dim)
        self.execute_steps = config.execute_steps or pcfg.n_action_steps
        if not 1 <= self.execute_steps <= pcfg.horizon:
            raise ConfigError(f"execute_steps must be in [1, {pcfg.horizon}], got {self.execute_steps}")
        self.scorer = None
        if config.critic:
            from robot_rl.critic.model import ProgressCritic
            from robot_rl.critic.reward import CriticReward

            self.scorer = CriticReward(ProgressCritic.load(config.critic))
        self._history: ObservationWindows | None = None
        self._generator = torch.Generator().manual_seed(config.seed)
        self._lock = threading.Lock()
        self._episode = -1
        self._since_chunk = 0
        self._progress: float | None = None
        self.instruction = config.instruction or ""
        self.robot: dict | None = None
        """The robot's episode-service spec, once it has answered (its task, cameras, shapes)."""
        self.ready = threading.Event()
        """Set once the server knows the robot's language goal (at once when ``instruction`` is given)."""
        self._client = None if config.instruction is not None else ServiceClient(transport, self.topics.episode)
        self._closed = threading.Event()
        self.latencies: list[float] = []
        self.chunks_sent = 0

        self._pub_action = transport.publisher(self.topics.action, Float64MultiArray)
        self._pub_reward = transport.publisher(self.topics.reward, Float64MultiArray)
        image_shape = (pcfg.features.image_size, pcfg.features.image_size, 3)
        # a step is acted on once its report, state and every camera are in
        self._observations = StampedObservations(transport, self.topics, self.cameras, self.state_dim, image_shape,
                                                 extra=("_report",), on_complete=self._on_complete, keep=32)
        self._step_sub = transport.subscribe(self.topics.step, String, self._on_step)
        if self._client is None:
            self.ready.set()
        else:  # never block the observation path on the robot's service: it may take a while to be discovered
            threading.Thread(target=self._ask_robot, name="robot-spec", daemon=True).start()
        self._reloader = None
        if config.reload_every_s > 0:
            self._reloader = threading.Thread(target=self._watch_weights, name="weights", daemon=True)
            self._reloader.start()

    # --------------------------------------------------------------------------------- receiving
    def _on_step(self, msg: String) -> None:
        report = json.loads(msg.data)
        self._observations.add(tuple(report["stamp"]), "_report", report)

    def _on_complete(self, key: StampKey, parts: dict[str, Any]) -> None:
        complete_at = time.monotonic()  # waiting below for an inference in progress counts toward staleness
        with self._lock:
            self._handle(key, parts, complete_at)

    def _ask_robot(self) -> None:
        log.info("waiting for the robot's episode service on %s", self.topics.episode)
        warned = False
        while not self._closed.is_set():
            try:
                spec = self._client.call({"op": "spec"}, timeout=2.0)
                problems = self._mismatches(spec)
            except Exception as exc:  # noqa: BLE001 - keep asking: the robot may come up, or be fixed
                if self._closed.is_set():  # the transport went away under us while closing
                    return
                if not warned and not isinstance(exc, ServiceTimeout):
                    log.error("the robot's episode service on %s: %s: %s (retrying)", self.topics.episode,
                              type(exc).__name__, exc)
                    warned = True
                self._closed.wait(1.0)
                continue
            if problems:
                log.error("the policy in %s cannot drive the robot on %s: %s; not acting", self.policy_dir,
                          self.topics.namespace, "; ".join(problems))
                return
            self.robot, self.instruction = spec, spec.get("instruction", "")
            self.ready.set()
            log.info("robot on %s: task %s, instruction %r", self.topics.namespace, spec.get("task"), self.instruction)
            return

    def _mismatches(self, spec: dict) -> list[str]:
        """What in the robot's spec the policy was not trained for (empty when it fits)."""
        image_size = self.policy.config.features.image_size
        wanted = {"action_dim": self.action_dim, "state_dim": self.state_dim}
        out = [f"robot {k} is {spec.get(k)}, policy expects {v}" for k, v in wanted.items()
               if k in spec and spec[k] != v]
        missing = [c for c in self.cameras if c not in spec.get("cameras", self.cameras)]
        if missing:
            out.append(f"robot has no camera {missing} (it has {spec.get('cameras')})")
        shape = spec.get("image_shape")
        if self.cameras and shape and list(shape)[:2] != [image_size, image_size]:
            out.append(f"robot images are {shape[0]}x{shape[1]}, policy expects {image_size}x{image_size}")
        return out

    # ----------------------------------------------------------------------------------- acting
    def _handle(self, key: StampKey, parts: dict[str, Any], complete_at: float) -> None:
        if not self.ready.is_set():
            return  # the robot holds still until we know its task
        report = parts["_report"]
        obs = self._observations.observation(parts)
        new_episode = report["episode"] != self._episode or report["step"] == 0
        if new_episode:
            if self._client is not None and report.get("instruction"):
                self.instruction = report["instruction"]  # a multi-task robot names each episode's goal
            self._episode, self._since_chunk, self._progress = report["episode"], 0, None
            self._history = ObservationWindows(1, self.policy.config.n_obs_steps, self.instruction)
            self._history.start(0, obs)
        else:
            self._history.push(0, obs)
            if report["action"] is not None and report["held"] is None:
                self._since_chunk += 1
        if self.scorer is not None:
            self._publish_reward(obs)
        if report["terminated"] or report["truncated"]:
            return
        due = new_episode or self._since_chunk >= self.execute_steps or report["held"] in ("no_action", "stale_action")
        if not due:
            return
        if time.monotonic() - complete_at > self.cfg.obs_timeout_s:
            log.warning("observation %s is stale; not acting on it", key)
            return
        start = time.perf_counter()
        chunk = self.policy.act(self._history.batch(), steps=self.cfg.steps, generator=self._generator)[0]
        self.latencies.append(time.perf_counter() - start)
        self._pub_action.publish(chunk_to_msg(chunk[: self.execute_steps], stamp=Time(sec=key[0], nanosec=key[1])))
        self._since_chunk = 0
        self.chunks_sent += 1

    def _publish_reward(self, obs: dict[str, Any]) -> None:
        frames = {c: img[None] for c, img in obs["images"].items()}
        progress, done = self.scorer.score_frames(frames, self.instruction)
        delta = 0.0 if self._progress is None else float(progress[0]) - self._progress
        self._progress = float(progress[0])
        self._pub_reward.publish(array_to_msg(np.array([self._progress, delta, float(done[0])]),
                                              ["progress,delta,done"]))

    # ---------------------------------------------------------------------------------- weights
    def _watch_weights(self) -> None:
        while not self._closed.wait(self.cfg.reload_every_s):
            try:
                version = _weights_version(self.policy_dir)
                if version > self._version:
                    self.reload()
                    self._version = version
            except Exception as exc:  # noqa: BLE001 - a half-written checkpoint: keep the old weights, retry
                log.error("could not reload weights from %s: %s", self.policy_dir, exc)

    def reload(self) -> None:
        """Load the weights now in ``checkpoint`` (same architecture) into the running policy."""
        fresh, _ = load_checkpoint(self.cfg.checkpoint)
        with self._lock:
            self.policy.load_state_dict(fresh.state_dict())
            self.weights_loaded += 1
        log.info("loaded new weights from %s (#%d)", self.policy_dir, self.weights_loaded)

    def close(self) -> None:
        self._closed.set()
        self._step_sub.close()
        self._observations.close()
        if self._client is not None:
            self._client.close()
