"""The task registry: adding a task is one module plus one ``register_task`` call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from robot_rl.config.env import EnvConfig
from robot_rl.core.errors import UnknownTaskError


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: how to build its env and, where one exists, its scripted expert."""

    name: str
    instruction: str
    suite: str
    make: Callable[[EnvConfig, str | None], gym.Env]
    make_expert: Callable[[float, np.random.Generator | None], object] | None = None
    difficulty: int = 0


_TASKS: dict[str, TaskSpec] = {}
_FAMILIES: dict[str, Callable[[str], TaskSpec]] = {}


def register_task(spec: TaskSpec) -> None:
    if spec.name in _TASKS:
        raise ValueError(f"task {spec.name!r} is already registered")
    _TASKS[spec.name] = spec
    gym.register(
        id=f"robot_rl/{spec.name.replace('/', '.')}-v0",
        entry_point="robot_rl.envs.registry:_gym_entry_point",
        kwargs={"task": spec.name},
    )


def register_task_family(prefix: str, make_spec: Callable[[str], TaskSpec]) -> None:
    """Tasks named ``prefix<anything>`` that are not registered one by one (e.g. any robosuite env by its name):
    ``make_spec(name)`` builds the spec the first time the name is asked for."""
    _FAMILIES[prefix] = make_spec


def task_names() -> list[str]:
    return list(_TASKS)


def task_families() -> list[str]:
    """Prefixes of the tasks made by name on first use (``robosuite/``, ``libero_spatial/`` ...)."""
    return list(_FAMILIES)


def get_task(name: str) -> TaskSpec:
    if name not in _TASKS:
        for prefix, make_spec in _FAMILIES.items():
            if name.startswith(prefix) and len(name) > len(prefix) and "/" not in name[len(prefix):]:
                register_task(make_spec(name))
                break
    try:
        return _TASKS[name]
    except KeyError:
        families = "".join(f", {p}<name>" for p in _FAMILIES)
        raise UnknownTaskError(f"unknown task {name!r}; registered tasks: {', '.join(_TASKS)}{families}") from None


def make_env(config: EnvConfig | str, render_mode: str | None = None) -> gym.Env:
    """Build the env of a registered task from an EnvConfig (or just a task name)."""
    if isinstance(config, str):
        config = EnvConfig(task=config)
    return get_task(config.task).make(config, render_mode)


def make_expert(task: str, noise: float = 0.0, rng: np.random.Generator | None = None):
    spec = get_task(task)
    if spec.make_expert is None:
        raise UnknownTaskError(f"task {task!r} has no scripted expert")
    return spec.make_expert(noise, rng)


def _gym_entry_point(task: str, render_mode: str | None = None, **overrides) -> gym.Env:
    return make_env(EnvConfig(task=task, **overrides), render_mode)
