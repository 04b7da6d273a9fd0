"""LIBERO behind our Env: one task of a suite (``libero_spatial/0``), its language instruction, its fixed init
states, our observation and action conventions (those of the robosuite adapter: LIBERO runs on robosuite 1.4).

LIBERO lives in its own venv (it pins robosuite 1.4; ``make .venv-libero``). Before its first import this
module writes the config file LIBERO would otherwise ask for on standard input, pointing at the installed
package and at the scene assets (``LIBERO_ASSETS``, else ``<libero>/libero/assets``).

``reset(seed=s)`` starts from the task's init state ``s % n`` (50 per task in the four headline suites), so
evaluating seeds 0..49 covers each once; ``options={"init_state": i}`` picks one directly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")  # must precede the first import of mujoco

import numpy as np

from robot_rl.config.env import EnvConfig
from robot_rl.core.errors import ConfigError
from robot_rl.envs.robosuite.env import RobosuiteBackedEnv

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
# episode limits the LIBERO evaluations use (at LIBERO's 20 Hz); scaled to the env's control rate
MAX_STEPS_20HZ = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
INSTALL_HINT = ("LIBERO is not installed in this environment: it pins robosuite 1.4, so it lives in its own venv. "
                "Build it with `make .venv-libero/.ready` and run there (.venv-libero/bin/robot-rl)")


def _libero_root() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(INSTALL_HINT)
    return Path(next(iter(spec.submodule_search_locations))) / "libero"


def assets_dir() -> Path:
    """Where LIBERO's scene assets are: ``$LIBERO_ASSETS`` or the installed package's ``assets`` (what it reads)."""
    return Path(os.environ.get("LIBERO_ASSETS") or _libero_root() / "assets")


def ensure_config() -> None:
    """Write LIBERO's config file (it calls ``input()`` on import without one) unless the user has one."""
    folder = Path(os.environ.get("LIBERO_CONFIG_PATH") or Path.home() / ".libero")
    path = folder / "config.yaml"
    if path.exists():
        return
    root = _libero_root()
    folder.mkdir(parents=True, exist_ok=True)
    datasets = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share") / "libero/datasets"
    lines = {"benchmark_root": root, "bddl_files": root / "bddl_files", "init_states": root / "init_files",
             "datasets": datasets, "assets": assets_dir()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{k}: {v}\n" for k, v in lines.items()))
    tmp.replace(path)
    os.environ["LIBERO_CONFIG_PATH"] = str(folder)


def import_libero():
    """(benchmark module, OffScreenRenderEnv, bddl folder), or a clear error saying what is missing."""
    ensure_config()
    assets = assets_dir()
    if not (assets / "scenes").is_dir():
        raise ConfigError(f"LIBERO's scene assets are not at {assets} (no scenes/ folder): it would try to download "
                          f"them. Point LIBERO_ASSETS at a copy (make .venv-libero/.ready links "
                          f"../shared/libero-assets/assets) ")
    import logging

    logging.disable(logging.WARNING)
    try:
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv
    except ImportError as exc:
        raise ConfigError(f"{INSTALL_HINT} ({exc})") from None
    finally:
        logging.disable(logging.NOTSET)
    return benchmark, OffScreenRenderEnv, Path(get_libero_path("bddl_files"))


def _benchmark(suite: str):
    """LIBERO's benchmark object of a suite (it prints its task order on stdout: sent to stderr instead)."""
    import contextlib
    import sys

    if suite not in SUITES:
        raise ConfigError(f"unknown LIBERO suite {suite!r}; suites: {', '.join(SUITES)}")
    benchmark, _, _ = import_libero()
    with contextlib.redirect_stdout(sys.stderr):
        return benchmark.get_benchmark_dict()[suite]()


def suite_tasks(suite: str) -> list[str]:
    """The task names of a LIBERO suite, ``<suite>/<i>`` in the suite's order."""
    return [f"{suite}/{i}" for i in range(_benchmark(suite).n_tasks)]


def task_instruction(suite: str, index: int) -> str:
    return _benchmark(suite).get_task(index).language


class LiberoEnv(RobosuiteBackedEnv):
    """One LIBERO task as a gymnasium Env with dict observations and sparse success reward."""

    def __init__(self, suite: str, index: int, config: EnvConfig, render_mode: str | None = None) -> None:
        _, offscreen_env, bddl_root = import_libero()
        bench = _benchmark(suite)
        if not 0 <= index < bench.n_tasks:
            raise ConfigError(f"{suite} has tasks 0..{bench.n_tasks - 1}, got {index}")
        task = bench.get_task(index)
        self._configure(config, render_mode, f"{suite}/{index}", task.language,
                        int(round(MAX_STEPS_20HZ[suite] * config.control_hz / 20)))
        self.suite, self.index = suite, index
        self.init_states = np.asarray(bench.get_task_init_states(index))
        try:
            self.libero = offscreen_env(
                bddl_file_name=str(bddl_root / task.problem_folder / task.bddl_file),
                camera_heights=config.image_size, camera_widths=config.image_size,
                camera_names=self._rs_cameras or ["agentview"], use_camera_obs=bool(self.cameras),
                control_freq=config.control_hz,
                hard_reset=False)  # a hard reset rebuilds the scene from XML: ~1.4 s a reset
        except Exception as exc:
            raise ConfigError(f"LIBERO could not build {self.task_name} with cameras {self._rs_cameras}: "
                              f"{exc}") from exc
        self._bind(self.libero.env)  # the robosuite 1.4 env inside

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        n = len(self.init_states)
        which = (options or {}).get("init_state")
        if which is None:
            which = (seed or 0) % n
        if not 0 <= int(which) < n:
            raise ConfigError(f"{self.task_name} has init states 0..{n - 1}, got {which}")
        self._quiet_renderer()
        self.libero.seed(int(seed or 0))
        self.libero.reset()
        self._forget_last_episode()
        self._obs = self.libero.set_init_state(self.init_states[int(which)])
        self._steps, self.init_state = 0, int(which)
        return self._observation(), self._info(bool(self.rs._check_success()))

    def _forget_last_episode(self) -> None:
        """A soft reset keeps what the last episode left in the gripper's ramped command and MuJoCo's warm start:
        cleared, so that an episode depends on its init state and actions alone."""
        robot = self.rs.robots[0]
        grippers = robot.gripper.values() if isinstance(robot.gripper, dict) else [robot.gripper]
        for gripper in grippers:
            if isinstance(getattr(gripper, "current_action", None), np.ndarray):
                gripper.current_action = np.zeros_like(gripper.current_action)
        self.rs.sim.data.qacc_warmstart[:] = 0

    def _advance(self, action: np.ndarray) -> dict[str, Any]:
        return self.libero.step(action)[0]

    def close(self) -> None:
        libero = getattr(self, "libero", None)
        if libero is not None:
            libero.close()
            self.libero = self.rs = None
