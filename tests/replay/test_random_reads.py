"""Random reads for a learner: raw camera chunks read row by row, small arrays kept decoded, the compressed
layout beside them, and the in-memory ring fed from committed episodes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from robot_rl.core.errors import ConfigError, StoreCorruptError
from robot_rl.replay import EpisodeStore
from robot_rl.replay.repair import repair_store
from robot_rl.replay.ring import StepRing
from robot_rl.replay.store import ChunkRows

CHUNKS = ChunkRows(image=4, lowdim=32, episode=2)
KEYS = ["obs/images/front", "obs/images/wrist", "obs/state", "action"]


def _concat(episodes, key):
    return np.concatenate([ep.step_arrays()[key] for ep in episodes])


def _write(path: Path, episodes, compress: bool) -> EpisodeStore:
    store = EpisodeStore.create(path, chunks=replace(CHUNKS, compress_images=compress))
    for ep in episodes:
        store.append(ep)
    return store


def _codecs(store: Path, array: str) -> list[str]:
    return [c["name"] for c in json.loads((store / array / "zarr.json").read_text())["codecs"]]


@pytest.mark.parametrize("compress", [False, True])
def test_random_reads_match_what_was_written(tmp_path, push_episodes, compress):
    path = tmp_path / "s.zarr"
    writer = _write(path, push_episodes[:3], compress)
    images = _codecs(path, "steps/obs/images/front")
    assert ("zstd" in images) == compress and images[-1] == "crc32c"
    assert "zstd" in _codecs(path, "steps/obs/state")  # small arrays stay compressed
    reader = EpisodeStore.open(path)
    rng = np.random.default_rng(0)
    for _ in range(3):  # unsorted, repeated indices; the second pass reads verified chunks row by row
        idx = rng.integers(0, reader.num_steps, 40)
        got = reader.get_steps(idx, KEYS)
        for key in KEYS:
            np.testing.assert_array_equal(got[key], _concat(push_episodes[:3], key)[idx], err_msg=key)
    # Rows committed after the reader opened are read once it refreshes (the partial last chunk changed).
    for ep in push_episodes[3:]:
        writer.append(ep)
    writer.close()
    reader.refresh()
    idx = np.arange(reader.num_steps)[::-1]
    got = reader.get_steps(idx, KEYS)
    for key in KEYS:
        np.testing.assert_array_equal(got[key], _concat(push_episodes, key)[idx], err_msg=key)
    # a repaired copy keeps the layout of the original
    repair_store(path, out=tmp_path / "copy.zarr")
    assert _codecs(tmp_path / "copy.zarr", "steps/obs/images/front") == images


def test_a_chunk_damaged_after_it_was_read_is_still_caught_when_truncated(tmp_path, push_episodes):
    path = tmp_path / "s.zarr"
    _write(path, push_episodes, compress=False).close()
    reader = EpisodeStore.open(path)
    reader.get_steps(np.arange(8), ["obs/images/front"])  # chunks 0 and 1: checked and remembered
    chunk = path / "steps/obs/images/front/c/1/0/0/0"
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(StoreCorruptError, match=r"steps/obs/images/front rows 4-7: .* is truncated"):
        reader.get_steps(np.array([6]), ["obs/images/front"])
    chunk.unlink()
    with pytest.raises(StoreCorruptError, match=r"rows 4-7: chunk file .* is missing"):
        reader.get_steps(np.array([5]), ["obs/images/front"])
    np.testing.assert_array_equal(reader.get_steps(np.array([2]), ["obs/images/front"])["obs/images/front"],
                                  push_episodes[0].obs["images/front"][2:3])  # intact rows still read


def test_ring_keeps_the_newest_steps_and_ingests_each_episode_once(tmp_path, push_episodes):
    path = tmp_path / "s.zarr"
    writer = _write(path, push_episodes[:2], compress=False)
    store = EpisodeStore.open(path)
    capacity = len(push_episodes[1]) + len(push_episodes[2]) + 3
    ring = StepRing.for_store(store, capacity, KEYS)
    assert ring.ingest(store) == 2 and ring.ingest(store) == 0
    for ep in push_episodes[2:]:
        writer.append(ep)
    writer.close()
    assert ring.ingest(store, limit=1) == 1 and ring.ingest(store) == 2
    assert ring.size == capacity and ring.inserted == sum(len(e) for e in push_episodes)
    newest = {k: _concat(push_episodes, k)[-capacity:] for k in KEYS}
    # slot of the step inserted at clock t is t % capacity; read back in insertion order
    order = (ring.inserted - capacity + np.arange(capacity)) % capacity
    held = ring.get(order)
    for key in KEYS:
        np.testing.assert_array_equal(held[key], newest[key], err_msg=key)
    # Rebuilt after a restart from the store alone: the same steps (it skips reading what would not stay).
    rebuilt = StepRing.from_stores([EpisodeStore.open(path)], capacity, KEYS)
    assert rebuilt.taken == {str(path): len(push_episodes)} and rebuilt.size == capacity
    assert rebuilt.inserted < ring.inserted
    again = rebuilt.get((rebuilt.inserted - capacity + np.arange(capacity)) % capacity)
    for key in KEYS:
        np.testing.assert_array_equal(again[key], newest[key], err_msg=key)
    # The staleness bound: only the newest steps are sampled.
    rng = np.random.default_rng(0)
    slots = ring.sample_slots(500, rng, newest=5)
    assert set(slots.tolist()) == {(ring.inserted - 1 - a) % capacity for a in range(5)}
    out = ring.buffers(7, KEYS)
    batch = ring.sample(7, rng, KEYS, out=out)
    assert all(batch[k] is out[k] for k in KEYS)


def test_ring_refuses_bad_input(tmp_path, push_episodes):
    with pytest.raises(ConfigError, match="capacity"):
        StepRing(0, {"action": ((7,), np.float32)})
    path = tmp_path / "s.zarr"
    _write(path, push_episodes[:1], compress=False).close()
    store = EpisodeStore.open(path)
    with pytest.raises(ConfigError, match="unknown step field"):
        StepRing.for_store(store, 10, ["obs/nope"])
    ring = StepRing.for_store(store, 10, ["action"])
    with pytest.raises(ConfigError, match="empty ring"):
        ring.sample(4, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="shape"):
        ring.add({"action": np.zeros((3, 6), np.float32)})
    ring.add({"action": np.zeros((3, 7), np.float32)})
    with pytest.raises(ConfigError, match=r"slots must be in \[0, 3\)"):
        ring.get(np.array([3]))
