"""Store integrity: real stores damaged on disk the way disks, copies and sync tools do, for every array
family. Each damage is caught by `robot-rl info --verify` (naming the array and episodes), by a direct
read (an error, never fill values), and `robot-rl repair` keeps exactly the intact episodes, byte for byte."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from robot_rl.cli.main import main
from robot_rl.config import EnvConfig, config_to_dict
from robot_rl.core.errors import StoreCorruptError, StoreError
from robot_rl.replay.integrity import check_store
from robot_rl.replay.store import ChunkRows, EpisodeStore
from tests.conftest import SMALL_IMAGE

# Small chunks, so that every family has several chunk files and one damaged chunk hits some episodes only.
CHUNKS = ChunkRows(image=4, lowdim=32, episode=2)
EXTRA = "critic_reward"

# family -> the array damaged for it
FAMILIES = {
    "steps images": "steps/obs/images/front",
    "steps low-dim": "steps/action",
    "episodes": "episodes/success",
    "episode ends": "episodes/end",
    "manifest": "episodes/manifest",
    "final_obs": "final_obs/state",
    "final_obs images": "final_obs/images/wrist",
    "extras": f"extras/{EXTRA}",
}
DAMAGES = ("delete metadata", "delete chunk", "truncate chunk", "flip byte")


def _write_store(path: Path, episodes, version: int = 2, chunks: ChunkRows = CHUNKS) -> Path:
    with EpisodeStore.create(path, version=version, chunks=chunks) as store:
        store.set_env_config(config_to_dict(EnvConfig(task="push", image_size=SMALL_IMAGE)))
        for ep in episodes:
            store.append(ep)
        store.extra_array(EXTRA, np.float32, create=True)
        store.write_extra_rows(EXTRA, 0, np.linspace(-1, 1, store.num_steps, dtype=np.float32))
        store.commit_extras({EXTRA: store.num_steps}, info={EXTRA: {"critic": "test"}})
    return path


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory, push_episodes) -> Path:
    return _write_store(tmp_path_factory.mktemp("integrity") / "clean.zarr", push_episodes)


def _chunk_rows(store: Path, array: str) -> int:
    return json.loads((store / array / "zarr.json").read_text())["chunk_grid"]["configuration"]["chunk_shape"][0]


def _target_chunk(store: Path, array: str, ends: np.ndarray) -> tuple[Path, set[int]]:
    """A chunk of ``array`` that holds some but not all episodes, and the episodes it holds."""
    rows = _chunk_rows(store, array)
    ndim = len(json.loads((store / array / "zarr.json").read_text())["shape"])
    starts = np.concatenate([[0], ends[:-1]])
    if array.startswith(("steps/", "extras/")):
        index = int(ends[1]) // rows  # the chunk where episode 1 ends and episode 2 begins
        first, last = index * rows, (index + 1) * rows - 1
        hit = {i for i in range(len(ends)) if starts[i] <= last and ends[i] > first}
    else:
        index = 1
        hit = set(range(index * rows, min((index + 1) * rows, len(ends))))
    assert 0 < len(hit) < len(ends), f"{array}: the damaged chunk should hold some episodes, not all"
    return store / array / "/".join(["c", str(index), *["0"] * (ndim - 1)]), hit


def _damage(store: Path, array: str, how: str, ends: np.ndarray) -> set[int]:
    """Damage ``array`` of ``store`` on disk; returns the episodes the damage touches."""
    if how == "delete metadata":
        (store / array / "zarr.json").unlink()
        return set(range(len(ends)))
    chunk, hit = _target_chunk(store, array, ends)
    data = chunk.read_bytes()
    if how == "delete chunk":
        chunk.unlink()
    elif how == "truncate chunk":
        chunk.write_bytes(data[: len(data) // 2])
    else:  # one flipped bit in the middle, as a failing disk or a bad copy leaves it
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x10
        chunk.write_bytes(bytes(flipped))
    return hit


def _file_bytes(store: Path) -> dict[str, bytes]:
    return {str(f.relative_to(store)): f.read_bytes() for f in sorted(store.rglob("*")) if f.is_file()}


def _direct_read(store_path: Path, array: str, episodes: set[int]) -> None:
    """Read the damaged rows the way a learner would; must raise StoreCorruptError."""
    store = EpisodeStore.open(store_path)  # may raise already: the episode ends or a steps array's metadata
    e = min(episodes)
    if array.startswith("steps/"):
        key = array[len("steps/"):]
        start = int(store.episode_starts[e])
        store.get_steps(np.array([start, start + 1]), [key])
        store.read_episode(e, [key])
    elif array.startswith("final_obs/"):
        store.final_obs(e)
    elif array.startswith("extras/"):
        store.get_extra(EXTRA, np.arange(int(store.episode_starts[e]), int(store.episode_ends[e])))
    elif array == "episodes/manifest":
        store.manifest(e)
    else:
        store.episode_meta(e)
        store.episode_field(array.split("/")[1])


def _assert_same_episode(a: EpisodeStore, i: int, b: EpisodeStore, j: int) -> None:
    ra, rb = a.read_episode(i), b.read_episode(j)
    assert ra.keys() == rb.keys()
    for key in ra:
        assert ra[key].dtype == rb[key].dtype and ra[key].tobytes() == rb[key].tobytes(), key
    fa, fb = a.final_obs(i), b.final_obs(j)
    for key in fa:
        assert fa[key].dtype == fb[key].dtype and fa[key].tobytes() == fb[key].tobytes(), key
    assert a.episode_meta(i) == b.episode_meta(j)


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_damage_is_caught_and_repair_keeps_exactly_the_intact_episodes(tmp_path, clean_store, family, how, capsys):
    array = FAMILIES[family]
    clean = EpisodeStore.open(clean_store)
    ends = clean.episode_ends
    broken = tmp_path / "broken.zarr"
    shutil.copytree(clean_store, broken)
    hit = _damage(broken, array, how, ends)

    # 1. info --verify names the array and every damaged episode, exit 1
    capsys.readouterr()
    assert main(["info", str(broken), "--verify", "--json", "--quiet"]) == 1
    integrity = json.loads(capsys.readouterr().out)["integrity"]
    assert not integrity["ok"]
    assert {d["array"] for d in integrity["damage"]} == {array}
    assert set(integrity["damaged_episodes"]) == hit
    if how == "flip byte":  # the human-readable report says the same (once per family: each verify costs)
        assert main(["info", str(broken), "--verify", "--quiet"]) == 1
        text = capsys.readouterr().out
        assert array in text and "DAMAGED" in text
    before = _file_bytes(broken)

    # 2. a direct read raises, never returns fill values (the manifest has no reader but verify)
    with pytest.raises(StoreCorruptError, match=array.replace("/", ".")):
        _direct_read(broken, array, hit)

    # 3. repair keeps exactly the intact episodes, byte for byte. Damage with a second copy (metadata in
    # the commit record, the episode table in the manifest and back) is undone; derived extras are cut.
    recoverable = how == "delete metadata" or family in ("episodes", "episode ends", "manifest", "extras")
    expect_kept = [i for i in range(len(ends)) if recoverable or i not in hit]
    fixed = tmp_path / "fixed.zarr"
    assert main(["repair", str(broken), "--out", str(fixed), "--quiet"]) == 0
    repaired = EpisodeStore.open(fixed)
    assert repaired.num_episodes == len(expect_kept)
    assert repaired.version == 2 and check_store(fixed, deep=True).ok
    for j, i in enumerate(expect_kept):
        _assert_same_episode(clean, i, repaired, j)
    assert repaired.env_config == clean.env_config
    extra_rows = repaired.extra_rows(EXTRA)
    original = clean.get_extra(EXTRA, np.arange(clean.num_steps))
    kept_rows = np.concatenate([np.arange(clean.episode_starts[i], ends[i]) for i in expect_kept])
    assert extra_rows <= len(kept_rows)
    np.testing.assert_array_equal(repaired.get_extra(EXTRA, np.arange(extra_rows)), original[kept_rows[:extra_rows]])
    if family != "extras":
        assert extra_rows == len(kept_rows)
    else:  # cut at the first damaged row: everything before it is kept
        assert extra_rows >= int(clean.episode_starts[min(hit)])
    assert repaired.extra_info(EXTRA) == {"critic": "test"}
    assert _file_bytes(broken) == before  # the damaged store itself is untouched by repair


def test_cheap_info_checks_metadata_and_says_what_it_did_not_check(tmp_path, clean_store, capsys):
    broken = tmp_path / "broken.zarr"
    shutil.copytree(clean_store, broken)
    chunk, _ = _target_chunk(broken, "steps/action", EpisodeStore.open(clean_store).episode_ends)
    chunk.unlink()
    assert main(["info", str(broken)]) == 0  # chunks are read only with --verify ...
    out = capsys.readouterr().out
    assert "integrity    metadata OK" in out and "not checked  chunks and episode contents" in out
    assert main(["info", str(broken), "--verify", "--quiet"]) == 1  # ... which finds the lost one
    meta = json.loads((broken / "final_obs/state/zarr.json").read_text())
    meta["data_type"] = "float64"  # metadata that disagrees with the commit record
    (broken / "final_obs/state/zarr.json").write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["info", str(broken)]) == 1
    assert "final_obs/state/zarr.json disagrees with the commit record in ['data_type']" in capsys.readouterr().out


def test_a_replaced_chunk_is_caught_by_its_episodes_digests(tmp_path, push_episodes):
    """A chunk swapped for an older, internally valid version of itself (a copy taken while a writer
    appended) passes its checksum; the manifest's digests still catch it."""
    path = _write_store(tmp_path / "s.zarr", push_episodes[:2])
    ends = EpisodeStore.open(path).episode_ends
    tail, _ = _target_chunk(path, "steps/obs/images/front", np.append(ends, ends[-1] + 1))
    old = tail.read_bytes()
    with EpisodeStore.open(path, mode="a") as store:
        for ep in push_episodes[2:]:
            store.append(ep)  # rewrites the chunk that held the tail of episode 1
    assert tail.read_bytes() != old
    tail.write_bytes(old)
    report = check_store(path, deep=True)
    assert [d.array for d in report.damage] == ["steps/obs/images/front"]
    assert "do not match the digest" in report.damage[0].problem
    assert report.damaged_episodes() and all(not report.episodes[e].keep for e in report.damaged_episodes())


