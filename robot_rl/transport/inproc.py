"""In-process backend: nodes in one Python process share a bus; each subscription's callback runs on
its own thread (as a DDS backend delivers off the publisher's thread), in publish order."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

from robot_rl.core.errors import ConfigError
from robot_rl.transport.base import RELIABLE, CallbackWorker, M, Publisher, QoS, Subscription, Transport, check_topic
from robot_rl.transport.messages import Message


class InProcBus:
    """Topics of one process. Every :class:`InProcTransport` built on the same bus sees the others."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, list[_InProcSubscription]] = defaultdict(list)
        self._types: dict[str, type[Message]] = {}

    def declare(self, topic: str, msg_type: type[Message]) -> None:
        with self._lock:
            known = self._types.setdefault(topic, msg_type)
        if known is not msg_type:
            raise ConfigError(f"topic {topic} carries {known.ros_type}, not {msg_type.ros_type}")

    def publish(self, topic: str, msg: Message) -> None:
        with self._lock:
            subs = list(self._subs.get(topic, ()))
        for sub in subs:
            sub.worker.put(msg)

    def add(self, sub: _InProcSubscription) -> None:
        with self._lock:
            self._subs[sub.topic].append(sub)

    def remove(self, sub: _InProcSubscription) -> None:
        with self._lock:
            if sub in self._subs.get(sub.topic, []):
                self._subs[sub.topic].remove(sub)


_DEFAULT_BUS: InProcBus | None = None


def default_bus() -> InProcBus:
    global _DEFAULT_BUS
    if _DEFAULT_BUS is None:
        _DEFAULT_BUS = InProcBus()
    return _DEFAULT_BUS


class _InProcPublisher(Publisher):
    def __init__(self, bus: InProcBus, topic: str, msg_type: type[Message]) -> None:
        self.bus, self.topic, self.msg_type = bus, topic, msg_type

    def publish(self, msg: Message) -> None:
        if not isinstance(msg, self.msg_type):
            raise ConfigError(f"{self.topic} carries {self.msg_type.ros_type}, got {type(msg).__name__}")
        self.bus.publish(self.topic, msg)


class _InProcSubscription(Subscription):
    def __init__(self, bus: InProcBus, topic: str, callback: Callable, depth: int) -> None:
        self.bus, self.topic = bus, topic
        self.worker = CallbackWorker(topic, callback, depth)
        bus.add(self)

    def close(self) -> None:
        self.bus.remove(self)
        self.worker.close()


class InProcTransport(Transport):
    """Pub/sub between nodes in one process (tests, a single-process robot loop). Messages are passed by
    reference: subscribers must not modify what they receive."""

    def __init__(self, bus: InProcBus | None = None) -> None:
        self.bus = bus or default_bus()
        self._subs: list[_InProcSubscription] = []

    def publisher(self, topic: str, msg_type: type[Message], qos: QoS = RELIABLE) -> Publisher:
        topic = check_topic(topic)
        self.bus.declare(topic, msg_type)
        return _InProcPublisher(self.bus, topic, msg_type)

    def subscribe(self, topic: str, msg_type: type[M], callback: Callable[[M], None],
                  qos: QoS = RELIABLE) -> Subscription:
        topic = check_topic(topic)
        self.bus.declare(topic, msg_type)
        sub = _InProcSubscription(self.bus, topic, callback, qos.depth)
        self._subs.append(sub)
        return sub

    def close(self) -> None:
        for sub in self._subs:
            sub.close()
        self._subs.clear()
