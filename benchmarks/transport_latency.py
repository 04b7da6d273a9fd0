"""ROS 2 transport latency, side by side in one run; prints one JSON object.

Round trips (median, p99, in ms) of a sensor_msgs/JointState (7 joints) and a 128x128x3 rgb8
sensor_msgs/Image between two processes, a pinger and an echo node (the same ping loop for every pinger):

- ``ours``: robot_rl's DDS backend (cyclonedds) on both sides;
- ``rclpy``: rclpy on both sides (the PyPI Jazzy wheels in ``.venv-ros``, Fast DDS);
- ``ours_rclpy``: our backend pinging an rclpy echo node.

Then the observation-to-action latency of sim-in-the-loop at 10 Hz: an EnvBridge on the push task
(two 64x64 cameras) and a PolicyServer with a flow policy (default size, random weights: latency does not
depend on training), each in its own process, over our backend and as the rclpy nodes of ros_ws. Latency
is measured from the observation's header stamp (taken as the bridge publishes it) to the arrival of the
chunk that answers it. Usage::

    python benchmarks/transport_latency.py [--n 300] [--sil-seconds 20] [--ros-venv .venv-ros]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from robot_rl.transport import QoS  # noqa: E402
from robot_rl.transport.convert import RobotTopics  # noqa: E402
from robot_rl.transport.dds import DDSTransport  # noqa: E402
from robot_rl.transport.messages import Float64MultiArray, String  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = {"interface": "lo", "peers": ["127.0.0.1"]}

OURS_ECHO = """
import sys, threading
from robot_rl.transport.dds import DDSTransport
from robot_rl.transport.messages import Image, JointState
t = DDSTransport(domain_id=int(sys.argv[1]), interface="lo", peers=["127.0.0.1"])
for name, cls in (("js", JointState), ("img", Image)):
    pub = t.publisher(f"/bench/{name}_back", cls)
    t.subscribe(f"/bench/{name}", cls, pub.publish)
print("ready", flush=True)
sys.stdin.read()
"""

RCLPY_ECHO = """
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
rclpy.init()
n = Node("echo")
for name, cls in (("js", JointState), ("img", Image)):
    pub = n.create_publisher(cls, f"/bench/{name}_back", 10)
    n.create_subscription(cls, f"/bench/{name}", pub.publish, 10)
print("ready", flush=True)
try:
    rclpy.spin(n)
except (KeyboardInterrupt, ExternalShutdownException):
    pass
"""

# One ping loop for both pingers, each in its own process: ``publish(msg)`` sends, and the pinger's echo
# callback sets ``event`` when the message whose frame_id is ``want["id"]`` comes back.
PING_LOOP = """
import json, sys, threading, time
import numpy as np
n_msgs, warmup = int(sys.argv[1]), int(sys.argv[2])
want, event = {"id": ""}, threading.Event()
def back(msg):
    if msg.header.frame_id == want["id"]:
        event.set()
IMAGE = np.random.default_rng(0).integers(0, 255, 128 * 128 * 3, dtype=np.uint8).tobytes()
def ping(name, publish, msg):
    want["id"] = msg.header.frame_id = "hello"
    event.clear()
    deadline = time.monotonic() + 60
    while not event.is_set():  # discovery
        if time.monotonic() > deadline:
            raise SystemExit(f"no echo on /bench/{name}_back")
        publish(msg)
        event.wait(0.1)
    times = []
    for i in range(warmup + n_msgs):
        event.clear()
        want["id"] = msg.header.frame_id = str(i)
        start = time.perf_counter()
        publish(msg)
        if not event.wait(5.0):
            raise SystemExit(f"lost echo {i} on {name}")
        times.append(time.perf_counter() - start)
    return times[warmup:]
"""

RCLPY_PING = PING_LOOP + """
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
rclpy.init()
node = Node("ping")
executor = SingleThreadedExecutor()
executor.add_node(node)
stop = threading.Event()
def spin():
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.05)
spinner = threading.Thread(target=spin)
spinner.start()
out = {}
for name, cls, msg in (("js", JointState, JointState(name=[f"joint{i}" for i in range(7)], position=[0.1] * 7,
                                                      velocity=[0.0] * 7)),
                       ("img", Image, Image(height=128, width=128, encoding="rgb8", step=384, data=IMAGE))):
    pub = node.create_publisher(cls, f"/bench/{name}", 10)
    node.create_subscription(cls, f"/bench/{name}_back", back, 10)
    out[name] = ping(name, pub.publish, msg)
