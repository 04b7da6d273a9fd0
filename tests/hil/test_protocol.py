"""The graded protocol on a real MuJoCo task and a real episode store: return-and-explore reproduces a stored
state exactly, demo replay re-enacts a stored demo, human-guided explore lets the operator drive the start,
and k falls as the run succeeds."""

from __future__ import annotations

import numpy as np
import pytest

from robot_rl.config import EnvConfig
from robot_rl.core.errors import ConfigError
from robot_rl.envs import make_env
from robot_rl.hil.metrics import EpisodeHelp, help_metrics
from robot_rl.hil.protocol import (
    DemoTrack,
    HelpSchedule,
    HILConfig,
    OperatorConfig,
    ProtocolConfig,
    load_tracks,
    wrap_for_run,
)
from robot_rl.replay.store import EpisodeStore
from robot_rl.runtime.training.collect import expert_rollout
from robot_rl.runtime.training.rollouts import EpisodeAssembler
from robot_rl.runtime.training.vec_env import _EnvSlot

ENV = EnvConfig(task="lift", cameras=["front", "wrist"], image_size=32)


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("protocol") / "demos.zarr"
    env = make_env(ENV)
    with EpisodeStore.create(path) as store:
        for seed in (11, 12):
            store.append(expert_rollout(env, "lift", seed=seed, noise=0.1))
    env.close()
    return path


def _env(mode: str, k: int, store):
    cfg = HILConfig(protocol=ProtocolConfig(mode=mode, help_steps=k, fraction=1.0, schedule="fixed"))
    tracks = load_tracks([str(store)]) if cfg.needs_demos else None
    return wrap_for_run(make_env(ENV), cfg, "lift", tracks, seed=0)


def test_return_and_explore_restores_the_stored_state_exactly(demo_store):
    with EpisodeStore.open(demo_store) as store:
        demos = [store.episode(i) for i in range(store.num_episodes)]
    env = _env("return_explore", 9, demo_store)
    seen = set()
    for _ in range(6):
        obs, info = env.reset()
        k = info["restored_at"]
        assert k == 9
        # which demo it chose: the one whose stored observation at step k is bit-identical to what it shows
        match = [i for i, ep in enumerate(demos) if np.array_equal(ep.obs["state"][k], obs["state"])]
        assert len(match) == 1
        ep = demos[match[0]]
        for cam in ("front", "wrist"):
            np.testing.assert_array_equal(obs["images"][cam], ep.obs[f"images/{cam}"][k])
        # and it goes on exactly as the demo did: the same actions give the same observations
        for t in range(k, k + 5):
            obs = env.step(ep.action[t])[0]
            np.testing.assert_array_equal(obs["state"], ep.obs["state"][t + 1])
        seen.add(match[0])
    assert seen == {0, 1}  # demos are drawn at random
    assert env.unwrapped._steps == 9 + 5  # the episode's clock continues from the restored step


def test_demo_replay_reenacts_the_demo_then_hands_the_policy_a_fresh_chunk(demo_store):
    with EpisodeStore.open(demo_store) as store:
        demos = [store.episode(i) for i in range(store.num_episodes)]
    slot = _EnvSlot(None, 0, 1, 0, 0, env=_env("demo_replay", 6, demo_store))
    obs, _ = slot.reset()
    ep = next(e for e in demos if np.array_equal(e.obs["state"][0], obs["state"]))  # it starts where a demo did
    asm = EpisodeAssembler("lift", "lift")
    asm.start(obs)
    policy = np.zeros((4, 7), np.float32)
    results = [slot.run_chunk(policy, auto_reset=False, record=True) for _ in range(2)]
    # the first two chunks are used up by the replay (4 + 2 steps), the second stops at the hand-back
    assert [r.steps for r in results] == [4, 2]
    trace = {k: sum((r.trace[k] for r in results), []) for k in ("action", "intervention", "helped", "obs")}
    assert trace["intervention"] == [True] * 6 and all(trace["helped"])
    np.testing.assert_array_equal(np.stack(trace["action"]), ep.action[:6])
    np.testing.assert_array_equal(trace["obs"][-1]["state"], ep.obs["state"][6])
    after = slot.run_chunk(policy, auto_reset=False, record=True)
    assert after.steps == 4 and not any(after.trace["intervention"])  # the policy acts from here


def test_human_guided_explore_lets_the_operator_drive_the_first_k_steps():
    cfg = HILConfig(operator=OperatorConfig(kind="simulated", noise=0.0, min_cosine=-2.0),  # never takes over
                    protocol=ProtocolConfig(mode="human_guided", help_steps=5, fraction=1.0, schedule="fixed"))
    env = wrap_for_run(make_env(ENV), cfg, "lift", seed=0)
    slot = _EnvSlot(None, 0, 1, 0, 0, env=env)
    slot.reset()
    flags = []
    for _ in range(3):
        flags += slot.run_chunk(np.zeros((4, 7), np.float32), auto_reset=False, record=True).trace["intervention"]
    assert flags == [True] * 5 + [False] * 4  # 4 + 1 guided steps (the hand-back ends the chunk), then the policy
    with pytest.raises(ConfigError, match="needs an operator"):
        HILConfig(protocol=ProtocolConfig(mode="human_guided")).validate()


def test_help_falls_as_the_run_succeeds_and_bad_settings_are_named(demo_store):
    schedule = HelpSchedule(ProtocolConfig(mode="demo_replay", help_steps=20, window=4))
    assert schedule.steps() == 20
    schedule.record([True, False, False, False])
    assert schedule.steps() == 15
    schedule.record([True, True, True, True])
    assert schedule.steps() == 0
    assert HelpSchedule(ProtocolConfig(mode="none")).steps() == 0
    with pytest.raises(ConfigError, match="unknown protocol mode"):
        ProtocolConfig(mode="teleport").validate()
    with pytest.raises(ConfigError, match="unknown operator kind"):
        OperatorConfig(kind="robot").validate()
    with pytest.raises(ConfigError, match="needs demos"):
        wrap_for_run(make_env(ENV), HILConfig(protocol=ProtocolConfig(mode="return_explore")), "lift")
    # a demo recorded elsewhere (here: its states altered) is refused by name, not replayed into nonsense
    track = load_tracks([str(demo_store)])[0]
    bad = DemoTrack(seed=track.seed, actions=track.actions, states=track.states + 0.01,
                    first_success=track.first_success)
    env = wrap_for_run(make_env(ENV), HILConfig(protocol=ProtocolConfig(mode="return_explore", fraction=1.0)),
                       "lift", [bad])
    with pytest.raises(ConfigError, match="diverges from what it recorded"):
        env.reset()


def test_help_metrics_split_opening_help_from_takeovers():
    eps = [EpisodeHelp.of(np.array([1, 1, 0, 0, 1, 1, 0], bool), True, helped=True),  # opened, then taken over
           EpisodeHelp.of(np.array([0, 0, 0, 1, 0], bool), False, helped=False),
           EpisodeHelp.of(np.zeros(4, bool), True, helped=False)]
    m = help_metrics(eps)
    assert m["intervention_rate"] == pytest.approx(3 / 16)
    assert m["takeover_episodes"] == pytest.approx(2 / 3)
    assert m["steps_to_first_intervention"] == pytest.approx((4 + 3) / 2)
    assert m["helped_episodes"] == pytest.approx(1 / 3)
    assert m["success_helped"] == pytest.approx(0.5) and m["success_unhelped"] == 1.0

