"""Scripted experts: state machines over privileged object state, with optional action noise.

Each expert returns normalised end-effector delta actions (see ``controller``); ``noise`` adds Gaussian
noise to the motion part so that demonstrations vary while still succeeding.
"""

from __future__ import annotations

import numpy as np

from robot_rl.envs.native.controller import ACTION_DIM
from robot_rl.envs.native.tasks import CUBE_HALF

POS_STEP = 0.04  # metres per unit action, as in EndEffectorController
ROT_STEP = 0.15
OPEN, CLOSE = -1.0, 1.0


def _wrap_quarter(angle: float) -> float:
    """A cube looks the same every 90 degrees: the equivalent yaw in [-pi/4, pi/4)."""
    return (angle + np.pi / 4) % (np.pi / 2) - np.pi / 4


class ScriptedExpert:
    """Base class: ``act(priv)`` maps privileged state to an action; ``reset`` starts a new episode. A subclass
    for another controller sets ``pos_step`` (metres per unit action) and ``noisy_dims`` (the action dims noise
    perturbs)."""

    pos_step = POS_STEP
    noisy_dims = 6

    def __init__(self, noise: float = 0.0, rng: np.random.Generator | None = None, gain: float = 1.5) -> None:
        self.noise = noise
        self.rng = rng or np.random.default_rng()
        self.gain = gain
        self.phase = 0
        self.counter = 0

    def reset(self, rng: np.random.Generator | None = None) -> None:
        if rng is not None:
            self.rng = rng
        self.phase = 0
        self.counter = 0

    def act(self, priv: dict[str, np.ndarray]) -> np.ndarray:
        action = self._act(priv)
        if self.noise > 0:
            action[: self.noisy_dims] += self.rng.normal(0.0, self.noise, size=self.noisy_dims)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _act(self, priv: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    # A motion towards ``goal`` (tool point) with the gripper command and an optional target yaw.
    def _move(self, priv, goal, grip: float, yaw: float | None = None) -> np.ndarray:
        action = np.zeros(ACTION_DIM)
        action[:3] = np.clip(self.gain * (np.asarray(goal) - priv["tcp_pos"]) / self.pos_step, -1, 1)
        if yaw is not None:
            err = _wrap_quarter(yaw - float(priv["tcp_yaw"]))
            action[5] = np.clip(err / ROT_STEP, -1, 1)
        action[6] = grip
        return action

    @staticmethod
    def _near(priv, goal, tol: float) -> bool:
        return bool(np.linalg.norm(np.asarray(goal) - priv["tcp_pos"]) < tol)


class ReachExpert(ScriptedExpert):
    def _act(self, priv):
        return self._move(priv, priv["target_pos"], OPEN)


class PushExpert(ScriptedExpert):
    """Go behind the cube on the line from the goal, lower the closed gripper, push along the line."""

    standoff = CUBE_HALF + 0.03
    push_height = 0.02

    def _act(self, priv):
        cube, goal = priv["cube_pos"][:2], priv["goal_pos"][:2]
        to_goal = goal - cube
        direction = to_goal / (np.linalg.norm(to_goal) + 1e-9)
        behind = cube - direction * self.standoff
        tcp = priv["tcp_pos"]
        if self.phase == 0:  # above the point behind the cube
            above = [*behind, 0.1]
            if self._near(priv, above, 0.015):
                self.phase = 1
            return self._move(priv, above, CLOSE)
        if self.phase == 1:  # down to pushing height
            low = [*behind, self.push_height]
            if self._near(priv, low, 0.012):
                self.phase = 2
            return self._move(priv, low, CLOSE)
        # push: aim through the cube along the line; re-plan if the cube slid off the line
        offset = tcp[:2] - cube
        along = float(offset @ direction)
        lateral = float(np.linalg.norm(offset - along * direction))
        if lateral > 0.03 or along > -0.01 or tcp[2] > 0.05:
            self.phase = 0
            return self._move(priv, [*tcp[:2], 0.1], CLOSE)
        step = min(0.5 * float(np.linalg.norm(to_goal)) + 0.01, 0.04)
        target = cube - direction * (CUBE_HALF + 0.012) + direction * step
        return self._move(priv, [*target, self.push_height], CLOSE)


class PickExpert(ScriptedExpert):
    """Open above the cube, align the yaw, descend, close, then lift (phases shared with stacking)."""

    hover = 0.12

    def _pick(self, priv) -> np.ndarray | None:
        """Actions of the pick-and-lift phases; None once the cube is held high enough."""
        cube = priv["cube_pos"]
        yaw = float(priv["cube_yaw"])
        if self.phase == 0:  # above, open, aligned
            above = [*cube[:2], self.hover]
            aligned = abs(_wrap_quarter(yaw - float(priv["tcp_yaw"]))) < 0.05
            if self._near(priv, above, 0.015) and aligned:
                self.phase = 1
            return self._move(priv, above, OPEN, yaw)
        if self.phase == 1:  # descend around the cube
            grasp = [*cube[:2], max(cube[2] - 0.005, 0.012)]
            if self._near(priv, grasp, 0.01):
                self.phase, self.counter = 2, 0
            if np.linalg.norm(cube[:2] - priv["tcp_pos"][:2]) > 0.02:
                self.phase = 0
            return self._move(priv, grasp, OPEN, yaw)
        if self.phase == 2:  # close
            self.counter += 1
            if self.counter >= 4:
                self.phase = 3
            return self._move(priv, priv["tcp_pos"], CLOSE)
        if self.phase == 3:  # lift
            if priv["gripper_width"] < 0.03:  # closed on nothing: the grasp missed
                self.phase = 0
                return self._move(priv, [*priv["tcp_pos"][:2], self.hover], OPEN)
            lift = [*cube[:2], self.hover + 0.06]
            if cube[2] > self.hover - 0.01:
                return None
            return self._move(priv, lift, CLOSE)
        return None


class LiftExpert(PickExpert):
    def _act(self, priv):
        action = self._pick(priv)
        if action is None:
            action = self._move(priv, [*priv["cube_pos"][:2], self.hover + 0.06], CLOSE)
        return action


class StackExpert(PickExpert):
    def _act(self, priv):
        if self.phase <= 3:
            action = self._pick(priv)
            if action is not None:
                return action
            self.phase = 4
        cube, base = priv["cube_pos"], priv["base_pos"]
        offset = priv["tcp_pos"] - cube  # the tool point's offset from the held cube
        if self.phase == 4:  # carry above the base cube
            goal_cube = np.array([*base[:2], self.hover])
            if np.linalg.norm(goal_cube - cube) < 0.012:
                self.phase = 5
            return self._move(priv, goal_cube + offset, CLOSE, float(priv["base_yaw"]))
        if self.phase == 5:  # lower onto it
            goal_cube = np.array([*base[:2], base[2] + 2 * CUBE_HALF + 0.004])
            if np.linalg.norm(goal_cube - cube) < 0.006:
                self.phase, self.counter = 6, 0
            return self._move(priv, goal_cube + offset, CLOSE, float(priv["base_yaw"]))
        if self.phase == 6:  # release
            self.counter += 1
            if self.counter >= 4:
                self.phase = 7
            return self._move(priv, priv["tcp_pos"], OPEN)
        return self._move(priv, [*priv["tcp_pos"][:2], self.hover + 0.05], OPEN)  # retreat


EXPERTS: dict[str, type[ScriptedExpert]] = {
    "reach": ReachExpert,
    "push": PushExpert,
    "lift": LiftExpert,
    "stack": StackExpert,
}
