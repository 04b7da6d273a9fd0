"""Teleop devices parse their raw input as the hardware sends it: evdev ``input_event`` structs, SpaceMouse HID
reports and terminal bytes are built here byte for byte per the kernel ABI / the device's report format (no
device is attached to these machines), fed in pieces as a read() returns them, and mapped through the shipped
device maps."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from robot_rl.core.errors import ConfigError
from robot_rl.hil.devices import DEVICES, DeviceMap, make_device
from robot_rl.transport.messages import Joy

REPO = Path(__file__).resolve().parents[2]


def _ev(etype: int, code: int, value: int, sec: int = 1700000000, usec: int = 0) -> bytes:
    return struct.pack("llHHi", sec, usec, etype, code, value)  # struct input_event, 24 bytes on x86-64


SYN = _ev(0, 0, 0)


def test_every_shipped_device_map_loads_and_names_a_known_device():
    names = sorted(p.stem for p in (REPO / "configs" / "devices").glob("*.yaml"))
    assert names == sorted(DEVICES)
    for name in names:
        device = make_device(name)
        assert isinstance(device, DEVICES[name]) and device.command().action.shape == (7,)


def test_device_map_errors_name_what_is_wrong(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("device: gamepad\naxes: {dq: ABS_X}\n")
    with pytest.raises(ConfigError, match="dq"):
        DeviceMap.load(bad)
    bad.write_text("device: wiimote\n")
    with pytest.raises(ConfigError, match="wiimote"):
        DeviceMap.load(bad)
    bad.write_text("device: gamepad\ndeadzon: 0.1\n")
    with pytest.raises(ConfigError, match="deadzon"):
        DeviceMap.load(bad)
    with pytest.raises(ConfigError, match="no device map 'trackball'"):
        DeviceMap.load("trackball")


def test_gamepad_evdev_events_drive_the_action_and_the_deadman():
    pad = make_device("gamepad")
    stream = (_ev(3, 1, -32768) + _ev(3, 0, 16384) + _ev(3, 4, 1000) + _ev(1, 310, 1) + _ev(1, 304, 1) + SYN
              + _ev(1, 315, 1) + _ev(1, 315, 0) + SYN)
    assert pad.feed(stream[:50]) == 2  # a read that ends mid-event keeps the rest for the next one
    assert pad.feed(stream[50:]) == len(stream) // 24 - 2
    cmd = pad.command()
    dz = pad.map.deadzone
    assert cmd.action[0] == pytest.approx(1.0)  # stick fully up (evdev -32768) -> +dx through scale -1
    assert cmd.action[1] == pytest.approx(-((2 * (16384 + 32768) / 65535 - 1) - dz) / (1 - dz), rel=1e-5)
    assert cmd.action[2] == 0.0  # 1000/32768 is inside the dead-zone
    assert cmd.takeover and cmd.action[6] == 1.0  # LB held: the operator has control; A closed the gripper
    assert cmd.success  # START pressed and released between two commands still counts once
    pad.feed(_ev(1, 310, 0) + _ev(3, 1, 0) + SYN)
    cmd = pad.command()
    assert not cmd.takeover and not cmd.success and cmd.action[0] == 0.0 and cmd.action[6] == 1.0
    pad.feed(_ev(1, 308, 1) + SYN)  # X opens the gripper (A is still held: buttons act on their press)
    assert pad.command().action[6] == -1.0
    pad.feed(_ev(1, 316, 1) + SYN)  # the e-stop holds while its button is held
    assert pad.command().estop and pad.command().estop
    pad.feed(_ev(1, 316, 0) + SYN)
    assert not pad.command().estop


def test_spacemouse_hid_reports_both_layouts_and_buttons():
    sm = make_device("spacemouse")
    sm.feed(b"\x01" + struct.pack("<3h", 175, -350, 700))  # translation report (older models)
    sm.feed(b"\x02" + struct.pack("<3h", 0, 0, 35))  # rotation report
    cmd = sm.command()
    dz = sm.map.deadzone
    rescale = lambda v: np.sign(v) * (abs(v) - dz) / (1 - dz)  # noqa: E731
    np.testing.assert_allclose(cmd.action[:6], [-rescale(-1.0), rescale(0.5), -1.0, 0.0, 0.0, -rescale(0.1)],
                               rtol=1e-5)
    sm.feed(b"\x01" + struct.pack("<6h", 0, 0, 0, 0, 0, 0))  # one 6-axis report (newer models)
    assert not sm.command().action[:6].any()
    assert sm.command().action[6] == -1.0
    sm.feed(b"\x03\x01\x00")  # left button down: the gripper toggles once, not on every command while held
    assert sm.command().action[6] == 1.0 and sm.command().action[6] == 1.0
    sm.feed(b"\x03\x02\x00")  # left up, right down: takeover held
    cmd = sm.command()
    assert cmd.takeover and cmd.action[6] == 1.0
    sm.feed(b"\x03\x00\x00")
    assert not sm.command().takeover
    sm.feed(b"\x17\x64")  # a battery report (wireless models): no motion, no error
    with pytest.raises(ConfigError, match="expected 6 or 12"):
        sm.feed(b"\x01\x00\x01")
    with pytest.raises(ConfigError, match="empty"):
        sm.feed(b"")


def test_keyboard_bytes_from_a_raw_terminal():
    kb = make_device("keyboard")
    assert kb.feed(b"w\x1b[") == ["w"]  # an arrow key's escape sequence split across two reads
    assert kb.feed(b"C") == ["right"]
    first = kb.command()
    assert first.action[0] == 1.0 and first.action[1] == -1.0 and not first.takeover
    kb.command()
    assert kb.command().action[0] == 1.0  # held for key_hold_steps (3) commands ...
    assert kb.command().action[0] == 0.0  # ... then released
    kb.feed(b"t ")
    cmd = kb.command()
    assert cmd.takeover and cmd.action[6] == 1.0  # t toggles takeover on, space toggles the gripper
    assert kb.command().takeover  # a toggle stays on
    kb.feed(b"\r")
    assert kb.command().success
    kb.feed(b"t\x7f")
    cmd = kb.command()
    assert not cmd.takeover and cmd.failure
    assert kb.feed(b"\x1b") == []  # a lone escape byte may start an arrow key's sequence: it waits ...
    assert kb.flush() == ["escape"]  # ... until the reader's read times out: then it was Escape, the e-stop
    assert kb.command().estop and not kb.command().estop
    assert kb.feed(b"zQ") == ["z", "q"]  # unmapped keys are reported and ignored; letters are case-free
    assert kb.command().action[5] == 1.0


def test_joy_messages_by_index():
    joy = make_device("joy")
    joy.feed(Joy(axes=np.array([0.5, -1.0, 0, 0, 0.05], np.float32), buttons=np.array([1, 0, 0, 0, 1, 0, 0, 0])))
    cmd = joy.command()
    dz = joy.map.deadzone
    assert cmd.action[0] == pytest.approx(-1.0) and cmd.action[1] == pytest.approx((0.5 - dz) / (1 - dz))
    assert cmd.action[2] == 0.0 and cmd.takeover and cmd.action[6] == 1.0
    with pytest.raises(ConfigError, match="NaN"):
        joy.feed(Joy(axes=np.array([np.nan], np.float32), buttons=np.array([0])))
