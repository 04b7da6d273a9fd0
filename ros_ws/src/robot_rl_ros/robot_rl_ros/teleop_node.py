"""teleop_node: sensor_msgs/Joy (a gamepad, e.g. from joy_node) to the robot's teleop action and takeover flag."""

from robot_rl.hil.teleop import JoyMapping, TeleopRelay
from robot_rl.transport.convert import RobotTopics

from robot_rl_ros._node import run

DEFAULTS = {
    "joy_topic": "/joy",
    "namespace": "/robot",
    "axes": [1, 0, 4, -1, -1, 3],
    "scale": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    "deadzone": 0.1,
    "deadman_button": 4,
    "gripper_close_button": 0,
    "gripper_open_button": 1,
}


def build(transport, p, logger):
    mapping = JoyMapping(axes=list(p["axes"]), scale=list(p["scale"]), deadzone=p["deadzone"],
                         deadman_button=p["deadman_button"], gripper_close_button=p["gripper_close_button"],
                         gripper_open_button=p["gripper_open_button"])
    return TeleopRelay(transport, p["joy_topic"], RobotTopics(p["namespace"]), mapping)


def main(args=None):
    run("teleop_node", DEFAULTS, build, args)


if __name__ == "__main__":
    main()
