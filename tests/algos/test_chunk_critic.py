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


def _operator_batch(policy, n: int = 32):
    """A fixed replay batch whose every row is an operator's chunk (the same chunk, from varied states)."""
    from tests.algos.test_algos import state_batch

    base = policy.base
    h, a, big_h = base.config.n_action_steps, base.config.features.action_dim, base.config.horizon
    chunk = torch.linspace(-0.6, 0.6, big_h * a)  # normalised, the whole horizon
    with torch.no_grad():
        feats = base.encode(state_batch(n, seed=5))
    return {"features": feats, "action": chunk[: h * a].expand(n, -1).clone(),
            "full_action": chunk.expand(n, -1).clone(), "intervention": torch.ones(n, dtype=torch.bool),
            "rewards": torch.zeros(n, h), "executed": torch.ones(n, h, dtype=torch.bool),
            "terminated": torch.zeros(n, dtype=torch.bool), "returns": torch.zeros(n),
            "next_features": feats, "next_candidates": torch.zeros(n, 2, h * a),
            "candidates": torch.zeros(n, 2, h * a)}, chunk


@pytest.mark.parametrize("mode", ["noise", "residual"])
def test_bc_on_interventions_pulls_the_steering_actor_toward_the_operators_chunk(mode):
    from robot_rl.algos.offpolicy import ChunkLearner, ChunkLearnerConfig
    from robot_rl.policy import SteeredPolicy
    from tests.algos.test_algos import tiny

    def distance(coef: float) -> tuple[float, float]:
        base = tiny("flow", horizon=4)  # the same frozen base (seeded) on both sides
        base.config.n_action_steps = 2
        policy = SteeredPolicy.wrap(base, mode=mode, head_hidden_dim=32, q_hidden_dim=32, residual_scale=2.0)
        cfg = ChunkLearnerConfig(mode=mode, backup="mc", actor_every=1, intervention_bc=coef, batch_size=32,
                                 critic=ChunkCriticConfig(hidden_dim=32), steering=SteeringConfig(hidden_dim=32))
        torch.manual_seed(0)
        learner = ChunkLearner(policy, cfg)
        batch, chunk = _operator_batch(policy)
        if mode == "residual":  # the base chunk the residual edits: the frozen policy's own
            with torch.no_grad():
                own = base.decode_noise(batch["features"], torch.zeros(32, base.chunk_dim))[:, :4]
            batch["candidates"] = own[:, None].repeat(1, 2, 1)

        def gap() -> float:
            with torch.no_grad():
                if mode == "noise":
                    w, _ = learner.noise(batch["features"], deterministic=True)
                    acted = base.decode_noise(batch["features"], w)[:, :4]
                else:
                    acted = learner.residual(batch["features"], batch["candidates"][:, 0])
            return float((acted - chunk[:4]).abs().mean())

        before = gap()
        gen = torch.Generator().manual_seed(1)
        for _ in range(80):
            metrics = learner.update(batch, gen)
        assert ("intervention_bc_loss" in metrics) == (coef > 0)
        return before, gap()

    before, with_bc = distance(1.0)
    _, without = distance(0.0)
    assert with_bc < 0.5 * before and with_bc < 0.5 * without, (before, with_bc, without)


def test_flow_noise_inversion_recovers_the_noise_that_decodes_to_a_chunk():
    from tests.algos.test_algos import state_batch, tiny

    policy = tiny("flow", horizon=4)
    for p in policy.velocity_net.parameters():  # a velocity field far from zero, so inversion has work to do
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=0.3)
    with torch.no_grad():
        cond = policy.encode(state_batch(8))
        noise = torch.randn(8, policy.chunk_dim, generator=torch.Generator().manual_seed(0))
        chunk = policy.decode_noise(cond, noise)
        assert (chunk - noise).abs().mean() > 0.3
        recovered = policy.invert_noise(cond, chunk)
    torch.testing.assert_close(recovered, noise, atol=2e-3, rtol=0)
