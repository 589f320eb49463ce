"""The Global Feature Fusion Block: channel attention, SAGAN self-attention and their fusion."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

# The math backend materialises the N×N attention matrix; it is never allowed.
_MEMORY_EFFICIENT_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]

ATTENTION_WINDOW = 64
"""Largest side (feature positions) over which self-attention is global. A larger feature map is cut
into the fewest near-equal windows of at most this side, each attending within itself, so the cost
grows linearly with the slice instead of quadratically (a 256² LR slice at ×2: 45 % of the network's
time went to global attention). Chosen on the real-scan development protocol (docs/decisions.md):
windows of 32 or 64 changed the projected ×2 output by at most ±0.01 dB against global attention.
The ONNX export attends globally (its dynamic height and width admit no window arithmetic), so the
ONNX Runtime backend differs from torch on feature maps above this side (docs/decisions.md)."""


def window_grid(height: int, width: int, window: int = ATTENTION_WINDOW) -> "tuple[int, int, int, int]":
    """(rows of windows, cols of windows, window height, window width) covering height × width."""
    rows, cols = (height + window - 1) // window, (width + window - 1) // window
    return rows, cols, (height + rows - 1) // rows, (width + cols - 1) // cols


class ChannelAttention(nn.Module):
    """GAP → FC(C→C/r) → ReLU → FC(C/r→C) → sigmoid → rescale the input channels."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(x.mean(dim=(2, 3)))
        return x * weights[:, :, None, None]


class SelfAttention(nn.Module):
    """SAGAN self-attention (eq. 8-11) through scaled_dot_product_attention, never building N×N.

    Query position j attends to key positions i with softmax_i(f(x_i)ᵀ g(x_j)) (unscaled, as in
    SAGAN, hence ``scale=1.0``); o = v(Σ β h(x)); y = γ·o + x with γ initialised to 0.
    f and g project to C/8 channels and are zero-padded to C before SDPA: padding leaves every
    dot product unchanged, and equal head sizes keep SDPA on its flash/memory-efficient kernels
    (with unequal sizes PyTorch silently falls back to the N×N math kernel).
    With ``pool`` keys and values are 2×2 max-pooled, as in SAGAN/BigGAN, cutting cost by 4.
    """

    def __init__(self, channels: int, pool: bool = False) -> None:
        super().__init__()
        self.key_channels = max(1, channels // 8)
        self.f = nn.Conv2d(channels, self.key_channels, 1)
        self.g = nn.Conv2d(channels, self.key_channels, 1)
        self.h = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.pool = pool

    def project(self, x: torch.Tensor) -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor]":
        """Return query, key and value as (B, 1, positions, C) tensors ready for SDPA."""
        channels = x.shape[1]
        query = self.g(x)
        key = self.f(x)
        value = self.h(x)
        if self.pool and x.shape[2] >= 2 and x.shape[3] >= 2:
            key = F.max_pool2d(key, 2)
            value = F.max_pool2d(value, 2)
        pad = (0, channels - self.key_channels)
        query = F.pad(query.flatten(2).transpose(1, 2), pad).unsqueeze(1)
        key = F.pad(key.flatten(2).transpose(1, 2), pad).unsqueeze(1)
        value = value.flatten(2).transpose(1, 2).contiguous().unsqueeze(1)
        return query, key, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention within each window of ``window_grid`` (one window, i.e. global, up to ATTENTION_WINDOW a side).

        The map is replicate-padded by fewer rows (columns) than there are windows, cut into equal
        windows by reshapes, attended, reassembled and cropped. Traced for ONNX: global.
        """
        batch, channels, height, width = x.shape
        exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        if exporting or (height <= ATTENTION_WINDOW and width <= ATTENTION_WINDOW):
            return self.gamma * self.v(self.attend(x)) + x
        rows, cols, tile_h, tile_w = window_grid(height, width)
        padded = F.pad(x, (0, cols * tile_w - width, 0, rows * tile_h - height), mode="replicate")
        tiles = padded.reshape(batch, channels, rows, tile_h, cols, tile_w).permute(0, 2, 4, 1, 3, 5)
        tiles = tiles.reshape(batch * rows * cols, channels, tile_h, tile_w)
        attended = self.attend(tiles).reshape(batch, rows, cols, channels, tile_h, tile_w).permute(0, 3, 1, 4, 2, 5)
        attended = attended.reshape(batch, channels, rows * tile_h, cols * tile_w)[:, :, :height, :width]
        return self.gamma * self.v(attended) + x

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """Global attention over one feature map per batch entry: Σ β h(x), shaped like ``x``."""
        batch, channels, height, width = x.shape
        query, key, value = self.project(x)
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            attended = F.scaled_dot_product_attention(query, key, value, scale=1.0)
        else:
            with sdpa_kernel(_MEMORY_EFFICIENT_BACKENDS):
                attended = F.scaled_dot_product_attention(query, key, value, scale=1.0)
        return attended.squeeze(1).transpose(1, 2).reshape(batch, channels, height, width)


def direct_fusion(r: torch.Tensor, y: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Eq. 12: αR + βY."""
    return alpha * r + beta * y


def weighted_fusion(r: torch.Tensor, y: torch.Tensor, alpha: float, beta: float, eps: float) -> torch.Tensor:
    """Eq. 13: (|αR|² + |βY|²) / (αR + βY), with a safe reciprocal.

    1/d is replaced by d/(d² + ε²): equal to 1/d for |d| ≫ ε, bounded by 1/(2ε), smooth and
    sign-preserving through d = 0, where the literal equation divides by zero.
    """
    ar = alpha * r
    by = beta * y
    denom = ar + by
    return (ar * ar + by * by) * denom / (denom * denom + eps * eps)


class GFFB(nn.Module):
    """Global Feature Fusion Block: CA and SA branches on the same features, then fused.

    With only one branch enabled the block is that branch alone (the CA-/SA-SR-GAN baselines).
    """

    def __init__(
        self,
        channels: int,
        use_ca: bool,
        use_sa: bool,
        fusion: str = "weighted",
        alpha: float = 0.5,
        beta: float = 0.5,
        eps: float = 1e-3,
        reduction: int = 16,
        pool: bool = False,
    ) -> None:
        super().__init__()
        if not (use_ca or use_sa):
            raise ValueError("GFFB needs channel attention, self-attention or both")
        self.ca = ChannelAttention(channels, reduction) if use_ca else None
        self.sa = SelfAttention(channels, pool) if use_sa else None
        self.fusion = fusion
        self.alpha, self.beta, self.eps = alpha, beta, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sa is None:
            return self.ca(x)
        if self.ca is None:
            return self.sa(x)
        r, y = self.ca(x), self.sa(x)
        if self.fusion == "direct":
            return direct_fusion(r, y, self.alpha, self.beta)
        return weighted_fusion(r, y, self.alpha, self.beta, self.eps)
