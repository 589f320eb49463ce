"""PSNR and SSIM per volume, on data normalised to [0, 1]; see docs/metrics.md for the convention.

Both volumes are mapped with the *reference's* robust normaliser (0.5/99.5 percentiles → 0/1)
and clipped to [0, 1], so ``data_range`` is 1. SSIM is the Wang et al. (2004) index with an
11-tap Gaussian window (σ = 1.5), computed in 2D on each slice of the in-plane axes and
averaged over the evaluated voxels. A mask restricts both metrics to the foreground; ``crop``
drops that many voxels at each in-plane border (interpolation edge effects).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
from scipy import ndimage

from fagan_engine.mri.normalization import IntensityNormalizer
from fagan_engine.util.config import NormalizationConfig


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float = 1.0, mask: Optional[np.ndarray] = None) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` for identical inputs. ValueError for arrays (or a mask) of other shapes,
    which numpy would broadcast into a wrong figure."""
    if np.shape(reference) != np.shape(test) or (mask is not None and np.shape(mask) != np.shape(reference)):
        raise ValueError(f"psnr compares arrays of one shape, got {np.shape(reference)} and {np.shape(test)}"
                         + (f" with a mask of {np.shape(mask)}" if mask is not None else ""))
    diff = (reference.astype(np.float64) - test.astype(np.float64)) ** 2
    mse = float(diff[mask].mean() if mask is not None else diff.mean())
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range**2 / mse)


def ssim_map(reference: np.ndarray, test: np.ndarray, data_range: float = 1.0, axes: Sequence[int] = (-2, -1)) -> np.ndarray:
    """Per-voxel SSIM with a Gaussian window applied along ``axes`` only (2D slices of a volume)."""
    x = reference.astype(np.float64)
    y = test.astype(np.float64)
    sigma = [0.0] * x.ndim
    for axis in axes:
        sigma[axis] = 1.5

    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma=sigma, truncate=3.5, mode="reflect")

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim(
    reference: np.ndarray,
    test: np.ndarray,
    data_range: float = 1.0,
    mask: Optional[np.ndarray] = None,
    axes: Sequence[int] = (-2, -1),
) -> float:
    """Mean SSIM over all voxels, or over ``mask``."""
    values = ssim_map(reference, test, data_range, axes)
    return float(values[mask].mean() if mask is not None else values.mean())


FOREGROUND_THRESHOLD = 0.05
"""The head: voxels above this fraction of the normalised reference's range (docs/metrics.md)."""


def foreground_mask(reference01: np.ndarray, threshold: float = FOREGROUND_THRESHOLD, dilation: int = 2) -> np.ndarray:
    """Voxels above ``threshold`` of the normalised range, dilated by ``dilation`` voxels."""
    mask = reference01 > threshold
    return ndimage.binary_dilation(mask, iterations=dilation) if dilation > 0 else mask


def volume_metrics(
    reference: np.ndarray,
    test: np.ndarray,
    in_plane_axes: Sequence[int] = (-2, -1),
    use_mask: bool = True,
    crop: int = 0,
    normalization: Optional[NormalizationConfig] = None,
) -> Dict[str, float]:
    """PSNR/SSIM of ``test`` against ``reference`` (arrays in the same intensity units and grid).

    Returns ``psnr`` and ``ssim`` under the convention above, plus ``psnr_all`` (no mask) so the
    effect of the background on PSNR is visible.
    """
    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch {reference.shape} vs {test.shape}")
    normalizer = IntensityNormalizer.fit(reference, normalization or NormalizationConfig())
    ref = np.clip(normalizer.forward(reference), 0.0, 1.0)
    out = np.clip(normalizer.forward(test), 0.0, 1.0)
    if crop > 0:
        index = [slice(None)] * ref.ndim
        for axis in in_plane_axes:
            index[axis] = slice(crop, -crop)
        ref, out = ref[tuple(index)], out[tuple(index)]
    mask = foreground_mask(ref) if use_mask else None
    return {
        "psnr": psnr(ref, out, 1.0, mask),
        "ssim": ssim(ref, out, 1.0, mask, in_plane_axes),
        "psnr_all": psnr(ref, out, 1.0, None),
    }
