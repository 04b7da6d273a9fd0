"""robot_rl: real-world reinforcement learning for robot manipulation with a vision-language critic."""

__version__ = "0.1.0"
