"""``robot-rl view``: an episode store, or a run folder, as a rerun recording (.rrd): cameras, state, action,
reward, flags, stored extras and a critic's values over time, plus a run's learning curves.

Entity layout::

    episode_<i:04d>/cameras/<cam>        JPEG image per step; the final observation is the last frame (step T)
    episode_<i:04d>/state/<j>            rr.Scalars, one entity per dimension (T+1 points, final obs included)
    episode_<i:04d>/action/<j>           rr.Scalars, one entity per dimension (T points)
    episode_<i:04d>/reward               rr.Scalars
    episode_<i:04d>/flags/{intervention,success}   0/1 rr.Scalars
    episode_<i:04d>/events               rr.TextLog at the first success and each intervention start/end
    episode_<i:04d>/extras/<name>        stored per-step extras (e.g. critic_reward written by relabel)
    episode_<i:04d>/critic/{value,done}  with a critic: its value curve (as CriticReward) and done probability
    episode_<i:04d>/info                 rr.TextDocument: task, instruction, source, outcome
    curves/<csv path without suffix>/<column>   every numeric column of a run's CSV logs, on ``train_step``

Timelines: ``step`` (sequence) and ``time`` (seconds, from the store's ``control_hz``) for episodes;
``train_step`` (and ``env_steps`` where a CSV has it) for curves.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from robot_rl.core.errors import ConfigError, RobotRLError
from robot_rl.replay.layout import is_image
from robot_rl.replay.store import EpisodeStore, is_store

# Columns that count training progress, in order of preference, for the ``train_step`` timeline.
STEP_COLUMNS = ("step", "iteration", "round", "epoch")
# How deep into a run folder to look for CSV logs and stores (the main job nests runs one level down).
RUN_DEPTH = 3
SKIP_DIRS = {"tb", "checkpoints", "policy", "__pycache__"}


# --------------------------------------------------------------------------------------- finding things
def _scan_run(root: Path) -> tuple[list[Path], list[Path]]:
    """CSV logs and episode stores under a run folder, shallowest first. Stores are not descended into:
    their chunk files would make the walk slow and hold nothing of interest here."""
    csvs: list[Path] = []
    stores: list[Path] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        depth = len(here.relative_to(root).parts)
        keep = []
        for d in sorted(dirs):
            if d.startswith(".") or d in SKIP_DIRS:
                continue
            if is_store(here / d):
                stores.append(here / d)
            elif depth + 1 < RUN_DEPTH:
                keep.append(d)
        dirs[:] = keep
        csvs += [here / f for f in sorted(files) if f.endswith(".csv")]
    by_depth = lambda p: (len(p.relative_to(root).parts), str(p))  # noqa: E731
    return sorted(csvs, key=by_depth), sorted(stores, key=by_depth)


def _display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _choose(store: EpisodeStore, episodes: list[int] | None) -> list[int]:
    if episodes is None:
        return list(range(store.num_episodes))
    if not episodes:
        raise ConfigError("no episodes chosen: give --episode as comma-separated indices, e.g. 0,3")
    chosen = list(dict.fromkeys(int(e) for e in episodes))  # drop repeats, keep the order asked for
    bad = [e for e in chosen if not 0 <= e < store.num_episodes]
    if bad:
        raise ConfigError(f"episode {bad[0]} does not exist: {store.path} has {store.num_episodes} episodes "
                          f"(0-based, 0..{store.num_episodes - 1})")
    return chosen


def _load_critic(path: str | Path, store: EpisodeStore):
    """A CriticReward over the checkpoint at ``path`` (a saved critic, or a critic run holding ``critic/``)."""
    from robot_rl.critic.model import ProgressCritic
    from robot_rl.critic.reward import CriticReward

    directory = Path(path)
    if (directory / "critic" / "config.json").is_file():  # a critic run folder, as relabel accepts
        directory = directory / "critic"
    if not directory.is_dir():
        raise ConfigError(f"critic checkpoint {directory} does not exist (expected a folder saved by the critic)")
    try:
        critic = ProgressCritic.load(directory)
    except RobotRLError:
        raise
    except Exception as exc:  # damaged weights or config: torch, safetensors and draccus raise many types
        raise ConfigError(f"critic checkpoint {directory} does not load ({type(exc).__name__}: {exc})") from None
    missing = [c for c in critic.config.cameras if f"obs/images/{c}" not in store.step_keys]
    if missing:
        raise ConfigError(f"the critic at {directory} reads camera(s) {missing}, which {store.path} does not have")
    return CriticReward(critic)


# ------------------------------------------------------------------------------------------- logging
class _Recording:
    """A rerun RecordingStream that remembers which entities it logged."""

    def __init__(self, rr: Any, rec: Any) -> None:
        self.rr, self.rec = rr, rec
        self.entities: set[str] = set()

    def series(self, entity: str, values: np.ndarray, indexes: list[Any]) -> None:
        """A scalar curve in one call (one chunk), rather than one log call per point."""
        self.rec.send_columns(entity, indexes=indexes, columns=self.rr.Scalars.columns(scalars=values))
        self.entities.add(entity)

    def log(self, entity: str, item: Any, static: bool = False) -> None:
        self.rec.log(entity, item, static=static)
        self.entities.add(entity)


def _episode_index(rr: Any, n: int, hz: float | None) -> list[Any]:
    steps = np.arange(n, dtype=np.int64)
    index = [rr.TimeColumn("step", sequence=steps)]
    if hz:
        index.append(rr.TimeColumn("time", duration=steps / hz))
    return index


def _set_time(rec: Any, step: int, hz: float | None) -> None:
    rec.set_time("step", sequence=step)
    if hz:
        rec.set_time("time", duration=step / hz)


def _per_dim(out: _Recording, entity: str, values: np.ndarray, indexes: list[Any]) -> None:
    """One entity per dimension (``entity/<j>``), so each can be toggled in the viewer; a scalar field is one."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        out.series(entity, values, indexes)
        return
    values = values.reshape(len(values), -1)
    for j in range(values.shape[1]):
        out.series(f"{entity}/{j}", values[:, j], indexes)


