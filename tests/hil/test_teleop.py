"""Teleop for real at a small size: ``robot-rl teleop`` driven through a pseudo-terminal as an operator's
keyboard would (keys, a success label, a reset), recording into a real store; a gamepad read from a device file
(a named pipe standing in for /dev/input/eventN)."""

from __future__ import annotations

import json
import os
import pty
import struct
import subprocess
import sys
import time

import numpy as np

from robot_rl.hil.devices import make_device
from robot_rl.hil.readers import DeviceFileReader
from robot_rl.replay.store import EpisodeStore


def _wait_for(log, text: str, proc, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {text!r} in: " + log.read_text()[-3000:]
        time.sleep(0.05)


def test_robot_rl_teleop_records_what_the_keyboard_drove(tmp_path):
    out, log = tmp_path / "teleop.zarr", tmp_path / "teleop.log"
    master, slave = pty.openpty()
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "robot_rl.cli.main", "teleop", "--device", "keyboard",
                                 "--task", "lift", "--out", str(out), "--episodes", "2", "--max-steps", "400",
                                 "--cameras", "", "--control-hz", "20"],
                                stdin=slave, stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
    os.close(slave)
    try:
        _wait_for(log, "episode 1/2", proc)  # the first step was taken: the session is live
        for keys in (b"w", b"w", b"rr", b" ", b"w"):  # forward, up, close the gripper, forward
            os.write(master, keys)
            time.sleep(0.1)
        os.write(master, b"\r")  # the operator labels the episode a success
        _wait_for(log, "episode 1 committed", proc)
        os.write(master, b"x")  # the next one is reset: discarded
        _wait_for(log, "episode discarded (reset)", proc)
        for _ in range(5):
            os.write(master, b"\x1b[B")  # arrow down: backwards
            time.sleep(0.1)
        os.write(master, b"\x7f")  # backspace: the operator labels it a failure
        stdout, _ = proc.communicate(timeout=120)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log.read_text()[-3000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["episodes"] == 2 and result["discarded"] == 1
    assert result["labels"] == {"success": 1, "failure": 1}
    with EpisodeStore.open(out) as store:
        assert store.num_episodes == 2
        store.verify()
        first, second = store.episode(0), store.episode(1)
    for ep in (first, second):
        assert ep.meta.source == "human" and ep.intervention.all() and ep.terminated[-1]
    assert first.meta.success and first.success[-1]  # the label ends it as a success
    assert not second.meta.success and not second.success.any()
    assert first.meta.seed == 0 and second.meta.seed == 2  # seed 1 went to the discarded episode
    assert (first.action[:, 0] == 1.0).any() and (first.action[:, 2] == 1.0).any()
    assert (first.action[:, 6] == 1.0).any() and first.action[0, 6] == -1.0  # the gripper closed on space
    assert (second.action[:, 0] == -1.0).any() and len(second) < 400


def test_gamepad_read_from_a_device_file(tmp_path):
    fifo = tmp_path / "event0"
    os.mkfifo(fifo)
    reader_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # so the writer's open does not block
    writer = os.open(fifo, os.O_WRONLY)
    pad = make_device("gamepad")
    reader = DeviceFileReader(pad, fifo, per_read=False)
    os.close(reader_fd)
    try:
        events = struct.pack("llHHi", 1, 0, 3, 1, -32768) + struct.pack("llHHi", 1, 0, 1, 310, 1)
        os.write(writer, events[:30])  # a write cut mid-event, as a read() may return it
        reader.read(0.5)
        os.write(writer, events[30:])
        reader.read(0.5)
        cmd = pad.command()
        assert cmd.takeover and cmd.action[0] == 1.0
        start = time.monotonic()
        reader.read(0.2)  # nothing more: returns at the timeout, so a control loop keeps its rate
        assert 0.15 < time.monotonic() - start < 1.0
        np.testing.assert_array_equal(pad.command().action[:6], [1, 0, 0, 0, 0, 0])
    finally:
        os.close(writer)
        reader.close()
