"""The FA-GAN generator for through-plane SR: one anisotropic, arbitrary-ratio upsampling axis.

Input slices are (B, 1, n_in, W): rows run across the thick slices (the through-plane axis), columns
along a fine in-plane axis. The output is (B, 1, n_out, W) on the grid of
``through_plane.plan.output_positions`` (any ratio n_out/n_in, integer or not).

Two upsamplers (``ThroughPlaneModelConfig.upsampler``), compared in docs/decisions.md:

``axis`` (default)
    head → LFFB stack (+ global residual) → GFFB (channel attention + pooled self-attention,
    weighted fusion) at the input resolution → features linearly resized along the rows to n_out
    → concatenated with two position channels (the sub-slice phase of each output row, in input
    slices, and n_in/n_out) → conv + PReLU → tail conv.
``preinterp``
    The same FA-GAN stack run on the cubic-B-spline pre-interpolated image (n_out rows; no
    PixelShuffle, no resize): every block works at the output resolution.

Both predict a residual over the cubic B-spline interpolation ``base`` of the input along the rows
(the caller passes it; zero-initialised tail, so an untrained network returns the B-spline image).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict

import torch
import torch.nn.functional as F
from torch import nn

from fagan_engine.models.archs.attention import GFFB
from fagan_engine.models.archs.blocks import LFFB, conv
from fagan_engine.util.config import AttentionConfig, check_choice, check_interval
from fagan_engine.util.errors import ConfigError

UPSAMPLERS = ("axis", "preinterp")
SIZE_LIMITS = {"n_feats": (8, 256), "n_blocks": (1, 32), "ca_reduction": (1, 256)}
"""The through-plane generator's size fields and their ranges."""


@dataclass
class ThroughPlaneModelConfig(AttentionConfig):
    """Architecture of the through-plane generator (plain JSON types; stored with the weights)."""

    ca_reduction: int = 4
    n_feats: int = 16
    n_blocks: int = 3
    upsampler: str = "axis"

    def validate(self) -> "ThroughPlaneModelConfig":
        """ConfigError naming the ``model.`` key of an impossible value."""
        check_choice("model.upsampler", self.upsampler, UPSAMPLERS)
        for name, (low, high) in SIZE_LIMITS.items():
            check_interval(f"model.{name}", getattr(self, name), low, high)
        self.check_fusion()
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ThroughPlaneModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) - known:
            raise ConfigError(f"unknown through-plane model keys: {sorted(set(data) - known) if isinstance(data, dict) else data!r}")
        return cls(**data).validate()


def position_channels(n_in: int, n_out: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(1, 2, n_out, width): each output row's phase relative to the nearest input row (−0.5…0.5), and n_in/n_out."""
    positions = (torch.arange(n_out, dtype=torch.float32, device=like.device) + 0.5) * (n_in / n_out) - 0.5
    phase = positions - torch.round(positions)
    rate = torch.full_like(phase, n_in / n_out)
    return torch.stack((phase, rate))[None, :, :, None].expand(1, 2, n_out, width).to(like.dtype)


class ThroughPlaneGenerator(nn.Module):
    """FA-GAN (LFFB + GFFB) generator for one anisotropic upsampling axis (see module docstring)."""

    def __init__(self, cfg: ThroughPlaneModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        c = cfg.n_feats
        self.head = conv(1, c, 3)
        self.body = nn.Sequential(*[LFFB(c) for _ in range(cfg.n_blocks)], conv(c, c, 3))
        self.gffb = (
            GFFB(
                c, use_ca=cfg.use_ca, use_sa=cfg.use_sa, fusion=cfg.fusion, alpha=cfg.fusion_alpha,
                beta=cfg.fusion_beta, eps=cfg.fusion_eps, reduction=cfg.ca_reduction, pool=cfg.attention_pool,
            )
            if (cfg.use_ca or cfg.use_sa)
            else None
        )
        if cfg.upsampler == "axis":
            self.refine = nn.Sequential(conv(c + 2, c, 3), nn.PReLU(c))
        else:
            self.refine = None
        self.tail = conv(c, 1, 3)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """``x``: (B, 1, n_in, W) input slices; ``base``: (B, 1, n_out, W) their B-spline interpolation."""
        n_in, width = x.shape[2], x.shape[3]
        n_out = base.shape[2]
        source = x if self.refine is not None else base
        features = self.head(source)
        features = features + self.body(features)
        if self.gffb is not None:
            features = self.gffb(features)
        if self.refine is not None:
            features = F.interpolate(features, size=(n_out, width), mode="bilinear", align_corners=False)
            positions = position_channels(n_in, n_out, width, features).expand(features.shape[0], -1, -1, -1)
            features = self.refine(torch.cat((features, positions), dim=1))
        return base + self.tail(features)
