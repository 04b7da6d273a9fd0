"""The off-policy chunk learner's runtime: replay batches built right at episode ends, and a tiny real run
(demos -> BC -> critic -> chunk learner) killed with SIGKILL that resumes with every committed episode and
its update count."""

from __future__ import annotations

import json
import signal
import time

import draccus
import numpy as np
import pytest
import torch

from robot_rl.config import EnvConfig
from robot_rl.core.errors import ConfigError
from robot_rl.critic.model import ProgressCritic
from robot_rl.policy import load_policy
from robot_rl.replay.store import EpisodeStore
from robot_rl.runtime.training.chunk_replay import ChunkReplay, Derived, load_derived, save_derived
from robot_rl.runtime.training.offpolicy import ChunkRLTrainer
from robot_rl.runtime.training.progress_finetune import ProgressFinetuneConfig
from robot_rl.runtime.training.rl import RLConfig
from tests.runtime.conftest import fresh_rl
from tests.runtime.training.test_rl import _rows, _train

F, A, H, N = 3, 2, 3, 2


def _derived(length: int, offset: float, terminated: bool) -> Derived:
    t = np.arange(length, dtype=np.float32)
    return Derived(features=np.stack([t + offset] * F, 1), actions=np.stack([t + offset] * A, 1),
                   rewards=t + offset, candidates=np.zeros((length, N, H * A), np.float32) + offset,
                   final_features=np.full(F, -1 - offset, np.float32),
                   final_candidates=np.full((N, H * A), -1 - offset, np.float32), terminated=terminated,
                   success=terminated)


def test_replay_batches_cut_chunks_at_episode_ends():
    replay = ChunkReplay(F, A, H, N)
    replay.add(_derived(5, 0.0, terminated=True), demo=True)  # steps 0..4
    replay.add(_derived(4, 100.0, terminated=False), demo=False)  # a truncated episode, steps 5..8
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        b = replay.sample(16, 0.5, rng)
        assert b["features"].shape == (16, F) and b["action"].shape == (16, H * A)
        assert b["next_candidates"].shape == (16, N, H * A)
        for i in range(16):
            f0 = float(b["features"][i, 0])
            demo = f0 < 100
            t, length = (int(f0), 5) if demo else (int(f0 - 100), 4)
            seen.add((demo, t))
            ran = min(H, length - t)
            assert b["executed"][i].tolist() == [True] * ran + [False] * (H - ran)
            expected_r = [f0 + k for k in range(ran)] + [0.0] * (H - ran)
            np.testing.assert_allclose(b["rewards"][i].numpy(), expected_r)
            if t + H < length:  # the next decision's state
                assert float(b["next_features"][i, 0]) == f0 + H and not b["terminated"][i]
            else:  # the episode's final observation; terminal only where it terminated
                assert float(b["next_features"][i, 0]) == (-1.0 if demo else -101.0)
                assert bool(b["terminated"][i]) == demo
    assert len(seen) == 9  # every step of both episodes starts chunks
    only_demo = replay.sample(64, 1.0, rng)["features"][:, 0]
    assert bool((only_demo < 100).all())


def test_replay_online_window_bounds_the_age_of_online_steps():
    replay = ChunkReplay(F, A, H, N)
    replay.add(_derived(5, 0.0, terminated=True), demo=True)
    replay.add(_derived(4, 100.0, terminated=False), demo=False)  # the older online episode
    replay.add(_derived(4, 200.0, terminated=False), demo=False)  # the newest
    rng = np.random.default_rng(0)
    online = replay.sample(400, 0.0, rng, online_window=3)["features"][:, 0]
    assert set(online.tolist()) == {201.0, 202.0, 203.0}  # the newest 3 online steps only
    every = replay.sample(400, 0.0, rng)["features"][:, 0]
    assert {100.0, 200.0} <= set(every.tolist())
    with pytest.raises(ValueError, match="online_window"):
        RLConfig(algo="chunk").chunk.__class__(online_window=0).validate()


def test_shipped_replay_data_is_taken_only_for_its_own_episode_and_featurizer(tmp_path, push_episodes):
    ep, other = push_episodes[0], push_episodes[1]
    d = _derived(len(ep), 1.0, terminated=True)
    path = tmp_path / "actor_0.features" / "0000000000.npz"
    save_derived(path, d, ep, "key")
    got = load_derived(path, ep, "key")
    for field in ("features", "actions", "rewards", "candidates", "final_features", "final_candidates"):
        np.testing.assert_array_equal(getattr(got, field), getattr(d, field), err_msg=field)
    assert (got.terminated, got.success) == (True, True)
    assert load_derived(path, other, "key") is None  # left by an actor killed before committing another episode
    assert load_derived(path, ep, "another featurizer") is None
    assert load_derived(tmp_path / "missing.npz", ep, "key") is None
    path.write_bytes(path.read_bytes()[:100])
    assert load_derived(path, ep, "key") is None  # damaged: the learner computes it itself


def test_replay_returns_to_go_are_discounted_sums_within_an_episode():
    replay = ChunkReplay(F, A, H, N, gamma=0.5)
    replay.add(_derived(3, 0.0, terminated=True), demo=True)  # rewards 0, 1, 2
    replay.add(_derived(2, 100.0, terminated=False), demo=False)  # rewards 100, 101
    np.testing.assert_allclose(replay.returns.view, [0 + 0.5 * 1 + 0.25 * 2, 1 + 0.5 * 2, 2, 100 + 0.5 * 101, 101])
    b = replay.sample(32, 0.5, np.random.default_rng(1))
    for f0, ret in zip(b["features"][:, 0].tolist(), b["returns"].tolist()):
        assert ret == pytest.approx(float(replay.returns.view[int(f0) if f0 < 100 else 3 + int(f0 - 100)]))


