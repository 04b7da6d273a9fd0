"""Episode stores to and from LeRobot datasets (v3.0 written; v3.0 and v2.1 read), with pyarrow and PyAV only.

What an export writes (LeRobot v3.0)::

    meta/info.json                  codebase_version, fps, features (dtype, shape, names; video info),
                                    path templates, totals, splits
    meta/tasks.parquet              instruction -> task_index (the instruction is the pandas index, "task")
    meta/episodes/chunk-000/file-000.parquet
                                    per episode: tasks, length, data and video file indices, frame range,
                                    video from/to timestamps, stats/<feature>/<stat>; and, for a lossless
                                    round trip, robot_rl/{task,source,seed,success} and the observation after
                                    the last action (robot_rl/final/<feature>, images as PNG bytes)
    meta/stats.json                 per feature: min, max, mean, std, count, q01..q99 (images per channel in
                                    [0, 1], shape (3, 1, 1)), as LeRobot computes them
    meta/robot_rl.json              the store's env config (to evaluate in the simulated twin)
    data/chunk-000/file-000.parquet one row per step: observation.state, action, next.reward, next.done,
                                    next.truncated, next.success, intervention, policy_version, timestamp,
                                    frame_index, episode_index, index, task_index
    videos/observation.images.<camera>/chunk-000/file-000.mp4
                                    every episode's frames one after another (see video.py for codecs)

Files roll over to the next file index at LeRobot's sizes (100 MB of data, 200 MB of video per file).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from robot_rl.core.errors import ConfigError
from robot_rl.core.schema import Episode, EpisodeMeta
from robot_rl.replay.store import EpisodeStore
from robot_rl.runtime.data.features import FeatureMap, as_flags, camera_size_note, resize_frames
from robot_rl.runtime.data.video import CODECS, VideoReader, VideoWriter, video_info
from robot_rl.runtime.data.writing import ImportSummary, Skipped, check_import_target, write_imported

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk folder
DATA_FILE_MB = 100
VIDEO_FILE_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
# our per-step fields -> LeRobot feature names (next.* are outcomes of the step's action, as LeRobot names them)
STEP_FEATURES = {"reward": "next.reward", "terminated": "next.done", "truncated": "next.truncated",
                 "success": "next.success", "intervention": "intervention", "policy_version": "policy_version"}
OURS = "robot_rl"  # prefix of the episode columns only we read


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - the data extra is installed with dev
        raise ConfigError("LeRobot datasets need pyarrow: pip install 'robot-rl[data]'") from exc
    return pa, pq


def camera_feature(camera: str) -> str:
    return f"observation.images.{camera}"


# --------------------------------------------------------------------------------------------------- stats
def numeric_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's per-feature statistics of (N, D) values over the N frames."""
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    stats = {"min": values.min(0), "max": values.max(0), "mean": values.mean(0), "std": values.std(0),
             "count": np.array([len(values)])}
    for q in QUANTILES:
        stats[f"q{int(q * 100):02d}"] = np.quantile(values, q, axis=0)
    return stats


class ImageStats:
    """Per-channel statistics of uint8 frames, exact from a 256-bin histogram per channel, in [0, 1]."""

    def __init__(self) -> None:
        self.hist = np.zeros((3, 256), dtype=np.int64)
        self.frames = 0

    def add(self, frames: np.ndarray) -> None:
        for c in range(3):
            self.hist[c] += np.bincount(frames[..., c].ravel(), minlength=256)
        self.frames += len(frames)

    def merge(self, other: ImageStats) -> None:
        self.hist += other.hist
        self.frames += other.frames

    def result(self) -> dict[str, np.ndarray]:
        levels = np.arange(256) / 255.0
        n = self.hist.sum(1)
        cum = np.cumsum(self.hist, 1)
        mean = (self.hist * levels).sum(1) / n
        std = np.sqrt((self.hist * (levels - mean[:, None]) ** 2).sum(1) / n)
        stats = {"min": levels[np.argmax(self.hist > 0, 1)], "max": levels[255 - np.argmax(self.hist[:, ::-1] > 0, 1)],
                 "mean": mean, "std": std}
        for q in QUANTILES:
            stats[f"q{int(q * 100):02d}"] = levels[np.argmax(cum >= q * n[:, None], 1)]
        stats = {k: v.reshape(3, 1, 1) for k, v in stats.items()}
        stats["count"] = np.array([self.frames])
        return stats


