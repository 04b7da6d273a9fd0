"""The transport: in-process and DDS backends, request/reply, message conversions and their errors."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import time

import numpy as np
import pytest

from robot_rl.core.errors import ConfigError
from robot_rl.transport import InProcBus, InProcTransport, Latest, ServiceClient, ServiceServer, TransportError
from robot_rl.transport.convert import (
    array_to_msg,
    chunk_to_msg,
    compressed_to_image,
    image_to_compressed,
    image_to_msg,
    msg_to_chunk,
    msg_to_image,
)
from robot_rl.transport.messages import Float64MultiArray, Header, Image, JointState, String, Time

LOOPBACK = {"interface": "lo", "peers": ["127.0.0.1"]}


def test_inproc_pubsub_and_types():
    t = InProcTransport(InProcBus())
    got = Latest(t, "/a", JointState)
    t.publisher("a", JointState).publish(JointState(name=["j"], position=np.array([1.0])))  # relative name: /a
    assert got.wait(timeout=2).name == ["j"]
    with pytest.raises(ConfigError, match="carries sensor_msgs/msg/JointState"):
        t.publisher("/a", Image)
    with pytest.raises(ConfigError, match="invalid topic name"):
        t.publisher("/bad topic", String)
    t.close()


def test_callback_errors_are_logged_and_the_subscription_survives(caplog):
    t = InProcTransport(InProcBus())
    seen = []

    def callback(msg):
        if msg.data == "bad":
            raise ValueError("boom")
        seen.append(msg.data)

    t.subscribe("/s", String, callback)
    pub = t.publisher("/s", String)
    with caplog.at_level(logging.ERROR):
        for data in ("bad", "good"):
            pub.publish(String(data=data))
        deadline = time.monotonic() + 2
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
    assert seen == ["good"]
    assert "dropped a message on /s: ValueError: boom" in caplog.text


def test_service_replies_once_per_request_and_reports_errors(caplog):
    t = InProcTransport(InProcBus())
    calls = []

    def handler(req):
        calls.append(req["id"])
        if req.get("op") == "fail":
            raise ConfigError("no such op")
        return {"echo": req["x"]}

    server = ServiceServer(t, "/svc", handler)
    client = ServiceClient(t, "/svc")
    assert client.call({"x": 3})["echo"] == 3
    with pytest.raises(TransportError, match="no such op"):
        client.call({"op": "fail"})
    with caplog.at_level(logging.ERROR):
        t.publisher("/svc/request", String).publish(String(data="{not json"))
        time.sleep(0.2)
    assert "malformed request" in caplog.text
    assert len(calls) == 2  # the malformed request never reached the handler
    server.close()
    with pytest.raises(TransportError, match="no reply from /svc"):
        client.call({"x": 1}, timeout=0.3)


def test_image_conversions():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)
    msg = image_to_msg(img, Header.now("cam"))
    assert msg.step == 15 and len(msg.data) == 90
    assert np.array_equal(msg_to_image(msg), img)
    bgr = Image(height=6, width=5, encoding="bgr8", step=16, data=np.pad(img[..., ::-1].reshape(6, 15),
                                                                         ((0, 0), (0, 1))).tobytes())
    assert np.array_equal(msg_to_image(bgr), img)  # padded rows, BGR order
    with pytest.raises(ConfigError, match="Image.data has 89 bytes, expected height\\*step = 90"):
        msg_to_image(Image(height=6, width=5, encoding="rgb8", step=15, data=bytes(89)))
    with pytest.raises(ConfigError, match="encoding 'yuv422' is not supported"):
        msg_to_image(Image(height=1, width=1, encoding="yuv422", step=2, data=bytes(2)))
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 1, 3))
    back = compressed_to_image(image_to_compressed(smooth, quality=95))
    assert back.shape == smooth.shape and np.abs(back.astype(int) - smooth).mean() < 3
    bad = image_to_compressed(smooth)
    bad.data = b"\x00" * 20
    with pytest.raises(ConfigError, match="could not be decoded"):
        compressed_to_image(bad)


def test_chunk_conversions_and_errors():
    chunk = np.arange(14, dtype=np.float32).reshape(2, 7) / 10
    stamp = Time(sec=12, nanosec=345)
    back, got = msg_to_chunk(chunk_to_msg(chunk, stamp), 7)
    assert np.allclose(back, chunk) and got == stamp
    flat = Float64MultiArray(data=np.zeros(14))
    assert msg_to_chunk(flat, 7)[0].shape == (2, 7)
    with pytest.raises(ConfigError, match="action chunk has 5 values, expected a positive multiple of 7"):
        msg_to_chunk(Float64MultiArray(data=np.zeros(5)), 7)
    with pytest.raises(ConfigError, match="NaN or inf"):
        msg_to_chunk(chunk_to_msg(np.full((1, 7), np.nan)), 7)
    broken = array_to_msg(np.zeros((2, 7)), ["chunk", "action"])
    broken.data = np.zeros(13)
    with pytest.raises(ConfigError, match="layout \\(2, 7\\) holds 14 values but data has 13"):
        msg_to_chunk(broken, 7)


# ---------------------------------------------------------------------------------------------- DDS
dds = pytest.importorskip("robot_rl.transport.dds", reason="the DDS backend needs the ros extra (cyclonedds)")


def test_dds_image_fast_path_writes_ros_bytes():
    """The one-copy bytes encoding must give exactly the bytes of cyclonedds' element-wise sequence<uint8>."""
    from cyclonedds.idl import annotations, make_idl_struct

    wire = dds._WireType.of(Image)
    slow_type = annotations.final(make_idl_struct("ImageSlow_", "test::ImageSlow_", dict(wire.idl.__annotations__)))
    msg = Image(header=Header(stamp=Time(sec=5, nanosec=7), frame_id="front"), height=2, width=3, encoding="rgb8",
                step=9, data=bytes(range(18)) * 1)
    fast = wire.to_wire(msg)
    values = {name: getattr(fast, name) for name in wire.idl.__annotations__}
    values["data"] = list(msg.data)
    slow = slow_type(**values)
    assert fast.serialize(use_version_2=False) == slow.serialize(use_version_2=False)
    assert wire.from_wire(fast).data == msg.data
    assert dds.dds_topic_name("/joint_states") == "rt/joint_states"
    assert wire.typename == "sensor_msgs::msg::dds_::Image_"


