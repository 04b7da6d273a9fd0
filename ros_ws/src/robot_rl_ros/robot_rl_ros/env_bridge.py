"""env_bridge: a robot_rl Env (a native MuJoCo task, robosuite, LIBERO) on ROS 2 topics, as a real arm."""

from robot_rl.config import EnvConfig
from robot_rl.envs import make_env
from robot_rl.runtime.robot.env_bridge import BridgeConfig, EnvBridge
from robot_rl.transport.convert import RobotTopics

from robot_rl_ros._node import run

DEFAULTS = {
    "task": "push",
    "cameras": ["front", "wrist"],
    "image_size": 64,
    "control_hz": 10.0,
    "max_steps": 0,
    "namespace": "/robot",
    "image_transport": "raw",
    "realtime": True,
    "action_timeout_s": 0.5,
    "action_limit": 1.0,
}


def build(transport, p, logger):
    env_config = EnvConfig(task=p["task"], cameras=list(p["cameras"]), image_size=p["image_size"],
                           control_hz=p["control_hz"], max_steps=p["max_steps"] or None)
    cfg = BridgeConfig(topics=RobotTopics(p["namespace"], p["image_transport"]), realtime=p["realtime"],
                       action_timeout_s=p["action_timeout_s"], action_limit=p["action_limit"])
    # built on the bridge's thread: robosuite's and LIBERO's renderers work only on the thread that made them
    return EnvBridge(lambda: make_env(env_config), transport, cfg, control_hz=p["control_hz"])


def main(args=None):
    run("env_bridge", DEFAULTS, build, args)


if __name__ == "__main__":
    main()
