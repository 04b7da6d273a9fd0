"""LeRobot datasets in and out, checked with pyarrow and PyAV alone: the round trip, the v3.0 layout field by
field, datasets built by hand (v3.0 with other key names and an extra camera, and v2.1) that import through a
feature map and pretrain, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

av = pytest.importorskip("av", reason="LeRobot datasets need the data extra (PyAV)")
pa = pytest.importorskip("pyarrow", reason="LeRobot datasets need the data extra (pyarrow)")
import pyarrow.parquet as pq  # noqa: E402

from robot_rl.core.schema import STEP_FIELDS  # noqa: E402
from robot_rl.replay.store import EpisodeStore  # noqa: E402
from tests.cli.test_cli import assert_clean_error, run  # noqa: E402
from tests.runtime.training.test_pretrain_eval import TINY  # noqa: E402

DEFAULT_FEATURES = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
                    "task_index": "int64"}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def decode(path: Path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as container:
        return [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


@pytest.mark.parametrize("codec", ["ffv1", "h264", "av1"])
def test_store_to_lerobot_and_back(tmp_path, push_store, codec):
    ds, back = tmp_path / "ds", tmp_path / "back.zarr"
    out = run("export", str(push_store), "--out", str(ds), "--codec", codec, "--quiet", "--json").stdout
    assert json.loads(out.splitlines()[-1])["episodes"] == 5
    run("import", str(ds), "--format", "lerobot", "--out", str(back), "--quiet")
    with EpisodeStore.open(push_store) as a, EpisodeStore.open(back) as b:
        assert b.num_episodes == a.num_episodes and b.env_config == a.env_config
        assert np.array_equal(a.episode_ends, b.episode_ends)
        worst = float("inf")
        for i in range(a.num_episodes):
            x, y = a.episode(i), b.episode(i)
            assert x.meta == y.meta  # task, instruction, success, source, seed
            for name in STEP_FIELDS:
                assert np.array_equal(getattr(x, name), getattr(y, name)), name
                assert getattr(x, name).dtype == getattr(y, name).dtype, name
            assert np.array_equal(x.obs["state"], y.obs["state"])
            assert np.array_equal(x.final_obs["state"], y.final_obs["state"])
            for key in x.obs:
                if key.startswith("images/"):
                    worst = min(worst, psnr(x.obs[key], y.obs[key]), psnr(x.final_obs[key], y.final_obs[key]))
        if codec == "ffv1":
            assert worst == float("inf")  # lossless: the same pixels
        else:  # the README's documented tolerances
            bar = {"h264": 40.0, "av1": 28.0}[codec]
            assert worst >= bar, f"{codec} round trip PSNR {worst:.1f} dB"


def test_exported_layout_matches_lerobot_v3(tmp_path, push_store):
    ds = tmp_path / "ds"
    run("export", str(push_store), "--out", str(ds), "--quiet")
    with EpisodeStore.open(push_store) as store:
        lengths = [len(store.episode(i)) for i in range(store.num_episodes)]
        instruction = str(store.episode_field("instruction")[0])
        state_dim = store.schema["steps"]["obs/state"]["shape"][0]
        action_dim = store.schema["steps"]["action"]["shape"][0]
        front = store.read_episode(2, ["obs/images/front"])["obs/images/front"]
    info = json.loads((ds / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert isinstance(info["fps"], int) and info["fps"] == 10
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (5, sum(lengths), 1)
    assert info["chunks_size"] == 1000
    assert info["data_files_size_in_mb"] == 100 and info["video_files_size_in_mb"] == 200
    assert info["splits"] == {"train": "0:5"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    features = info["features"]
    for name, dtype in DEFAULT_FEATURES.items():
        assert features[name] == {"dtype": dtype, "shape": [1], "names": None}
    assert features["observation.state"]["dtype"] == "float32" and features["observation.state"]["shape"] == [state_dim]
    assert len(features["observation.state"]["names"]) == state_dim
    assert features["action"]["shape"] == [action_dim] and len(features["action"]["names"]) == action_dim
    for flag in ("next.done", "next.truncated", "next.success", "intervention"):
        assert features[flag] == {"dtype": "bool", "shape": [1], "names": None}
    assert features["next.reward"]["dtype"] == "float32"
    for cam in ("front", "wrist"):
        video = features[f"observation.images.{cam}"]
        assert video["dtype"] == "video" and video["shape"] == [32, 32, 3]
        assert video["names"] == ["height", "width", "channels"]
        assert set(video["info"]) == {"video.height", "video.width", "video.codec", "video.pix_fmt",
                                      "video.is_depth_map", "video.fps", "video.channels", "has_audio"}
        assert video["info"]["video.fps"] == 10 and video["info"]["video.codec"] == "ffv1"

    # data: one row per step, typed as LeRobot's Hugging Face features say (scalars for shape [1])
    data = pq.read_table(ds / "data" / "chunk-000" / "file-000.parquet")
    assert set(data.column_names) == {k for k, f in features.items() if f["dtype"] != "video"}
    assert data.schema.field("observation.state").type == pa.list_(pa.float32(), state_dim)
    assert data.schema.field("next.done").type == pa.bool_() and data.schema.field("index").type == pa.int64()
    assert data.column("index").to_pylist() == list(range(sum(lengths)))
    assert data.column("episode_index").to_pylist() == [e for e, n in enumerate(lengths) for _ in range(n)]
    assert data.column("frame_index").to_pylist() == [i for n in lengths for i in range(n)]
    assert np.allclose(data.column("timestamp").to_numpy(), [i / 10 for n in lengths for i in range(n)])

    # tasks: the instruction is the (pandas) index "task"
    tasks = pq.read_table(ds / "meta" / "tasks.parquet")
    assert tasks.column("task").to_pylist() == [instruction] and tasks.column("task_index").to_pylist() == [0]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]

    # episodes: boundaries in the data and in each camera's video, per-episode stats
    episodes = pq.read_table(ds / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert [e["episode_index"] for e in episodes] == list(range(5))
    assert [e["length"] for e in episodes] == lengths and all(e["tasks"] == [instruction] for e in episodes)
    starts = np.cumsum([0, *lengths])
    assert [e["dataset_from_index"] for e in episodes] == starts[:-1].tolist()
    assert [e["dataset_to_index"] for e in episodes] == starts[1:].tolist()
    for e in episodes:
        assert e["data/chunk_index"] == 0 and e["data/file_index"] == 0
        assert e["meta/episodes/chunk_index"] == 0 and e["meta/episodes/file_index"] == 0
        assert e["videos/observation.images.front/to_timestamp"] - e["videos/observation.images.front/from_timestamp"] \
            == pytest.approx(e["length"] / 10)
        assert e["stats/action/count"] == [e["length"]]
    frames = decode(ds / "videos" / "observation.images.front" / "chunk-000" / "file-000.mp4")
    assert len(frames) == sum(lengths)
    start = episodes[2]["videos/observation.images.front/from_timestamp"]
    segment = [f for t, f in frames if start - 1e-6 <= t < start + lengths[2] / 10 - 1e-6]
    assert np.array_equal(np.stack(segment), front)  # PyAV alone finds episode 2's frames by timestamp

    # stats: LeRobot's keys; images per channel in [0, 1], shape (3, 1, 1)
    stats = json.loads((ds / "meta" / "stats.json").read_text())
    keys = {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
    assert set(stats) == {k for k, f in features.items()}
    assert all(set(s) == keys for s in stats.values())
    actions = np.stack(data.column("action").to_pylist())
    assert np.allclose(stats["action"]["mean"], actions.mean(0)) and np.allclose(stats["action"]["std"], actions.std(0))
    assert stats["action"]["count"] == [sum(lengths)]
    image = np.asarray(stats["observation.images.front"]["mean"])
    assert image.shape == (3, 1, 1) and (0 <= image).all() and (image <= 1).all()
    all_front = np.stack([f for _, f in frames])
    assert np.allclose(image.ravel(), all_front.reshape(-1, 3).mean(0) / 255)


def _write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        stream.options = {"qp": "0"}
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _frames(n: int, seed: int, size: int = 40) -> np.ndarray:
    """Smooth frames (a moving gradient) that video codecs keep closely."""
    y, x = np.mgrid[0:size, 0:size]
    return np.stack([np.stack([(x * 5 + t * 7 + seed * 30) % 256, (y * 5) % 256, np.full_like(x, 40 * seed)], -1)
                     for t in range(n)]).astype(np.uint8)


def _hand_made_v3(root: Path, lengths: list[int], fps: int = 15) -> dict:
    """A LeRobot v3.0 dataset as another tool writes it, with its own key names: two video cameras (top, side),
    a third camera stored as PNG images in the parquet, joint positions and a gripper as separate features."""
    tasks = ["pick up the red block", "put it in the bowl"]
    rows, episodes, truth = [], [], {"joints": [], "gripper": [], "actions": [], "top": [], "hand": []}
    offset = 0
    for e, n in enumerate(lengths):
        joints = np.random.default_rng(e).normal(size=(n, 3)).astype(np.float64)
        gripper = np.linspace(0, 1, n).astype(np.float32)
        actions = np.random.default_rng(100 + e).normal(size=(n, 4)).astype(np.float32)
        top, side, hand = _frames(n, e), _frames(n, e + 3), _frames(n, e + 5, size=24)
        for cam, frames in (("top", top), ("side", side)):
            _write_video(root / "tmpvid" / cam / f"{e}.mp4", frames, fps)
        truth["joints"].append(joints)
        truth["gripper"].append(gripper)
        truth["actions"].append(actions)
        truth["top"].append(top)
        truth["hand"].append(hand)
        for i in range(n):
            png = cv2.imencode(".png", cv2.cvtColor(hand[i], cv2.COLOR_RGB2BGR))[1].tobytes()
            rows.append({"observation.joint_pos": joints[i].tolist(), "observation.gripper": float(gripper[i]),
                         "observation.images.hand": {"bytes": png, "path": None}, "actions": actions[i].tolist(),
                         "next.success": i == n - 1, "timestamp": i / fps, "frame_index": i, "episode_index": e,
                         "index": offset + i, "task_index": e % 2})
        episodes.append({"episode_index": e, "tasks": [tasks[e % 2]], "length": n,
                         "data/chunk_index": 0, "data/file_index": 0, "dataset_from_index": offset,
                         "dataset_to_index": offset + n, "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        offset += n
    # one video file per camera holding every episode: concatenated by re-encoding, timestamps from 0
    for cam in ("top", "side"):
        frames = np.concatenate([np.stack([f for _, f in decode(root / "tmpvid" / cam / f"{e}.mp4")])
                                 for e in range(len(lengths))])
        _write_video(root / "videos" / f"observation.images.{cam}" / "chunk-000" / "file-000.mp4", frames, fps)
        start = 0
        for ep, n in zip(episodes, lengths):
            ep.update({f"videos/observation.images.{cam}/chunk_index": 0,
                       f"videos/observation.images.{cam}/file_index": 0,
                       f"videos/observation.images.{cam}/from_timestamp": start / fps,
                       f"videos/observation.images.{cam}/to_timestamp": (start + n) / fps})
            start += n
    (root / "data" / "chunk-000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "chunk-000" / "file-000.parquet")
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(episodes), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    pq.write_table(pa.table({"task": tasks, "task_index": [0, 1]}), root / "meta" / "tasks.parquet")
    video = {"dtype": "video", "shape": [40, 40, 3], "names": ["height", "width", "channels"]}
    features = {"observation.images.top": video, "observation.images.side": video,
                "observation.images.hand": {"dtype": "image", "shape": [24, 24, 3], "names": None},
                "observation.joint_pos": {"dtype": "float64", "shape": [3], "names": ["a", "b", "c"]},
                "observation.gripper": {"dtype": "float32", "shape": [1], "names": None},
                "actions": {"dtype": "float32", "shape": [4], "names": None},
                "next.success": {"dtype": "bool", "shape": [1], "names": None},
                **{k: {"dtype": d, "shape": [1], "names": None} for k, d in DEFAULT_FEATURES.items()}}
    (root / "meta" / "info.json").write_text(json.dumps({
        "codebase_version": "v3.0", "fps": fps, "features": features, "total_episodes": len(lengths),
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"}))
    return {"tasks": tasks, **truth}


MAP = """cameras: {front: observation.images.top, wrist: observation.images.hand}
state: [observation.joint_pos, observation.gripper]
action: actions
success: next.success
task: so100_pick
image_size: 32
"""


def test_a_hand_made_dataset_imports_through_a_feature_map_and_pretrains(tmp_path):
    lengths = [9, 12, 7]
    truth = _hand_made_v3(tmp_path / "theirs", lengths)
    (tmp_path / "map.yaml").write_text(MAP)
    store_path, policy = tmp_path / "ours.zarr", tmp_path / "policy"
    line = run("import", str(tmp_path / "theirs"), "--format", "lerobot", "--map", str(tmp_path / "map.yaml"),
               "--out", str(store_path), "--quiet").stdout
    assert "imported 3 episodes (28 steps" in line
    with EpisodeStore.open(store_path) as store:
        assert sorted(store.step_keys) == sorted(["obs/images/front", "obs/images/wrist", "obs/state", *STEP_FIELDS])
        assert store.episode_ends.tolist() == np.cumsum(lengths).tolist()
        for e in range(3):
            ep = store.episode(e)
            state = np.concatenate([truth["joints"][e].astype(np.float32), truth["gripper"][e][:, None]], 1)
            assert np.array_equal(ep.obs["state"], state) and np.array_equal(ep.action, truth["actions"][e])
            assert ep.meta.task == "so100_pick" and ep.meta.instruction == truth["tasks"][e % 2]
            assert ep.success.tolist() == [False] * (lengths[e] - 1) + [True] and ep.meta.success
            assert ep.obs["images/front"].shape == (lengths[e], 32, 32, 3)
            resized = np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in truth["top"][e]])
            assert psnr(ep.obs["images/front"], resized) > 40
            hand = np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in truth["hand"][e]])
            assert np.array_equal(ep.obs["images/wrist"], hand)  # PNG images: exact
    run("pretrain", "--policy", "flow", "--data", str(store_path), "--out", str(policy), "--steps", "4", "--quiet",
        "--", *TINY)
    assert (policy / "policy" / "model.safetensors").is_file()


def test_a_v21_dataset_imports(tmp_path):
    """LeRobot v2.1: one parquet and one video per episode, episodes.jsonl and tasks.jsonl."""
    root, fps, lengths = tmp_path / "v21", 10, [6, 8]
    video = {"dtype": "video", "shape": [40, 40, 3], "names": ["height", "width", "channels"]}
    features = {"observation.images.cam_high": video,
                "observation.state": {"dtype": "float32", "shape": [2], "names": None},
                "action": {"dtype": "float32", "shape": [2], "names": None},
                **{k: {"dtype": d, "shape": [1], "names": None} for k, d in DEFAULT_FEATURES.items()}}
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps({
        "codebase_version": "v2.1", "fps": fps, "chunks_size": 1000, "features": features,
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"}))
    (root / "meta" / "tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "fold the towel"}) + "\n")
    (root / "meta" / "episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": e, "tasks": ["fold the towel"], "length": n}) + "\n"
        for e, n in enumerate(lengths)))
    states = []
    for e, n in enumerate(lengths):
        state = np.arange(2 * n, dtype=np.float32).reshape(n, 2) + 100 * e
        states.append(state)
        (root / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"observation.state": state.tolist(), "action": (-state).tolist(),
                                 "timestamp": [i / fps for i in range(n)], "frame_index": list(range(n)),
                                 "episode_index": [e] * n, "index": list(range(n)), "task_index": [0] * n}),
                       root / "data" / "chunk-000" / f"episode_{e:06d}.parquet")
        _write_video(root / "videos" / "chunk-000" / "observation.images.cam_high" / f"episode_{e:06d}.mp4",
                     _frames(n, e), fps)
    out = tmp_path / "v21.zarr"
    run("import", str(root), "--format", "lerobot", "--out", str(out), "--quiet")
    with EpisodeStore.open(out) as store:
        assert store.num_episodes == 2
        for e in range(2):
            ep = store.episode(e)
            assert np.array_equal(ep.obs["state"], states[e]) and np.array_equal(ep.action, -states[e])
            assert ep.meta.instruction == "fold the towel"
            assert ep.obs["images/cam_high"].shape == (lengths[e], 40, 40, 3)
            assert ep.truncated[-1] and not ep.terminated.any()  # nothing said how it ended


def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, push_store):
    out = tmp_path / "out.zarr"
    assert_clean_error(run("import", str(tmp_path), "--format", "lerobot", "--out", str(out), check=False),
                       "no meta/info.json")
    ds = tmp_path / "ds"
    run("export", str(push_store), "--out", str(ds), "--quiet")
    (tmp_path / "map.yaml").write_text("cameras: {front: observation.images.top}\nstate: observation.state\n")
    assert_clean_error(run("import", str(ds), "--format", "lerobot", "--map", str(tmp_path / "map.yaml"), "--out",
                           str(out), check=False), "no feature 'observation.images.top'")
    (tmp_path / "map.yaml").write_text("camras: {}\n")
    assert_clean_error(run("import", str(ds), "--format", "lerobot", "--map", str(tmp_path / "map.yaml"), "--out",
                           str(out), check=False), "unknown fields ['camras']")
    # a damaged video: the import stops naming it, and nothing is written
    video = ds / "videos" / "observation.images.wrist" / "chunk-000" / "file-000.mp4"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    proc = run("import", str(ds), "--format", "lerobot", "--out", str(out), "--quiet", check=False)
    assert_clean_error(proc, "observation.images.wrist")
    (ds / "data" / "chunk-000" / "file-000.parquet").write_bytes(b"not parquet")
    assert_clean_error(run("import", str(ds), "--format", "lerobot", "--out", str(out), "--quiet", check=False),
                       "cannot read")
    assert not out.exists() and not list(tmp_path.glob(".out.zarr*"))
    # export never replaces what it did not make
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert_clean_error(run("export", str(push_store), "--out", str(tmp_path / "mine"), "--overwrite", check=False),
                       "not a dataset robot-rl exported")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_append_and_overwrite_keep_or_replace_the_store_whole(tmp_path, push_store):
    ds, out = tmp_path / "ds", tmp_path / "out.zarr"
    run("export", str(push_store), "--out", str(ds), "--quiet")
    shutil.copytree(push_store, out)
    run("import", str(ds), "--format", "lerobot", "--out", str(out), "--append", "--quiet")
    with EpisodeStore.open(push_store) as a, EpisodeStore.open(out) as b:
        assert b.num_episodes == 2 * a.num_episodes
        b.verify()
        for i in range(a.num_episodes):  # the episodes already there, then the imported ones
            for j in (i, i + a.num_episodes):
                assert np.array_equal(a.episode(i).action, b.episode(j).action)
    # an append whose images do not fit the store fails in one line and adds nothing
    proc = run("import", str(ds), "--format", "lerobot", "--out", str(out), "--append", "--image-size", "16",
               "--quiet", check=False)
    assert_clean_error(proc)
    with EpisodeStore.open(out) as b:
        assert b.num_episodes == 10
    assert not list(tmp_path.glob(".out.zarr*"))
    run("import", str(ds), "--format", "lerobot", "--out", str(out), "--overwrite", "--image-size", "16", "--quiet")
    with EpisodeStore.open(out) as b:
        assert b.num_episodes == 5 and b.schema["steps"]["obs/images/front"]["shape"] == [16, 16, 3]
