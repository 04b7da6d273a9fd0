"""Asynchronous actors and learner (rl.backend=local and ray): versioned weights, and a tiny real run whose
actor and learner are killed with SIGKILL mid-way; every committed episode is ingested exactly once, versions
only increase, and the run finishes."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import re
import signal
import time

import draccus
import numpy as np
import pytest
import torch

from robot_rl.config import EnvConfig
from robot_rl.replay.store import EpisodeStore
from robot_rl.runtime.distributed.weights import WeightPublisher, WeightSubscriber
from robot_rl.runtime.training.offpolicy import ChunkRLTrainer
from robot_rl.runtime.training.rl import RLConfig
from tests.runtime.conftest import fresh_rl
from tests.runtime.training.test_offpolicy import _tiny_chunk_run
from tests.runtime.training.test_rl import _rows


def test_weights_versions_only_increase_and_the_newest_wins(tmp_path):
    pub = WeightPublisher(tmp_path / "w", keep=2)
    sub = WeightSubscriber(tmp_path / "w")
    assert sub.poll() is None
    pub.publish({"a": torch.zeros(3)}, 1)
    assert torch.equal(sub.poll()["a"], torch.zeros(3)) and sub.version == 1
    assert sub.poll() is None  # nothing newer
    for v in (2, 3, 4):
        pub.publish({"a": torch.full((3,), float(v))}, v)
    got = sub.poll()  # versions 2 and 3 are skipped: the actor takes the newest
    assert sub.version == 4 and float(got["a"][0]) == 4.0 and sub.published_at <= time.time()
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["v0000000003.safetensors", "v0000000004.safetensors"]
    with pytest.raises(ValueError, match="not above"):
        pub.publish({"a": torch.zeros(3)}, 4)
    assert WeightPublisher(tmp_path / "w").version == 4  # a restarted learner continues above it


def _status(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _wait(what, predicate, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        assert proc.poll() is None, f"the run ended while waiting for {what}: " + proc.communicate()[0][-3000:]
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _committed(path) -> list[np.ndarray]:
    with EpisodeStore.open(path) as store:
        return [store.read_episode(i, ["action"])["action"] for i in range(store.num_episodes)]


BACKENDS = ["local", pytest.param("ray", marks=pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install 'robot-rl[dist]')"))]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_async_run_survives_killed_actor_and_learner(tmp_path, tiny_chunk_job, backend):
    out = fresh_rl(tiny_chunk_job, tmp_path / "job")
    rl = out / "rl"
    actors = rl / "actors"
    # actors never wait for the learner (a real arm's setting), and the budget outlasts the kills below; on Ray an
    # inference node serves the actors (the local node's death is tested on its own below)
    node = ["--rl.distributed.inference.node=true", "--rl.distributed.inference.max_wait_ms=20"] \
        if backend == "ray" else []
    proc = _tiny_chunk_run(out, "--rl.iterations=6", "--rl.steps_per_iteration=30", f"--rl.backend={backend}",
                           "--rl.distributed.publish_every=5", "--rl.distributed.max_backlog=null", *node, wait=False)
    node_status = actors / "inference.status.json"
    try:
        if node:  # 0. the inference node killed: Ray restarts it on the same queues and it serves again
            _wait("the node answering", lambda: (_status(node_status) or {}).get("batches", 0) >= 3, proc)
            dead = _status(node_status)["pid"]
            os.kill(dead, signal.SIGKILL)
            _wait("the node's restart", lambda: (_status(node_status) or {}).get("pid") not in (None, dead), proc)
        # 1. an actor killed mid-episode: restarted, and nothing it had in flight reaches the replay
        _wait("committed episodes", lambda: (actors / "actor_0.zarr").exists() and
              (_status(actors / "actor_0.status.json") or {}).get("committed", 0) >= 2, proc)
        victim = _status(actors / "actor_0.status.json")["pid"]
        os.kill(victim, signal.SIGKILL)
        before = _committed(actors / "actor_0.zarr")
        _wait("the actor's restart", lambda: (_status(actors / "actor_0.status.json") or {}).get("pid") not in
              (None, victim), proc)
        # 2. the learner killed: restarted from learner.pt while the actors go on acting
        _wait("a learner status", lambda: _status(actors / "learner.status.json") is not None, proc)
        learner = _status(actors / "learner.status.json")
        os.kill(learner["pid"], signal.SIGKILL)
        version_at_kill = WeightPublisher(rl / "weights").version
        acted = {k: (_status(actors / f"actor_{k}.status.json") or {}).get("env_steps", 0) for k in (0, 1)}
        _wait("actors acting while the learner is down", lambda: any(
            (_status(actors / f"actor_{k}.status.json") or {}).get("env_steps", 0) > acted[k] for k in (0, 1)), proc)
        out_text, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out_text[-4000:]
    assert "reusing" in out_text  # the demos, cloned policy and critic of the fixture
    assert re.search(r"actor 0 exited \(.+\); restarting it", out_text), out_text[-4000:]
    assert re.search(r"learner exited \(.+\); restarting it", out_text), out_text[-4000:]
    assert WeightPublisher(rl / "weights").version > version_at_kill  # the new learner publishes above it
    if node:
        assert re.search(r"inference node exited \(.+\); restarting it \(1/5\)", out_text), out_text[-4000:]
        assert _status(node_status)["batches"] > 0 and _status(node_status)["version"] > 0
        assert all(_status(actors / f"actor_{k}.status.json")["node"]["served"] > 0 for k in (0, 1))

    after = _committed(actors / "actor_0.zarr")
    assert len(after) > len(before)
    for a, b in zip(before, after):  # committed episodes are kept as they were
        np.testing.assert_array_equal(a, b)
    rows = _rows(rl / "metrics.csv")
    assert [int(r["iteration"]) for r in rows] == list(range(1, 7))  # every round once
    assert float(rows[-1]["features_shipped"]) > 0.5  # the actors computed the replay data of their episodes
    versions = [int(r["weight_version"]) for r in rows]
    assert versions == sorted(versions)
    for k in (0, 1):  # each actor acted with versions that never went back
        with EpisodeStore.open(actors / f"actor_{k}.zarr") as store:
            assert store.episode_meta(0).source == "policy"
            seq = np.concatenate([store.read_episode(i, ["policy_version"])["policy_version"]
                                  for i in range(store.num_episodes)])
            assert (np.diff(seq) >= 0).all() and seq.max() > 0

    # every committed episode is in the replay exactly once (a resumed learner ingests what the last one had
    # not yet), and ingesting again adds nothing
    state = torch.load(rl / "learner.pt", weights_only=True)
    meta = json.loads((rl / "rl.json").read_text())
    trainer = ChunkRLTrainer(meta["policy"], EnvConfig(**meta["env"]), rl, draccus.decode(RLConfig, meta["rl"]),
                             critic_dir=meta["critic"], demos=meta["demos"], resume=True, progress=False)
    demo_files = list((rl / "demo_features").rglob("*.npz"))  # the demos' replay data, computed once
    with EpisodeStore.open(meta["demos"][0]) as demos:
        assert len(demo_files) == demos.num_episodes
    stores = {p.name: _committed(p) for p in sorted(actors.glob("actor_*.zarr"))}
    assert state["ingested"].keys() == {*stores, "online.zarr"} and state["ingested"]["online.zarr"] == 0
    assert all(0 < state["ingested"][name] <= len(eps) for name, eps in stores.items())
    total = sum(len(a) for eps in stores.values() for a in eps)
    assert trainer.replay.num_steps["online"] == total and trainer.env_steps == total
    assert trainer.ingested == {name: len(eps) for name, eps in stores.items()} | {"online.zarr": 0}
    with EpisodeStore.open(actors / "actor_1.zarr") as store:
        assert trainer.ingest(store, "actor_1.zarr") == []  # a second look at a store adds nothing
    assert trainer.replay.num_steps["online"] == total
    # weights reached the actors through Ray's object store on Ray, through the weight files locally
    swaps = [(_status(actors / f"actor_{k}.status.json") or {}).get("weight_swaps", {}) for k in (0, 1)]
    via = "object_store" if backend == "ray" else "files"
    assert all(s.get(via, 0) > 0 for s in swaps), swaps
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algo"] == "chunk" and summary["rl_iterations"] == 6
    assert summary["env_steps"] == state["env_steps"] <= total


@pytest.mark.slow
def test_learner_killed_while_writing_its_checkpoint_resumes_from_the_previous_one(tmp_path, tiny_chunk_job):
    """The checkpoint is written to learner.pt.tmp, then renamed. Here learner.pt.tmp is a named pipe: the
    learner's next checkpoint blocks inside its write once this test has read its first bytes, and is killed
    there, mid-write, for real."""
    out = fresh_rl(tiny_chunk_job, tmp_path / "job")
    rl = out / "rl"
    proc = _tiny_chunk_run(out, "--rl.iterations=5", "--rl.steps_per_iteration=6", "--rl.backend=local",
                           "--rl.distributed.publish_every=5", "--rl.distributed.max_backlog=6", wait=False)
    fifo = rl / "learner.pt.tmp"
    try:
        _wait("a first checkpoint", lambda: (rl / "learner.pt").is_file() and
              _status(rl / "actors" / "learner.status.json") is not None, proc)
        previous = (rl / "learner.pt").read_bytes()
        learner = _status(rl / "actors" / "learner.status.json")["pid"]
        assert len(previous) > 16 * 4096  # so that a write of it cannot fit in the pipe
        os.mkfifo(fifo)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        fcntl.fcntl(reader, fcntl.F_SETPIPE_SZ, 4096)  # the writer blocks once 4 KiB wait unread
        got = b""

        def writing() -> bool:
            nonlocal got
            try:
                got += os.read(reader, 4096)
            except BlockingIOError:
                pass
            return len(got) > 0

        _wait("the learner writing its next checkpoint", writing, proc)
        os.kill(learner, signal.SIGKILL)  # mid-write: the pipe holds the rest of the checkpoint
        os.close(reader)
        fifo.unlink()
        assert (rl / "learner.pt").read_bytes() == previous  # the previous checkpoint is untouched ...
        state = torch.load(rl / "learner.pt", weights_only=True)  # ... and loads
        out_text, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out_text[-4000:]
    assert re.search(r"learner exited \(.+\); restarting it", out_text), out_text[-4000:]
    final = torch.load(rl / "learner.pt", weights_only=True)
    assert final["updates"] > state["updates"] and final["iteration"] == 5
    rows = _rows(rl / "metrics.csv")
    assert [int(r["iteration"]) for r in rows] == list(range(1, 6))
    versions = [int(r["weight_version"]) for r in rows]
    assert versions == sorted(versions)


def test_learner_threads_leave_the_actors_their_cores():
    from robot_rl.runtime.distributed.learner import learner_threads

    cfg = RLConfig()
    cfg.distributed.actors = 2
    assert learner_threads(cfg) == max(1, (os.cpu_count() or 1) - 2)
    assert learner_threads(cfg, cpus=3.0) == 3  # on Ray: the CPUs reserved for the learner
    cfg.distributed.robot.namespaces = ["/a", "/b", "/c"]  # one actor per robot
    assert learner_threads(cfg) == max(1, (os.cpu_count() or 1) - 3)
    cfg.threads = 5
    assert learner_threads(cfg, cpus=1.0) == 5  # rl.threads, when set, wins


@pytest.mark.slow
def test_inference_node_batches_the_actors_and_they_act_on_when_it_dies(tmp_path, tiny_chunk_job):
    out = fresh_rl(tiny_chunk_job, tmp_path / "job")
    rl = out / "rl"
    actors = rl / "actors"
    proc = _tiny_chunk_run(out, "--rl.iterations=4", "--rl.steps_per_iteration=30", "--rl.backend=local",
                           "--rl.distributed.max_backlog=null", "--rl.distributed.inference.node=true",
                           "--rl.distributed.inference.max_wait_ms=50", wait=False)
    node_status = actors / "inference.status.json"
    try:
        _wait("the node answering", lambda: (_status(node_status) or {}).get("batches", 0) >= 5, proc)
        first = _status(node_status)
        os.kill(first["pid"], signal.SIGKILL)
        out_text, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out_text[-4000:]  # the run went on and finished without its node
    assert re.search(r"inference node exited \(.+\); the actors act with their own copies", out_text), out_text[-4000:]
    assert first["max_rows"] >= 2  # one env per actor: a forward pass of two rows answered both actors at once
    for k in (0, 1):
        node = _status(actors / f"actor_{k}.status.json")["node"]
        assert node["served"] > 0 and node["fallbacks"] > 0  # by the node, then by its own copy
        with EpisodeStore.open(actors / f"actor_{k}.zarr") as store:
            seq = np.concatenate([store.read_episode(i, ["policy_version"])["policy_version"]
                                  for i in range(store.num_episodes)])
        assert seq.max() > 0  # published weights reached the acting policy


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_reinflow_runs_asynchronously_and_its_learner_resumes_after_a_kill(tmp_path, tiny_chunk_job, backend):
    """ReinFlow with rl.backend=local: actors sample through the noise-injected chain of the weights they hold
    and write each episode's decisions beside their stores; the learner runs PPO on them with importance ratios
    for the staleness, and a learner killed with SIGKILL resumes from state.pt, learning from every committed
    episode once."""
    from robot_rl.runtime.distributed.onpolicy import EpisodeDecisions, chain_key, chain_path

    out = fresh_rl(tiny_chunk_job, tmp_path / "job")
    rl = out / "rl"
    actors = rl / "actors"
    proc = _tiny_chunk_run(out, "--rl.algo=reinflow", f"--rl.backend={backend}", "--rl.iterations=5",
                           "--rl.steps_per_iteration=4", "--rl.eval_every=0", "--rl.value_warmup_iterations=0",
                           "--rl.distributed.max_policy_lag=1000", wait=False)
    try:
        _wait("two updates", lambda: (rl / "metrics.csv").is_file() and len(_rows(rl / "metrics.csv")) >= 2
              and _status(actors / "learner.status.json") is not None, proc)
        os.kill(_status(actors / "learner.status.json")["pid"], signal.SIGKILL)
        version_at_kill = WeightPublisher(rl / "weights").version
        out_text, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out_text[-4000:]
    assert re.search(r"learner exited \(.+\); restarting it \(1/5\) from .+state\.pt", out_text), out_text[-4000:]
    assert WeightPublisher(rl / "weights").version > version_at_kill
    rows = _rows(rl / "metrics.csv")
    assert [int(r["iteration"]) for r in rows] == list(range(1, 6))  # every update once
    versions = [int(r["weight_version"]) for r in rows]
    assert versions == sorted(versions) and len(set(versions)) == 5
    for r in rows:
        assert int(r["decisions"]) >= 2 * 4 and float(r["policy_lag"]) >= 0
        assert 0 < float(r["is_weight_mean"]) <= 1.0 and int(r["missing_decisions"]) == 0
    assert any(float(r["policy_lag"]) > 0 for r in rows)  # some decisions were stale, and were learned from

    state = torch.load(rl / "state.pt", weights_only=True)
    ingested = json.loads(state["ingested"])
    meta = json.loads((rl / "rl.json").read_text())
    key = chain_key(draccus.decode(RLConfig, meta["rl"]), meta["policy"], meta["critic"])
    steps = 0
    for k in (0, 1):
        name = f"actor_{k}.zarr"
        eps = _committed(actors / name)
        assert 0 < ingested[name] <= len(eps)
        steps += sum(len(a) for a in eps[: ingested[name]])
        with EpisodeStore.open(actors / name) as store:
            seq = np.concatenate([store.read_episode(i, ["policy_version"])["policy_version"]
                                  for i in range(store.num_episodes)])
        assert (np.diff(seq) >= 0).all() and seq.max() > versions[0] - 1  # published weights reached the actor
        for i, actions in enumerate(eps):  # each committed episode's decisions, chunk by chunk, beside it
            dec = EpisodeDecisions.load(chain_path(rl, name, i), actions, key)
            assert dec is not None and len(dec.cond) == len(dec.chain) + 1 == len(dec.progress)
            assert np.isfinite(dec.log_prob).all() and (np.diff(dec.version) >= 0).all()
            assert EpisodeDecisions.load(chain_path(rl, name, i), actions + 1.0, key) is None  # another episode's
    # learned from every ingested episode exactly once: the resumed learner re-read what the killed one had
    # read but not yet learned from, and nothing else
    assert state["env_steps"] == steps and state["stale_episodes"] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algo"] == "reinflow" and summary["rl_iterations"] == 5 and summary["env_steps"] == steps
    assert (rl / "policy" / "config.json").is_file() and (out / "eval_after.json").is_file()


def test_on_policy_async_refuses_what_its_actors_cannot_ship():
    from robot_rl.core.errors import ConfigError

    RLConfig(algo="reinflow", backend="local").validate()
    for field, value, name in (("finetune_encoder", True, "finetune_encoder"),
                               ("reward.done", "critic", "reward.done=critic"),
                               ("distributed.inference.node", True, "distributed.inference.node")):
        cfg = RLConfig(algo="dppo", backend="ray")
        obj, *path = [cfg, *field.split(".")]
        for p in path[:-1]:
            obj = getattr(obj, p)
        setattr(obj, path[-1], value)
        with pytest.raises(ConfigError, match=re.escape(name)):
            cfg.validate()
    cfg = RLConfig(algo="reinflow", backend="local")
    cfg.distributed.max_policy_lag = -1
    with pytest.raises(ConfigError, match="max_policy_lag"):
        cfg.validate()
