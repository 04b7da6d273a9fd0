"""robosuite 1.5 behind our Env: our observation dict, our 7-D end-effector delta action on robosuite's
composite OSC controller, sparse success reward, seeds that reproduce, CPU-friendly rendering.

robosuite is imported only when an env is built (it lives in its own venv: ``make .venv-robosuite``).

Observation ``state`` of a single-arm robot (22 numbers, the native tasks' layout): end-effector position (3,
world frame, metres), end-effector orientation quaternion (4, w x y z, w >= 0), gripper opening (1, metres,
the distance between the two finger joints), arm joint positions (7, rad), arm joint velocities (7, rad/s).

Action (7, each in [-1, 1]): end-effector position delta (3) and rotation delta (3, axis-angle) in the robot's
base frame, scaled by robosuite's OSC limits (0.05 m and 0.5 rad per step at full deflection), then the
gripper (+1 closes, -1 opens).
"""

from __future__ import annotations

import logging
import os
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")  # must precede the first import of mujoco

import gymnasium as gym
import numpy as np

from robot_rl.config.env import EnvConfig
from robot_rl.core.errors import ConfigError

ACTION_DIM = 7
STATE_NAMES = ("tcp_x", "tcp_y", "tcp_z", "tcp_qw", "tcp_qx", "tcp_qy", "tcp_qz", "gripper_width",
               *(f"joint{i}_pos" for i in range(1, 8)), *(f"joint{i}_vel" for i in range(1, 8)))
# our camera names -> robosuite's; robosuite's own names are accepted too
CAMERAS = {"front": "agentview", "wrist": "robot0_eye_in_hand"}
INSTALL_HINT = ("robosuite is not installed in this environment: it needs numpy<2 and mujoco<3.10, so it lives in "
                "its own venv. Build it with `make .venv-robosuite` and run there (.venv-robosuite/bin/robot-rl), "
                "or `pip install 'robot-rl[robosuite]'`")


def import_robosuite():
    """robosuite, quietly (it logs a page of warnings on import), or a clear error saying where it lives."""
    logging.disable(logging.WARNING)  # its import warns about optional extras (macros, robosuite_models, mink)
    try:
        import robosuite
        from robosuite.controllers import load_composite_controller_config
    except ImportError as exc:
        raise ConfigError(f"{INSTALL_HINT} ({exc})") from None
    finally:
        logging.disable(logging.NOTSET)
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)  # and about every controller part a robot lacks
    return robosuite, load_composite_controller_config


def quiet_renderer(sim, owner: dict, shadows: bool, cameras: bool) -> None:
    """Shadows and reflections off unless asked for (they cost ~10x on a CPU renderer); and a clear error where
    an env with cameras is stepped on another thread than the one that built it: robosuite's EGL context renders
    only there (elsewhere it reads garbage frames). ``owner`` holds the building thread."""
    import threading

    import mujoco

    here = threading.get_ident()
    if cameras and owner.setdefault("thread", here) != here:
        raise ConfigError("robosuite renders only on the thread that built the env, and this call came from "
                          "another: build it on the thread that steps it (EnvBridge takes a factory: "
                          "EnvBridge(lambda: make_env(config), transport))")
    ctx = getattr(sim, "_render_context_offscreen", None)
    if ctx is not None:
        ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = shadows
        ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = shadows


def pack_observation(obs: dict[str, Any], joint_pos: np.ndarray, joint_vel: np.ndarray, cameras: list[str],
                     rs_cameras: list[str]) -> dict[str, Any]:
    """A robosuite observation dict (1.4 or 1.5, single arm) in our layout (see the module docstring)."""
    quat_xyzw = np.asarray(obs["robot0_eef_quat"], np.float64)
    quat = np.array([quat_xyzw[3], *quat_xyzw[:3]])
    if quat[0] < 0:  # q and -q are one rotation: keep the features continuous
        quat = -quat
    grip = obs["robot0_gripper_qpos"]
    state = np.concatenate([obs["robot0_eef_pos"], quat, [grip[0] - grip[1]], joint_pos, joint_vel])
    out: dict[str, Any] = {"state": state.astype(np.float32)}
    if cameras:  # robosuite renders in OpenGL's convention: bottom row first
        out["images"] = {c: np.ascontiguousarray(obs[f"{rs}_image"][::-1]) for c, rs in zip(cameras, rs_cameras)}
    return out


def check_action(action: np.ndarray) -> np.ndarray:
    """The action as float64 (7,), or a ConfigError naming what is wrong with it."""
    action = np.asarray(action, dtype=np.float64).reshape(-1)
    if action.shape != (ACTION_DIM,):
        raise ConfigError(f"action must have shape ({ACTION_DIM},), got {action.shape}")
    if not np.all(np.isfinite(action)):
        raise ConfigError(f"action contains NaN or inf: {action.tolist()}")
    return np.clip(action, -1.0, 1.0)


