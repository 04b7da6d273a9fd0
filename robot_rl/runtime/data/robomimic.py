"""Import of robomimic HDF5 demo files (the robosuite benchmark datasets) into an episode store.

One demo (``data/demo_N``) becomes one episode; which ``obs/<key>`` arrays become our cameras and state is
the feature map's choice, by default robomimic's standard robosuite keys (see :func:`default_feature_map`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.core.errors import ConfigError
from robot_rl.core.schema import Episode, EpisodeMeta
from robot_rl.runtime.data.features import FeatureMap, as_flags, camera_size_note, resize_frames
from robot_rl.runtime.data.writing import ImportSummary, Skipped, check_import_target, write_imported

# robosuite's proprioception as robomimic's own low-dim configs use it; other 1-D keys are task-specific.
ROBOSUITE_STATE = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]
IMAGE_SUFFIX = "_image"
_DEMO = re.compile(r"demo_(\d+)")


class _BadDemo(Exception):
    """Why one demo cannot be converted (it is skipped; the others import)."""


def import_robomimic(path: str | Path, out: str | Path, *, feature_map: FeatureMap | None = None, append: bool = False,
                     overwrite: bool = False, progress: bool = True, flip_images: bool = False) -> ImportSummary:
    """Convert every demo of the robomimic HDF5 file ``path`` into episodes of the store ``out``.

    Per demo: ``obs`` rows are the observations; the final observation is the last row of ``next_obs`` when
    the demo has it (with every mapped key), else the last ``obs`` row repeated. ``rewards`` is the reward
    (or ``feature_map.reward``); the last step is terminated when ``dones`` says so there and truncated
    otherwise (earlier ``dones``, set on success steps by robomimic's done_mode 2, are not terminal here);
    a step succeeds when its ``rewards`` is > 0 (robosuite's sparse reward)
    unless ``feature_map.success`` names a flag. The demo's number is the episode's seed.

    Pretraining needs every camera at one square size: robosuite's are square by default, otherwise pass
    ``feature_map.image_size`` (``--image-size``); the summary carries a note when they are not.
    ``flip_images``: flip frames vertically, for files rendered with OpenGL's bottom-up rows (robosuite's
    default, which robomimic stores as rendered). A file that cannot be read, or a map naming a key the
    file lacks, raises ConfigError before anything is written; a demo that cannot be converted is skipped."""
    import h5py  # only the robomimic import needs it

    path = Path(path)
    check_import_target(out, append, overwrite)
    if not path.is_file():
        raise ConfigError(f"{path} is not a file; expected a robomimic .hdf5 file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ConfigError(f"{path} is not a readable HDF5 file ({exc}); expected a robomimic .hdf5 file") from None
    with f:
        data = f.get("data")
        if not isinstance(data, h5py.Group):
            raise ConfigError(f"{path} has no 'data' group (it has {sorted(f)}); expected a robomimic .hdf5 file")
        demos = _demo_names(data)
        if not demos:
            raise ConfigError(f"{path} has no demos: its 'data' group holds no demo_<N> groups")
        env_name = _env_name(data, path)
        fmap, keys = _resolve_map(feature_map, data[demos[0]], f"{path} ({demos[0]})")
        task = fmap.task or (f"robosuite/{env_name}" if env_name else path.stem)
        instruction = fmap.instruction if fmap.instruction is not None else _registered_instruction(task)
        episodes = _episodes(data, demos, fmap, keys, task, instruction, flip_images)
        summary = write_imported(episodes, out, source=str(path), append=append, overwrite=overwrite,
                                 env_config=None, total=len(demos), progress=progress)
    note = camera_size_note({shape[1:3] for shape in keys["image_shapes"].values()}, fmap.image_size)
    if note:
        summary.notes.append(note)
    return summary


def default_feature_map(obs: dict[str, tuple[int, ...]]) -> FeatureMap:
    """The map used for every field a given map leaves empty, from the first demo's obs keys and shapes.

    Cameras: every ``*_image`` key, named without the suffix. State: robosuite's eef position, eef
    quaternion and gripper joints when all are there, else every other key with one value per step as a
    vector (sorted). Action: ``actions``."""
    cameras = {k[: -len(IMAGE_SUFFIX)]: k for k in sorted(obs) if k.endswith(IMAGE_SUFFIX)}
    if all(k in obs for k in ROBOSUITE_STATE):
        state = list(ROBOSUITE_STATE)
    else:
        state = sorted(k for k, shape in obs.items() if not k.endswith(IMAGE_SUFFIX) and len(shape) == 2)
    return FeatureMap(cameras=cameras, state=state, action=["actions"])


def _demo_names(data) -> list[str]:
    """``demo_<N>`` groups in the order of N (``demo_10`` after ``demo_9``)."""
    names = [name for name in data if _DEMO.fullmatch(name)]
    return sorted(names, key=lambda name: int(name[len("demo_"):]))


def _env_name(data, path: Path) -> str | None:
    raw = data.attrs.get("env_args")
    if raw is None:
        return None
    try:
        env_args = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
        name = env_args["env_name"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: data.attrs['env_args'] is not JSON with an 'env_name' ({exc!r})") from None
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError(f"{path}: env_args names env {name!r}; expected a robosuite env name such as 'Lift'")
    return name


def _registered_instruction(task: str) -> str:
    from robot_rl.envs.registry import get_task, task_names

    # only tasks registered one by one: a family would invent an instruction ("solve robosuite X")
    return get_task(task).instruction if task in task_names() else ""


def _resolve_map(given: FeatureMap | None, demo, where: str) -> tuple[FeatureMap, dict[str, Any]]:
    """The map with defaults filled in and ``obs/`` prefixes dropped, checked against the first demo.

    Also returns where each key lives in a demo (``obs/<key>`` or a demo-level dataset) and the camera
    datasets' shapes."""
    obs_group = demo.get("obs")
    if obs_group is None:
        raise ConfigError(f"{where} has no 'obs' group; expected obs/<key> arrays")
    obs = {k: tuple(obs_group[k].shape) for k in obs_group}
    top = sorted(k for k in demo if k not in ("obs", "next_obs") and not hasattr(demo[k], "keys"))
    fmap = (given or FeatureMap()).filled(default_feature_map(obs))
    fmap.cameras = {cam: _strip(k) for cam, k in fmap.cameras.items()}
    fmap.state = [_strip(k) for k in fmap.state]
    fmap.action = [_strip(k) for k in fmap.action]
    for name in ("reward", "success", "intervention"):
        if getattr(fmap, name):
            setattr(fmap, name, _strip(getattr(fmap, name)))
    fmap.check([*obs, *top], where)
    paths = {k: (f"obs/{k}" if k in obs else k) for k in fmap.keys()}
    image_shapes = {}
    for cam, key in fmap.cameras.items():
        ds = demo[paths[key]]
        if ds.ndim != 4 or ds.shape[-1] != 3 or ds.dtype != np.uint8:
            raise ConfigError(f"{where}: camera {cam!r} maps to {key!r} of shape {ds.shape} and dtype {ds.dtype}; "
                              "expected uint8 (T, H, W, 3) images")
        image_shapes[cam] = tuple(ds.shape)
    return fmap, {"paths": paths, "image_shapes": image_shapes}


def _strip(key: str) -> str:
    return key[len("obs/"):] if key.startswith("obs/") else key


def _episodes(data, demos: list[str], fmap: FeatureMap, keys: dict[str, Any], task: str, instruction: str,
              flip_images: bool) -> Iterator[Episode | Skipped]:
    """One episode per demo, read one demo at a time; a demo that cannot be converted yields Skipped."""
    shapes: dict[str, tuple[int, ...]] | None = None  # per-step shapes of the first episode, which all must share
    for name in demos:
        try:
            episode = _convert(data[name], name, fmap, keys["paths"], task, instruction, flip_images)
            episode.validate()
            theirs = {k: tuple(v.shape[1:]) for k, v in episode.step_arrays().items()}
            if shapes is not None and theirs != shapes:
                diff = sorted(k for k in theirs if theirs[k] != shapes.get(k))
                raise _BadDemo(f"{diff[0]} has per-step shape {theirs[diff[0]]}, earlier demos have "
                               f"{shapes.get(diff[0])}")
        except (_BadDemo, ConfigError, KeyError, IndexError, ValueError, TypeError, OSError) as exc:
            yield Skipped(name, str(exc).strip("'\"") or type(exc).__name__)
            continue
        shapes = shapes or theirs
        yield episode


def _convert(demo, name: str, fmap: FeatureMap, paths: dict[str, str], task: str, instruction: str,
             flip_images: bool) -> Episode:
    action = _read(demo, [paths[k] for k in fmap.action], np.float32)
    length = action.shape[0]
    if length == 0:
        raise _BadDemo("it has no steps")

    def column(key: str | None, mapped: bool = False) -> np.ndarray | None:
        if key is None or key not in demo:
            if mapped and key is not None:  # the map was checked against the first demo only
                raise _BadDemo(f"it has no {key}")
            return None
        values = np.asarray(demo[key][()])
        if values.shape[:1] != (length,):
            raise _BadDemo(f"{key} has {values.shape[0] if values.ndim else 0} steps, actions has {length}")
        return values

    state = _read(demo, [paths[k] for k in fmap.state], np.float32)
    if state.shape[0] != length:
        raise _BadDemo(f"the state keys have {state.shape[0]} steps, actions has {length}")
    images = {}
    for cam, key in fmap.cameras.items():
        frames = demo[paths[key]][()]
        if frames.shape[0] != length:
            raise _BadDemo(f"{paths[key]} has {frames.shape[0]} steps, actions has {length}")
        images[cam] = _frames(frames, fmap.image_size, flip_images)
    obs = {**{f"images/{cam}": frames for cam, frames in images.items()}, "state": state}

    # next_obs holds the observation after each action: its last row is the one after the episode's end
    next_paths = [f"next_obs/{_strip(paths[k])}" for k in fmap.state]
    next_paths += [f"next_obs/{key}" for key in fmap.cameras.values()]
    if all(p in demo and demo[p].shape[:1] == (length,) for p in next_paths):
        last = length - 1
        final = {"state": np.concatenate([np.asarray(demo[f"next_obs/{_strip(paths[k])}"][last], np.float32)
                                          .reshape(-1) for k in fmap.state])}
        for cam, key in fmap.cameras.items():
            final[f"images/{cam}"] = _frames(demo[f"next_obs/{key}"][last:last + 1], fmap.image_size, flip_images)[0]
    else:
        final = {k: v[-1] for k, v in obs.items()}

    rewards = column(paths[fmap.reward], mapped=True) if fmap.reward else column("rewards")
    dones = as_flags(column("dones"), length, "dones")
    sparse = column("rewards")
    if fmap.success:
        success = as_flags(column(paths[fmap.success], mapped=True), length, fmap.success)
    else:
        success = np.zeros(length, bool) if sparse is None else sparse.reshape(length, -1)[:, 0] > 0
    # Only the last step can be terminal in a store (steps follow every other one). robomimic files written with
    # done_mode 2 also set ``dones`` on every step where the task is solved, and done_mode 1 on every demo's end,
    # so neither says on its own whether the demo succeeded: the sparse reward does, where there is one.
    terminated = np.zeros(length, bool)
    terminated[-1] = dones[-1]
    truncated = np.zeros(length, bool)
    truncated[-1] = not dones[-1]
    number = int(name[len("demo_"):])
    reward = np.zeros(length, np.float32) if rewards is None else rewards.reshape(length, -1)[:, 0]
    return Episode(
        obs=obs, action=action, reward=reward.astype(np.float32),
        terminated=terminated, truncated=truncated, success=success,
        intervention=as_flags(column(paths[fmap.intervention], mapped=True) if fmap.intervention else None, length,
                              str(fmap.intervention)),
        policy_version=np.zeros(length, np.int32), final_obs=final,
        meta=EpisodeMeta(task=task, instruction=instruction,
                         success=bool(success.any() if fmap.success or sparse is not None else dones[-1]),
                         source="expert", seed=number),
    )


def _read(demo, paths: list[str], dtype) -> np.ndarray:
    """The datasets at ``paths`` as (T, D) rows concatenated in order; their lengths must agree."""
    parts = [np.asarray(demo[p][()]) for p in paths]
    lengths = {p.shape[0] if p.ndim else 0 for p in parts}
    if len(lengths) > 1:
        raise _BadDemo(f"{', '.join(paths)} have different step counts {sorted(lengths)}")
    return np.concatenate([p.reshape(p.shape[0], -1) for p in parts], axis=1).astype(dtype)


def _frames(frames: np.ndarray, size: int | None, flip: bool) -> np.ndarray:
    if flip:
        frames = np.ascontiguousarray(frames[:, ::-1])
    return resize_frames(frames, size)
