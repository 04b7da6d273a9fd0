"""Takeover: an operator (a person's device or the simulated one) can replace the policy's action at any step.

``InterventionWrapper`` asks the operator before every step. While it acts, its action is executed and the
step is marked (``info["intervention"]``, ``info["taken_action"]``); the rest of the policy's chunk is not
executed. When it hands back, ``handback_pending()`` tells the chunk executor to stop and ask the policy for a
fresh chunk from the current observation, and the first ``blend_steps`` policy actions after it are blended
from the operator's last one, so the commanded motion does not jump.
"""

from __future__ import annotations

from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from robot_rl.core.errors import ConfigError
from robot_rl.hil.protocol import find_protocol


class Operator(Protocol):
    def __call__(self, obs: dict[str, Any], env: gym.Env, policy_action: np.ndarray | None) -> np.ndarray | None:
        """The operator's action for this step, or None to leave it to the policy. Called exactly once per
        step; ``policy_action`` is None when the wrapper asks, before the policy's action is known, whether
        an operator that acted last step goes on acting."""

    def reset(self) -> None: ...

    def guide(self, steps: int) -> None:
        """Drive the next ``steps`` steps (the protocol's human-guided start)."""


class InterventionWrapper(gym.Wrapper):
    """Takeover by ``operator``; above a ``ProtocolWrapper`` it also plays the protocol's help (the demo's
    actions, or the operator guiding the first steps) at the start of an episode."""

    def __init__(self, env: gym.Env, operator: Operator, blend_steps: int = 2) -> None:
        super().__init__(env)
        if blend_steps < 0:
            raise ConfigError(f"blend_steps must be >= 0, got {blend_steps}")
        self.operator, self.blend_steps = operator, blend_steps
        self.protocol = find_protocol(env)
        self._obs: dict[str, Any] | None = None
        self._decided: tuple[bool, np.ndarray | None] | None = None  # the operator's answer for the coming step
        self._active, self._last_op, self._since = False, None, None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.operator.reset()
        if self.protocol is not None and self.protocol.guide_steps:
            self.operator.guide(self.protocol.guide_steps)
        self._obs, self._decided, self._active, self._last_op, self._since = obs, None, False, None, None
        return obs, info

    def _decide(self, policy_action: np.ndarray | None) -> np.ndarray | None:
        if self._decided is None:
            scripted = None if self.protocol is None else self.protocol.scripted_action()
            if scripted is not None:  # a demo's step replayed: the operator only watches
                observe = getattr(self.operator, "observe", None)
                if observe is not None:
                    observe(self.env)
                self._decided = (True, scripted)
            else:
                self._decided = (True, self.operator(self._obs, self.env, policy_action))
        return self._decided[1]

    def handback_pending(self) -> bool:
        """The operator acted last step and does not act on this one: the policy should start a fresh chunk."""
        return self._active and self._decide(None) is None

    def step(self, action):
        op = self._decide(np.asarray(action, np.float32))
        self._decided = None
        if op is not None:
            taken = np.asarray(op, np.float32)
            self._active, self._last_op, self._since = True, taken, None
        else:
            if self._active:  # handed back: blend into the policy's motion from the operator's last action
                self._active, self._since = False, 0
            taken = np.asarray(action, np.float32)
            if self._since is not None and self._since < self.blend_steps:
                w = (self._since + 1) / (self.blend_steps + 1)
                taken = w * taken + (1.0 - w) * self._last_op
                self._since += 1
        obs, reward, terminated, truncated, info = self.env.step(taken)
        self._obs = obs
        info = {**info, "intervention": op is not None, "taken_action": taken}
        return obs, reward, terminated, truncated, info


class NoOperator:
    """Nobody takes over (the protocol may still replay demos or restore states)."""

    def __call__(self, obs, env, policy_action):
        return None

    def reset(self) -> None:
        pass

    def guide(self, steps: int) -> None:
        pass


