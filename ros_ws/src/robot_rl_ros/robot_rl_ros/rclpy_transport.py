"""robot_rl's Transport interface on an rclpy Node: lets the library's node logic run inside ROS 2.

Messages are converted field by field between robot_rl's dataclasses and the generated rclpy classes
(same names, same layout); image bytes go through ``array.array('B')`` in one copy. Callbacks run on
per-subscription threads (robot_rl's CallbackWorker), so the executor only hands messages over.
"""

import array
import importlib

import numpy as np
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from robot_rl.transport.base import CallbackWorker, Publisher, Subscription, Transport, check_topic


def ros_class(msg_cls):
    pkg, sub, name = msg_cls.ros_type.split("/")
    return getattr(importlib.import_module(f"{pkg}.{sub}"), name)


def to_ros(msg):
    out = ros_class(type(msg))()
    for name, kind in msg.wire.items():
        value = getattr(msg, name)
        if isinstance(kind, type):
            value = to_ros(value)
        elif isinstance(kind, list):
            value = [to_ros(v) for v in value]
        elif kind == "bytes":
            value = array.array("B", bytes(value))
        elif kind.endswith("[]") and kind != "string[]":
            value = np.asarray(value).tolist()
        setattr(out, name, value)
    return out


def from_ros(ros_msg, msg_cls):
    values = {}
    for name, kind in msg_cls.wire.items():
        value = getattr(ros_msg, name)
        if isinstance(kind, type):
            value = from_ros(value, kind)
        elif isinstance(kind, list):
            value = [from_ros(v, kind[0]) for v in value]
        elif kind == "bytes":
            value = bytes(value)
        elif kind == "string[]":
            value = list(value)
        elif kind.endswith("[]"):
            value = np.asarray(value)
        values[name] = value
    return msg_cls(**values)


def qos_profile(qos):
    return QoSProfile(
        reliability=ReliabilityPolicy.RELIABLE if qos.reliable else ReliabilityPolicy.BEST_EFFORT,
        history=HistoryPolicy.KEEP_LAST,
        depth=qos.depth,
    )


class _Pub(Publisher):
    def __init__(self, pub, msg_cls):
        self.pub, self.msg_cls = pub, msg_cls

    def publish(self, msg):
        if not isinstance(msg, self.msg_cls):
            raise TypeError(f"publisher of {self.msg_cls.ros_type} got {type(msg).__name__}")
        self.pub.publish(to_ros(msg))


class _Sub(Subscription):
    def __init__(self, node, topic, msg_cls, callback, qos):
        self.node = node
        self.worker = CallbackWorker(topic, callback, qos.depth)
        self.msg_cls = msg_cls
        self.topic = topic
        self.sub = node.create_subscription(ros_class(msg_cls), topic, self._on_msg, qos_profile(qos))

    def _on_msg(self, ros_msg):
        try:
            self.worker.put(from_ros(ros_msg, self.msg_cls))
        except Exception as exc:  # noqa: BLE001 - a node must outlive any one message
            self.node.get_logger().error(f"dropped a malformed message on {self.topic}: {exc}")

    def close(self):
        self.node.destroy_subscription(self.sub)
        self.worker.close()


class RclpyTransport(Transport):
    """Publishers and subscriptions of ``node``; the caller spins the node."""

    def __init__(self, node):
        self.node = node
        self._subs = []

    def publisher(self, topic, msg_type, qos=None):
        from robot_rl.transport.base import RELIABLE

        return _Pub(self.node.create_publisher(ros_class(msg_type), check_topic(topic), qos_profile(qos or RELIABLE)),
                    msg_type)

    def subscribe(self, topic, msg_type, callback, qos=None):
        from robot_rl.transport.base import RELIABLE

        sub = _Sub(self.node, check_topic(topic), msg_type, callback, qos or RELIABLE)
        self._subs.append(sub)
        return sub

    def close(self):
        for sub in self._subs:
            sub.close()
        self._subs.clear()