stop.set()
spinner.join()
print(json.dumps(out), flush=True)
executor.shutdown()
node.destroy_node()
rclpy.shutdown()
"""

OURS_PING = PING_LOOP + """
from robot_rl.transport.dds import DDSTransport
from robot_rl.transport.messages import Image, JointState
t = DDSTransport(domain_id=int(sys.argv[3]), interface="lo", peers=["127.0.0.1"])
out = {}
for name, msg in (("js", JointState(name=[f"joint{i}" for i in range(7)], position=np.full(7, 0.1),
                                    velocity=np.zeros(7))),
                  ("img", Image(height=128, width=128, encoding="rgb8", step=384, data=IMAGE))):
    pub = t.publisher(f"/bench/{name}", type(msg))
    t.subscribe(f"/bench/{name}_back", type(msg), back)
    out[name] = ping(name, pub.publish, msg)
t.close()
print(json.dumps(out), flush=True)
"""

SIL_OURS = """
import sys, threading
from robot_rl.transport.dds import DDSTransport
t = DDSTransport(domain_id=int(sys.argv[2]), interface="lo", peers=["127.0.0.1"])
if sys.argv[1] == "bridge":
    from robot_rl.config import EnvConfig
    from robot_rl.envs import make_env
    from robot_rl.runtime.robot.env_bridge import BridgeConfig, EnvBridge
    node = EnvBridge(make_env(EnvConfig(task="push", image_size=64, control_hz=10.0)), t,
                     BridgeConfig(realtime=True), control_hz=10.0)
else:
    from robot_rl.runtime.robot.policy_server import PolicyServer, PolicyServerConfig
    node = PolicyServer(t, PolicyServerConfig(checkpoint=sys.argv[3], reload_every_s=0))
print("ready", flush=True)
sys.stdin.read()
node.close()
"""


def _stats(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"median_ms": round(float(np.median(ms)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3), "n": int(ms.size)}


def _ros_env(domain: int) -> dict:
    return dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                RMW_IMPLEMENTATION="rmw_fastrtps_cpp", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
                PYTHONPATH=str(ROOT / "ros_ws" / "src" / "robot_rl_ros"))


def _start(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise SystemExit(f"{cmd[:3]} did not start: {line!r}")
    return proc


def _stop(proc: subprocess.Popen) -> None:
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(timeout=10)


def ping(python: Path | str, script: str, n: int, warmup: int, domain: int) -> dict:
    """Run a pinger in its own process against the echo node on ``domain``; its round trips in seconds."""
    proc = subprocess.run([str(python), "-c", script, str(n), str(warmup), str(domain)], env=_ros_env(domain),
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"a pinger failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def round_trips(ros_python: Path | None, n: int, warmup: int) -> dict:
    results = {}
    domain = random.randint(1, 200)
    echo = _start([sys.executable, "-c", OURS_ECHO, str(domain)])
    try:
        results["ours"] = ping(sys.executable, OURS_PING, n, warmup, domain)
    finally:
        _stop(echo)
    if ros_python is None:
        return {k: {m: _stats(v) for m, v in r.items()} for k, r in results.items()}
    domain = random.randint(1, 200)
    echo = subprocess.Popen([str(ros_python), "-c", RCLPY_ECHO], stdout=subprocess.PIPE, text=True,
                            env=_ros_env(domain))
    try:
        if echo.stdout.readline().strip() != "ready":
            raise SystemExit("the rclpy echo node did not start")
        results["rclpy"] = ping(ros_python, RCLPY_PING, n, warmup, domain)
        results["ours_rclpy"] = ping(sys.executable, OURS_PING, n, warmup, domain)
    finally:
        echo.terminate()
        echo.wait(timeout=20)
    return {k: {m: _stats(v) for m, v in r.items()} for k, r in results.items()}


def random_policy(folder: Path) -> Path:
    """A default-size flow policy for the push task's observations, random weights, fitted normalisers."""
    from robot_rl.policy import make_policy
    from robot_rl.policy.config import FlowConfig, PolicyFeatures

    policy = make_policy("flow", FlowConfig(features=PolicyFeatures(cameras=["front", "wrist"], image_size=64,
                                                                   state_dim=22, action_dim=7)))
    rng = np.random.default_rng(0)
    policy.fit_normalizers(rng.standard_normal((256, 22)).astype(np.float32),
                           rng.uniform(-1, 1, (256, 7)).astype(np.float32))
    return policy.save(folder / "policy")


