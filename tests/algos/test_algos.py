"""The RL algorithms on small real models: exact chain log-probabilities against brute force, GAE
against discounted sums, and a PPO update that moves the policy toward higher-advantage actions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robot_rl.algos.dppo import DPPOActor, DPPOConfig
from robot_rl.algos.ppo import (
    PPOConfig,
    ReturnNormalizer,
    compute_gae,
    off_policy_gae,
    ppo_loss,
    ppo_update,
    value_network,
)
from robot_rl.algos.reinflow import ReinFlowActor, ReinFlowConfig
from robot_rl.algos.rewards import RND, RewardConfig, combine_rewards
from robot_rl.policy import DiffusionConfig, FlowConfig, PolicyFeatures, make_policy

STATE_ONLY = PolicyFeatures(cameras=[], image_size=0, state_dim=5, action_dim=2)


def tiny(name: str, horizon: int = 2, **fields):
    cfg_cls = DiffusionConfig if name == "diffusion" else FlowConfig
    cfg = cfg_cls(features=STATE_ONLY, horizon=horizon, n_action_steps=1, use_language=False,
                  hidden_dim=32, n_blocks=1, **fields)
    torch.manual_seed(0)
    return make_policy(name, cfg)


def state_batch(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"obs/state": rng.normal(size=(n, 1, 5)).astype(np.float32), "instruction": ["push"] * n}


def test_reinflow_chain_log_prob_matches_brute_force():
    policy = tiny("flow")
    actor = ReinFlowActor(policy, ReinFlowConfig(denoising_steps=3, sigma_min=0.05, sigma_max=0.3, sigma_init=0.1))
    torch.nn.init.normal_(actor.noise_net.mlp[-1].weight, std=0.5)  # a noise net whose sigma varies with x, t
    cond = policy.encode(state_batch(4))
    with torch.no_grad():
        _, chain, log_prob = actor.sample(cond, generator=torch.Generator().manual_seed(1))
    # brute force in float64, transition by transition, with torch.distributions
    brute = torch.zeros(4, dtype=torch.float64)
    for k in range(3):
        t = torch.full((4,), k / 3)
        x = chain[:, k]
        mean = (x + policy.velocity(x, t, cond) / 3).double()
        std = actor.noise_net(x, t, cond).double()
        assert torch.all(std >= 0.05 - 1e-6) and torch.all(std <= 0.3 + 1e-6)
        brute += torch.distributions.Normal(mean, std).log_prob(chain[:, k + 1].double()).sum(-1)
    torch.testing.assert_close(log_prob.double(), brute, rtol=1e-5, atol=1e-3)
    recomputed, entropy = actor.log_prob(cond, chain)
    torch.testing.assert_close(recomputed.double(), brute, rtol=1e-5, atol=1e-3)
    assert torch.all(torch.isfinite(entropy))
    init = torch.distributions.Normal(0.0, 1.0).log_prob(chain[:, 0].double()).sum(-1)
    torch.testing.assert_close(actor.full_log_prob(cond, chain).double(), brute + init, rtol=1e-5, atol=1e-3)


def test_reinflow_transition_samples_have_the_scored_mean_and_std():
    """Monte Carlo: many one-step chains from one x_0 follow the Gaussian the log-probability assumes."""
    policy = tiny("flow")
    actor = ReinFlowActor(policy, ReinFlowConfig(denoising_steps=1, sigma_init=0.15, sigma_max=0.3))
    cond = policy.encode(state_batch(1)).expand(20000, -1)
    x0 = torch.randn(1, policy.chunk_dim).expand(20000, -1)
    with torch.no_grad():
        chain = policy.sample_chain(cond, steps=1, noise_std=actor.noise_net, x0=x0,
                                    generator=torch.Generator().manual_seed(0))
        mean = x0[:1] + policy.velocity(x0[:1], torch.zeros(1), cond[:1])
        std = actor.noise_net(x0[:1], torch.zeros(1), cond[:1])
    x1 = chain.xs[:, 1]
    torch.testing.assert_close(x1.mean(0, keepdim=True), mean, atol=0.01, rtol=0)
    torch.testing.assert_close(x1.std(0, keepdim=True), std, atol=0.01, rtol=0.02)


def test_ddpm_chain_log_prob_matches_the_bayes_posterior():
    """DPPO's scored steps: the DDPM reverse step equals q(x_prev | x_t, x0_hat) derived by Bayes from
    q(x_prev | x0) and q(x_t | x_prev), with the std floored at min_std."""
    policy = tiny("diffusion", num_train_timesteps=50, clip_sample=False)
    cfg = DPPOConfig(denoising_steps=5, ft_denoising_steps=3, sampler="ddpm", min_std=0.08)
    actor = DPPOActor(policy, cfg)
    cond = policy.encode(state_batch(3))
    with torch.no_grad():
        _, chain, log_prob = actor.sample(cond, generator=torch.Generator().manual_seed(2))
    assert chain.shape == (3, 4, policy.chunk_dim)
    ts = policy.timesteps(5)
    ab = policy.alpha_bars.double()
    brute = torch.zeros(3, dtype=torch.float64)
    for i, k in enumerate(range(2, 5)):  # the last three of five steps
        t, t_prev = ts[k], (ts[k + 1] if k + 1 < 5 else None)
        ab_t = ab[t]
        ab_prev = ab[t_prev] if t_prev is not None else torch.tensor(1.0, dtype=torch.float64)
        x_t = chain[:, i].double()
        eps = policy.predict_noise(chain[:, i], torch.full((3,), t), cond).double()
        x0_hat = (x_t - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
        alpha, beta = ab_t / ab_prev, 1 - ab_t / ab_prev
        if t_prev is None:  # the last step lands on x0_hat; only the floor gives it a density
            mean, var = x0_hat, torch.zeros(())
        else:
            precision = 1 / (1 - ab_prev) + alpha / beta
            mean = (ab_prev.sqrt() * x0_hat / (1 - ab_prev) + alpha.sqrt() * x_t / beta) / precision
            var = 1 / precision
        std = var.sqrt().clamp_min(cfg.min_std).expand_as(mean)
        brute += torch.distributions.Normal(mean, std).log_prob(chain[:, i + 1].double()).sum(-1)
    # float32 against float64: the DDPM step divides by small betas
    torch.testing.assert_close(log_prob.double(), brute, rtol=1e-3, atol=1e-2)
    torch.testing.assert_close(actor.log_prob(cond, chain)[0].double(), brute, rtol=1e-3, atol=1e-2)


def test_dppo_keeps_the_early_steps_frozen():
    policy = tiny("diffusion", num_train_timesteps=50)
    actor = DPPOActor(policy, DPPOConfig(denoising_steps=5, ft_denoising_steps=2))
    frozen_before = [p.clone() for p in actor.frozen.parameters()]
    opt = torch.optim.SGD(actor.trainable_groups()["actor"], lr=0.1)
    cond = policy.encode(state_batch(8))
    with torch.no_grad():
        _, chain, _ = actor.sample(cond)
    (-actor.log_prob(cond, chain)[0].mean()).backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(frozen_before, actor.frozen.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(frozen_before, policy.noise_net.parameters()))
    with pytest.raises(ValueError, match="ft_denoising_steps"):
        DPPOActor(policy, DPPOConfig(denoising_steps=3, ft_denoising_steps=4))


def test_gae_matches_discounted_sums():
    rng = np.random.default_rng(0)
    r, v, nv = rng.normal(size=(3, 6, 2))
    term = np.zeros((6, 2))
    end = np.zeros((6, 2))
    term[2, 0] = end[2, 0] = 1  # env 0: an episode terminates at step 2
    end[4, 1] = 1  # env 1: truncated at step 4 (bootstraps from its final observation)
    # consistent rollouts: V(next observation) is the next step's V except where an episode ended
    nv[:-1] = np.where(end[:-1] == 1, nv[:-1], v[1:])
    # lambda = 1: the advantage is the discounted return to the episode end (+ bootstrap) minus V
    adv, ret = compute_gae(r, v, nv, term, end, gamma=0.9, lam=1.0)
    expected = r[0, 0] + 0.9 * r[1, 0] + 0.81 * r[2, 0] - v[0, 0]
    assert adv[0, 0] == pytest.approx(expected, rel=1e-5)
    expected = r[3, 1] + 0.9 * r[4, 1] + 0.81 * nv[4, 1] - v[3, 1]
    assert adv[3, 1] == pytest.approx(expected, rel=1e-5)
    expected = r[5, 0] + 0.9 * nv[5, 0] - v[5, 0]  # the rollout's last step bootstraps
    assert adv[5, 0] == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(ret, adv + v, rtol=1e-5)
    # lambda = 0: one-step TD errors
    adv0, _ = compute_gae(r, v, nv, term, end, gamma=0.9, lam=0.0)
    np.testing.assert_allclose(adv0, r + 0.9 * (1 - term) * nv - v, rtol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        compute_gae(r[:5], v, nv, term, end, 0.9, 0.9)


def test_off_policy_gae_is_gae_on_fresh_data_and_v_trace_on_stale():
    rng = np.random.default_rng(1)
    r, v, nv = rng.normal(size=(3, 7, 2))
    term, end = np.zeros((7, 2)), np.zeros((7, 2))
    term[3, 0] = end[3, 0] = 1
    end[5, 1] = 1
    nv[:-1] = np.where(end[:-1] == 1, nv[:-1], v[1:])
    # acted with the learner's own weights (ratio 1): exactly GAE, advantages and returns
    adv, ret = off_policy_gae(r, v, nv, term, end, 0.9, 0.8, np.zeros((7, 2)))
    adv_ref, ret_ref = compute_gae(r, v, nv, term, end, 0.9, 0.8)
    np.testing.assert_allclose(adv, adv_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ret, ret_ref, rtol=1e-5, atol=1e-6)
    # stale: brute force over one episode (env 0, steps 4..6, not ended), ratios on both sides of the clip
    log_ratio = rng.normal(scale=0.7, size=(7, 2))
    gamma, lam, clip = 0.9, 0.8, 1.0
    adv, ret = off_policy_gae(r, v, nv, term, end, gamma, lam, log_ratio, is_clip=clip)
    c = np.minimum(np.exp(log_ratio[:, 0]), clip)
    delta = r[:, 0] + gamma * (1 - term[:, 0]) * nv[:, 0] - v[:, 0]
    for s in range(4, 7):
        target = v[s, 0] + sum((gamma * lam) ** (t - s) * np.prod(c[s:t]) * c[t] * delta[t] for t in range(s, 7))
        advantage = sum((gamma * lam) ** (t - s) * np.prod(c[s + 1: t + 1]) * delta[t] for t in range(s, 7))
        assert ret[s, 0] == pytest.approx(target, rel=1e-4, abs=1e-5)
        assert adv[s, 0] == pytest.approx(advantage, rel=1e-4, abs=1e-5)
    # nothing crosses an episode's end: the step that ended env 0's episode is its own TD error, cut by rho
    assert adv[3, 0] == pytest.approx(delta[3], rel=1e-5)
    assert ret[3, 0] == pytest.approx(v[3, 0] + c[3] * delta[3], rel=1e-5)
    with pytest.raises(ValueError, match="shape"):
        off_policy_gae(r, v, nv, term, end, 0.9, 0.8, np.zeros((6, 2)))


def test_ppo_loss_weights_scale_each_decisions_surrogate():
    g = torch.Generator().manual_seed(0)
    lp, old, adv, ent, val, old_val, ret = (torch.randn(16, generator=g) * 0.02 for _ in range(7))
    cfg = PPOConfig(vf_coef=0.0)
    plain, m = ppo_loss(lp, old, adv, ent, val, old_val, ret, cfg)
    ones, _ = ppo_loss(lp, old, adv, ent, val, old_val, ret, cfg, weights=torch.ones(16))
    half, mh = ppo_loss(lp, old, adv, ent, val, old_val, ret, cfg, weights=torch.full((16,), 0.5))
    assert float(ones) == pytest.approx(float(plain)) and mh["policy_loss"] == pytest.approx(0.5 * m["policy_loss"])
    mask = torch.zeros(16)
    mask[:4] = 1.0  # a zero weight removes a decision from the gradient
    only, _ = ppo_loss(lp, old, adv, ent, val, old_val, ret, cfg, weights=mask)
    first, _ = ppo_loss(lp[:4], old[:4], adv[:4], ent[:4], val[:4], old_val[:4], ret[:4], cfg)
    assert float(only) == pytest.approx(float(first) * 4 / 16, rel=1e-5)


@pytest.mark.parametrize("algo", ["reinflow", "dppo"])
def test_ppo_update_moves_the_policy_toward_higher_advantage_actions(algo):
    if algo == "reinflow":
        policy = tiny("flow")
        actor = ReinFlowActor(policy, ReinFlowConfig(denoising_steps=2, sigma_init=0.2, sigma_max=0.3))
    else:
        policy = tiny("diffusion", num_train_timesteps=20)
        actor = DPPOActor(policy, DPPOConfig(denoising_steps=4, ft_denoising_steps=4, min_std=0.1))
    value = value_network(policy.obs_encoder.out_dim, 16)
    groups = actor.trainable_groups()
    opt = torch.optim.Adam([{"params": groups["actor"] + groups["noise"], "lr": 3e-3},
                            {"params": list(value.parameters()), "lr": 1e-3}])
    cond = policy.encode(state_batch(256)).detach()
    gen = torch.Generator().manual_seed(0)

    def mean_first_action() -> float:
        with torch.no_grad():
            actions = actor.sample(cond, deterministic=True, generator=torch.Generator().manual_seed(5))[0]
            return float(actions[:, 0].mean())

    before = mean_first_action()
    cfg = PPOConfig(epochs=4, minibatch_size=64, clip_ratio=0.2, target_kl=None)
    for _ in range(5):
        with torch.no_grad():
            actions, chain, log_prob = actor.sample(cond, generator=gen)
        adv = torch.where(actions[:, 0] > actions[:, 0].median(), 1.0, -1.0)  # reward: push dim 0 up
        batch = {"cond": cond, "chain": chain, "log_prob": log_prob, "advantages": adv,
                 "returns": adv, "values": torch.zeros(256)}
        metrics = ppo_update(actor, value, opt, batch, cfg, generator=gen)
        assert math.isfinite(metrics["policy_loss"])
    after = mean_first_action()
    assert after > before + 0.05, f"mean first action {before:.3f} -> {after:.3f}"


def test_rewards_and_normaliser():
    success = np.array([[0, 0], [1, 0]], dtype=bool)
    delta = np.array([[0.1, -0.2], [0.3, 0.0]])
    np.testing.assert_allclose(combine_rewards(success, None, RewardConfig(kind="sparse")), success)
    np.testing.assert_allclose(combine_rewards(success, delta, RewardConfig(kind="critic", critic_weight=2)),
                               2 * delta, rtol=1e-6)
    np.testing.assert_allclose(combine_rewards(success, delta, RewardConfig(kind="mix")), delta + success,
                               rtol=1e-6)
    with pytest.raises(ValueError, match="progress deltas"):
        combine_rewards(success, None, RewardConfig(kind="critic"))
    with pytest.raises(ValueError, match="reward kind"):
        RewardConfig(kind="dense").validate()
    norm = ReturnNormalizer(gamma=0.9)
    rewards = np.random.default_rng(0).normal(scale=5.0, size=(200, 4))
    norm.update(rewards, np.zeros((200, 4)))
    assert 0.05 < np.std(norm(rewards)) < 0.6  # the return's std (about 11) scales rewards of std 5
    state = norm.state_dict()
    other = ReturnNormalizer(gamma=0.9)
    other.load_state_dict(state)
    assert other.std == norm.std


def test_rnd_bonus_falls_on_seen_inputs():
    torch.manual_seed(0)
    rnd = RND(8)
    opt = torch.optim.Adam(rnd.predictor.parameters(), lr=1e-2)
    seen, novel = torch.randn(64, 8), torch.randn(64, 8) + 3.0
    for _ in range(300):
        opt.zero_grad()
        rnd.loss(seen).backward()
        opt.step()
    assert rnd.error(seen).mean() < 0.2 * rnd.error(novel).mean()


def test_a_takeover_penalises_the_policys_step_before_it_and_nothing_else():
    from robot_rl.algos.rewards import takeover_steps
    from robot_rl.core.schema import Episode, EpisodeMeta
    from robot_rl.runtime.training.chunk_replay import ChunkFeaturizer

    flags = np.array([1, 1, 0, 0, 1, 1, 0, 1, 0], bool)  # opening help, then two takeovers
    np.testing.assert_array_equal(takeover_steps(flags), [3, 6])
    assert len(takeover_steps(np.zeros(4, bool))) == 0 and len(takeover_steps(np.ones(4, bool))) == 0
    n = len(flags)
    ep = Episode.from_steps([{"state": np.zeros(5, np.float32)}] * n, np.zeros((n, 2), np.float32), [0.0] * n,
                            [False] * (n - 1) + [True], [False] * n, [False] * (n - 1) + [True],
                            {"state": np.zeros(5, np.float32)}, EpisodeMeta("push", "push", True, "policy"),
                            interventions=flags.tolist())
    rewards = ChunkFeaturizer(tiny("flow"), RewardConfig(kind="sparse", takeover_penalty=0.5), None, 1,
                              "push").step_rewards(ep)
    expected = np.zeros(n, np.float32)
    expected[[3, 6]] = -0.5
    expected[-1] += 1.0  # the success
    np.testing.assert_allclose(rewards, expected)
