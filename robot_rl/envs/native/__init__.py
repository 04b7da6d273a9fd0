"""Our own MuJoCo manipulation tasks (the embedded default), registered on import."""

from robot_rl.envs.native.env import NativeManipulationEnv
from robot_rl.envs.native.experts import EXPERTS, ScriptedExpert
from robot_rl.envs.native.tasks import NATIVE_TASKS
from robot_rl.envs.registry import TaskSpec, register_task


def _register() -> None:
    for name, task in NATIVE_TASKS.items():
        register_task(
            TaskSpec(
                name=name,
                instruction=task.instruction,
                suite="native",
                difficulty=task.difficulty,
                make=lambda cfg, mode, task=task: NativeManipulationEnv(task, cfg, mode),
                make_expert=lambda noise, rng, name=name: EXPERTS[name](noise=noise, rng=rng),
            )
        )


_register()

__all__ = ["NATIVE_TASKS", "NativeManipulationEnv", "ScriptedExpert"]
