"""``robot-rl import-bag --map``: episodes out of rosbag2 bags (``ros2 bag record``, sqlite3 or MCAP, or our own
recorder) of any arm's standard topics, read through a YAML mapping of which topic is the state, cameras and action.

A mapping::

    state: {topic: /joint_states, joints: [j1, j2, j3], field: position}   # sensor_msgs/JointState
    cameras: {front: /camera/image_raw, wrist: /wrist/image_raw/compressed} # Image or CompressedImage
    action: {topic: /cmd}     # Float64MultiArray | Float32MultiArray | Twist | TwistStamped (linear xyz,
                              # angular xyz) | JointTrajectory (first point's positions) | JointState
    control_hz: 10
    episodes: {split: bag}    # or {split: marker, topic: /episode, type: bool|string} or {split: gap, seconds: 1}
    tolerance_s: 0.05         # default: one control period
    max_missing: 0.1          # skip an episode when a stream misses more than this fraction of its ticks
    image_size: 64            # optional square resize
    task: my_arm_pick         # default: the bag folder's name
    instruction: pick up the cube
    success: {topic: /success}          # optional std_msgs/Bool
    intervention: {topic: /teleop/active}  # optional std_msgs/Bool (default: no step is an intervention)

Alignment, per episode (P = 1/control_hz, h = min(P/2, tolerance_s)). A message's time is its header stamp, or
its bag receive time when it has no header (or a zero stamp).

- Ticks: a fixed grid n_k = t0 + k*P from the episode's first state stamp t0, each tick snapped onto the state
  stream: its time tau_k is the stamp of the state message nearest n_k within +-h. A state stream published at
  the control rate with jitter under h therefore aligns one-to-one. No state within +-h: tau_k = n_k, the
  previous state is reused and the tick counts as missing for the state. The last tick is the one nearest the
  episode's last state message; its observation is ``final_obs``.
- Cameras (and the intervention flag): the latest message stamped at or before tau_k. It counts for the tick if
  at most ``tolerance_s`` older than tau_k and not already used at the previous tick (a repeated frame is a drop,
  whatever its age); else the frame is reused and the tick counts as missing for that camera.
- Action of step k: the latest action message in (tau_k, tau_k+1], i.e. the command sent after observing tick k.
  None there: the previous action is repeated and the step counts as missing for the action.
- Episodes: one per bag; or between start/end markers (std_msgs/Bool true/false edges, or String "start" and
  "end"/"success"/"failure"); or runs of state messages split where they pause longer than ``seconds``. An
  episode never spans two bags. Success: a true on the ``success`` topic from the episode's start until the next
  episode's (or the bag's end), else the string marker's "success"/"failure", else false. Reward is 0 except 1 on
  the last step of a success, which is ``terminated``; other episodes end ``truncated``. No step is an
  intervention unless an ``intervention`` Bool topic is mapped (its latest value at each tick).
- A command received after an episode's first state stamp counts for it even when a recorder wrote it into the
  previous bag (ours splits headerless messages by arrival order), so the previous bag's actions are kept.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.core.errors import ConfigError
from robot_rl.core.schema import Episode, EpisodeMeta
from robot_rl.runtime.data.features import load_yaml, resize_frames
from robot_rl.runtime.data.writing import ImportSummary, Skipped, check_import_target, write_imported
from robot_rl.transport.bag import bag_paths, bag_topics
from robot_rl.transport.convert import compressed_to_image, msg_to_image

try:
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("importing bags needs rosbags: pip install 'robot-rl[ros]'") from exc

log = logging.getLogger(__name__)

_TYPESTORE = get_typestore(Stores.ROS2_JAZZY)  # every standard message type, so any standard topic decodes
JOINT_STATE = "sensor_msgs/msg/JointState"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
ACTION_TYPES = ("std_msgs/msg/Float64MultiArray", "std_msgs/msg/Float32MultiArray", "geometry_msgs/msg/Twist",
                "geometry_msgs/msg/TwistStamped", "trajectory_msgs/msg/JointTrajectory", JOINT_STATE)
BOOL, STRING = "std_msgs/msg/Bool", "std_msgs/msg/String"
JOINT_FIELDS = ("position", "velocity", "effort")
START_WORDS = {"start", "begin", "started"}
SUCCESS_WORDS = {"success", "succeeded", "succeed"}
FAILURE_WORDS = {"failure", "fail", "failed"}
END_WORDS = {"end", "stop", "done", "abort", "aborted", "reset"} | SUCCESS_WORDS | FAILURE_WORDS
_MISSING_SHOWN = 5  # tick times listed in a note before "..."


@dataclass
class BagMap:
    """Which topics of a bag are the state, cameras, action and episode boundaries (see the module's docstring)."""

    state_topic: str
    action_topic: str
    control_hz: float
    joints: list[str] | None = None
    joint_field: str = "position"
    cameras: dict[str, str] = field(default_factory=dict)
    action_joints: list[str] | None = None
    split: str = "bag"
    marker_topic: str | None = None
    marker_type: str | None = None
    gap_s: float = 1.0
    tolerance_s: float | None = None
    max_missing: float = 0.1
    image_size: int | None = None
    task: str | None = None
    instruction: str = ""
    success_topic: str | None = None
    intervention_topic: str | None = None
    source: str = "expert"

    @property
    def period_ns(self) -> int:
        return int(round(1e9 / self.control_hz))

    @property
    def tolerance_ns(self) -> int:
        return int(round(1e9 * self.tolerance_s)) if self.tolerance_s is not None else self.period_ns

    @classmethod
    def from_dict(cls, data: Any, where: str = "the bag mapping") -> BagMap:
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must be a mapping with state, action, control_hz, ...; got {data!r}")
        known = {"state", "cameras", "action", "control_hz", "episodes", "tolerance_s", "max_missing", "image_size",
                 "task", "instruction", "success", "intervention", "source"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where} has unknown keys {unknown}; expected some of {sorted(known)}")
        for key in ("state", "action", "control_hz"):
            if data.get(key) is None:
                raise ConfigError(f"{where} has no {key!r} (it is required)")
        state = _topic_entry(data["state"], "state", where, {"joints", "field"})
        action = _topic_entry(data["action"], "action", where, {"joints"})
        cams = data.get("cameras") or {}
        if not isinstance(cams, dict):
            raise ConfigError(f"{where}: 'cameras' must map camera names to topics, got {cams!r}")
        cameras = {}
        for name, entry in cams.items():
            if not isinstance(name, str) or not name or "/" in name:
                raise ConfigError(f"{where}: camera name {name!r} must be a non-empty string without '/'")
            cameras[name] = _topic_entry(entry, f"cameras.{name}", where, set())["topic"]
        hz = _number(data["control_hz"], "control_hz", where, low=0.0)
        tol = data.get("tolerance_s")
        bmap = cls(state_topic=state["topic"], action_topic=action["topic"], control_hz=hz, cameras=cameras,
                   joints=_names(state.get("joints"), "state.joints", where),
                   joint_field=state.get("field", "position"),
                   action_joints=_names(action.get("joints"), "action.joints", where),
                   tolerance_s=None if tol is None else _number(tol, "tolerance_s", where, low=0.0),
                   max_missing=_fraction(data.get("max_missing", 0.1), where),
                   task=None if data.get("task") is None else str(data["task"]),
                   instruction=str(data.get("instruction") or ""), source=str(data.get("source", "expert")))
        if bmap.joint_field not in JOINT_FIELDS:
            raise ConfigError(f"{where}: state.field must be one of {list(JOINT_FIELDS)}, got {bmap.joint_field!r}")
        size = data.get("image_size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
            raise ConfigError(f"{where}: image_size must be an integer >= 8, got {size!r}")
        bmap.image_size = size
        for key in ("success", "intervention"):
            if data.get(key) is not None:
                setattr(bmap, f"{key}_topic", _topic_entry(data[key], key, where, set())["topic"])
        episodes = data.get("episodes") or {"split": "bag"}
        if not isinstance(episodes, dict) or episodes.get("split") not in ("bag", "marker", "gap"):
            raise ConfigError(f"{where}: 'episodes' must be {{split: bag}}, {{split: marker, topic: ..., type: "
                              f"bool|string}} or {{split: gap, seconds: ...}}; got {episodes!r}")
        bmap.split = episodes["split"]
        allowed = {"bag": {"split"}, "marker": {"split", "topic", "type"}, "gap": {"split", "seconds"}}[bmap.split]
        if set(episodes) - allowed:
            raise ConfigError(f"{where}: episodes with split {bmap.split!r} takes only {sorted(allowed)}, got "
                              f"{sorted(episodes)}")
        if bmap.split == "marker":
            bmap.marker_topic = _topic_entry(episodes, "episodes", where, {"split", "type"})["topic"]
            bmap.marker_type = episodes.get("type")
            if bmap.marker_type not in (None, "bool", "string"):
                raise ConfigError(f"{where}: episodes.type must be 'bool' or 'string', got {bmap.marker_type!r}")
        elif bmap.split == "gap":
            bmap.gap_s = _number(episodes.get("seconds", 1.0), "episodes.seconds", where, low=0.0)
        EpisodeMeta(task="", instruction="", success=False, source=bmap.source)  # ConfigError on a bad source
        return bmap

    @classmethod
    def load(cls, path: str | Path) -> BagMap:
        return cls.from_dict(load_yaml(path, "the bag mapping"), where=f"the bag mapping {path}")

    def expected_types(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """Every mapped topic, what the mapping calls it and the message types it may have."""
        marker = {"bool": (BOOL,), "string": (STRING,), None: (BOOL, STRING)}[self.marker_type]
        wanted = [(self.state_topic, "state", (JOINT_STATE,)), (self.action_topic, "action", ACTION_TYPES),
                  *[(topic, f"camera {name}", IMAGE_TYPES) for name, topic in self.cameras.items()],
                  (self.marker_topic, "episode marker", marker), (self.success_topic, "success", (BOOL,)),
                  (self.intervention_topic, "intervention", (BOOL,))]
        return [w for w in wanted if w[0] is not None]

    def check(self, topics: dict[str, str], where: str) -> None:
        """ConfigError naming the first mapped topic the bag lacks or has with another type."""
        have = ", ".join(f"{t} ({m})" for t, m in sorted(topics.items()))
        for topic, what, types in self.expected_types():
            if topic not in topics:
                raise ConfigError(f"{where} has no topic {topic} (the mapping's {what}); it has: {have}")
            if topics[topic] not in types:
                raise ConfigError(f"the mapping's {what} topic {topic} is {topics[topic]} in {where}; expected "
                                  f"{' or '.join(types)}")


def _topic_entry(value: Any, name: str, where: str, extra: set[str]) -> dict[str, Any]:
    """A mapped topic as ``/topic`` or ``{topic: /topic, ...}``; returns the dict."""
    entry = {"topic": value} if isinstance(value, str) else value
    if not isinstance(entry, dict) or not isinstance(entry.get("topic"), str) or not entry["topic"].startswith("/"):
        raise ConfigError(f"{where}: {name!r} must be a topic (/name) or {{topic: /name}}, got {value!r}")
    unknown = sorted(set(entry) - {"topic", *extra})
    if unknown:
        raise ConfigError(f"{where}: {name!r} has unknown keys {unknown}; expected some of {sorted({'topic', *extra})}")
    return entry


def _names(value: Any, name: str, where: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {name} must be a non-empty list of joint names, got {value!r}")
    return list(value)


def _fraction(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"{where}: max_missing must be a fraction in [0, 1], got {value!r}")
    return float(value)


def _number(value: Any, name: str, where: str, low: float, high: float = float("inf")) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
        raise ConfigError(f"{where}: {name} must be a number in ({low:g}, {high:g}], got {value!r}")
    return float(value)


# ------------------------------------------------------------------------------------------ reading
def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _cdr_stamp(data: bytes | memoryview) -> int:
    """The header stamp of a CDR message whose first field is a std_msgs/Header, without decoding the rest (an
    image's pixels are only decoded for the ticks that use it)."""
    endian = "<" if data[1] & 1 else ">"  # the encapsulation header: CDR_LE is 00 01, CDR_BE 00 00
    sec, nanosec = struct.unpack_from(endian + "iI", data, 4)
    return sec * 1_000_000_000 + nanosec


def _joint_values(msg: Any, joints: list[str], field_name: str) -> np.ndarray | None:
    """The ``joints`` of a JointState in order, or None when it lacks one (another publisher's joints)."""
    names = list(msg.name)
    values = np.asarray(getattr(msg, field_name), dtype=np.float64)
    if len(values) != len(names) or not set(joints) <= set(names):
        return None
    return values[[names.index(j) for j in joints]]


class _Stream:
    """One mapped topic's messages in a bag: times (ns) and what each message became, in time order."""

    def __init__(self) -> None:
        self.times: list[int] | np.ndarray = []
        self.items: list[Any] = []

    def add(self, t_ns: int, item: Any) -> None:
        self.times.append(t_ns)
        self.items.append(item)

    def sort(self) -> None:
        order = np.argsort(np.asarray(self.times, dtype=np.int64), kind="stable")
        self.times = np.asarray(self.times, dtype=np.int64)[order]
        self.items = [self.items[i] for i in order]


def _action_vector(msg: Any, msgtype: str, joints: list[str] | None) -> np.ndarray | None:
    if msgtype.startswith("std_msgs/"):
        return np.asarray(msg.data, dtype=np.float64)
    if msgtype.startswith("geometry_msgs/"):
        twist = msg.twist if msgtype.endswith("Stamped") else msg
        return np.array([twist.linear.x, twist.linear.y, twist.linear.z,
                         twist.angular.x, twist.angular.y, twist.angular.z])
    if msgtype == JOINT_STATE:
        return _joint_values(msg, joints or list(msg.name), "position")
    if not msg.points:  # a JointTrajectory that only stops the arm
        return None
    values = np.asarray(msg.points[0].positions, dtype=np.float64)
    names = list(msg.joint_names)
    if joints is None or len(values) != len(names):
        return values
    return values[[names.index(j) for j in joints]] if set(joints) <= set(names) else None


def _read_bag(bag: Path, bmap: BagMap, joints: list[str]) -> dict[str, _Stream]:
    """Every mapped topic's messages in ``bag``, decoded (images kept as CDR until a tick uses them)."""
    roles: dict[str, list[str]] = {}
    for key, topic in [("state", bmap.state_topic), ("action", bmap.action_topic), ("marker", bmap.marker_topic),
                       ("success", bmap.success_topic), ("intervention", bmap.intervention_topic),
                       *[(f"camera {c}", t) for c, t in bmap.cameras.items()]]:
        if topic is not None:
            roles.setdefault(topic, []).append(key)
    streams = {key: _Stream() for keys in roles.values() for key in keys}
    try:
        with Reader(bag) as reader:
            conns = [c for c in reader.connections if c.topic in roles]
            for conn, t_ns, data in reader.messages(connections=conns):
                for key in roles[conn.topic]:
                    _add_message(streams[key], key, conn.msgtype, t_ns, data, bmap, joints)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - rosbags raises its own error types, and CDR decoding others
        raise ConfigError(f"cannot read the bag {bag}: {type(exc).__name__}: {exc}") from exc
    for stream in streams.values():
        stream.sort()
    return streams


def _add_message(stream: _Stream, key: str, msgtype: str, t_ns: int, data: bytes, bmap: BagMap,
                 joints: list[str]) -> None:
    if key.startswith("camera"):
        stream.add(_cdr_stamp(data) or t_ns, (msgtype, data))
        return
    msg = _TYPESTORE.deserialize_cdr(data, msgtype)
    header = getattr(msg, "header", None)
    stamp = (_stamp_ns(header.stamp) if header is not None else 0) or t_ns
    if key == "state":
        values = _joint_values(msg, joints, bmap.joint_field)
        if values is not None:
            stream.add(stamp, values)
    elif key == "action":
        values = _action_vector(msg, msgtype, bmap.action_joints)
        if values is not None:
            stream.add(stamp, values)
    elif key == "marker":
        stream.add(stamp, ("on" if msg.data else "off") if msgtype == BOOL else str(msg.data).strip().lower())
    else:
        stream.add(stamp, bool(msg.data))


def _resolve_joints(bags: list[Path], bmap: BagMap, where: str) -> list[str]:
    """The state's joints (the mapping's, or the first message's), checked against the bag's JointState names
    and the action's joint names before anything is written."""
    seen: list[str] = []
    checked_action = bmap.action_joints is None
    found = None
    for bag in bags:
        try:
            with Reader(bag) as reader:
                conns = [c for c in reader.connections if c.topic in (bmap.state_topic, bmap.action_topic)]
                for n, (conn, _, data) in enumerate(reader.messages(connections=conns)):
                    msg = _TYPESTORE.deserialize_cdr(data, conn.msgtype)
                    if conn.topic == bmap.action_topic and not checked_action and conn.msgtype in (
                            JOINT_STATE, "trajectory_msgs/msg/JointTrajectory"):
                        names = list(msg.name if conn.msgtype == JOINT_STATE else msg.joint_names)
                        missing = [j for j in bmap.action_joints if j not in names]
                        if missing:
                            raise ConfigError(f"the action's joints {missing} are not in the {conn.topic} messages "
                                              f"of {where}; they name {names}")
                        checked_action = True
                    if conn.topic == bmap.state_topic and found is None:
                        names = list(msg.name)
                        seen += [j for j in names if j not in seen]
                        wanted = bmap.joints or names
                        if set(wanted) <= set(names):
                            if len(getattr(msg, bmap.joint_field)) != len(names):
                                raise ConfigError(f"the {bmap.state_topic} messages of {where} have no "
                                                  f"{bmap.joint_field} values for their joints {names}")
                            found = list(wanted)
                    if found is not None and (checked_action or n > 200):
                        return found
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - rosbags raises its own error types
            raise ConfigError(f"cannot read the bag {bag}: {type(exc).__name__}: {exc}") from exc
        if found is not None:
            return found
    if not seen:
        raise ConfigError(f"{where} has no message on the state topic {bmap.state_topic}")
    missing = [j for j in (bmap.joints or []) if j not in seen]
    raise ConfigError(f"the state's joints {missing} are not in the {bmap.state_topic} messages of {where}; "
                      f"they name {seen}")


# ----------------------------------------------------------------------------------------- episodes
@dataclass
class _Window:
    name: str
    start: int
    end: int
    success: bool | None = None  # what a string marker said
    until: int = 2**62  # the next episode's start: a success flag sent after the end still counts for this one


def _windows(bag: Path, streams: dict[str, _Stream], bmap: BagMap, notes: list[str]) -> list[_Window]:
    """The episodes of one bag as time windows, by the mapping's split."""
    times = streams["state"].times
    if bmap.split == "bag":
        return [_Window(bag.name, -(2**62), 2**62)]
    if bmap.split == "gap":
        if len(times) == 0:
            return []
        cuts = np.flatnonzero(np.diff(times) > bmap.gap_s * 1e9)
        starts, ends = [0, *(cuts + 1)], [*cuts, len(times) - 1]
        return [_Window(f"{bag.name} #{i}", int(times[s]), int(times[e])) for i, (s, e) in enumerate(zip(starts, ends))]
    windows: list[_Window] = []
    start, unknown = None, set()
    marker = streams["marker"]
    for t, word in zip(marker.times, marker.items):
        if word == "on" and start is not None:
            continue  # a Bool repeated while the episode runs: only its edges count
        if word == "off" and start is None:
            continue
        if word in START_WORDS or word == "on":
            if start is not None:  # a new start ends the episode in progress, with no result
                windows.append(_Window(f"{bag.name} #{len(windows)}", start, int(t)))
            start = int(t)
        elif word in END_WORDS or word == "off":
            if start is not None:
                result = True if word in SUCCESS_WORDS else False if word in FAILURE_WORDS else None
                windows.append(_Window(f"{bag.name} #{len(windows)}", start, int(t), result))
            start = None
        else:
            unknown.add(word)
    if unknown:
        notes.append(f"{bag.name}: ignored episode markers {sorted(unknown)} (expected start, end, success, failure)")
    if start is not None:
        notes.append(f"{bag.name}: the last episode has no end marker; imported up to the end of the bag")
        windows.append(_Window(f"{bag.name} #{len(windows)}", start, 2**62))
    return windows


def _nearest_state(times: np.ndarray, nominal: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """For each nominal tick: the index of the state message stamped nearest it, and whether that is within
    +-half (and not the previous tick's message)."""
    right = np.clip(np.searchsorted(times, nominal), 0, len(times) - 1)
    left = np.clip(right - 1, 0, len(times) - 1)
    pick = np.where(np.abs(times[left] - nominal) <= np.abs(times[right] - nominal), left, right)
    fresh = np.abs(times[pick] - nominal) <= half
    fresh[1:] &= pick[1:] != pick[:-1]
    latest = np.clip(np.searchsorted(times, nominal, side="right") - 1, 0, len(times) - 1)
    return np.where(fresh, pick, latest), fresh


def _latest_at(times: np.ndarray, ticks: np.ndarray, tolerance: int) -> tuple[np.ndarray, np.ndarray]:
    """For each tick: the index of the latest message stamped at or before it (the first one when none is), and
    whether it counts (at most ``tolerance`` old, not the previous tick's)."""
    idx = np.searchsorted(times, ticks, side="right") - 1
    fresh = (idx >= 0) & (ticks - times[np.clip(idx, 0, None)] <= tolerance)
    fresh[1:] &= idx[1:] != idx[:-1]
    return np.clip(idx, 0, None), fresh


def _decode_image(msgtype: str, data: bytes) -> np.ndarray:
    msg = _TYPESTORE.deserialize_cdr(data, msgtype)
    return compressed_to_image(msg) if msgtype.endswith("CompressedImage") else msg_to_image(msg)


def _missing_note(stream: str, fresh: np.ndarray, ticks: np.ndarray, t0: int) -> str:
    gone = np.flatnonzero(~fresh)
    shown = ", ".join(f"{(ticks[i] - t0) / 1e9:.2f} s" for i in gone[:_MISSING_SHOWN])
    more = ", ..." if len(gone) > _MISSING_SHOWN else ""
    return f"{stream} missed {len(gone)} of {len(fresh)} ticks (t={shown}{more})"


def _build(window: _Window, streams: dict[str, _Stream], bmap: BagMap, task: str) -> tuple[Episode | Skipped, str]:
    """One episode of ``window``, or why it is skipped; and a remark on the ticks each stream missed."""
    st = streams["state"]
    inside = np.flatnonzero((st.times >= window.start) & (st.times <= window.end))
    if len(inside) < 2:
        return Skipped(window.name, f"{len(inside)} state messages on {bmap.state_topic}, need at least 2"), ""
    times = st.times[inside]
    period, t0 = bmap.period_ns, int(times[0])
    count = int(round((times[-1] - t0) / period))  # steps; the tick after the last action is the final one
    if count < 1:
        return Skipped(window.name, f"shorter than one control period ({(times[-1] - t0) / 1e9:.3f} s)"), ""
    nominal = t0 + np.arange(count + 1, dtype=np.int64) * period
    pick, state_fresh = _nearest_state(times, nominal, min(period // 2, bmap.tolerance_ns))
    ticks = np.where(state_fresh, times[pick], nominal)
    states = np.stack([st.items[inside[i]] for i in pick]).astype(np.float32)
    fresh = {"state": state_fresh}
    obs: dict[str, np.ndarray] = {"state": states}
    try:
        for cam in bmap.cameras:
            stream = streams[f"camera {cam}"]
            if len(stream.times) == 0:
                return Skipped(window.name, f"no image on {bmap.cameras[cam]}"), ""
            idx, fresh[f"camera {cam}"] = _latest_at(stream.times, ticks, bmap.tolerance_ns)
            decoded = {i: _decode_image(*stream.items[i]) for i in np.unique(idx)}
            obs[f"images/{cam}"] = resize_frames(np.stack([decoded[i] for i in idx]), bmap.image_size)
    except (ConfigError, ValueError) as exc:
        return Skipped(window.name, f"images: {exc}"), ""
    act = streams["action"]
    if len(act.times) == 0:
        return Skipped(window.name, f"no action on {bmap.action_topic}"), ""
    last = np.searchsorted(act.times, ticks[1:], side="right") - 1
    action_fresh = (last >= 0) & (act.times[np.clip(last, 0, None)] > ticks[:-1])
    chosen = np.empty(count, dtype=np.int64)
    for k in range(count):  # a step with no new command repeats the previous one (the arm holds it)
        chosen[k] = last[k] if action_fresh[k] else chosen[k - 1] if k else max(int(last[k]), 0)
    sizes = sorted({len(act.items[i]) for i in chosen})
    if len(sizes) != 1:
        return Skipped(window.name, f"action messages on {bmap.action_topic} have {sizes} values"), ""
    fresh["action"] = action_fresh
    notes, worst = [], None
    for stream_name, ok in fresh.items():
        if ok.all():
            continue
        at = ticks if len(ok) == len(ticks) else ticks[1:]
        notes.append(_missing_note(stream_name, ok, at, t0))
        if (~ok).mean() > bmap.max_missing and worst is None:
            worst = f"{notes[-1]}, more than max_missing {bmap.max_missing:g}"
    if worst is not None:
        return Skipped(window.name, worst), ""
    success = _success(window, streams, bmap)
    flags = np.zeros(count, dtype=bool)
    end = flags.copy()
    end[-1] = True
    intervention = flags
    if bmap.intervention_topic is not None and len(streams["intervention"].times):
        iv = streams["intervention"]
        idx = np.searchsorted(iv.times, ticks[:-1], side="right") - 1
        intervention = np.array([i >= 0 and iv.items[i] for i in idx], dtype=bool)
    reward = np.zeros(count, dtype=np.float32)
    reward[-1] = float(success)
    episode = Episode(
        obs={k: v[:-1] for k, v in obs.items()}, action=np.stack([act.items[i] for i in chosen]).astype(np.float32),
        reward=reward, terminated=end & success, truncated=end & (not success), success=end & success,
        intervention=intervention, policy_version=np.zeros(count, dtype=np.int32),
        final_obs={k: v[-1] for k, v in obs.items()},
        meta=EpisodeMeta(task=task, instruction=bmap.instruction, success=success, source=bmap.source))
    return episode, "; ".join(notes)


def _success(window: _Window, streams: dict[str, _Stream], bmap: BagMap) -> bool:
    if bmap.success_topic is not None:
        s = streams["success"]
        return any(ok for t, ok in zip(s.times, s.items) if window.start <= t < window.until)
    return bool(window.success)


def _episodes(bags: list[Path], bmap: BagMap, joints: list[str], task: str,
              notes: list[str]) -> Iterator[Episode | Skipped]:
    number, previous = 0, None
    for bag in bags:
        streams = _read_bag(bag, bmap, joints)
        current = streams["action"]
        if previous is not None and len(previous.times):
            streams["action"] = _Stream()
            streams["action"].times = [*previous.times, *current.times]
            streams["action"].items = [*previous.items, *current.items]
            streams["action"].sort()
        previous = current
        windows = _windows(bag, streams, bmap, notes)
        if not windows:
            what = f"no start marker on {bmap.marker_topic}" if bmap.split == "marker" else \
                f"no message on {bmap.state_topic}"
            notes.append(f"{bag.name}: no episode in it ({what})")
        for window, after in zip(windows, windows[1:]):
            window.until = after.start
        for window in windows:
            item, note = _build(window, streams, bmap, task)
            if note:
                notes.append(f"episode {number} ({window.name}): {note}")
            number += 1
            yield item


def import_mapped_bag(bag: str | Path, mapping: str | Path | dict[str, Any] | BagMap, out: str | Path, *,
                      append: bool = False, overwrite: bool = False, progress: bool = True) -> ImportSummary:
    """Import every episode of ``bag`` (a rosbag2 bag, or a folder of them) into the store ``out`` through
    ``mapping`` (a YAML file or the same dict). The mapping is checked against the bag's topics, types and joint
    names before anything is written; ConfigError names what does not match."""
    bmap = mapping if isinstance(mapping, BagMap) else (
        BagMap.from_dict(mapping) if isinstance(mapping, dict) else BagMap.load(mapping))
    check_import_target(out, append, overwrite)
    bags = bag_paths(bag)
    where = f"the bag {bag}" if len(bags) == 1 else f"the bags in {bag}"
    bmap.check(bag_topics(bags), where)
    joints = _resolve_joints(bags, bmap, where)
    task = bmap.task or Path(bag).resolve().name
    notes: list[str] = []
    summary = write_imported(_episodes(bags, bmap, joints, task, notes), out, str(bag), append=append,
                             overwrite=overwrite, total=len(bags) if bmap.split == "bag" else None, progress=progress)
    summary.notes.extend(notes)
    return summary
