"""``robot-rl import-bag``: episodes out of a rosbag2 recording of a robot's topics, into an episode store.

An episode is rebuilt from the robot's step reports (``robot_rl/step``: episode, step, stamp, reward, flags,
the executed action, whether the operator drove it) and the state and camera images carrying each report's
stamp. Step ``i`` of the stored episode is the observation of report ``i`` and the action, reward and flags
of report ``i + 1``; the last report's observation is the final one. Teleop sessions and policy rollouts
import the same way: steps the operator drove are marked ``intervention``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from robot_rl.core.errors import ConfigError
from robot_rl.core.schema import Episode, EpisodeMeta
from robot_rl.transport.convert import RobotTopics, compressed_to_image, msg_to_image, msg_to_state
from robot_rl.transport.messages import CompressedImage, Message
from robot_rl.transport.observations import StampKey, stamp_key

log = logging.getLogger(__name__)


@dataclass
class ImportResult:
    episodes: int = 0
    steps: int = 0
    interventions: int = 0
    cut_short: int = 0
    """Episodes whose recording ended before the robot ended them (stored with ``truncated`` at the end)."""
    skipped: list[str] = field(default_factory=list)
    """Why each episode that could not be rebuilt was left out."""


class EpisodeAssembler:
    """Rebuilds episodes from a stream of (topic, message) of one robot with these ``cameras``, in the order
    they were received."""

    def __init__(self, topics: RobotTopics, cameras: list[str]) -> None:
        self.topics, self.cameras = topics, list(cameras)
        self._camera_of = {topics.image(c): c for c in self.cameras}
        self.state_dim: int | None = None  # the first episode decides for the rest
        self._parts: dict[StampKey, dict[str, Any]] = {}
        self._current: list[dict] = []
        self._closing: list[dict] = []  # the previous episode, built one report after the next one starts
        self.skipped: list[str] = []
        self.cut_short = 0
        self.control_hz: float | None = None

    def add(self, topic: str, msg: Message) -> list[Episode]:
        """Take one message; returns the episodes it completed."""
        if topic == self.topics.step:
            return self._on_report(msg.data)
        name = "state" if topic == self.topics.state else self._camera_of.get(topic)
        if name is not None:
            self._parts.setdefault(stamp_key(msg.header.stamp), {})[name] = msg
        return []

    def _on_report(self, data: str) -> list[Episode]:
        try:
            report = json.loads(data)
            step, episode = int(report["step"]), int(report["episode"])
            report["stamp"] = tuple(int(x) for x in report["stamp"])
        except (ValueError, KeyError, TypeError) as exc:
            log.error("skipping a malformed step report: %s", exc)
            return []
        # The last step's images may arrive after the next episode's first report, so an episode is
        # built one report later than that (or when the recording ends).
        done = self._build_closing()
        if step == 0:
            self._closing, self._current = self._current, [report]
            self.control_hz = report.get("control_hz") or self.control_hz
        elif self._current and self._current[-1]["episode"] == episode:
            if step != self._current[-1]["step"] + 1:
                self._skip(self._current, f"reports jump from step {self._current[-1]['step']} to {step} "
                                          "(messages were lost)")
                self._current = []
            else:
                self._current.append(report)
        # reports of an episode whose start was not recorded are ignored
        return done

    def finish(self) -> list[Episode]:
        """The recording ended: build what is left."""
        done = self._build_closing()
        self._closing, self._current = self._current, []
        return done + self._build_closing()

    def _build_closing(self) -> list[Episode]:
        reports, self._closing = self._closing, []
        # steps at the end whose observation never fully arrived (the recording stopped mid-step) are cut
        while reports and not self._complete(reports[-1]):
            reports = reports[:-1]
        if len(reports) < 2:
            self._forget(reports)
            return []
        try:
            episode = self._build(reports)
        except (ConfigError, ValueError) as exc:
            self._skip(reports, str(exc))
            return []
        self._forget(reports)
        return [episode]

    def _skip(self, reports: list[dict], why: str) -> None:
        why = f"episode {reports[0]['episode']} (recorded at {reports[0]['stamp']}): {why}"
        self.skipped.append(why)
        log.warning("skipping %s", why)
        self._forget(reports)

    def _forget(self, reports: list[dict]) -> None:
        for r in reports:
            self._parts.pop(r["stamp"], None)
        if reports:  # parts older than this episode can no longer be used
            first = reports[0]["stamp"]
            for key in [k for k in self._parts if k < first]:
                del self._parts[key]

    def _complete(self, report: dict) -> bool:
        return {"state", *self.cameras} <= self._parts.get(report["stamp"], {}).keys()

    def _observation(self, report: dict) -> dict[str, Any]:
        parts = self._parts.get(report["stamp"], {})
        missing = sorted({"state", *self.cameras} - parts.keys())
        if missing:
            raise ConfigError(f"no {missing} for step {report['step']}")
        state = parts["state"]
        obs: dict[str, Any] = {"state": msg_to_state(state, self.state_dim or len(state.position))}
        if self.cameras:
            obs["images"] = {c: compressed_to_image(parts[c]) if isinstance(parts[c], CompressedImage)
                             else msg_to_image(parts[c]) for c in self.cameras}
        return obs

    def _build(self, reports: list[dict]) -> Episode:
        observations = [self._observation(r) for r in reports]
        self.state_dim = int(observations[0]["state"].shape[0])
        steps = reports[1:]
        if any(r.get("action") is None for r in steps):
            raise ConfigError("a step report has no executed action")
        last = steps[-1]
        truncated = [bool(r.get("truncated")) for r in steps]
        if not (last.get("terminated") or last.get("truncated")):
            truncated[-1] = True  # the recording ended mid-episode: stored as cut short, to bootstrap from
            self.cut_short += 1
        interventions = [bool(r.get("intervention")) for r in steps]
        successes = [bool(r.get("success")) for r in steps]
        first = reports[0]
        meta = EpisodeMeta(task=str(first.get("task", "")) or "robot", instruction=str(first.get("instruction", "")),
                           success=any(successes), source="human" if all(interventions) else "policy")
        episode = Episode.from_steps(
            observations[:-1], [np.asarray(r["action"], np.float32) for r in steps],
            [float(r.get("reward", 0.0)) for r in steps], [bool(r.get("terminated")) for r in steps], truncated,
            successes, observations[-1], meta, interventions=interventions)
        episode.validate()
        return episode


def bag_cameras(bag_topics: dict[str, str], topics: RobotTopics, cameras: list[str] | None = None) -> list[str]:
    """The cameras of ``topics``' robot recorded in a bag with these topics (checked against ``cameras``
    when given); ConfigError when the robot's step reports are not there or its images use another
    transport."""
    if topics.step not in bag_topics:
        reports = sorted(t for t in bag_topics if t.endswith("/robot_rl/step"))
        hint = f"; it has step reports on {reports} (pass --namespace)" if reports else ""
        raise ConfigError(f"the bag has no step reports on {topics.step}{hint}")
    found: dict[str, list[str]] = {"raw": [], "jpeg": []}
    prefix = topics.namespace + "/"
    for topic, msgtype in bag_topics.items():
        for transport, suffix, wanted in (("raw", "/image_raw", "sensor_msgs/msg/Image"),
                                          ("jpeg", "/image_raw/compressed", "sensor_msgs/msg/CompressedImage")):
            name = topic[len(prefix):-len(suffix)] if topic.startswith(prefix) and topic.endswith(suffix) else ""
            if name and "/" not in name and msgtype == wanted:
                found[transport].append(name)
    have = sorted(found[topics.image_transport])
    other = "jpeg" if topics.image_transport == "raw" else "raw"
    if not have and found[other]:
        raise ConfigError(f"the bag's cameras {sorted(found[other])} are {other} images; pass "
                          f"--image-transport {other}")
    if cameras is not None:
        missing = [c for c in cameras if c not in have]
        if missing:
            raise ConfigError(f"the bag has no {topics.image_transport} images from {missing}; it has {have}")
        return list(cameras)
    return have


def _env_config(episode: Episode, cameras: list[str], control_hz: float | None) -> dict:
    """How to build a simulated twin of the recorded robot (when it was one of our tasks), for evaluation."""
    from robot_rl.config import EnvConfig, config_to_dict

    config = EnvConfig(task=episode.meta.task, cameras=list(cameras))
    if cameras:
        config.image_size = int(episode.obs[f"images/{cameras[0]}"].shape[1])
    if control_hz:
        config.control_hz = float(control_hz)
    return config_to_dict(config)


def import_bag(bag: str | Path, out: str | Path, topics: RobotTopics | None = None, append: bool = False,
               overwrite: bool = False, progress: bool = True, cameras: list[str] | None = None) -> ImportResult:
    """Append every episode recorded in ``bag`` (a rosbag2 bag, or a folder of them) to the store ``out``;
    ``cameras``: which to keep (default: every camera of the robot in the bag)."""
    from robot_rl.envs import task_names
    from robot_rl.runtime.training.collect import check_output_store, open_output_store
    from robot_rl.transport.bag import bag_paths, bag_topics, read_bag

    topics = topics or RobotTopics()
    check_output_store(out, append, overwrite)  # clear errors before reading anything
    bags = bag_paths(bag)
    assembler = EpisodeAssembler(topics, bag_cameras(bag_topics(bags), topics, cameras))
    result = ImportResult()
    store = None

    def append_all(episodes: list[Episode]) -> None:
        nonlocal store
        for episode in episodes:
            if store is None:  # only once there is something to write: an empty import leaves `out` alone
                store = open_output_store(out, append, overwrite)
                if store.env_config is None and episode.meta.task in task_names():
                    store.set_env_config(_env_config(episode, assembler.cameras, assembler.control_hz))
            store.append(episode)
            result.episodes += 1
            result.steps += len(episode)
            result.interventions += int(episode.intervention.sum())
            bar.update(1)

    bar = tqdm(desc=f"import {Path(bag).name}", unit="ep", disable=not progress)
    try:
        for topic, msg, _ in read_bag(bags):
            append_all(assembler.add(topic, msg))
        append_all(assembler.finish())
    finally:
        bar.close()
        if store is not None:
            store.close()
    result.cut_short, result.skipped = assembler.cut_short, assembler.skipped
    if result.episodes == 0:
        why = f" ({'; '.join(result.skipped)})" if result.skipped else ""
        raise ConfigError(f"no complete episode in {bag} on {topics.step}{why}")
    return result
