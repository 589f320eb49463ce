"""The acquisition forward model: grid alignment, units, k-space crop, filters, noise, slice profiles."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from skimage.registration import phase_cross_correlation

from fagan_engine.inference.runners import bicubic_runner
from fagan_engine.io.geometry import plane_axes
from fagan_engine.mri.forward_model import (
    AcquisitionConfig,
    acquisition_from_dict,
    degrade,
    degrade_through_plane,
    degrade_volume,
    kspace_image,
    random_acquisition,
    slice_profile_matrix,
)
from fagan_engine.util.config import ACQUISITIONS, DegradationConfig
from fagan_engine.util.errors import ConfigError


def blobs(size: int = 128, seed: int = 0, width: float = 1.0) -> np.ndarray:
    """Smooth random blobs away from the borders (a band-limited, non-periodic test image)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    image = np.zeros((size, size), np.float32)
    for _ in range(12):
        cy, cx, s = rng.uniform(0.25 * size, 0.75 * size, 2).tolist() + [width * rng.uniform(3, 8)]
        image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)).astype(np.float32)
    return image


@pytest.mark.parametrize("model", ACQUISITIONS)
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_lr_content_sits_on_the_lr_grid(model: str, scale: int) -> None:
    """Phase correlation between HR and the bicubic upsampling of its LR: shift <= 0.05 px."""
    hr = blobs(32 * scale, width=scale / 2)
    lr = degrade(hr, scale, AcquisitionConfig(model=model))
    up = bicubic_runner(scale)(lr[None, None])[0, 0]
    shift = phase_cross_correlation(hr, up, upsample_factor=100, normalization=None)[0]
    assert np.abs(shift).max() <= 0.05, shift


def test_an_unshifted_kspace_crop_would_fail_the_alignment_check() -> None:
    """Without the half-pixel ramp the k-space LR is off by (s-1)/2 HR px: the check can fail."""
    hr = blobs()
    spectrum = np.fft.fftshift(np.fft.fft2(hr))
    crop = spectrum[32:96, 32:96] / 4
    naive = np.abs(np.fft.ifft2(np.fft.ifftshift(crop))).astype(np.float32)
    up = bicubic_runner(2)(naive[None, None])[0, 0]
    shift = phase_cross_correlation(hr, up, upsample_factor=100, normalization=None)[0]
    assert np.abs(shift).max() > 0.4


@pytest.mark.parametrize("model", ACQUISITIONS)
def test_a_constant_keeps_its_value(model: str) -> None:
    lr = degrade(np.full((2, 32, 48), 7.0, np.float32), 4, AcquisitionConfig(model=model))
    assert lr.shape == (2, 8, 12) and np.allclose(lr, 7.0, atol=1e-4)


def test_bicubic_model_equals_pytorch_antialiased_bicubic() -> None:
    hr = np.random.default_rng(1).random((3, 40, 24)).astype(np.float32)
    for scale in (2, 4, 8):
        expected = F.interpolate(torch.from_numpy(hr)[:, None], scale_factor=1 / scale, mode="bicubic", antialias=True)[:, 0]
        assert np.abs(degrade(hr, scale, AcquisitionConfig(model="bicubic")) - expected.numpy()).max() < 1e-5


def test_kspace_keeps_exactly_the_central_lr_spectrum() -> None:
    """The LR spectrum equals the HR spectrum's central crop (after undoing the centring ramp)."""
    hr = blobs(64)
    lr = kspace_image(hr, 2)
    lr_spec = np.fft.fftshift(np.fft.fft2(lr)) * 4
    k = np.arange(32) - 16
    ramp = np.exp(2j * np.pi * k * 0.5 / 64)
    hr_spec = np.fft.fftshift(np.fft.fft2(hr))[16:48, 16:48] * ramp[:, None] * ramp[None, :]
    assert np.allclose(lr_spec, hr_spec, atol=1e-3 * np.abs(hr_spec).max())


def test_windows_and_partial_fourier_blur_and_keep_units() -> None:
    hr = blobs()
    plain = degrade(hr, 2, AcquisitionConfig())
    for window in ("hamming", "tukey", "fermi"):
        filtered = degrade(hr, 2, AcquisitionConfig(window=window))
        assert abs(filtered.mean() - plain.mean()) < 0.02 * plain.mean()
        assert np.abs(np.diff(filtered, axis=1)).mean() < np.abs(np.diff(plain, axis=1)).mean()
    partial = degrade(hr, 2, AcquisitionConfig(partial_fourier=0.6))
    assert not np.allclose(partial, plain) and np.abs(partial - plain).max() < 0.5 * plain.max()


def test_noise_is_rician_at_the_requested_level() -> None:
    """Complex noise before the magnitude: std on bright tissue = noise x robust max; background is Rayleigh."""
    hr = np.zeros((128, 128), np.float32)
    hr[:, 64:] = 1.0
    lr = degrade(hr, 2, AcquisitionConfig(noise=0.05), np.random.default_rng(0))
    bright, dark = lr[8:-8, 36:-4], lr[8:-8, 4:28]
    assert bright.std() == pytest.approx(0.05, rel=0.1)
    assert dark.mean() == pytest.approx(0.05 * np.sqrt(np.pi / 2), rel=0.1) and dark.min() >= 0
    again = degrade(hr, 2, AcquisitionConfig(noise=0.05), np.random.default_rng(0))
    assert np.array_equal(lr, again)
    with pytest.raises(ValueError):
        degrade(hr, 2, AcquisitionConfig(noise=0.05))


