"""The standard ROS 2 message types robot_rl speaks, as plain dataclasses that any backend carries.

Field names, order and wire kinds follow the ROS 2 (Jazzy) definitions exactly, so a backend can put
them on the wire as ROS 2 does (see ``transport/dds.py``). Numeric sequences are numpy arrays;
image bytes are ``bytes`` (the fast path: one copy, no per-element work).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

# Wire kinds of fields: a primitive name, "string", "bytes" (a uint8 sequence), "<prim>[]" (a sequence of
# primitives), "string[]", or a nested message class / a list of one (``[MultiArrayDimension]``).
_PRIMITIVE_DTYPES = {"bool": np.bool_, "uint8": np.uint8, "int32": np.int32, "uint32": np.uint32,
                     "float32": np.float32, "float64": np.float64}


class Message:
    """Base of every message: ``ros_type`` is the ROS 2 name (``sensor_msgs/msg/JointState``) and
    ``wire`` maps each field, in definition order, to its wire kind."""

    ros_type: ClassVar[str]
    wire: ClassVar[dict[str, Any]]


def _array(kind: str):
    dtype = _PRIMITIVE_DTYPES[kind]
    return field(default_factory=lambda: np.zeros(0, dtype))


@dataclass
class Time(Message):
    ros_type: ClassVar[str] = "builtin_interfaces/msg/Time"
    wire: ClassVar[dict[str, Any]] = {"sec": "int32", "nanosec": "uint32"}
    sec: int = 0
    nanosec: int = 0

    @classmethod
    def now(cls) -> Time:
        ns = time.time_ns()
        return cls(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


@dataclass
class Header(Message):
    ros_type: ClassVar[str] = "std_msgs/msg/Header"
    wire: ClassVar[dict[str, Any]] = {"stamp": Time, "frame_id": "string"}
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""

    @classmethod
    def now(cls, frame_id: str = "") -> Header:
        return cls(stamp=Time.now(), frame_id=frame_id)


@dataclass
class Bool(Message):
    ros_type: ClassVar[str] = "std_msgs/msg/Bool"
    wire: ClassVar[dict[str, Any]] = {"data": "bool"}
    data: bool = False


@dataclass
class String(Message):
    ros_type: ClassVar[str] = "std_msgs/msg/String"
    wire: ClassVar[dict[str, Any]] = {"data": "string"}
    data: str = ""


@dataclass
class MultiArrayDimension(Message):
    ros_type: ClassVar[str] = "std_msgs/msg/MultiArrayDimension"
    wire: ClassVar[dict[str, Any]] = {"label": "string", "size": "uint32", "stride": "uint32"}
    label: str = ""
    size: int = 0
    stride: int = 0


@dataclass
class MultiArrayLayout(Message):
    ros_type: ClassVar[str] = "std_msgs/msg/MultiArrayLayout"
    wire: ClassVar[dict[str, Any]] = {"dim": [MultiArrayDimension], "data_offset": "uint32"}
    dim: list[MultiArrayDimension] = field(default_factory=list)
    data_offset: int = 0


@dataclass
class Float64MultiArray(Message):
    ros_type: ClassVar[str] = "std_msgs/msg/Float64MultiArray"
    wire: ClassVar[dict[str, Any]] = {"layout": MultiArrayLayout, "data": "float64[]"}
    layout: MultiArrayLayout = field(default_factory=MultiArrayLayout)
    data: np.ndarray = _array("float64")


@dataclass
class JointState(Message):
    ros_type: ClassVar[str] = "sensor_msgs/msg/JointState"
    wire: ClassVar[dict[str, Any]] = {"header": Header, "name": "string[]", "position": "float64[]",
                                      "velocity": "float64[]", "effort": "float64[]"}
    header: Header = field(default_factory=Header)
    name: list[str] = field(default_factory=list)
    position: np.ndarray = _array("float64")
    velocity: np.ndarray = _array("float64")
    effort: np.ndarray = _array("float64")


@dataclass
class Image(Message):
    ros_type: ClassVar[str] = "sensor_msgs/msg/Image"
    wire: ClassVar[dict[str, Any]] = {"header": Header, "height": "uint32", "width": "uint32", "encoding": "string",
                                      "is_bigendian": "uint8", "step": "uint32", "data": "bytes"}
    header: Header = field(default_factory=Header)
    height: int = 0
    width: int = 0
    encoding: str = ""
    is_bigendian: int = 0
    step: int = 0
    data: bytes = b""


@dataclass
class CompressedImage(Message):
    ros_type: ClassVar[str] = "sensor_msgs/msg/CompressedImage"
    wire: ClassVar[dict[str, Any]] = {"header": Header, "format": "string", "data": "bytes"}
    header: Header = field(default_factory=Header)
    format: str = ""
    data: bytes = b""


@dataclass
class Joy(Message):
    ros_type: ClassVar[str] = "sensor_msgs/msg/Joy"
    wire: ClassVar[dict[str, Any]] = {"header": Header, "axes": "float32[]", "buttons": "int32[]"}
    header: Header = field(default_factory=Header)
    axes: np.ndarray = _array("float32")
    buttons: np.ndarray = _array("int32")


def primitive_dtype(kind: str) -> np.dtype:
    return np.dtype(_PRIMITIVE_DTYPES[kind])
