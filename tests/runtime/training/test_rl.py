"""The RL runtime for real at a tiny size: chunked vector envs in worker processes, and the main job
(demos -> BC -> critic -> RL -> eval) run end to end, resumed after a crash, and continued."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from robot_rl.config import EnvConfig
from robot_rl.core.errors import ConfigError, RobotRLError, UnknownTaskError
from robot_rl.runtime.training.vec_env import ChunkVectorEnv

REPO = Path(__file__).resolve().parents[3]
TINY = [
    "--env.image_size=32", "--demos.episodes=4", "--failures.episodes=2", "--failures.max_steps=10",
    "--rollouts.episodes=2",
    "--pretrain.steps=30", "--pretrain.warmup_steps=5", "--pretrain.batch_size=16",
    "--pretrain.policy={hidden_dim: 64, n_blocks: 1}",
    "--critic.steps=8", "--critic.batch_size=4", "--critic.critic={backbone_preset: tiny}",
    "--rl.num_envs=2", "--rl.workers=1", "--rl.steps_per_iteration=3", "--rl.eval_every=2",
    "--rl.eval_episodes=2", "--rl.critic_batch_size=8", "--eval_episodes=2", "--rl.algo=reinflow",
]


def test_vector_env_in_workers_matches_in_process():
    cfg = EnvConfig(task="push", cameras=["front"], image_size=16)
    rng = np.random.default_rng(0)
    chunks = rng.uniform(-1, 1, size=(6, 3, 4, 7))
    runs = []
    for workers in (0, 2):
        with ChunkVectorEnv(cfg, 3, workers=workers, seed=7) as envs:
            obs = envs.reset()
            trace = [np.stack([o["state"] for o in obs])]
            for c in chunks:
                results = envs.step_chunks(c)
                trace.append(np.stack([r.obs["state"] for r in results]))
                assert all(1 <= r.steps <= 4 for r in results)
            assert envs.episode_counters() == [1, 1, 1]
            runs.append(np.stack(trace))
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-6, atol=1e-6)
    assert not np.allclose(runs[0][:, 0], runs[0][:, 1])  # different seeds per env


def test_vector_env_auto_resets_and_rejects_bad_input():
    cfg = EnvConfig(task="reach", cameras=[], max_steps=5)
    with ChunkVectorEnv(cfg, 2, workers=1) as envs:
        envs.reset()
        results = envs.step_chunks(np.zeros((2, 8, 7)))
        assert all(r.truncated and r.steps == 5 and r.final_obs is not None for r in results)
        assert envs.episode_counters() == [2, 2]
        inactive = envs.step_chunks(np.zeros((2, 2, 7)), active=[True, False])
        assert inactive[1] is None and inactive[0].steps == 2
        with pytest.raises(ConfigError, match="NaN"):
            envs.step_chunks(np.full((2, 2, 7), np.nan))
        with pytest.raises(ConfigError, match="2 chunks"):
            envs.step_chunks(np.zeros((3, 2, 7)))
        with pytest.raises(RobotRLError, match="action must have shape"):  # raised inside the worker
            envs.step_chunks(np.zeros((2, 2, 5)))
    with pytest.raises(UnknownTaskError, match="unknown task"):
        ChunkVectorEnv(EnvConfig(task="fly"), 2, workers=1)


def _train(out: Path, *extra: str, wait: bool = True):
    cmd = [sys.executable, "-m", "robot_rl.cli.main", "train", str(REPO / "configs/quickstart.yaml"),
           f"--out={out}", "--quiet", *TINY, *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_train_job_runs_resumes_after_a_crash_and_continues(tmp_path):
    out = tmp_path / "job"
    # a crash (SIGKILL) in the middle of RL fine-tuning, after its first checkpoint
    proc = _train(out, "--rl.iterations=6", wait=False)  # ReinFlow (TINY pins it; the quickstart runs chunk)
    state = out / "rl" / "state.pt"
    deadline = time.time() + 400
    while not state.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert state.is_file(), proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists()
    done_before = len(_rows(out / "rl" / "metrics.csv"))
    assert 1 <= done_before < 6

    res = _train(out, "--rl.iterations=6")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "reusing" in res.stdout  # demos, BC, critic and the BC evaluation are not redone
    summary = json.loads((out / "summary.json").read_text())
    for key in ("success_before", "success_after", "env_steps", "wall_s"):
        assert key in summary
    assert summary["rl_iterations"] == 6
    # the critic learned from the cloned policy's own episodes and was checked on its held-out ones
    from robot_rl.replay.store import EpisodeStore
    for name, n in (("rollouts.zarr", 2), ("eval_before.zarr", 2)):
        with EpisodeStore.open(out / name) as store:
            assert store.num_episodes == n
            store.verify()
            assert {str(x) for x in store.episode_field("source")} == {"policy"}
    critic_data = json.loads((out / "critic" / "critic_train.json").read_text())["data"]
    assert critic_data[2] == str((out / "rollouts.zarr").resolve())
    check = summary["critic_on_cloned_rollouts"]
    assert check["rollouts"] == 2 and check == json.loads((out / "critic_eval.json").read_text())
    rows = _rows(out / "rl" / "metrics.csv")
    assert [int(r["iteration"]) for r in rows] == list(range(1, 7))  # nothing lost, nothing twice
    steps = [int(r["env_steps"]) for r in rows]
    assert steps == sorted(steps) and steps[-1] == summary["env_steps"]
    assert (out / "learning_curve.png").stat().st_size > 1000
    assert (out / "rl" / "policy" / "config.json").is_file()
    evals = _rows(out / "rl" / "eval.csv")
    assert [int(r["iteration"]) for r in evals] == [2, 4, 6]

    # continue the same run further: it picks up at iteration 6 and keeps its history. Here episodes
    # end on the critic's done head, with a threshold that every frame passes: each chunk ends one.
    res = _train(out, "--rl.iterations=7", "--rl.reward.done=critic", "--rl.reward.done_threshold=-1")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows2 = _rows(out / "rl" / "metrics.csv")
    assert rows2[:6] == rows and int(rows2[-1]["iteration"]) == 7
    assert int(rows2[-1]["env_steps"]) > steps[-1]
    assert int(rows2[-1]["episodes"]) - int(rows[-1]["episodes"]) == 2 * 3  # num_envs x steps_per_iteration
    # the continued policy is evaluated again, not the 6-iteration one's result reused
    assert "reusing " + str(out / "eval_after.json") not in res.stdout
    assert json.loads((out / "eval_after.json").read_text())["state"] == {"rl_iteration": 7}
    # the fine-tuned policy evaluates through the ordinary eval command
    res = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "eval", "--checkpoint", str(out / "rl"),
                          "--episodes", "1", "--json", "--quiet"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["sampling_steps"] == 4  # ReinFlow's fine-tuned step count


def test_train_rejects_bad_config(tmp_path):
    res = _train(tmp_path / "bad", "--rl.algo=sac")
    assert res.returncode == 2 and "unknown RL algorithm 'sac'" in res.stderr
    res = _train(tmp_path / "bad2", "--env.task=fly")
    assert res.returncode == 2 and "unknown task 'fly'" in res.stderr
    assert not (tmp_path / "bad2" / "demos.zarr").exists()
    # --ray.X is short for --rl.distributed.ray.X: its value reaches the config, and is checked there
    res = _train(tmp_path / "bad3", "--rl.backend=ray", "--ray.actor_cpus=0")
    assert res.returncode == 2 and "actor_cpus and learner_cpus must be > 0" in res.stderr, res.stderr[-2000:]
