"""Typed configs of every policy type; each field documents itself."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PolicyFeatures:
    """What the policy sees and outputs; filled from the episode store's schema at pre-training."""

    cameras: list[str] = field(default_factory=lambda: ["front", "wrist"])
    """Camera names, read from ``obs/images/<camera>``."""
    image_size: int = 84
    """Height and width of every camera image."""
    state_dim: int = 22
    """Length of the proprio vector ``obs/state``."""
    action_dim: int = 7
    """Length of one action."""


@dataclass
class PolicyConfig:
    """Fields every policy shares."""

    features: PolicyFeatures = field(default_factory=PolicyFeatures)
    horizon: int = 8
    """Actions predicted per chunk (H)."""
    n_action_steps: int = 4
    """Actions of each chunk executed before the policy is queried again (K <= H)."""
    n_obs_steps: int = 1
    """Observations (current and past) the policy reads."""
    use_language: bool = True
    """Condition on the instruction (a hashed word embedding for non-VLM policies)."""
    image_encoder: str = "conv"
    """``conv`` (small CNN with spatial-softmax keypoints) or ``hf`` (a Hugging Face vision tower)."""
    hf_vision_path: str | None = None
    """Local directory of a pretrained HF vision tower (image_encoder=hf); nothing is downloaded."""
    hf_vision_config: dict | None = None
    """Config of a randomly initialised HF vision tower, e.g. {"model_type": "siglip_vision_model", ...}."""
    image_feature_dim: int = 64
    """Features per camera image."""
    hidden_dim: int = 512
    """Width of the denoising network."""
    n_blocks: int = 3
    """Residual FiLM blocks of the denoising network."""
    augment_shift: int = 4
    """Random-shift augmentation of images during training, in pixels (0 disables)."""

    def validate(self) -> None:
        if not 1 <= self.n_action_steps <= self.horizon:
            raise ValueError(f"n_action_steps must be in [1, horizon={self.horizon}], got {self.n_action_steps}")
        if self.n_obs_steps < 1:
            raise ValueError(f"n_obs_steps must be >= 1, got {self.n_obs_steps}")


@dataclass
class FlowConfig(PolicyConfig):
    """Rectified flow over action chunks; ``shortcut`` adds step-size conditioning for 1-4 step sampling."""

    num_inference_steps: int = 10
    """Euler integration steps when acting."""
    shortcut: bool = False
    """Train a shortcut model (Frans et al. 2024): self-consistency across step sizes."""
    shortcut_max_steps: int = 128
    """Finest step size of the shortcut model is 1 / shortcut_max_steps (a power of two)."""
    shortcut_fraction: float = 0.25
    """Fraction of each batch used for the self-consistency target."""


@dataclass
class ShortcutConfig(FlowConfig):
    """A flow policy trained as a shortcut model, sampled in a few steps."""

    shortcut: bool = True
    num_inference_steps: int = 4


@dataclass
class DiffusionConfig(PolicyConfig):
    """DDPM over action chunks (epsilon prediction, cosine schedule)."""

    num_train_timesteps: int = 100
    """Diffusion steps of the forward process."""
    num_inference_steps: int = 20
    """Denoising steps when acting (fewer than num_train_timesteps respaces the chain)."""
    sampler: str = "ddpm"
    """``ddpm`` or ``ddim``."""
    ddim_eta: float = 0.0
    """DDIM stochasticity (0: deterministic)."""
    clip_sample: bool = True
    """Clip the predicted clean chunk to [-1, 1] at every step."""


@dataclass
class VLAConfig(FlowConfig):
    """A vision-language backbone whose hidden states condition a flow-matching action expert."""

    backbone_path: str | None = None
    """Local directory of a pretrained VLM (and its processor); nothing is downloaded."""
    tiny_backbone: str | None = "smolvlm"
    """Family of a tiny random VLM built from config when backbone_path is None: smolvlm or paligemma."""
    backbone_preset: str = "tiny"
    """Size of the random backbone: ``tiny`` (tests, CPU) or ``base`` (~0.45B, for GPU timing)."""
    backbone_image_size: int = 64
    """Image size the tiny backbone's processor resizes to."""
    freeze_backbone: bool = True
    """Keep the backbone's weights fixed (its hidden states still condition the expert)."""
    lora_rank: int = 0
    """Train LoRA adapters of this rank on the backbone's attention projections (0: none)."""
    lora_targets: list[str] | None = None
    """Module names that get LoRA adapters (None: the language model's q/v projections of known families)."""
    pool_queries: int = 4
    """Learned queries that attention-pool the backbone's tokens into the expert's condition."""
    use_language: bool = True
    image_encoder: str = "backbone"
