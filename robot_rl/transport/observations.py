"""A robot's observations gathered from its topics: the state and every camera image of a step carry
the same header stamp, and arrive on separate topics in any order."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from robot_rl.core.errors import ConfigError
from robot_rl.transport.base import Transport, TransportError
from robot_rl.transport.convert import RobotTopics, compressed_to_image, msg_to_image, msg_to_state
from robot_rl.transport.messages import CompressedImage, Image, JointState, Time

StampKey = tuple[int, int]


def stamp_key(stamp: Time) -> StampKey:
    return stamp.sec, stamp.nanosec


class StampedObservations:
    """Decodes a robot's state and camera topics and groups them by stamp (the last ``keep`` stamps).

    A step is complete when its state, every camera and every name in ``extra`` (parts the owner adds with
    :meth:`add`, e.g. the step report) are in; ``on_complete(key, parts)`` then runs once, on the thread
    of the part that completed it. Without ``on_complete``, :meth:`wait` returns a step's observation."""

    def __init__(self, transport: Transport, topics: RobotTopics, cameras: list[str], state_dim: int,
                 image_shape: tuple[int, ...] | None = None, extra: tuple[str, ...] = (),
                 on_complete: Callable[[StampKey, dict[str, Any]], None] | None = None, keep: int = 64) -> None:
        self.cameras, self.state_dim, self.keep, self.namespace = list(cameras), state_dim, keep, topics.namespace
        self.image_shape = None if image_shape is None else tuple(image_shape)
        self.need = {"state", *self.cameras, *extra}
        self.on_complete = on_complete
        self._cond = threading.Condition()
        self._parts: OrderedDict[StampKey, dict[str, Any]] = OrderedDict()
        self._subs = [transport.subscribe(topics.state, JointState, self._on_state)]
        for cam in self.cameras:
            self._subs.append(transport.subscribe(topics.image(cam), topics.image_type,
                                                  lambda msg, cam=cam: self._on_image(cam, msg)))

    def _on_state(self, msg: JointState) -> None:
        self.add(stamp_key(msg.header.stamp), "state", msg_to_state(msg, self.state_dim))

    def _on_image(self, camera: str, msg: Image | CompressedImage) -> None:
        image = compressed_to_image(msg) if isinstance(msg, CompressedImage) else msg_to_image(msg)
        if self.image_shape is not None and image.shape != self.image_shape:
            raise ConfigError(f"{camera} image is {image.shape}, expected {self.image_shape}")
        self.add(stamp_key(msg.header.stamp), camera, image)

    def add(self, key: StampKey, name: str, value: Any) -> None:
        with self._cond:
            parts = self._parts.get(key)
            if parts is None:
                parts = self._parts[key] = {}
                while len(self._parts) > self.keep:
                    self._parts.popitem(last=False)
            parts[name] = value
            complete = self.need <= parts.keys()
            if complete and self.on_complete is not None:
                del self._parts[key]
            self._cond.notify_all()
        if complete and self.on_complete is not None:
            self.on_complete(key, parts)

    def observation(self, parts: dict[str, Any]) -> dict[str, Any]:
        """The observation dict (as the native envs give it) of a complete step's parts."""
        obs: dict[str, Any] = {"state": parts["state"]}
        if self.cameras:
            obs["images"] = {c: parts[c] for c in self.cameras}
        return obs

    def wait(self, key: StampKey, timeout: float) -> dict[str, np.ndarray]:
        """The observation stamped ``key``, once all of it has arrived; TransportError after ``timeout``."""
        def ready():
            parts = self._parts.get(key)
            return parts if parts is not None and self.need <= parts.keys() else None

        with self._cond:
            if not self._cond.wait_for(ready, timeout=timeout):
                raise TransportError(f"no observation stamped {key} from the robot on {self.namespace} "
                                     f"within {timeout} s")
            return self.observation(ready())

    def close(self) -> None:
        for sub in self._subs:
            sub.close()
        self._subs.clear()
