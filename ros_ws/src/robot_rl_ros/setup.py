from glob import glob

from setuptools import find_packages, setup

package_name = "robot_rl_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="robot_rl maintainers",
    maintainer_email="robot-rl@example.com",
    description="Thin rclpy nodes over robot_rl",
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "env_bridge = robot_rl_ros.env_bridge:main",
            "policy_node = robot_rl_ros.policy_node:main",
            "teleop_node = robot_rl_ros.teleop_node:main",
        ],
    },
)
