"""Human in the loop through the whole sim loop of the off-policy learner: a simulated operator takes over and
the graded protocol restores demo states; the flags reach the episode store and the replay (both parts), and
the run logs how much help it needed. The asynchronous actor acts with the same help."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict

import draccus
import numpy as np
import pytest

from robot_rl.config import EnvConfig
from robot_rl.core.errors import ConfigError
from robot_rl.hil.metrics import EpisodeHelp
from robot_rl.hil.protocol import HILConfig, OperatorConfig, ProtocolConfig
from robot_rl.replay.store import EpisodeStore
from robot_rl.runtime.training.offpolicy import ChunkRLTrainer
from robot_rl.runtime.training.rl import RLConfig
from tests.runtime.conftest import fresh_rl
from tests.runtime.training.test_rl import _rows, _train


@pytest.mark.slow
def test_takeovers_and_protocol_help_reach_the_store_the_replay_and_the_logs(tmp_path, tiny_chunk_job):
    job = fresh_rl(tiny_chunk_job, tmp_path / "job")
    meta = json.loads((tiny_chunk_job / "rl" / "rl.json").read_text())
    cfg = draccus.decode(RLConfig, meta["rl"])
    cfg.iterations, cfg.steps_per_iteration, cfg.num_envs, cfg.workers, cfg.eval_every = 3, 5, 2, 1, 0
    cfg.eval_episodes = 2
    # an impatient operator (it takes over whenever the policy is not heading where the expert is) and
    # return-and-explore on every other episode
    cfg.hil = HILConfig(operator=OperatorConfig(kind="simulated", patience=1, delay_steps=0, hold_steps=3,
                                                min_cosine=0.9, stall_steps=4),  # the critic scored in a worker
                        protocol=ProtocolConfig(mode="return_explore", help_steps=4, fraction=0.5))
    env = EnvConfig(**meta["env"])
    with pytest.raises(ConfigError, match="replays demos"):
        ChunkRLTrainer(meta["policy"], env, tmp_path / "no_demos", cfg, critic_dir=meta["critic"], progress=False)
    rl = job / "rl"
    trainer = ChunkRLTrainer(meta["policy"], env, rl, cfg, critic_dir=meta["critic"], demos=meta["demos"],
                             progress=False)
    trainer.train()

    with EpisodeStore.open(rl / "online.zarr") as store:
        eps = [store.episode(i) for i in range(store.num_episodes)]
    assert eps, "no online episode finished"
    flags = np.concatenate([e.intervention for e in eps])
    assert 0 < flags.sum() < len(flags)  # the operator took over on some steps, not all
    # the operator's steps were executed and stored as its own: they differ from the policy's chunks
    assert trainer.replay.num_steps["intervention"] == flags.sum()
    demo_rows = trainer.replay._rows(True)
    online_interventions = np.flatnonzero(trainer.replay.intervened.view)
    assert np.isin(online_interventions, demo_rows).all()  # drawn in the demo part as well as the online one
    assert np.isin(online_interventions, trainer.replay._rows(False)).all()

    rows = _rows(rl / "metrics.csv")
    assert len(rows) == 3
    for key in ("intervention_rate", "takeover_episodes", "steps_to_first_intervention", "helped_episodes",
                "success_helped", "success_unhelped", "help_steps"):
        assert key in rows[0], key
    assert [int(r["help_steps"]) for r in rows][0] == 4
    rates = [float(r["intervention_rate"]) for r in rows if r["intervention_rate"] not in ("", "nan")]
    assert rates and all(0 <= r <= 1 for r in rates)
    assert (rl / "interventions.png").is_file()
    # what the operator watches for a stall is the critic's own progress of that observation
    from robot_rl.critic.model import ProgressCritic
    from robot_rl.critic.reward import CriticReward, ObservationProgress

    watch = ObservationProgress(meta["critic"], trainer.instruction)
    frames = {c: eps[0].obs[f"images/{c}"][:1] for c in ProgressCritic.load(meta["critic"]).config.cameras}
    expected = CriticReward(ProgressCritic.load(meta["critic"])).score_frames(frames, trainer.instruction)[0][0]
    obs = {"images": {c: f[0] for c, f in frames.items()}}
    assert watch(obs) == pytest.approx(float(expected), abs=1e-6)


@pytest.mark.slow
def test_an_asynchronous_actor_acts_with_the_operator_and_the_protocol(tmp_path, tiny_chunk_job):
    """The async actor's simulated envs carry the run's rl.hil: the help reaches its store and its status."""
    from robot_rl.runtime.distributed.actor import ActorSpec, run_actor

    job = json.loads((tiny_chunk_job / "job.json").read_text())
    run = tmp_path / "rl"
    shutil.copytree(tiny_chunk_job / "rl" / "policy", run / "policy")
    hil = HILConfig(operator=OperatorConfig(kind="simulated", patience=1, delay_steps=0, hold_steps=3, min_cosine=0.9),
                    protocol=ProtocolConfig(mode="demo_replay", help_steps=4, fraction=1.0, schedule="fixed"))
    spec = ActorSpec(run=str(run), actor_id=0, env=job["env"], num_envs=2, candidates=2, max_episodes=3,
                     hil=draccus.encode(hil), demos=[str(tiny_chunk_job / "demos.zarr")])
    assert EnvConfig(**spec.env).task == "lift" and asdict(spec)["hil"]["protocol"]["mode"] == "demo_replay"
    run_actor(spec)
    with EpisodeStore.open(spec.store) as store:
        eps = [store.episode(i) for i in range(store.num_episodes)]
    assert len(eps) >= 3
    for ep in eps:  # every episode opened with 4 replayed demo steps; the operator took over later as well
        assert ep.intervention[:4].all()
    assert sum(EpisodeHelp.of(ep.intervention, True, True).takeover_steps for ep in eps) > 0
    status = json.loads(spec.status.read_text())
    assert status["help"]["helped_episodes"] == 1.0 and status["help"]["help_steps"] == 4


@pytest.mark.slow
def test_reinflow_with_an_operator_clones_the_operators_chunks(tmp_path, tiny_chunk_job):
    out = fresh_rl(tiny_chunk_job, tmp_path / "job")
    res = _train(out, "--rl.algo=reinflow", "--rl.iterations=2", "--rl.steps_per_iteration=6", "--rl.eval_every=0",
                 "--rl.hil.operator.kind=simulated", "--rl.hil.operator.patience=1", "--rl.hil.operator.delay_steps=0",
                 "--rl.hil.operator.hold_steps=6", "--rl.hil.operator.min_cosine=0.9")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = _rows(out / "rl" / "metrics.csv")
    assert len(rows) == 2 and "intervention_rate" in rows[0] and "bc_loss" in rows[0]
    assert all(float(r["intervention_rate"]) > 0 for r in rows if r["intervention_rate"] not in ("", "nan"))
    assert all(float(r["bc_loss"]) > 0 for r in rows)  # the operator's chunks were cloned in every update
    assert (out / "rl" / "interventions.png").is_file()
    with pytest.raises(ConfigError, match="runs with rl.backend=sync"):
        RLConfig(algo="reinflow", backend="local", hil=HILConfig(operator=OperatorConfig(kind="simulated"))).validate()
