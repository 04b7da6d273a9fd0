"""The native manipulation tasks: initial-state sampling, success tests and instructions.

A task knows nothing of control or rendering; it reads and places bodies through the ``Scene``.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

CUBE_HALF = 0.025


class Scene:
    """Named access to the bodies and sites of a loaded task model."""

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        self.model = model
        self.data = data
        self.tcp_id = model.site("tcp").id
        self._finger_qpos = [model.jnt_qposadr[model.joint(f"finger_joint{i}").id] for i in (1, 2)]

    def tcp_pos(self) -> np.ndarray:
        return self.data.site_xpos[self.tcp_id].copy()

    def tcp_mat(self) -> np.ndarray:
        return self.data.site_xmat[self.tcp_id].reshape(3, 3).copy()

    def tcp_yaw(self) -> float:
        x_axis = self.tcp_mat()[:, 0]
        return float(np.arctan2(x_axis[1], x_axis[0]))

    def gripper_width(self) -> float:
        return float(sum(self.data.qpos[i] for i in self._finger_qpos))

    def body_pos(self, name: str) -> np.ndarray:
        return self.data.body(name).xpos.copy()

    def body_yaw(self, name: str) -> float:
        x_axis = self.data.body(name).xmat.reshape(3, 3)[:, 0]
        return float(np.arctan2(x_axis[1], x_axis[0]))

    def place_free_body(self, joint: str, pos: np.ndarray, yaw: float = 0.0) -> None:
        adr = self.model.jnt_qposadr[self.model.joint(joint).id]
        self.data.qpos[adr : adr + 3] = pos
        self.data.qpos[adr + 3 : adr + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]

    def place_mocap(self, body: str, pos: np.ndarray) -> None:
        self.data.mocap_pos[self.model.body(body).mocapid[0]] = pos


@dataclass(frozen=True)
class Task:
    """Base class: subclasses set the fields and implement ``reset``, ``success`` and ``privileged``."""

    name: str
    instruction: str
    max_steps: int
    difficulty: int

    @property
    def xml(self) -> str:
        return self.name

    def reset(self, scene: Scene, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def success(self, scene: Scene) -> bool:
        raise NotImplementedError

    def privileged(self, scene: Scene) -> dict[str, np.ndarray]:
        """Ground-truth object state, for scripted experts and metrics (never the policy)."""
        return {
            "tcp_pos": scene.tcp_pos(),
            "tcp_yaw": np.float64(scene.tcp_yaw()),
            "gripper_width": np.float64(scene.gripper_width()),
        }


def _sample_xy(rng: np.random.Generator, x: tuple[float, float], y: tuple[float, float]) -> np.ndarray:
    return np.array([rng.uniform(*x), rng.uniform(*y)])


class ReachTask(Task):
    def reset(self, scene: Scene, rng: np.random.Generator) -> None:
        target = np.array([rng.uniform(0.35, 0.65), rng.uniform(-0.2, 0.2), rng.uniform(0.05, 0.3)])
        scene.place_mocap("target", target)

    def success(self, scene: Scene) -> bool:
        return bool(np.linalg.norm(scene.tcp_pos() - scene.body_pos("target")) < 0.03)

    def privileged(self, scene: Scene) -> dict[str, np.ndarray]:
        return {**super().privileged(scene), "target_pos": scene.body_pos("target")}


class PushTask(Task):
    goal_radius = 0.05

    def reset(self, scene: Scene, rng: np.random.Generator) -> None:
        cube = _sample_xy(rng, (0.42, 0.55), (-0.12, 0.12))
        while True:
            angle = rng.uniform(-np.pi, np.pi)
            goal = cube + rng.uniform(0.12, 0.2) * np.array([np.cos(angle), np.sin(angle)])
            if 0.38 <= goal[0] <= 0.68 and abs(goal[1]) <= 0.22:
                break
        scene.place_free_body("cube", np.array([*cube, CUBE_HALF]), yaw=rng.uniform(-np.pi / 4, np.pi / 4))
        scene.place_mocap("goal", np.array([*goal, 0.0005]))

    def success(self, scene: Scene) -> bool:
        cube, goal = scene.body_pos("cube"), scene.body_pos("goal")
        return bool(np.linalg.norm(cube[:2] - goal[:2]) < self.goal_radius and cube[2] < 0.04)

    def privileged(self, scene: Scene) -> dict[str, np.ndarray]:
        return {
            **super().privileged(scene),
            "cube_pos": scene.body_pos("cube"),
            "cube_yaw": np.float64(scene.body_yaw("cube")),
            "goal_pos": scene.body_pos("goal"),
        }


class LiftTask(Task):
    lift_height = 0.1

    def reset(self, scene: Scene, rng: np.random.Generator) -> None:
        cube = _sample_xy(rng, (0.4, 0.6), (-0.15, 0.15))
        scene.place_free_body("cube", np.array([*cube, CUBE_HALF]), yaw=rng.uniform(-np.pi / 4, np.pi / 4))

    def success(self, scene: Scene) -> bool:
        return bool(scene.body_pos("cube")[2] > self.lift_height)

    def privileged(self, scene: Scene) -> dict[str, np.ndarray]:
        return {
            **super().privileged(scene),
            "cube_pos": scene.body_pos("cube"),
            "cube_yaw": np.float64(scene.body_yaw("cube")),
        }


class StackTask(Task):
    def reset(self, scene: Scene, rng: np.random.Generator) -> None:
        while True:
            cube = _sample_xy(rng, (0.4, 0.6), (-0.18, 0.18))
            base = _sample_xy(rng, (0.4, 0.6), (-0.18, 0.18))
            if np.linalg.norm(cube - base) > 0.12:
                break
        scene.place_free_body("cube", np.array([*cube, CUBE_HALF]), yaw=rng.uniform(-np.pi / 4, np.pi / 4))
        scene.place_free_body("base_cube", np.array([*base, CUBE_HALF]), yaw=rng.uniform(-np.pi / 4, np.pi / 4))

    def success(self, scene: Scene) -> bool:
        cube, base = scene.body_pos("cube"), scene.body_pos("base_cube")
        on_top = np.linalg.norm(cube[:2] - base[:2]) < 0.02 and 0.04 < cube[2] - base[2] < 0.06
        released = scene.gripper_width() > 0.06
        return bool(on_top and released)

    def privileged(self, scene: Scene) -> dict[str, np.ndarray]:
        return {
            **super().privileged(scene),
            "cube_pos": scene.body_pos("cube"),
            "cube_yaw": np.float64(scene.body_yaw("cube")),
            "base_pos": scene.body_pos("base_cube"),
            "base_yaw": np.float64(scene.body_yaw("base_cube")),
        }


NATIVE_TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        ReachTask("reach", "reach the green target with the gripper", max_steps=50, difficulty=1),
        PushTask("push", "push the red cube into the green goal region", max_steps=100, difficulty=2),
        LiftTask("lift", "pick up the red cube and lift it", max_steps=80, difficulty=3),
        StackTask("stack", "stack the red cube on top of the green cube", max_steps=120, difficulty=4),
    )
}
