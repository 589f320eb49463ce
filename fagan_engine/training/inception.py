"""Inception-v3 pool3 features for FID, with torchvision's ``inception_v3`` layer names.

A torchvision ``inception_v3`` state dict (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b...``)
loads directly; ``AuxLogits`` and ``fc`` are not needed and ignored. Features are the 2048-d
global average pool before the classifier. Input: grey slices in [0, 1], replicated to RGB,
resized to 299×299 (bilinear) and mapped to [−1, 1], which is what torchvision's
``transform_input=True`` turns ImageNet-normalised input into for these weights.

These features differ from the TensorFlow Inception graph used by pytorch-fid and the paper,
so FID values are comparable between methods of one evaluation, not with published numbers.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn

from fagan_engine.training.losses import load_frozen
from fagan_engine.util.errors import InputError

Size = Union[int, Tuple[int, int]]


class BasicConv2d(nn.Module):
    """conv (no bias) + batch norm (eps 1e-3) + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: Size, stride: int = 1, padding: Size = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _chain(x: torch.Tensor, layers: Sequence[nn.Module]) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


def _pool_branch(x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    return conv(F.avg_pool2d(x, 3, stride=1, padding=1))


class InceptionA(nn.Module):
    def __init__(self, in_ch: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_ch, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_ch, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_ch, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_ch, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                _chain(x, [self.branch5x5_1, self.branch5x5_2]),
                _chain(x, [self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3]),
                _pool_branch(x, self.branch_pool),
            ],
            1,
        )


class InceptionB(nn.Module):
    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_ch, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_ch, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dbl = _chain(x, [self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3])
        return torch.cat([self.branch3x3(x), dbl, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, in_ch: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_ch, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_ch, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_ch, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dbl = [self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5]
        return torch.cat(
            [
                self.branch1x1(x),
                _chain(x, [self.branch7x7_1, self.branch7x7_2, self.branch7x7_3]),
                _chain(x, dbl),
                _pool_branch(x, self.branch_pool),
            ],
            1,
        )


class InceptionD(nn.Module):
    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_ch, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_ch, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = [self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4]
        return torch.cat(
            [_chain(x, [self.branch3x3_1, self.branch3x3_2]), _chain(x, seven), F.max_pool2d(x, 3, stride=2)], 1
        )


class InceptionE(nn.Module):
    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_ch, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_ch, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_ch, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        three = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(three),
                self.branch3x3_2b(three),
                self.branch3x3dbl_3a(dbl),
                self.branch3x3dbl_3b(dbl),
                _pool_branch(x, self.branch_pool),
            ],
            1,
        )


class InceptionV3Features(nn.Module):
    """torchvision Inception-v3 up to the 2048-d average pool (pool3)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)

    def forward(self, grey: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] → (B, 2048)."""
        x = F.interpolate(grey, size=(299, 299), mode="bilinear", align_corners=False)
        x = x.expand(-1, 3, -1, -1) * 2.0 - 1.0
        x = _chain(x, [self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3])
        x = _chain(F.max_pool2d(x, 3, stride=2), [self.Conv2d_3b_1x1, self.Conv2d_4a_3x3])
        x = F.max_pool2d(x, 3, stride=2)
        blocks = [self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c]
        blocks += [self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c]
        return F.adaptive_avg_pool2d(_chain(x, blocks), 1).flatten(1)


def load_inception(path: str) -> InceptionV3Features:
    """Inception-v3 features with weights from a torchvision-format file (eval mode, frozen)."""
    return load_frozen(InceptionV3Features(), path, "inception_v3")


@torch.no_grad()
def features(model: InceptionV3Features, slices: List[np.ndarray], batch_size: int = 16) -> np.ndarray:
    """Pool3 features (N, 2048) of 2D slices in [0, 1]."""
    out = []
    for start in range(0, len(slices), batch_size):
        batch = torch.from_numpy(np.stack(slices[start : start + batch_size]).astype(np.float32))[:, None]
        out.append(model(batch).double().numpy())
    return np.concatenate(out)


def frechet_distance(first: np.ndarray, second: np.ndarray) -> float:
    """FID between feature sets (N, d): |μ1 − μ2|² + Tr Σ1 + Tr Σ2 − 2 Tr (Σ1 Σ2)^½.

    With fewer samples than dimensions, Tr (Σ1 Σ2)^½ is computed exactly as the nuclear norm of
    X1 X2ᵀ / √((n1 − 1)(n2 − 1)) (centred features; same non-zero spectrum, no singular sqrtm).
    """
    if min(len(first), len(second)) < 2:  # a covariance of one sample divides by zero: FID read nan with exit 0
        raise InputError(f"FID needs at least 2 foreground slices; the test data has {min(len(first), len(second))}: add "
                         "slices or volumes, or leave out --inception-weights")
    a, b = first - first.mean(0), second - second.mean(0)
    n1, n2 = len(a) - 1, len(b) - 1
    if min(len(a), len(b)) < a.shape[1]:
        cross = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt(n1 * n2)
    else:
        cross = np.trace(np.real(linalg.sqrtm((a.T @ a / n1) @ (b.T @ b / n2))))
    shift = np.sum((first.mean(0) - second.mean(0)) ** 2)
    return float(shift + np.sum(a * a) / n1 + np.sum(b * b) / n2 - 2.0 * cross)
