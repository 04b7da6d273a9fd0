"""The publish/subscribe interface every backend implements, its QoS profiles, and helpers built on
it (waiting for a message, request/reply over a pair of String topics).

Callbacks run on the backend's own thread, never on the publisher's: code that shares state with a
callback guards it. A callback that raises is logged and dropped; the subscription stays up.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from robot_rl.core.errors import ConfigError, RobotRLError
from robot_rl.transport.messages import Message, String

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Message)

_TOPIC = re.compile(r"^/?[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*$")


class TransportError(RobotRLError):
    """A transport cannot do what was asked (closed, timed out, no such backend)."""


class ServiceTimeout(TransportError):
    """A service did not answer in time (it may not be up yet)."""


@dataclass(frozen=True)
class QoS:
    """The subset of DDS QoS that ROS 2 profiles use."""

    reliable: bool = True
    depth: int = 10

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ConfigError(f"QoS depth must be >= 1, got {self.depth}")


RELIABLE = QoS(reliable=True, depth=10)  # ROS 2 default: RELIABLE, VOLATILE, KEEP_LAST(10)
SENSOR_DATA = QoS(reliable=False, depth=5)  # rclpy.qos.qos_profile_sensor_data


def check_topic(topic: str) -> str:
    """A ROS 2 topic name, made absolute (``joint_states`` -> ``/joint_states``)."""
    if not isinstance(topic, str) or not _TOPIC.match(topic):
        raise ConfigError(f"invalid topic name {topic!r}: expected words of letters, digits and _ separated by /")
    return topic if topic.startswith("/") else "/" + topic


class Publisher(ABC):
    @abstractmethod
    def publish(self, msg: Message) -> None: ...


class Subscription(ABC):
    @abstractmethod
    def close(self) -> None: ...


class Transport(ABC):
    """A node's connection to the others: typed publishers and callback subscriptions on ROS 2 topics."""

    @abstractmethod
    def publisher(self, topic: str, msg_type: type[Message], qos: QoS = RELIABLE) -> Publisher: ...

    @abstractmethod
    def subscribe(self, topic: str, msg_type: type[M], callback: Callable[[M], None],
                  qos: QoS = RELIABLE) -> Subscription: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def safe_callback(topic: str, callback: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wrap a subscriber's callback so that one bad message is logged and dropped, not fatal."""

    def run(msg: Any) -> None:
        try:
            callback(msg)
        except Exception as exc:  # noqa: BLE001 - a node must outlive any one message
            log.error("dropped a message on %s: %s: %s", topic, type(exc).__name__, exc)

    return run


class CallbackWorker:
    """Runs one subscription's callback on its own thread over a keep-last queue of ``depth`` messages,
    so a slow callback (inference) neither stalls the backend's receive thread nor delays other topics
    (an e-stop); when it falls behind, the oldest messages go, as with DDS KEEP_LAST."""

    def __init__(self, topic: str, callback: Callable[[Any], None], depth: int) -> None:
        self._callback = safe_callback(topic, callback)
        self._queue: collections.deque = collections.deque(maxlen=depth)
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"sub:{topic}", daemon=True)
        self._thread.start()

    def put(self, msg: Any) -> None:
        with self._cond:
            self._queue.append(msg)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                msg = self._queue.popleft()
            self._callback(msg)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)


class Latest:
    """Keeps the newest message of a topic (and how many came) for code that polls, with a wait."""

    def __init__(self, transport: Transport, topic: str, msg_type: type[M], qos: QoS = RELIABLE) -> None:
        self._cond = threading.Condition()
        self.msg: Any = None
        self.count = 0
        self._sub = transport.subscribe(topic, msg_type, self._on_msg, qos)

    def _on_msg(self, msg: Any) -> None:
        with self._cond:
            self.msg, self.count = msg, self.count + 1
            self._cond.notify_all()

    def wait(self, predicate: Callable[[Any], bool] | None = None, timeout: float = 5.0, after: int = 0) -> Any:
        """The first message numbered above ``after`` that satisfies ``predicate``; TransportError on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self.count > after and (predicate is None or predicate(self.msg)):
                    return self.msg
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransportError(f"no matching message within {timeout:.1f} s")
                self._cond.wait(left)

    def close(self) -> None:
        self._sub.close()


class ServiceServer:
    """Request/reply over two std_msgs/String topics (``<name>/request``, ``<name>/reply``) carrying JSON
    ``{"id": ..., ...}``: works over any backend and with plain ROS 2 tools, no service types needed."""

    def __init__(self, transport: Transport, name: str, handler: Callable[[dict], dict]) -> None:
        name = check_topic(name)
        self._handler = handler
        self._answered: collections.OrderedDict[str, dict] = collections.OrderedDict()  # retries get the same reply
        self._reply = transport.publisher(f"{name}/reply", String)
        self._sub = transport.subscribe(f"{name}/request", String, self._on_request)
        self.name = name

    def _on_request(self, msg: String) -> None:
        try:
            request = json.loads(msg.data)
            if not isinstance(request, dict) or "id" not in request:
                raise ValueError("a request must be a JSON object with an 'id'")
        except ValueError as exc:
            log.error("dropped a malformed request on %s/request: %s", self.name, exc)
            return
        rid = str(request["id"])
        if rid in self._answered:
            self._reply.publish(String(data=json.dumps(self._answered[rid])))
            return
        try:
            reply = {"ok": True, **self._handler(request)}
        except Exception as exc:  # noqa: BLE001 - the caller gets the error, the server stays up
            log.error("request %s on %s failed: %s", request.get("id"), self.name, exc)
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        reply["id"] = rid
        self._answered[rid] = reply
        while len(self._answered) > 64:
            self._answered.popitem(last=False)
        self._reply.publish(String(data=json.dumps(reply)))

    def close(self) -> None:
        self._sub.close()


class ServiceClient:
    """The caller's side of :class:`ServiceServer`."""

    _ids = itertools.count()

    def __init__(self, transport: Transport, name: str) -> None:
        self.name = check_topic(name)
        self._request = transport.publisher(f"{self.name}/request", String)
        self._cond = threading.Condition()
        self._replies: dict[str, dict] = {}
        self._sub = transport.subscribe(f"{self.name}/reply", String, self._on_reply)
        self._prefix = f"{id(self):x}-{time.monotonic_ns():x}"

    def _on_reply(self, msg: String) -> None:
        reply = json.loads(msg.data)
        with self._cond:
            self._replies[str(reply.get("id"))] = reply
            self._cond.notify_all()

    def call(self, request: dict, timeout: float = 10.0, retry_every: float = 0.5) -> dict:
        """Send ``request`` (re-sent every ``retry_every`` s until the server is up) and return its reply;
        TransportError on timeout or when the server reports an error."""
        rid = f"{self._prefix}-{next(self._ids)}"
        payload = String(data=json.dumps({**request, "id": rid}))
        deadline = time.monotonic() + timeout
        with self._cond:
            while rid not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServiceTimeout(f"no reply from {self.name} within {timeout:.1f} s")
                self._request.publish(payload)
                self._cond.wait(min(retry_every, left))
            reply = self._replies.pop(rid)
        if not reply.get("ok", False):
            raise TransportError(f"{self.name} failed: {reply.get('error', 'unknown error')}")
        return reply

    def close(self) -> None:
        self._sub.close()
