"""Vision-language backbones from transformers: loaded from a local directory, or tiny random ones built
entirely in code (tokenizer, image processor and model) so that tests and CPU demos need no download.

Families: ``smolvlm`` (SmolVLM / Idefics3 processor) and ``paligemma`` (SigLIP + Gemma). The instruction
and camera images go through the backbone's own processor; ``VisionLanguageBackbone`` returns the
language model's last hidden states over the image+text prefix, with its attention mask.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

FAMILIES = ("smolvlm", "paligemma")
_FAMILY_OF_MODEL_TYPE = {"smolvlm": "smolvlm", "idefics3": "smolvlm", "paligemma": "paligemma"}
# LoRA on the language model only: the vision towers use the same projection names.
LORA_TARGETS = {
    "smolvlm": r".*text_model\.layers\.\d+\.self_attn\.(q_proj|v_proj)",
    "paligemma": r".*language_model\.layers\.\d+\.self_attn\.(q_proj|v_proj)",
}
_SPECIAL_TOKENS = {
    "smolvlm": ["<pad>", "<bos>", "<eos>", "<|im_start|>", "<image>", "<fake_token_around_image>",
                "<global-img>", "<end_of_utterance>"]
    + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)],
    "paligemma": ["<pad>", "<bos>", "<eos>", "<image>"],
}
# Model sizes of the random backbones. "base" is about 0.45B parameters (SmolVLM-500M-like), for GPU timing.
PRESETS = {
    "tiny": {"v_hidden": 32, "v_inter": 64, "v_layers": 1, "v_heads": 2,
             "t_hidden": 64, "t_inter": 128, "t_layers": 2, "t_heads": 4, "t_kv": 2, "vocab": 768},
    "small": {"v_hidden": 64, "v_inter": 128, "v_layers": 2, "v_heads": 4,
              "t_hidden": 128, "t_inter": 256, "t_layers": 2, "t_heads": 4, "t_kv": 2, "vocab": 768},
    "base": {"v_hidden": 768, "v_inter": 3072, "v_layers": 12, "v_heads": 12,
             "t_hidden": 960, "t_inter": 2560, "t_layers": 32, "t_heads": 15, "t_kv": 5, "vocab": 4096},
}
_WORDS = """a the this that it is are on in into onto under over above below behind front back left right top
bottom middle side corner edge up down inside outside between near next to from with pick place put move push
pull lift lower grasp grab release drop open close turn rotate slide stack insert remove take hold press reach
cube block ball cup mug bowl plate bottle box drawer door lid handle button target goal region gripper table
red green blue yellow black white small big then and or please slowly carefully""".split()


def _corpus() -> list[str]:
    verbs = "pick place push lift stack reach open close move grasp".split()
    colours = "red green blue yellow".split()
    objects = "cube block bowl cup box target".split()
    places = ["on the table", "into the goal region", "on top of the green cube", "to the left", "up"]
    sentences = [f"{v} the {c} {o} {p}" for v, c, o, p in
                 itertools.islice(itertools.product(verbs, colours, objects, places), 0, None, 5)]
    return _WORDS + sentences


def build_tokenizer(family: str, vocab_size: int = 768):
    """A byte-level BPE tokenizer (any text encodes) with the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = _SPECIAL_TOKENS[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        extra_special_tokens=[t for t in specials if t not in ("<pad>", "<bos>", "<eos>")],
        padding_side="right",  # position ids are arange(T): real tokens first
        model_max_length=512,
    )


