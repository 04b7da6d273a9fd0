"""Sim-in-the-loop: env_bridge on a native MuJoCo task + policy_node (+ teleop_node for takeovers).

    ros2 launch robot_rl_ros sim.launch.py checkpoint:=data/quickstart/rl/policy
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    params = os.path.join(get_package_share_directory("robot_rl_ros"), "config", "sim.yaml")
    checkpoint = LaunchConfiguration("checkpoint")
    return LaunchDescription([
        DeclareLaunchArgument("checkpoint", default_value="data/quickstart/rl/policy",
                              description="saved policy folder"),
        DeclareLaunchArgument("task", default_value="push", description="registered robot_rl task"),
        Node(package="robot_rl_ros", executable="env_bridge", name="env_bridge",
             parameters=[params, {"task": LaunchConfiguration("task")}]),
        Node(package="robot_rl_ros", executable="policy_node", name="policy_node",
             parameters=[params, {"checkpoint": checkpoint}]),
        Node(package="robot_rl_ros", executable="teleop_node", name="teleop_node", parameters=[params]),
    ])
