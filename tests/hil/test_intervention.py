"""Takeover in the sim loop, for real in a MuJoCo task: an operator's steps replace the rest of the policy's
chunk, hand-back starts a fresh chunk with a blend, and the flags and executed actions reach the episode."""

from __future__ import annotations

import numpy as np
import pytest

from robot_rl.config import EnvConfig
from robot_rl.envs import make_env
from robot_rl.hil.intervention import InterventionWrapper, SimulatedOperator
from robot_rl.runtime.training.rollouts import EpisodeAssembler
from robot_rl.runtime.training.vec_env import _EnvSlot

OP = np.array([0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 1.0], np.float32)


class StepsOperator:
    """A test operator: drives steps ``start .. stop - 1`` of each episode with ``OP``."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop, self.t = start, stop, 0

    def reset(self) -> None:
        self.t = 0

    def __call__(self, obs, env, policy_action):  # called once per step
        t, self.t = self.t, self.t + 1
        return OP if self.start <= t < self.stop else None


def _slot(operator, max_steps=30, blend_steps=2):
    env = InterventionWrapper(make_env(EnvConfig(task="lift", cameras=[], max_steps=max_steps)), operator,
                              blend_steps=blend_steps)
    slot = _EnvSlot(None, 0, 1, 0, 0, env=env)
    return slot, slot.reset(seed=3)[0]


def test_takeover_drops_the_chunk_and_hand_back_starts_a_fresh_blended_one():
    slot, obs = _slot(StepsOperator(3, 7))
    asm = EpisodeAssembler("lift", "lift the cube")
    asm.start(obs)
    chunk = np.tile(np.array([0.3, 0, 0, 0, 0, 0, -1], np.float32), (8, 1))
    first = slot.run_chunk(chunk, auto_reset=False, record=True)
    assert first.steps == 7  # 3 policy steps, 4 operator steps, then the operator let go: the chunk stops
    assert first.trace["intervention"] == [False] * 3 + [True] * 4
    np.testing.assert_array_equal(np.stack(first.trace["action"][3:]), np.tile(OP, (4, 1)))
    np.testing.assert_array_equal(np.stack(first.trace["action"][:3]), chunk[:3])
    assert asm.add(chunk, first, 0) is None
    fresh = np.tile(np.array([-0.3, 0.2, 0, 0, 0, 0, -1], np.float32), (8, 1))
    second = slot.run_chunk(fresh, auto_reset=False, record=True)
    assert second.steps == 8 and not any(second.trace["intervention"])
    acts = np.stack(second.trace["action"])
    np.testing.assert_allclose(acts[0], fresh[0] / 3 + 2 * OP / 3, rtol=1e-6)  # blended out of the takeover
    np.testing.assert_allclose(acts[1], 2 * fresh[1] / 3 + OP / 3, rtol=1e-6)
    np.testing.assert_array_equal(acts[2:], fresh[2:])
    assert asm.add(fresh, second, 0) is None
    ep = None
    while ep is None:
        ep = asm.add(fresh, slot.run_chunk(fresh, auto_reset=False, record=True), 0)
    assert len(ep) == 30
    np.testing.assert_array_equal(ep.intervention[:15], [False] * 3 + [True] * 4 + [False] * 8)
    assert not ep.intervention[15:].any()
    np.testing.assert_array_equal(ep.action[3:7], np.tile(OP, (4, 1)))  # the store keeps what was executed
    np.testing.assert_allclose(ep.action[7], acts[0])


def test_a_takeover_from_the_chunks_first_step_and_bad_settings():
    slot, _ = _slot(StepsOperator(0, 2), blend_steps=0)
    res = slot.run_chunk(np.zeros((5, 7), np.float32), auto_reset=False, record=True)
    assert res.steps == 2 and res.trace["intervention"] == [True, True]
    res = slot.run_chunk(np.zeros((5, 7), np.float32), auto_reset=False, record=True)
    assert res.steps == 5 and not any(res.trace["intervention"])  # a fresh chunk right at hand-back: no blend
    np.testing.assert_array_equal(np.stack(res.trace["action"]), np.zeros((5, 7)))
    with pytest.raises(ValueError, match="blend_steps"):
        InterventionWrapper(make_env(EnvConfig(task="lift", cameras=[])), StepsOperator(0, 1), blend_steps=-1)
    with pytest.raises(ValueError, match="patience"):
        SimulatedOperator("lift", patience=0)


def test_simulated_operator_takes_over_a_policy_that_heads_away_and_hands_back():
    operator = SimulatedOperator("lift", patience=3, delay_steps=2, hold_steps=5, noise=0.0, seed=0)
    slot, _ = _slot(operator, max_steps=60)
    away = np.tile(np.array([0, 0, 1.0, 0, 0, 0, -1], np.float32), (60, 1))  # straight up, away from the cube
    flags = []
    while len(flags) < 40:
        res = slot.run_chunk(away, auto_reset=False, record=True)
        flags += res.trace["intervention"]
        if res.ended:
            break
    flags = np.array(flags[:40])
    assert operator.takeovers >= 1
    first = int(np.argmax(flags))
    assert first >= 3 + 2 - 1  # it needed `patience` steps to see it, then its reaction time
    assert flags[first:first + 5].all() and not flags[first + 5]  # drove hold_steps, then handed back


def test_the_simulated_operator_takes_over_when_the_critics_progress_stalls():
    env = make_env(EnvConfig(task="lift", cameras=[], max_steps=40))
    flat = []  # the progress it watched, one value per policy step
    op = SimulatedOperator("lift", min_cosine=-2.0, delay_steps=1, hold_steps=2, noise=0.0, stall_steps=3,
                           stall_delta=0.05, progress=lambda obs: flat.append(0.5) or 0.5)
    wrapped = InterventionWrapper(env, op, blend_steps=0)
    wrapped.reset(seed=0)
    flags = [wrapped.step(np.zeros(7, np.float32))[4]["intervention"] for _ in range(9)]
    # the 4th reading makes 3 steps without progress; it reacts one step later and drives 2 steps
    assert flags[:7] == [False] * 4 + [True] * 2 + [False] and op.takeovers >= 1
    counter = iter(range(1000))
    rising = SimulatedOperator("lift", min_cosine=-2.0, stall_steps=3, stall_delta=0.05,
                               progress=lambda obs: 0.1 * next(counter))
    wrapped = InterventionWrapper(make_env(EnvConfig(task="lift", cameras=[], max_steps=40)), rising)
    wrapped.reset(seed=0)
    assert not any(wrapped.step(np.zeros(7, np.float32))[4]["intervention"] for _ in range(12))
    with pytest.raises(ValueError, match="progress"):
        SimulatedOperator("lift", stall_steps=3)
