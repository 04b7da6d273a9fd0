"""The inference node: one process that holds the acting policy (with the newest published weights) and
answers the action requests of several actors in batches, so that one accelerator serves them all.

An actor sends its observation windows and waits a bounded time for the chunks; when the node is slow or
gone it acts with its own copy of the policy (which follows the published weights as before), so it holds
its rate whatever the node does. Requests and replies travel over multiprocessing queues (local backend) or
Ray's actor-backed queues (Ray backend, where a node that dies is restarted on the same queues).
"""

from __future__ import annotations

import json
import os
import queue
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robot_rl.policy import load_policy
from robot_rl.runtime.distributed.actor import apply_weights
from robot_rl.runtime.distributed.config import InferenceConfig
from robot_rl.runtime.distributed.weights import WeightSubscriber
from robot_rl.runtime.training.offpolicy import ACTORS_DIR, decide

NODE_STATUS = "inference.status.json"


class NodeClient:
    """An actor's side: ``act`` asks the node, and returns None when no answer came in time."""

    def __init__(self, actor_id: int, requests: Any, replies: Any, timeout_ms: float) -> None:
        self.actor_id, self.requests, self.replies = actor_id, requests, replies
        self.timeout_s = timeout_ms / 1000.0
        self._next = time.time_ns()  # request ids never repeat across the actor's lives (a stale reply is dropped)
        self.served = self.fallbacks = 0
        self.down_until = 0.0  # after a timeout the node is left alone a while: the actor keeps its own pace

    def act(self, batch: dict[str, Any], candidates: int, explore: float) -> tuple[np.ndarray, int] | None:
        if time.monotonic() < self.down_until:
            self.fallbacks += 1
            return None
        self._next += 1
        rid = self._next
        self.requests.put((self.actor_id, rid, batch, candidates, explore))
        deadline = time.monotonic() + self.timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                got, actions, version = self.replies.get(timeout=max(left, 0.0))
            except queue.Empty:
                self.fallbacks += 1
                self.down_until = time.monotonic() + max(1.0, 5 * self.timeout_s)
                return None
            if got == rid:  # older answers arrived after their request had timed out: dropped
                self.served += 1
                return actions, version


def _concat(batches: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: (sum((b[k] for b in batches), []) if k == "instruction" else np.concatenate([b[k] for b in batches]))
            for k in batches[0]}


def serve(run: str, requests: Any, replies: dict[int, Any], cfg: dict[str, Any], stop_event: Any,
          seed: int = 0, weights: Any = None) -> None:
    """The node's process: answer requests until ``stop_event`` is set or the parent process is gone.
    ``weights``: where new versions come from (default: the run's weight files; see ``run_actor``)."""
    config = InferenceConfig(**cfg)
    torch.set_num_threads(1 if config.device == "cpu" else torch.get_num_threads())
    parent, root = os.getppid(), Path(run)
    policy = load_policy(root / "policy").to(config.device).eval()
    weights = weights if weights is not None else WeightSubscriber(root / "weights")
    generator = torch.Generator(device=config.device).manual_seed(seed)
    stats = {"batches": 0, "requests": 0, "rows": 0, "max_rows": 0, "version": -1, "sync_ms": []}
    last_status = 0.0
    while not stop_event.is_set() and os.getppid() == parent:
        try:
            first = requests.get(timeout=0.2)
        except queue.Empty:
            continue
        pending = [first]
        rows = len(first[2]["instruction"])
        deadline = time.monotonic() + config.max_wait_ms / 1000.0
        while rows < config.max_batch:
            try:
                more = requests.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                break
            pending.append(more)
            rows += len(more[2]["instruction"])
        new = weights.poll()
        swapped = new is not None
        if swapped:
            apply_weights(policy, new)
        groups: dict[tuple[int, float], list] = {}
        for req in pending:
            groups.setdefault((req[3], req[4]), []).append(req)
        with torch.no_grad():
            for (candidates, explore), reqs in groups.items():
                actions = decide(policy, _concat([r[2] for r in reqs]), candidates, explore, generator)
                start = 0
                for actor_id, rid, batch, _, _ in reqs:
                    n = len(batch["instruction"])
                    replies[actor_id].put((rid, actions[start : start + n], max(weights.version, 0)))
                    start += n
        if swapped:
            stats["sync_ms"] = (stats["sync_ms"] + [1000.0 * (time.time() - weights.published_at)])[-200:]
        stats.update(batches=stats["batches"] + 1, requests=stats["requests"] + len(pending),
                     rows=stats["rows"] + rows, max_rows=max(stats["max_rows"], rows), version=weights.version)
        if time.monotonic() - last_status > 2.0:
            _write_status(root, stats)
            last_status = time.monotonic()
    _write_status(root, stats)


def _write_status(root: Path, stats: dict[str, Any]) -> None:
    path = root / ACTORS_DIR / NODE_STATUS
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**stats, "mean_rows": stats["rows"] / max(stats["batches"], 1),
                               "pid": os.getpid(), "time": time.time()}))
    os.replace(tmp, path)
