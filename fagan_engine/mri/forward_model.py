"""The acquisition forward model: how a low-resolution MRI image arises from a high-resolution one.

This is the only place in the project that makes LR images. Training, evaluation, the demo,
consistency maps, per-scan fitting and through-plane SR all call it.

In-plane models (factor ``s``, the last two axes of an array):

- ``kspace``: the acquisition at a smaller matrix. The centred k-space of the HR image is cropped
  to the LR matrix (not zero-filled at the HR size), optionally apodised (Hamming, Tukey, Fermi)
  and partial-Fourier sampled, inverse-transformed at the LR size and its magnitude taken, with
  complex Gaussian noise added before the magnitude (Rician statistics).
- ``bicubic``: the paper's anti-aliased bicubic downsampling (PyTorch ``antialias=True``).
- ``gaussian``: a Gaussian point-spread function, then decimation.

Through-plane (one axis, any ratio): a slice profile, a box of the slice thickness with optional
Gaussian edges, integrated exactly over each HR voxel and sampled at the slice spacing, so slice
gaps and non-integer ratios are handled.

Grid convention (that of ``geometry.super_resolved_geometry``): HR pixel ``i`` covers
``[i, i + 1)`` in HR pixel units; LR pixel ``j`` covers ``[j·r, (j + 1)·r)`` for a ratio ``r``, so
its centre lies at HR coordinate ``(j + 0.5)·r``. Every model puts LR content exactly there; the
k-space model needs a half-pixel phase ramp for it (``(s − 1)/2`` HR pixels).

Intensities stay in the input's units: a constant image stays the same constant. Noise levels are
relative to the image's robust maximum (its 99.5th percentile), so ``noise=0.02`` is an SNR of 50
in the brightest tissue.

numpy only: no torch, so the Slicer module and the ONNX path can use it too.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import scipy.fft
from scipy import ndimage
from scipy.special import ndtr

from fagan_engine.util.config import ACQUISITIONS, WINDOWS, DegradationConfig
from fagan_engine.util.errors import ConfigError

if TYPE_CHECKING:  # for the annotations only; the volume functions import SimpleITK when they run
    import SimpleITK as sitk

ROBUST_PERCENTILE = 99.5
"""The noise level is relative to this percentile of the HR image (its robust maximum)."""


@dataclass
class AcquisitionConfig:
    """One in-plane acquisition model and its parameters (plain JSON types; stored in checkpoints)."""

    model: str = "kspace"
    window: str = "none"
    window_strength: float = 0.5
    partial_fourier: float = 1.0
    noise: float = 0.0
    psf_fwhm: float = 1.0

    def validate(self) -> "AcquisitionConfig":
        """Raise ConfigError on an impossible value; return self."""
        _check_choice("acquisition.model", self.model, ACQUISITIONS)
        _check_choice("acquisition.window", self.window, WINDOWS)
        _check_range("acquisition.window_strength", self.window_strength, 0.0, 1.0)
        _check_range("acquisition.partial_fourier", self.partial_fourier, 0.5, 1.0, low_open=True)
        _check_range("acquisition.noise", self.noise, 0.0, 1.0)
        _check_range("acquisition.psf_fwhm", self.psf_fwhm, 0.0, 8.0, low_open=True)
        return self

    def to_dict(self) -> Dict[str, object]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """A short human-readable description, e.g. ``kspace (hamming, partial Fourier 0.75)``."""
        parts = []
        if self.model == "kspace":
            if self.window != "none":
                parts.append(self.window)
            if self.partial_fourier < 1.0:
                parts.append(f"partial Fourier {self.partial_fourier:g}")
        elif self.model == "gaussian":
            parts.append(f"FWHM {self.psf_fwhm:g} LR px")
        if self.noise > 0:
            parts.append(f"noise {self.noise:g}")
        return self.model + (f" ({', '.join(parts)})" if parts else "")


def acquisition_from_dict(data: object) -> AcquisitionConfig:
    """Parse a stored acquisition (checkpoint metadata, config file); ConfigError when malformed."""
    if not isinstance(data, dict):
        raise ConfigError("acquisition must be a mapping")
    known = {f.name: f.type for f in dataclasses.fields(AcquisitionConfig)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown acquisition key {unknown[0]!r}")
    values = {}
    for key, value in data.items():
        default = getattr(AcquisitionConfig, key)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise ConfigError(f"acquisition.{key} must be a string, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"acquisition.{key} must be a finite number, got {value!r}")
        values[key] = value if isinstance(default, str) else float(value)
    return AcquisitionConfig(**values).validate()


def random_acquisition(rng: np.random.Generator, mix: DegradationConfig) -> AcquisitionConfig:
    """Draw one acquisition from a training mix (model by weight, then its parameters)."""
    names = list(mix.weights())
    weights = np.array([mix.weights()[n] for n in names], dtype=np.float64)
    model = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    window = mix.windows[int(rng.integers(len(mix.windows)))]
    strength = float(rng.uniform(*mix.window_strength))
    partial = 1.0
    if rng.random() < mix.partial_fourier_probability:
        partial = float(rng.uniform(mix.partial_fourier_min, 1.0))
    noise = float(rng.uniform(*mix.noise)) if rng.random() < mix.noise_probability else 0.0
    fwhm = float(rng.uniform(*mix.psf_fwhm))
    return AcquisitionConfig(model, window, strength, partial, noise, fwhm)


def degrade(
    hr: np.ndarray, scale: int, acquisition: AcquisitionConfig, rng: Optional[np.random.Generator] = None
) -> np.ndarray:
    """LR of ``hr`` (…, H, W) by the integer factor ``scale`` under ``acquisition``; (…, H/s, W/s) float32.

    H and W must divide by ``scale``. ``rng`` draws the noise; it is required when
    ``acquisition.noise > 0``.
    """
    if not isinstance(acquisition, AcquisitionConfig):
        raise ConfigError(f"acquisition must be an AcquisitionConfig (e.g. AcquisitionConfig(model='kspace')), got {acquisition!r}")
    acquisition.validate()  # an unknown model or window ran as another one
    hr = np.asarray(hr, dtype=np.float32)
    height, width = hr.shape[-2:]
    if scale < 1 or height % scale or width % scale:
        raise ValueError(f"HR size {height}x{width} is not divisible by scale {scale}")
    if acquisition.noise > 0 and rng is None:
        raise ValueError("a noisy acquisition needs a random generator")
    sigma = acquisition.noise * robust_max(hr) if acquisition.noise > 0 else None
    if acquisition.model == "kspace":
        complex_lr = kspace_image(hr, scale, acquisition.window, acquisition.window_strength, acquisition.partial_fourier)
        return _magnitude(complex_lr, sigma, rng)
    if acquisition.model == "bicubic":
        lr = apply_separable(hr, bicubic_aa_matrix(height, scale), bicubic_aa_matrix(width, scale))
    else:
        fwhm = acquisition.psf_fwhm * scale
        lr = apply_separable(hr, gaussian_matrix(height, scale, fwhm), gaussian_matrix(width, scale, fwhm))
    if sigma is None:
        return lr.astype(np.float32)
    return _magnitude(lr.astype(np.complex64), sigma, rng)


def add_rician_noise(image: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """``image`` (…, H, W) with Rician noise of ``level`` times its robust maximum (the HR targets' noise); float32."""
    return _magnitude(np.asarray(image, dtype=np.complex64), level * robust_max(np.asarray(image, np.float32)), rng)


def resample_slice(image: np.ndarray, zoom: float) -> np.ndarray:
    """A 2D slice resampled by ``zoom`` (cubic; < 1 first low-passed so the coarser pixels are not aliased); float32, >= 0."""
    image = np.asarray(image, dtype=np.float32)
    if zoom < 1.0:
        image = ndimage.gaussian_filter(image, sigma=0.5 * math.sqrt(1.0 / zoom**2 - 1.0))
    return np.clip(ndimage.zoom(image, zoom, order=3, mode="nearest", grid_mode=True), 0.0, None).astype(np.float32)


def robust_max(images: np.ndarray) -> np.ndarray:
    """The 99.5th percentile of each image over its last two axes, shaped to broadcast (…, 1, 1)."""
    flat = images.reshape(images.shape[:-2] + (-1,))
    return np.percentile(flat, ROBUST_PERCENTILE, axis=-1)[..., None, None].astype(np.float32)


def _magnitude(image: np.ndarray, sigma: Optional[np.ndarray], rng: Optional[np.random.Generator]) -> np.ndarray:
    """|image + complex Gaussian noise of std ``sigma``| (Rician statistics); float32."""
    if sigma is not None:
        assert rng is not None
        noise = rng.standard_normal(image.shape, dtype=np.float32) + 1j * rng.standard_normal(image.shape, dtype=np.float32)
        image = image + sigma * noise
    return np.abs(image).astype(np.float32)


# ---- k-space ----------------------------------------------------------------------------------


def kspace_image(
    hr: np.ndarray, scale: int, window: str = "none", strength: float = 0.5, partial_fourier: float = 1.0
) -> np.ndarray:
    """The complex LR image of a smaller acquisition matrix, before the magnitude; (…, H/s, W/s) complex64.

    The central ``H/s × W/s`` of the centred spectrum is kept, phase-ramped so LR pixel ``j`` is
    centred at HR coordinate ``(j + 0.5)·s``, apodised, partial-Fourier masked along the first
    in-plane axis (the phase-encoding direction) and inverse-transformed at the LR size.
    """
    spectrum = lr_spectrum(hr, scale)
    spectrum = spectrum * kspace_filter(spectrum.shape[-2:], window, strength, partial_fourier)
    return np.fft.ifft2(np.fft.ifftshift(spectrum, axes=(-2, -1))).astype(np.complex64)


def lr_spectrum(hr: np.ndarray, scale: int) -> np.ndarray:
    """The centred, phase-ramped LR-matrix part of the spectrum of ``hr``, scaled so that an inverse
    FFT at the LR size returns the input's intensity units (DC at index ``n // 2``)."""
    height, width = hr.shape[-2:]
    rows, cols = height // scale, width // scale
    spectrum = np.fft.fftshift(np.fft.fft2(hr), axes=(-2, -1))
    top, left = height // 2 - rows // 2, width // 2 - cols // 2
    crop = spectrum[..., top : top + rows, left : left + cols]
    return crop * centring_ramp(rows, cols, scale, height, width) / (scale * scale)


def centring_ramp(rows: int, cols: int, scale: int, height: int, width: int) -> np.ndarray:
    """Phase ramp moving samples from HR coordinate ``j·s`` to ``j·s + (s − 1)/2`` (pixel centres)."""
    shift = (scale - 1) / 2.0
    k_rows = np.arange(rows) - rows // 2
    k_cols = np.arange(cols) - cols // 2
    ramp_rows = np.exp(2j * np.pi * k_rows * shift / height)
    ramp_cols = np.exp(2j * np.pi * k_cols * shift / width)
    return (ramp_rows[:, None] * ramp_cols[None, :]).astype(np.complex128)


def kspace_filter(shape: Tuple[int, int], window: str, strength: float, partial_fourier: float) -> np.ndarray:
    """Apodisation window times partial-Fourier mask on a centred (rows, cols) k-space."""
    rows, cols = shape
    if window == "fermi":  # radial, as scanners apply it
        radius = np.hypot(*np.meshgrid(_normalised_k(rows), _normalised_k(cols), indexing="ij"))
        width = 0.02 + 0.1 * strength
        weights = 1.0 / (1.0 + np.exp((radius - (1.0 - 2.0 * width)) / width))
    else:
        weights = _window_1d(rows, window, strength)[:, None] * _window_1d(cols, window, strength)[None, :]
    if partial_fourier < 1.0:
        missing = int(round((1.0 - partial_fourier) * rows))
        weights = weights.copy()
        weights[:missing, :] = 0.0
    return weights


def _normalised_k(n: int) -> np.ndarray:
    """Centred k indices scaled so the edge of the matrix is at |k| = 1."""
    return (np.arange(n) - n // 2) / max(n / 2.0, 1.0)


def _window_1d(n: int, window: str, strength: float) -> np.ndarray:
    k = np.abs(_normalised_k(n))
    if window == "none":
        return np.ones(n)
    if window == "hamming":
        return 0.54 + 0.46 * np.cos(np.pi * k)
    # Tukey: flat to 1 − α, then a cosine taper reaching 0 at the matrix edge
    alpha = max(strength, 1e-6)
    taper = 0.5 * (1.0 + np.cos(np.pi * (k - (1.0 - alpha)) / alpha))
    return np.where(k <= 1.0 - alpha, 1.0, taper)


# ---- image-space kernels ------------------------------------------------------------------------


def apply_separable(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``rows @ image @ cols.T`` for every image of (…, H, W)."""
    return np.einsum("ij,...jk,lk->...il", rows, images, cols, optimize=True)


def apply_along_axis(volume: np.ndarray, matrix: np.ndarray, axis: int) -> np.ndarray:
    """Apply a (n_out, n_in) resampling matrix along one axis of an array."""
    moved = np.moveaxis(volume, axis, -1)
    return np.moveaxis(moved @ matrix.T, -1, axis)


def kernel_matrix(n_in: int, n_out: int, ratio: float, kernel: Callable[[np.ndarray], np.ndarray], support: float) -> np.ndarray:
    """(n_out, n_in) matrix of ``kernel(x_in − c_out)`` with ``c_out = (j + 0.5)·ratio``, rows normalised.

    ``support`` is the kernel's half-width in input pixels. Rows are normalised to 1 (where the
    kernel leaves the field of view, the remaining weights are renormalised).
    """
    centres = (np.arange(n_out) + 0.5) * ratio
    positions = np.arange(n_in) + 0.5
    offsets = positions[None, :] - centres[:, None]
    weights = np.where(np.abs(offsets) <= support, kernel(offsets), 0.0)
    return weights / weights.sum(axis=1, keepdims=True)


@functools.lru_cache(maxsize=64)
def bicubic_aa_matrix(n_in: int, scale: int) -> np.ndarray:
    """Anti-aliased bicubic downsampling by ``scale`` (PyTorch ``antialias=True``: a = −0.5, support 2·s).

    Cached (training builds one per sample otherwise); the returned array is read-only."""

    def cubic(x: np.ndarray) -> np.ndarray:
        t = np.abs(x) / scale
        a = -0.5
        near = ((a + 2) * t - (a + 3)) * t * t + 1
        far = ((t - 5) * t + 8) * t * a - 4 * a
        return np.where(t < 1, near, np.where(t < 2, far, 0.0))

    return _truncated_matrix(n_in, scale, cubic, 2.0 * scale)


def gaussian_matrix(n_in: int, scale: int, fwhm: float) -> np.ndarray:
    """A Gaussian PSF of ``fwhm`` HR pixels, sampled at the LR pixel centres."""
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    return kernel_matrix(n_in, n_in // scale, float(scale), lambda x: np.exp(-0.5 * (x / sigma) ** 2), 4.0 * sigma + 0.5)


def _truncated_matrix(n_in: int, scale: int, kernel: Callable[[np.ndarray], np.ndarray], support: float) -> np.ndarray:
    """PyTorch/PIL's anti-aliased resampling: taps ``[int(c − support + 0.5), int(c + support + 0.5))``."""
    n_out = n_in // scale
    matrix = np.zeros((n_out, n_in))
    for j in range(n_out):
        centre = (j + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        taps = np.arange(lo, hi)
        weights = kernel(taps + 0.5 - centre)
        matrix[j, lo:hi] = weights / weights.sum()
    matrix.flags.writeable = False
    return matrix


# ---- through-plane slice profile ----------------------------------------------------------------


def slice_profile_matrix(n_hr: int, n_lr: int, ratio: float, thickness: float, edge_sigma: float = 0.0) -> np.ndarray:
    """(n_lr, n_hr) weights of a slice profile, integrated exactly over each HR voxel.

    ``ratio`` is the slice spacing and ``thickness`` the slice thickness, both in HR voxels; slice
    ``j`` is centred at ``(j + 0.5)·ratio``. The profile is a box of ``thickness`` convolved with a
    Gaussian of ``edge_sigma`` HR voxels (0: a sharp box). A thickness below the spacing leaves gaps.
    """
    if thickness <= 0 or ratio <= 0:
        raise ValueError("slice thickness and spacing must be positive")
    centres = (np.arange(n_lr) + 0.5) * ratio
    lo = centres[:, None] - thickness / 2.0
    hi = centres[:, None] + thickness / 2.0
    edges = np.arange(n_hr + 1, dtype=np.float64)[None, :]
    if edge_sigma <= 0:
        cumulative = np.clip(edges, lo, hi) - lo  # ∫ box from −∞ to each voxel edge
    else:
        cumulative = edge_sigma * (_int_phi((edges - lo) / edge_sigma) - _int_phi((edges - hi) / edge_sigma))
    weights = np.diff(cumulative, axis=1)
    totals = weights.sum(axis=1, keepdims=True)
    if np.any(totals <= 0):
        raise ValueError("a slice lies outside the high-resolution field of view")
    return weights / totals


def _int_phi(z: np.ndarray) -> np.ndarray:
    """∫ Φ(u) du from −∞ to z = z·Φ(z) + φ(z), for the standard normal Φ, φ."""
    return z * ndtr(z) + np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def degrade_through_plane(
    volume: np.ndarray,
    axis: int,
    ratio: float,
    thickness: float,
    edge_sigma: float = 0.0,
    noise: float = 0.0,
    rng: Optional[np.random.Generator] = None,
) -> np.ndarray:
    """Thick slices along ``axis`` of an array: slice spacing ``ratio`` and ``thickness`` in voxels.

    The output has ``floor(n / ratio)`` samples along ``axis`` (so it covers at most the input's
    extent); ``noise`` is relative to the robust maximum, as in ``degrade``.
    """
    volume = np.asarray(volume, dtype=np.float32)
    n_hr = volume.shape[axis]
    n_lr = int(math.floor(n_hr / ratio + 1e-9))
    if n_lr < 1:
        raise ValueError(f"{n_hr} voxels cannot hold one slice of spacing {ratio:g}")
    out = apply_along_axis(volume, slice_profile_matrix(n_hr, n_lr, ratio, thickness, edge_sigma), axis).astype(np.float32)
    if noise <= 0:
        return out
    if rng is None:
        raise ValueError("a noisy acquisition needs a random generator")
    sigma = noise * float(np.percentile(volume, ROBUST_PERCENTILE))
    return _magnitude(out.astype(np.complex64), np.float32(sigma), rng)


def lr_shape(shape: Sequence[int], scale: int) -> Tuple[int, ...]:
    """The LR shape of an HR array for an in-plane factor (last two axes)."""
    return tuple(shape[:-2]) + (shape[-2] // scale, shape[-1] // scale)


# ---- validation helpers -------------------------------------------------------------------------


def _check_choice(key: str, value: object, choices: Sequence[object]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}; got {value!r}")


def _check_range(key: str, value: float, low: float, high: float, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    if value > high or value < low or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ConfigError(f"{key} must be in {bracket}{low:g}, {high:g}], got {value:g}")


# ---- volumes ------------------------------------------------------------------------------------


def crop_to_multiple(image: "sitk.Image", scale: int, axes: Sequence[int]) -> "sitk.Image":
    """Crop the in-plane axes so their sizes divide by ``scale`` (extra voxels dropped at the end)."""
    import SimpleITK as sitk  # lazy: SimpleITK only for image volumes; mri imports without it

    size = list(image.GetSize())
    for axis in axes:
        size[axis] -= size[axis] % scale
    if any(s == 0 for s in size):
        raise ValueError(f"volume is smaller than the scale {scale} along an in-plane axis")
    return sitk.RegionOfInterest(image, size, [0, 0, 0])


def degrade_volume(
    image: "sitk.Image",
    scale: int,
    axes: Tuple[int, int],
    acquisition: AcquisitionConfig,
    rng: Optional[np.random.Generator] = None,
) -> "sitk.Image":
    """The LR counterpart of an HR volume: every in-plane slice degraded by ``acquisition``.

    The HR volume must already be cropped to a multiple of ``scale``. The LR geometry covers the
    same physical extent (spacing × scale, origin shifted by half the spacing difference), so that
    super-resolving it with ``geometry.super_resolved_geometry`` lands exactly on the HR grid.
    """
    import SimpleITK as sitk  # lazy: SimpleITK only for image volumes; mri imports without it

    array = sitk.GetArrayFromImage(image).astype(np.float32)  # (z, y, x) = sitk axes (2, 1, 0)
    np_axes = tuple(sorted(2 - a for a in axes))
    through = ({0, 1, 2} - set(np_axes)).pop()
    slices = np.moveaxis(array, (through,) + np_axes, (0, 1, 2))
    lr = degrade(slices, scale, acquisition, rng)
    out = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(lr, (0, 1, 2), (through,) + np_axes)))
    spacing = np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    shift = np.zeros(3)
    for axis in axes:
        shift[axis] = 0.5 * spacing[axis] * (scale - 1)
        spacing[axis] *= scale
    out.SetSpacing(tuple(spacing))
    out.SetDirection(image.GetDirection())
    out.SetOrigin(tuple(np.array(image.GetOrigin()) + direction @ shift))
    return out


# ---- inverse-problem primitives (trust maps, --enforce-consistency) ---------------------------------


def separable_matrices(height: int, width: int, scale: int, acquisition: AcquisitionConfig) -> Tuple[np.ndarray, np.ndarray]:
    """The (H/s, H) and (W/s, W) matrices of a noise-free ``bicubic`` or ``gaussian`` acquisition,
    so that ``degrade(hr) == apply_separable(hr, rows, cols)``."""
    if acquisition.model == "bicubic":
        return bicubic_aa_matrix(height, scale), bicubic_aa_matrix(width, scale)
    if acquisition.model == "gaussian":
        fwhm = acquisition.psf_fwhm * scale
        return gaussian_matrix(height, scale, fwhm), gaussian_matrix(width, scale, fwhm)
    raise ValueError(f"the {acquisition.model} acquisition is not a separable image-space kernel")


def project_along_axis(volume: np.ndarray, slices: np.ndarray, matrix: np.ndarray, axis: int) -> np.ndarray:
    """``volume`` plus the minimum-norm correction after which ``matrix`` applied along ``axis`` gives ``slices``
    exactly, ``x + M⁺(y − M x)`` (the through-plane data-consistency projection); float64."""
    x = np.asarray(volume, dtype=np.float64)
    residual = np.asarray(slices, dtype=np.float64) - apply_along_axis(x, matrix, axis)
    return x + apply_along_axis(residual, _pinv(matrix), axis)


NONNEGATIVE_ITERATIONS = 5
"""Alternating projections (data consistency, non-negativity) after the first data projection of a magnitude input."""
MAGNITUDE_UNDERSHOOT = 0.05
"""A slice whose minimum is above −0.05 × its maximum is taken as a magnitude image (``magnitude_slices``)."""


def project_onto_data(hr: np.ndarray, lr: np.ndarray, scale: int, acquisition: str) -> np.ndarray:
    """``hr`` (…, H, W) projected onto the images whose noise-free ``acquisition`` is exactly ``lr`` (…, H/s, W/s); float64.

    k-space: the LR-matrix part of the spectrum is replaced by the measured one (``replace_lr_spectrum``);
    bicubic / gaussian (separable matrices A): ``x + A⁺(y − A x)``, the limit of iterative back-projection.
    For each slice whose ``lr`` is a magnitude image (``magnitude_slices``; decided per slice, so the result does not
    depend on how slices are batched): under k-space the measured magnitude first takes the sign of
    the estimate's own LR where that is clearly negative (``magnitude_signs``), so a true image is its own projection;
    then ``NONNEGATIVE_ITERATIONS`` alternating projections (POCS) push the result towards the non-negative images, each
    adding the part of the negative excess that the acquisition cannot see, so the result still reproduces ``lr``
    exactly. Both remove truncation ringing that the measured band would leave on a dark background where the
    network's high band does not cancel it (docs/decisions.md, "Non-negativity").
    """
    hr = np.asarray(hr, dtype=np.float64)
    lr = np.asarray(lr, dtype=np.float64)
    magnitude = magnitude_slices(lr)
    if acquisition == "kspace":
        projected = replace_lr_spectrum(hr, lr, scale, signed_magnitude=magnitude)
    else:
        rows, cols = separable_matrices(hr.shape[-2], hr.shape[-1], scale, AcquisitionConfig(model=acquisition))
        projected = hr + apply_separable(lr - apply_separable(hr, rows, cols), _pinv(rows), _pinv(cols))
    if magnitude.any():
        for _ in range(NONNEGATIVE_ITERATIONS):
            excess = np.where(magnitude[..., None, None], np.maximum(-projected, 0.0), 0.0).astype(np.float32)
            if not excess.any():
                break
            projected += unseen_part(excess, scale, acquisition)
    return projected


def magnitude_signs(current: np.ndarray, lr: np.ndarray) -> np.ndarray:
    """±1 per LR pixel: −1 where the estimate's own LR (``current``: its ``lr_spectrum``; real part) is negative by more
    than half the measured ``lr``. A k-space acquisition measures a magnitude, so near a sharp edge on a dark background the
    truncation ringing's negative lobes arrive rectified; projecting onto them as they are would add a positive haze.
    Where the estimate is clearly negative, its sign is given back (the projection onto ``|A x| = lr`` keeps the sign
    of ``A x``); elsewhere (signal, noise floor) the measured value is used as it is."""
    estimate = np.fft.ifft2(np.fft.ifftshift(current, axes=(-2, -1))).real
    return np.where((lr > 0) & (estimate < -0.5 * lr), -1.0, 1.0)


def acquired_like(hr: np.ndarray, lr: np.ndarray, scale: int, acquisition: str) -> np.ndarray:
    """The noise-free ``acquisition`` of ``hr`` (…, H, W) as the projection models the measured ``lr`` (…, H/s, W/s):
    ``degrade`` (a k-space magnitude) for the slices of ``lr`` that are magnitude images (``magnitude_slices``), the signed
    image (the real part of the complex k-space LR) for the others, which ``project_onto_data`` treats linearly. The
    image-space kernels are linear either way. So ``acquired_like(x, y) − y`` is the residual the projection removes,
    whatever the sign of ``y`` (a z-scored or subtracted input read ``|A x| − y``, about 2|y| wherever y < 0); float32."""
    config = AcquisitionConfig(model=acquisition).validate()
    if acquisition != "kspace":
        return degrade(hr, scale, config)
    complex_lr = kspace_image(np.asarray(hr, dtype=np.float32), scale)
    magnitude = magnitude_slices(np.asarray(lr, dtype=np.float32))[..., None, None]
    return np.where(magnitude, np.abs(complex_lr), complex_lr.real).astype(np.float32)


def magnitude_slices(lr: np.ndarray) -> np.ndarray:
    """Per slice of ``lr`` (…, h, w): whether it looks like a magnitude image, i.e. has a positive maximum and nothing below
    ``-MAGNITUDE_UNDERSHOOT`` times it (the undershoot an image-space kernel such as bicubic leaves at edges); a signed or
    zero-mean slice is not one. Shape ``lr.shape[:-2]``."""
    if not lr.size:
        return np.zeros(lr.shape[:-2], dtype=bool)
    top, bottom = lr.max(axis=(-2, -1)), lr.min(axis=(-2, -1))
    return (top > 0) & (bottom >= -MAGNITUDE_UNDERSHOOT * top)


def unseen_part(images: np.ndarray, scale: int, acquisition: str) -> np.ndarray:
    """The part of ``images`` (…, H, W) float32 that the noise-free ``acquisition`` does not see (its null space):
    ``images`` minus the LR-matrix band (k-space) or minus ``A⁺A images`` (separable kernels). float32."""
    height, width = images.shape[-2:]
    if acquisition == "kspace":
        band = scipy.fft.irfft2(scipy.fft.rfft2(images, workers=-1) * _lr_band(height, width, scale), s=(height, width), workers=-1)
        return images - band
    rows, cols = separable_matrices(height, width, scale, AcquisitionConfig(model=acquisition))
    seen = apply_separable(apply_separable(images, rows.astype(np.float32), cols.astype(np.float32)),
                           _pinv(rows).astype(np.float32), _pinv(cols).astype(np.float32))
    return images - seen


@functools.lru_cache(maxsize=16)
def _lr_band(height: int, width: int, scale: int) -> np.ndarray:
    """The LR-matrix frequencies of an H×W image and their Hermitian partners (what ``replace_lr_spectrum`` changes),
    as a 0/1 float32 mask in ``rfft2`` layout."""
    rows, cols = height // scale, width // scale
    top, left = height // 2 - rows // 2, width // 2 - cols // 2
    centred = np.zeros((height, width), dtype=bool)
    centred[top : top + rows, left : left + cols] = True
    partners = centred[(2 * (height // 2) - np.arange(height)) % height][:, (2 * (width // 2) - np.arange(width)) % width]
    return np.fft.ifftshift(centred | partners)[:, : width // 2 + 1].astype(np.float32)


@functools.lru_cache(maxsize=16)
def _pinv_cached(key: bytes, shape: Tuple[int, int]) -> np.ndarray:
    return np.linalg.pinv(np.frombuffer(key, dtype=np.float64).reshape(shape))


def _pinv(matrix: np.ndarray) -> np.ndarray:
    """Pseudo-inverse of a (small) degradation matrix, cached by content."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float64)
    return _pinv_cached(matrix.tobytes(), matrix.shape)


def replace_lr_spectrum(hr: np.ndarray, lr: np.ndarray, scale: int, signed_magnitude: Any = False) -> np.ndarray:
    """``hr`` (…, H, W) with the LR-matrix part of its spectrum replaced by that of the real image ``lr``
    (``signed_magnitude``, a bool or one per slice: of ``lr`` with the signs ``magnitude_signs`` gives it from ``hr``'s
    own LR).

    The adjoint of ``lr_spectrum``'s crop (same crop position, centring ramp and 1/s² scaling), so
    that the noise-free, unfiltered k-space acquisition of the result is ``lr`` exactly:
    ``kspace_image(result, scale) == lr`` (and ``degrade`` returns ``|lr|``). Frequencies outside
    the LR matrix are kept. The result stays real: where a replaced frequency's Hermitian partner
    lies outside the LR matrix (the LR Nyquist row and column of even sizes), the partner receives
    the conjugate change. float64.
    """
    hr = np.asarray(hr, dtype=np.float64)
    height, width = hr.shape[-2:]
    rows, cols = lr.shape[-2:]
    if (rows * scale, cols * scale) != (height, width):
        raise ValueError(f"LR {rows}x{cols} times {scale} is not the HR size {height}x{width}")
    top, left = height // 2 - rows // 2, width // 2 - cols // 2
    current = lr_spectrum(hr, scale)
    lr = np.asarray(lr, dtype=np.float64)
    signed = np.asarray(signed_magnitude, dtype=bool)
    if signed.any():
        lr = lr * np.where(signed[..., None, None], magnitude_signs(current, lr), 1.0)
    measured = np.fft.fftshift(np.fft.fft2(lr), axes=(-2, -1))
    ramp = centring_ramp(rows, cols, scale, height, width)
    change = np.zeros(hr.shape, dtype=np.complex128)
    change[..., top : top + rows, left : left + cols] = (measured - current) * scale * scale / ramp
    # Hermitian partners outside the matrix: centred index p ↔ (2·(n // 2) − p) mod n
    partner_rows = (2 * (height // 2) - np.arange(top, top + rows)) % height
    partner_cols = (2 * (width // 2) - np.arange(left, left + cols)) % width
    outside = ~(
        ((partner_rows >= top) & (partner_rows < top + rows))[:, None] & ((partner_cols >= left) & (partner_cols < left + cols))[None, :]
    )
    block = change[..., top : top + rows, left : left + cols]
    target_rows, target_cols = np.nonzero(outside)
    change[..., partner_rows[target_rows], partner_cols[target_cols]] += np.conj(block[..., target_rows, target_cols])
    return hr + np.fft.ifft2(np.fft.ifftshift(change, axes=(-2, -1))).real
