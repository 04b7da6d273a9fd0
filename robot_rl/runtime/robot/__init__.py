"""What faces a robot: the env bridge (a simulated arm behind the robot's topics), the policy server
(the ROS-facing face of inference), bag import (recordings of any arm into episode stores), and teleop
recording (an operator's device driving a task into a store)."""
