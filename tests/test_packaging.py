"""A non-editable install (a built wheel) carries the MuJoCo scenes and builds every task."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_carries_scenes_and_runs(tmp_path):
    pytest.importorskip("hatchling", reason="building the wheel needs hatchling (the dev extra)")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    wheel = next(tmp_path.glob("robot_rl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "robot_rl/_sim/panda/panda.xml" in names and "robot_rl/_sim/tasks/push.xml" in names
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    script = (
        "import robot_rl, pathlib; from robot_rl.envs import make_env, task_names; "
        "from robot_rl.envs.native.assets import sim_dir; "
        f"assert pathlib.Path(robot_rl.__file__).is_relative_to(pathlib.Path(r'{site}')), robot_rl.__file__; "
        "assert sim_dir().name == '_sim', sim_dir(); "
        "from robot_rl.envs import get_task; "
        "[make_env(t).reset(seed=0) for t in task_names() if get_task(t).suite == 'native']; print('ok')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
