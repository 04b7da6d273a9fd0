"""The progress critic: labels, training, rewards, the env wrapper, the relabeller, save/load, CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from robot_rl.core.errors import ConfigError
from robot_rl.core.schema import Episode, EpisodeMeta
from robot_rl.critic.config import CriticConfig
from robot_rl.critic.dataset import PairSampler, episode_frames, label_episode, load_episodes
from robot_rl.critic.metrics import auroc, spearman
from robot_rl.critic.model import ProgressCritic
from robot_rl.critic.reward import CriticReward
from robot_rl.envs.wrappers import ProgressRewardWrapper
from robot_rl.replay.store import EpisodeStore
from robot_rl.runtime.training.critic_train import CriticTrainConfig, critic_loss
from tests.cli.test_cli import assert_clean_error, run
from tests.conftest import SMALL_IMAGE, small_env

ROOT = Path(__file__).resolve().parents[2]


def tiny_critic(**extra) -> ProgressCritic:
    torch.manual_seed(0)
    return ProgressCritic(CriticConfig(image_size=SMALL_IMAGE, backbone_preset="tiny", head_dim=32, **extra))


def marked_episode(ep_id: int, successes: list[bool], task: str) -> Episode:
    """Every image's pixels hold 10 * ep_id + frame index, so a test can tell which frame it got."""
    t = len(successes)
    img = lambda k: np.full((8, 8, 3), 10 * ep_id + k, np.uint8)  # noqa: E731
    return Episode(
        obs={"images/front": np.stack([img(k) for k in range(t)]), "state": np.zeros((t, 2), np.float32)},
        action=np.zeros((t, 7), np.float32), reward=np.zeros(t, np.float32), terminated=np.zeros(t, bool),
        truncated=np.zeros(t, bool), success=np.array(successes), intervention=np.zeros(t, bool),
        policy_version=np.zeros(t, np.int32), final_obs={"images/front": img(t), "state": np.zeros(2, np.float32)},
        meta=EpisodeMeta(task=task, instruction=f"do {task}", success=any(successes), seed=ep_id),
    )


def test_labels_on_a_hand_made_store(tmp_path):
    path = tmp_path / "hand.zarr"
    with EpisodeStore.create(path) as store:
        store.append(marked_episode(0, [False, False, True, True], "a"))  # done from frame 3 on
        store.append(marked_episode(1, [False, False, False], "a"))  # failed
        store.append(marked_episode(2, [False, True], "b"))
    done, progress = label_episode(np.array([False, False, True, True]))
    assert done.tolist() == [False, False, False, True, True]
    np.testing.assert_allclose(progress, [0, 1 / 3, 2 / 3, 1, 1])
    assert label_episode(np.zeros(3, bool))[1] is None
    episodes = load_episodes(EpisodeStore.open(path), ["front"])
    assert [len(e.done) for e in episodes] == [5, 4, 3]
    assert episodes[0].frames["front"][4, 0, 0, 0] == 4  # the final observation is frame T

    for label_failures in (True, False):
        _check_pairs(episodes, label_failures)


def _check_pairs(episodes, label_failures: bool) -> None:
    sampler = PairSampler(episodes, seed=0, label_failures=label_failures)
    batch = sampler.sample(400)
    seen = set()
    for k in range(400):
        ia, ib = int(batch.frames_a["front"][k, 0, 0, 0]), int(batch.frames_b["front"][k, 0, 0, 0])
        ep, i, j = ia // 10, ia % 10, ib % 10
        assert ib // 10 == ep, "a pair never mixes episodes"
        truth = episodes[ep]
        kind = batch.kind[k]
        seen.add(kind)
        if kind == "mismatch":
            assert batch.instructions[k] != truth.instruction
            assert batch.delta[k] == 0 and batch.delta_mask[k] and not batch.done_b[k]
            continue
        assert batch.instructions[k] == truth.instruction
        assert batch.done_b[k] == truth.done[j]
        if kind == "stagnation":
            assert i == j and batch.delta[k] == 0 and batch.delta_mask[k]
        if truth.progress is None:
            assert kind in ("failed", "stagnation")
            if label_failures:  # every frame of a failed episode is progress 0
                assert batch.value_mask[k] and batch.delta_mask[k]
                assert batch.value_a[k] == 0 and batch.value_b[k] == 0 and batch.delta[k] == 0
            else:
                assert not batch.value_mask[k]
                assert batch.delta_mask[k] == (kind == "stagnation")
        else:
            assert batch.delta[k] == pytest.approx(truth.progress[j] - truth.progress[i])
            assert batch.value_b[k] == pytest.approx(truth.progress[j])
    assert seen == {"progress", "stagnation", "mismatch", "failed"}
    directions = [np.sign(d) for d, kind in zip(batch.delta, batch.kind) if kind == "progress"]
    assert 1 in directions and -1 in directions  # regress is learned too


