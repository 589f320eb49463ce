"""Multi-stack reconstruction on stacks simulated from an isotropic phantom: motion, quality against the
baselines, exact oblique geometry, the report, and one-line refusals."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import pytest
import SimpleITK as sitk

from fagan_engine.io.geometry import SRGeometry, direction_matrix
from fagan_engine.models.checkpoint import read_through_plane
from fagan_engine.mri.metrics import psnr
from fagan_engine.through_plane.plan import plan_through_plane
from fagan_engine.through_plane.run import super_resolve_through_plane
from fagan_engine.through_plane.stack_geometry import corners, rotation_angle_degrees, transform_matrix
from fagan_engine.through_plane.stack_simulation import motion, orientation, phantom, simulate_stack
from fagan_engine.through_plane.stacks import StackReport, average_stacks, reconstruct_stacks
from fagan_engine.util.errors import InputError

PLANES = ("axial", "coronal", "sagittal")
MOTIONS = (((0, 0, 0), (0, 0, 0)), ((2.0, -1.5, 1.0), (1.5, -2.0, 1.0)), ((-1.0, 2.0, -2.0), (-1.0, 1.5, 2.5)))


def _centre(image: sitk.Image) -> np.ndarray:
    return corners(image).mean(axis=0)


def _score(truth: sitk.Image, out: sitk.Image, array: np.ndarray) -> float:
    """PSNR of ``array`` (on ``out``'s grid) against ``truth`` sampled there (the protocol's normalisation and mask)."""
    reference = sitk.GetArrayFromImage(sitk.Resample(truth, out, sitk.Transform(), sitk.sitkBSpline, 0.0, sitk.sitkFloat32))
    scale = float(np.percentile(reference, 99.9))
    return psnr(reference / scale, array / scale, 1.0, reference / scale > 0.05)


@pytest.fixture(scope="module")
def moved() -> Tuple[sitk.Image, List[sitk.Image], List[sitk.Euler3DTransform], sitk.Image, StackReport]:
    """Three orthogonal 4 mm stacks of a 64 mm phantom, two of them moved, and their reconstruction."""
    volume = phantom(64, seed=0)
    truths = [motion(r, t, _centre(volume)) for r, t in MOTIONS]
    stacks = [simulate_stack(volume, orientation(p), 4.0, 4.0, m, noise=0.01, seed=i) for i, (p, m) in enumerate(zip(PLANES, truths))]
    out, report = reconstruct_stacks(stacks)
    return volume, stacks, truths, out, report


def test_motion_is_recovered_within_half_a_millimetre_and_degree(moved) -> None:
    volume, _, truths, _, report = moved
    points = _centre(volume) + np.random.default_rng(0).uniform(-25, 25, (200, 3))
    for truth, estimate in zip(truths, report.transforms):
        (r_true, o_true), (r_est, o_est) = transform_matrix(truth), transform_matrix(estimate)
        assert rotation_angle_degrees(r_est @ r_true.T) < 0.5
        assert np.linalg.norm(points @ r_est.T + o_est - (points @ r_true.T + o_true), axis=1).max() < 0.5


def test_reconstruction_beats_best_single_stack_and_register_and_average(moved) -> None:
    volume, stacks, _, out, report = moved
    recon = _score(volume, out, sitk.GetArrayFromImage(out))
    grid = SRGeometry(out.GetSize(), out.GetSpacing(), out.GetOrigin(), out.GetDirection())
    averaged = _score(volume, out, average_stacks(stacks, report.transforms, grid, report.intensity_scales))
    singles = []
    for stack, transform in zip(stacks, report.transforms):
        through = super_resolve_through_plane(stack, iterations=0, device="cpu")  # the pretrained network on one stack
        singles.append(_score(volume, out, sitk.GetArrayFromImage(sitk.Resample(through, out, transform.GetInverse(), sitk.sitkBSpline))))
    assert recon >= averaged + 1.0, (recon, averaged)
    assert recon >= max(singles) + 2.0, (recon, singles)


def test_the_fa_gan_prior_improves_the_least_squares_reconstruction(moved) -> None:
    volume, stacks, _, out, _ = moved
    prior, report = reconstruct_stacks(stacks, network_iterations=0)
    assert report.network_iterations == 0
    start = read_through_plane(ratio=4.0).identity()  # 4 mm slices to 1 mm: the start for ratios above 3
    assert [entry["network_start"] for entry in report.stacks] == [{"name": start["name"], "sha256": start["sha256"]}] * 3
    assert all("network_start" not in entry for entry in moved[4].stacks)  # no prior, no start named
    assert _score(volume, prior, sitk.GetArrayFromImage(prior)) >= _score(volume, out, sitk.GetArrayFromImage(out)) + 0.5


def test_the_prior_fits_each_stack_with_the_slice_thickness_the_data_terms_use(moved, monkeypatch) -> None:
    """The normalised stacks handed to the prior carry no header, so the thickness travels with them: the argument's
    (here), else the header's or the scan's estimate, never a second guess."""
    import fagan_engine.through_plane.stacks as stacks_module

    thicknesses = []

    def planned(image, target=None, thickness=None, *args):
        thicknesses.append(thickness)
        return plan_through_plane(image, target, thickness, *args)

    monkeypatch.setattr(stacks_module, "plan_through_plane", planned)
    _, report = reconstruct_stacks(moved[1][:2], slice_thickness=[3.0, 4.5], network_iterations=0, refinements=0)
    assert thicknesses == [3.0, 4.5] == [entry["thickness"] for entry in report.stacks]


def test_report_and_consistency_maps(moved) -> None:
    _, stacks, _, out, report = moved
    assert out.GetPixelID() == sitk.sitkFloat32 and out.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
    assert len(report.stacks) == len(report.consistency_maps) == 3
    for stack, entry, consistency in zip(stacks, report.stacks, report.consistency_maps):
        assert consistency.GetSize() == stack.GetSize() and consistency.GetOrigin() == stack.GetOrigin()
        assert entry["thickness_source"] == "spacing" and entry["slices"] == 16
        assert 0 < entry["residual_rms"] < 0.05 and entry["nmi"] > 0.1
        assert entry["intensity_scale"] == pytest.approx(1.0, abs=0.05)
    assert report.stacks[0]["rotation_degrees"] == 0.0
    assert 1.5 < report.stacks[1]["rotation_degrees"] < 4.0
    assert report.smoothness > 0 and len(report.describe()) == 3


def test_intensity_differences_are_normalised_and_reported() -> None:
    volume = phantom(40, seed=3)
    stacks = [simulate_stack(volume, orientation(p), 4.0, 4.0, sitk.Euler3DTransform()) for p in PLANES[:2]]
    out, report = reconstruct_stacks([stacks[0], stacks[1] * 1.6])
    plain, plain_report = reconstruct_stacks(stacks)
    assert report.intensity_scales[1] / plain_report.intensity_scales[1] == pytest.approx(1 / 1.6, rel=0.01)
    assert _score(volume, out, sitk.GetArrayFromImage(out)) == pytest.approx(_score(volume, plain, sitk.GetArrayFromImage(plain)), abs=0.3)
    # the maps and residuals are in each stack's own units (they were in the solver's normalised units: 224x too small on a
    # stack reaching 230)
    _, large = reconstruct_stacks([s * 100.0 for s in stacks])
    for index in range(2):
        assert large.stacks[index]["residual_rms"] == pytest.approx(100 * plain_report.stacks[index]["residual_rms"], rel=0.05)
        maxima = [float(sitk.GetArrayViewFromImage(r.consistency_maps[index]).max()) for r in (large, plain_report)]
        assert maxima[0] == pytest.approx(100 * maxima[1], rel=0.05)
    assert report.stacks[1]["residual_rms"] == pytest.approx(1.6 * plain_report.stacks[1]["residual_rms"], rel=0.15)


@pytest.mark.parametrize("reference", [0, 2])
def test_oblique_stacks_geometry_is_exact(reference: int) -> None:
    """The output is the reference's orientation, inside every stack, and the object lands where it is."""
    volume = phantom(48, seed=1)
    tilts = (("axial", 20.0), ("coronal", -15.0), ("sagittal", 10.0))
    stacks = [simulate_stack(volume, orientation(p, t), 4.0, 4.0, sitk.Euler3DTransform()) for p, t in tilts]
    out, report = reconstruct_stacks(stacks, reference=reference, refinements=1)
    assert np.allclose(direction_matrix(out), direction_matrix(stacks[reference]), atol=1e-9)
    assert report.reference == reference and report.stacks[reference]["rotation_degrees"] == 0.0
    for stack in stacks:  # every output corner lies inside every stack's voxel box
        local = (corners(out) - np.asarray(stack.GetOrigin())) @ direction_matrix(stack) / np.asarray(stack.GetSpacing())
        assert np.all(local >= -0.5 - 1e-6) and np.all(local <= np.asarray(stack.GetSize()) - 0.5 + 1e-6)
    array = sitk.GetArrayFromImage(out)
    placed = _score(volume, out, array)
    shifted = sitk.Image(out)
    for axis in range(3):
        offset = np.zeros(3)
        offset[axis] = 1.0
        shifted.SetOrigin(tuple(np.asarray(out.GetOrigin()) + offset))
        assert placed > _score(volume, shifted, array) + 3.0, axis
    assert placed > 30.0


