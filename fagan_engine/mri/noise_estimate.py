"""Robust noise level of an MRI magnitude image, and the foreground convention of the trust maps.

Estimator: Immerkær's 3×3 noise mask ``[[1, −2, 1], [−2, 4, −2], [1, −2, 1]]`` (the difference of
two Laplacians) on each in-plane slice, made robust with the median: for white noise of standard
deviation σ the filtered image has standard deviation 6σ, the mask cancels smooth (locally
quadratic) content, and the median ignores the minority of voxels on edges:
``σ ≈ median|h| / (0.6745 · 6)``. On the ICBM152 template's LR slices its floor (no noise at all)
is a third lower than that of Donoho's Haar-wavelet MAD. Only voxels well inside the tissue are
used (their whole 3×3 neighbourhood above 20 % of the robust range): there a magnitude image's
Rician noise is close to Gaussian with the σ of the complex noise, while in the background it is
Rayleigh (a different spread) or was zeroed by the scanner.

The σ returned is that of the complex Gaussian noise before the magnitude, in the image's units,
i.e. ``forward_model``'s ``noise × robust max``. Smooth noise-free images (the ICBM152 template)
give a small floor, not 0; an image that was upsampled after the noise was added gives a low σ
(its noise is no longer white).

numpy only.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
from scipy import ndimage

MAD_TO_SIGMA = 1.0 / 0.6745
"""median |x| of a zero-mean Gaussian is 0.6745 σ."""
FOREGROUND_FRACTION = 0.05
"""Foreground: input above ``p0.5 + 0.05 · (p99.5 − p0.5)`` (the issue's "5 % of its robust range")."""
NOISE_MASK_FRACTION = 0.2
"""Voxels used for the noise estimate: their 3×3 neighbourhood above 20 % of the robust range (Rician ≈ Gaussian)."""
IMMERKAER_MASK = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
"""Its response to white noise of std σ has std ``sqrt(sum(mask²)) σ = 6σ``."""


def robust_range(array: np.ndarray) -> Tuple[float, float]:
    """The 0.5th and 99.5th percentiles of ``array`` (the engine's normalisation convention)."""
    low, high = np.percentile(array, [0.5, 99.5])
    return float(low), float(high)


def foreground(array: np.ndarray, fraction: float = FOREGROUND_FRACTION) -> np.ndarray:
    """Boolean mask of voxels above ``p0.5 + fraction · (p99.5 − p0.5)``."""
    low, high = robust_range(array)
    return array > low + fraction * (high - low)


def estimate_noise_sigma(slices: np.ndarray) -> float:
    """σ of the noise of a stack of in-plane slices (…, rows, cols), in the image's units.

    Returns 0.0 when fewer than 16 tissue voxels exist (nothing to estimate from).
    """
    array = np.asarray(slices, dtype=np.float64)
    array = array.reshape((-1,) + array.shape[-2:])
    high_pass = ndimage.convolve(array, IMMERKAER_MASK[None], mode="reflect")
    low, high = robust_range(array)
    inside = ndimage.minimum_filter(array, size=(1, 3, 3), mode="nearest") > low + NOISE_MASK_FRACTION * (high - low)
    if np.count_nonzero(inside) < 16:
        return 0.0
    return float(np.median(np.abs(high_pass[inside])) * MAD_TO_SIGMA / 6.0)


def relative_noise(slices: np.ndarray) -> float:
    """Estimated σ relative to the image's 99.5th percentile: ``forward_model``'s ``noise`` parameter."""
    high = float(np.percentile(slices, 99.5))
    return estimate_noise_sigma(slices) / high if high > 0 else 0.0
