"""A robot's topics recorded as rosbag2 (MCAP) with ``rosbags``, and read back; no ROS install needed.

A recording is a folder of bags, a new one at each episode's first step report, so a recorder that is
killed loses at most the episode in progress (a bag is readable only once closed). Messages are kept in
CDR exactly as ROS 2 sends them, so ``ros2 bag`` reads these bags, and bags that ``ros2 bag record`` made
of the same topics read back here the same way. Needs the ``ros`` extra.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from robot_rl.core.errors import ConfigError
from robot_rl.transport.base import QoS, ServiceClient, Transport
from robot_rl.transport.convert import RobotTopics
from robot_rl.transport.dds import from_cdr, to_cdr
from robot_rl.transport.messages import (
    Bool,
    CompressedImage,
    Float64MultiArray,
    Image,
    JointState,
    Joy,
    Message,
    String,
)
from robot_rl.transport.observations import stamp_key

try:
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("recording and reading bags needs rosbags: pip install 'robot-rl[ros]'") from exc

log = logging.getLogger(__name__)

MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.ros_type: cls for cls in (Bool, String, Float64MultiArray, JointState, Image, CompressedImage, Joy)}
"""The ROS 2 types a bag's messages are decoded into; other types are skipped."""

_TYPESTORE = get_typestore(Stores.ROS2_JAZZY)  # message definitions and hashes for the bag's schemas
_ROLLOVER_LAG_S = 0.5  # messages wait this long before being written, so a step's images follow its report


@dataclass
class RecorderConfig:
    """What :class:`BagRecorder` records."""

    topics: RobotTopics = field(default_factory=RobotTopics)
    """The robot's topics."""
    cameras: list[str] | None = None
    """Cameras to record (None: ask the robot's episode service which it has)."""
    sensor_qos: str = "reliable"
    """QoS to subscribe to cameras and joint states with: ``reliable`` (what env_bridge offers) or
    ``best_effort`` (for drivers that publish with the sensor-data profile, which a reliable reader misses)."""
    split_episodes: bool = True
    """Start a new bag at each episode, so a crash loses at most the episode in progress."""

    def validate(self) -> None:
        if self.sensor_qos not in ("reliable", "best_effort"):
            raise ConfigError(f"sensor_qos must be 'reliable' or 'best_effort', got {self.sensor_qos!r}")


