"""Shared fixtures: everything runs offline, renders headless, and builds its own small data."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MUJOCO_GL", "egl")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from robot_rl.config import EnvConfig, config_to_dict  # noqa: E402
from robot_rl.envs import make_env  # noqa: E402
from robot_rl.replay.store import EpisodeStore  # noqa: E402
from robot_rl.runtime.training.collect import expert_rollout  # noqa: E402

SMALL_IMAGE = 32


def small_env(task: str = "push", **overrides):
    return make_env(EnvConfig(task=task, image_size=SMALL_IMAGE, **overrides))


@pytest.fixture(scope="session")
def push_episodes():
    """Five real expert episodes of the push task with two 32x32 cameras."""
    env = small_env("push")
    try:
        return [expert_rollout(env, "push", seed=s, noise=0.1) for s in range(5)]
    finally:
        env.close()


@pytest.fixture
def push_store(tmp_path: Path, push_episodes) -> Path:
    path = tmp_path / "push.zarr"
    with EpisodeStore.create(path) as store:
        store.set_env_config(config_to_dict(EnvConfig(task="push", image_size=SMALL_IMAGE)))  # as collect does
        for ep in push_episodes:
            store.append(ep)
    return path


def _missing(package: str, venv: str) -> str | None:
    """Why tests that need ``package`` cannot run in this interpreter, or None when they can."""
    import importlib.util

    if importlib.util.find_spec(package) is not None:
        return None
    why = Path(__file__).resolve().parents[1] / venv / "UNAVAILABLE"
    if why.exists():
        return f"{package} could not be installed here (see {why})"
    return f"{package} is not installed in this venv: `make test` runs these tests in {venv}"


def _libero_missing() -> str | None:
    missing = _missing("libero", ".venv-libero")
    if missing is None:
        from robot_rl.envs.libero.env import assets_dir

        if not (assets_dir() / "scenes").is_dir():
            return f"LIBERO's scene assets are not at {assets_dir()} (set LIBERO_ASSETS; see ../shared/libero-assets)"
    return missing


def pytest_collection_modifyitems(config, items):
    for marker, why in (("robosuite", _missing("robosuite", ".venv-robosuite")), ("libero", _libero_missing())):
        if why is None:
            continue
        skip = pytest.mark.skip(reason=why)
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)