def test_an_in_memory_episode_gives_the_frames_and_labels_its_store_gives(push_store):
    with EpisodeStore.open(push_store) as store:
        stored = load_episodes(store, ["front", "wrist"])
        for i in range(store.num_episodes):
            ep = episode_frames(store.episode(i), ["front", "wrist"])
            for c in ("front", "wrist"):
                np.testing.assert_array_equal(ep.frames[c], stored[i].frames[c])
            np.testing.assert_array_equal(ep.done, stored[i].done)
            np.testing.assert_array_equal(ep.progress, stored[i].progress)
            assert (ep.task, ep.instruction) == (stored[i].task, stored[i].instruction)
        with pytest.raises(ConfigError, match=r"no images of camera\(s\) \['top'\]"):
            episode_frames(store.episode(0), ["front", "top"])


def test_auroc_counts_pairs_ranked_right_and_ties_half():
    assert auroc(np.array([3.0, 2.0]), np.array([1.0, 2.0])) == pytest.approx(3.5 / 4)
    assert auroc(np.array([1.0]), np.array([2.0, 3.0])) == 0.0
    assert np.isnan(auroc(np.array([1.0]), np.array([])))


def test_spearman():
    assert spearman(np.arange(5), np.arange(5)) == pytest.approx(1.0)
    assert spearman(np.arange(5), -np.arange(5)) == pytest.approx(-1.0)
    assert spearman(np.array([1, 1, 2]), np.array([1, 2, 3])) == pytest.approx(0.8660254)
    assert spearman(np.ones(4), np.arange(4)) == 0.0


def test_tiny_critic_trains_and_loss_falls(push_store):
    critic = tiny_critic()
    sampler = PairSampler(load_episodes(EpisodeStore.open(push_store), ["front", "wrist"]), seed=0)
    batch = sampler.sample(24)
    opt = torch.optim.AdamW(critic.parameters(), lr=3e-3)
    losses = []
    for _ in range(120):  # the done head sits at the base rate for ~60 steps before it learns
        loss, metrics = critic_loss(critic, batch, CriticTrainConfig())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(metrics["loss"])
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    out = critic(batch.frames_a, batch.frames_b, batch.instructions)
    assert out.delta.shape == (24,) and torch.all(out.delta.abs() <= 1) and torch.all((out.done >= 0) & (out.done <= 1))
    # antisymmetric, and zero on identical frames
    back = critic(batch.frames_b, batch.frames_a, batch.instructions)
    torch.testing.assert_close(back.delta, -out.delta, rtol=1e-4, atol=1e-5)
    same = critic(batch.frames_a, batch.frames_a, batch.instructions)
    assert same.delta.abs().max() < 1e-5


def test_save_load_and_errors(tmp_path, push_store):
    critic = tiny_critic(tiny_backbone="paligemma")
    eps = load_episodes(EpisodeStore.open(push_store), ["front", "wrist"])
    frames = {c: v[:3] for c, v in eps[0].frames.items()}
    before = critic(frames, frames, ["push"] * 3).value_a
    critic.save(tmp_path / "c")
    again = ProgressCritic.load(tmp_path / "c")(frames, frames, ["push"] * 3).value_a
    torch.testing.assert_close(again, before)
    with pytest.raises(ConfigError, match="camera 'wrist' is missing"):
        critic({"front": frames["front"]}, {"front": frames["front"]}, ["x"] * 3)
    with pytest.raises(ConfigError, match="3 observations need 3 instructions"):
        critic.encode(frames, ["x"])
    with pytest.raises(ConfigError, match="not a saved critic"):
        ProgressCritic.load(tmp_path)


