"""Scripted experts for robosuite tasks: waypoint state machines over privileged object state (grasp from above,
lift, carry, place), so demos need no downloaded data. Actions follow the adapter's convention (OSC deltas in
the base frame, scaled by 0.05 m per unit; +1 closes the gripper)."""

from __future__ import annotations

import numpy as np

from robot_rl.envs.native.experts import CLOSE, OPEN, ScriptedExpert

POS_STEP = 0.05  # metres per unit action (robosuite's OSC output limit)


class WaypointExpert(ScriptedExpert):
    """The native experts' base on robosuite's OSC scale, noise on the translation only."""

    pos_step = POS_STEP
    noisy_dims = 3

    def __init__(self, noise: float = 0.0, rng: np.random.Generator | None = None, gain: float = 1.2) -> None:
        super().__init__(noise, rng, gain)
        self.hover_z = 0.0

    def _grasp(self, priv, obj: np.ndarray, grasp_z: float, hover: float) -> np.ndarray | None:
        """Phases 0-3: above the object, down, close, up to ``hover``; None once it is held up there."""
        if self.phase == 0:
            above = [*obj[:2], grasp_z + hover]
            if self._near(priv, above, 0.02):
                self.phase = 1
            return self._move(priv, above, OPEN)
        if self.phase == 1:
            grasp = [*obj[:2], grasp_z]
            if self._near(priv, grasp, 0.008):
                self.phase, self.counter = 2, 0
                self.hover_z = grasp_z + hover  # where to lift to: the object's height moves with it once held
            if np.linalg.norm(obj[:2] - priv["tcp_pos"][:2]) > 0.03:
                self.phase = 0
            return self._move(priv, grasp, OPEN)
        if self.phase == 2:
            self.counter += 1
            if self.counter >= 5:
                self.phase = 3
            return self._move(priv, priv["tcp_pos"], CLOSE)
        if self.phase == 3:
            if priv["gripper_width"] < 0.005:  # closed on nothing: the grasp missed
                self.phase = 0
                return self._move(priv, [*priv["tcp_pos"][:2], self.hover_z], OPEN)
            up = [*priv["tcp_pos"][:2], self.hover_z]
            if priv["tcp_pos"][2] > self.hover_z - 0.02:
                return None
            return self._move(priv, up, CLOSE)
        return None


class LiftExpert(WaypointExpert):
    def _act(self, priv):
        cube = priv["cube_pos"]
        action = self._grasp(priv, cube, cube[2], hover=0.1)
        return action if action is not None else self._move(priv, [*cube[:2], cube[2] + 0.2], CLOSE)


class PlaceExpert(WaypointExpert):
    """Pick ``object_pos``, carry it above ``place_pos`` at ``carry_z``, lower to ``release_z``, open, retreat up."""

    carry = 0.15

    def _act(self, priv):
        obj = priv["object_pos"]
        if self.phase <= 3:
            action = self._grasp(priv, obj, priv["grasp_z"], hover=self.carry)
            if action is not None:
                return action
            self.phase = 4
        target = priv["place_pos"]
        if self.phase == 4:  # carry at height
            over = [*target[:2], priv["carry_z"]]
            if self._near(priv, over, 0.015):
                self.phase = 5
            return self._move(priv, over, CLOSE)
        if self.phase == 5:  # lower
            low = [*target[:2], priv["release_z"]]
            if self._near(priv, low, 0.01):
                self.phase, self.counter = 6, 0
            return self._move(priv, low, CLOSE)
        if self.phase == 6:  # let go
            self.counter += 1
            if self.counter >= 4:
                self.phase = 7
            return self._move(priv, priv["tcp_pos"], OPEN)
        return self._move(priv, [*priv["tcp_pos"][:2], priv["carry_z"]], OPEN)  # retreat


def _wrap(angle: float, period: float) -> float:
    """``angle`` in [-period/2, period/2)."""
    return (angle + period / 2) % period - period / 2


class SquareNutExpert(WaypointExpert):
    """Grasp the square nut by its handle (fingers across it), carry it over the peg with the hole square to the
    peg, lower it to just above the peg's top and let it drop over the peg (held by the handle it hangs tilted and
    would jam), then back off."""

    rot_step = 0.5  # rad per unit action (robosuite's OSC output limit)
    release_above = 0.03  # the nut's centre above the peg's top when it is let go

    def _turn(self, action: np.ndarray, priv, target_yaw: float, period: float) -> bool:
        """Add a yaw correction toward ``target_yaw`` (mod ``period``); True once within 0.05 rad."""
        err = _wrap(target_yaw - float(priv["tcp_yaw"]), period)
        action[5] = np.clip(1.5 * err / self.rot_step, -1, 1)
        return abs(err) < 0.05

    def _act(self, priv):
        handle, center, peg = priv["handle_pos"], priv["nut_pos"], priv["peg_pos"]
        across = float(priv["nut_yaw"])  # the gripper's x axis along the handle: its fingers close across it
        if self.phase == 0:  # above the handle, open, fingers across it
            above = [*handle[:2], handle[2] + 0.1]
            action = self._move(priv, above, OPEN)
            if self._turn(action, priv, across, np.pi) and self._near(priv, above, 0.015):
                self.phase = 1
            return action
        if self.phase == 1:  # down onto the handle
            grasp = [*handle[:2], handle[2]]
            action = self._move(priv, grasp, OPEN)
            self._turn(action, priv, across, np.pi)
            if self._near(priv, grasp, 0.008):
                self.phase, self.counter = 2, 0
            return action
        if self.phase == 2:  # close
            self.counter += 1
            if self.counter >= 5:
                self.phase = 3
            return self._move(priv, priv["tcp_pos"], CLOSE)
        offset = priv["tcp_pos"][:2] - center[:2]  # the grip relative to the nut's centre, as held
        if self.phase == 3:  # up
            if priv["gripper_width"] < 0.005:  # closed on nothing: the grasp missed
                self.phase = 0
                return self._move(priv, [*priv["tcp_pos"][:2], handle[2] + 0.1], OPEN)
            up = [*priv["tcp_pos"][:2], 1.05]
            if priv["tcp_pos"][2] > 1.03:
                self.phase = 4
            return self._move(priv, up, CLOSE)
        if self.phase == 4:  # centre over the peg, the hole square to it (the nut looks the same every 90 deg)
            over = [*(peg[:2] + offset), 1.05]
            action = self._move(priv, over, CLOSE)
            square = self._turn(action, priv, float(priv["tcp_yaw"]) - float(priv["nut_yaw"]), np.pi / 2)
            if square and self._near(priv, over, 0.01) and np.linalg.norm(center[:2] - peg[:2]) < 0.003:
                self.phase = 5
            return action
        if self.phase == 5:  # down to the peg's top, slowly, keeping the hole centred and square
            low = [*(peg[:2] + offset), priv["table_z"] + 0.035]
            action = self._move(priv, low, CLOSE)
            action[2] = max(action[2], -0.3)
            self._turn(action, priv, float(priv["tcp_yaw"]) - float(priv["nut_yaw"]), np.pi / 2)
            if center[2] < priv["peg_top"] + self.release_above:  # just above the peg: let it drop over it
                self.phase, self.counter = 6, 0
            return action
        if self.phase == 6:  # let go, wide open before backing off (or the nut comes along)
            self.counter += 1
            if self.counter >= 10 or (self.counter >= 3 and priv["gripper_width"] > 0.075):
                self.phase = 7
            return self._move(priv, priv["tcp_pos"], OPEN)
        return self._move(priv, [*priv["tcp_pos"][:2], 1.05], OPEN)  # back off
