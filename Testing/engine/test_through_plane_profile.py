"""The slice thickness estimated from the scan (ESPRESO's idea): recovered on the template, used by the plan
only when clear, overridden by the argument."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from fagan_engine.mri.forward_model import degrade_through_plane
from fagan_engine.through_plane.plan import plan_through_plane
from fagan_engine.through_plane.profile_estimate import estimate_thickness


@pytest.fixture(scope="module")
def template() -> np.ndarray:
    from fagan_engine.mri.synthesis import icbm152_arrays

    return icbm152_arrays()[0].astype(np.float32)[40:168, 40:200, 30:166]


def _thick(template: np.ndarray, thickness: float, noise: float = 0.0) -> sitk.Image:
    """4 mm slices along z of the 1 mm template with a box of ``thickness`` mm."""
    image = sitk.GetImageFromArray(degrade_through_plane(template, 0, 4.0, thickness, noise=noise, rng=np.random.default_rng(0)))
    image.SetSpacing((1.0, 1.0, 4.0))
    return image


@pytest.mark.parametrize("thickness", [2.0, 3.0, 4.0, 6.0])
def test_thickness_is_recovered_on_the_template(template: np.ndarray, thickness: float) -> None:
    lr = sitk.GetArrayFromImage(_thick(template, thickness, noise=0.02))
    estimate = estimate_thickness(lr, 0, 4.0, (1.0, 1.0))
    assert estimate.thickness == pytest.approx(thickness, abs=0.5)


def test_plan_uses_a_clear_estimate_and_the_argument_overrides_it(template: np.ndarray) -> None:
    gap = plan_through_plane(_thick(template, 2.0))
    assert gap.thickness_source == "estimate" and gap.thickness == pytest.approx(2.0, abs=0.5)
    assert gap.estimated_thickness == gap.thickness and "estimated from the scan" in gap.describe()
    full = plan_through_plane(_thick(template, 4.0))  # close to the spacing: the spacing is kept, the estimate reported
    assert full.thickness_source == "spacing" and full.thickness == 4.0 and full.estimated_thickness == pytest.approx(4.0, abs=0.5)
    forced = plan_through_plane(_thick(template, 2.0), slice_thickness=3.0)
    assert (forced.thickness, forced.thickness_source, forced.estimated_thickness) == (3.0, "argument", None)


def test_white_noise_gives_no_clear_estimate() -> None:
    image = sitk.GetImageFromArray(np.random.default_rng(0).random((12, 64, 64)).astype(np.float32))
    image.SetSpacing((1.0, 1.0, 4.0))
    plan = plan_through_plane(image)
    assert plan.thickness_source == "spacing" and plan.thickness == 4.0


def test_a_signed_scan_gets_the_estimate_of_its_magnitude_without_numpy_noise(template: np.ndarray) -> None:
    """An offset (all-negative) volume selected no line above 0.1 x its 99.5th percentile: hundreds of raw numpy warnings
    and an estimate argmin'd from NaN misfits."""
    import warnings

    lr = sitk.GetArrayFromImage(_thick(template, 2.0, noise=0.02))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any numpy RuntimeWarning fails the test
        shifted = estimate_thickness(lr - 1.5 * float(lr.max()), 0, 4.0, (1.0, 1.0))
    assert np.isfinite(shifted.misfit) and shifted.thickness == pytest.approx(estimate_thickness(lr, 0, 4.0, (1.0, 1.0)).thickness)