def _tiny_smolvlm(image_size: int, preset: str = "tiny"):
    from transformers import (
        Idefics3ImageProcessorPil,
        Idefics3Processor,
        LlamaConfig,
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMVisionConfig,
    )

    patch, scale = 8, 2
    if image_size % (patch * scale):
        raise ValueError(f"smolvlm backbone image size must be a multiple of {patch * scale}, got {image_size}")
    # SmolVLMProcessor needs torchvision and num2words; Idefics3Processor builds the same single-tile prompt.
    image_processor = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": image_size},
                                                max_image_size={"longest_edge": image_size}, resample=2)
    d = PRESETS[preset]
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=build_tokenizer("smolvlm", d["vocab"]),
                                  image_seq_len=(image_size // patch) ** 2 // scale**2)
    tok = processor.tokenizer
    config = SmolVLMConfig(
        vision_config=SmolVLMVisionConfig(hidden_size=d["v_hidden"], intermediate_size=d["v_inter"],
                                          num_hidden_layers=d["v_layers"], num_attention_heads=d["v_heads"],
                                          image_size=image_size, patch_size=patch).to_dict(),
        text_config=LlamaConfig(vocab_size=len(tok), hidden_size=d["t_hidden"], intermediate_size=d["t_inter"],
                                num_hidden_layers=d["t_layers"], num_attention_heads=d["t_heads"],
                                num_key_value_heads=d["t_kv"], max_position_embeddings=2048,
                                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                eos_token_id=tok.eos_token_id, tie_word_embeddings=False).to_dict(),
        scale_factor=scale, image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    return SmolVLMForConditionalGeneration(config), processor


def _tiny_paligemma(image_size: int, preset: str = "tiny"):
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessorPil,
        SiglipVisionConfig,
    )

    patch = 16
    if image_size % patch:
        raise ValueError(f"paligemma backbone image size must be a multiple of {patch}, got {image_size}")
    image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size}, resample=2)
    image_processor.image_seq_length = (image_size // patch) ** 2  # PaliGemmaProcessor reads this attribute
    d = PRESETS[preset]
    processor = PaliGemmaProcessor(image_processor=image_processor,
                                   tokenizer=build_tokenizer("paligemma", d["vocab"]))
    tok = processor.tokenizer  # the processor added its <loc>/<seg> tokens: size the vocabulary after it
    config = PaliGemmaConfig(
        vision_config=SiglipVisionConfig(hidden_size=d["v_hidden"], intermediate_size=d["v_inter"],
                                         num_hidden_layers=d["v_layers"], num_attention_heads=d["v_heads"],
                                         image_size=image_size, patch_size=patch, vision_use_head=False).to_dict(),
        text_config=GemmaConfig(vocab_size=len(tok), hidden_size=d["t_hidden"], intermediate_size=d["t_inter"],
                                num_hidden_layers=d["t_layers"], num_attention_heads=d["t_heads"],
                                num_key_value_heads=1, head_dim=d["t_hidden"] // d["t_heads"],
                                max_position_embeddings=2048, pad_token_id=tok.pad_token_id,
                                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id).to_dict(),
        image_token_index=tok.convert_tokens_to_ids("<image>"), vocab_size=len(tok),
        projection_dim=d["t_hidden"], hidden_size=d["t_hidden"],
    )
    return PaliGemmaForConditionalGeneration(config), processor


_TINY = {"smolvlm": _tiny_smolvlm, "paligemma": _tiny_paligemma}


def build_tiny(family: str, image_size: int = 64, seed: int = 0, preset: str = "tiny"):
    """(model, processor) of a random backbone of ``family`` at a size preset, built offline."""
    if family not in _TINY:
        raise ValueError(f"unknown backbone family {family!r}; tiny backbones: {FAMILIES}")
    if preset not in PRESETS:
        raise ValueError(f"unknown backbone preset {preset!r}; presets: {list(PRESETS)}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _TINY[family](image_size, preset)


def load_local(path: str | Path, weights: bool = True):
    """(model, processor) from a local directory; with ``weights=False`` only the architecture."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} holds no backbone (config.json missing); nothing is downloaded")
    processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
    if weights:
        model = AutoModelForImageTextToText.from_pretrained(str(path), local_files_only=True)
    else:
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(str(path), local_files_only=True))
    return model, processor


class VisionLanguageBackbone(nn.Module):
    """Camera images + instruction -> (hidden states (B, T, D), mask (B, T)) through the VLM's processor."""

    def __init__(self, model, processor) -> None:
        super().__init__()
        self.model = model
        self.processor = processor
        self.family = _FAMILY_OF_MODEL_TYPE.get(model.config.model_type)
        text_cfg = getattr(model.config, "text_config", model.config)
        self.hidden_size = int(text_cfg.hidden_size)

    def add_lora(self, rank: int, targets: list[str] | None = None) -> None:
        from peft import LoraConfig, get_peft_model

        target = targets or LORA_TARGETS.get(self.family)
        if target is None:
            raise ValueError(f"name lora_targets for a {self.model.config.model_type!r} backbone")
        self.model = get_peft_model(self.model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=target))

    def save_architecture(self, directory: Path) -> None:
        """Config and processor files (no weights: they travel in the policy's safetensors)."""
        directory.mkdir(parents=True, exist_ok=True)
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        base.config.save_pretrained(str(directory))
        self.processor.save_pretrained(str(directory))
        (directory / "robot_rl_backbone.json").write_text(json.dumps({"family": self.family}))

    def forward(self, images: list[list[np.ndarray]], instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = [self.processor.image_token * len(cams) + text for cams, text in zip(images, instructions)]
        batch = self.processor(images=[list(c) for c in images], text=prompts, padding="longest", return_tensors="pt")
        batch.pop("labels", None)
        model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        base = model.base_model
        device = next(base.parameters()).device
        inputs = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(base.dtype)
        out = base(**inputs, use_cache=False, return_dict=True)
        return out.last_hidden_state.float(), inputs["attention_mask"]


def make_backbone(path: str | Path | None, tiny: str | None, preset: str = "tiny", image_size: int = 64,
                  freeze: bool = True, lora_rank: int = 0, lora_targets: list[str] | None = None,
                  weights: bool = True) -> VisionLanguageBackbone:
    """A backbone from a local directory (``path``) or a random one of family ``tiny``; frozen or not,
    with LoRA adapters when ``lora_rank`` > 0. Raises ConfigError for a missing directory."""
    from robot_rl.core.errors import ConfigError

    if path:
        try:
            model, processor = load_local(path, weights=weights)
        except FileNotFoundError as exc:
            raise ConfigError(str(exc)) from None
    elif tiny:
        model, processor = build_tiny(tiny, image_size, preset=preset)
    else:
        raise ConfigError("a backbone needs a local pretrained directory (backbone_path) or a tiny family")
    backbone = VisionLanguageBackbone(model, processor)
    if freeze:
        backbone.requires_grad_(False)
    if lora_rank > 0:
        backbone.add_lora(lora_rank, lora_targets)
    return backbone
