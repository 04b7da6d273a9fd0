"""Pure-torch building blocks: image/state/instruction encoders, MLPs, time embeddings, normalisation."""

from robot_rl.nn.augment import random_shift
from robot_rl.nn.encoders import ConvImageEncoder, HFVisionEncoder, build_image_encoder
from robot_rl.nn.language import HashedInstructionEncoder
from robot_rl.nn.layers import MLP, AttentionPool, ChunkDenoiser, SinusoidalEmbedding
from robot_rl.nn.normalize import Normalizer

__all__ = [
    "MLP",
    "AttentionPool",
    "ChunkDenoiser",
    "ConvImageEncoder",
    "HFVisionEncoder",
    "HashedInstructionEncoder",
    "Normalizer",
    "SinusoidalEmbedding",
    "build_image_encoder",
    "random_shift",
]
