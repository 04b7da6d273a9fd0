"""What every node's main() shares: init, parameters with defaults, library logs to ROS, spin, and a clean
shutdown on Ctrl-C/SIGTERM."""

import logging
import os
import signal
import threading

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from robot_rl_ros.rclpy_transport import RclpyTransport


def params(node: Node, defaults: dict) -> dict:
    """Declare each parameter with its default (its type comes from it) and return the values in use."""
    return {name: node.declare_parameter(name, value).value for name, value in defaults.items()}


class RosLogHandler(logging.Handler):
    """Sends robot_rl's Python log records to the node's ROS logger (console and /rosout)."""

    def __init__(self, logger) -> None:
        super().__init__()
        self.logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.name}: {self.format(record)}"  # with the traceback, if the record has one
            if record.levelno >= logging.ERROR:
                self.logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.logger.warning(text)
            else:
                self.logger.info(text)
        except Exception:  # noqa: BLE001 - logging must never take the node down
            self.handleError(record)


def run(node_name: str, defaults: dict, build, args=None) -> None:
    """Start ``node_name``, build the robot_rl object from (transport, params, logger), spin until SIGINT or
    SIGTERM, then close that object while the node can still publish (its last holds, its logs)."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def on_signal(*_):
        if stop.is_set():  # a second Ctrl-C: closing hangs, leave now
            os._exit(130)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    node = Node(node_name)
    handler = RosLogHandler(node.get_logger())
    library_log = logging.getLogger("robot_rl")
    library_log.addHandler(handler)
    library_log.setLevel(logging.INFO)
    transport = RclpyTransport(node)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    obj = None
    try:
        values = params(node, defaults)
        obj = build(transport, values, node.get_logger())
        node.get_logger().info(f"{node_name} up: {values}")
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
        node.get_logger().info(f"{node_name} shutting down")
    finally:
        if obj is not None:
            obj.close()
        transport.close()
        library_log.removeHandler(handler)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