class SimulatedOperator:
    """The task's scripted expert behind the operator interface, for measuring human-in-the-loop learning in
    sim: it watches the policy and, once the policy's translation has pointed away from the expert's for
    ``patience`` steps where the expert moves at ``min_speed`` or faster (or, with ``stall_steps`` and a
    ``progress(obs)`` function, the progress critic's progress has risen by less than ``stall_delta`` over that
    many steps), takes over after ``delay_steps`` (reaction time) and drives for ``hold_steps`` with Gaussian
    ``noise`` before it hands back."""

    def __init__(self, task: str, patience: int = 10, delay_steps: int = 2, hold_steps: int = 10, noise: float = 0.05,
                 min_cosine: float = 0.0, max_takeovers: int | None = None, seed: int = 0, stall_steps: int = 0,
                 stall_delta: float = 0.02, progress=None, min_speed: float = 0.5) -> None:
        from robot_rl.envs import make_expert

        if min(patience, hold_steps) < 1 or delay_steps < 0 or noise < 0:
            raise ConfigError(f"need patience, hold_steps >= 1, delay_steps >= 0, noise >= 0, got {patience}, "
                              f"{hold_steps}, {delay_steps}, {noise}")
        self.rng = np.random.default_rng(seed)
        self.expert = make_expert(task, noise=0.0, rng=self.rng)
        self.patience, self.delay, self.hold, self.noise, self.min_cosine = (patience, delay_steps, hold_steps,
                                                                             noise, min_cosine)
        self.max_takeovers, self.min_speed = max_takeovers, min_speed
        if stall_steps and progress is None:
            raise ConfigError("stall_steps needs a progress(obs) function to watch")
        self.stall_steps, self.stall_delta, self.progress = stall_steps, stall_delta, progress
        self.takeovers = 0
        self.reset()

    @classmethod
    def from_config(cls, cfg, task: str, seed: int = 0, progress=None) -> SimulatedOperator:
        """From a ``hil.protocol.OperatorConfig``."""
        return cls(task, patience=cfg.patience, delay_steps=cfg.delay_steps, hold_steps=cfg.hold_steps,
                   noise=cfg.noise, min_cosine=cfg.min_cosine, max_takeovers=cfg.max_takeovers, seed=seed,
                   stall_steps=cfg.stall_steps, stall_delta=cfg.stall_delta, min_speed=cfg.min_speed,
                   progress=progress if cfg.stall_steps else None)

    def reset(self) -> None:
        self._away, self._wait, self._left, self._episode_takeovers = 0, None, 0, 0
        self._progress: list[float] = []  # the critic's progress since the policy last took control
        if hasattr(self.expert, "reset"):
            self.expert.reset()

    def guide(self, steps: int) -> None:
        self._left, self._wait, self._away = int(steps), None, 0

    def observe(self, env) -> None:
        """Watch a step someone else drives: the expert keeps track of the task's phase."""
        self.expert.act(env.unwrapped.privileged_state())

    def _drive(self, expert: np.ndarray) -> np.ndarray:
        self._left -= 1
        noisy = expert + self.noise * self.rng.standard_normal(expert.shape).astype(np.float32)
        return np.clip(noisy, -1.0, 1.0)

    def __call__(self, obs, env, policy_action):
        # every step, acting or not: the expert keeps its own state (its phase in the task)
        expert = np.asarray(self.expert.act(env.unwrapped.privileged_state()), np.float32)
        if self._left > 0:
            return self._drive(expert)
        if policy_action is None:  # asked whether it goes on acting after its hold: it hands back
            return None
        if self.max_takeovers is not None and self._episode_takeovers >= self.max_takeovers:
            return None
        if self._wait is None:
            a, e = np.asarray(policy_action[:3], np.float64), expert[:3].astype(np.float64)
            cos = float(a @ e / (np.linalg.norm(a) * np.linalg.norm(e) + 1e-9))
            if np.linalg.norm(e) >= self.min_speed:  # a direction to disagree with (not a grasp or a pause)
                self._away = self._away + 1 if cos < self.min_cosine else 0
            stalled = False
            if self.stall_steps:
                self._progress.append(float(self.progress(obs)))
                if len(self._progress) > self.stall_steps:
                    stalled = self._progress[-1] - self._progress[-1 - self.stall_steps] < self.stall_delta
            if self._away >= self.patience or stalled:
                self._wait = self.delay
        if self._wait is None:
            return None
        if self._wait > 0:  # reacting
            self._wait -= 1
            return None
        self._wait, self._left, self._away, self._progress = None, self.hold, 0, []
        self.takeovers += 1
        self._episode_takeovers += 1
        return self._drive(expert)
