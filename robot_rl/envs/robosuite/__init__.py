"""robosuite tasks (``robosuite/Lift``, ``robosuite/PickPlaceCan``, ..., and any robosuite env by name).

Registering them imports nothing from robosuite: it is needed only when an env is built, in its own venv."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from robot_rl.config.env import EnvConfig
from robot_rl.envs.registry import TaskSpec, register_task, register_task_family

PREFIX = "robosuite/"


def _lift(rs) -> dict:
    return {"cube_pos": np.array(rs.sim.data.body_xpos[rs.cube_body_id])}


def _can(rs) -> dict:
    can = np.array(rs.sim.data.body_xpos[rs.obj_body_id["Can"]])
    bin_z = float(rs.bin2_pos[2])
    return {"object_pos": can, "grasp_z": float(can[2]), "place_pos": np.array(rs.target_bin_placements[3]),
            "carry_z": bin_z + 0.25, "release_z": bin_z + 0.12}


def _stack(rs) -> dict:
    a = np.array(rs.sim.data.body_xpos[rs.cubeA_body_id])
    b = np.array(rs.sim.data.body_xpos[rs.cubeB_body_id])
    return {"object_pos": a, "grasp_z": float(a[2]), "place_pos": b, "carry_z": float(b[2]) + 0.12,
            "release_z": float(b[2]) + 0.055}


def _square(rs) -> dict:
    nut = rs.nuts[rs.nut_to_id["square"]]
    body = rs.obj_body_id[nut.name]
    x_axis = rs.sim.data.body_xmat[body].reshape(3, 3)[:, 0]  # the nut's handle points along its x axis
    eef = rs.sim.data.site_xmat[rs.robots[0].eef_site_id["right"]].reshape(3, 3)
    return {"nut_pos": np.array(rs.sim.data.body_xpos[body]),
            "handle_pos": np.array(rs.sim.data.site_xpos[rs.sim.model.site_name2id(nut.important_sites["handle"])]),
            "nut_yaw": float(np.arctan2(x_axis[1], x_axis[0])), "tcp_yaw": float(np.arctan2(eef[1, 0], eef[0, 0])),
            "peg_pos": np.array(rs.sim.data.body_xpos[rs.peg1_body_id]), "table_z": float(rs.table_offset[2]),
            "peg_top": float(rs.sim.data.body_xpos[rs.peg1_body_id][2]) + 0.1}  # the peg is a box 0.1 high


# name: (instruction, time limit at 10 Hz, privileged state, expert)
_TASKS: dict[str, tuple[str, int, Callable | None, str | None]] = {
    "Lift": ("lift the cube", 80, _lift, "LiftExpert"),
    "Stack": ("stack the red cube on the green cube", 150, _stack, "PlaceExpert"),
    "PickPlaceCan": ("put the can in its bin", 200, _can, "PlaceExpert"),
    "NutAssemblySquare": ("fit the square nut onto the square peg", 200, _square, "SquareNutExpert"),
}


def _maker(env_name: str, instruction: str, max_steps: int, privileged: Callable | None):
    def make(config: EnvConfig, render_mode: str | None = None):
        from robot_rl.envs.robosuite.env import RobosuiteEnv

        return RobosuiteEnv(env_name, instruction, max_steps, config, render_mode, privileged=privileged)

    return make


def _expert_maker(name: str):
    def make(noise: float, rng: np.random.Generator | None):
        from robot_rl.envs.robosuite import experts

        return getattr(experts, name)(noise, rng)

    return make


def _spec(env_name: str) -> TaskSpec:
    instruction, max_steps, privileged, expert = _TASKS.get(env_name, (f"solve robosuite {env_name}", 200, None, None))
    return TaskSpec(name=PREFIX + env_name, instruction=instruction, suite="robosuite",
                    make=_maker(env_name, instruction, max_steps, privileged),
                    make_expert=_expert_maker(expert) if expert else None)


for _name in _TASKS:
    register_task(_spec(_name))
register_task_family(PREFIX, lambda name: _spec(name[len(PREFIX):]))
