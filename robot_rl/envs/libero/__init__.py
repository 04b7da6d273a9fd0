"""LIBERO tasks by name: ``libero_spatial/0`` ... ``libero_90/89`` (the five suites; LIBERO is imported only when
an env is built, in its own venv)."""

from __future__ import annotations

from robot_rl.config.env import EnvConfig
from robot_rl.core.errors import ConfigError
from robot_rl.envs.libero.env import SUITES
from robot_rl.envs.registry import TaskSpec, register_task_family


def _spec_for(suite: str):
    def make_spec(name: str) -> TaskSpec:
        index = name[len(suite) + 1:]
        if not index.isdigit():
            raise ConfigError(f"a LIBERO task is named {suite}/<index>, got {name!r}")

        def make(config: EnvConfig, render_mode: str | None = None):
            from robot_rl.envs.libero.env import LiberoEnv

            return LiberoEnv(suite, int(index), config, render_mode)

        try:
            from robot_rl.envs.libero.env import task_instruction

            instruction = task_instruction(suite, int(index))
        except (ConfigError, IndexError):  # LIBERO is not here (building the env says so) or no such index
            instruction = ""
        return TaskSpec(name=name, instruction=instruction, suite=suite, make=make)

    return make_spec


for _suite in SUITES:
    register_task_family(f"{_suite}/", _spec_for(_suite))
