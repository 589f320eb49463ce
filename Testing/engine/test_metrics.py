"""PSNR/SSIM conventions, checked against scikit-image's reference implementations."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from fagan_engine.mri.metrics import psnr, ssim, volume_metrics


def test_psnr_matches_scikit_image_and_handles_identity() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((20, 20))
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
    assert psnr(a, b, 1.0) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), rel=1e-9)
    assert psnr(a, a) == float("inf")


def test_ssim_matches_scikit_image_gaussian_convention_per_slice() -> None:
    rng = np.random.default_rng(1)
    a = rng.random((3, 40, 40))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    ours = ssim(a, b, 1.0)
    ref = np.mean(
        [
            structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)[1].mean()
            for x, y in zip(a, b)
        ]
    )
    assert ours == pytest.approx(ref, abs=2e-3)
    # per pixel the whole maps agree (the border too); only skimage's returned mean leaves a 5-pixel border out
    from fagan_engine.mri.metrics import ssim_map

    for x, y in zip(a, b):
        theirs = structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)[1]
        assert np.abs(ssim_map(x, y, 1.0) - theirs).max() < 1e-5


def test_volume_metrics_mask_and_crop_change_the_numbers_as_documented() -> None:
    rng = np.random.default_rng(2)
    reference = np.zeros((4, 64, 64), dtype=np.float32)
    reference[:, 16:48, 16:48] = 1000 * rng.random((4, 32, 32))
    test = reference + rng.normal(0, 20, reference.shape).astype(np.float32)
    masked = volume_metrics(reference, test)
    assert masked["psnr"] < masked["psnr_all"]  # background inflates whole-volume PSNR
    assert 0 < masked["ssim"] <= 1
    cropped = volume_metrics(reference, test, crop=4)
    assert np.isfinite(cropped["psnr"])
    with pytest.raises(ValueError):
        volume_metrics(reference, test[:, :10])


# The tests below were added after a mutation audit (2026-12-07): each fails on a plausible bug the suite missed.

def test_volume_metrics_follow_the_documented_mask_and_crop():
    from scipy import ndimage

    from fagan_engine.mri.metrics import psnr, ssim_map, volume_metrics
    from fagan_engine.mri.normalization import IntensityNormalizer
    from fagan_engine.util.config import NormalizationConfig

    rng = np.random.default_rng(3)
    reference = np.zeros((3, 64, 64), np.float32)
    yy, xx = np.mgrid[0:64, 0:64]
    reference[:] = (1000 * np.exp(-((yy - 20) ** 2 + (xx - 40) ** 2) / 300.0)).astype(np.float32)
    test = reference + rng.normal(0, 15, reference.shape).astype(np.float32)
    n = IntensityNormalizer.fit(reference, NormalizationConfig())
    ref, out = np.clip(n.forward(reference), 0, 1), np.clip(n.forward(test), 0, 1)
    ref, out = ref[:, 2:-2, 2:-2], out[:, 2:-2, 2:-2]
    mask = ndimage.binary_dilation(ref > 0.05, iterations=2)
    got = volume_metrics(reference, test, crop=2)
    assert got["psnr"] == pytest.approx(psnr(ref, out, 1.0, mask), rel=1e-9)
    assert got["ssim"] == pytest.approx(float(ssim_map(ref, out, 1.0)[mask].mean()), rel=1e-9)
    assert got["psnr_all"] == pytest.approx(psnr(ref, out, 1.0, None), rel=1e-9)


def test_psnr_of_arrays_of_other_shapes_is_refused_not_broadcast() -> None:
    """A (32, 32) slice against a (4, 32, 32) stack read 9.11 dB where slice 0 alone is 40 dB."""
    import numpy as np
    import pytest

    from fagan_engine.mri.metrics import psnr

    with pytest.raises(ValueError, match="one shape"):
        psnr(np.zeros((32, 32)), np.zeros((4, 32, 32)))
    with pytest.raises(ValueError, match="mask"):
        psnr(np.zeros((4, 4)), np.ones((4, 4)), mask=np.ones((2, 2), bool))