def test_a_writer_never_builds_on_a_damaged_chunk(tmp_path, push_episodes):
    """Appending reads the chunk holding the committed tail to add rows to it: a lost one must stop the
    append, not come back as zeros under the new rows."""
    path = _write_store(tmp_path / "s.zarr", push_episodes[:3])
    store = EpisodeStore.open(path)
    rows = _chunk_rows(path, "steps/action")
    tail = path / f"steps/action/c/{(store.num_steps - 1) // rows}/0"  # the chunk the next append extends
    tail.unlink()
    with EpisodeStore.open(path, mode="a") as writer, pytest.raises(StoreCorruptError, match="steps/action"):
        writer.append(push_episodes[3])
    assert not tail.exists(), "the append wrote the lost chunk back"
    assert EpisodeStore.open(path).num_episodes == 3
    report = check_store(path, deep=True)
    assert {d.array for d in report.damage} == {"steps/action"}


def test_repair_in_place_keeps_the_damaged_original(tmp_path, clean_store, capsys):
    broken = tmp_path / "store.zarr"
    shutil.copytree(clean_store, broken)
    hit = _damage(broken, "steps/obs/images/wrist", "flip byte", EpisodeStore.open(clean_store).episode_ends)
    assert main(["repair", str(broken)]) == 1  # a dry run: reports, writes nothing
    out = capsys.readouterr().out
    assert "dry run" in out and f"drop episode{'s' if len(hit) > 1 else ''}" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr"]
    assert main(["repair", str(broken), "--in-place", "--quiet"]) == 0
    backups = [p for p in tmp_path.iterdir() if p.name.startswith("store.zarr.damaged-")]
    assert len(backups) == 1 and not check_store(backups[0], deep=True).ok
    assert check_store(broken, deep=True).ok
    assert EpisodeStore.open(broken).num_episodes == 5 - len(hit)
    with pytest.raises(StoreError, match="already exists"):
        from robot_rl.replay.repair import repair_store

        repair_store(backups[0], out=broken, progress=False)


