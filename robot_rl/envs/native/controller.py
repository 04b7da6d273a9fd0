"""End-effector delta control of the arm by damped least-squares differential IK.

An action is ``[dx, dy, dz, rx, ry, rz, grip]`` in [-1, 1]: a translation of the tool point relative to
where it is now, a small rotation (axis-angle, world frame) of an orientation target, and the gripper
command (-1 open, +1 closed). IK turns the pose target into joint position targets that the arm's
position actuators track during the control period.
"""

from __future__ import annotations

import mujoco
import numpy as np

ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
ACTION_DIM = 7


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Axis-angle vector (world frame) that rotates ``current`` onto ``target`` (3x3 matrices)."""
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, (target @ current.T).ravel())
    vel = np.empty(3)
    mujoco.mju_quat2Vel(vel, quat, 1.0)
    return vel


def axis_angle_matrix(vec: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(vec))
    if angle < 1e-9:
        return np.eye(3)
    quat = np.empty(4)
    mujoco.mju_axisAngle2Quat(quat, vec / angle, angle)
    mat = np.empty(9)
    mujoco.mju_quat2Mat(mat, quat)
    return mat.reshape(3, 3)


class EndEffectorController:
    """Maps normalised end-effector delta actions to actuator controls."""

    def __init__(
        self,
        model: mujoco.MjModel,
        site: str = "tcp",
        pos_step: float = 0.04,
        rot_step: float = 0.15,
        workspace: tuple[tuple[float, float], ...] = ((0.2, 0.85), (-0.45, 0.45), (0.0, 0.55)),
        ik_iterations: int = 3,
        damping: float = 0.05,
        nullspace_gain: float = 0.1,
    ) -> None:
        self.model = model
        self.site_id = model.site(site).id
        self.pos_step = pos_step
        self.rot_step = rot_step
        self.workspace = np.asarray(workspace, dtype=np.float64)
        self.ik_iterations = ik_iterations
        self.damping = damping
        self.nullspace_gain = nullspace_gain
        joint_ids = [model.joint(j).id for j in ARM_JOINTS]
        self.qpos_idx = np.array([model.jnt_qposadr[j] for j in joint_ids])
        self.dof_idx = np.array([model.jnt_dofadr[j] for j in joint_ids])
        self.joint_range = model.jnt_range[joint_ids].copy()
        self.arm_actuators = np.array([model.actuator(f"act{i}").id for i in range(1, 8)])
        self.gripper_actuator = model.actuator("gripper").id
        self.gripper_open = float(model.actuator_ctrlrange[self.gripper_actuator, 1])
        self.home = self.joint_range.mean(axis=1)
        self._scratch = mujoco.MjData(model)
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self.target_mat = np.eye(3)

    def reset(self, data: mujoco.MjData, home_qpos: np.ndarray) -> None:
        self.home = home_qpos[self.qpos_idx].copy()
        self.target_mat = data.site_xmat[self.site_id].reshape(3, 3).copy()

    def command(self, data: mujoco.MjData, action: np.ndarray) -> None:
        """Write actuator controls for ``action`` into ``data.ctrl``."""
        tcp = data.site_xpos[self.site_id]
        target_pos = tcp + action[:3] * self.pos_step
        target_pos = np.clip(target_pos, self.workspace[:, 0], self.workspace[:, 1])
        self.target_mat = axis_angle_matrix(action[3:6] * self.rot_step) @ self.target_mat
        q_target = self._solve_ik(data, target_pos, self.target_mat)
        data.ctrl[self.arm_actuators] = q_target
        grip = float(np.clip(action[6], -1.0, 1.0))
        data.ctrl[self.gripper_actuator] = self.gripper_open * (1.0 - grip) / 2.0

    def _solve_ik(self, data: mujoco.MjData, pos: np.ndarray, mat: np.ndarray) -> np.ndarray:
        m, s = self.model, self._scratch
        s.qpos[:] = data.qpos
        q = data.qpos[self.qpos_idx].copy()
        eye = np.eye(7)
        for _ in range(self.ik_iterations):
            s.qpos[self.qpos_idx] = q
            mujoco.mj_kinematics(m, s)
            mujoco.mj_comPos(m, s)
            err = np.concatenate(
                [pos - s.site_xpos[self.site_id], rotation_error(mat, s.site_xmat[self.site_id].reshape(3, 3))]
            )
            mujoco.mj_jacSite(m, s, self._jacp, self._jacr, self.site_id)
            jac = np.vstack([self._jacp[:, self.dof_idx], self._jacr[:, self.dof_idx]])
            jjt = jac @ jac.T + (self.damping**2) * np.eye(6)
            pinv = jac.T @ np.linalg.solve(jjt, np.eye(6))
            dq = pinv @ err + (eye - pinv @ jac) @ (self.nullspace_gain * (self.home - q))
            q = np.clip(q + dq, self.joint_range[:, 0], self.joint_range[:, 1])
        return q