def test_wrapper_rewards_sum_to_the_value_change():
    scorer = CriticReward(tiny_critic())
    env = ProgressRewardWrapper(small_env("push"), scorer, mode="add", weight=2.0)
    obs, info = env.reset(seed=3)
    frames = {c: [obs["images"][c]] for c in ("front", "wrist")}
    rewards, sparse = [], []
    rng = np.random.default_rng(0)
    for _ in range(12):
        obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, 7))
        rewards.append(reward)
        sparse.append(info["sparse_reward"])
        for c in frames:
            frames[c].append(obs["images"][c])
        if terminated or truncated:
            break
    env.close()
    curve = scorer.value_curve({c: np.stack(v) for c, v in frames.items()}, info["instruction"])
    dense = (np.array(rewards) - np.array(sparse)) / 2.0
    assert abs(curve[-1]) > 1e-6
    assert dense.sum() == pytest.approx(curve[-1], abs=1e-4)
    offline, _ = scorer.rewards({c: np.stack(v) for c, v in frames.items()}, info["instruction"])
    np.testing.assert_allclose(offline, dense, atol=1e-4)


def _relabel_cmd(store: Path, critic_dir: Path) -> list[str]:
    return [sys.executable, "-m", "robot_rl", "critic", "relabel", "--data", str(store),
            "--checkpoint", str(critic_dir), "--quiet"]


def _episodes_done(store: Path, ends: np.ndarray) -> int:
    """Episodes whose critic rewards the store's commit record holds (read as any reader would)."""
    try:
        record = json.loads((store / "zarr.json").read_text())["attributes"]["robot_rl"]
        rows = int(record["extras"]["critic_reward"]["rows"])
    except (OSError, ValueError, KeyError):
        return 0
    return int(np.searchsorted(ends, rows, side="right"))


