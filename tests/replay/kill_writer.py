"""A writer process for the kill test: appends deterministic synthetic episodes until killed."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np

from robot_rl.core.schema import Episode, EpisodeMeta
from robot_rl.replay.store import EpisodeStore


def synthetic_episode(i: int) -> Episode:
    """Episode ``i``: contents are a function of ``i`` alone, so a reader can check every byte."""
    length = 3 + (i * 7) % 11
    t = np.arange(length)
    image = ((i * 31 + t[:, None, None, None] + np.arange(16)[None, :, None, None]) % 256).astype(np.uint8)
    image = np.broadcast_to(image, (length, 16, 16, 3)).copy()
    state = (i * 1000 + t[:, None] + np.arange(4)[None]).astype(np.float32)
    obs = {"images/front": image, "state": state}
    final = {"images/front": np.full((16, 16, 3), i % 256, np.uint8), "state": np.full(4, -i, np.float32)}
    return Episode(
        obs=obs,
        action=(i + t[:, None] / 100 + np.zeros((1, 7))).astype(np.float32),
        reward=(t == length - 1).astype(np.float32),
        terminated=t == length - 1,
        truncated=np.zeros(length, bool),
        success=t == length - 1,
        intervention=(t % 3 == 0),
        policy_version=np.full(length, i, np.int32),
        final_obs=final,
        meta=EpisodeMeta(task="kill", instruction=f"episode {i}", success=i % 2 == 0, source="policy", seed=i),
    )


def die_while_writing(fragment: str, after: int) -> None:
    """SIGKILL this process halfway through writing the ``after``-th file whose path contains ``fragment``:
    zarr writes each file to a temporary name and renames it; we cut the temporary file in half and die
    before the rename, as a kill in the middle of the write leaves it."""
    replace = Path.replace
    seen = [0]

    def replace_then_maybe_die(self: Path, target):
        if fragment in str(target) and self.name.endswith(".partial"):
            seen[0] += 1
            if seen[0] == after:
                data = self.read_bytes()
                self.write_bytes(data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
        return replace(self, target)

    Path.replace = replace_then_maybe_die


def main(path: str, die_in: str | None = None, after: int = 1) -> None:
    if die_in is not None:
        die_while_writing(die_in, after)
    store = EpisodeStore.open(path, mode="a")
    print("ready", flush=True)
    while True:
        store.append(synthetic_episode(store.num_episodes))
        print("committed", flush=True)  # the parent counts commits, so the kill timing does not depend on load


if __name__ == "__main__":
    main(sys.argv[1], *(sys.argv[2:3]), *(int(a) for a in sys.argv[3:4]))