def _pair(seed: int = 0) -> List[sitk.Image]:
    volume = phantom(32, seed=seed)
    return [simulate_stack(volume, orientation(p), 4.0, 4.0, sitk.Euler3DTransform()) for p in PLANES[:2]]


def test_refusals_are_one_line() -> None:
    first, second = _pair()
    far = sitk.Image(second)
    far.SetOrigin(tuple(np.asarray(second.GetOrigin()) + 500.0))
    other = _pair(seed=1)[1]
    cases = [
        ([first], {}, "at least 2 stacks"),
        ([first, sitk.Image([8, 8, 8, 2], sitk.sitkFloat32)], {}, "stack 2: input is 4D"),
        ([first, far], {}, "do not overlap"),
        ([first, other], {}, "does not match the reference"),
        ([first, second], {"target_spacing": 2.0}, "coarser than the stacks' finest in-plane spacing"),
        ([first, second], {"slice_thickness": [4.0]}, "one per stack"),
        ([first, second], {"reference": 2}, "reference must be a stack index from 0 to 1"),
        ([first, second], {"network_iterations": 0, "network_ensemble": 8}, "1, 2 or 4 flipped copies"),
    ]
    for stacks, kwargs, message in cases:
        with pytest.raises(InputError, match=message) as error:
            reconstruct_stacks(stacks, **kwargs)
        assert "\n" not in str(error.value)


