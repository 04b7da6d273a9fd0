"""Offline relabelling: the critic's dense reward and done flag for every step of a store, written as
new arrays (``extras/critic_reward``, ``extras/critic_done``) beside the untouched originals.

Resumable: after each episode its rows are committed in the store's record (one atomic metadata write),
so a relabeller killed at any moment continues from the first unfinished episode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from robot_rl.core.errors import ConfigError
from robot_rl.critic.dataset import load_episodes
from robot_rl.critic.model import ProgressCritic
from robot_rl.critic.reward import CriticReward
from robot_rl.replay.store import EpisodeStore

REWARD, DONE = "critic_reward", "critic_done"


def relabel_store(store_path: str | Path, critic_dir: str | Path, skip: int = 1, progress: bool = True) -> dict:
    critic_dir = Path(critic_dir)
    if (critic_dir / "critic" / "config.json").is_file():
        critic_dir = critic_dir / "critic"
    scorer = CriticReward(ProgressCritic.load(critic_dir), skip=skip)
    with EpisodeStore.open(store_path, mode="a") as store:
        rewards = store.extra_array(REWARD, np.float32, create=True)
        store.extra_array(DONE, bool, create=True)
        starts, ends = store.episode_starts, store.episode_ends
        rows = store.extra_rows(REWARD)
        if rows is None:  # relabelled before the record kept extras: progress was kept in the array's attributes
            done_so_far, info = int(rewards.attrs.get("episodes_done", 0)), dict(rewards.attrs)
        else:
            done_so_far, info = int(np.searchsorted(ends, rows, side="right")), store.extra_info(REWARD)
        source = info.get("critic")
        if done_so_far and source not in (None, str(critic_dir.resolve())):
            raise ConfigError(f"{store_path} was partly relabelled by another critic ({source}); "
                              "remove its extras/ arrays to start over")
        provenance = {"critic": str(critic_dir.resolve()), "skip": skip}
        done_rows = int(ends[done_so_far - 1]) if done_so_far else 0
        store.commit_extras({REWARD: done_rows, DONE: done_rows}, info={REWARD: provenance, DONE: provenance})
        bar = tqdm(range(done_so_far, store.num_episodes), desc="relabel", unit="ep", disable=not progress)
        for i in bar:
            ep = load_episodes(store, scorer.critic.config.cameras, [i])[0]
            r, d = scorer.rewards(ep.frames, ep.instruction)
            store.write_extra_rows(REWARD, int(starts[i]), r)
            store.write_extra_rows(DONE, int(starts[i]), d)
            store.commit_extras({REWARD: int(ends[i]), DONE: int(ends[i])})  # the commit point of episode i
        return {"episodes": store.num_episodes, "relabelled_now": store.num_episodes - done_so_far,
                "resumed_from": done_so_far}
