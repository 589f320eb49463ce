"""Data-consistency maps and hard consistency: near zero for consistent SR, planted artefacts found,
enforce reproduces the input under every acquisition, exact geometry on oblique anisotropic volumes."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from engine_helpers import oblique_volume

from fagan_engine.io.geometry import physical_corners
from fagan_engine.mri import forward_model
from fagan_engine.mri.forward_model import (
    AcquisitionConfig,
    apply_along_axis,
    apply_separable,
    degrade,
    degrade_volume,
    kspace_image,
    replace_lr_spectrum,
    separable_matrices,
)
from fagan_engine.mri.noise_estimate import estimate_noise_sigma
from fagan_engine.pipeline.report import super_resolve
from fagan_engine.through_plane.plan import ThroughPlanePlan, slice_matrix
from fagan_engine.trust.consistency import (
    consistency_maps,
    enforce_consistency,
    enforce_through_plane,
    redegrade,
    relative_rms,
    through_plane_consistency,
)
from fagan_engine.util.config import ACQUISITIONS

AXES = (0, 1)


def blob_volume(size: int = 64, slices: int = 3, seed: int = 0) -> sitk.Image:
    """Smooth random blobs on a constant background: band-limited, no sharp edges."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    array = np.full((slices, size, size), 10.0, np.float32)
    for z in range(slices):
        for _ in range(10):
            cy, cx = rng.uniform(0.2 * size, 0.8 * size, 2)
            width = rng.uniform(4, 8)
            array[z] += 100 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width * width)).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 3.0))
    return image


def test_bicubic_sr_is_consistent_with_the_bicubic_forward_model() -> None:
    lr = degrade_volume(blob_volume(), 2, AXES, AcquisitionConfig(model="bicubic"))
    sr = super_resolve(lr, 2, method="bicubic", plane=AXES)
    maps = consistency_maps(lr, sr, 2, AXES, "bicubic")
    assert maps.summary["relative_rms_residual"] < 5e-3  # interpolation then AA-bicubic decimation: not exactly identity
    shifted = sitk.GetImageFromArray(np.roll(sitk.GetArrayFromImage(sr), 2, axis=2))
    shifted.CopyInformation(sr)
    assert consistency_maps(lr, shifted, 2, AXES, "bicubic").summary["relative_rms_residual"] > 10 * maps.summary["relative_rms_residual"]


@pytest.mark.parametrize("acquisition", ACQUISITIONS)
def test_a_planted_bright_blob_shows_up_at_its_location(acquisition: str) -> None:
    lr = degrade_volume(blob_volume(), 2, AXES, AcquisitionConfig(model=acquisition))
    sr = super_resolve(lr, 2, method="bicubic", plane=AXES)
    array = sitk.GetArrayFromImage(sr)
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    array[1] += 80 * np.exp(-((yy - 21) ** 2 + (xx - 45) ** 2) / (2 * 2.0**2)).astype(np.float32)  # the centre of LR (1, 10, 22)
    planted = sitk.GetImageFromArray(array)
    planted.CopyInformation(sr)
    maps = consistency_maps(lr, planted, 2, AXES, acquisition)
    on_sr = np.abs(sitk.GetArrayFromImage(maps.residual_sr))
    assert np.unravel_index(on_sr.argmax(), on_sr.shape)[0] == 1
    assert np.hypot(*(np.array(np.unravel_index(on_sr[1].argmax(), on_sr[1].shape)) - (20.5, 44.5))) <= 1
    on_lr = np.abs(sitk.GetArrayFromImage(maps.residual_lr))
    assert np.unravel_index(on_lr.argmax(), on_lr.shape) == (1, 10, 22)
    assert sitk.GetArrayFromImage(maps.residual_lr)[1, 10, 22] > 0  # brighter than the data allow: positive
    assert maps.summary["fraction_above_3sigma"] > 0


def test_residual_is_within_noise_for_the_true_image() -> None:
    """Re-degrading the true HR of a noisy k-space input leaves residuals at the noise level."""
    hr = blob_volume(slices=4)
    lr = degrade_volume(hr, 2, AXES, AcquisitionConfig(noise=0.02), np.random.default_rng(1))
    summary = consistency_maps(lr, hr, 2, AXES, "kspace").summary
    sigma = 0.02 * float(np.percentile(sitk.GetArrayFromImage(hr), 99.5))
    assert summary["noise_sigma"] == pytest.approx(sigma, rel=0.2)
    assert summary["fraction_above_3sigma"] < 0.01