def _write_old_store(path: Path, episodes) -> Path:
    """A store as robot_rl wrote them before version 2, extras and all (the relabeller then kept its
    progress in the extra's own attributes)."""
    import zarr

    with EpisodeStore.create(path, version=1) as store:
        for ep in episodes:
            store.append(ep)
        n = store.num_steps
    group = zarr.open_group(str(path), mode="r+")
    arr = group.create_array(f"extras/{EXTRA}", shape=(n,), dtype=np.float32, chunks=(4096,))
    arr[:] = np.linspace(-1, 1, n, dtype=np.float32)
    arr.attrs.update({"critic": "test", "episodes_done": len(episodes)})
    return path


def test_stores_written_before_checksums_still_read_and_upgrade(tmp_path, push_episodes, capsys):
    old = _write_old_store(tmp_path / "old.zarr", push_episodes)
    assert not (old / "episodes/manifest").exists()
    store = EpisodeStore.open(old)
    assert store.version == 1 and store.num_episodes == 5
    for i, ep in enumerate(push_episodes):
        np.testing.assert_array_equal(store.read_episode(i)["obs/images/front"], ep.obs["images/front"])
    assert main(["info", str(old), "--verify", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "integrity    OK (version 1" in out
    assert "not checked  missing chunks: version-1 stores skip chunks" in out
    assert "not checked  chunk checksums" in out
    new = tmp_path / "new.zarr"
    assert main(["repair", str(old), "--out", str(new), "--quiet"]) == 0
    upgraded = EpisodeStore.open(new)
    assert upgraded.version == 2 and check_store(new, deep=True).ok
    for i in range(5):
        _assert_same_episode(store, i, upgraded, i)
    assert upgraded.extra_rows(EXTRA) == store.num_steps
    assert upgraded.extra_info(EXTRA) == {"critic": "test"}
    np.testing.assert_array_equal(upgraded.get_extra(EXTRA, np.arange(store.num_steps)),
                                  np.linspace(-1, 1, store.num_steps, dtype=np.float32))
    # an old store also takes new episodes, in its own layout
    with EpisodeStore.open(old, mode="a") as writer:
        writer.append(push_episodes[0])
    store.refresh()
    assert store.version == 1 and store.num_episodes == 6
    np.testing.assert_array_equal(store.read_episode(5)["action"], push_episodes[0].action)
    assert check_store(old, deep=True).ok
