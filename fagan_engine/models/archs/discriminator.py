"""SRGAN-style discriminator with spectral normalisation, for any patch size."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from fagan_engine.util.config import ModelConfig


class Discriminator(nn.Module):
    """Eight 3×3 convs (stride 1/2 alternating, channels doubling every second layer), LeakyReLU 0.2,
    adaptive pooling to 4×4 so any patch size ≥ 16 works, then dense 1024 → 1 logit.

    Spectral normalisation wraps every conv and linear layer when ``spectral``; the paper uses
    it instead of SRGAN's batch norm, so there is no batch norm in either case.
    """

    def __init__(self, base_channels: int = 32, spectral: bool = True) -> None:
        super().__init__()
        wrap = spectral_norm if spectral else (lambda module: module)
        layers = []
        in_ch = 1
        for index in range(8):
            out_ch = base_channels * 2 ** (index // 2)
            stride = 2 if index % 2 == 1 else 1
            layers += [wrap(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
            in_ch = out_ch
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            wrap(nn.Linear(in_ch * 16, 1024)),
            nn.LeakyReLU(0.2, inplace=True),
            wrap(nn.Linear(1024, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return one raw logit per image, shape (B, 1); D(x) = sigmoid(logit)."""
        return self.classifier(self.features(x))


def build_discriminator(cfg: ModelConfig) -> Discriminator:
    return Discriminator(cfg.d_feats, cfg.d_spectral_norm)
