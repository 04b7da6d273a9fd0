"""`robot-rl import-bag --map`: bags of any arm's standard topics into episodes, as a real process. Bags recorded
by a plain rclpy node (MCAP and sqlite3), written with rosbags' own message classes (Twist, JPEG, markers, gaps),
and written by our own recorder; and bad mappings that fail in one line before anything is written."""

from __future__ import annotations

import json
import random
import subprocess
import time

import cv2
import numpy as np
import pytest
import yaml

pytest.importorskip("rosbags", reason="importing bags needs the ros extra (rosbags)")

from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from robot_rl.replay.store import EpisodeStore  # noqa: E402
from tests.cli.test_cli import assert_clean_error, run  # noqa: E402

TS = get_typestore(Stores.ROS2_JAZZY)
T = TS.types
SEC = 1_000_000_000


def _header(t_ns: int):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=t_ns // SEC, nanosec=t_ns % SEC),
                                    frame_id="")


def _write_bag(path, messages, storage=StoragePlugin.MCAP) -> None:
    """(topic, msgtype, receive time ns, message) -> a rosbag2 bag, as `ros2 bag record` stores it."""
    with Writer(path, version=9, storage_plugin=storage) as writer:
        conns = {}
        for topic, msgtype, t_ns, msg in sorted(messages, key=lambda m: m[2]):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=TS)
            writer.write(conns[topic], t_ns, TS.serialize_cdr(msg, msgtype))


def _map(tmp_path, name: str = "map.yaml", **fields) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(fields))
    return str(path)


def _import(bag, mapping, out) -> subprocess.CompletedProcess:
    return run("import-bag", str(bag), "--map", mapping, "--out", str(out), "--quiet", "--json")


