"""Where a teleop device's raw input comes from: a terminal in raw mode (keyboard), ``/dev/input/eventN``
(gamepad, read as kernel ``input_event`` structs: no X, no extra library), ``/dev/hidrawN`` (SpaceMouse HID
reports). Each ``read(timeout_s)`` feeds what arrived to its device parser and returns without waiting longer
than the timeout, so a control loop keeps its rate."""

from __future__ import annotations

import os
import select
import sys
from pathlib import Path
from typing import Any

from robot_rl.core.errors import ConfigError
from robot_rl.hil.devices import GamepadTeleop, KeyboardTeleop, SpaceMouseTeleop, TeleopDevice, make_device


class TerminalReader:
    """Keys from a terminal (``fd``: stdin by default) switched to cbreak mode (keys arrive one by one, no
    echo, Ctrl-C still interrupts) and restored on ``close``."""

    def __init__(self, device: KeyboardTeleop, fd: int | None = None) -> None:
        import termios
        import tty

        self.device, self.fd = device, sys.stdin.fileno() if fd is None else fd
        if not os.isatty(self.fd):
            raise ConfigError("the keyboard device reads a terminal: run it in one (stdin is not a tty)")
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)

    def read(self, timeout_s: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], max(timeout_s, 0.0))
        if ready:
            self.device.feed(os.read(self.fd, 1024))
        else:
            self.device.flush()  # a lone escape byte with nothing after it was the Escape key

    def close(self) -> None:
        import termios

        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)


class DeviceFileReader:
    """A character device (``/dev/input/eventN`` or ``/dev/hidrawN``) read without blocking; ``per_read``:
    feed each read() whole (a HID report) instead of as a byte stream (evdev events)."""

    def __init__(self, device: TeleopDevice, path: str | Path, per_read: bool) -> None:
        self.device, self.per_read = device, per_read
        try:
            self.fd = os.open(str(path), os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise ConfigError(f"cannot open teleop device {path}: {exc.strerror} (is it plugged in, and are you in "
                              "the group that may read it, e.g. 'input' or 'plugdev'?)") from None

    def read(self, timeout_s: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], max(timeout_s, 0.0))
        while ready:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                return
            if not data:
                return
            self.device.feed(data)
            ready, _, _ = select.select([self.fd], [], [], 0.0)

    def close(self) -> None:
        os.close(self.fd)


def open_device(name_or_path: str, path: str | None = None) -> tuple[TeleopDevice, Any]:
    """The device parser for a device map and a reader of its input (``path``: the gamepad's
    ``/dev/input/eventN`` or the SpaceMouse's ``/dev/hidrawN``; the keyboard reads this terminal)."""
    device = make_device(name_or_path)
    if isinstance(device, KeyboardTeleop):
        return device, TerminalReader(device)
    if isinstance(device, (GamepadTeleop, SpaceMouseTeleop)):
        if path is None:
            kind = "/dev/input/eventN" if isinstance(device, GamepadTeleop) else "/dev/hidrawN"
            raise ConfigError(f"the {device.map.device} device needs --device-path ({kind})")
        return device, DeviceFileReader(device, path, per_read=isinstance(device, SpaceMouseTeleop))
    raise ConfigError(f"the {device.map.device} device is read from ROS topics (TeleopRelay), not by robot-rl teleop")
