"""Interpolation baselines as separable matrices (numpy only, no torch): bicubic and Lanczos-3.

Both use the network's grid convention: half-pixel centres, output pixel ``i`` of an ``×s``
upsampling sits at input coordinate ``(i + 0.5)/s − 0.5``, edges clamped.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

LANCZOS_LOBES = 3


def bicubic_matrix(size: int, scale: int) -> np.ndarray:
    """(size·scale, size) bicubic interpolation matrix: a = -0.75, as PyTorch ``mode="bicubic"``."""

    def cubic(x: np.ndarray) -> np.ndarray:
        a = -0.75
        t = np.abs(x)
        near = ((a + 2) * t - (a + 3)) * t * t + 1
        far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
        return np.where(t <= 1, near, np.where(t < 2, far, 0.0))

    return upsampling_matrix(size, size * scale, cubic, 2, normalise=False)


def lanczos_matrix(size: int, n_out: int) -> np.ndarray:
    """(n_out, size) Lanczos-3 interpolation matrix for any output size, rows normalised."""

    def lanczos(x: np.ndarray) -> np.ndarray:
        return np.where(np.abs(x) < LANCZOS_LOBES, np.sinc(x) * np.sinc(x / LANCZOS_LOBES), 0.0)

    return upsampling_matrix(size, n_out, lanczos, LANCZOS_LOBES, normalise=True)


def upsampling_matrix(
    size: int, n_out: int, kernel: Callable[[np.ndarray], np.ndarray], radius: int, normalise: bool
) -> np.ndarray:
    """(n_out, size) matrix of ``kernel`` taps around each output position, edge taps clamped."""
    position = (np.arange(n_out) + 0.5) * size / n_out - 0.5
    base = np.floor(position).astype(int)
    matrix = np.zeros((n_out, size))
    rows = np.arange(n_out)
    for offset in range(-radius + 1, radius + 1):
        np.add.at(matrix, (rows, np.clip(base + offset, 0, size - 1)), kernel(position - (base + offset)))
    if normalise:
        matrix /= matrix.sum(axis=1, keepdims=True)
    return matrix
