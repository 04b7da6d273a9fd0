"""Configuration of the progress critic."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CriticConfig:
    """A VLAC-style progress critic on a vision-language backbone."""

    cameras: list[str] = field(default_factory=lambda: ["front", "wrist"])
    """Cameras of each observation the critic sees."""
    image_size: int = 84
    """Size of the camera images in the store (the processor resizes them for the backbone)."""
    backbone_path: str | None = None
    """Local directory of a pretrained VLM; nothing is downloaded."""
    tiny_backbone: str | None = "smolvlm"
    """Family of the random backbone built in code when backbone_path is None (smolvlm or paligemma)."""
    backbone_preset: str = "small"
    """Size of the random backbone: tiny, small or base."""
    backbone_image_size: int = 64
    """Image size the backbone's processor resizes to."""
    freeze_backbone: bool = False
    """Freeze the backbone (a random one must be trained)."""
    lora_rank: int = 0
    """LoRA adapters of this rank on the language model (0: none)."""
    lora_targets: list[str] | None = None
    pool_queries: int = 4
    """Learned queries that attention-pool the backbone's tokens."""
    head_dim: int = 128
    """Width of the value and done heads."""
    reference_frames: int = 0
    """In-context reference: frames of one successful episode shown before each observation (0: none)."""
    done_threshold: float = 0.85
    """Done probability above which an observation counts as done. High on purpose: a false done ends a
    failed episode as a success (and teaches that), a missed one only delays the end; a near miss (the
    cube a centimetre short, then dropped) looks like a success in a small image. On the quickstart's (lift)
    cloned-policy rollouts, 0.5 fired on 5 of 57 failures, 0.85 on 1 (README: the progress critic)."""
