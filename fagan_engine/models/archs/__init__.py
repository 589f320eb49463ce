"""FA-GAN network architectures: generator, discriminator and the blocks they are built from."""
from __future__ import annotations

from fagan_engine.models.archs.attention import (
    GFFB,
    ChannelAttention,
    SelfAttention,
    direct_fusion,
    weighted_fusion,
)
from fagan_engine.models.archs.blocks import LFFB, ResidualBlock
from fagan_engine.models.archs.discriminator import Discriminator, build_discriminator
from fagan_engine.models.archs.generator import Generator, build_generator
from fagan_engine.util.presets import preset_config

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