@pytest.mark.parametrize("acquisition", ACQUISITIONS)
@pytest.mark.parametrize("scale", [2, 4])
def test_enforce_reproduces_the_input(acquisition: str, scale: int, icbm_crop: sitk.Image) -> None:
    """Real anatomy, a noisy (Rician magnitude) input and an inconsistent SR: re-degraded enforced result = input."""
    hr = icbm_crop[:, : 56 - 56 % (2 * scale)]
    noisy = AcquisitionConfig(model=acquisition, noise=0.02)
    lr = degrade_volume(hr, scale, AXES, noisy, np.random.default_rng(0))
    sr = super_resolve(lr, scale, method="lanczos", plane=AXES)
    data = sitk.GetArrayFromImage(lr)
    assert relative_rms(redegrade(sr, lr, scale, AXES, acquisition), data) > 1e-2
    enforced = enforce_consistency(lr, sr, scale, AXES, acquisition)
    assert relative_rms(redegrade(enforced, lr, scale, AXES, acquisition), data) <= 1e-3
    again = enforce_consistency(lr, enforced, scale, AXES, acquisition)  # a projection: idempotent
    assert np.allclose(sitk.GetArrayFromImage(again), sitk.GetArrayFromImage(enforced), atol=1e-3)
    assert enforced.GetOrigin() == sr.GetOrigin() and enforced.GetSpacing() == sr.GetSpacing()


