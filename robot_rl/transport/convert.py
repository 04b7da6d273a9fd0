"""Conversions between ROS 2 messages and robot_rl's observations and action chunks, and the topic
names a robot speaks on. Every decoder checks what it is given and raises ConfigError naming the
message, the field and what was expected, so a node can log and drop a malformed message.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from robot_rl.core.errors import ConfigError
from robot_rl.transport.messages import (
    CompressedImage,
    Float64MultiArray,
    Header,
    Image,
    JointState,
    MultiArrayDimension,
    MultiArrayLayout,
    Time,
)

IMAGE_ENCODINGS = {"rgb8": 3, "bgr8": 3, "mono8": 1}


@dataclass
class RobotTopics:
    """The topics of one robot (real or simulated), under ``namespace``. The README's "Deploy on a robot"
    table documents each."""

    namespace: str = "/robot"
    """Prefix of every topic below, so that two robots share a domain."""
    image_transport: str = "raw"
    """``raw`` (sensor_msgs/Image) or ``jpeg`` (sensor_msgs/CompressedImage on ``.../compressed``)."""

    def __post_init__(self) -> None:
        if not self.namespace.startswith("/") or self.namespace.endswith("/"):
            raise ConfigError(f"namespace must start with / and not end with /, got {self.namespace!r}")
        if self.image_transport not in ("raw", "jpeg"):
            raise ConfigError(f"image_transport must be 'raw' or 'jpeg', got {self.image_transport!r}")

    def _t(self, name: str) -> str:
        return f"{self.namespace}/{name}"

    @property
    def joint_states(self) -> str:
        return self._t("joint_states")

    @property
    def state(self) -> str:
        return self._t("robot_rl/state")

    @property
    def image_type(self) -> type[Image] | type[CompressedImage]:
        return CompressedImage if self.image_transport == "jpeg" else Image

    def image(self, camera: str) -> str:
        return self._t(f"{camera}/image_raw" + ("/compressed" if self.image_transport == "jpeg" else ""))

    @property
    def action(self) -> str:
        return self._t("robot_rl/action")

    @property
    def step(self) -> str:
        return self._t("robot_rl/step")

    @property
    def episode(self) -> str:
        return self._t("robot_rl/episode")

    @property
    def estop(self) -> str:
        return self._t("estop")

    @property
    def teleop_action(self) -> str:
        return self._t("teleop/action")

    @property
    def takeover(self) -> str:
        return self._t("teleop/takeover")

    @property
    def label(self) -> str:
        """std_msgs/String ``success`` or ``failure``: the operator ends the episode with that outcome."""
        return self._t("teleop/label")

    @property
    def reward(self) -> str:
        return self._t("robot_rl/reward")


# ------------------------------------------------------------------------------------------- images
def image_to_msg(image: np.ndarray, header: Header | None = None) -> Image:
    """HxWx3 uint8 RGB (or HxW mono) -> sensor_msgs/Image, bytes in one copy."""
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ConfigError(f"an image must be uint8 HxWx3 or HxW, got {image.dtype} {image.shape}")
    channels = 1 if image.ndim == 2 else 3
    return Image(header=header or Header.now(), height=image.shape[0], width=image.shape[1],
                 encoding="rgb8" if channels == 3 else "mono8", is_bigendian=0, step=image.shape[1] * channels,
                 data=image.tobytes())


def msg_to_image(msg: Image) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8 or mono8, rows padded or not) -> HxWx3 uint8 RGB."""
    channels = IMAGE_ENCODINGS.get(msg.encoding)
    if channels is None:
        raise ConfigError(f"Image.encoding {msg.encoding!r} is not supported; expected one of {list(IMAGE_ENCODINGS)}")
    if msg.height < 1 or msg.width < 1 or msg.step < msg.width * channels:
        raise ConfigError(f"Image is {msg.height}x{msg.width} with step {msg.step}: "
                          f"expected a positive size and step >= width*{channels}")
    if len(msg.data) != msg.height * msg.step:
        raise ConfigError(f"Image.data has {len(msg.data)} bytes, expected height*step = {msg.height * msg.step}")
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, : msg.width * channels]
    image = rows.reshape(msg.height, msg.width, channels)
    if msg.encoding == "mono8":
        return np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., ::-1] if msg.encoding == "bgr8" else image)


