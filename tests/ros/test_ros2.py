"""ROS 2 for real: our DDS backend against rclpy nodes, and colcon build + test of ros_ws (whose own tests
run robot_rl's messages through real rclpy publishers and subscriptions).

The rclpy side runs in its own venv (``make test`` builds .venv-ros); without it these tests skip."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]
dds = pytest.importorskip("robot_rl.transport.dds", reason="the DDS backend needs the ros extra (cyclonedds)")

from robot_rl.transport import Latest  # noqa: E402
from robot_rl.transport.convert import image_to_msg, msg_to_image  # noqa: E402
from robot_rl.transport.messages import Header, Image, JointState  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ROS_VENV = ROOT / ".venv-ros"
PKG = ROOT / "ros_ws" / "src" / "robot_rl_ros"


def ros_python() -> Path:
    reason = ROS_VENV / "UNAVAILABLE"
    if reason.is_file():
        pytest.skip(f"the rclpy environment could not be built: {reason.read_text().strip().splitlines()[-1:]}")
    py = ROS_VENV / "bin" / "python"
    if not py.is_file():
        pytest.skip(f"no rclpy environment at {ROS_VENV}: run `make test` (it builds one)")
    return py


def ros_env(domain: int) -> dict:
    return dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                RMW_IMPLEMENTATION="rmw_fastrtps_cpp", PYTHONPATH=str(PKG), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")


ECHO = """
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
rclpy.init()
n = Node("echo")
pj, pi = n.create_publisher(JointState, "/e/js_back", 10), n.create_publisher(Image, "/e/img_back", 10)
n.create_subscription(JointState, "/e/js", pj.publish, 10)
n.create_subscription(Image, "/e/img", pi.publish, 10)
print("ready", flush=True)
rclpy.spin(n)
"""


def test_our_backend_with_rclpy_both_ways():
    py, domain = ros_python(), random.randint(1, 200)
    proc = subprocess.Popen([str(py), "-c", ECHO], env=ros_env(domain), stdout=subprocess.PIPE, text=True)
    t = None
    try:
        assert proc.stdout.readline().strip() == "ready"
        t = dds.DDSTransport(domain_id=domain, interface="lo", peers=["127.0.0.1"])
        js_back, img_back = Latest(t, "/e/js_back", JointState), Latest(t, "/e/img_back", Image)
        js, img_pub = t.publisher("/e/js", JointState), t.publisher("/e/img", Image)
        msg = JointState(header=Header.now("base"), name=["j1"], position=np.array([0.5]), velocity=np.array([1.5]))
        deadline = time.monotonic() + 30
        while js_back.count == 0 and time.monotonic() < deadline:
            js.publish(msg)
            time.sleep(0.1)
        assert js_back.msg.name == ["j1"] and js_back.msg.velocity.tolist() == [1.5]
        img = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
        n = img_back.count
        img_pub.publish(image_to_msg(img, Header.now("front")))
        assert np.array_equal(msg_to_image(img_back.wait(after=n, timeout=10)), img)
    finally:
        if t is not None:
            t.close()
        proc.terminate()
        proc.wait(timeout=20)


def test_colcon_build_and_test(tmp_path):
    py = ros_python()
    bin_dir = py.parent
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", ROS_DOMAIN_ID=str(random.randint(1, 200)),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    ws = tmp_path / "ws"
    shutil.copytree(ROOT / "ros_ws" / "src", ws / "src")
    for cmd in (["colcon", "build"], ["colcon", "test"], ["colcon", "test-result", "--verbose"]):
        proc = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{cmd}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    assert "0 errors, 0 failures" in proc.stdout and "tests" in proc.stdout
