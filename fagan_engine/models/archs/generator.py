"""The FA-GAN generator and its ablations, selected by ModelConfig switches."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fagan_engine.models.archs.attention import GFFB
from fagan_engine.models.archs.blocks import LFFB, ResidualBlock, conv
from fagan_engine.util.config import ModelConfig


class UpsampleStage(nn.Sequential):
    """conv(C→4C) + PixelShuffle(2) + PReLU: one ×2 stage."""

    def __init__(self, channels: int) -> None:
        super().__init__(conv(channels, 4 * channels, 3), nn.PixelShuffle(2), nn.PReLU(channels))


class Generator(nn.Module):
    """head → LFFB stack (+ global residual) → [GFFB at LR] → ×2 stages → [GFFB at HR] → tail.

    Input and output are (B, 1, H, W) intensities normalised to about [0, 1]. With
    ``image_residual`` the network predicts the residual over a bicubic upsampling of its input.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.scale = cfg.scale
        self.image_residual = cfg.image_residual
        c = cfg.n_feats
        block = LFFB if cfg.use_lffb else ResidualBlock
        self.head = conv(1, c, 3)
        self.body = nn.Sequential(*[block(c) for _ in range(cfg.n_blocks)], conv(c, c, 3))
        gffb = (
            GFFB(
                c,
                use_ca=cfg.use_ca,
                use_sa=cfg.use_sa,
                fusion=cfg.fusion,
                alpha=cfg.fusion_alpha,
                beta=cfg.fusion_beta,
                eps=cfg.fusion_eps,
                reduction=cfg.ca_reduction,
                pool=cfg.attention_pool,
            )
            if (cfg.use_ca or cfg.use_sa)
            else None
        )
        self.gffb_lr = gffb if cfg.attention_placement == "lr" else None
        self.upsample = nn.Sequential(*[UpsampleStage(c) for _ in range(int(math.log2(cfg.scale)))])
        self.gffb_hr = gffb if cfg.attention_placement == "hr" else None
        self.tail = conv(c, 1, 3)
        if self.image_residual:  # start exactly at the bicubic baseline
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(x)
        features = features + self.body(features)
        if self.gffb_lr is not None:
            features = self.gffb_lr(features)
        features = self.upsample(features)
        if self.gffb_hr is not None:
            features = self.gffb_hr(features)
        out = self.tail(features)
        if self.image_residual:
            out = out + F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out


def build_generator(cfg: ModelConfig) -> Generator:
    """Build a generator for ``cfg`` (a preset's config or one read from a checkpoint)."""
    return Generator(cfg)
