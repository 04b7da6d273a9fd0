"""A writer SIGKILLed at random moments leaves the store readable with every earlier episode intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from robot_rl.core.schema import EpisodeMeta
from robot_rl.replay.integrity import check_store
from robot_rl.replay.store import EpisodeStore
from tests.replay.kill_writer import synthetic_episode

ROOT = Path(__file__).resolve().parents[2]


def _check_all_committed(path: Path) -> int:
    """Every committed episode byte for byte (read field by field over the whole store: one read per array,
    so checking after each of many kills stays cheap), and a deep integrity check."""
    store = EpisodeStore.open(path)
    n = store.num_episodes
    if n == 0:
        return 0
    steps = {key: store.read_field(key) for key in store.step_keys}
    finals = {k: store._read(f"final_obs/{k}", slice(0, n)) for k in synthetic_episode(0).final_obs}
    meta = {name: store.episode_field(name) for name in ("task", "instruction", "success", "source", "seed")}
    for i, (start, end) in enumerate(zip(store.episode_starts, store.episode_ends, strict=True)):
        expected = synthetic_episode(i)
        for key, arr in expected.step_arrays().items():
            np.testing.assert_array_equal(steps[key][start:end], arr, err_msg=f"episode {i} field {key}")
        for key, arr in expected.final_obs.items():
            np.testing.assert_array_equal(finals[key][i], arr, err_msg=f"episode {i} final {key}")
        got = EpisodeMeta(task=str(meta["task"][i]), instruction=str(meta["instruction"][i]),
                          success=bool(meta["success"][i]), source=str(meta["source"][i]), seed=int(meta["seed"][i]))
        assert got == expected.meta, f"episode {i} metadata"
    assert store.episode_meta(n - 1) == synthetic_episode(n - 1).meta  # and through the per-episode reader
    report = check_store(path, deep=True)  # and the interrupted write left nothing that looks damaged
    assert report.ok, [d.describe() for d in report.damage]
    return n


def _written_past_commit(path: Path) -> bool:
    """Whether the killed writer had begun an episode it did not commit."""
    store = EpisodeStore.open(path)
    if store.schema is None:
        return False
    longest = max(store._array(f"steps/{k}").shape[0] for k in store.step_keys)
    return longest > store.num_steps or any(path.rglob("*.partial"))


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing(tmp_path):
    path = tmp_path / "kill.zarr"
    EpisodeStore.create(path).close()
    rng = np.random.default_rng(1234)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    committed, mid_write_kills, kills = 0, 0, 24
    for _ in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.replay.kill_writer", str(path)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()
        for _ in range(rng.integers(1, 3)):  # let it commit 1-2 episodes however loaded the machine is,
            assert proc.stdout.readline().strip() == "committed", proc.stderr.read()
        time.sleep(rng.uniform(0.0, 0.1))  # then kill it at a random moment, mostly inside the next append
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        mid_write_kills += _written_past_commit(path)
        now = _check_all_committed(path)
        assert now >= committed, "a kill lost committed episodes"
        committed = now
    assert committed > kills, f"writers committed only {committed} episodes"
    assert mid_write_kills >= 1, "no kill landed inside an append: the test did not exercise the crash window"
    with EpisodeStore.open(path, mode="a") as store:  # a new writer resumes after the last crash
        store.append(synthetic_episode(store.num_episodes))
    assert _check_all_committed(path) == committed + 1
    EpisodeStore.open(path).verify()
    assert not any(path.rglob("*.partial"))


@pytest.mark.parametrize(("die_in", "after"), [
    ("episodes/manifest/c/", 3),  # the manifest entry (boundaries, metadata, digests) of the 3rd episode
    ("steps/obs/images/front/c/", 4),  # a chunk and its crc32c, rewriting the committed tail of a chunk
    ("zarr.json", 40),  # metadata, the commit record among it
])
def test_killed_while_writing_a_checksum_or_manifest_leaves_a_clean_store(tmp_path, die_in, after):
    path = tmp_path / "kill.zarr"
    EpisodeStore.create(path).close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "tests.replay.kill_writer", str(path), die_in, str(after)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert any(path.rglob("*.partial")), "the writer did not die inside a write"
    committed = _check_all_committed(path)  # every committed episode intact, and verify finds no damage
    with EpisodeStore.open(path, mode="a") as store:  # the next writer carries on
        store.append(synthetic_episode(store.num_episodes))
    assert _check_all_committed(path) == committed + 1
