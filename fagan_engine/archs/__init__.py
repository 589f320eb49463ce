"""FA-GAN network architectures: generator, discriminator and the blocks they are built from."""
from __future__ import annotations

from ..presets import preset_config
from .attention import (
    GFFB,
    ChannelAttention,
    SelfAttention,
    direct_fusion,
    weighted_fusion,
)
from .blocks import LFFB, ResidualBlock
from .discriminator import Discriminator, build_discriminator
from .generator import Generator, build_generator

__all__ = [
    "GFFB",
    "LFFB",
    "ChannelAttention",
    "Discriminator",
    "Generator",
    "ResidualBlock",
    "SelfAttention",
    "build_discriminator",
    "build_generator",
    "direct_fusion",
    "preset_config",
    "weighted_fusion",
]
