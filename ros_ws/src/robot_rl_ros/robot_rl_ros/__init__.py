"""Thin rclpy nodes over robot_rl: each builds a robot_rl object (EnvBridge, PolicyServer, TeleopRelay)
on an RclpyTransport, the rclpy implementation of robot_rl's transport interface."""