def image_to_compressed(image: np.ndarray, quality: int = 90, header: Header | None = None) -> CompressedImage:
    """HxWx3 uint8 RGB -> JPEG sensor_msgs/CompressedImage (format as image_transport writes it)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ConfigError(f"an image must be uint8 HxWx3, got {image.dtype} {image.shape}")
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ConfigError("JPEG encoding failed")
    return CompressedImage(header=header or Header.now(), format="rgb8; jpeg compressed bgr8", data=buf.tobytes())


def compressed_to_image(msg: CompressedImage) -> np.ndarray:
    """JPEG or PNG sensor_msgs/CompressedImage -> HxWx3 uint8 RGB."""
    image = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR) if len(msg.data) else None
    if image is None:
        raise ConfigError(f"CompressedImage ({msg.format!r}, {len(msg.data)} bytes) could not be decoded")
    return np.ascontiguousarray(image[..., ::-1])


# ----------------------------------------------------------------------------------- arrays, chunks
def array_to_msg(array: np.ndarray, labels: list[str]) -> Float64MultiArray:
    """An n-d float array -> std_msgs/Float64MultiArray with one labelled, row-major dimension per axis."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != len(labels):
        raise ConfigError(f"array has {array.ndim} dims but {len(labels)} labels {labels}")
    dims, stride = [], int(array.size)
    for label, size in zip(labels, array.shape):
        dims.append(MultiArrayDimension(label=label, size=int(size), stride=stride))
        stride = stride // max(int(size), 1)
    return Float64MultiArray(layout=MultiArrayLayout(dim=dims, data_offset=0), data=array.reshape(-1))


def msg_to_array(msg: Float64MultiArray, what: str = "array") -> np.ndarray:
    """std_msgs/Float64MultiArray -> an array shaped by its layout (1-d when it has none)."""
    data = np.asarray(msg.data, dtype=np.float64)[msg.layout.data_offset:]
    if not msg.layout.dim:
        return data
    shape = tuple(int(d.size) for d in msg.layout.dim)
    if int(np.prod(shape)) != data.size:
        raise ConfigError(f"{what}: layout {shape} holds {int(np.prod(shape))} values but data has {data.size}")
    return data.reshape(shape)


def chunk_to_msg(chunk: np.ndarray, stamp: Time | None = None) -> Float64MultiArray:
    """An action chunk (H, A) -> Float64MultiArray; the stamp of the observation it answers rides in the
    first dimension's label (``chunk@<sec>.<nanosec>``), since the message has no header."""
    chunk = np.asarray(chunk, dtype=np.float64)
    if chunk.ndim == 1:
        chunk = chunk[None]
    label = "chunk" if stamp is None else f"chunk@{stamp.sec}.{stamp.nanosec:09d}"
    return array_to_msg(chunk, [label, "action"])


def msg_to_chunk(msg: Float64MultiArray, action_dim: int) -> tuple[np.ndarray, Time | None]:
    """Float64MultiArray -> a finite (H, action_dim) chunk and the observation stamp it answers (if any)."""
    array = msg_to_array(msg, "action chunk")
    if array.ndim == 1:
        if array.size == 0 or array.size % action_dim:
            raise ConfigError(f"action chunk has {array.size} values, expected a positive multiple of {action_dim}")
        array = array.reshape(-1, action_dim)
    if array.ndim != 2 or array.shape[1] != action_dim or array.shape[0] < 1:
        raise ConfigError(f"action chunk has shape {array.shape}, expected (H>=1, {action_dim})")
    if not np.all(np.isfinite(array)):
        raise ConfigError("action chunk contains NaN or inf")
    stamp = None
    label = msg.layout.dim[0].label if msg.layout.dim else ""
    if label.startswith("chunk@"):
        sec, _, nsec = label[6:].partition(".")
        if sec.isdigit() and nsec.isdigit():
            stamp = Time(sec=int(sec), nanosec=int(nsec))
    return array.astype(np.float32), stamp


# ------------------------------------------------------------------------------------------- state
def state_to_msg(state: np.ndarray, names: list[str], header: Header) -> JointState:
    """The policy's proprio vector as a JointState (names = feature names, position = values), so it
    carries the same header stamp as the step's images."""
    state = np.asarray(state, dtype=np.float64).reshape(-1)
    if len(names) != state.size:
        raise ConfigError(f"state has {state.size} values but {len(names)} names")
    return JointState(header=header, name=list(names), position=state)


def msg_to_state(msg: JointState, dim: int) -> np.ndarray:
    state = np.asarray(msg.position, dtype=np.float32)
    if state.shape != (dim,):
        raise ConfigError(f"state message has {state.size} values, expected {dim}")
    if not np.all(np.isfinite(state)):
        raise ConfigError("state message contains NaN or inf")
    return state