def _no_work(monkeypatch) -> None:
    """Make the registration (the first work after the checks) fail the test."""
    import fagan_engine.through_plane.stacks as stacks_module

    monkeypatch.setattr(stacks_module, "register", lambda *a, **k: pytest.fail("the registration began before the refusal"))


def test_bad_arguments_are_refused_in_one_line_before_any_work(monkeypatch) -> None:
    """Each was an AttributeError, TypeError, ValueError, UnboundLocalError or ITK RuntimeError, or was accepted (a NaN
    volume from smoothness nan, a GPU request ignored)."""
    first, second = _pair()
    zero = sitk.Image(first.GetSize(), sitk.sitkFloat32)
    zero.CopyInformation(first)
    pair = [first, second]
    cases = [
        (first, {}, "stacks must be a list of SimpleITK images, got Image"),
        (["a.nii.gz", "b.nii.gz"], {}, "stack 1: the input must be a SimpleITK image .*got str"),
        ([np.zeros((8, 32, 32)), np.zeros((32, 8, 32))], {}, "stack 1: the input must be a SimpleITK image .*got ndarray"),
        ([first, None], {}, "stack 2: the input must be a SimpleITK image .*got NoneType"),
        ([zero, second], {}, "stack 1 holds no signal: every voxel is 0"),
        (pair, {"reference": 1.5}, "reference must be a stack index from 0 to 1, got 1.5"),
        (pair, {"reference": "0"}, "reference must be a stack index from 0 to 1, got '0'"),
        (pair, {"slice_thickness": "3"}, "slice_thickness must be a number of mm or a list of one per stack, got str"),
        (pair, {"slice_thickness": np.array([3.0, 3.0])}, "slice_thickness must be a number of mm or a list"),
        (pair, {"slice_thickness": [3.0, "3"]}, "slice_thickness must be a finite number"),
        (pair, {"target_spacing": "abc"}, "target_spacing must be a finite number"),
        (pair, {"iterations": 1.5}, "iterations must be a whole number >= 0"),
        (pair, {"refinements": -1}, "refinements must be a whole number >= 0"),
        (pair, {"seed": "x"}, "seed must be a whole number >= 0"),
        (pair, {"progress": "x"}, "progress must be a function"),
        (pair, {"smoothness": float("nan")}, "smoothness must be a finite number >= 0"),
        (pair, {"smoothness": float("inf")}, "smoothness must be a finite number >= 0"),
        (pair, {"smoothness": -100.0}, "smoothness must be a finite number >= 0"),
        (pair, {"device": "gpu"}, "device must be one of auto, cpu, cuda"),
        (pair, {"device": "cuda"}, "device 'cuda' is for the FA-GAN prior's networks"),
        (pair, {"network_ensemble": 2}, "network_ensemble is for the FA-GAN prior's networks"),
        (pair, {"nan_policy": "ignore"}, "nan policy must be one of error, zero"),
    ]
    _no_work(monkeypatch)
    for stacks, kwargs, message in cases:
        with pytest.raises(InputError, match=message) as refusal:
            reconstruct_stacks(stacks, **kwargs)
        assert "\n" not in str(refusal.value), kwargs


