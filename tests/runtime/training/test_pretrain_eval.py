"""`robot-rl pretrain` and `robot-rl eval` as real processes: run folder, logs, resume, evaluation, errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from robot_rl.policy import load_policy
from robot_rl.replay.store import EpisodeStore
from tests.cli.test_cli import assert_clean_error, run

TINY = ["--policy.hidden_dim=64", "--policy.n_blocks=1", "--policy.image_feature_dim=16", "--policy.horizon=4",
        "--policy.n_action_steps=2", "--log_every=5", "--checkpoint_every=10", "--warmup_steps=5"]


def test_pretrain_resume_and_eval(tmp_path, push_store):
    out = tmp_path / "run"
    run("pretrain", "--policy", "flow", "--data", str(push_store), "--out", str(out), "--steps", "20", "--quiet",
        "--", *TINY)
    for name in ("pretrain.json", "env.json", "metrics.csv", "loss_curve.png", "policy/config.json",
                 "policy/model.safetensors"):
        assert (out / name).is_file(), name
    assert list((out / "tb").iterdir()), "no TensorBoard events"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000010", "step_0000020"]
    first = load_policy(out / "policy")

    proc = run("pretrain", "--policy", "flow", "--data", str(push_store), "--out", str(out), "--steps", "30",
               "--resume", "--quiet", "--", *TINY)
    assert "to step 30 (10 this run" in proc.stdout
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20, 25, 30]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    resumed = load_policy(out / "policy")
    assert resumed.config == first.config  # --resume keeps the run's policy config

    result = json.loads(run("eval", "--checkpoint", str(out), "--episodes", "2", "--json", "--video",
                            str(tmp_path / "videos")).stdout)
    assert result["episodes"] == 2 and result["task"] == "push"
    assert 0.0 <= result["success_rate"] <= 1.0 and result["latency_ms"] > 0
    low, high = result["success_ci95"]
    assert low <= result["success_rate"] <= high
    assert len(list((tmp_path / "videos").glob("episode_*.mp4"))) == 2
    te = json.loads(run("eval", "--checkpoint", str(out), "--episodes", "1", "--json",
                        "--temporal-ensemble", "0.1", "--steps", "2").stdout)
    assert te["temporal_ensemble"] == 0.1 and te["sampling_steps"] == 2

    # --record commits the policy's own episodes, outcome included, for the critic's checks
    rec = tmp_path / "rollouts.zarr"
    recorded = json.loads(run("eval", "--checkpoint", str(out), "--episodes", "3", "--json", "--workers", "1",
                              "--record", str(rec)).stdout)
    with EpisodeStore.open(rec) as store:
        assert store.num_episodes == 3
        store.verify()
        assert {str(x) for x in store.episode_field("source")} == {"policy"}
        assert [bool(x) for x in store.episode_field("success")].count(True) == round(3 * recorded["success_rate"])
        lengths = [len(store.episode(i)) for i in range(3)]
        assert np.mean(lengths) == pytest.approx(recorded["mean_length"])  # every step of every episode
        assert store.env_config["task"] == "push"
    assert_clean_error(run("eval", "--checkpoint", str(out), "--episodes", "1", "--record", str(rec),
                           check=False), "exists")


@pytest.mark.parametrize("policy", ["shortcut", "diffusion", "vla"])
def test_pretrain_every_policy_type(tmp_path, push_store, policy):
    out = tmp_path / policy
    run("pretrain", "--policy", policy, "--data", str(push_store), "--out", str(out), "--steps", "6", "--quiet",
        "--", *TINY)
    result = json.loads(run("eval", "--checkpoint", str(out), "--episodes", "1", "--json").stdout)
    assert result["episodes"] == 1


def test_pretrain_errors(tmp_path, push_store):
    out = tmp_path / "run"
    run("pretrain", "--policy", "flow", "--data", str(push_store), "--out", str(out), "--steps", "2", "--quiet",
        "--", *TINY)
    assert_clean_error(run("pretrain", "--policy", "flow", "--data", str(push_store), "--out", str(out),
                           "--steps", "2", check=False), "already exists", "--resume")
    assert_clean_error(run("pretrain", "--policy", "diffusion", "--data", str(push_store), "--out", str(out),
                           "--resume", check=False), "trains a 'flow' policy")
    assert_clean_error(run("pretrain", "--policy", "mlp", "--data", str(push_store), "--out", str(tmp_path / "x"),
                           check=False), "unknown policy 'mlp'")
    assert_clean_error(run("pretrain", "--policy", "flow", "--data", str(tmp_path / "none.zarr"),
                           "--out", str(tmp_path / "y"), check=False), "no episode store at")
    assert_clean_error(run("pretrain", "--policy", "flow", "--data", str(push_store), "--out", str(tmp_path / "z"),
                           "--", "--policy.horizon=lots", check=False), "horizon")
    assert_clean_error(run("eval", "--checkpoint", str(tmp_path), check=False), "no saved policy")
    assert_clean_error(run("eval", "--checkpoint", str(out), "--task", "fly", "--episodes", "1", check=False),
                       "unknown task 'fly'")