# -------------------------------------------------------------------------------- a plain rclpy arm
ARM = r"""
import sys, time
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

out, storage, ticks, drop = sys.argv[1], sys.argv[2], int(sys.argv[3]), tuple(map(int, sys.argv[4].split(",")))
rclpy.init()
node = Node("arm")
qos = QoSProfile(depth=100)  # reliable, like `ros2 bag record` asks for it
writer = Writer(out, version=9, storage_plugin=getattr(StoragePlugin, storage))
writer.open()
typestore = get_typestore(Stores.ROS2_JAZZY)
pubs = {}
for topic, cls, ros_type in (("/joint_states", JointState, "sensor_msgs/msg/JointState"),
                             ("/camera/image_raw", Image, "sensor_msgs/msg/Image"),
                             ("/cmd", Float64MultiArray, "std_msgs/msg/Float64MultiArray"),
                             ("/episode", Bool, "std_msgs/msg/Bool")):
    conn = writer.add_connection(topic, ros_type, typestore=typestore)
    # raw=True: the serialised CDR (encapsulation header included), exactly what rosbag2 stores
    node.create_subscription(cls, topic, lambda data, conn=conn: writer.write(conn, time.time_ns(), data), qos,
                             raw=True)
    pubs[topic] = node.create_publisher(cls, topic, qos)
deadline = time.monotonic() + 20
while any(p.get_subscription_count() == 0 for p in pubs.values()) and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.05)

plan = []  # one entry per 50 ms timer call
for ep in range(2):
    plan += [("marker", True), None] + [("tick", ep, i) for i in range(ticks)] + [("marker", False), None]
plan += [None] * 4
done = []

def on_timer():
    if not plan:
        done.append(True)
        return
    item = plan.pop(0)
    if item is None:
        return
    if item[0] == "marker":
        pubs["/episode"].publish(Bool(data=item[1]))
        return
    _, ep, i = item
    stamp = node.get_clock().now().to_msg()
    js = JointState(name=["j1", "j2", "j3"], position=[100.0 * ep + i, 0.5 * i, -1.0 * i])
    js.header.stamp = stamp
    pubs["/joint_states"].publish(js)
    if (ep, i) != drop:
        img = Image(height=16, width=16, encoding="rgb8", step=48, data=bytes([ep, i, 7]) * 256)
        img.header.stamp = stamp
        pubs["/camera/image_raw"].publish(img)
    pubs["/cmd"].publish(Float64MultiArray(data=[100.0 * ep + i, 1.0]))  # the command sent after observing

node.create_timer(0.05, on_timer)
while not done:
    rclpy.spin_once(node, timeout_sec=0.1)
writer.close()
print("recorded", flush=True)
"""


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize("storage", ["MCAP", "SQLITE3"])
def test_bag_recorded_from_an_rclpy_arm(tmp_path, storage):
    from tests.ros.test_ros2 import ros_env, ros_python

    py, ticks, drop = ros_python(), 15, (1, 7)
    bag = tmp_path / "arm_bag"
    proc = subprocess.run([str(py), "-c", ARM, str(bag), storage, str(ticks), f"{drop[0]},{drop[1]}"],
                          env=ros_env(random.randint(1, 200)), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "recorded" in proc.stdout, proc.stderr[-3000:]
    mapping = _map(tmp_path, state={"topic": "/joint_states", "joints": ["j3", "j1"]},
                   cameras={"front": "/camera/image_raw"}, action={"topic": "/cmd"}, control_hz=20,
                   episodes={"split": "marker", "topic": "/episode", "type": "bool"}, instruction="reach")
    out = tmp_path / "store.zarr"
    result = _import(bag, mapping, out)
    assert "imported 2 episodes" in result.stdout, result.stdout
    notes = [line for line in result.stdout.splitlines() if line.startswith("note:")]
    # the frame of tick 7 (0.35 s into the episode) was never sent; nothing else was missed
    assert len(notes) == 1 and notes[0].startswith(
        f"note: episode 1 (arm_bag #1): camera front missed 1 of {ticks} ticks (t=0.3"), notes
    with EpisodeStore.open(out) as store:
        assert store.num_episodes == 2
        for ep in range(2):
            steps, meta = store.read_episode(ep), store.episode_meta(ep)
            assert (meta.task, meta.instruction, meta.success) == ("arm_bag", "reach", False)
            k = np.arange(ticks - 1)
            np.testing.assert_array_equal(steps["obs/state"], np.stack([-1.0 * k, 100.0 * ep + k], axis=1))
            np.testing.assert_array_equal(steps["action"], np.stack([100.0 * ep + k, np.ones_like(k)], axis=1))
            shown = k.copy()
            if ep == drop[0]:
                shown[drop[1]] -= 1  # the dropped frame is filled with the one before
            np.testing.assert_array_equal(steps["obs/images/front"][:, 0, 0], np.stack(
                [np.full_like(k, ep), shown, np.full_like(k, 7)], axis=1))
            assert steps["truncated"][-1] and not steps["terminated"].any() and not steps["reward"].any()


# ----------------------------------------------------------------- a bag written with rosbags directly
def _arm_bag(path, drops: dict[int, set[int]], ticks: int = 12, storage=StoragePlugin.MCAP) -> None:
    """Three episodes at 10 Hz, 2 s apart: JointState with a few ms of jitter, JPEG images with the same stamps,
    Twist commands 20 ms after each observation, "start" / "success" | "failure" | "end" String markers, and a
    /success Bool at the end of the first episode. ``drops``: camera frames not recorded, per episode."""
    rng = np.random.default_rng(0)
    messages, t = [], 1_700_000_000 * SEC
    for ep, result in enumerate(("success", "failure", "end")):
        messages.append(("/episode", "std_msgs/msg/String", t - 30_000_000, T["std_msgs/msg/String"](data="start")))
        for i in range(ticks):
            stamp = t + i * 100_000_000 + int(rng.integers(-2, 3)) * 1_000_000
            code = 10 * ep + i
            messages.append(("/arm/joint_states", "sensor_msgs/msg/JointState", stamp + 1_000_000,
                             T["sensor_msgs/msg/JointState"](
                                 header=_header(stamp), name=["shoulder", "elbow", "gripper"],
                                 position=np.array([code, 2.0 * code, 0.0]), velocity=np.array([0.1, 0.2, 0.3]),
                                 effort=np.array([], np.float64))))
            if i not in drops.get(ep, ()):
                ok, jpeg = cv2.imencode(".jpg", np.full((24, 24, 3), 4 * code, np.uint8))
                messages.append(("/cam/compressed", "sensor_msgs/msg/CompressedImage", stamp + 2_000_000,
                                 T["sensor_msgs/msg/CompressedImage"](header=_header(stamp), format="jpeg",
                                                                      data=np.frombuffer(jpeg, np.uint8))))
            vec = T["geometry_msgs/msg/Vector3"]
            messages.append(("/cmd_vel", "geometry_msgs/msg/Twist", stamp + 20_000_000,
                             T["geometry_msgs/msg/Twist"](linear=vec(x=float(code), y=0.0, z=0.0),
                                                          angular=vec(x=0.0, y=0.0, z=-float(code)))))
        end = t + ticks * 100_000_000
        messages.append(("/episode", "std_msgs/msg/String", end, T["std_msgs/msg/String"](data=result)))
        messages.append(("/success", "std_msgs/msg/Bool", end, T["std_msgs/msg/Bool"](data=ep == 0)))
        t = end + 2 * SEC
    _write_bag(path, messages, storage)


ARM_MAP = {"state": {"topic": "/arm/joint_states", "joints": ["elbow", "shoulder"]},
           "cameras": {"top": {"topic": "/cam/compressed"}}, "action": "/cmd_vel", "control_hz": 10,
           "image_size": 8, "task": "other_arm_pick", "instruction": "pick"}


@pytest.mark.parametrize("split", ["marker", "gap"])
def test_bag_of_another_arm_with_markers_or_gaps(tmp_path, split):
    bag, ticks = tmp_path / "session", 12
    _arm_bag(bag, drops={0: {5}, 2: {3, 4, 5, 6}}, ticks=ticks)
    if split == "marker":  # success from the marker's words
        episodes = {"split": "marker", "topic": "/episode", "type": "string"}
        mapping = _map(tmp_path, **ARM_MAP, episodes=episodes)
    else:  # success from the Bool topic
        mapping = _map(tmp_path, **ARM_MAP, episodes={"split": "gap", "seconds": 1.0}, success={"topic": "/success"})
    out = tmp_path / "store.zarr"
    result = _import(bag, mapping, out)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 2 and summary["steps"] == 2 * (ticks - 1), summary
    assert len(summary["skipped"]) == 1 and summary["skipped"][0].startswith(
        "session #2: camera top missed 4 of 12 ticks (t=0.30 s, 0.40 s, 0.50 s, 0.60 s), more than max_missing 0.1")
    assert summary["notes"] == ["episode 0 (session #0): camera top missed 1 of 12 ticks (t=0.50 s)"], summary
    with EpisodeStore.open(out) as store:
        for ep in range(2):
            steps, meta = store.read_episode(ep), store.episode_meta(ep)
            code = 10 * ep + np.arange(ticks - 1)
            np.testing.assert_array_equal(steps["obs/state"], np.stack([2.0 * code, code], axis=1))
            np.testing.assert_array_equal(steps["action"][:, [0, 5]], np.stack([code, -code], axis=1))
            assert steps["action"].shape == (ticks - 1, 6) and steps["obs/images/top"].shape == (ticks - 1, 8, 8, 3)
            shown = code.copy()
            if ep == 0:
                shown[5] -= 1
            assert np.abs(steps["obs/images/top"].mean(axis=(1, 2, 3)) - 4 * shown).max() < 2
            assert (meta.task, meta.success) == ("other_arm_pick", ep == 0)
            assert steps["reward"].tolist() == [0.0] * (ticks - 2) + [float(ep == 0)]
            assert steps["terminated"][-1] == (ep == 0) and steps["truncated"][-1] == (ep != 0)


# --------------------------------------------------------------------------------- our own recorder
def test_bags_of_our_recorder_one_episode_each(tmp_path):
    from robot_rl.transport.bag import BagRecorder, RecorderConfig
    from robot_rl.transport.convert import RobotTopics, image_to_msg
    from robot_rl.transport.inproc import InProcBus, InProcTransport
    from robot_rl.transport.messages import Float64MultiArray, Header, Image, JointState, String

    topics, ticks = RobotTopics(), 6
    transport = InProcTransport(InProcBus())
    recorder = BagRecorder(transport, tmp_path / "rec", RecorderConfig(cameras=["front"]))
    pubs = {name: transport.publisher(topic, cls) for name, topic, cls in (
        ("step", topics.step, String), ("state", topics.state, JointState),
        ("image", topics.image("front"), Image),
        ("action", topics.action, Float64MultiArray))}
    for ep in range(2):
        for i in range(ticks):
            header = Header.now()
            if i == 0:
                pubs["step"].publish(String(data=json.dumps({"episode": ep, "step": 0, "stamp": [
                    header.stamp.sec, header.stamp.nanosec]})))
            pubs["state"].publish(JointState(header=header, name=["a", "b"], position=np.array([ep, i], float)))
            pubs["image"].publish(image_to_msg(np.full((8, 8, 3), 10 * ep + i, np.uint8), header))
            pubs["action"].publish(Float64MultiArray(data=np.array([10.0 * ep + i])))
            time.sleep(0.05)
    assert recorder.close()["bags"] == 2
    mapping = _map(tmp_path, state=topics.state, cameras={"front": topics.image("front")},
                   action={"topic": topics.action}, control_hz=20, episodes={"split": "bag"})
    out = tmp_path / "store.zarr"
    result = _import(tmp_path / "rec", mapping, out)
    assert "imported 2 episodes" in result.stdout, result.stdout
    with EpisodeStore.open(out) as store:
        for ep in range(2):
            steps = store.read_episode(ep)
            k = np.arange(ticks - 1)
            np.testing.assert_array_equal(steps["obs/state"], np.stack([np.full_like(k, ep), k], axis=1))
            np.testing.assert_array_equal(steps["action"][:, 0], 10 * ep + k)
            np.testing.assert_array_equal(steps["obs/images/front"][:, 0, 0, 0], 10 * ep + k)
            assert store.episode_meta(ep).task == "rec"


# ------------------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("change, fragments", [
    ({"action": "/nope"}, ["has no topic /nope (the mapping's action); it has: /arm/joint_states"]),
    ({"state": "/cmd_vel"}, ["state topic /cmd_vel is geometry_msgs/msg/Twist", "expected sensor_msgs/msg/JointState"]),
    ({"state": {"topic": "/arm/joint_states", "joints": ["wrist", "elbow"]}},
     ["joints ['wrist'] are not in the /arm/joint_states messages", "'shoulder', 'elbow', 'gripper'"]),
    ({"episodes": {"split": "markers"}}, ["'episodes' must be {split: bag}"]),
    ({"bag": "not a bag"}, ["no rosbag2 bag in"]),
])
def test_bad_mapping_or_bag_fails_in_one_line_before_writing(tmp_path, change, fragments):
    bag = tmp_path / "session"
    _arm_bag(bag, drops={}, ticks=3, storage=StoragePlugin.SQLITE3)
    change = dict(change)
    if change.pop("bag", None):
        bag = tmp_path / "empty"
        bag.mkdir()
    mapping = _map(tmp_path, **{**ARM_MAP, **change})
    out = tmp_path / "store.zarr"
    proc = run("import-bag", str(bag), "--map", mapping, "--out", str(out), "--quiet", check=False)
    assert_clean_error(proc, *fragments)
    assert not out.exists()


