"""Feature-extraction blocks: the paper's LFFB and the SRGAN residual block used by the baselines."""
from __future__ import annotations

import torch
from torch import nn


def conv(in_ch: int, out_ch: int, kernel: int) -> nn.Conv2d:
    """Same-size convolution with bias."""
    return nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2)


class ScalePath(nn.Sequential):
    """The paper's s-scale feature extractor: three s×s convs with one intermediate ReLU."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__(
            conv(channels, channels, kernel),
            nn.ReLU(inplace=True),
            conv(channels, channels, kernel),
            conv(channels, channels, kernel),
        )


class LFFB(nn.Module):
    """Local Fusion Feature Block (eq. 4-7), read as a cascade of concat + 1×1 fusions.

    F1 = W1[C3(x)], F2 = W2[C5(x), F1], F3 = W3[C7(x), F2], out = F3 + x,
    where [·] is concatenation followed by a 1×1 conv. Each path sees the block input; the
    coarser paths receive the finer paths' fused features (see docs/decisions.md).
    """

    kernels = (3, 5, 7)

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.paths = nn.ModuleList(ScalePath(channels, k) for k in self.kernels)
        self.fuse = nn.ModuleList(
            [nn.Conv2d(channels, channels, 1)] + [nn.Conv2d(2 * channels, channels, 1) for _ in self.kernels[1:]]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.fuse[0](self.paths[0](x))
        for path, fuse in zip(self.paths[1:], self.fuse[1:]):
            fused = fuse(torch.cat((path(x), fused), dim=1))
        return fused + x


class ResidualBlock(nn.Module):
    """SRGAN residual block without batch norm (conv-ReLU-conv + skip); replaces LFFB in ablations."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(channels, channels, 3), nn.ReLU(inplace=True), conv(channels, channels, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