def test_volume_degradation_geometry_matches_the_sr_grid(icbm_crop: sitk.Image) -> None:
    axes = plane_axes(icbm_crop, "axial")
    lr = degrade_volume(icbm_crop, 2, axes, AcquisitionConfig())
    assert [lr.GetSize()[a] * 2 for a in axes] == [icbm_crop.GetSize()[a] for a in axes]
    corner_hr = np.array(icbm_crop.TransformContinuousIndexToPhysicalPoint([-0.5] * 3))
    corner_lr = np.array(lr.TransformContinuousIndexToPhysicalPoint([-0.5] * 3))
    assert np.allclose(corner_hr, corner_lr, atol=1e-4)


def test_slice_profile_matches_a_direct_computation() -> None:
    """Box profile, non-integer ratio, gaps: each weight is the overlap of the box with the voxel."""
    n_hr, ratio, thickness = 20, 3.5, 2.5
    matrix = slice_profile_matrix(n_hr, 5, ratio, thickness)
    for j in range(5):
        centre = (j + 0.5) * ratio
        lo, hi = centre - thickness / 2, centre + thickness / 2
        direct = np.array([max(0.0, min(i + 1, hi) - max(i, lo)) for i in range(n_hr)]) / thickness
        assert np.allclose(matrix[j], direct, atol=1e-12)
    smooth = slice_profile_matrix(n_hr, 5, ratio, thickness, edge_sigma=0.5)
    assert np.allclose(smooth.sum(axis=1), 1.0)
    assert np.abs(smooth - matrix).max() < 0.2 and (smooth > 0).sum() > (matrix > 0).sum()
    # sampled numerically: box ⊗ gaussian integrated over each voxel
    x = np.linspace(0, n_hr, 200001)
    from scipy.special import ndtr

    profile = ndtr((x - (0.5 * ratio - thickness / 2)) / 0.5) - ndtr((x - (0.5 * ratio + thickness / 2)) / 0.5)
    voxel = np.minimum((x * 10000).astype(int) // 10000, n_hr - 1)
    numeric = np.bincount(voxel, weights=profile, minlength=n_hr)
    assert np.allclose(smooth[0], numeric / numeric.sum(), atol=1e-4)


def test_through_plane_degradation_shapes() -> None:
    volume = np.random.default_rng(0).random((10, 12, 21)).astype(np.float32)
    thick = degrade_through_plane(volume, axis=2, ratio=4.0, thickness=3.0)
    assert thick.shape == (10, 12, 5)
    assert np.allclose(thick[..., 0], volume[..., 0:4] @ slice_profile_matrix(21, 5, 4.0, 3.0)[0, 0:4])


def test_random_acquisitions_follow_the_mix_and_the_seed() -> None:
    mix = DegradationConfig(kspace_weight=2, bicubic_weight=1, gaussian_weight=1, windows=["none", "fermi"], noise_probability=1, noise=[0.01, 0.02])
    draws = [random_acquisition(np.random.default_rng([0, i]), mix) for i in range(400)]
    counts = {m: sum(d.model == m for d in draws) for m in ACQUISITIONS}
    assert 170 < counts["kspace"] < 230 and counts["bicubic"] > 70 and counts["gaussian"] > 70
    assert all(0.01 <= d.noise <= 0.02 and d.window in ("none", "fermi") for d in draws)
    assert random_acquisition(np.random.default_rng([0, 7]), mix) == draws[7]


def test_acquisition_parsing_refuses_bad_values() -> None:
    assert acquisition_from_dict({"model": "gaussian", "psf_fwhm": 1.5}).psf_fwhm == 1.5
    for bad in ({"model": "nearest"}, {"noise": float("nan")}, {"partial_fourier": 0.4}, {"window": 3}, {"extra": 1}, []):
        with pytest.raises(ConfigError):
            acquisition_from_dict(bad)


# The tests below were added after a mutation audit (2026-12-07): each fails on a plausible bug the suite missed.

def test_partial_fourier_drops_phase_encoding_lines_and_hamming_is_hamming():
    from fagan_engine.mri.forward_model import _window_1d, kspace_filter

    w = kspace_filter((16, 16), "none", 0.5, 0.75)
    assert (w[:4] == 0).all() and (w[4:] == 1).all()  # first in-plane axis only
    h = _window_1d(16, "hamming", 0.5)
    assert h[8] == pytest.approx(1.0) and h[0] == pytest.approx(0.08)


def test_noise_is_relative_to_the_995th_percentile_not_the_maximum():
    from fagan_engine.mri.forward_model import robust_max

    image = np.ones((1, 100, 100), np.float32)
    image[0, 0, :10] = 100.0  # 0.1 % outliers
    assert robust_max(image).ravel()[0] == pytest.approx(1.0)