class RobosuiteBackedEnv(gym.Env):
    """What the robosuite and LIBERO adapters share: spaces, stepping, our observation, rendering, joints. A
    subclass calls :meth:`_configure`, builds the robosuite env, :meth:`_bind`s it, and may override
    :meth:`_advance` (how one action is stepped) and :meth:`close`."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def _configure(self, config: EnvConfig, render_mode: str | None, task_name: str, instruction: str,
                   max_steps: int) -> None:
        config.validate()
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.config, self.render_mode, self.task_name, self.instruction = config, render_mode, task_name, instruction
        self.max_steps = config.max_steps or max_steps
        self.cameras = list(config.cameras)
        self._rs_cameras = [CAMERAS.get(c, c) for c in self.cameras]
        self.metadata = {**self.metadata, "render_fps": config.control_hz}
        size = config.image_size
        spaces: dict[str, gym.Space] = {"state": gym.spaces.Box(-np.inf, np.inf, (len(STATE_NAMES),), np.float32)}
        if self.cameras:
            spaces["images"] = gym.spaces.Dict(
                {c: gym.spaces.Box(0, 255, (size, size, 3), np.uint8) for c in self.cameras})
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

    def _bind(self, rs) -> None:
        self.rs = rs
        robot = rs.robots[0]
        self._arm_qpos = np.asarray(robot._ref_joint_pos_indexes)
        self._arm_qvel = np.asarray(robot._ref_joint_vel_indexes)
        self._joint_names = [rs.sim.model.joint_id2name(i) for i in robot._ref_joint_indexes]
        self._steps, self._obs, self._render_owner = 0, {}, {}
        self._quiet_renderer()

    def _quiet_renderer(self) -> None:
        quiet_renderer(self.rs.sim, self._render_owner, self.config.shadows, bool(self.cameras))

    def _advance(self, action: np.ndarray) -> dict[str, Any]:
        return self.rs.step(action)[0]

    def step(self, action: np.ndarray):
        action = check_action(action)
        if not self._obs:
            raise ConfigError("step() called before reset()")
        self._quiet_renderer()
        self._obs = self._advance(action)
        self._steps += 1
        success = bool(self.rs._check_success())
        terminated = success and self.config.terminate_on_success
        truncated = self._steps >= self.max_steps and not terminated
        return self._observation(), float(success), terminated, truncated, self._info(success)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        size = self.config.render_size
        return self.rs.sim.render(camera_name="agentview", width=size, height=size)[::-1].copy()

    def close(self) -> None:
        rs = getattr(self, "rs", None)
        if rs is not None:
            rs.close()
            self.rs = None

    @property
    def state_names(self) -> tuple[str, ...]:
        return STATE_NAMES

    @property
    def joint_names(self) -> list[str]:
        return list(self._joint_names)

    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        data = self.rs.sim.data
        return data.qpos[self._arm_qpos].copy(), data.qvel[self._arm_qvel].copy()

    def _info(self, success: bool) -> dict[str, Any]:
        return {"success": success, "instruction": self.instruction, "task": self.task_name}

    def _observation(self) -> dict[str, Any]:
        data = self.rs.sim.data
        return pack_observation(self._obs, data.qpos[self._arm_qpos], data.qvel[self._arm_qvel],
                                self.cameras, self._rs_cameras)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class RobosuiteEnv(RobosuiteBackedEnv):
    """One robosuite environment (``Lift``, ``PickPlaceCan``, ...) as a gymnasium Env with dict observations."""

    def __init__(self, env_name: str, instruction: str, max_steps: int, config: EnvConfig,
                 render_mode: str | None = None, robot: str = "Panda", privileged=None) -> None:
        self._configure(config, render_mode, f"robosuite/{env_name}", instruction, max_steps)
        suite, controller_config = import_robosuite()
        self.env_name, self._privileged = env_name, privileged
        try:
            rs = suite.make(
                env_name, robots=robot, controller_configs=controller_config(controller="BASIC", robot=robot),
                has_renderer=False, has_offscreen_renderer=bool(self.cameras) or render_mode is not None,
                use_camera_obs=bool(self.cameras), camera_names=self._rs_cameras or "agentview",
                camera_heights=config.image_size, camera_widths=config.image_size, control_freq=config.control_hz,
                horizon=10**9, ignore_done=True, hard_reset=False, reward_shaping=False, seed=0)
        except Exception as exc:  # robosuite raises bare Exceptions / ValueErrors for unknown names
            raise ConfigError(f"robosuite could not build {env_name!r} with cameras {self._rs_cameras}: {exc}") from exc
        if len(rs.robots) != 1 or rs.action_dim != ACTION_DIM:
            rs.close()
            raise ConfigError(f"robosuite/{env_name} has {len(rs.robots)} robots and a {rs.action_dim}-D "
                              f"action; this adapter drives one arm with a {ACTION_DIM}-D end-effector action")
        self._bind(rs)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:  # robosuite's placement samplers and robot init noise share this generator
            self.rs.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self._quiet_renderer()
        self._obs = self.rs.reset()
        self._steps = 0
        return self._observation(), self._info(bool(self.rs._check_success()))

    def privileged_state(self) -> dict[str, np.ndarray]:
        """Ground truth for the scripted experts (tool point, gripper, the task's objects); policies never see it."""
        obs = self._obs
        priv = {"tcp_pos": np.asarray(obs["robot0_eef_pos"], np.float64),
                "gripper_width": float(obs["robot0_gripper_qpos"][0] - obs["robot0_gripper_qpos"][1])}
        if self._privileged is not None:
            priv.update(self._privileged(self.rs))
        return priv
