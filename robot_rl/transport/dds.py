"""ROS 2 wire-compatible DDS backend on cyclonedds (no ROS install needed): a node using it talks to
rclpy/rclcpp nodes on the same domain.

ROS 2's wire rules, which this module follows: topic ``/joint_states`` is DDS topic ``rt/joint_states``;
type ``sensor_msgs/msg/JointState`` is DDS type ``sensor_msgs::msg::dds_::JointState_``, an unkeyed
final struct serialised as XCDR1; QoS profiles map to reliability and keep-last depth. Image bytes are
declared as ``bytes``: on the wire the same as ROS's ``sequence<uint8>``, written in one copy.

Needs the ``ros`` extra (``pip install 'robot-rl[ros]'``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from robot_rl.core.errors import ConfigError
from robot_rl.transport.base import (
    RELIABLE,
    CallbackWorker,
    M,
    Publisher,
    QoS,
    Subscription,
    Transport,
    TransportError,
    check_topic,
)
from robot_rl.transport.messages import Message, primitive_dtype

try:
    from cyclonedds import core as dds_core
    from cyclonedds.domain import Domain, DomainParticipant
    from cyclonedds.idl import annotations as idl_annotations
    from cyclonedds.idl import make_idl_struct
    from cyclonedds.idl import types as idl_types
    from cyclonedds.idl._machinery import BytesMachine, StructMachine
    from cyclonedds.internal import InvalidSample
    from cyclonedds.pub import DataWriter
    from cyclonedds.qos import Policy, Qos
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic
    from cyclonedds.util import duration
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the DDS transport needs cyclonedds: pip install 'robot-rl[ros]'") from exc

log = logging.getLogger(__name__)

_IDL_PRIMITIVES = {"bool": bool, "uint8": idl_types.uint8, "int32": idl_types.int32, "uint32": idl_types.uint32,
                   "float32": idl_types.float32, "float64": idl_types.float64}


class _WireType:
    """A message class and the cyclonedds struct that carries it, with conversions both ways."""

    _cache: dict[type[Message], _WireType] = {}

    def __init__(self, cls: type[Message]) -> None:
        self.cls = cls
        pkg, _, name = cls.ros_type.split("/")
        fields: dict[str, Any] = {}
        self.convert: dict[str, tuple[str, Any]] = {}
        for fname, kind in cls.wire.items():
            if isinstance(kind, type) and issubclass(kind, Message):
                sub = _WireType.of(kind)
                fields[fname], self.convert[fname] = sub.idl, ("msg", sub)
            elif isinstance(kind, list):
                sub = _WireType.of(kind[0])
                fields[fname], self.convert[fname] = idl_types.sequence[sub.idl], ("msgs", sub)
            elif kind == "string":
                fields[fname], self.convert[fname] = str, ("plain", None)
            elif kind == "bytes":  # declared as ROS declares it; encoded by the fast path (see below)
                fields[fname], self.convert[fname] = idl_types.sequence[idl_types.uint8], ("bytes", None)
            elif kind == "string[]":
                fields[fname], self.convert[fname] = idl_types.sequence[str], ("strings", None)
            elif kind.endswith("[]"):
                prim = kind[:-2]
                fields[fname] = idl_types.sequence[_IDL_PRIMITIVES[prim]]
                self.convert[fname] = ("array", primitive_dtype(prim))
            else:
                fields[fname], self.convert[fname] = _IDL_PRIMITIVES[kind], ("plain", None)
        self.typename = f"{pkg}::msg::dds_::{name}_"
        self.idl = idl_annotations.final(make_idl_struct(f"{name}_", self.typename, fields))
        self._fast_bytes([f for f, (how, _) in self.convert.items() if how == "bytes"])

    def _fast_bytes(self, names: list[str]) -> None:
        """Encode ``sequence<uint8>`` fields with cyclonedds' bytes machine: identical wire bytes (uint32
        length, then the raw octets) in one copy instead of one struct.pack per element, while the type
        description that discovery shares still says ``sequence<uint8>`` as ROS's does. Relies on
        cyclonedds 11's machine layout; a test compares the bytes with the element-wise encoding."""
        if not names:
            return
        idl = self.idl.__idl__
        idl.populate()
        for machine in (idl.v1_machine, idl.v2_machine):
            if not isinstance(machine, StructMachine):
                raise TransportError(f"unexpected cyclonedds machine {type(machine).__name__} for {self.typename}")
            for name in names:
                machine.members_machines[name] = BytesMachine()

    @classmethod
    def of(cls, msg_cls: type[Message]) -> _WireType:
        if msg_cls not in cls._cache:
            cls._cache[msg_cls] = _WireType(msg_cls)
        return cls._cache[msg_cls]

    def to_wire(self, msg: Message) -> Any:
        values = {}
        for fname, (how, sub) in self.convert.items():
            value = getattr(msg, fname)
            if how == "msg":
                value = sub.to_wire(value)
            elif how == "msgs":
                value = [sub.to_wire(v) for v in value]
            elif how == "array":
                value = np.asarray(value, dtype=sub).tolist()
            elif how == "bytes":
                value = bytes(value)
            elif how == "strings":
                value = list(value)
            values[fname] = value
        return self.idl(**values)

    def from_wire(self, sample: Any) -> Message:
        values = {}
        for fname, (how, sub) in self.convert.items():
            value = getattr(sample, fname)
            if how == "msg":
                value = sub.from_wire(value)
            elif how == "msgs":
                value = [sub.from_wire(v) for v in value]
            elif how == "array":
                value = np.asarray(value, dtype=sub)
            elif how == "strings":
                value = list(value)
            values[fname] = value
        return self.cls(**values)


