"""Teleop devices as parsers of their raw input: a terminal keyboard's bytes, a Linux gamepad's evdev events,
a 3Dconnexion SpaceMouse's HID reports and ROS ``sensor_msgs/Joy``. Each keeps the device's raw state (named
axes in [-1, 1], pressed buttons) and a ``DeviceMap`` (one YAML per device under ``configs/devices/``) turns it
into a ``TeleopCommand``: the 7-D end-effector delta action ``[dx dy dz rx ry rz grip]`` and the operator's
buttons. Opening the hardware is the readers' business (``open_device``); parsing needs none.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.core.errors import ConfigError

DIMS = ("dx", "dy", "dz", "rx", "ry", "rz")
FUNCTIONS = ("takeover", "success", "failure", "reset", "estop", "gripper_close", "gripper_open", "gripper_toggle")


@dataclass
class TeleopCommand:
    """What the operator asks for at one instant."""

    action: np.ndarray  # (7,): dx dy dz rx ry rz in [-1, 1], gripper -1 (open) .. 1 (closed)
    takeover: bool = False
    success: bool = False
    failure: bool = False
    reset: bool = False
    estop: bool = False


@dataclass
class DeviceMap:
    """How a device's named axes and buttons drive the action and the operator's functions."""

    device: str = "gamepad"
    """``keyboard``, ``gamepad``, ``spacemouse`` or ``joy``."""
    axes: dict[str, str | None] = field(default_factory=dict)
    """Action dim (dx ... rz) -> the device axis that drives it (None: none)."""
    scale: dict[str, float] = field(default_factory=dict)
    """Action dim -> gain (a negative one flips the axis); 1 where not given."""
    deadzone: float = 0.1
    """Axis values with a magnitude below this count as 0 (the rest is rescaled to start at 0)."""
    buttons: dict[str, str] = field(default_factory=dict)
    """Function (takeover, success, failure, reset, estop, gripper_close, gripper_open, gripper_toggle) ->
    the device button that triggers it."""
    takeover_mode: str = "hold"
    """``hold``: the operator has control while the button is held (a deadman); ``toggle``: each press flips it
    (a terminal keyboard reports presses, not releases)."""
    ranges: dict[str, list[float]] = field(default_factory=dict)
    """Gamepad: raw [min, max] of an axis (evdev ``absinfo``); others default to [-32768, 32767]."""
    full_scale: float = 350.0
    """SpaceMouse: the raw count that reads as 1."""
    keys: dict[str, list] = field(default_factory=dict)
    """Keyboard: key -> [action dim, value] it sets for ``key_hold_steps`` control steps."""
    key_hold_steps: int = 3
    """Keyboard: control steps a key press keeps its axis set (terminals repeat a held key ~30 Hz)."""

    def validate(self) -> None:
        if self.device not in ("keyboard", "gamepad", "spacemouse", "joy"):
            raise ConfigError(f"unknown teleop device {self.device!r}; known: keyboard, gamepad, spacemouse, joy")
        bad = [k for k in [*self.axes, *self.scale] if k not in DIMS]
        bad += [k for k in self.buttons if k not in FUNCTIONS]
        bad += [f"keys.{k}" for k, v in self.keys.items() if len(v) != 2 or v[0] not in DIMS]
        if bad:
            raise ConfigError(f"device map names unknown entries {bad}; action dims: {DIMS}, functions: {FUNCTIONS}")
        if not 0 <= self.deadzone < 1 or self.full_scale <= 0 or self.key_hold_steps < 1:
            raise ConfigError(f"need 0 <= deadzone < 1, full_scale > 0, key_hold_steps >= 1, got {self.deadzone}, "
                              f"{self.full_scale}, {self.key_hold_steps}")
        if self.takeover_mode not in ("hold", "toggle"):
            raise ConfigError(f"takeover_mode must be 'hold' or 'toggle', got {self.takeover_mode!r}")

    @classmethod
    def load(cls, name_or_path: str | Path) -> DeviceMap:
        """A device's YAML: a path, or the name of one under ``configs/devices/`` (keyboard, gamepad, ...)."""
        import yaml

        path = Path(name_or_path)
        if not path.is_file():
            package = Path(__file__).resolve().parents[1]  # an installed wheel's copy, or the source tree's
            for folder in (package / "_devices", package.parent / "configs" / "devices"):
                if (folder / f"{name_or_path}.yaml").is_file():
                    path = folder / f"{name_or_path}.yaml"
                    break
        if not path.is_file():
            raise ConfigError(f"no device map {name_or_path!r} (a YAML path, or one of configs/devices/*.yaml)")
        data = yaml.safe_load(path.read_text()) or {}
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
        out = cls(**data)
        out.validate()
        return out