@pytest.mark.slow
def test_relabeller_keeps_originals_and_resumes_after_a_kill(tmp_path, push_episodes):
    store = tmp_path / "s.zarr"
    with EpisodeStore.create(store) as s:
        for _ in range(6):
            for ep in push_episodes:
                s.append(ep)
    original = {k: EpisodeStore.open(store).read_field(k) for k in ("reward", "success")}
    ends = EpisodeStore.open(store).episode_ends
    critic_dir = tmp_path / "critic"
    tiny_critic().save(critic_dir)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(_relabel_cmd(store, critic_dir), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _episodes_done(store, ends) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _episodes_done(store, ends)
    assert 0 < killed_at < 30, f"the kill landed at {killed_at} of 30 episodes: not midway"
    resumed = run("critic", "relabel", "--data", str(store), "--checkpoint", str(critic_dir), "--quiet")
    assert f"resumed after {killed_at})" in resumed.stdout
    s = EpisodeStore.open(store)
    assert s.extra_rows("critic_reward") == s.extra_rows("critic_done") == s.num_steps
    rewards = s.get_extra("critic_reward", np.arange(s.num_steps))
    for k, v in original.items():
        np.testing.assert_array_equal(s.read_field(k), v)  # originals untouched
    assert s.verify().ok
    scorer = CriticReward(ProgressCritic.load(critic_dir))
    for i in (0, 29):  # first and last episode match a direct computation
        ep = load_episodes(s, ["front", "wrist"], [i])[0]
        expected, _ = scorer.rewards(ep.frames, ep.instruction)
        np.testing.assert_allclose(rewards[s.episode_starts[i]: s.episode_ends[i]], expected, atol=1e-5)


def test_critic_cli_train_eval(tmp_path, push_store):
    out = tmp_path / "critic_run"
    run("critic", "train", "--data", str(push_store), "--out", str(out), "--steps", "4", "--quiet", "--",
        "--batch_size=8", "--critic.backbone_preset=tiny", "--critic.head_dim=16", "--log_every=2")
    assert (out / "critic" / "config.json").is_file() and (out / "metrics.csv").is_file()
    result = json.loads(run("critic", "eval", "--checkpoint", str(out), "--data", str(push_store), "--json").stdout)
    for key in ("voc", "voc_reversed", "mismatch_abs_delta", "done_f1", "latency_ms_per_pair"):
        assert key in result
    assert result["episodes"] == 1  # 20% of the 5 episodes were held out
    relative = json.loads(run("critic", "eval", "--checkpoint", str(out), "--data", os.path.relpath(push_store),
                              "--json").stdout)
    assert relative["episodes"] == 1  # the same store by another path: still only the held-out episodes
    # a store of "policy rollouts": the 5 episodes, two of them relabelled as failures (cut before success)
    rollouts = tmp_path / "rollouts.zarr"
    with EpisodeStore.open(push_store) as src, EpisodeStore.create(rollouts) as dst:
        for i in range(src.num_episodes):
            ep = src.episode(i)
            if i < 2:
                cut = int(np.flatnonzero(ep.success)[0]) - 2
                ep = dataclasses.replace(ep, obs={k: v[:cut] for k, v in ep.obs.items()}, action=ep.action[:cut],
                                         reward=ep.reward[:cut], terminated=np.zeros(cut, bool),
                                         truncated=np.arange(cut) == cut - 1, success=np.zeros(cut, bool),
                                         intervention=ep.intervention[:cut], policy_version=ep.policy_version[:cut],
                                         final_obs={k: v[cut] for k, v in ep.obs.items()},
                                         meta=dataclasses.replace(ep.meta, success=False, source="policy"))
            dst.append(ep)
    result = json.loads(run("critic", "eval", "--checkpoint", str(out), "--rollouts", str(rollouts), "--json").stdout)
    assert (result["rollout_successes"], result["rollout_failures"]) == (3, 2)
    assert 0.0 <= result["rollout_final_value_auroc"] <= 1.0 and 0.0 <= result["rollout_done_fpr_failed"] <= 1.0
    assert "voc" not in result  # no demo store given
    assert result["done_threshold"] == 0.85  # the critic's own
    # the done metrics at a replaced threshold: a tiny, barely trained done head sits near its base rate
    low, high = (json.loads(run("critic", "eval", "--checkpoint", str(out), "--rollouts", str(rollouts),
                                "--done-threshold", t, "--json").stdout) for t in ("0.001", "0.999"))
    assert (low["done_threshold"], high["done_threshold"]) == (0.001, 0.999)
    assert low["rollout_done_fpr_failed"] == low["rollout_done_tpr_success"] == 1.0
    assert high["rollout_done_fpr_failed"] == high["rollout_done_tpr_success"] == 0.0
    assert low["rollout_final_value_auroc"] == result["rollout_final_value_auroc"]
    assert_clean_error(run("critic", "eval", "--checkpoint", str(out), "--rollouts", str(rollouts),
                           "--done-threshold", "1.5", check=False), "done threshold must lie in (0, 1), got 1.5")
    assert_clean_error(run("critic", "eval", "--checkpoint", str(out), check=False), "--rollouts")
    assert_clean_error(run("critic", "train", "--data", str(push_store), "--out", str(out), check=False),
                       "already exists")
    assert_clean_error(run("critic", "eval", "--checkpoint", str(tmp_path), "--data", str(push_store),
                           check=False), "not a saved critic")


def test_in_context_reference_frames(tmp_path, push_store):
    critic = tiny_critic(reference_frames=2)
    eps = load_episodes(EpisodeStore.open(push_store), ["front", "wrist"])
    frames = {c: v[:2] for c, v in eps[1].frames.items()}
    with pytest.raises(ConfigError, match="takes 2 reference frames, got 1"):
        critic.set_reference([{c: eps[0].frames[c][0] for c in frames}])
    plain = critic.encode(frames, ["push"] * 2)
    critic.set_reference([{c: eps[0].frames[c][k] for c in frames} for k in (0, -1)])
    with_reference = critic.encode(frames, ["push"] * 2)
    assert not torch.allclose(plain, with_reference)  # the reference is part of every prompt
    critic.save(tmp_path / "c")
    torch.testing.assert_close(ProgressCritic.load(tmp_path / "c").encode(frames, ["push"] * 2), with_reference)
