"""The episode store: round trip, random access, schema checks, concurrent readers, clear errors."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from robot_rl.core.errors import ConfigError, StoreCorruptError, StoreError
from robot_rl.replay import EpisodeStore, UniformSampler, is_store, read_windows


def _concat(episodes, key):
    return np.concatenate([ep.step_arrays()[key] for ep in episodes])


def test_round_trip(push_store, push_episodes):
    store = EpisodeStore.open(push_store)
    assert store.num_episodes == 5
    assert store.num_steps == sum(len(e) for e in push_episodes)
    for i, ep in enumerate(push_episodes):
        data = store.read_episode(i)
        for key, arr in ep.step_arrays().items():
            np.testing.assert_array_equal(data[key], arr, err_msg=key)
        for key, arr in ep.final_obs.items():
            np.testing.assert_array_equal(store.final_obs(i)[key], arr)
        assert store.episode_meta(i) == ep.meta
    summary = store.summary()
    assert summary["episodes"] == 5 and summary["tasks"] == {"push": 5} and summary["sources"] == {"expert": 5}
    assert summary["success_rate"] == pytest.approx(np.mean([e.meta.success for e in push_episodes]))
    assert summary["size_bytes"] > 0
    store.verify()


def test_store_layout_is_plain_zarr(push_store):
    import zarr

    group = zarr.open_group(str(push_store), mode="r")
    assert group["steps/obs/images/front"].shape[1:] == (32, 32, 3)
    assert group["steps/obs/images/front"].chunks[0] > 1  # many steps per chunk
    assert group["episodes/end"].shape == (5,)
    assert is_store(push_store) and not is_store(push_store / "steps")


def test_random_access_matches(push_store, push_episodes):
    store = EpisodeStore.open(push_store)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, store.num_steps, size=64)
    batch = store.get_steps(idx, ["action", "obs/images/wrist"])
    np.testing.assert_array_equal(batch["action"], _concat(push_episodes, "action")[idx])
    np.testing.assert_array_equal(batch["obs/images/wrist"], _concat(push_episodes, "obs/images/wrist")[idx])
    with pytest.raises(ConfigError, match="unknown step field"):
        store.get_steps(idx, ["obs/images/top"])
    with pytest.raises(ConfigError, match="step indices"):
        store.get_steps(np.array([store.num_steps]))


def test_windows_pad_at_episode_boundaries(push_store, push_episodes):
    store = EpisodeStore.open(push_store)
    first_len = len(push_episodes[0])
    # the last step of episode 0 and the first step of episode 1
    idx = np.array([first_len - 1, first_len])
    win = read_windows(store, idx, {"action": (0, 4), "obs/state": (-2, 3)})
    actions0, actions1 = push_episodes[0].action, push_episodes[1].action
    np.testing.assert_array_equal(win["action"][0], np.repeat(actions0[-1:], 4, axis=0))
    assert win["action_pad"][0].tolist() == [False, True, True, True]
    np.testing.assert_array_equal(win["action"][1], actions1[:4])
    states1 = push_episodes[1].obs["state"]
    np.testing.assert_array_equal(win["obs/state"][1], states1[[0, 0, 0]])
    assert win["obs/state_pad"][1].tolist() == [True, True, False]


def test_sampler_batches(push_store):
    store = EpisodeStore.open(push_store)
    sampler = UniformSampler(store, seed=0)
    batch = sampler.sample_windows(16, {"obs/images/front": (0, 1), "action": (0, 8)})
    assert batch["obs/images/front"].shape == (16, 1, 32, 32, 3)
    assert batch["action"].shape == (16, 8, 7)
    steps = sampler.sample_steps(32, ["action", "reward"])
    np.testing.assert_array_equal(steps["action"], store.get_steps(steps["index"], ["action"])["action"])
    assert steps["reward"].shape == (32,)
    only = UniformSampler(store, seed=0, episodes=np.array([2]))
    idx = only.sample_indices(100)
    assert np.all(store.episode_of_steps(idx) == 2)


def test_reader_sees_new_episodes_after_refresh(tmp_path, push_episodes):
    path = tmp_path / "s.zarr"
    writer = EpisodeStore.create(path)
    writer.append(push_episodes[0])
    reader = EpisodeStore.open(path)
    sampler = UniformSampler(reader, seed=0)
    writer.append(push_episodes[1])
    assert reader.num_episodes == 1
    sampler.refresh()
    assert reader.num_episodes == 2
    assert set(reader.episode_of_steps(sampler.sample_indices(200))) == {0, 1}
    np.testing.assert_array_equal(reader.read_episode(1)["action"], push_episodes[1].action)
    writer.close()


def test_one_writer_at_a_time(push_store, push_episodes):
    with EpisodeStore.open(push_store, mode="a"):
        with pytest.raises(StoreError, match="being written by another process"):
            EpisodeStore.open(push_store, mode="a")
    with EpisodeStore.open(push_store, mode="a") as store:  # the lock is released on close
        store.append(push_episodes[0])
    assert EpisodeStore.open(push_store).num_episodes == 6


def test_bad_episodes_are_refused_and_lose_nothing(push_store, push_episodes):
    before = EpisodeStore.open(push_store).read_episode(4)
    ep = push_episodes[0]
    nan_at_3 = np.arange(ep.action.size).reshape(ep.action.shape) == 3
    bad_action = replace(ep, action=np.where(nan_at_3, np.nan, ep.action))
    bad_image = replace(ep, obs={**ep.obs, "images/front": ep.obs["images/front"][:, :16]})
    missing_cam = replace(ep, obs={k: v for k, v in ep.obs.items() if k != "images/wrist"},
                          final_obs={k: v for k, v in ep.final_obs.items() if k != "images/wrist"})
    short_reward = replace(ep, reward=ep.reward[:-1])
    with EpisodeStore.open(push_store, mode="a") as store:
        with pytest.raises(ConfigError, match="action at step 0 is not finite"):
            store.append(bad_action)
        with pytest.raises(ConfigError, match=r"'obs/images/front' has dtype \|u1 shape \[16, 32, 3\]"):
            store.append(bad_image)
        with pytest.raises(ConfigError, match=r"missing \['obs/images/wrist'\]"):
            store.append(missing_cam)
        with pytest.raises(ConfigError, match="'reward' has"):
            store.append(short_reward)
    store = EpisodeStore.open(push_store)
    assert store.num_episodes == 5
    np.testing.assert_array_equal(store.read_episode(4)["obs/images/front"], before["obs/images/front"])


def test_open_errors(tmp_path, push_store):
    with pytest.raises(StoreError, match="no episode store at"):
        EpisodeStore.open(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="not a robot_rl episode store"):
        EpisodeStore.open(tmp_path / "plain")
    with pytest.raises(ConfigError, match="episode 9 does not exist"):
        EpisodeStore.open(push_store).read_episode(9)


def test_create_never_deletes_foreign_data(tmp_path, push_store):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(StoreError, match="refusing to overwrite"):
        EpisodeStore.create(foreign, overwrite=True)
    assert (foreign / "cat.jpg").read_bytes() == b"meow"
    with pytest.raises(StoreError, match="already exists"):
        EpisodeStore.create(push_store)
    EpisodeStore.create(push_store, overwrite=True).close()
    assert EpisodeStore.open(push_store).num_episodes == 0


def test_corrupt_root_metadata(tmp_path, push_store):
    broken = tmp_path / "broken.zarr"
    shutil.copytree(push_store, broken)
    text = (broken / "zarr.json").read_text()
    (broken / "zarr.json").write_text(text[: len(text) // 2])
    with pytest.raises(StoreCorruptError, match="unreadable zarr.json"):
        EpisodeStore.open(broken)


def test_corrupt_index_is_detected(tmp_path, push_store):
    broken = tmp_path / "broken.zarr"
    shutil.copytree(push_store, broken)
    for chunk in (broken / "episodes" / "end").rglob("c/*"):
        chunk.unlink()  # zarr would silently read zeros
    with pytest.raises(StoreCorruptError, match="episodes/end rows 0-4: chunk file episodes/end/c/0 is missing"):
        EpisodeStore.open(broken)
    meta = json.loads((push_store / "zarr.json").read_text())
    meta["attributes"]["robot_rl"]["num_steps"] += 1000
    shutil.rmtree(broken)
    shutil.copytree(push_store, broken)
    (broken / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreCorruptError, match="the record commits"):
        EpisodeStore.open(broken)


def test_verify_finds_damaged_chunks(tmp_path, push_store):
    broken = tmp_path / "broken.zarr"
    shutil.copytree(push_store, broken)
    chunk = min(p for p in (broken / "steps" / "obs" / "images" / "front" / "c").rglob("*") if p.is_file())
    chunk.write_bytes(b"garbage" * 10)
    store = EpisodeStore.open(broken)  # the index is intact ...
    with pytest.raises(StoreCorruptError, match="steps/obs/images/front rows 0-31 .*fails its crc32c checksum"):
        store.verify()  # ... the data is not


def test_extra_names_lists_the_recorded_extras_and_older_ones_on_disk(push_store):
    with EpisodeStore.open(push_store, mode="a") as store:
        assert store.extra_names() == []
        store.extra_array("critic_reward", np.float32, create=True)
        store.extra_array("critic_done", np.float32, create=True)
        assert store.extra_names() == ["critic_done", "critic_reward"]
        # an extra written before the record listed extras is still found, by its folder
        record = dict(store._record)
        record["extras"] = {k: v for k, v in record["extras"].items() if k != "critic_done"}
        store._record = record
        assert store.extra_names() == ["critic_done", "critic_reward"]
