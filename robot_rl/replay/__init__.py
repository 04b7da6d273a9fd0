"""Replay: the zarr episode store, samplers and exports."""

from robot_rl.replay.memory import InMemoryEpisodes
from robot_rl.replay.sampling import UniformSampler, read_windows
from robot_rl.replay.store import EpisodeStore, is_store
from robot_rl.replay.video import export_episode_video

__all__ = ["EpisodeStore", "InMemoryEpisodes", "UniformSampler", "export_episode_video", "is_store", "read_windows"]