def to_cdr(msg: Message) -> bytes:
    """``msg`` serialised as ROS 2 stores and sends it: XCDR1 with its 4-byte encapsulation header (what
    rosbag2 keeps per message and ``rclpy.serialization.deserialize_message`` reads)."""
    return _WireType.of(type(msg)).to_wire(msg).serialize(use_version_2=False)


def from_cdr(data: bytes | memoryview, msg_type: type[M]) -> M:
    """Inverse of :func:`to_cdr`; ConfigError names the type when the bytes are not such a message."""
    wire = _WireType.of(msg_type)
    try:
        return wire.from_wire(wire.idl.deserialize(bytes(data)))
    except Exception as exc:  # noqa: BLE001 - cyclonedds raises assorted errors on bad bytes
        raise ConfigError(f"{len(data)} bytes are not a serialised {msg_type.ros_type}: {type(exc).__name__}: {exc}") \
            from exc


def dds_topic_name(topic: str) -> str:
    """ROS 2 topic name -> DDS topic name (``/joint_states`` -> ``rt/joint_states``)."""
    return "rt" + check_topic(topic)


def cyclone_config(interface: str | None = None, peers: list[str] | None = None) -> str | None:
    """Cyclone XML restricting traffic to ``interface`` with unicast ``peers`` (None: Cyclone's defaults,
    or ``$CYCLONEDDS_URI``). ``interface="lo", peers=["127.0.0.1"]`` keeps a test on loopback with no
    multicast."""
    if interface is None and not peers:
        return None
    parts = ["<CycloneDDS><Domain><General>"]
    if interface:
        parts.append(f'<Interfaces><NetworkInterface name="{interface}"/></Interfaces>')
    if peers:
        parts.append("<AllowMulticast>false</AllowMulticast>")
    parts.append("</General>")
    if peers:
        parts.append("<Discovery><ParticipantIndex>auto</ParticipantIndex><MaxAutoParticipantIndex>100"
                     "</MaxAutoParticipantIndex><Peers>")
        parts.extend(f'<Peer address="{p}"/>' for p in peers)
        parts.append("</Peers></Discovery>")
    parts.append("</Domain></CycloneDDS>")
    return "".join(parts)


_DOMAINS: dict[int, Any] = {}
_DOMAINS_LOCK = threading.Lock()


def _domain(domain_id: int, config: str | None) -> None:
    """Cyclone allows one configured Domain per id and process: create it once, keep it alive."""
    with _DOMAINS_LOCK:
        if domain_id in _DOMAINS:
            known = _DOMAINS[domain_id][1]
            if known != config:
                raise ConfigError(f"DDS domain {domain_id} is already configured differently in this process")
            return
        _DOMAINS[domain_id] = (Domain(domain_id, config) if config else None, config)


def _qos(qos: QoS) -> Any:
    reliability = Policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=100))
    return Qos(
        reliability if qos.reliable else Policy.Reliability.BestEffort,
        Policy.Durability.Volatile,
        Policy.History.KeepLast(qos.depth),
        Policy.DataRepresentation(use_cdrv0_representation=True),
    )


