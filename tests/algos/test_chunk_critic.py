"""The chunk critic's backup, and the three ways of improving on a frozen policy with it."""

from __future__ import annotations

import pytest
import torch

from robot_rl.algos.chunk_critic import ChunkCritic, ChunkCriticConfig, chunk_targets, pessimistic
from robot_rl.algos.steering import NoiseActor, ResidualActor, SteeringConfig, best_of_n
from robot_rl.nn import BoundedResidual, QEnsemble, TanhGaussianHead


def test_chunk_target_matches_a_hand_computed_episode():
    gamma = 0.9
    # one 7-step episode acted in chunks of h = 3: decisions at t = 0, 3, 6
    rewards = torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.5, 0.0], [1.0, 0.0, 0.0]])
    executed = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 0, 0]])  # the last decision ran one step
    next_value = torch.tensor([2.0, 4.0, 8.0])
    # the episode terminated (success): the last decision does not bootstrap
    got = chunk_targets(rewards, executed, torch.tensor([False, False, True]), next_value, gamma)
    expected = [0.1 + 0.9 * 0.2 + 0.81 * 0.3 + 0.729 * 2.0,
                0.0 + 0.9 * 0.5 + 0.0 + 0.729 * 4.0,
                1.0]
    torch.testing.assert_close(got, torch.tensor(expected))
    # truncated after that step instead (a time limit): it bootstraps from the final observation at gamma^1
    got = chunk_targets(rewards, executed, torch.tensor([False, False, False]), next_value, gamma)
    torch.testing.assert_close(got[2], torch.tensor(1.0 + 0.9 * 8.0))
    # rewards past the executed prefix never count
    noisy = rewards.clone()
    noisy[2, 1:] = 100.0
    torch.testing.assert_close(chunk_targets(noisy, executed, torch.tensor([False, False, True]), next_value, gamma)[2],
                               torch.tensor(1.0))


def test_pessimistic_target_is_a_min_over_members():
    q = torch.tensor([[1.0, 5.0], [2.0, 3.0], [0.5, 9.0]])
    torch.testing.assert_close(pessimistic(q, 3), torch.tensor([0.5, 3.0]))
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        two = pessimistic(q, 2, g)
        assert all(two[i] in q[:, i] for i in range(2)) and (two >= q.min(0).values).all()


def test_critic_fits_fixed_targets_and_members_differ():
    torch.manual_seed(0)
    critic = ChunkCritic(6, 4, ChunkCriticConfig(ensemble=4, hidden_dim=64, lr=1e-3))
    feats, acts = torch.randn(128, 6), torch.randn(128, 4)
    targets = feats[:, 0] - acts[:, 1]
    first = critic.update(feats, acts, targets)["q_loss"]
    for _ in range(300):
        last = critic.update(feats, acts, targets)["q_loss"]
    assert last < 0.1 * first
    assert critic.q(feats, acts).std(dim=0).mean() > 0  # independent members, not one net copied
    with pytest.raises(ValueError, match="features"):
        critic.value(torch.randn(3, 5), torch.randn(3, 4))


def test_best_of_n_returns_the_critics_argmax():
    torch.manual_seed(1)
    q = QEnsemble(3, 2, ensemble=3, hidden_dim=32)
    feats, cands = torch.randn(5, 3), torch.randn(5, 7, 2)
    with torch.no_grad():
        idx, value = best_of_n(lambda f, a: q(f, a).mean(0), feats, cands)
        for i in range(5):
            values = q(feats[i : i + 1].expand(7, -1), cands[i]).mean(0)
            assert idx[i] == values.argmax()
            torch.testing.assert_close(value[i], values.max())


def test_residual_starts_as_the_identity_and_stays_bounded():
    torch.manual_seed(2)
    cfg = SteeringConfig(hidden_dim=32, residual_scale=0.05, lr=1e-2)
    res = ResidualActor(BoundedResidual(4, 3, hidden_dim=32, scale=cfg.residual_scale), cfg)
    feats, base = torch.randn(16, 4), torch.rand(16, 3) * 1.6 - 0.8
    torch.testing.assert_close(res(feats, base), base)
    # a critic that wants the first action dim as large as possible: the edit grows, up to its bound
    for _ in range(200):
        res.improve(lambda f, a: a[:, 0], feats, base)
    edit = res(feats, base) - base
    assert (edit[:, 0] > 0.04).all() and (edit.abs() <= 0.05 + 1e-6).all()


def test_noise_actor_moves_toward_higher_q_noise_on_a_fixed_critic():
    torch.manual_seed(3)
    cfg = SteeringConfig(hidden_dim=64, lr=3e-3, noise_bound=2.0)
    noise_dim = 8
    actor = NoiseActor(TanhGaussianHead(5, noise_dim, 64, bound=2.0), 5, cfg, ChunkCriticConfig(hidden_dim=64))
    feats = torch.randn(256, 5)
    good = torch.linspace(-1.5, 1.5, noise_dim)  # the noise the critic likes best, everywhere

    def q_of(w: torch.Tensor) -> torch.Tensor:
        return -((w - good) ** 2).sum(-1)

    for _ in range(400):  # distil the fixed critic into the noise critic from broad noise
        w = torch.rand(256, noise_dim) * 4 - 2
        actor.distill(feats, w, q_of(w))
    with torch.no_grad():
        before = q_of(actor(feats, deterministic=True)[0]).mean()
    for _ in range(300):
        actor.improve(feats)
    with torch.no_grad():
        w_det = actor(feats, deterministic=True)[0]
    assert q_of(w_det).mean() > before + 2.0
    assert (w_det - good).abs().mean() < 0.3
    assert w_det.shape == (256, noise_dim) and w_det.abs().max() <= 2.0