class TeleopDevice:
    """Raw state -> TeleopCommand, shared by every device; subclasses parse their raw input into ``axes``
    (name -> [-1, 1]) and ``pressed`` (button names held now), and list one-shot ``presses``."""

    def __init__(self, mapping: DeviceMap) -> None:
        mapping.validate()
        self.map = mapping
        self.axes: dict[str, float] = {}
        self.pressed: set[str] = set()
        self.presses: list[str] = []  # buttons pressed since the last command (edges)
        self.gripper = -1.0
        self.takeover = False

    def _press(self, button: str, down: bool) -> None:
        if down and button not in self.pressed:
            self.presses.append(button)
        (self.pressed.add if down else self.pressed.discard)(button)

    def command(self) -> TeleopCommand:
        m = self.map
        action = np.zeros(7, np.float32)
        for i, dim in enumerate(DIMS):
            axis = m.axes.get(dim)
            value = float(self.axes.get(axis, 0.0)) if axis is not None else 0.0
            if abs(value) < m.deadzone:
                value = 0.0
            else:  # rescaled past the dead-zone: no jump from 0 to the dead-zone's edge
                value = np.sign(value) * (abs(value) - m.deadzone) / (1.0 - m.deadzone)
            action[i] = np.clip(m.scale.get(dim, 1.0) * value, -1.0, 1.0)
        fn = {f: b for f, b in m.buttons.items()}
        edges = set(self.presses)
        self.presses = []

        def pressed(function: str) -> bool:  # pressed since the last command: a held key labels once
            return fn.get(function, "\0") in edges

        if pressed("gripper_close"):
            self.gripper = 1.0
        elif pressed("gripper_open"):
            self.gripper = -1.0
        if pressed("gripper_toggle"):
            self.gripper = -self.gripper
        action[6] = self.gripper
        if m.takeover_mode == "hold":
            self.takeover = fn.get("takeover") in self.pressed or pressed("takeover")
        elif pressed("takeover"):
            self.takeover = not self.takeover
        estop = pressed("estop") or fn.get("estop") in self.pressed  # held: stays stopped
        return TeleopCommand(action=action, takeover=self.takeover, success=pressed("success"),
                             failure=pressed("failure"), reset=pressed("reset"), estop=estop)


# ----------------------------------------------------------------------------------------- keyboard
_ESCAPES = {b"\x1b[A": "up", b"\x1b[B": "down", b"\x1b[C": "right", b"\x1b[D": "left",
            b"\x1b[5~": "pageup", b"\x1b[6~": "pagedown"}
_NAMED = {b" ": "space", b"\r": "enter", b"\n": "enter", b"\x7f": "backspace", b"\x08": "backspace",
          b"\t": "tab", b"\x1b": "escape"}


class KeyboardTeleop(TeleopDevice):
    """A terminal in raw mode (no X): bytes in, key names out. A key sets its axis for ``key_hold_steps``
    commands; keys not in the map are ignored."""

    def __init__(self, mapping: DeviceMap) -> None:
        super().__init__(mapping)
        self._buf = b""
        self._hold: dict[str, tuple[float, int]] = {}  # dim -> (value, commands left)

    @staticmethod
    def parse(data: bytes) -> tuple[list[str], bytes]:
        """Key names in ``data`` and the bytes of an escape sequence cut short at its end (to prepend to the
        next read)."""
        keys, i = [], 0
        while i < len(data):
            if data[i:i + 1] == b"\x1b":
                for seq, name in _ESCAPES.items():
                    if data.startswith(seq, i):
                        keys.append(name)
                        i += len(seq)
                        break
                else:
                    rest = data[i:]
                    if any(seq.startswith(rest) for seq in _ESCAPES) and len(rest) < 4:
                        return keys, rest  # the rest of the sequence is in the next read
                    keys.append("escape")
                    i += 1
                continue
            ch = data[i:i + 1]
            keys.append(_NAMED.get(ch, ch.decode("latin-1").lower()))
            i += 1
        return keys, b""

    def flush(self) -> list[str]:
        """A read that timed out: a lone escape byte waiting for the rest of a sequence was the Escape key."""
        data, self._buf = self._buf, b""
        keys = ["escape"] + self.parse(data[1:])[0] if data else []
        self.presses.extend(keys)
        return keys

    def feed(self, data: bytes) -> list[str]:
        keys, self._buf = self.parse(self._buf + data)
        for key in keys:
            if key in self.map.keys:
                dim, value = self.map.keys[key]
                self._hold[dim] = (float(value), self.map.key_hold_steps)
            self.presses.append(key)
        return keys

    def command(self) -> TeleopCommand:
        self.axes = {}
        for dim, (value, left) in list(self._hold.items()):
            self.axes[dim] = value
            self._hold[dim] = (value, left - 1)
            if left <= 1:
                del self._hold[dim]
        return super().command()


