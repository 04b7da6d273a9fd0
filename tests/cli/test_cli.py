"""The robot-rl command line, run as a real process: outputs, and one-line errors that lose nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from robot_rl.envs import get_task, task_names
from robot_rl.replay.store import EpisodeStore

ROBOT_RL = Path(sys.executable).parent / "robot-rl"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(ROBOT_RL), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def assert_clean_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_tasks_lists_every_task():
    out = run("tasks").stdout
    for name in task_names():
        assert name in out
    listed = json.loads(run("tasks", "--json").stdout)
    assert [t["name"] for t in listed] == task_names()


def test_collect_info_video(tmp_path):
    store = tmp_path / "demos.zarr"
    proc = run("collect", "--task", "lift", "--episodes", "3", "--out", str(store), "--image-size", "32", "--quiet")
    assert "success rate" in proc.stdout
    info = json.loads(run("info", str(store), "--json").stdout)
    assert info["episodes"] == 3 and info["steps"] > 0 and info["success_rate"] >= 2 / 3
    assert info["tasks"] == {"lift": 3}
    assert "episodes     3" in run("info", str(store), "--verify").stdout
    video = tmp_path / "ep.mp4"
    run("video", str(store), "--episode", "2", "--out", str(video))
    cap = cv2.VideoCapture(str(video))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = cap.read()
    cap.release()
    length = EpisodeStore.open(store).read_episode(2, ["action"])["action"].shape[0]
    assert ok and frame.shape == (32, 64, 3) and frames == length + 1  # two cameras side by side

    # --append continues the seeds, so no demo repeats
    run("collect", "--task", "lift", "--episodes", "2", "--out", str(store), "--append",
        "--image-size", "32", "--quiet")
    seeds = EpisodeStore.open(store).episode_field("seed").tolist()
    assert seeds == [0, 1, 2, 3, 4]


def test_collect_without_cameras(tmp_path):
    store = tmp_path / "s.zarr"
    run("collect", "--task", "reach", "--episodes", "2", "--out", str(store), "--cameras", "", "--quiet")
    assert set(json.loads(run("info", str(store), "--json").stdout)["fields"]) >= {"obs/state", "action"}
    assert_clean_error(run("video", str(store), "--episode", "0", "--out", str(tmp_path / "v.mp4"), check=False),
                       "no camera images")


def test_errors_are_one_line_and_lose_nothing(tmp_path):
    store = tmp_path / "demos.zarr"
    run("collect", "--task", "reach", "--episodes", "2", "--out", str(store), "--image-size", "16", "--quiet")
    before = json.loads(run("info", str(store), "--json").stdout)

    unknown = run("collect", "--task", "fly", "--episodes", "1", "--out", str(tmp_path / "x.zarr"), check=False)
    assert_clean_error(unknown, "unknown task 'fly'", "reach")
    assert not (tmp_path / "x.zarr").exists()
    assert_clean_error(run("collect", "--task", "reach", "--episodes", "1", "--out", str(store), check=False),
                       "already exists", "--append", "--overwrite")
    # appending images of another size is refused before anything is written
    assert_clean_error(run("collect", "--task", "reach", "--episodes", "1", "--out", str(store), "--append",
                           "--image-size", "24", check=False), "obs/images/front")
    assert json.loads(run("info", str(store), "--json").stdout) == before

    assert_clean_error(run("info", str(tmp_path / "nothing.zarr"), check=False), "no episode store at")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "keep.txt").write_text("mine")
    assert_clean_error(run("info", str(plain), check=False), "not a robot_rl episode store")
    assert_clean_error(run("collect", "--task", "reach", "--episodes", "1", "--out", str(plain), "--overwrite",
                           check=False), "refusing to overwrite")
    assert (plain / "keep.txt").read_text() == "mine"
    assert_clean_error(run("video", str(store), "--episode", "5", "--out", str(tmp_path / "v.mp4"), check=False),
                       "episode 5 does not exist")

    corrupt = tmp_path / "corrupt.zarr"
    shutil.copytree(store, corrupt)
    (corrupt / "zarr.json").write_text("{ not json")
    assert_clean_error(run("info", str(corrupt), check=False), "corrupt")
    shutil.rmtree(corrupt)
    shutil.copytree(store, corrupt)
    for chunk in (corrupt / "episodes" / "end" / "c").iterdir():
        chunk.unlink()
    assert_clean_error(run("info", str(corrupt), check=False), "corrupt", "episodes/end", "is missing")


def test_python_dash_m_is_the_cli():
    proc = subprocess.run([sys.executable, "-m", "robot_rl", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("robot-rl ")


@pytest.mark.slow
@pytest.mark.parametrize("task", [t for t in task_names() if get_task(t).suite == "native"])  # robosuite's: tests/envs
def test_collect_20_episodes_succeeds(tmp_path, task):
    """The acceptance check at test size: 20 expert episodes reach >= 95% success."""
    store = tmp_path / f"{task}.zarr"
    run("collect", "--task", task, "--episodes", "20", "--out", str(store), "--image-size", "32", "--quiet")
    assert json.loads(run("info", str(store), "--json").stdout)["success_rate"] >= 0.95
