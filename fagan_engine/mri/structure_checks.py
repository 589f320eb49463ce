"""Guards against invented structure: edge overshoot near the LR Nyquist frequency and edge energy.

- ``nyquist_band_ratio``: the amplitude of an SR image in a band of radial frequencies just
  below the LR Nyquist frequency (0.75–1.0 of it by default), divided by the HR reference's. An
  SR that draws halos along edges boosts this band (the first-wave model reached 1.2 under k-space
  input); a faithful one stays near 1, and the issue's bound is 1.05.
- ``edge_energy``: the mean squared gradient magnitude, used on flat noisy regions where a
  faithful SR must not create more edges than Lanczos interpolation.

Both work on stacks of 2D slices (…, H, W) in any intensity units (ratios are unit-free).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

NYQUIST_BAND = (0.75, 1.0)
"""The band, as fractions of the LR Nyquist frequency, where overshoot is measured."""
OVERSHOOT_LIMIT = 1.05


def band_power(images: np.ndarray, scale: int, band: Tuple[float, float] = NYQUIST_BAND) -> float:
    """Total spectral power of Hann-windowed slices in a radial band of the LR Nyquist frequency."""
    images = np.asarray(images, dtype=np.float64)
    rows, cols = images.shape[-2:]
    window = np.outer(np.hanning(rows), np.hanning(cols))
    centred = images - images.mean(axis=(-2, -1), keepdims=True)
    spectrum = np.abs(np.fft.fft2(centred * window)) ** 2
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(rows), np.fft.fftfreq(cols), indexing="ij"))
    nyquist = 0.5 / scale
    selected = (radius >= band[0] * nyquist) & (radius < band[1] * nyquist)
    return float(spectrum[..., selected].sum())


def nyquist_band_ratio(test: np.ndarray, reference: np.ndarray, scale: int, band: Tuple[float, float] = NYQUIST_BAND) -> float:
    """Amplitude ratio (SR / HR) in ``band`` of the LR Nyquist frequency; 1 is faithful, > 1.05 overshoots."""
    return float(np.sqrt(band_power(test, scale, band) / band_power(reference, scale, band)))


def edge_energy(images: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Mean squared gradient magnitude (central differences along the last two axes), inside ``mask``."""
    images = np.asarray(images, dtype=np.float64)
    grad_rows, grad_cols = np.gradient(images, axis=(-2, -1))
    energy = grad_rows**2 + grad_cols**2
    return float(energy[mask].mean() if mask is not None else energy.mean())
