"""Pure-torch building blocks: image/state/instruction encoders, MLPs, time embeddings, normalisation."""

from robot_rl.nn.augment import random_shift
from robot_rl.nn.encoders import ConvImageEncoder, HFVisionEncoder, build_image_encoder
from robot_rl.nn.ensemble import BoundedResidual, EnsembleLinear, QEnsemble, TanhGaussianHead, layernorm_mlp
from robot_rl.nn.language import HashedInstructionEncoder
from robot_rl.nn.layers import MLP, AttentionPool, ChunkDenoiser, SinusoidalEmbedding
from robot_rl.nn.normalize import Normalizer

__all__ = [
    "MLP",
    "AttentionPool",
    "BoundedResidual",
    "ChunkDenoiser",
    "ConvImageEncoder",
    "EnsembleLinear",
    "HFVisionEncoder",
    "HashedInstructionEncoder",
    "Normalizer",
    "QEnsemble",
    "SinusoidalEmbedding",
    "TanhGaussianHead",
    "build_image_encoder",
    "layernorm_mlp",
    "random_shift",
]