def _info_text(i: int, store: EpisodeStore, meta: Any, data: dict[str, np.ndarray]) -> str:
    length = len(data["action"])
    success = np.flatnonzero(np.asarray(data["success"], bool))
    if success.size:
        outcome = f"success (first at step {int(success[0])})"
    else:
        outcome = "success" if meta.success else "failure"
    ended = ("terminated" if bool(data["terminated"][-1]) else "truncated" if bool(data["truncated"][-1])
             else "cut off")
    operator = int(np.asarray(data["intervention"], bool).sum())
    return "\n".join([
        f"## episode {i} of `{store.path}`", "",
        f"- **task**: {meta.task}",
        f"- **instruction**: {meta.instruction}",
        f"- **source**: {meta.source}",
        f"- **outcome**: {outcome}; {length} steps, {ended}",
        f"- **operator steps**: {operator}",
        f"- **seed**: {meta.seed}",
    ])


def _log_episode(out: _Recording, store: EpisodeStore, i: int, hz: float | None, scorer: Any,
                 extras: list[str]) -> int:
    """Log episode ``i``; returns its number of steps."""
    rr, rec = out.rr, out.rec
    root = f"episode_{i:04d}"
    data = store.read_episode(i)
    final = store.final_obs(i)
    meta = store.episode_meta(i)
    length = len(data["action"])
    steps, frames = _episode_index(rr, length, hz), _episode_index(rr, length + 1, hz)

    cameras: dict[str, np.ndarray] = {}
    for key in sorted(k for k in data if k.startswith("obs/")):
        name = key[4:]
        stacked = np.concatenate([data[key], np.asarray(final[name])[None]])  # the final observation last
        if is_image(data[key].shape[1:], data[key].dtype):
            cameras[name.removeprefix("images/")] = stacked
        else:
            _per_dim(out, f"{root}/{name}", stacked, frames)
    for cam, images in cameras.items():
        for k, image in enumerate(images):
            _set_time(rec, k, hz)
            # JPEG (quality 90): a recording of a whole store stays ~10x smaller than raw frames
            out.log(f"{root}/cameras/{cam}", rr.Image(image).compress(jpeg_quality=90))
    rec.reset_time()

    _per_dim(out, f"{root}/action", data["action"], steps)
    _per_dim(out, f"{root}/reward", data["reward"], steps)
    intervention = np.asarray(data["intervention"], bool)
    success = np.asarray(data["success"], bool)
    _per_dim(out, f"{root}/flags/intervention", intervention, steps)
    _per_dim(out, f"{root}/flags/success", success, steps)

    events: list[tuple[int, str, str]] = []
    if success.any():
        events.append((int(np.flatnonzero(success)[0]), "first success", "INFO"))
    edges = np.diff(np.concatenate([[False], intervention, [False]]).astype(np.int8))
    events += [(int(s), "intervention starts", "WARN") for s in np.flatnonzero(edges == 1)]
    events += [(int(s), "intervention ends", "INFO") for s in np.flatnonzero(edges == -1)]
    for step, text, level in sorted(events):
        _set_time(rec, step, hz)
        out.log(f"{root}/events", rr.TextLog(text, level=level))
    rec.reset_time()

    start, end = int(store.episode_starts[i]), int(store.episode_ends[i])
    for name in extras:
        committed = store.extra_rows(name)
        if committed is not None and committed < end:
            continue  # not written (or not committed) for this episode yet, e.g. a relabel still running
        values = store.get_extra(name, np.arange(start, end))
        _per_dim(out, f"{root}/extras/{name}", values, steps)

    if scorer is not None:
        views = {c: cameras[c] for c in scorer.critic.config.cameras}
        values, done = scorer.score_frames(views, meta.instruction)
        out.series(f"{root}/critic/value", values - values[0], frames)  # CriticReward.value_curve, one pass
        out.series(f"{root}/critic/done", np.asarray(done, np.float64), frames)

    out.log(f"{root}/info", rr.TextDocument(_info_text(i, store, meta, data), media_type=rr.MediaType.MARKDOWN),
            static=True)
    return length


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _log_curves(out: _Recording, root: Path, path: Path) -> None:
    """Every numeric column of one CSV log as ``curves/<relative path>/<column>`` over ``train_step``."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    columns = list(rows[0].keys())
    step_col = next((c for c in STEP_COLUMNS if c in columns and all(_number(r[c]) is not None for r in rows)), None)
    train_step = np.array([int(float(r[step_col])) for r in rows] if step_col else range(len(rows)), np.int64)
    env_steps = None
    if "env_steps" in columns and all(_number(r["env_steps"]) is not None for r in rows):
        env_steps = np.array([int(float(r["env_steps"])) for r in rows], np.int64)
    parts = [*path.relative_to(root).parent.parts, path.stem]
    prefix = "/".join(["curves", *(out.rr.escape_entity_path_part(p) for p in parts)])
    for col in columns:
        if col in (step_col, "env_steps") or col is None:
            continue
        raw = [r[col] for r in rows]
        values = [_number(v) for v in raw]
        if any(v is None and text not in (None, "") for v, text in zip(values, raw)):
            continue  # a text column
        keep = np.array([v is not None and math.isfinite(v) for v in values])
        if not keep.any():
            continue
        index = [out.rr.TimeColumn("train_step", sequence=train_step[keep])]
        if env_steps is not None:
            index.append(out.rr.TimeColumn("env_steps", sequence=env_steps[keep]))
        series = np.array([v for v, k in zip(values, keep) if k], np.float64)
        out.series(f"{prefix}/{out.rr.escape_entity_path_part(col)}", series, index)


# ------------------------------------------------------------------------------------------- the entry
def view(path: str | Path, *, episodes: list[int] | None = None, out: str | Path | None = None, spawn: bool = False,
         critic: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Write the store or run folder at ``path`` as a rerun recording (``out``, default ``<path>.rrd`` beside
    it), or stream it to a spawned viewer. Everything is checked before anything is written, and the file
    appears only once complete, so bad input leaves no .rrd behind."""
    src = Path(path)
    if not src.exists():
        raise ConfigError(f"{src} does not exist: expected an episode store (*.zarr) or a run folder")
    csvs: list[Path] = []
    stores: list[Path] = []
    if is_store(src):
        store_path: Path | None = src
    elif src.is_dir():
        csvs, stores = _scan_run(src)
        if not csvs and not stores:
            raise ConfigError(f"{src} is neither an episode store nor a run folder "
                              f"(no zarr.json of a store, no *.csv logs or *.zarr stores within {RUN_DEPTH} levels)")
        store_path = stores[0] if stores else None
    else:
        raise ConfigError(f"{src} is a file, not an episode store or a run folder")
    if spawn and not _display_available():
        raise ConfigError("--spawn needs a display, but DISPLAY and WAYLAND_DISPLAY are unset; "
                          "write a file with --out FILE.rrd and open it with `rerun FILE.rrd` where there is one")

    store = EpisodeStore.open(store_path) if store_path is not None else None
    if store is None and (episodes is not None or critic is not None):
        raise ConfigError(f"{src} holds no episode store, so --episode and --critic have nothing to show")
    chosen = _choose(store, episodes) if store is not None else []
    scorer = _load_critic(critic, store) if critic is not None and store is not None else None
    hz = None
    if store is not None and store.env_config:
        rate = store.env_config.get("control_hz")
        hz = float(rate) if isinstance(rate, (int, float)) and rate > 0 else None

    target = None
    if out is not None or not spawn:
        target = Path(out) if out is not None else src.resolve().parent / f"{src.resolve().name}.rrd"
        if target.is_dir():
            raise ConfigError(f"--out {target} is a folder; give a file name such as view.rrd")
        if not target.parent.is_dir():
            raise ConfigError(f"--out {target}: its folder {target.parent} does not exist")
    tmp = None if target is None else target.with_name(f".{target.name}.{os.getpid()}.partial")

    import rerun as rr

    rec = rr.RecordingStream("robot_rl_view")
    rec.set_log_time_enabled(False)  # wall-clock timelines would only clutter the viewer's time panel
    rec.set_log_tick_enabled(False)
    recording = _Recording(rr, rec)
    total_steps = 0
    try:
        if spawn:
            try:
                rr.spawn(connect=False)
            except Exception as exc:  # no viewer binary, or it failed to start
                raise ConfigError(f"cannot start the rerun viewer ({exc}); write a file with --out instead") from None
            sinks = [rr.GrpcSink()] + ([rr.FileSink(str(tmp))] if tmp is not None else [])
            rec.set_sinks(*sinks)
        else:
            rec.save(str(tmp))
        for csv_path in csvs:
            _log_curves(recording, src, csv_path)
        if store is not None:
            extras = store.extra_names()
            bar = tqdm(chosen, desc="view", unit="ep", disable=not progress)
            for i in bar:
                total_steps += _log_episode(recording, store, i, hz, scorer, extras)
        rec.flush()
        rec.disconnect()
        if tmp is not None:
            tmp.replace(target)
    except BaseException:
        rec.disconnect()
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise

    where = str(target) if target is not None else "the rerun viewer"
    line = f"wrote {len(chosen)} episodes ({total_steps} steps, {len(recording.entities)} entities) of {src} to {where}"
    if store_path is not None and store_path != src:
        others = [str(s.relative_to(src)) for s in stores[1:]]
        line += f"; episodes of {store_path.relative_to(src)}" + (
            f" (also in the run: {', '.join(others)}; view one with `robot-rl view {src / others[0]}`)"
            if others else "")
    return {"out": where, "episodes": chosen, "steps": total_steps,
            "store": None if store_path is None else str(store_path), "stores": [str(s) for s in stores],
            "curves": [str(c) for c in csvs], "entities": sorted(recording.entities), "line": line}
