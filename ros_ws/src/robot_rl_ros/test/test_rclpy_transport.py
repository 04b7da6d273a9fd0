"""robot_rl's messages through real rclpy publishers and subscriptions (RclpyTransport), both ways."""

import os
import random
import threading
import time

import numpy as np
import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import rclpy  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from robot_rl.transport.convert import array_to_msg, image_to_msg, msg_to_array, msg_to_image  # noqa: E402
from robot_rl.transport.messages import Header, Image, Joy, JointState, Float64MultiArray  # noqa: E402
from robot_rl.transport.base import Latest  # noqa: E402
from robot_rl.hil.teleop import TeleopRelay  # noqa: E402
from robot_rl.transport.messages import Bool  # noqa: E402

from robot_rl_ros.rclpy_transport import RclpyTransport  # noqa: E402


@pytest.fixture
def nodes():
    rclpy.init()
    a, b = rclpy.create_node("a"), rclpy.create_node("b")
    ex = MultiThreadedExecutor()
    ex.add_node(a)
    ex.add_node(b)
    thread = threading.Thread(target=ex.spin, daemon=True)
    thread.start()
    yield RclpyTransport(a), RclpyTransport(b)
    ex.shutdown()
    rclpy.shutdown()


def publish_until(pub, msg, latest, timeout=10.0):
    deadline = time.monotonic() + timeout
    while latest.count == 0 and time.monotonic() < deadline:
        pub.publish(msg)
        time.sleep(0.05)
    assert latest.count > 0, "nothing arrived"
    return latest.msg


def test_image_and_joint_state_round_trip(nodes):
    ta, tb = nodes
    img = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    got = Latest(tb, "/t/image", Image)
    out = publish_until(ta.publisher("/t/image", Image), image_to_msg(img, Header.now("cam")), got)
    assert out.header.frame_id == "cam"
    assert np.array_equal(msg_to_image(out), img)
    js = Latest(tb, "/t/js", JointState)
    msg = JointState(header=Header.now("base"), name=["j1", "j2"], position=np.array([0.5, -1.0]))
    out = publish_until(ta.publisher("/t/js", JointState), msg, js)
    assert out.name == ["j1", "j2"] and np.allclose(out.position, [0.5, -1.0])


def test_float64_multiarray_layout(nodes):
    ta, tb = nodes
    chunk = np.arange(12, dtype=np.float64).reshape(3, 4)
    got = Latest(tb, "/t/chunk", Float64MultiArray)
    out = publish_until(ta.publisher("/t/chunk", Float64MultiArray), array_to_msg(chunk, ["chunk", "action"]), got)
    assert np.array_equal(msg_to_array(out), chunk)


def test_teleop_relay_maps_joy(nodes):
    ta, tb = nodes
    relay = TeleopRelay(tb)
    takeover = Latest(ta, "/robot/teleop/takeover", Bool)
    action = Latest(ta, "/robot/teleop/action", Float64MultiArray)
    axes = np.zeros(8, np.float32)
    axes[1] = 0.8
    buttons = np.zeros(11, np.int32)
    buttons[4] = 1
    publish_until(ta.publisher("/joy", Joy), Joy(axes=axes, buttons=buttons), takeover)
    assert takeover.msg.data is True
    assert np.isclose(msg_to_array(action.wait())[0, 0], 0.8, atol=1e-6)
    relay.close()
