"""Every registered policy trains on a tiny real store (its loss falls), acts, saves and reloads;
bad inputs get clear errors; the Gaussian chains expose exact log-probabilities."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from robot_rl.core.errors import ConfigError
from robot_rl.policy import load_policy, make_policy, policy_class, policy_names
from robot_rl.policy.chain import gaussian_log_prob, standard_normal_log_prob
from robot_rl.replay import EpisodeStore, InMemoryEpisodes
from robot_rl.runtime.training.pretrain import DemoData
from tests.conftest import SMALL_IMAGE

ROOT = Path(__file__).resolve().parents[2]
CLONED = [n for n in policy_names() if policy_class(n).cloned]  # steered policies: tests/policy/test_steered.py
TINY = {"hidden_dim": 64, "n_blocks": 1, "image_feature_dim": 16, "horizon": 4, "n_action_steps": 2}


def tiny_policy(name: str, **extra):
    cls = policy_class(name)
    features = {"cameras": ["front", "wrist"], "image_size": SMALL_IMAGE, "state_dim": 22, "action_dim": 7}
    fields = {**TINY, **extra}
    from robot_rl.policy.config import PolicyFeatures

    return make_policy(name, cls.config_cls(features=PolicyFeatures(**features), **fields))


@pytest.fixture
def demo_data(push_store):
    return DemoData([str(push_store)], None, memory_limit_gb=1.0)


def _batch(data: DemoData, policy, n: int = 16, seed: int = 0):
    return data.sample(n, policy.config.horizon, policy.config.n_obs_steps, np.random.default_rng(seed))


@pytest.mark.parametrize("name", CLONED)
def test_trains_and_loss_falls(name, demo_data):
    torch.manual_seed(0)
    policy = tiny_policy(name)
    policy.fit_normalizers(demo_data.all_steps("obs/state"), demo_data.all_steps("action"))
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=3e-3)
    batch = _batch(demo_data, policy, 32)
    losses = []
    for _ in range(40):  # fitting one fixed batch: the loss must fall clearly
        loss, metrics = policy.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(metrics["loss"])
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    actions = policy.act(_batch(demo_data, policy, 3, seed=1))
    assert actions.shape == (3, 4, 7) and np.all(np.isfinite(actions))


def act_in_fresh_process(folder: Path, batch: dict, seed: int) -> np.ndarray:
    """What the policy saved in ``folder`` does on ``batch`` when a new interpreter loads it."""
    work = folder.parent
    np.savez(work / "batch.npz", **{k.replace("/", "|"): v for k, v in batch.items() if k != "instruction"})
    (work / "instr.txt").write_text("\n".join(batch["instruction"]))
    script = (
        "import numpy as np, torch, sys; from robot_rl.policy import load_policy; d, f, s = sys.argv[1:4]; "
        "z=np.load(d+'/batch.npz'); b={k.replace('|','/'): z[k] for k in z.files}; "
        "b['instruction']=open(d+'/instr.txt').read().split('\\n'); p=load_policy(f); "
        "np.save(d+'/out.npy', p.act(b, generator=torch.Generator().manual_seed(int(s))))"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(work), str(folder), str(seed)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return np.load(work / "out.npy")


@pytest.mark.parametrize("name", CLONED)
def test_saved_policy_acts_the_same_in_a_fresh_process(name, demo_data, tmp_path):
    policy = tiny_policy(name)
    policy.fit_normalizers(demo_data.all_steps("obs/state"), demo_data.all_steps("action"))
    batch = _batch(demo_data, policy, 2)
    policy.save(tmp_path / "policy")
    expected = policy.act(batch, generator=torch.Generator().manual_seed(7))
    np.testing.assert_allclose(act_in_fresh_process(tmp_path / "policy", batch, 7), expected, rtol=1e-5, atol=1e-6)
    assert load_policy(tmp_path / "policy").config == policy.config


@pytest.mark.parametrize("family", ["smolvlm", "paligemma"])
def test_tiny_vla_builds_offline_and_acts(family, demo_data):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    policy = tiny_policy("vla", tiny_backbone=family)
    assert policy.obs_encoder.backbone.family == family
    batch = _batch(demo_data, policy, 2)
    actions = policy.act(batch)
    assert actions.shape == (2, 4, 7) and np.all(np.isfinite(actions))
    # the instruction reaches the backbone: another instruction, another condition
    policy.eval()
    cond = policy.encode(batch)
    other = policy.encode({**batch, "instruction": ["stack the red cube on top of the green cube"] * 2})
    assert not torch.allclose(cond, other)


def test_vla_freeze_and_lora():
    frozen = tiny_policy("vla")
    backbone = frozen.obs_encoder.backbone
    assert not any(p.requires_grad for p in backbone.parameters())
    assert any(p.requires_grad for p in frozen.velocity_net.parameters())
    lora = tiny_policy("vla", lora_rank=4)
    trainable = [n for n, p in lora.obs_encoder.backbone.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("vision" in n for n in trainable)  # adapters on the language model only
    full = tiny_policy("vla", freeze_backbone=False)
    assert all(p.requires_grad for p in full.obs_encoder.backbone.parameters())


def test_vla_with_lora_saves_and_reloads(demo_data, tmp_path):
    policy = tiny_policy("vla", tiny_backbone="paligemma", lora_rank=2)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_()  # make the adapters matter
    batch = _batch(demo_data, policy, 2)
    expected = policy.act(batch, generator=torch.Generator().manual_seed(3))
    policy.save(tmp_path / "vla")
    again = load_policy(tmp_path / "vla").act(batch, generator=torch.Generator().manual_seed(3))
    np.testing.assert_allclose(again, expected, rtol=1e-5, atol=1e-6)


def test_bad_inputs_get_clear_errors(demo_data):
    policy = tiny_policy("flow")
    batch = _batch(demo_data, policy, 2)
    wrong_size = {**batch, "obs/images/front": batch["obs/images/front"][:, :, :16, :16]}
    with pytest.raises(ConfigError, match=r"obs/images/front has shape \(2, 1, 16, 16, 3\).*\(2, 1, 32, 32, 3\)"):
        policy.act(wrong_size)
    missing = {k: v for k, v in batch.items() if k != "obs/images/wrist"}
    with pytest.raises(ConfigError, match="camera 'wrist' is missing"):
        policy.act(missing)
    with pytest.raises(ConfigError, match=r"action has shape \(2, 4, 6\).*\(B, 4, 7\)"):
        policy.loss({**batch, "action": batch["action"][..., :6]})
    with pytest.raises(ConfigError, match="obs/state has shape"):
        policy.act({**batch, "obs/state": batch["obs/state"][..., :5]})
    with pytest.raises(ConfigError, match="unknown policy 'transformer'"):
        make_policy("transformer")
    with pytest.raises(ConfigError, match="n_action_steps"):
        tiny_policy("flow", n_action_steps=9)


def test_flow_chain_log_prob_is_exact(demo_data):
    torch.manual_seed(0)
    policy = tiny_policy("flow")
    batch = _batch(demo_data, policy, 3)
    cond = policy.encode(batch)

    def noise(x, t, c):
        return 0.05 + 0.1 * t[:, None].expand_as(x)

    chain = policy.sample_chain(cond, steps=4, noise_std=noise)
    assert chain.xs.shape == (3, 5, policy.chunk_dim) and chain.log_probs.shape == (3, 4)
    # brute force: each transition is N(x + v dt, sigma^2), with sigma at the step's time
    brute = torch.zeros(3, 4)
    for k in range(4):
        t = torch.full((3,), k / 4)
        mean = chain.xs[:, k] + 0.25 * policy.velocity(chain.xs[:, k], t, cond)
        dist = torch.distributions.Normal(mean, 0.05 + 0.1 * k / 4)
        brute[:, k] = dist.log_prob(chain.xs[:, k + 1]).sum(-1)
    torch.testing.assert_close(chain.log_probs, brute, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(policy.chain_log_prob(cond, chain.xs, noise), brute, rtol=1e-4, atol=1e-3)
    total = chain.total_log_prob()
    torch.testing.assert_close(total, standard_normal_log_prob(chain.xs[:, 0]) + brute.sum(1), rtol=1e-4, atol=1e-3)


def test_diffusion_chain_log_prob_and_samplers(demo_data):
    torch.manual_seed(0)
    policy = tiny_policy("diffusion")
    cond = policy.encode(_batch(demo_data, policy, 2))
    assert len(policy.timesteps(5)) == 5 and policy.timesteps(5)[0] == 99 and policy.timesteps(5)[-1] == 0
    for sampler in ("ddpm", "ddim"):
        chain = policy.denoise_chain(cond, steps=5, sampler=sampler, eta=1.0, min_std=0.1)
        assert chain.xs.shape == (2, 6, policy.chunk_dim)
        assert torch.all(chain.stds >= 0.1)
        recomputed = policy.chain_log_prob(cond, chain.xs, steps=5, sampler=sampler, eta=1.0, min_std=0.1)
        torch.testing.assert_close(recomputed, chain.log_probs, rtol=1e-4, atol=1e-3)
        manual = gaussian_log_prob(chain.xs[:, 1:], chain.means, chain.stds)
        torch.testing.assert_close(manual, chain.log_probs)
    deterministic = policy.denoise_chain(cond, steps=5, sampler="ddim", eta=0.0)
    assert deterministic.log_probs is None  # eta=0, no floor: no density, and the chain says so
    with pytest.raises(ValueError, match="no density"):
        deterministic.total_log_prob()


def test_in_memory_matches_store(push_store):
    store = EpisodeStore.open(push_store)
    mem = InMemoryEpisodes.from_stores([store], ["action", "obs/images/front"])
    idx = np.array([0, 5, store.num_steps - 1])
    np.testing.assert_array_equal(mem.get_steps(idx)["action"], store.get_steps(idx, ["action"])["action"])
    assert mem.instructions[0] == store.episode_meta(0).instruction


def test_hf_vision_tower_encoder_trains(demo_data):
    torch.manual_seed(0)
    siglip = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32, "patch_size": 8}
    policy = tiny_policy("flow", image_encoder="hf", hf_vision_config=siglip)
    assert type(policy.obs_encoder.cameras["front"]).__name__ == "HFVisionEncoder"
    policy.fit_normalizers(demo_data.all_steps("obs/state"), demo_data.all_steps("action"))
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    batch = _batch(demo_data, policy, 16)
    losses = []
    for _ in range(30):
        loss, metrics = policy.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(metrics["loss"])
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_vla_from_a_local_pretrained_directory(demo_data, tmp_path):
    from robot_rl.nn.hf_backbone import build_tiny

    model, processor = build_tiny("smolvlm", 64, seed=5)
    model.save_pretrained(tmp_path / "vlm")
    processor.save_pretrained(tmp_path / "vlm")
    policy = tiny_policy("vla", backbone_path=str(tmp_path / "vlm"))
    loaded = dict(policy.obs_encoder.backbone.model.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(loaded[name], p)  # the pretrained weights, not a fresh init
    assert policy.act(_batch(demo_data, policy, 1)).shape == (1, 4, 7)
    with pytest.raises(ConfigError, match="nothing is downloaded"):
        tiny_policy("vla", backbone_path=str(tmp_path / "missing"))
