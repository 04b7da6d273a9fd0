"""Where the MuJoCo scene files live: inside an installed wheel (``robot_rl/_sim``) or the source tree."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from robot_rl.core.errors import RobotRLError

_PACKAGE = Path(__file__).resolve().parents[2]


@cache
def sim_dir() -> Path:
    """The folder holding ``panda/``, ``scenes/`` and ``tasks/``."""
    for candidate in (_PACKAGE / "_sim", _PACKAGE.parent / "sim"):
        if (candidate / "tasks").is_dir():
            return candidate
    raise RobotRLError(
        f"MuJoCo scene files not found next to {_PACKAGE} (looked for _sim/ and ../sim/); "
        "reinstall robot-rl"
    )


def task_xml(name: str) -> Path:
    path = sim_dir() / "tasks" / f"{name}.xml"
    if not path.is_file():
        raise RobotRLError(f"scene file {path} is missing; reinstall robot-rl")
    return path