def test_fast_joint_states_trajectory_commands_and_interventions(tmp_path):
    """Joint states at 50 Hz under a 10 Hz control rate, JointTrajectory commands naming their joints in another
    order, an intervention flag, and a folder of bags (sqlite3 and MCAP), one episode each; in process."""
    from robot_rl.runtime.data.bags import import_mapped_bag

    t0, ticks = 1_700_000_000 * SEC, 8
    for ep, storage in enumerate((StoragePlugin.SQLITE3, StoragePlugin.MCAP)):
        messages = []
        for i in range(5 * (ticks - 1) + 1):  # 50 Hz
            stamp = t0 + i * 20_000_000
            messages.append(("/joint_states", "sensor_msgs/msg/JointState", stamp, T["sensor_msgs/msg/JointState"](
                header=_header(stamp), name=["a", "b"], position=np.array([ep, i / 5]),
                velocity=np.array([], np.float64), effort=np.array([], np.float64))))
        for k in range(ticks):
            stamp = t0 + k * 100_000_000
            point = T["trajectory_msgs/msg/JointTrajectoryPoint"](
                positions=np.array([-k, k + 0.5]), velocities=np.array([], np.float64),
                accelerations=np.array([], np.float64), effort=np.array([], np.float64),
                time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=0))
            messages.append(("/arm_controller/joint_trajectory", "trajectory_msgs/msg/JointTrajectory",
                             stamp + 10_000_000, T["trajectory_msgs/msg/JointTrajectory"](
                                 header=_header(0), joint_names=["b", "a"], points=[point])))
            messages.append(("/teleop/active", "std_msgs/msg/Bool", stamp - 5_000_000,
                             T["std_msgs/msg/Bool"](data=k >= 4)))
        _write_bag(tmp_path / "demos" / f"demo_{ep}", messages, storage)
    mapping = {"state": "/joint_states", "control_hz": 10, "intervention": "/teleop/active",
               "action": {"topic": "/arm_controller/joint_trajectory", "joints": ["a", "b"]}}
    summary = import_mapped_bag(tmp_path / "demos", mapping, tmp_path / "store.zarr", progress=False)
    assert (summary.episodes, summary.steps, summary.interventions, summary.notes) == (2, 14, 6, []), summary
    with EpisodeStore.open(tmp_path / "store.zarr") as store:
        steps = store.read_episode(1)
        k = np.arange(ticks - 1)
        np.testing.assert_allclose(steps["obs/state"], np.stack([np.ones(ticks - 1), k], axis=1), atol=1e-6)
        np.testing.assert_allclose(steps["action"], np.stack([k + 0.5, -k], axis=1))
        assert steps["intervention"].tolist() == [False] * 4 + [True] * 3
        assert store.episode_meta(1).task == "demos" and "images/front" not in steps
