"""A real arm: policy_node and teleop_node against the arm's own driver and camera nodes, which speak the
topics in the README's "Deploy on a robot" table.

    ros2 launch robot_rl_ros real_arm.launch.py checkpoint:=/models/push/policy
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    params = os.path.join(get_package_share_directory("robot_rl_ros"), "config", "real_arm.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("checkpoint", description="saved policy folder"),
        Node(package="robot_rl_ros", executable="policy_node", name="policy_node",
             parameters=[params, {"checkpoint": LaunchConfiguration("checkpoint")}]),
        Node(package="robot_rl_ros", executable="teleop_node", name="teleop_node", parameters=[params]),
    ])