def _jsonable(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {feature: {k: np.asarray(v).tolist() for k, v in s.items()} for feature, s in stats.items()}


# --------------------------------------------------------------------------------------------------- export
class _Files:
    """Chunk/file indices of one kind of file, rolled over at a size."""

    def __init__(self, limit_mb: float) -> None:
        self.chunk, self.file, self.limit = 0, 0, limit_mb * 2**20

    def advance(self) -> None:
        self.file += 1
        if self.file >= CHUNKS_SIZE:
            self.chunk, self.file = self.chunk + 1, 0


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - cv2 encodes any uint8 RGB image
        raise ConfigError("could not encode a final observation image as PNG")
    return buf.tobytes()


def _check_export_target(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if out.is_dir() and not any(out.iterdir()):
        return
    if not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite to replace a dataset made by export")
    if not (out / "meta" / f"{OURS}.json").is_file():
        raise ConfigError(f"refusing to overwrite {out}: it is not a dataset robot-rl exported")


def export_lerobot(store_path: str | Path, out: str | Path, *, codec: str = "ffv1", fps: float | None = None,
                   overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Write every episode of the store at ``store_path`` as a LeRobot v3.0 dataset in ``out`` (a new folder,
    built beside it and renamed at the end); returns a summary with a ``line`` to print."""
    pa, pq = _pa()
    if codec not in CODECS:
        raise ConfigError(f"unknown video codec {codec!r}; expected one of {sorted(CODECS)}")
    out = Path(out)
    _check_export_target(out, overwrite)
    store = EpisodeStore.open(store_path)
    scratch = out.with_name(f".{out.name}.exporting-{os.getpid()}")
    try:
        if store.num_episodes == 0:
            raise ConfigError(f"{store_path} holds no episodes to export")
        env_config = store.env_config or {}
        rate = fps if fps is not None else env_config.get("control_hz", 10.0)
        if float(rate) <= 0 or abs(float(rate) - round(float(rate))) > 1e-9:
            raise ConfigError(f"LeRobot needs a whole number of frames per second, got {rate}; pass --fps")
        rate = int(round(float(rate)))
        if scratch.exists():
            shutil.rmtree(scratch)
        summary = _export(store, scratch, codec, rate, progress, pa, pq)
        (scratch / "meta" / f"{OURS}.json").write_text(json.dumps(
            {"exported_from": str(Path(store_path).resolve()), "codec": codec, "env_config": store.env_config},
            indent=2))
        if out.exists():
            shutil.rmtree(out)
        scratch.rename(out)
    finally:
        store.close()
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    summary.update(out=str(out), codec=codec, fps=rate)
    summary["line"] = (f"exported {summary['episodes']} episodes ({summary['frames']} frames, "
                       f"{len(summary['cameras'])} cameras as {codec} video) of {store_path} to {out} "
                       f"(LeRobot {CODEBASE_VERSION}, {rate} fps)")
    return summary


def _export(store: EpisodeStore, root: Path, codec: str, fps: int, progress: bool, pa, pq) -> dict[str, Any]:
    schema = store.schema["steps"]
    cameras = [k.split("/", 2)[2] for k in schema if k.startswith("obs/images/")]
    lowdim = [k for k in schema if k.startswith("obs/") and not k.startswith("obs/images/")]
    features: dict[str, dict[str, Any]] = {}
    for cam in cameras:
        h, w, _ = schema[f"obs/images/{cam}"]["shape"]
        features[camera_feature(cam)] = {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                                         "info": video_info(codec, fps, h, w)}
    obs_names = {k: "observation." + k[4:].replace("/", ".") for k in lowdim}
    for key, name in obs_names.items():
        dim = int(np.prod(schema[key]["shape"]))
        features[name] = {"dtype": np.dtype(schema[key]["dtype"]).name, "shape": [dim],
                          "names": [f"{key[4:]}_{i}" for i in range(dim)]}
    action_dim = int(schema["action"]["shape"][0])
    features["action"] = {"dtype": "float32", "shape": [action_dim],
                          "names": [f"action_{i}" for i in range(action_dim)]}
    for ours, name in STEP_FEATURES.items():
        features[name] = {"dtype": np.dtype(schema[ours]["dtype"]).name, "shape": [1], "names": None}
    features.update({k: dict(v) for k, v in DEFAULT_FEATURES.items()})

    tasks: dict[str, int] = {}
    episode_rows: list[dict[str, Any]] = []
    numeric: dict[str, list[np.ndarray]] = {name: [] for name in features if features[name]["dtype"] != "video"}
    image_stats = {cam: ImageStats() for cam in cameras}
    data_files, video_files = _Files(DATA_FILE_MB), {cam: _Files(VIDEO_FILE_MB) for cam in cameras}
    videos: dict[str, VideoWriter] = {}
    video_time = dict.fromkeys(cameras, 0)  # frames in each camera's current file
    data_writer, data_bytes, frame = None, 0, 0
    try:
        for e in tqdm(range(store.num_episodes), desc=f"export {store.path.name}", unit="ep", disable=not progress):
            ep = store.episode(e)
            n = len(ep)
            task_index = tasks.setdefault(ep.meta.instruction, len(tasks))
            columns: dict[str, np.ndarray] = {obs_names[k]: ep.obs[k[4:]].reshape(n, -1) for k in lowdim}
            columns["action"] = ep.action
            for ours, name in STEP_FEATURES.items():
                columns[name] = getattr(ep, ours)
            columns.update(timestamp=(np.arange(n) / fps).astype(np.float32), frame_index=np.arange(n, dtype=np.int64),
                           episode_index=np.full(n, e, np.int64), index=np.arange(frame, frame + n, dtype=np.int64),
                           task_index=np.full(n, task_index, np.int64))
            row: dict[str, Any] = {"episode_index": e, "tasks": [ep.meta.instruction], "length": n}
            ep_stats: dict[str, dict[str, np.ndarray]] = {}
            for name, values in columns.items():
                numeric[name].append(values)
                ep_stats[name] = numeric_stats(values)
            table = pa.table({name: _arrow_column(pa, values, features[name]) for name, values in columns.items()})
            if data_writer is not None and data_bytes + table.nbytes > data_files.limit:
                data_writer.close()
                data_writer, data_bytes = None, 0
                data_files.advance()
            if data_writer is None:
                path = root / DATA_PATH.format(chunk_index=data_files.chunk, file_index=data_files.file)
                path.parent.mkdir(parents=True, exist_ok=True)
                data_writer = pq.ParquetWriter(path, table.schema, compression="snappy")
            data_writer.write_table(table)
            data_bytes += table.nbytes
            row.update({"data/chunk_index": data_files.chunk, "data/file_index": data_files.file,
                        "dataset_from_index": frame, "dataset_to_index": frame + n})
            for cam in cameras:
                frames = ep.obs[f"images/{cam}"]
                key, files = camera_feature(cam), video_files[cam]
                writer = videos.get(cam)
                if writer is not None and writer.path.is_file() and writer.path.stat().st_size >= files.limit:
                    writer.close()
                    writer = None
                    files.advance()
                if writer is None:
                    path = root / VIDEO_PATH.format(video_key=key, chunk_index=files.chunk, file_index=files.file)
                    writer = videos[cam] = VideoWriter(path, fps, frames.shape[2], frames.shape[1], codec)
                    video_time[cam] = 0
                writer.write(frames)
                stats = ImageStats()
                stats.add(frames)
                image_stats[cam].merge(stats)
                ep_stats[key] = stats.result()
                row.update({f"videos/{key}/chunk_index": files.chunk, f"videos/{key}/file_index": files.file,
                            f"videos/{key}/from_timestamp": video_time[cam] / fps,
                            f"videos/{key}/to_timestamp": (video_time[cam] + n) / fps})
                video_time[cam] += n
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            for name, stats in ep_stats.items():
                for stat, value in stats.items():
                    row[f"stats/{name}/{stat}"] = np.asarray(value).tolist()
            row.update({f"{OURS}/task": ep.meta.task, f"{OURS}/source": ep.meta.source, f"{OURS}/seed": ep.meta.seed,
                        f"{OURS}/success": bool(ep.meta.success)})
            for key, value in ep.final_obs.items():
                name = camera_feature(key.split("/", 1)[1]) if key.startswith("images/") else obs_names[f"obs/{key}"]
                row[f"{OURS}/final/{name}"] = _png(value) if key.startswith("images/") else value.ravel().tolist()
            episode_rows.append(row)
            frame += n
    finally:
        if data_writer is not None:
            data_writer.close()
        for writer in videos.values():
            writer.close()

    stats = {name: numeric_stats(np.concatenate(values)) for name, values in numeric.items()}
    stats.update({camera_feature(cam): s.result() for cam, s in image_stats.items()})
    meta = root / "meta"
    (meta / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episode_rows), root / EPISODES_PATH.format(chunk_index=0, file_index=0))
    _write_tasks(pa, pq, meta / "tasks.parquet", list(tasks))
    (meta / "stats.json").write_text(json.dumps(_jsonable(stats), indent=2))
    info = {"codebase_version": CODEBASE_VERSION, "robot_type": (store.env_config or {}).get("task"),
            "total_episodes": store.num_episodes, "total_frames": frame, "total_tasks": len(tasks),
            "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILE_MB, "video_files_size_in_mb": VIDEO_FILE_MB,
            "fps": fps, "splits": {"train": f"0:{store.num_episodes}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if cameras else None, "features": features}
    (meta / "info.json").write_text(json.dumps(info, indent=4))
    return {"episodes": store.num_episodes, "frames": frame, "tasks": len(tasks), "cameras": cameras}


def _arrow_column(pa, values: np.ndarray, feature: dict[str, Any]):
    """A column as LeRobot (through Hugging Face datasets) types it: a scalar for shape (1,), else a
    fixed-size list."""
    dtype = pa.from_numpy_dtype(np.dtype(feature["dtype"]))
    if feature["shape"] == [1]:
        return pa.array(np.asarray(values).reshape(-1), type=dtype)
    values = np.ascontiguousarray(values, dtype=np.dtype(feature["dtype"])).reshape(len(values), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel(), type=dtype), values.shape[1])


def _write_tasks(pa, pq, path: Path, tasks: list[str]) -> None:
    """tasks.parquet as pandas writes it (LeRobot reads it with pandas): the instruction is the index, ``task``."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas_meta = {"index_columns": ["task"], "column_indexes": [{"name": None, "field_name": None,
                   "pandas_type": "unicode", "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
                   "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                                "numpy_type": "int64", "metadata": None},
                               {"name": "task", "field_name": "task", "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": None}],
                   "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3"}
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    pq.write_table(table, path)


# --------------------------------------------------------------------------------------------------- import
def _meta(ep: dict[str, Any], column: str) -> Any:
    """A column of an episode's metadata row; ConfigError naming it when the dataset lacks it."""
    if ep.get(column) is None:
        raise ConfigError(f"the metadata of episode {ep.get('episode_index')} has no {column!r}")
    return ep[column]


class LeRobotDataset:
    """A LeRobot dataset folder read with pyarrow and PyAV: its info, tasks and episodes (v3.0, v2.1, v2.0)."""

    def __init__(self, root: str | Path) -> None:
        self.pa, self.pq = _pa()
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise ConfigError(f"{self.root} is not a LeRobot dataset: it has no meta/info.json")
        try:
            self.info = json.loads(info_path.read_text())
            self.version = str(self.info["codebase_version"])
            self.fps = float(self.info["fps"])
            self.features: dict[str, dict[str, Any]] = dict(self.info["features"])
            str(self.info["data_path"])
            if any(f.get("dtype") == "video" for f in self.features.values()):
                str(self.info["video_path"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{info_path} is not a LeRobot info.json: {type(exc).__name__}: {exc}") from None
        if self.version not in ("v3.0", "v2.1", "v2.0"):
            raise ConfigError(f"{self.root} is a LeRobot {self.version} dataset; this reads v3.0, v2.1 and v2.0")
        self.v3 = self.version == "v3.0"
        self.tasks = self._read_tasks()
        self.episodes = self._read_episodes()
        ours = self.root / "meta" / f"{OURS}.json"
        self.ours: dict[str, Any] = json.loads(ours.read_text()) if ours.is_file() else {}
        self._file: tuple[Path, Any, np.ndarray | None] | None = None  # the data file being read, its episode column
        self._videos: dict[str, VideoReader] = {}

    def _read_table(self, path: Path):
        try:
            return self.pq.read_table(path)
        except (OSError, self.pa.ArrowException) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None

    def _read_jsonl(self, path: Path) -> list[dict[str, Any]]:
        try:
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None

    def _read_tasks(self) -> dict[int, str]:
        if not self.v3:
            return {int(r["task_index"]): str(r["task"]) for r in self._read_jsonl(self.root / "meta" / "tasks.jsonl")}
        table = self._read_table(self.root / "meta" / "tasks.parquet").to_pydict()
        names = table.get("task") or table.get("__index_level_0__")
        if names is None or "task_index" not in table:
            raise ConfigError(f"{self.root}/meta/tasks.parquet has no task / task_index columns: {sorted(table)}")
        return {int(i): str(t) for i, t in zip(table["task_index"], names)}

    def _read_episodes(self) -> list[dict[str, Any]]:
        if not self.v3:
            rows = self._read_jsonl(self.root / "meta" / "episodes.jsonl")
        else:
            files = sorted((self.root / "meta" / "episodes").glob("*/*.parquet"))
            if not files:
                raise ConfigError(f"{self.root} has no meta/episodes/*/*.parquet")
            rows = [r for f in files for r in self._read_table(f).to_pylist()]
        if not rows:
            raise ConfigError(f"{self.root} lists no episodes")
        return sorted(rows, key=lambda r: int(r["episode_index"]))

    def _data_path(self, ep: dict[str, Any]) -> Path:
        if self.v3:
            return self.root / self.info["data_path"].format(chunk_index=_meta(ep, "data/chunk_index"),
                                                             file_index=_meta(ep, "data/file_index"))
        index = int(ep["episode_index"])
        return self.root / self.info["data_path"].format(episode_chunk=index // int(self.info.get("chunks_size", 1000)),
                                                         episode_index=index)

    def rows(self, ep: dict[str, Any]) -> dict[str, list]:
        """The data rows of one episode, in frame order, as columns."""
        path = self._data_path(ep)
        if self._file is None or self._file[0] != path:  # one file at a time: episodes are read in order
            table = self._read_table(path)
            episodes = table.column("episode_index").to_numpy() if "episode_index" in table.column_names else None
            if self.v3 and episodes is None:
                raise ConfigError(f"{path} has no episode_index column")
            self._file = (path, table, episodes)
        _, table, episodes = self._file
        if episodes is not None:
            table = table.take(np.flatnonzero(episodes == int(ep["episode_index"])))
        columns = table.to_pydict()
        if "frame_index" in columns:
            order = np.argsort(columns["frame_index"], kind="stable")
            columns = {k: [v[i] for i in order] for k, v in columns.items()}
        return columns

    def frames(self, ep: dict[str, Any], key: str, length: int, columns: dict[str, list]) -> np.ndarray:
        """The (length, H, W, 3) frames of camera feature ``key`` for one episode."""
        if self.features[key]["dtype"] == "image":
            if key not in columns:
                raise ConfigError(f"the data of episode {ep['episode_index']} has no column {key!r}")
            return np.stack([self._decode_image(cell, key) for cell in columns[key]])
        index = int(ep["episode_index"])
        if self.v3:
            path = self.root / self.info["video_path"].format(
                video_key=key, chunk_index=_meta(ep, f"videos/{key}/chunk_index"),
                file_index=_meta(ep, f"videos/{key}/file_index"))
            start = float(_meta(ep, f"videos/{key}/from_timestamp"))
        else:
            chunk = index // int(self.info.get("chunks_size", 1000))
            path = self.root / self.info["video_path"].format(episode_chunk=chunk, video_key=key, episode_index=index)
            start = 0.0
        reader = self._videos.get(key)
        if reader is None or reader.path != path:
            if reader is not None:
                reader.close()
            if not path.is_file():
                raise ConfigError(f"episode {index}'s video {path} is missing")
            reader = self._videos[key] = VideoReader(path, self.fps)
        return reader.take(start, length)

    def _decode_image(self, cell: Any, key: str) -> np.ndarray:
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if not data and isinstance(cell, dict) and cell.get("path"):
            data = (self.root / cell["path"]).read_bytes()
        image = cv2.imdecode(np.frombuffer(data or b"", np.uint8), cv2.IMREAD_COLOR) if data else None
        if image is None:
            raise ConfigError(f"an image of feature {key!r} does not decode")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        for reader in self._videos.values():
            reader.close()
        self._videos.clear()


def default_feature_map(features: dict[str, dict[str, Any]]) -> FeatureMap:
    """Cameras: every video/image feature (named by its last dotted part); state: observation.state;
    action: action; flags and reward where the dataset has LeRobot's (or our export's) names for them."""
    cameras = {k.split(".")[-1]: k for k, f in features.items() if f.get("dtype") in ("video", "image")}
    state = ["observation.state"] if "observation.state" in features else []
    fmap = FeatureMap(cameras=cameras, state=state, action=["action"])
    fmap.success = "next.success" if "next.success" in features else None
    fmap.reward = "next.reward" if "next.reward" in features else None
    for name in ("intervention", "complementary_info.is_intervention"):
        if name in features:
            fmap.intervention = name
    return fmap


def _column(columns: dict[str, list], key: str, length: int, episode: int) -> np.ndarray:
    if key not in columns:
        raise ConfigError(f"the data of episode {episode} has no column {key!r}")
    values = np.asarray(columns[key])
    if len(values) != length:
        raise ConfigError(f"episode {episode}: column {key!r} has {len(values)} rows, the episode {length} frames")
    return values.reshape(length, -1)


def _flag(columns: dict[str, list], key: str | None, length: int, episode: int) -> np.ndarray:
    present = key is not None and key in columns
    return as_flags(_column(columns, key, length, episode) if present else None, length, str(key))


def _episodes(dataset: LeRobotDataset, fmap: FeatureMap) -> Iterator[Episode | Skipped]:
    default_task = fmap.task or dataset.root.name
    for ep in dataset.episodes:
        index = int(ep["episode_index"])
        columns = dataset.rows(ep)
        length = len(next(iter(columns.values()), []))
        if length < 1:
            yield Skipped(f"episode {index}", "it has no frames in the data files")
            continue
        state = np.concatenate([_column(columns, k, length, index) for k in fmap.state], 1).astype(np.float32)
        action = np.concatenate([_column(columns, k, length, index) for k in fmap.action], 1).astype(np.float32)
        if not np.isfinite(action).all():
            yield Skipped(f"episode {index}", "its actions are not finite (NaN or inf)")
            continue
        obs: dict[str, np.ndarray] = {"state": state}
        for cam, key in fmap.cameras.items():
            obs[f"images/{cam}"] = resize_frames(dataset.frames(ep, key, length, columns), fmap.image_size)

        success = _flag(columns, fmap.success, length, index)
        terminated = _flag(columns, "next.done", length, index)
        truncated = _flag(columns, "next.truncated", length, index)
        if "next.done" not in columns and "next.truncated" not in columns:
            truncated[-1] = True  # nothing says how it ended: stored as cut short, which bootstraps in RL
        reward = (_column(columns, fmap.reward, length, index)[:, 0].astype(np.float32) if fmap.reward
                  else np.zeros(length, np.float32))
        intervention = _flag(columns, fmap.intervention, length, index)
        final = _final_obs(ep, obs, fmap, dataset)
        task_index = int(columns["task_index"][0]) if "task_index" in columns else None
        instruction = fmap.instruction or dataset.tasks.get(task_index) or next(iter(ep.get("tasks") or []), "")
        meta = EpisodeMeta(task=ep.get(f"{OURS}/task") or default_task, instruction=str(instruction),
                           success=bool(ep.get(f"{OURS}/success", success.any())),
                           source=ep.get(f"{OURS}/source") or ("human" if intervention.all() else "expert"),
                           seed=int(ep.get(f"{OURS}/seed", index)))
        version = (_column(columns, "policy_version", length, index)[:, 0].astype(np.int32)
                   if "policy_version" in columns else np.zeros(length, np.int32))
        yield Episode(obs=obs, action=action, reward=reward, terminated=terminated, truncated=truncated,
                      success=success, intervention=intervention, policy_version=version, final_obs=final, meta=meta)


def _final_obs(ep: dict[str, Any], obs: dict[str, np.ndarray], fmap: FeatureMap,
               dataset: LeRobotDataset) -> dict[str, np.ndarray]:
    """The observation after the last action: our export keeps it in the episode's metadata; other datasets
    have none, so the last frame's observation stands in for it."""
    final = {k: v[-1].copy() for k, v in obs.items()}
    if fmap.state == ["observation.state"] and f"{OURS}/final/observation.state" in ep:
        final["state"] = np.asarray(ep[f"{OURS}/final/observation.state"], np.float32)
    for cam, key in fmap.cameras.items():
        data = ep.get(f"{OURS}/final/{key}")
        if data:
            image = dataset._decode_image(data, key)
            final[f"images/{cam}"] = resize_frames(image[None], fmap.image_size)[0]
    return final


def import_lerobot(source: str | Path, out: str | Path, *, feature_map: FeatureMap | None = None,
                   append: bool = False, overwrite: bool = False, progress: bool = True) -> ImportSummary:
    """Every episode of the LeRobot dataset at ``source`` into the store ``out`` (all or nothing)."""
    check_import_target(out, append, overwrite)
    dataset = LeRobotDataset(source)
    fmap = (feature_map or FeatureMap()).filled(default_feature_map(dataset.features))
    fmap.check(dataset.features, f"the dataset {source}")
    for cam, key in fmap.cameras.items():
        if dataset.features[key].get("dtype") not in ("video", "image"):
            raise ConfigError(f"feature {key!r} (camera {cam!r}) is a {dataset.features[key].get('dtype')}, "
                              "not a video or image")
    try:
        summary = write_imported(_episodes(dataset, fmap), out, str(source), append=append, overwrite=overwrite,
                                 env_config=dataset.ours.get("env_config"), total=len(dataset.episodes),
                                 progress=progress)
    finally:
        dataset.close()
    note = camera_size_note({tuple(dataset.features[k]["shape"][:2]) for k in fmap.cameras.values()},
                            fmap.image_size)
    if note:
        summary.notes.append(note)
    return summary

