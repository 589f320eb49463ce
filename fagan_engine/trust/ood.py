"""Out-of-distribution warnings: one line each, returned, never raised; they change no exit code.

Against the checkpoint's ``data_profile`` (recorded by ``training.profile``; an empty profile means unknown,
and those checks are skipped):

- **spacing**: an in-plane spacing outside ``[lo / 1.5, hi · 1.5]`` of the training LR spacings
  (``SPACING_TOLERANCE``: the synthetic training data is rescaled by up to ±16 %, and a model
  generalises a little further). An input at 4× the training spacing always warns.
- **slice size**: an in-plane LR side outside ``[lo / 2, hi · 2]`` of the training slices
  (``SIZE_TOLERANCE``; the network is convolutional, only its global attention and pooling see size).
- **noise**: the estimated noise level (``noise_estimate.relative_noise``, σ / p99.5) above
  ``1.25 · max_noise + 0.02``: the estimator reads 0.013 to 0.02 on noise-free template slices at
  2 to 4 mm (anatomy it cannot tell from noise), hence the additive margin.
- **histogram**: the 1-Wasserstein (earth mover's) distance between the foreground intensity
  histogram of the input, normalised like the network's input, and the training histogram is
  above ``HISTOGRAM_DISTANCE`` = 0.40 (units: normalised intensities). Against the bundled ×2 / ×4
  profiles (2026-12-07, the stage-4 recipes with texture and HR noise; k-space and bicubic LR): the
  held-out template slab reads 0.25–0.27, the real development slices 0.12–0.23, a square-root
  contrast 0.15–0.36, an inverted contrast 0.15–0.18, a CT-like image 0.21–0.23, uniform noise
  0.03–0.06 (the noise line catches it), a binary mask 0.52–0.54. The training mix has broad
  synthetic contrasts, so this check only catches label maps and other near-binary images; at the
  earlier 0.25 it warned on the model's own held-out data.

Without a profile:

- **already upsampled**: ``nyquist_ratio`` (mean power per frequency in the top quarter band,
  0.75–1 × Nyquist, over that in 0.25–0.5 × Nyquist; Hann-windowed lines, each in-plane axis,
  the smaller one) below ``UPSAMPLED_RATIO`` = 0.015. On held-out template slices: native
  unfiltered k-space LR 0.06 (×2) and 0.13 (×4), anti-aliased bicubic LR 0.025 / 0.067, Gaussian
  PSF of 1 LR px 0.019 / 0.051; bicubic upsamplings of them 0.002–0.013, zero-filled k-space
  0.001–0.008, FA-GAN ×4 outputs 0.013–0.014. Apodised acquisitions (Hamming, Tukey, Fermi at
  ×2: 0.001–0.009) and a 1.5-px Gaussian PSF also read low and warn: their real resolution is
  coarser than their voxels too, which the line says. FA-GAN ×2 outputs (0.018–0.021) have a
  near-native spectrum and are *not* detected (docs/decisions.md, "Trust maps").
- **pixel shape**: in-plane pixels more than ``MAX_PIXEL_ASPECT`` = 2 times longer than wide (a plane across thick
  slices): training rescales each slice by one factor, so the networks have seen square pixels only.
- **label map**: at most ``MAX_LABELS`` = 32 distinct whole-number values (a segmentation loaded as a volume; the
  histogram check catches near-binary maps only): super-resolution would blend its labels into fractions.
- **acquisition**: the selected acquisition is not one the checkpoint was trained for
  (``inference.acquisition_warnings``; ``SuperResolver`` already adds it to its warnings).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from fagan_engine.inference.runners import acquisition_warnings
from fagan_engine.io.geometry import SliceLayout
from fagan_engine.mri.noise_estimate import relative_noise
from fagan_engine.mri.normalization import IntensityNormalizer
from fagan_engine.trust.profile import HISTOGRAM_EDGES, histogram
from fagan_engine.util.config import NormalizationConfig

SPACING_TOLERANCE = 1.5
SIZE_TOLERANCE = 2.0
NOISE_FACTOR = 1.25
NOISE_MARGIN = 0.02
HISTOGRAM_DISTANCE = 0.40
UPSAMPLED_RATIO = 0.015
MAX_PIXEL_ASPECT = 2.0
"""In-plane pixels longer than this many times their width are called far from square."""
MAX_LABELS = 32
"""An input of at most this many distinct whole-number values is taken for a label map."""
LABEL_SAMPLE = 1 << 22
"""Voxels sampled (evenly) for the label-map check."""
MIN_SPECTRUM_SIDE = 16
"""Slices narrower than this along an axis are not tested for upsampling."""


def ood_warnings(
    image: sitk.Image,
    axes: Tuple[int, int],
    profile: Optional[Dict[str, Any]] = None,
    normalization: Optional[NormalizationConfig] = None,
    checkpoint_name: str = "the checkpoint",
    acquisition: Optional[Tuple[List[str], str]] = None,
) -> List[str]:
    """All warnings for an input ``image`` whose in-plane axes are ``axes``.

    ``profile``: the checkpoint's ``data_profile`` (None, empty, or a missing or malformed entry:
    that check is skipped, so a profile can never make this raise);
    ``normalization``: the checkpoint's; ``acquisition``: (trained acquisitions, selected one) to
    add the acquisition line (leave None when ``SuperResolver.warnings`` already has it).
    """
    slices = SliceLayout.for_axes(axes).to_slices(sitk.GetArrayViewFromImage(image)).astype(np.float32)
    lines: List[str] = []
    profile = profile or {}
    if _pair(profile.get("lr_spacing_mm")):
        lines.append(spacing_warning([image.GetSpacing()[a] for a in axes], profile["lr_spacing_mm"], checkpoint_name))
    if _pair(profile.get("lr_slice_size")):
        lines.append(size_warning([image.GetSize()[a] for a in axes], profile["lr_slice_size"], checkpoint_name))
    if _number(profile.get("max_noise")):
        lines.append(noise_warning(relative_noise(slices), profile["max_noise"], checkpoint_name))
    trained = profile.get("histogram")
    if isinstance(trained, list) and len(trained) == len(HISTOGRAM_EDGES) - 1 and all(map(_number, trained)):
        lines.append(histogram_warning(histogram_distance(slices, trained, normalization), checkpoint_name))
    lines.append(upsampled_warning(nyquist_ratio(slices)))
    lines.append(pixel_shape_warning([image.GetSpacing()[a] for a in axes]))
    lines.append(label_map_warning(slices))
    if acquisition is not None:
        lines += acquisition_warnings(checkpoint_name, *acquisition)
    return [line for line in lines if line]


def spacing_warning(spacing: Sequence[float], trained: Sequence[float], name: str) -> str:
    """A line when an in-plane spacing (mm) is outside the tolerated training range; else ''."""
    lo, hi = trained
    if all(lo / SPACING_TOLERANCE <= s <= hi * SPACING_TOLERANCE for s in spacing):
        return ""
    shown = "x".join(f"{s:.3g}" for s in spacing)
    return (
        f"in-plane spacing {shown} mm is outside the {_range(lo, hi)} mm that {name} was trained on: "
        "structures appear at a scale the model has not seen; the result may be unreliable"
    )


def size_warning(sides: Sequence[int], trained: Sequence[int], name: str) -> str:
    """A line when an in-plane slice side (pixels) is outside the tolerated training range; else ''."""
    lo, hi = trained
    if all(lo / SIZE_TOLERANCE <= n <= hi * SIZE_TOLERANCE for n in sides):
        return ""
    shown = "x".join(str(n) for n in sides)
    return f"slice size {shown} pixels is outside the {_range(lo, hi)} pixels {name} was trained on; the result may be unreliable"


def noise_warning(noise: float, trained_max: float, name: str) -> str:
    """A line when the estimated relative noise is above the training noise (with margin); else ''."""
    if noise <= NOISE_FACTOR * trained_max + NOISE_MARGIN:
        return ""
    return (
        f"estimated noise level {noise:.3f} (σ / 99.5th percentile) is above the {trained_max:.3f} {name} was trained with: "
        "the model may sharpen noise into structure"
    )


def histogram_distance(slices: np.ndarray, trained: Sequence[float], normalization: Optional[NormalizationConfig] = None) -> float:
    """1-Wasserstein distance (normalised intensity units) between the input's foreground histogram and ``trained``."""
    normalised = IntensityNormalizer.fit(slices, normalization or NormalizationConfig()).forward(slices)
    mine = np.cumsum(histogram(normalised))
    theirs = np.cumsum(np.asarray(trained, dtype=np.float64))
    return float(np.abs(mine - theirs).sum() * (HISTOGRAM_EDGES[1] - HISTOGRAM_EDGES[0]))


