"""Export an episode's camera images to an MP4 file (cameras side by side)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from robot_rl.core.errors import StoreError
from robot_rl.replay.store import EpisodeStore


def export_episode_video(store: EpisodeStore, episode: int, out: str | Path, fps: float = 10.0) -> Path:
    """Write episode ``episode`` of ``store`` to ``out`` (MP4, mp4v codec); returns the path."""
    cams = [k for k in store.step_keys if k.startswith("obs/images/")]
    if not cams:
        raise StoreError(f"{store.path} holds no camera images to make a video from")
    data = store.read_episode(episode, cams)
    final = store.final_obs(episode)
    frames = np.concatenate(
        [np.concatenate([data[k], final[k[4:]][None]], axis=0) for k in cams], axis=2
    )  # (T+1, H, W * n_cams, 3)
    return write_mp4(frames, out, fps)


def write_mp4(frames, out: str | Path, fps: float = 10.0) -> Path:
    """Write RGB uint8 frames (a sequence of HxWx3 arrays of one size) to an MP4 file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise StoreError(f"cannot open {out} for writing an MP4 video")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return out
