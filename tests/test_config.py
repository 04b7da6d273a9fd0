"""Typed configs from YAML plus overrides, and the presets under configs/."""

from __future__ import annotations

from pathlib import Path

import pytest

from robot_rl.config import EnvConfig, config_to_dict, load_config
from robot_rl.core.errors import ConfigError
from robot_rl.envs import make_env

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted((CONFIGS / "env").glob("*.yaml")), ids=lambda p: p.name)
def test_env_presets_load_and_build(path):
    cfg = load_config(EnvConfig, path, ["--image_size=16"])
    assert cfg.image_size == 16
    env = make_env(cfg)
    env.reset(seed=0)
    env.close()


def test_round_trip_and_errors(tmp_path):
    cfg = load_config(EnvConfig, None, ["--task=lift", "--cameras=[front]", "--max_steps=5"])
    assert (cfg.task, cfg.cameras, cfg.max_steps) == ("lift", ["front"], 5)
    assert config_to_dict(cfg)["cameras"] == ["front"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: push\nbogus: 3\n")
    with pytest.raises(ConfigError, match="bogus"):
        load_config(EnvConfig, bad)
    with pytest.raises(ConfigError, match="image_size"):
        load_config(EnvConfig, None, ["--image_size=big"])
    with pytest.raises(ConfigError, match="unrecognized arguments: --nope=1"):
        load_config(EnvConfig, None, ["--nope=1"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(EnvConfig, tmp_path / "missing.yaml")
