"""The gymnasium Env of the native MuJoCo tasks: physics, control and cameras around a Task."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")  # must precede the first import of mujoco

import gymnasium as gym
import mujoco
import numpy as np

from robot_rl.config.env import EnvConfig
from robot_rl.core.errors import ConfigError
from robot_rl.envs.native.assets import task_xml
from robot_rl.envs.native.controller import ACTION_DIM, ARM_JOINTS, EndEffectorController
from robot_rl.envs.native.tasks import Scene, Task

STATE_DIM = 22  # tcp pos 3, tcp quat 4, gripper width 1, joint pos 7, joint vel 7
STATE_NAMES = ("tcp_x", "tcp_y", "tcp_z", "tcp_qw", "tcp_qx", "tcp_qy", "tcp_qz", "gripper_width",
               *(f"joint{i}_pos" for i in range(1, 8)), *(f"joint{i}_vel" for i in range(1, 8)))
ARM_JITTER = 0.05  # rad, per joint at reset so that no two episodes start alike


class NativeManipulationEnv(gym.Env):
    """A 7-DoF arm on a table with end-effector delta actions; sparse reward 1 on success."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: Task, config: EnvConfig | None = None, render_mode: str | None = None) -> None:
        self.task = task
        self.config = config or EnvConfig(task=task.name)
        self.config.validate()
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        spec = mujoco.MjSpec.from_file(str(task_xml(task.xml)))
        spec.visual.quality.offsamples = 4 if self.config.antialias else 0
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        self.scene = Scene(self.model, self.data)
        self.controller = EndEffectorController(self.model)
        self.n_substeps = max(1, round(1.0 / (self.config.control_hz * self.model.opt.timestep)))
        self.max_steps = self.config.max_steps or task.max_steps
        self.instruction = task.instruction
        self.metadata = {**self.metadata, "render_fps": self.config.control_hz}

        known = [self.model.camera(i).name for i in range(self.model.ncam)]
        unknown = [c for c in self.config.cameras if c not in known]
        if unknown:
            raise ConfigError(f"unknown camera(s) {unknown} for task {task.name!r}; available: {known}")
        self._home_key = self.model.key("home").id
        self._renderers: dict[int, mujoco.Renderer] = {}

        size = self.config.image_size
        image_spaces = {
            cam: gym.spaces.Box(0, 255, (size, size, 3), dtype=np.uint8) for cam in self.config.cameras
        }
        spaces: dict[str, gym.Space] = {
            "state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), dtype=np.float32)
        }
        if image_spaces:
            spaces["images"] = gym.spaces.Dict(image_spaces)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), dtype=np.float32)
        self._steps = 0

    # ----------------------------------------------------------------------------------------- API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        mujoco.mj_resetDataKeyframe(self.model, self.data, self._home_key)
        idx = self.controller.qpos_idx
        jitter = self.np_random.uniform(-ARM_JITTER, ARM_JITTER, size=len(idx))
        self.data.qpos[idx] = np.clip(
            self.data.qpos[idx] + jitter, self.controller.joint_range[:, 0], self.controller.joint_range[:, 1]
        )
        self.data.ctrl[self.controller.arm_actuators] = self.data.qpos[idx]
        self.task.reset(self.scene, self.np_random)
        mujoco.mj_forward(self.model, self.data)
        self.controller.reset(self.data, self.data.qpos.copy())
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)  # let objects settle
        mujoco.mj_forward(self.model, self.data)
        self._steps = 0
        return self._observation(), self._info(success=self.task.success(self.scene))

    def step(self, action: np.ndarray):
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (ACTION_DIM,):
            raise ConfigError(f"action must have shape ({ACTION_DIM},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ConfigError(f"action contains NaN or inf: {action.tolist()}")
        action = np.clip(action, -1.0, 1.0)
        self.controller.command(self.data, action)
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        # mj_step leaves positions-derived quantities (sites, cameras) one substep behind qpos: refresh them, so
        # that what is observed is a function of the state alone (and ``restore`` reproduces it exactly)
        mujoco.mj_forward(self.model, self.data)
        self._steps += 1
        success = self.task.success(self.scene)
        terminated = success and self.config.terminate_on_success
        truncated = self._steps >= self.max_steps and not terminated
        return self._observation(), float(success), terminated, truncated, self._info(success)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._render_camera("front", self.config.render_size)

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    # ------------------------------------------------------------------------------------ helpers
    @property
    def state_names(self) -> tuple[str, ...]:
        """What each entry of ``obs["state"]`` is."""
        return STATE_NAMES

    @property
    def joint_names(self) -> list[str]:
        return list(ARM_JOINTS)

    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Arm joint positions and velocities (what a real arm's driver publishes on /joint_states)."""
        return self.data.qpos[self.controller.qpos_idx].copy(), self.data.qvel[self.controller.dof_idx].copy()

    _SIM_STATE = mujoco.mjtState.mjSTATE_INTEGRATION  # everything the next mj_step reads, warm start included

    def sim_state(self) -> np.ndarray:
        """The whole simulation state (MuJoCo's integration state, the controller's orientation target and
        home posture, the step count): :meth:`restore` of it continues bit-exactly as this env would."""
        physics = np.empty(mujoco.mj_stateSize(self.model, self._SIM_STATE))
        mujoco.mj_getState(self.model, self.data, physics, self._SIM_STATE)
        c = self.controller
        return np.concatenate([physics, c.target_mat.reshape(-1), c.home, [self._steps]])

    def restore(self, state: np.ndarray) -> dict[str, Any]:
        """Put the env in a state that :meth:`sim_state` returned (after a ``reset``) and return its
        observation: return-and-explore starts a fresh episode from a stored one's middle."""
        size = mujoco.mj_stateSize(self.model, self._SIM_STATE)
        state = np.asarray(state, np.float64)
        if state.shape != (size + 9 + 7 + 1,):
            raise ConfigError(f"a sim state of task {self.task.name!r} has {size + 17} numbers, got shape "
                              f"{state.shape}: was it saved from another task?")
        mujoco.mj_setState(self.model, self.data, state[:size], self._SIM_STATE)
        mujoco.mj_forward(self.model, self.data)
        self.controller.target_mat = state[size : size + 9].reshape(3, 3).copy()
        self.controller.home = state[size + 9 : size + 16].copy()
        self._steps = int(state[-1])
        return self._observation()

    def privileged_state(self) -> dict[str, np.ndarray]:
        """Ground-truth object state for scripted experts; policies never see it."""
        return self.task.privileged(self.scene)

    def _info(self, success: bool) -> dict[str, Any]:
        return {"success": success, "instruction": self.instruction, "task": self.task.name}

    def _observation(self) -> dict[str, Any]:
        obs: dict[str, Any] = {"state": self._state()}
        if self.config.cameras:
            obs["images"] = {
                cam: self._render_camera(cam, self.config.image_size) for cam in self.config.cameras
            }
        return obs

    def _state(self) -> np.ndarray:
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self.controller.site_id])
        if quat[0] < 0:  # q and -q are one rotation: keep the features continuous
            quat = -quat
        idx = self.controller.qpos_idx
        return np.concatenate(
            [
                self.data.site_xpos[self.controller.site_id],
                quat,
                [self.scene.gripper_width()],
                self.data.qpos[idx],
                self.data.qvel[self.controller.dof_idx],
            ]
        ).astype(np.float32)

    def _render_camera(self, camera: str, size: int) -> np.ndarray:
        renderer = self._renderers.get(size)
        if renderer is None:
            renderer = mujoco.Renderer(self.model, size, size)
            flags = renderer.scene.flags
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = self.config.shadows
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = self.config.shadows
            self._renderers[size] = renderer
        renderer.update_scene(self.data, camera=camera)
        return renderer.render().copy()

    def __del__(self) -> None:  # renderers hold GL contexts
        try:
            self.close()
        except Exception:
            pass
