"""Teleop: a gamepad's sensor_msgs/Joy turned into end-effector delta actions and a takeover flag.

The operator holds the deadman button to take over; while held, the robot executes the teleop action
instead of the policy's and marks the step as an intervention. Releasing it hands control back.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from robot_rl.core.errors import ConfigError
from robot_rl.transport import Transport
from robot_rl.transport.convert import RobotTopics, chunk_to_msg
from robot_rl.transport.messages import Bool, Float64MultiArray, Joy


@dataclass
class JoyMapping:
    """Which Joy axes and buttons drive which action dims (defaults: an Xbox-style pad)."""

    axes: list[int] = field(default_factory=lambda: [1, 0, 4, -1, -1, 3])
    """Joy axis for each of dx, dy, dz, rx, ry, rz (-1: none)."""
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    """Gain (sign flips an axis) for each of those dims."""
    deadzone: float = 0.1
    """Axis values with a magnitude below this count as 0."""
    deadman_button: int = 4
    """Held: the operator has control."""
    gripper_close_button: int = 0
    gripper_open_button: int = 1

    def validate(self) -> None:
        if len(self.axes) != 6 or len(self.scale) != 6:
            raise ConfigError(f"axes and scale need 6 entries (dx dy dz rx ry rz), got {len(self.axes)}, "
                              f"{len(self.scale)}")
        if not 0 <= self.deadzone < 1:
            raise ConfigError(f"deadzone must be in [0, 1), got {self.deadzone}")


class JoyTeleop:
    """Maps Joy messages to a 7-dim action ([dx dy dz rx ry rz grip]) and the takeover flag."""

    def __init__(self, mapping: JoyMapping | None = None) -> None:
        self.mapping = mapping or JoyMapping()
        self.mapping.validate()
        self.gripper = -1.0  # open

    def __call__(self, msg: Joy) -> tuple[np.ndarray, bool]:
        m = self.mapping
        axes, buttons = np.asarray(msg.axes, np.float64), np.asarray(msg.buttons)
        need_axes = max(m.axes) + 1
        need_buttons = max(m.deadman_button, m.gripper_close_button, m.gripper_open_button) + 1
        if axes.size < need_axes or buttons.size < need_buttons:
            raise ConfigError(f"Joy has {axes.size} axes and {buttons.size} buttons; the mapping needs "
                              f"{need_axes} and {need_buttons}")
        if not np.all(np.isfinite(axes)):
            raise ConfigError("Joy axes contain NaN or inf")
        action = np.zeros(7, np.float32)
        for dim, (axis, gain) in enumerate(zip(m.axes, m.scale)):
            if axis >= 0:
                value = float(axes[axis])
                action[dim] = 0.0 if abs(value) < m.deadzone else np.clip(gain * value, -1.0, 1.0)
        if buttons[m.gripper_close_button]:
            self.gripper = 1.0
        elif buttons[m.gripper_open_button]:
            self.gripper = -1.0
        action[6] = self.gripper
        return action, bool(buttons[m.deadman_button])


class TeleopRelay:
    """Subscribes to a Joy topic and publishes the robot's teleop action and takeover topics."""

    def __init__(self, transport: Transport, joy_topic: str = "/joy", topics: RobotTopics | None = None,
                 mapping: JoyMapping | None = None) -> None:
        self.topics = topics or RobotTopics()
        self.teleop = JoyTeleop(mapping)
        self._lock = threading.Lock()
        self._pub_action = transport.publisher(self.topics.teleop_action, Float64MultiArray)
        self._pub_takeover = transport.publisher(self.topics.takeover, Bool)
        self._sub = transport.subscribe(joy_topic, Joy, self._on_joy)
        self.takeover = False

    def _on_joy(self, msg: Joy) -> None:
        action, takeover = self.teleop(msg)  # raises on a malformed Joy: logged and dropped
        with self._lock:
            self._pub_action.publish(chunk_to_msg(action[None]))
            self._pub_takeover.publish(Bool(data=takeover))  # every time: a bridge that joins late learns it too
            self.takeover = takeover

    def close(self) -> None:
        self._sub.close()