def test_replay_cloning_data_comes_from_successful_episodes_with_full_chunks():
    replay = ChunkReplay(F, A, H, N)
    replay.add(_derived(5, 0.0, terminated=True), demo=True)  # a success
    replay.add(_derived(4, 100.0, terminated=False), demo=False)  # a failure: never cloned
    assert replay.sample_successes(8, 4, 0.5, np.random.default_rng(0)) is not None
    replay.add(_derived(6, 200.0, terminated=True), demo=False)  # an online success
    rng = np.random.default_rng(0)
    b = replay.sample_successes(400, 4, 0.5, rng)
    assert b["chunks"].shape == (400, 4 * A)
    starts = b["features"][:, 0].numpy()
    assert not ((starts >= 100) & (starts < 200)).any()
    assert 150 < (starts < 100).sum() < 250  # half from the demos
    for f0, chunk in zip(starts, b["chunks"].numpy().reshape(400, 4, A)[:, :, 0]):
        last = 4.0 if f0 < 100 else 205.0  # past the end the last action repeats
        np.testing.assert_allclose(chunk, np.minimum(f0 + np.arange(4), last))


def _tiny_chunk_run(out, *extra, wait=True):
    return _train(out, "--rl.algo=chunk", "--env.max_steps=16", "--demos.max_steps=100",
                  "--rl.chunk.warmup_updates=10", "--rl.chunk.batch_size=32",
                  "--rl.chunk.critic.hidden_dim=32", "--rl.chunk.steering.hidden_dim=32", "--rl.chunk.candidates=3",
                  "--rl.chunk.target_candidates=2", "--rl.chunk.eval_best_of=2", *extra, wait=wait)


def _online_episodes(path) -> list[np.ndarray]:
    with EpisodeStore.open(path) as store:
        return [store.read_episode(i, ["action"])["action"] for i in range(store.num_episodes)]


@pytest.mark.slow
def test_chunk_run_killed_mid_way_resumes_with_every_committed_episode(tmp_path, tiny_chunk_job):
    out = fresh_rl(tiny_chunk_job, tmp_path / "job")
    rl = out / "rl"
    # the progress critic (the dense reward) fine-tunes on the run's episodes every other round
    tune = ["--rl.progress_finetune.every=2", "--rl.progress_finetune.steps=3", "--rl.progress_finetune.batch_size=4"]
    proc = _tiny_chunk_run(out, "--rl.iterations=8", "--rl.steps_per_iteration=6", *tune, wait=False)
    deadline = time.time() + 500
    while time.time() < deadline and proc.poll() is None:  # kill once an episode is committed past a checkpoint
        if (rl / "learner.pt").is_file() and (rl / "metrics.csv").is_file() and len(_rows(rl / "metrics.csv")) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = _online_episodes(rl / "online.zarr")
    assert committed, "no online episode was committed before the kill"
    state = torch.load(rl / "learner.pt", weights_only=True)
    assert state["updates"] >= 10 and 1 <= state["iteration"] < 8

    meta = json.loads((rl / "rl.json").read_text())
    cfg = draccus.decode(RLConfig, meta["rl"])
    trainer = ChunkRLTrainer(meta["policy"], EnvConfig(**meta["env"]), rl, cfg, critic_dir=meta["critic"],
                             demos=meta["demos"], resume=True, progress=False)
    assert trainer.learner.updates == state["updates"] and trainer.iteration == state["iteration"]
    assert trainer.replay.num_steps["online"] == sum(len(a) for a in committed)  # every committed episode
    tuned = state["progress_critic"]  # committed with the learner, in one file
    assert tuned["updates"] == 3 * tuned["bursts"] and tuned["bursts"] == state["iteration"] // 2
    assert trainer.finetuner.updates == tuned["updates"] and len(trainer.finetuner.online) == len(committed)
    for k, v in trainer.finetuner.critic.state_dict().items():  # it scores with the fine-tuned weights
        torch.testing.assert_close(v, tuned["critic"][k])
    del trainer

    res = _tiny_chunk_run(out, "--rl.iterations=8", "--rl.steps_per_iteration=6", *tune)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = _rows(rl / "metrics.csv")
    assert [int(r["iteration"]) for r in rows] == list(range(1, 9))  # nothing lost, nothing twice
    updates = [int(r["updates"]) for r in rows]
    assert updates == sorted(updates) and updates[state["iteration"]] > state["updates"]
    after = _online_episodes(rl / "online.zarr")
    assert len(after) > len(committed)
    for a, b in zip(committed, after):  # the committed episodes are kept as they were
        np.testing.assert_array_equal(a, b)
    with EpisodeStore.open(rl / "online.zarr") as store:
        assert store.episode_meta(0).source == "policy"
        versions = np.concatenate([store.read_episode(i, ["policy_version"])["policy_version"]
                                   for i in range(store.num_episodes)])
        assert versions.min() >= 0 and versions.max() >= state["iteration"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algo"] == "chunk" and summary["rl_iterations"] == 8
    tuned = torch.load(rl / "learner.pt", weights_only=True)["progress_critic"]
    assert tuned["bursts"] == 4 and tuned["updates"] == 12  # rounds 2, 4, 6, 8: none lost, none twice
    original, exported = ProgressCritic.load(out / "critic" / "critic"), ProgressCritic.load(rl / "progress_critic")
    moved = [k for k, v in original.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, exported.state_dict()[k])]
    assert moved, "the fine-tuned progress critic equals the original"
    with pytest.raises(ConfigError, match="progress_finetune"):
        RLConfig(algo="reinflow", progress_finetune=ProgressFinetuneConfig(every=2)).validate()
    policy = load_policy(rl / "policy")  # the steered policy loads like any policy
    assert policy.name == "steered" and policy.config.best_of == 2
