"""Fixtures of the runtime tests: one tiny job's demos, cloned policy and progress critic, made once per
session, that the RL tests fine-tune from."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_chunk_job(tmp_path_factory) -> Path:
    from tests.runtime.training.test_offpolicy import _tiny_chunk_run

    out = tmp_path_factory.mktemp("tiny_chunk_job") / "job"
    res = _tiny_chunk_run(out, "--rl.iterations=1", "--rl.steps_per_iteration=2")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


def fresh_rl(job: Path, out: Path) -> Path:
    """A copy of ``job`` without its RL stage: a new ``robot-rl train --out=out`` reuses the demos, the cloned
    policy, the critic and the BC evaluation, and fine-tunes from scratch."""
    shutil.copytree(job, out, ignore=shutil.ignore_patterns("rl", "summary.json", "eval_after.json"))
    return out