def test_an_output_grid_beyond_the_memory_is_refused_before_the_registration(monkeypatch) -> None:
    """target_spacing 1e-4 mm reached ITK's "Failed to allocate memory" (now refused as finer than the stacks resolve;
    a grid the stacks do resolve but the memory cannot hold is refused by the memory check)."""
    import fagan_engine.inference.memory_check as memory_check

    monkeypatch.setattr(memory_check, "available_bytes", lambda: 2**16)
    _no_work(monkeypatch)
    with pytest.raises(InputError, match=r"through-plane result \(\d+ slices at 0.2 mm\).*choose a larger"):
        reconstruct_stacks(_pair(), target_spacing=0.2)
    with pytest.raises(InputError, match="more than 8 times finer"):
        reconstruct_stacks(_pair(), target_spacing=1e-4)


def test_non_finite_voxels_follow_the_nan_policy() -> None:
    """The refusal's advice (the 'zero' NaN policy) names an option reconstruct_stacks takes."""
    first, second = _pair()
    values = sitk.GetArrayFromImage(first)
    values[0, 0, 0] = np.nan
    holed = sitk.GetImageFromArray(values)
    holed.CopyInformation(first)
    with pytest.raises(InputError, match="stack 1: input has 1 non-finite .* 'zero' NaN policy"):
        reconstruct_stacks([holed, second])
    out, _ = reconstruct_stacks([holed, second], iterations=1, refinements=0, nan_policy="zero")
    assert np.isfinite(sitk.GetArrayFromImage(out)).all()


def test_the_intensity_factor_of_signed_stacks_does_not_depend_on_their_offset() -> None:
    """A ratio of foreground means (magnitude data) gave 0.94 between two slicings of one phantom shifted by -50."""
    from fagan_engine.through_plane.stacks import intensity_gain

    rng = np.random.default_rng(0)
    values = rng.random(4000) * 100
    noisy = values + rng.normal(0, 1, values.size)
    assert intensity_gain(values, 1.5 * values) == pytest.approx(1.5, rel=1e-6)  # magnitude: the ratio of means
    for offset in (-50.0, -30.0):  # signed: least squares through the origin, 1 for the same data
        assert intensity_gain(values + offset, noisy + offset) == pytest.approx(1.0, abs=0.01)



@pytest.mark.parametrize("factor", [0.05, 0.2, 5.0, 12.0, 1000.0])
def test_the_intensity_factor_holds_for_a_stack_much_dimmer_or_brighter_than_the_reference(factor: float) -> None:
    """The foreground was above 0.1 of the reference's level in both: a stack 10 times dimmer had none and got 1.0
    (a wrong output, exit 0), one 5 times brighter a biased 4.70 for 5."""
    from fagan_engine.through_plane.stacks import intensity_gain

    rng = np.random.default_rng(1)
    reference = np.concatenate([rng.random(3000) * 0.05, 0.3 + rng.random(3000) * 0.7])  # background and tissue
    assert intensity_gain(reference * factor, reference) == pytest.approx(1 / factor, rel=1e-6)


def test_a_progress_callback_written_as_documented_gets_no_loss_keyword() -> None:
    """``progress(done, total, phase=None)`` (docs/thick-slices.md) stopped with 'unexpected keyword argument loss'."""
    from fagan_engine.util.progress import call_progress

    seen = []
    call_progress(lambda done, total, phase=None: seen.append((done, total, phase)), 1, 4, "register", 0.5)
    call_progress(lambda done, total, phase=None, loss=None: seen.append((done, total, phase, loss)), 2, 4, "fit", 0.25)
    call_progress(lambda done, total, **named: seen.append((done, total, named)), 3, 4, "fit", 0.125)
    call_progress(lambda done, total: seen.append((done, total)), 4, 4, "inference")
    assert seen == [(1, 4, "register"), (2, 4, "fit", 0.25), (3, 4, {"phase": "fit", "loss": 0.125}), (4, 4)]