def test_kspace_enforcement_keeps_the_image_real_and_exact_for_odd_and_even_sizes() -> None:
    rng = np.random.default_rng(3)
    for height, width, scale in [(32, 48, 2), (30, 42, 2), (36, 20, 4), (24, 24, 8)]:
        hr, lr = rng.random((2, height, width)), rng.random((2, height // scale, width // scale))
        out = replace_lr_spectrum(hr, lr, scale)
        assert out.dtype == np.float64
        assert np.abs(kspace_image(out, scale) - lr).max() < 1e-6
        assert np.abs(degrade(out, scale, AcquisitionConfig()) - lr).max() < 1e-6


@pytest.mark.parametrize("model", ["bicubic", "gaussian"])
def test_separable_matrices_are_the_forward_model(model: str) -> None:
    hr = np.random.default_rng(0).random((2, 24, 32)).astype(np.float32)
    acquisition = AcquisitionConfig(model=model, psf_fwhm=1.3)
    rows, cols = separable_matrices(24, 32, 4, acquisition)
    assert np.allclose(apply_separable(hr, rows, cols), degrade(hr, 4, acquisition), atol=1e-5)


@pytest.mark.parametrize("scale", [2, 4])
def test_maps_have_the_exact_geometry_of_their_grids(scale: int) -> None:
    image = oblique_volume(size=(20, 16, 5), spacing=(0.9, 1.3, 3.0))
    sr = super_resolve(image, scale, method="bicubic")
    maps = consistency_maps(image, sr, scale, AXES, "kspace")
    for residual, grid in ((maps.residual_lr, image), (maps.residual_sr, sr)):
        assert residual.GetSize() == grid.GetSize()
        assert np.allclose(physical_corners(residual), physical_corners(grid), rtol=0, atol=1e-4)
        assert residual.GetDirection() == grid.GetDirection()
    assert np.allclose(physical_corners(maps.residual_sr), physical_corners(image), rtol=0, atol=1e-4)
    # nearest neighbour: every SR voxel shows the residual of the input voxel that contains it
    lr_values = sitk.GetArrayFromImage(maps.residual_lr)
    sr_values = sitk.GetArrayFromImage(maps.residual_sr)
    assert np.array_equal(sr_values[:, ::scale, ::scale], lr_values)
    assert np.array_equal(sr_values[:, scale - 1 :: scale, scale - 1 :: scale], lr_values)


def through_plane_case(seed: int = 0):
    """A smooth HR volume with 1 mm slices along sitk axis 2, its 3 mm / 2.5 mm-thick slices, the plan."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[0:24, 0:16, 0:18] + 0.5
    hr = 50 + 40 * np.sin(zz / 3.1 + rng.uniform(0, 3)) * np.cos(yy / 4.0) + 5 * np.cos(xx / 2.5)
    plan = ThroughPlanePlan(axis=2, n_in=8, n_out=24, input_spacing=3.0, output_spacing=1.0, thickness=2.5, edge_sigma=0.3)
    lr = apply_along_axis(hr, slice_matrix(plan), 0)
    sr_image = sitk.GetImageFromArray(hr.astype(np.float32))
    lr_image = sitk.GetImageFromArray(lr.astype(np.float32))
    direction = oblique_volume().GetDirection()
    for image, step in ((sr_image, 1.0), (lr_image, 3.0)):
        image.SetSpacing((0.7, 0.9, step))
        image.SetDirection(direction)
    lr_image.SetOrigin((3.0, -2.0, 5.0))
    matrix = np.asarray(direction).reshape(3, 3)
    sr_image.SetOrigin(tuple(np.array(lr_image.GetOrigin()) + matrix @ np.array([0.0, 0.0, 0.5 * (1.0 - 3.0)])))
    return lr_image, sr_image, plan


def test_through_plane_maps_geometry_blob_and_enforce() -> None:
    lr, sr, plan = through_plane_case()
    assert np.allclose(physical_corners(lr), physical_corners(sr), rtol=0, atol=1e-4)
    maps = through_plane_consistency(lr, sr, plan)
    assert maps.summary["relative_rms_residual"] < 1e-6  # the true volume is consistent
    for residual, grid in ((maps.residual_lr, lr), (maps.residual_sr, sr)):
        assert np.allclose(physical_corners(residual), physical_corners(grid), rtol=0, atol=1e-4)
    planted = sitk.GetArrayFromImage(sr)
    planted[13, 8, 9] += 200.0  # HR slice 13 lies in input slice 4 (13.5 / 3)
    planted_image = sitk.GetImageFromArray(planted)
    planted_image.CopyInformation(sr)
    residual = np.abs(sitk.GetArrayFromImage(through_plane_consistency(lr, planted_image, plan).residual_lr))
    assert np.unravel_index(residual.argmax(), residual.shape) == (4, 8, 9)
    enforced = enforce_through_plane(lr, planted_image, plan)
    again = through_plane_consistency(lr, enforced, plan)
    assert again.summary["relative_rms_residual"] <= 1e-5


def test_noise_estimator_on_synthetic_rician_noise() -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:128, 0:128]
    phantom = np.where(((yy - 64) / 50.0) ** 2 + ((xx - 64) / 40.0) ** 2 < 1, 100 + 30 * np.sin(xx / 9.0) * np.cos(yy / 7.0), 0.0)
    phantom[(yy - 64) ** 2 + (xx - 50) ** 2 < 100] = 180  # a sharp-edged insert
    for sigma in (1.0, 4.0, 12.0):
        noise = rng.standard_normal((2, 4, 128, 128))
        magnitude = np.abs(phantom + sigma * (noise[0] + 1j * noise[1]))
        assert estimate_noise_sigma(magnitude) == pytest.approx(sigma, rel=0.1)
    assert estimate_noise_sigma(np.repeat(phantom[None], 2, axis=0)) < 0.5  # noise-free: a small floor
    assert estimate_noise_sigma(np.zeros((1, 8, 8))) == 0.0


@pytest.mark.parametrize("acquisition", ACQUISITIONS)
def test_a_magnitude_input_loses_the_ringing_on_its_dark_background(acquisition: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sharp disc on a black background, projected from a blank guess: the alternating projections remove part of the
    negative ringing one projection leaves and come closer to the truth, and the result still reproduces the input; a
    signed input gets one projection."""
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    hr = ((yy - 30) ** 2 + (xx - 34) ** 2 < 14**2).astype(np.float64)
    lr = degrade(hr, 2, AcquisitionConfig(model=acquisition))
    guess = np.zeros_like(hr)
    out = forward_model.project_onto_data(guess, lr, 2, acquisition)
    monkeypatch.setattr(forward_model, "NONNEGATIVE_ITERATIONS", 0)
    once = forward_model.project_onto_data(guess, lr, 2, acquisition)
    assert np.abs(degrade(out, 2, AcquisitionConfig(model=acquisition)) - lr).max() < 1e-5
    assert np.minimum(out, 0).sum() > 0.7 * np.minimum(once, 0).sum()  # at least 30 % less negative mass
    assert np.sqrt(np.mean((out - hr) ** 2)) < 0.95 * np.sqrt(np.mean((once - hr) ** 2))  # and closer to the truth
    monkeypatch.undo()
    signed = lr - lr.mean()
    if acquisition == "kspace":
        expected = forward_model.replace_lr_spectrum(guess, signed, 2)
    else:
        rows, cols = separable_matrices(64, 64, 2, AcquisitionConfig(model=acquisition))
        expected = forward_model.apply_separable(signed, np.linalg.pinv(rows), np.linalg.pinv(cols))
    assert np.allclose(forward_model.project_onto_data(guess, signed, 2, acquisition), expected, atol=1e-12)


def test_a_true_magnitude_image_is_nearly_its_own_kspace_projection() -> None:
    """k-space measures a magnitude: the ringing's negative lobes arrive rectified. Projecting the truth onto them as
    they are moves it (a positive haze on the background); with the signs of its own LR it stays close."""
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    hr = 0.8 * ((yy - 30) ** 2 + (xx - 34) ** 2 < 14**2) + 0.2 * ((yy - 30) ** 2 + (xx - 34) ** 2 < 5**2)
    lr = degrade(hr, 2, AcquisitionConfig())
    signed = forward_model.project_onto_data(hr, lr, 2, "kspace")
    as_measured = replace_lr_spectrum(hr, lr, 2)
    assert np.sqrt(np.mean((signed - hr) ** 2)) < 0.7 * np.sqrt(np.mean((as_measured - hr) ** 2))  # 0.013 against 0.023
    assert np.abs(degrade(signed, 2, AcquisitionConfig()) - lr).max() < 1e-6


def test_the_magnitude_handling_is_decided_per_slice_and_keeps_negative_measurements() -> None:
    """Projecting a slice alone or batched with a brighter one gives the same result, and a true image whose slightly
    negative background is measured as such stays its own projection (no sign flipped on a negative measurement)."""
    rng = np.random.default_rng(5)
    dim = rng.random((32, 32)) - 0.08
    bright = rng.random((32, 32)) * 10
    for acquisition in ACQUISITIONS:
        lr = np.stack([degrade(image, 2, AcquisitionConfig(model=acquisition)) for image in (dim, bright)])
        guess = rng.random((2, 32, 32))
        together = forward_model.project_onto_data(guess, lr, 2, acquisition)
        alone = forward_model.project_onto_data(guess[:1], lr[:1], 2, acquisition)
        assert np.allclose(together[:1], alone, atol=1e-9), acquisition
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    truth = np.exp(-((yy - 32) ** 2 + (xx - 32) ** 2) / 72.0) - 0.02  # a smooth blob on a background just below 0
    lr = np.real(kspace_image(truth, 2)).astype(np.float64)
    assert forward_model.magnitude_slices(lr[None])[0]
    monkey = forward_model.NONNEGATIVE_ITERATIONS
    try:
        forward_model.NONNEGATIVE_ITERATIONS = 0
        assert np.abs(forward_model.project_onto_data(truth, lr, 2, "kspace") - truth).max() < 1e-3
    finally:
        forward_model.NONNEGATIVE_ITERATIONS = monkey


def test_the_map_of_a_signed_input_shows_only_what_the_network_changed(icbm_crop: sitk.Image) -> None:
    """A z-scored input (k-space) was re-degraded as a magnitude while the projection treats it as signed: the map read
    about 2|y| wherever the input was negative, and the summary showed disagreement that was not there."""
    magnitude = forward_model.degrade_volume(icbm_crop, 2, AXES, forward_model.AcquisitionConfig())
    array = sitk.GetArrayFromImage(magnitude)
    lr = sitk.GetImageFromArray((array - array.mean()) / array.std())
    lr.CopyInformation(magnitude)
    # a "network" that agrees with the data everywhere: the projection of Lanczos onto the (signed, linear) data
    agreeing = enforce_consistency(lr, super_resolve(lr, 2, method="lanczos", plane=AXES), 2, AXES, "kspace")
    maps = consistency_maps(lr, agreeing, 2, AXES, "kspace")
    data = sitk.GetArrayFromImage(lr)
    assert (data < -0.5).any()
    assert np.abs(sitk.GetArrayFromImage(maps.residual_lr)).max() < 1e-3 * float(np.ptp(data))
    assert maps.summary["relative_rms_residual"] < 1e-3


def test_each_sr_slice_of_the_through_plane_map_shows_the_input_slice_that_contains_it() -> None:
    """Mutation audit: rounding instead of flooring the containing slice moved the SR-grid map by up to one slice
    unnoticed. 4 input slices of 5 mm -> 10 of 2 mm: SR slice j lies in input slice floor((j + 0.5) * 0.4)."""
    from fagan_engine.through_plane.plan import plan_through_plane

    lr = sitk.GetImageFromArray(np.random.default_rng(0).random((4, 12, 12)).astype(np.float32))
    lr.SetSpacing((1.0, 1.0, 5.0))
    plan = plan_through_plane(lr, target_spacing=2.0, slice_thickness=5.0)
    assert (plan.n_in, plan.n_out) == (4, 10)
    sr = sitk.GetImageFromArray(np.random.default_rng(1).random((10, 12, 12)).astype(np.float32))
    maps = through_plane_consistency(lr, sr, plan)
    on_lr, on_sr = sitk.GetArrayFromImage(maps.residual_lr), sitk.GetArrayFromImage(maps.residual_sr)
    for j in range(10):
        assert np.array_equal(on_sr[j], on_lr[int(np.floor((j + 0.5) * 0.4))]), j
