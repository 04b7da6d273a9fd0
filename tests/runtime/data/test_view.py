"""`robot-rl view`: stores and run folders written as rerun recordings, read back with rerun's own reader."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from rerun.chunk import Chunk, RrdReader

from robot_rl.core.errors import ConfigError
from robot_rl.critic.dataset import load_episodes
from robot_rl.critic.model import ProgressCritic
from robot_rl.critic.reward import CriticReward
from robot_rl.replay.store import EpisodeStore
from robot_rl.runtime.data.view import view
from tests.cli.test_cli import assert_clean_error, run
from tests.critic.test_critic import tiny_critic

TINY_PRETRAIN = ["--policy.hidden_dim=64", "--policy.n_blocks=1", "--policy.image_feature_dim=16",
                 "--policy.horizon=4", "--policy.n_action_steps=2", "--log_every=2", "--checkpoint_every=4",
                 "--warmup_steps=2"]


def read_rrd(path: Path) -> dict[str, list[Chunk]]:
    """Chunks of the recording in ``path`` by entity path (without rerun's leading slash and its properties)."""
    chunks = defaultdict(list)
    for chunk in RrdReader(path).stream().to_chunks():
        if not chunk.entity_path.startswith("/__"):
            chunks[chunk.entity_path.lstrip("/")].append(chunk)
    return dict(chunks)


def series(chunks: list[Chunk], timeline: str = "step") -> tuple[np.ndarray, np.ndarray]:
    """(times, values) of a scalar entity, in time order."""
    times, values = [], []
    for chunk in chunks:
        batch = chunk.to_record_batch()
        times += batch.column(timeline).to_pylist()
        values += [v[0] for v in batch.column("Scalars:scalars").to_pylist()]
    order = np.argsort(times)
    return np.asarray(times)[order], np.asarray(values)[order]


def rows(chunks: list[Chunk]) -> int:
    return sum(c.num_rows for c in chunks)


def no_rrd_left(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".rrd" in p.name]


def expected_episode_entities(i: int, store: EpisodeStore) -> set[str]:
    root = f"episode_{i:04d}"
    schema = store.schema["steps"]
    names = {f"{root}/cameras/{k.split('/')[-1]}" for k in schema if k.startswith("obs/images/")}
    names |= {f"{root}/state/{j}" for j in range(schema["obs/state"]["shape"][0])}
    names |= {f"{root}/action/{j}" for j in range(schema["action"]["shape"][0])}
    names |= {f"{root}/{n}" for n in ("reward", "flags/intervention", "flags/success", "info")}
    data = store.read_episode(i, ["success", "intervention"])
    if data["success"].any() or data["intervention"].any():
        names.add(f"{root}/events")
    return names


def test_cli_writes_the_chosen_episodes(tmp_path, push_store):
    rrd = tmp_path / "two.rrd"
    proc = run("view", str(push_store), "--episode", "0,2", "--out", str(rrd), "--json", "--quiet")
    line, summary = proc.stdout.splitlines()[0], json.loads(proc.stdout.splitlines()[1])
    store = EpisodeStore.open(push_store)
    lengths = [len(store.read_episode(i, ["reward"])["reward"]) for i in (0, 2)]
    entities = len(summary["entities"])
    assert line == f"wrote 2 episodes ({sum(lengths)} steps, {entities} entities) of {push_store} to {rrd}"
    assert summary["out"] == str(rrd) and summary["episodes"] == [0, 2]

    chunks = read_rrd(rrd)
    expected = expected_episode_entities(0, store) | expected_episode_entities(2, store)
    assert set(chunks) == expected == set(summary["entities"])
    assert {"episode_0000/cameras/front", "episode_0000/cameras/wrist"} <= expected
    # every step's frame and the final observation's
    assert rows(chunks["episode_0000/cameras/front"]) == lengths[0] + 1
    assert rows(chunks["episode_0002/cameras/wrist"]) == lengths[1] + 1
    steps, reward = series(chunks["episode_0000/reward"])
    np.testing.assert_array_equal(steps, np.arange(lengths[0]))
    np.testing.assert_allclose(reward, store.read_episode(0, ["reward"])["reward"], rtol=1e-6)
    _, state3 = series(chunks["episode_0002/state/3"])
    ep = store.episode(2)
    np.testing.assert_allclose(state3, np.append(ep.obs["state"][:, 3], ep.final_obs["state"][3]), rtol=1e-6)
    _, success = series(chunks["episode_0000/flags/success"])
    np.testing.assert_array_equal(success, store.read_episode(0, ["success"])["success"].astype(float))
    # time in seconds from the store's control rate (10 Hz)
    seconds = chunks["episode_0000/reward"][0].to_record_batch().column("time").to_pylist()
    assert seconds[1].total_seconds() == pytest.approx(0.1)
    info = chunks["episode_0000/info"][0].to_record_batch().column("TextDocument:text").to_pylist()[0][0]
    assert "push" in info and "expert" in info and "success" in info

    # the default file: the store's name + .rrd beside it, every episode
    default = run("view", str(push_store), "--quiet").stdout
    default_rrd = Path(str(push_store) + ".rrd")
    assert "wrote 5 episodes" in default and str(default_rrd) in default
    assert {e.split("/")[0] for e in read_rrd(default_rrd)} == {f"episode_{i:04d}" for i in range(5)}


def test_extras_and_critic_values(tmp_path, push_store):
    store_path = tmp_path / "relabelled.zarr"
    shutil.copytree(push_store, store_path)
    with EpisodeStore.open(store_path, mode="a") as store:
        store.extra_array("critic_reward", np.float32, create=True)
        marked = np.arange(store.num_steps, dtype=np.float32) / 100
        store.write_extra_rows("critic_reward", 0, marked)
        store.commit_extras({"critic_reward": store.num_steps})
        start, end = int(store.episode_starts[1]), int(store.episode_ends[1])
    critic_dir = tmp_path / "critic"
    tiny_critic().save(critic_dir)

    rrd = tmp_path / "extras.rrd"
    summary = view(store_path, episodes=[1], out=rrd, critic=str(critic_dir), progress=False)
    chunks = read_rrd(rrd)
    assert set(summary["entities"]) == set(chunks)
    steps, values = series(chunks["episode_0001/extras/critic_reward"])
    np.testing.assert_array_equal(steps, np.arange(end - start))
    np.testing.assert_allclose(values, marked[start:end], rtol=1e-6)

    # the critic's value curve, as CriticReward computes it for relabelling, one point per frame
    store = EpisodeStore.open(store_path)
    ep = load_episodes(store, ["front", "wrist"], [1])[0]
    expected = CriticReward(ProgressCritic.load(critic_dir)).value_curve(ep.frames, ep.instruction)
    steps, values = series(chunks["episode_0001/critic/value"])
    np.testing.assert_array_equal(steps, np.arange(end - start + 1))
    np.testing.assert_allclose(values, expected, atol=1e-5)
    assert rows(chunks["episode_0001/critic/done"]) == end - start + 1

    # a critic folder whose weights are damaged: one clear error, no file
    broken = tmp_path / "broken"
    shutil.copytree(critic_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ConfigError, match="does not load"):
        view(store_path, episodes=[1], out=tmp_path / "broken.rrd", critic=str(broken), progress=False)
    assert not (tmp_path / "broken.rrd").exists() and not list(tmp_path.glob(".broken.rrd*"))


def test_run_folder_curves_and_its_store(tmp_path, push_store):
    out = tmp_path / "run"
    run("pretrain", "--policy", "flow", "--data", str(push_store), "--out", str(out), "--steps", "4", "--quiet",
        "--", *TINY_PRETRAIN)
    shutil.copytree(push_store, out / "demos.zarr")  # as the main job keeps its demos in its run folder
    (out / "rl").mkdir()
    with (out / "rl" / "eval.csv").open("w", newline="") as f:  # the RL stage's log: iterations and env steps
        writer = csv.writer(f)
        writer.writerows([["iteration", "env_steps", "success_rate", "note"], [1, 200, 0.25, "a"], [2, 400, 0.5, "b"]])

    proc = run("view", str(out), "--episode", "4", "--json", "--quiet")
    summary = json.loads(proc.stdout.splitlines()[1])
    rrd = tmp_path / "run.rrd"
    assert summary["out"] == str(rrd) and summary["store"] == str(out / "demos.zarr")
    assert "episodes of demos.zarr" in summary["line"]
    chunks = read_rrd(rrd)
    metrics = list(csv.DictReader((out / "metrics.csv").open()))
    steps, loss = series(chunks["curves/metrics/loss"], "train_step")
    np.testing.assert_array_equal(steps, [int(r["step"]) for r in metrics])
    np.testing.assert_allclose(loss, [float(r["loss"]) for r in metrics])
    assert {"curves/metrics/lr", "curves/metrics/elapsed_s"} <= set(chunks)
    steps, success = series(chunks["curves/rl/eval/success_rate"], "env_steps")
    assert steps.tolist() == [200, 400] and success.tolist() == [0.25, 0.5]
    assert not any(e.startswith("curves/rl/eval/note") or e.endswith("/iteration") for e in chunks)
    assert {e.split("/")[0] for e in chunks} == {"curves", "episode_0004"}


def test_bad_inputs_are_one_line_and_leave_no_file(tmp_path, push_store, monkeypatch):
    rrd = tmp_path / "bad.rrd"
    assert_clean_error(run("view", str(tmp_path / "nowhere.zarr"), "--out", str(rrd), check=False),
                       "nowhere.zarr", "does not exist")
    assert_clean_error(run("view", str(push_store), "--episode", "0,99", "--out", str(rrd), check=False),
                       "episode 99 does not exist", "5 episodes")
    (tmp_path / "empty").mkdir()
    assert_clean_error(run("view", str(tmp_path / "empty"), "--out", str(rrd), check=False),
                       "neither an episode store nor a run folder")
    assert_clean_error(run("view", str(push_store), "--critic", str(tmp_path / "no_critic"), "--out", str(rrd),
                           check=False), "no_critic", "does not exist")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert_clean_error(run("view", str(push_store), "--spawn", check=False), "needs a display", "--out")
    assert no_rrd_left(tmp_path) and no_rrd_left(push_store.parent)


def test_intervention_and_success_markers(tmp_path, push_episodes):
    ep = copy.deepcopy(push_episodes[0])
    length = len(ep)
    ep.intervention[:] = False
    ep.intervention[3:7] = True  # the operator takes over twice, the second time to the end
    ep.intervention[10:] = True
    store_path = tmp_path / "hil.zarr"
    with EpisodeStore.create(store_path) as store:
        store.append(ep)
    rrd = tmp_path / "hil.rrd"
    view(store_path, out=rrd, progress=False)
    chunks = read_rrd(rrd)
    _, flags = series(chunks["episode_0000/flags/intervention"])
    np.testing.assert_array_equal(flags, ep.intervention.astype(float))
    assert "time" not in chunks["episode_0000/reward"][0].timeline_names  # no env config: no control rate
    logged = []
    for chunk in chunks["episode_0000/events"]:
        batch = chunk.to_record_batch()
        logged += zip(batch.column("step").to_pylist(), [t[0] for t in batch.column("TextLog:text").to_pylist()])
    first_success = int(np.flatnonzero(ep.success)[0])
    assert sorted(logged) == sorted([(first_success, "first success"), (3, "intervention starts"),
                                     (7, "intervention ends"), (10, "intervention starts"),
                                     (length, "intervention ends")])
