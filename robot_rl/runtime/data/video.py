"""Camera streams as MP4 files with PyAV: many episodes appended to one file, read back by timestamp.

Codecs (``--codec``):

* ``ffv1``: lossless (RGB kept exactly, as ``bgr0``); every frame is a key frame. The default: a round
  trip store -> LeRobot -> store gives back the very same pixels. Larger files (about raw size / 2-4).
* ``h264``: libx264, ``yuv444p``, crf 10, a key frame every 2 frames: near-lossless (PSNR ~45 dB on
  rendered scenes) at a fraction of the size, and playable by more tools.
* ``av1``: libsvtav1, ``yuv420p``, crf 30, key frame every 2 frames: what LeRobot itself records (smallest,
  lossy; chroma at half resolution).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from robot_rl.core.errors import ConfigError

CODECS: dict[str, tuple[str, str, dict[str, str], str]] = {
    # our name: (encoder, pixel format, options, the codec name LeRobot's info.json records)
    "ffv1": ("ffv1", "bgr0", {}, "ffv1"),
    "h264": ("libx264", "yuv444p", {"crf": "10", "g": "2"}, "h264"),
    "av1": ("libsvtav1", "yuv420p", {"crf": "30", "g": "2"}, "av1"),
}


def _av():
    try:
        import av
    except ImportError as exc:  # pragma: no cover - the data extra is installed with dev
        raise ConfigError("reading and writing videos needs PyAV: pip install 'robot-rl[data]'") from exc
    av.logging.set_level(av.logging.PANIC)  # errors reach the user as one ConfigError line, not as FFmpeg logs
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole config to stderr at its default level
    return av


class VideoWriter:
    """Appends RGB frames of one size to an MP4 file at ``fps``; :meth:`close` finishes the file."""

    def __init__(self, path: str | Path, fps: int, width: int, height: int, codec: str = "ffv1") -> None:
        if codec not in CODECS:
            raise ConfigError(f"unknown video codec {codec!r}; expected one of {sorted(CODECS)}")
        av = _av()
        encoder, pix_fmt, options, _ = CODECS[codec]
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.frames = 0
        self.size = (height, width)
        self._container = av.open(str(self.path), mode="w")
        self._stream = self._container.add_stream(encoder, rate=Fraction(fps))
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, pix_fmt
        self._stream.options = dict(options)
        self._frame_cls = av.VideoFrame

    def write(self, frames: np.ndarray) -> None:
        """Append (T, H, W, 3) uint8 RGB frames."""
        if frames.ndim != 4 or frames.shape[1:3] != self.size or frames.shape[3] != 3:
            raise ConfigError(f"frames of shape {frames.shape} do not fit the video {self.path} "
                              f"({self.size[0]}x{self.size[1]} RGB)")
        for frame in frames:
            video_frame = self._frame_cls.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = self.frames
            for packet in self._stream.encode(video_frame):
                self._container.mux(packet)
            self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None


class VideoReader:
    """Reads frames of one MP4 file forward, by timestamp: :meth:`take` returns ``n`` frames starting at a
    time, for episodes stored one after another in the file (LeRobot's ``from_timestamp``)."""

    def __init__(self, path: str | Path, fps: float) -> None:
        av = _av()
        self.path = Path(path)
        self.fps = float(fps)
        try:
            self._container = av.open(str(self.path))
            stream = self._container.streams.video[0]
        except (OSError, IndexError, av.error.FFmpegError) as exc:
            raise ConfigError(f"cannot read the video {self.path}: {exc}") from None
        stream.thread_type = "AUTO"
        self._frames: Iterator = self._decode(stream)
        self._pending: tuple[int, np.ndarray] | None = None

    def _decode(self, stream) -> Iterator[tuple[int, np.ndarray]]:
        av = _av()
        try:
            for frame in self._container.decode(stream):
                t = float(frame.pts * frame.time_base) if frame.pts is not None else float(frame.time)
                yield round(t * self.fps), frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as exc:
            raise ConfigError(f"the video {self.path} is damaged: {exc}") from None

    def take(self, from_timestamp: float, n: int) -> np.ndarray:
        """The ``n`` frames from ``from_timestamp`` on (seconds); ConfigError when the file has fewer."""
        first = round(from_timestamp * self.fps)
        out: list[np.ndarray] = []
        while len(out) < n:
            item = self._pending or next(self._frames, None)
            self._pending = None
            if item is None:
                raise ConfigError(f"the video {self.path} ends before frame {first + len(out)} "
                                  f"(t={(first + len(out)) / self.fps:.3f} s): {len(out)} of {n} frames found")
            index, frame = item
            if index < first + len(out):
                continue  # before this episode's segment
            if index > first + len(out):
                raise ConfigError(f"the video {self.path} has no frame at t={(first + len(out)) / self.fps:.3f} s "
                                  f"(the next is at {index / self.fps:.3f} s)")
            out.append(frame)
        return np.stack(out)

    def close(self) -> None:
        self._container.close()


def video_info(codec: str, fps: int, height: int, width: int) -> dict:
    """The ``info`` block LeRobot's info.json keeps for a video feature."""
    _, pix_fmt, _, name = CODECS[codec]
    return {"video.height": height, "video.width": width, "video.codec": name,
            "video.pix_fmt": pix_fmt, "video.is_depth_map": False,
            "video.fps": fps, "video.channels": 3, "has_audio": False}