ECHO = """
import sys, time
from robot_rl.transport.dds import DDSTransport
from robot_rl.transport.messages import Image, JointState
t = DDSTransport(domain_id=int(sys.argv[1]), interface="lo", peers=["127.0.0.1"])
pubs = {"js": t.publisher("/echo/js_back", JointState), "img": t.publisher("/echo/img_back", Image)}
t.subscribe("/echo/js", JointState, pubs["js"].publish)
t.subscribe("/echo/img", Image, pubs["img"].publish)
print("ready", flush=True)
sys.stdin.read()
t.close()
"""


def test_dds_backend_between_two_processes():
    domain = random.randint(1, 200)
    proc = subprocess.Popen([sys.executable, "-c", ECHO, str(domain)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        t = dds.DDSTransport(domain_id=domain, **LOOPBACK)
        js_back, img_back = Latest(t, "/echo/js_back", JointState), Latest(t, "/echo/img_back", Image)
        js_pub, img_pub = t.publisher("/echo/js", JointState), t.publisher("/echo/img", Image)
        msg = JointState(header=Header.now("base"), name=["a", "b"], position=np.array([0.25, -2.0]))
        deadline = time.monotonic() + 20
        while js_back.count == 0 and time.monotonic() < deadline:  # discovery
            js_pub.publish(msg)
            time.sleep(0.1)
        assert js_back.msg.name == ["a", "b"] and np.array_equal(js_back.msg.position, [0.25, -2.0])
        assert js_back.msg.header.stamp == msg.header.stamp
        img = np.random.default_rng(1).integers(0, 255, (128, 128, 3), dtype=np.uint8)
        for i in range(5):
            n = img_back.count
            img_pub.publish(image_to_msg(img, Header(stamp=Time(sec=i), frame_id="front")))
            out = img_back.wait(after=n, timeout=5)
        assert out.header.stamp.sec == 4 and np.array_equal(msg_to_image(out), img)
        t.close()
    finally:
        proc.stdin.close()
        proc.wait(timeout=20)


def test_dds_domain_id_is_checked():
    with pytest.raises(ConfigError, match="domain id must be in \\[0, 232\\]"):
        dds.DDSTransport(domain_id=999)
