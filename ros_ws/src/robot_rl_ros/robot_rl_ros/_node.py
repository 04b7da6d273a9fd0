"""What every node's main() shares: init, parameters with defaults, spin, clean shutdown on Ctrl-C/SIGTERM."""

import signal

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from robot_rl_ros.rclpy_transport import RclpyTransport


def params(node: Node, defaults: dict) -> dict:
    """Declare each parameter with its default (its type comes from it) and return the values in use."""
    return {name: node.declare_parameter(name, value).value for name, value in defaults.items()}


def run(node_name: str, defaults: dict, build, args=None) -> None:
    """Start ``node_name``, build the robot_rl object from (transport, params, logger), spin until shutdown."""
    rclpy.init(args=args)
    node = Node(node_name)
    signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())
    transport = RclpyTransport(node)
    obj = None
    try:
        values = params(node, defaults)
        obj = build(transport, values, node.get_logger())
        node.get_logger().info(f"{node_name} up: {values}")
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if obj is not None:
            obj.close()
        transport.close()
        node.destroy_node()
        rclpy.try_shutdown()