class BagRecorder:
    """Records a robot's topics from ``transport`` into ``out`` (a new folder) until :meth:`close`."""

    def __init__(self, transport: Transport, out: str | Path, config: RecorderConfig | None = None,
                 spec_timeout_s: float = 10.0) -> None:
        self.cfg = config or RecorderConfig()
        self.cfg.validate()
        self.out = Path(out)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise ConfigError(f"{self.out} exists and is not an empty folder; record into a new one")
        topics = self.cfg.topics
        cameras = self.cfg.cameras
        if cameras is None:
            client = ServiceClient(transport, topics.episode)
            try:
                cameras = list(client.call({"op": "spec"}, timeout=spec_timeout_s).get("cameras", []))
            finally:
                client.close()
        self.out.mkdir(parents=True, exist_ok=True)
        sensor = QoS(reliable=self.cfg.sensor_qos == "reliable", depth=256)
        own = QoS(reliable=True, depth=256)  # deep queues: a recorder must not drop what it is fast enough for
        self.table: list[tuple[str, type[Message], QoS]] = [
            *[(topics.image(c), topics.image_type, sensor) for c in cameras],
            (topics.state, JointState, own),
            (topics.joint_states, JointState, QoS(reliable=False, depth=256)),  # env_bridge sends it best-effort
            (topics.step, String, own), (topics.action, Float64MultiArray, own),
            (topics.reward, Float64MultiArray, own), (topics.teleop_action, Float64MultiArray, own),
            (topics.takeover, Bool, own), (topics.estop, Bool, own)]
        self.counts: Counter[str] = Counter()
        self.bags: list[Path] = []
        self.episodes = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: Writer | None = None
        self._connections: dict[str, object] = {}
        self._bag_has_episode = False
        self._error: Exception | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bag-writer", daemon=True)
        self._thread.start()
        self._subs = []
        try:
            for topic, cls, qos in self.table:
                self._subs.append(transport.subscribe(topic, cls, lambda m, topic=topic: self._received(topic, m),
                                                      qos))
        except Exception:
            self._stop()
            raise

    def _received(self, topic: str, msg: Message) -> None:
        if self._error is None:  # once writing failed, do not pile up what can no longer be written
            self._queue.put((topic, msg, time.time_ns()))

    @property
    def error(self) -> Exception | None:
        """Why recording stopped, if it failed (the bags closed before then stay readable)."""
        return self._error

    # ----------------------------------------------------------------------------------- writing
    def _open_bag(self) -> None:
        path = self.out / f"bag_{len(self.bags):04d}"
        self._writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections.clear()
        self.bags.append(path)

    def _close_bag(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _write(self, topic: str, msg: Message, t_ns: int) -> None:
        if self._writer is None:
            self._open_bag()
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._connections[topic] = self._writer.add_connection(topic, msg.ros_type, typestore=_TYPESTORE)
        self._writer.write(conn, t_ns, to_cdr(msg))
        self.counts[topic] += 1

    def _run(self) -> None:
        pending: deque[tuple[str, Message, int]] = deque()
        try:
            while not (self._closed.is_set() and self._queue.empty()):
                try:
                    item = self._queue.get(timeout=0.1)
                except queue.Empty:
                    item = None
                if item is not None:
                    start = self._episode_start(item)
                    if start is not None:
                        self._roll_over(pending, start)
                    pending.append(item)
                # the lag runs on receive times, so a writer that falls behind still sees a step's report
                # before it writes that step's images
                newest = item[2] if item is not None else time.time_ns()
                horizon = newest - int(_ROLLOVER_LAG_S * 1e9)
                while pending and (pending[0][2] < horizon or self._closed.is_set()):
                    self._write(*pending.popleft())
            while pending:
                self._write(*pending.popleft())
            self._close_bag()
        except Exception as exc:  # noqa: BLE001 - reported by close() and `error`; closed bags stay readable
            self._error = exc
            log.error("bag recording into %s failed: %s: %s", self.out, type(exc).__name__, exc)
            if self._writer is not None:
                try:
                    self._writer.close()
                except Exception:  # noqa: BLE001 - already failing; the first error is the one reported
                    pass
                self._writer = None

    def _episode_start(self, item: tuple[str, Message, int]) -> tuple[int, ...] | None:
        """The stamp of a new episode's first step, when ``item`` is that step's report."""
        topic, msg, _ = item
        if topic != self.cfg.topics.step:
            return None
        try:
            report = json.loads(msg.data)
        except ValueError:
            return None
        if not isinstance(report, dict) or report.get("step") != 0:
            return None
        return tuple(report.get("stamp") or ())

    def _roll_over(self, pending: deque, start: tuple[int, ...]) -> None:
        """A new episode's first report (its step stamped ``start``): earlier messages close the current bag
        (when it already holds an episode); messages stamped at or after ``start`` begin the next one."""
        self.episodes += 1
        if not (self.cfg.split_episodes and self._bag_has_episode):
            self._bag_has_episode = True
            return
        later: list[tuple[str, Message, int]] = []
        for item in pending:
            header = getattr(item[1], "header", None)
            stamp = None if header is None else stamp_key(header.stamp)
            if start and stamp is not None and stamp >= start:
                later.append(item)
            else:
                self._write(*item)
        pending.clear()
        self._close_bag()
        self._open_bag()
        self._bag_has_episode = True
        pending.extend(later)

    def _stop(self) -> None:
        for sub in self._subs:
            sub.close()
        self._closed.set()
        self._thread.join()  # no timeout: returning before the last bag is closed would lose it

    def close(self) -> dict:
        """Stop, write what was received, close the bag; returns what was recorded."""
        self._stop()
        if self._error is not None:
            raise ConfigError(f"recording into {self.out} failed: {self._error}") from self._error
        return {"out": str(self.out), "bags": len(self.bags), "episodes": self.episodes,
                "messages": dict(self.counts)}


# ------------------------------------------------------------------------------------------ reading
def bag_paths(path: str | Path) -> list[Path]:
    """The bags of ``path``: itself when it is a rosbag2 bag, else the bags in it, in name order. A bag
    folder without ``metadata.yaml`` (its recorder was killed) is skipped with a warning."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"no bag at {path}: expected a rosbag2 folder (with metadata.yaml) or a folder of them")
    if (path / "metadata.yaml").is_file():
        return [path]
    bags = []
    for sub in sorted(p for p in path.iterdir() if p.is_dir()):
        if (sub / "metadata.yaml").is_file():
            bags.append(sub)
        elif any(sub.glob("*.mcap")) or any(sub.glob("*.db3")):
            log.warning("skipping %s: it has no metadata.yaml (its recording was not closed)", sub)
    if not bags:
        raise ConfigError(f"no rosbag2 bag in {path}: expected metadata.yaml in it or in its subfolders")
    return bags


def _bags(path: str | Path | list[Path]) -> list[Path]:
    return list(path) if isinstance(path, list) else bag_paths(path)


def bag_topics(path: str | Path | list[Path]) -> dict[str, str]:
    """Every topic in the bags of ``path`` (see :func:`bag_paths`, or a list of bags) and its ROS 2 type."""
    topics: dict[str, str] = {}
    for bag in _bags(path):
        try:
            with Reader(bag) as reader:
                topics.update({c.topic: c.msgtype for c in reader.connections})
        except Exception as exc:  # noqa: BLE001 - rosbags raises its own error types
            raise ConfigError(f"cannot read the bag {bag}: {type(exc).__name__}: {exc}") from exc
    return topics


def read_bag(path: str | Path | list[Path], topics: set[str] | None = None) -> Iterator[tuple[str, Message, int]]:
    """(topic, message, receive time in ns) of every message of a known type in ``path`` (see
    :func:`bag_paths`, or a list of bags), bag by bag in time order; a message that does not decode is
    logged and skipped."""
    for bag in _bags(path):
        try:
            reader = Reader(bag)
            reader.open()
        except Exception as exc:  # noqa: BLE001 - rosbags raises its own error types
            raise ConfigError(f"cannot read the bag {bag}: {type(exc).__name__}: {exc}") from exc
        try:
            wanted = [c for c in reader.connections if c.msgtype in MESSAGE_TYPES
                      and (topics is None or c.topic in topics)]
            if not wanted:
                continue
            for conn, t_ns, data in reader.messages(connections=wanted):
                try:
                    msg = from_cdr(data, MESSAGE_TYPES[conn.msgtype])
                except ConfigError as exc:
                    log.error("skipping a message on %s in %s: %s", conn.topic, bag, exc)
                    continue
                yield conn.topic, msg, t_ns
        finally:
            reader.close()
