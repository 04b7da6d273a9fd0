"""A steered policy (a frozen base + small heads) acts, saves and reloads like any policy, in every mode and
over each base that can be steered."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.core.errors import ConfigError
from robot_rl.policy import SteeredPolicy, load_policy, make_policy
from tests.policy.test_policies import _batch, act_in_fresh_process, demo_data, tiny_policy  # noqa: F401 (a fixture)


def _base(name: str, data):
    torch.manual_seed(0)
    base = tiny_policy(name)
    base.fit_normalizers(data.all_steps("obs/state"), data.all_steps("action"))
    return base.eval()


@pytest.mark.parametrize(("base_name", "mode", "best_of"), [
    ("flow", "noise", 1), ("flow", "residual", 4), ("flow", "base", 4), ("diffusion", "noise", 3),
    ("shortcut", "residual", 1),
])
def test_steered_policy_acts_and_reloads_in_a_fresh_process(base_name, mode, best_of, demo_data, tmp_path):  # noqa: F811
    base = _base(base_name, demo_data)
    policy = SteeredPolicy.wrap(base, mode=mode, best_of=best_of, head_hidden_dim=32, q_hidden_dim=32, q_ensemble=3)
    batch = _batch(demo_data, policy, 3)
    actions = policy.act(batch, generator=torch.Generator().manual_seed(3))
    assert actions.shape == (3, 4, 7) and np.all(np.isfinite(actions))
    again = policy.act(batch, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(actions, again)  # evaluation is deterministic for a given seed
    policy.save(tmp_path / "steered")
    assert (tmp_path / "steered" / "base" / "config.json").is_file()
    np.testing.assert_allclose(act_in_fresh_process(tmp_path / "steered", batch, 3), actions, rtol=1e-5, atol=1e-6)
    assert load_policy(tmp_path / "steered").config == policy.config


def test_residual_steering_starts_as_the_base_policy(demo_data):  # noqa: F811
    base = _base("flow", demo_data)
    policy = SteeredPolicy.wrap(base, mode="residual", head_hidden_dim=32)
    batch = _batch(demo_data, policy, 4)
    cond = policy.encode(batch)
    noise = torch.randn(4, base.chunk_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = base.decode_noise(cond, noise)
        _, got = policy.propose(cond, 1, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(got[:, 0], expected)


def test_noise_steering_feeds_the_heads_noise_to_the_frozen_base(demo_data):  # noqa: F811
    base = _base("flow", demo_data)
    policy = SteeredPolicy.wrap(base, mode="noise", head_hidden_dim=32)
    cond = policy.encode(_batch(demo_data, policy, 5))
    with torch.no_grad():
        noise, chunks = policy.propose(cond, 2, generator=torch.Generator().manual_seed(0))
        assert noise.shape == (5, 2, base.chunk_dim) and noise.abs().max() <= policy.config.noise_bound
        torch.testing.assert_close(chunks.reshape(10, -1),
                                   base.decode_noise(cond.repeat_interleave(2, 0), noise.reshape(10, -1)))
    assert not any(p.requires_grad for p in policy.base.parameters())


def test_a_steered_policy_needs_a_base():
    with pytest.raises(ConfigError, match="base policy"):
        make_policy("steered", feature_dim=8)


@pytest.mark.parametrize("base_name", ["flow", "diffusion"])
def test_base_cloning_trains_the_action_head_on_cached_features_only(base_name, demo_data):  # noqa: F811
    from robot_rl.algos.offpolicy import ChunkLearner, ChunkLearnerConfig

    base = _base(base_name, demo_data)
    policy = SteeredPolicy.wrap(base, mode="base", q_hidden_dim=32, q_ensemble=3)
    learner = ChunkLearner(policy, ChunkLearnerConfig(mode="base", base_bc=1.0, base_bc_lr=1e-3))
    batch = _batch(demo_data, policy, 32)
    with torch.no_grad():
        feats = base.encode(batch)
    chunks = torch.randn(32, base.chunk_dim).clamp(-1, 1)  # chunks unlike what the base was trained on
    encoder = {k: v.clone() for k, v in base.obs_encoder.state_dict().items()}
    g = torch.Generator().manual_seed(0)

    def loss() -> float:
        with torch.no_grad():
            return float(np.mean([base.chunk_loss(feats, chunks, torch.Generator().manual_seed(s)).item()
                                  for s in range(8)]))

    before = loss()
    for _ in range(60):
        learner.imitate(feats, chunks, g)
    assert loss() < 0.7 * before
    for k, v in base.obs_encoder.state_dict().items():  # cached features stay valid
        torch.testing.assert_close(v, encoder[k])
    frozen = ChunkLearner(SteeredPolicy.wrap(_base(base_name, demo_data), mode="base", q_hidden_dim=32,
                                             q_ensemble=3), ChunkLearnerConfig(mode="base"))
    with pytest.raises(ValueError, match="base_bc"):
        frozen.imitate(feats, chunks)
