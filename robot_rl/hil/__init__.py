"""Human in the loop: teleop devices parsed from their raw input (keyboard, gamepad, SpaceMouse, Joy), the
readers that feed them, and the Joy relay that lets an operator take over a robot over ROS 2."""