def histogram_warning(distance: float, name: str) -> str:
    """A line when the histogram distance is above ``HISTOGRAM_DISTANCE``; else ''."""
    if distance <= HISTOGRAM_DISTANCE:
        return ""
    return (
        f"the intensity histogram is far from {name}'s training data (earth mover's distance {distance:.2f} of the "
        f"robust range, threshold {HISTOGRAM_DISTANCE:g}): unfamiliar contrast; the result may be unreliable"
    )


def nyquist_ratio(slices: np.ndarray) -> Optional[float]:
    """Power per frequency near Nyquist (0.75–1) over mid band (0.25–0.5), smaller of the two in-plane axes.

    None when the slices are narrower than ``MIN_SPECTRUM_SIDE`` or have no mid-band energy.
    """
    ratios = []
    for axis in (1, 2):
        n = slices.shape[axis]
        if n < MIN_SPECTRUM_SIDE:
            continue
        lines = np.moveaxis(slices, axis, -1).astype(np.float64)
        lines = (lines - lines.mean(axis=-1, keepdims=True)) * np.hanning(n)
        power = (np.abs(np.fft.rfft(lines, axis=-1)) ** 2).reshape(-1, n // 2 + 1).mean(axis=0)
        frequency = np.fft.rfftfreq(n) * 2.0  # in units of Nyquist
        middle = power[(frequency > 0.25) & (frequency <= 0.5)].mean()
        if middle > 0:
            ratios.append(float(power[frequency > 0.75].mean() / middle))
    return min(ratios) if ratios else None


def upsampled_warning(ratio: Optional[float]) -> str:
    """A line when ``nyquist_ratio`` says the input has little energy near its Nyquist frequency; else ''."""
    if ratio is None or ratio >= UPSAMPLED_RATIO:
        return ""
    return (
        f"the input has little energy near its Nyquist frequency (ratio {ratio:.4f} < {UPSAMPLED_RATIO:g}): it looks "
        "already upsampled (interpolated, zero-filled or super-resolved) or heavily filtered; super-resolving it adds no real detail"
    )


def pixel_shape_warning(spacing: Sequence[float]) -> str:
    """A line when the in-plane pixels are far from square (``MAX_PIXEL_ASPECT``): training rescales each slice by one
    factor, so the networks have seen square pixels only; else ''."""
    if max(spacing) <= MAX_PIXEL_ASPECT * min(spacing):
        return ""
    shown = "x".join(f"{s:.3g}" for s in spacing)
    return (f"the in-plane pixels are {shown} mm, far from square: the model was trained on square pixels; with thick "
            "slices, super-resolve in the slices' own plane (--plane) or make them isotropic (--through-plane)")


def label_map_warning(slices: np.ndarray) -> str:
    """A line when the input holds at most ``MAX_LABELS`` distinct whole numbers (a segmentation loaded as a volume); else
    ''. Checked on an even sample of at most ``LABEL_SAMPLE`` voxels."""
    flat = slices.reshape(-1)
    sample = flat[:: max(1, flat.size // LABEL_SAMPLE)]
    if sample.size == 0 or not np.all(np.isfinite(sample)) or np.any(sample != np.round(sample)):
        return ""
    distinct = np.unique(sample)
    if not 2 <= distinct.size <= MAX_LABELS:  # one value: a constant volume, not a segmentation
        return ""
    return (f"the input holds only {distinct.size} distinct whole-number values: it looks like a label map (a segmentation); "
            "super-resolution blends labels into fractional values, so resample label maps with nearest neighbour instead")


def _range(lo: float, hi: float) -> str:
    return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _pair(value: Any) -> bool:
    """A [low, high] range of positive numbers."""
    return isinstance(value, list) and len(value) == 2 and all(_number(v) and v > 0 for v in value) and value[0] <= value[1]
