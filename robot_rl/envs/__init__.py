"""Environments: one gymnasium interface with dict observations, and the task registry."""

from robot_rl.envs import (
    libero,  # noqa: F401  (registers LIBERO's suites; LIBERO is imported on use)
    native,  # noqa: F401  (registers the native tasks)
    robosuite,  # noqa: F401  (registers the robosuite tasks; robosuite is imported on use)
)
from robot_rl.envs.registry import TaskSpec, get_task, make_env, make_expert, register_task, task_names

__all__ = ["TaskSpec", "get_task", "make_env", "make_expert", "register_task", "task_names"]