class _DDSPublisher(Publisher):
    def __init__(self, writer: Any, wire: _WireType, topic: str) -> None:
        self.writer, self.wire, self.topic = writer, wire, topic

    def publish(self, msg: Message) -> None:
        if not isinstance(msg, self.wire.cls):
            raise ConfigError(f"{self.topic} carries {self.wire.cls.ros_type}, got {type(msg).__name__}")
        self.writer.write(self.wire.to_wire(msg))


class _DDSSubscription(Subscription):
    def __init__(self, transport: DDSTransport, topic: str, wire: _WireType, callback: Callable, qos: QoS) -> None:
        self.topic, self.wire = topic, wire
        self.worker = CallbackWorker(topic, callback, qos.depth)
        listener = dds_core.Listener(on_data_available=self._on_data)
        dds_topic = transport._topic(topic, wire)
        self.reader = DataReader(transport.participant, dds_topic, qos=_qos(qos), listener=listener)

    def _on_data(self, reader: Any) -> None:
        while True:  # one sample at a time, so one that fails to decode costs only itself
            try:
                samples = reader.take(N=1)
            except Exception as exc:  # noqa: BLE001 - a malformed sample must not stop the node
                log.error("dropped a malformed message on %s: %s: %s", self.topic, type(exc).__name__, exc)
                continue
            if not samples:
                return
            sample = samples[0]
            if isinstance(sample, InvalidSample):  # disposal / no writers: nothing to deliver
                continue
            try:
                self.worker.put(self.wire.from_wire(sample))
            except Exception as exc:  # noqa: BLE001
                log.error("dropped a malformed message on %s: %s: %s", self.topic, type(exc).__name__, exc)

    def close(self) -> None:
        self.reader.set_listener(None)
        self.worker.close()


class DDSTransport(Transport):
    """Pub/sub over DDS with ROS 2's conventions, on ``domain_id`` (default ``$ROS_DOMAIN_ID`` or 0).

    ``interface`` / ``peers`` restrict discovery (e.g. ``"lo"`` / ``["127.0.0.1"]``); otherwise Cyclone's
    defaults (or ``$CYCLONEDDS_URI``) apply, as for a ROS 2 node using rmw_cyclonedds."""

    def __init__(self, domain_id: int | None = None, interface: str | None = None,
                 peers: list[str] | None = None) -> None:
        if domain_id is None:
            domain_id = int(os.environ.get("ROS_DOMAIN_ID", "0"))
        if not 0 <= domain_id <= 232:
            raise ConfigError(f"DDS domain id must be in [0, 232], got {domain_id}")
        self.domain_id = domain_id
        _domain(domain_id, cyclone_config(interface, peers))
        self.participant = DomainParticipant(domain_id)
        self._topics: dict[str, Any] = {}
        self._subs: list[_DDSSubscription] = []
        self._closed = False

    def _topic(self, topic: str, wire: _WireType) -> Any:
        name = dds_topic_name(topic)
        known = self._topics.get(name)
        if known is None:
            known = self._topics[name] = (Topic(self.participant, name, wire.idl), wire)
        elif known[1] is not wire:
            raise ConfigError(f"topic {topic} carries {known[1].cls.ros_type}, not {wire.cls.ros_type}")
        return known[0]

    def publisher(self, topic: str, msg_type: type[Message], qos: QoS = RELIABLE) -> Publisher:
        self._check_open()
        wire = _WireType.of(msg_type)
        writer = DataWriter(self.participant, self._topic(topic, wire), qos=_qos(qos))
        return _DDSPublisher(writer, wire, check_topic(topic))

    def subscribe(self, topic: str, msg_type: type[M], callback: Callable[[M], None],
                  qos: QoS = RELIABLE) -> Subscription:
        self._check_open()
        sub = _DDSSubscription(self, check_topic(topic), _WireType.of(msg_type), callback, qos)
        self._subs.append(sub)
        return sub

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("this DDS transport is closed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in self._subs:
            sub.close()
        self._subs.clear()
        # Deleting the participant deletes every reader, writer and topic under it; cyclonedds does that
        # in Entity.__del__ and has no public close.
        self.participant.__del__()
        self._topics.clear()
