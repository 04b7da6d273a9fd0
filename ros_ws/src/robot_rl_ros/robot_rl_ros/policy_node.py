"""policy_node: the inference node. Observations in, action chunks out at the robot's control rate,
the critic's progress reward beside them, new weights picked up from the checkpoint folder."""

from robot_rl.runtime.robot.policy_server import PolicyServer, PolicyServerConfig
from robot_rl.transport.convert import RobotTopics

from robot_rl_ros._node import run

DEFAULTS = {
    "checkpoint": "",
    "critic": "",
    "namespace": "/robot",
    "image_transport": "raw",
    "steps": 0,
    "execute_steps": 0,
    "obs_timeout_s": 0.5,
    "reload_every_s": 2.0,
    "seed": 0,
    "instruction": "",
}


def build(transport, p, logger):
    cfg = PolicyServerConfig(checkpoint=p["checkpoint"], critic=p["critic"] or None,
                             topics=RobotTopics(p["namespace"], p["image_transport"]),
                             steps=p["steps"] or None, execute_steps=p["execute_steps"] or None,
                             obs_timeout_s=p["obs_timeout_s"], reload_every_s=p["reload_every_s"], seed=p["seed"],
                             instruction=p["instruction"] or None)
    return PolicyServer(transport, cfg)


def main(args=None):
    run("policy_node", DEFAULTS, build, args)


if __name__ == "__main__":
    main()