# ------------------------------------------------------------------------------------------ gamepad
EV_SYN, EV_KEY, EV_ABS = 0, 1, 3
EVENT = struct.Struct("llHHi")  # struct input_event on 64-bit Linux: timeval, type, code, value (24 bytes)
ABS_NAMES = {0: "ABS_X", 1: "ABS_Y", 2: "ABS_Z", 3: "ABS_RX", 4: "ABS_RY", 5: "ABS_RZ", 16: "ABS_HAT0X",
             17: "ABS_HAT0Y"}
KEY_NAMES = {304: "BTN_SOUTH", 305: "BTN_EAST", 307: "BTN_NORTH", 308: "BTN_WEST", 310: "BTN_TL", 311: "BTN_TR",
             312: "BTN_TL2", 313: "BTN_TR2", 314: "BTN_SELECT", 315: "BTN_START", 316: "BTN_MODE",
             317: "BTN_THUMBL", 318: "BTN_THUMBR"}


class GamepadTeleop(TeleopDevice):
    """A Linux gamepad's evdev events (``/dev/input/eventN``): ``input_event`` structs in, named axes and
    buttons out (Xbox-style names; other codes read as ``ABS_<n>`` / ``KEY_<n>``)."""

    def __init__(self, mapping: DeviceMap) -> None:
        super().__init__(mapping)
        self._buf = b""

    def _normalise(self, name: str, raw: int) -> float:
        lo, hi = self.map.ranges.get(name, [-32768, 32767])
        if hi <= lo:
            raise ConfigError(f"gamepad range of {name} must have max > min, got {[lo, hi]}")
        if lo >= 0:  # a trigger: 0 .. 1
            return float(np.clip((raw - lo) / (hi - lo), 0.0, 1.0))
        return float(np.clip(2.0 * (raw - lo) / (hi - lo) - 1.0, -1.0, 1.0))

    def feed(self, data: bytes) -> int:
        """Parse whole events (a partial one waits for the next read); returns how many were parsed."""
        data = self._buf + data
        n = len(data) // EVENT.size
        for k in range(n):
            _, _, etype, code, value = EVENT.unpack_from(data, k * EVENT.size)
            if etype == EV_ABS:
                name = ABS_NAMES.get(code, f"ABS_{code}")
                self.axes[name] = self._normalise(name, value)
            elif etype == EV_KEY:
                self._press(KEY_NAMES.get(code, f"KEY_{code}"), value != 0)  # 1 press, 2 autorepeat, 0 release
        self._buf = data[n * EVENT.size:]
        return n


# --------------------------------------------------------------------------------------- spacemouse
class SpaceMouseTeleop(TeleopDevice):
    """A 3Dconnexion SpaceMouse's HID input reports: id 1 translation (x y z int16 little-endian; 6 axes in
    one report on newer models), id 2 rotation, id 3 buttons (a bitmask: ``button_0``, ``button_1``, ...)."""

    def feed(self, report: bytes) -> None:
        if not report:
            raise ConfigError("empty SpaceMouse HID report")
        rid, body = report[0], report[1:]
        fs = self.map.full_scale
        if rid in (1, 2):
            count = len(body) // 2
            if count not in (3, 6):
                raise ConfigError(f"SpaceMouse report {rid} carries {len(body)} bytes; expected 6 or 12")
            values = struct.unpack(f"<{count}h", body[: 2 * count])
            names = ("x", "y", "z", "rx", "ry", "rz") if count == 6 else \
                (("x", "y", "z") if rid == 1 else ("rx", "ry", "rz"))
            for name, v in zip(names, values):
                self.axes[name] = float(np.clip(v / fs, -1.0, 1.0))
        elif rid == 3:
            bits = int.from_bytes(body, "little")
            for b in range(8 * len(body)):
                self._press(f"button_{b}", bool(bits >> b & 1))
        # other report ids (battery, LEDs on wireless models) carry no motion


# ---------------------------------------------------------------------------------------------- Joy
class JoyDevice(TeleopDevice):
    """ROS ``sensor_msgs/Joy``: axes ``"0"``, ``"1"``, ... and buttons ``"0"``, ``"1"``, ... by index."""

    def feed(self, msg: Any) -> None:
        axes = np.asarray(msg.axes, np.float64)
        if not np.all(np.isfinite(axes)):
            raise ConfigError("Joy axes contain NaN or inf")
        self.axes = {str(i): float(np.clip(v, -1.0, 1.0)) for i, v in enumerate(axes)}
        for i, b in enumerate(msg.buttons):
            self._press(str(i), bool(b))


DEVICES = {"keyboard": KeyboardTeleop, "gamepad": GamepadTeleop, "spacemouse": SpaceMouseTeleop, "joy": JoyDevice}


def make_device(name_or_path: str | Path) -> TeleopDevice:
    """The parser for a device map (a name under ``configs/devices/`` or a YAML path)."""
    mapping = DeviceMap.load(name_or_path)
    return DEVICES[mapping.device](mapping)
