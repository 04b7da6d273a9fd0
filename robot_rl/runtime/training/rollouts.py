"""Episodes of a policy's own rollouts, assembled from the per-step traces of chunked vector envs, so
that evaluation and online collection commit the same records to an episode store."""

from __future__ import annotations

from typing import Any

import numpy as np

from robot_rl.core.schema import Episode, EpisodeMeta
from robot_rl.runtime.training.vec_env import ChunkResult


class EpisodeAssembler:
    """The steps of one env's episode in flight, from chunk traces."""

    def __init__(self, task: str, instruction: str, source: str = "policy") -> None:
        self.task, self.instruction, self.source = task, instruction, source
        self.obs: list[dict[str, Any]] = []
        self.current: dict[str, Any] | None = None
        self.steps: dict[str, list] = {}
        self.helped = False  # of the episode in flight: the graded protocol opened it
        self.last_helped = False  # of the last finished episode

    def start(self, obs: dict[str, Any]) -> None:
        self.current, self.obs = obs, []
        self.steps = {k: [] for k in ("action", "reward", "terminated", "truncated", "success", "version",
                                      "intervention")}
        self.helped = False

    def add(self, actions: np.ndarray, result: ChunkResult, version: int) -> Episode | None:
        """The executed part of a chunk; the finished episode when it ended."""
        trace = result.trace
        for i in range(result.steps):
            self.obs.append(self.current)
            self.current = trace["obs"][i]
            for key in ("reward", "terminated", "truncated", "success"):
                self.steps[key].append(trace[key][i])
            self.steps["action"].append(trace["action"][i] if "action" in trace else actions[i])
            self.steps["intervention"].append(bool(trace["intervention"][i]) if "intervention" in trace else False)
            self.steps["version"].append(version)
            self.helped = self.helped or bool(trace.get("helped", [False] * result.steps)[i])
        if not result.ended:
            return None
        s = self.steps
        meta = EpisodeMeta(task=self.task, instruction=self.instruction, success=any(s["success"]),
                           source=self.source)
        ep = Episode.from_steps(self.obs, s["action"], s["reward"], s["terminated"], s["truncated"], s["success"],
                                self.current, meta, interventions=s["intervention"], policy_versions=s["version"])
        self.last_helped = self.helped
        self.start(result.obs)
        return ep