def sim_in_the_loop(kind: str, checkpoint: Path, seconds: float, ros_python: Path | None) -> dict:
    """Observation-to-action latency with the bridge and the policy in two processes (ours or rclpy nodes)."""
    domain = random.randint(1, 200)
    if kind == "ours":
        procs = [_start([sys.executable, "-c", SIL_OURS, "bridge", str(domain)]),
                 _start([sys.executable, "-c", SIL_OURS, "policy", str(domain), str(checkpoint)])]
    else:
        env = _ros_env(domain)
        procs = [subprocess.Popen([str(ros_python), "-m", f"robot_rl_ros.{node}", "--ros-args", *args],
                                  env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, text=True)
                 for node, args in (("env_bridge", ["-p", "image_size:=64"]),
                                    ("policy_node", ["-p", f"checkpoint:={checkpoint}", "-p", "reload_every_s:=0.0"]))]
    t = DDSTransport(domain_id=domain, **LOOPBACK)
    topics = RobotTopics()
    arrivals: list[tuple[float, float]] = []
    reports: list[dict] = []

    def on_action(msg: Float64MultiArray) -> None:
        now = time.time()
        label = msg.layout.dim[0].label if msg.layout.dim else ""
        if label.startswith("chunk@"):
            sec, _, nsec = label[6:].partition(".")
            arrivals.append((now, int(sec) + int(nsec) * 1e-9))

    t.subscribe(topics.action, Float64MultiArray, on_action, QoS(depth=100))
    t.subscribe(topics.step, String, lambda m: reports.append(json.loads(m.data)), QoS(depth=1000))
    from robot_rl.transport import ServiceClient

    client = ServiceClient(t, topics.episode)
    try:
        client.call({"op": "spec"}, timeout=120)
        time.sleep(5.0 if kind == "rclpy" else 2.0)  # discovery of every topic, and the policy's warm-up
        end = time.monotonic() + seconds
        episodes = 0
        while time.monotonic() < end:
            client.call({"op": "reset", "seed": episodes}, timeout=60)
            episodes += 1
            n = len(reports)
            while time.monotonic() < end and not any(r["terminated"] or r["truncated"] for r in reports[n:]):
                time.sleep(0.05)
        client.call({"op": "stop"}, timeout=10)
    finally:
        client.close()
        t.close()
        for proc in procs:
            if kind == "ours":
                _stop(proc)
            else:
                proc.send_signal(2)
                proc.wait(timeout=30)
    latencies = [now - stamp for now, stamp in arrivals]
    steps = [r for r in reports if r["step"] > 0]
    held = sum(r["held"] is not None for r in steps)
    return {**_stats(latencies), "chunks": len(latencies), "steps": len(steps), "held_steps": held,
            "episodes": episodes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="round trips per message type")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--sil-seconds", type=float, default=20.0, help="sim-in-the-loop time per backend (0: skip)")
    parser.add_argument("--ros-venv", default=str(ROOT / ".venv-ros"),
                        help="the rclpy environment (make test builds it)")
    parser.add_argument("--checkpoint", default=None, help="policy for sim-in-the-loop (default: random weights)")
    args = parser.parse_args()

    ros_python = Path(args.ros_venv) / "bin" / "python"
    if not ros_python.is_file() or (Path(args.ros_venv) / "UNAVAILABLE").exists():
        print(f"no rclpy environment at {args.ros_venv}: only our backend is measured", file=sys.stderr)
        ros_python = None
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                 "round_trip": round_trips(ros_python, args.n, args.warmup)}
    rt = out["round_trip"]
    if "rclpy" in rt:
        out["image_rtt_ours_over_rclpy"] = round(rt["ours"]["img"]["median_ms"] / rt["rclpy"]["img"]["median_ms"], 3)
        out["jointstate_rtt_ours_over_rclpy"] = round(rt["ours"]["js"]["median_ms"] / rt["rclpy"]["js"]["median_ms"],
                                                      3)
        out["image_rtt_bar_1_5x"] = out["image_rtt_ours_over_rclpy"] <= 1.5
    if args.sil_seconds > 0:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = Path(args.checkpoint) if args.checkpoint else random_policy(Path(tmp))
            out["sim_in_the_loop_10hz"] = {"ours": sim_in_the_loop("ours", checkpoint, args.sil_seconds, None)}
            if ros_python is not None:
                out["sim_in_the_loop_10hz"]["rclpy_nodes"] = sim_in_the_loop("rclpy", checkpoint, args.sil_seconds,
                                                                             ros_python)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
