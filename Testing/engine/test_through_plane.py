"""Through-plane SR: planning, exact output geometry, slice-profile pairs, tiny fits, cancel, bad input."""
from __future__ import annotations

import math
import warnings
from dataclasses import replace as dataclass_replace

import numpy as np
import pytest
import SimpleITK as sitk

from fagan_engine.io.geometry import physical_corners, same_physical_extent
from fagan_engine.models.checkpoint import LOW_RATIO_THROUGH_PLANE_WEIGHTS, THROUGH_PLANE_WEIGHTS
from fagan_engine.mri.forward_model import slice_profile_matrix
from fagan_engine.through_plane.fit import Direction, FitConfig, PairSampler, load_weights, scan_directions
from fagan_engine.through_plane.plan import (
    bspline_matrix,
    interpolate_through_plane,
    output_geometry,
    plan_through_plane,
)
from fagan_engine.through_plane.run import fuse, super_resolve_through_plane, through_plane_from_options
from fagan_engine.util.errors import FAGANWarning, InputError
from fagan_engine.util.options import RunOptions
from fagan_engine.util.progress import FitCancelled

TINY = FitConfig(iterations=2, batch_size=2, lr_rows=4, patch_cols=16)


def _oblique(size=(20, 18, 7), spacing=(0.9, 0.8, 3.3), seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.random(size[::-1]).astype(np.float32) * 100)
    image.SetSpacing(spacing)
    angle = 0.3
    rotation = np.array([[1, 0, 0], [0, math.cos(angle), -math.sin(angle)], [0, math.sin(angle), math.cos(angle)]])
    tilt = np.array([[math.cos(0.2), 0, math.sin(0.2)], [0, 1, 0], [-math.sin(0.2), 0, math.cos(0.2)]])
    image.SetDirection(tuple((rotation @ tilt).ravel()))
    image.SetOrigin((-12.5, 40.25, 7.0))
    return image


def test_plan_picks_coarsest_axis_and_target_defaults_to_finest_in_plane() -> None:
    plan = plan_through_plane(_oblique())
    assert plan.axis == 2 and plan.n_in == 7 and plan.thickness == pytest.approx(3.3)
    assert plan.target_spacing == pytest.approx(0.8)
    assert plan.n_out == round(7 * 3.3 / 0.8)
    assert plan.output_spacing == pytest.approx(7 * 3.3 / plan.n_out)
    permuted = _oblique(size=(6, 20, 18), spacing=(4.0, 1.0, 1.0))
    assert plan_through_plane(permuted).axis == 0
    assert plan.anisotropy_note() is None


def test_a_volume_coarse_along_two_axes_is_told_its_result_is_not_isotropic() -> None:
    """1 x 4 x 4 mm gave 1 x 4 x 1 mm with exit 0 and no word of the second coarse axis."""
    plan = plan_through_plane(_oblique(size=(48, 12, 8), spacing=(1.0, 4.0, 4.0)))
    assert plan.axis == 2 and "axis 1 keeps its 4 mm spacing" in plan.anisotropy_note()
    finer = plan_through_plane(_oblique(size=(20, 20, 8), spacing=(1.0, 1.0, 4.0)), target_spacing=0.5)
    assert finer.anisotropy_note() is None  # a target below both in-plane spacings: the user's choice, no second coarse axis


@pytest.mark.parametrize("target", [1.0, 0.7, 1.37])
def test_output_geometry_keeps_the_corners_on_oblique_volumes(target: float) -> None:
    image = _oblique()
    plan = plan_through_plane(image, target_spacing=target)
    reference = output_geometry(image, plan).apply(sitk.Image(list(output_geometry(image, plan).size), sitk.sitkFloat32))
    assert np.allclose(physical_corners(reference), physical_corners(image), atol=1e-4, rtol=0)
    assert reference.GetSpacing()[2] == pytest.approx(plan.n_in * 3.3 / plan.n_out)
    assert plan.n_out == round(plan.extent / target)  # the spacing closest to the target that tiles the extent


def test_thickness_from_argument_dicom_header_or_spacing() -> None:
    image = _oblique()
    assert plan_through_plane(image).thickness_source == "spacing"
    image.SetMetaData("0018|0050", "2.5 ")
    plan = plan_through_plane(image)
    assert (plan.thickness, plan.thickness_source, round(plan.gap, 6)) == (2.5, "dicom", 0.8)
    assert plan_through_plane(image, slice_thickness=3.0).thickness == 3.0


@pytest.mark.parametrize("thickness, source", [(14.0, "--slice-thickness"), (1e6, "--slice-thickness"), (1e30, "--slice-thickness"),
                                               (None, "DICOM Slice Thickness")])
def test_a_thickness_far_beyond_the_slice_spacing_is_refused(thickness, source) -> None:
    """1e6 mm made every slice the volume's mean without a word, 1e30 a ValueError traceback."""
    image = _oblique()
    image.SetMetaData("0018|0050", "40")
    with pytest.raises(InputError, match="more than 4 times the slice spacing 3.3 mm") as refusal:
        plan_through_plane(image, slice_thickness=thickness)
    assert source in str(refusal.value)
    assert plan_through_plane(image, slice_thickness=13.2).thickness == 13.2  # 4 times: an overlapping acquisition still


def test_bad_input_one_clear_line() -> None:
    iso = sitk.Image([16, 16, 16], sitk.sitkFloat32)
    with pytest.raises(InputError, match="already .*isotropic.*in-plane mode"):
        plan_through_plane(iso)
    one = sitk.Image([16, 16, 1], sitk.sitkFloat32)
    one.SetSpacing((1, 1, 5))
    with pytest.raises(InputError, match="single slice"):
        plan_through_plane(one)
    thick = sitk.Image([16, 16, 6], sitk.sitkFloat32)
    thick.SetSpacing((1, 1, 4))
    with pytest.raises(InputError, match="target spacing 5 mm is not smaller than the slice spacing 4 mm"):
        plan_through_plane(thick, target_spacing=5.0)
    for error in (pytest.raises(InputError),):
        with error as caught:
            super_resolve_through_plane(iso, iterations=1, device="cpu")
        assert "\n" not in str(caught.value)


def _no_work(monkeypatch) -> None:
    """Make loading the network (the first work after the checks) fail the test."""
    import fagan_engine.through_plane.run as run

    monkeypatch.setattr(run, "load_weights", lambda *a, **k: pytest.fail("the run began before the refusal"))


@pytest.mark.parametrize("kwargs, message", [
    ({"iterations": "3"}, "iterations must be a whole number"),
    ({"iterations": 1.5}, "iterations must be a whole number"),  # was truncated to 1
    ({"batch_size": "4"}, "batch_size must be a whole number"),
    ({"batch_size": 0}, "batch size must be >= 1"),  # was all slices at once
    ({"batch_size": -3}, "batch size must be >= 1"),  # was one slice at a time
    ({"progress": "x"}, "progress must be a function"),
    ({"stop": True}, "stop must be a function"),
    ({"seed": "a"}, "seed must be a whole number"),
    ({"output_dtype": "int8"}, "output dtype must be one of float32, int16, uint16"),  # was accepted, clipping at 127
    ({"target_spacing": "1"}, "target_spacing must be a finite number"),
    ({"edge_sigma": "x"}, "edge sigma must be a positive number"),
])
def test_bad_arguments_are_refused_in_one_line_before_any_work(monkeypatch, kwargs, message) -> None:
    _no_work(monkeypatch)
    with pytest.raises(InputError, match=message) as refusal:
        super_resolve_through_plane(_oblique(size=(16, 16, 4), spacing=(1.0, 1.0, 4.0)), **dict({"device": "cpu"}, **kwargs))
    assert "\n" not in str(refusal.value)


def test_integer_output_types_follow_the_in_plane_rule(monkeypatch) -> None:
    """int16 on values 0.05-0.48 gave an all-zero volume; a type that clips the range says so."""
    image = _oblique(size=(16, 16, 4), spacing=(1.0, 1.0, 4.0))
    small = sitk.Cast(image, sitk.sitkFloat32) * 0.0043 + 0.05
    with monkeypatch.context() as patched:
        _no_work(patched)
        with pytest.raises(InputError, match="would round the input's whole range .* to one value"):
            super_resolve_through_plane(small, iterations=0, device="cpu", output_dtype="int16")
    negative = sitk.Cast(image, sitk.sitkFloat32) - 50.0
    with pytest.warns(FAGANWarning, match="uint16 clips the input's range"):
        out = super_resolve_through_plane(negative, iterations=0, device="cpu", output_dtype="uint16")
    assert out.GetPixelID() == sitk.sitkUInt16
    notes = []
    options = RunOptions(mode="through-plane", fit_iterations=0, device="cpu", output_dtype="uint16")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FAGANWarning)  # handed to on_note instead
        through_plane_from_options(negative, options, on_note=notes.append)
    assert len(notes) == 2 and "clips the input's range" in notes[0] and "of the result to [0, 65535]" in notes[1]
    # the product's path (CLI, Slicer) casts after the projection: it said nothing of the voxels it clipped
    from fagan_engine.pipeline.report import super_resolve_report

    report = super_resolve_report(negative, options, consistency=False)
    assert any("of the result to [0, 65535]" in w for w in report.warnings), report.warnings


def test_a_result_beyond_the_memory_is_refused_on_the_api_path_too(monkeypatch) -> None:
    """A target spacing far below the slice spacing went on to allocate; only the CLI path checked."""
    import fagan_engine.inference.memory_check as memory_check

    image = _oblique(size=(16, 16, 4), spacing=(1.0, 1.0, 4.0))
    monkeypatch.setattr(memory_check, "available_bytes", lambda: memory_check.BASE_BYTES + 2**24)
    assert super_resolve_through_plane(image, iterations=0, device="cpu").GetSize() == (16, 16, 16)  # 1 mm fits
    _no_work(monkeypatch)
    monkeypatch.setattr(memory_check, "available_bytes", lambda: memory_check.BASE_BYTES + 2**20)
    with pytest.raises(InputError, match=r"through-plane result \(128 slices at 0.125 mm\).*choose a larger"):
        super_resolve_through_plane(image, target_spacing=0.125, iterations=0, device="cpu")


def _box_average(hr: np.ndarray, centre: float, thickness: float, sub: int = 2000) -> float:
    """Direct computation: the piecewise-constant HR row integrated over [centre ± thickness/2]."""
    x = (np.arange(len(hr) * sub) + 0.5) / sub
    inside = np.abs(x - centre) <= thickness / 2
    return float(np.repeat(hr, sub)[inside].mean())


@pytest.mark.parametrize("ratio,thickness", [(4.0, 4.0), (3.3, 2.3), (2.5, 2.5)])
def test_training_pairs_follow_the_slice_profile(ratio: float, thickness: float) -> None:
    rng = np.random.default_rng(1)
    images = rng.random((3, 40, 24)).astype(np.float32)
    direction = Direction(images, ratio, thickness, 0.0).prepare(lr_rows=6, max_hr_rows=40)
    effective = direction.hr_rows / direction.n_lr
    assert abs(effective - ratio) <= 0.5 / direction.n_lr + 1e-9
    column = images[0, : direction.hr_rows, 0].astype(np.float64)
    direct = [_box_average(column, (j + 0.5) * effective, thickness) for j in range(direction.n_lr)]
    assert np.allclose(direction.profile @ column, direct, atol=2e-3)
    sampler = PairSampler([direction], FitConfig(batch_size=2, lr_rows=6, patch_cols=8), rng)
    lr, base, hr = sampler.batch()
    assert lr.shape == (2, 1, direction.n_lr, 8) and hr.shape == (2, 1, direction.hr_rows, 8) and base.shape == hr.shape
    assert np.allclose(lr[:, 0], np.einsum("ij,bjk->bik", direction.profile, hr[:, 0]), atol=1e-5)


def test_gaussian_edged_profile_matches_a_direct_convolution() -> None:
    sigma, thickness, ratio = 0.7, 3.0, 3.5
    profile = slice_profile_matrix(28, 8, ratio, thickness, sigma)
    x = (np.arange(28 * 400) + 0.5) / 400
    for j in (0, 3, 7):
        c = (j + 0.5) * ratio
        from scipy.special import ndtr

        density = ndtr((x - c + thickness / 2) / sigma) - ndtr((x - c - thickness / 2) / sigma)
        direct = density.reshape(28, 400).sum(axis=1)
        assert np.allclose(profile[j], direct / direct.sum(), atol=1e-4)


def test_scan_directions_use_both_in_plane_axes_in_pixels_of_each() -> None:
    image = _oblique(size=(24, 20, 6), spacing=(0.5, 1.0, 4.0))
    plan = plan_through_plane(image)
    directions = scan_directions(sitk.GetArrayFromImage(image) / 100.0, plan)
    assert sorted(d.ratio for d in directions) == [4.0, 8.0]
    assert sorted(d.images.shape[1] for d in directions) == [20, 24]


def test_bspline_matrix_reproduces_linear_ramps_and_input_samples() -> None:
    matrix = bspline_matrix(9, 27)
    ramp = np.arange(9, dtype=float)
    positions = (np.arange(27) + 0.5) / 3 - 0.5
    inner = (positions >= 3) & (positions <= 5)  # mirror boundaries bend a ramp near the ends only
    assert np.allclose((matrix @ ramp)[inner], positions[inner], atol=1e-2)
    assert np.allclose(matrix[1::3], np.eye(9), atol=1e-9)
    assert np.allclose(matrix.sum(axis=1), 1.0)


def test_interpolation_baseline_has_the_output_geometry() -> None:
    image = _oblique()
    plan = plan_through_plane(image, target_spacing=1.0)
    out = interpolate_through_plane(image, plan, "lanczos")
    assert out.GetSize()[2] == plan.n_out and same_physical_extent(image, out)


def test_fourier_fusion_of_equal_results_is_identity() -> None:
    a = np.random.default_rng(0).random((5, 12, 10)).astype(np.float32)
    assert np.allclose(fuse(a, a, "fourier"), a, atol=1e-5)
    assert np.allclose(fuse(a, 3 * a, "average"), 2 * a)


def test_tiny_fit_on_an_oblique_32x32x8_volume_gives_a_valid_output() -> None:
    image = _oblique(size=(32, 32, 8), spacing=(1.0, 1.0, 3.5))
    image.SetMetaData("0018|0050", "2.5")  # 1 mm gaps
    calls = []
    out = super_resolve_through_plane(
        image, iterations=2, device="cpu", progress=lambda d, t, phase, loss=None: calls.append((phase, d, t)),
        fit_config=TINY,
    )
    assert out.GetSize() == (32, 32, 28) and out.GetSpacing()[2] == pytest.approx(1.0)
    assert same_physical_extent(image, out, tol=1e-4)
    array = sitk.GetArrayFromImage(out)
    assert np.isfinite(array).all() and out.GetPixelID() == sitk.sitkFloat32
    assert calls[:2] == [("fit", 1, 2), ("fit", 2, 2)]
    assert calls[-1] == ("inference", 64, 64)


def test_fit_from_scratch_non_integer_ratio() -> None:
    image = _oblique(size=(32, 30, 8), spacing=(1.0, 1.1, 3.3))
    out = super_resolve_through_plane(image, target_spacing=1.2, iterations=1, device="cpu", pretrained=False, fit_config=TINY)
    assert out.GetSize()[2] == round(8 * 3.3 / 1.2) and same_physical_extent(image, out)


def test_cancel_during_the_fit_raises_and_returns_nothing() -> None:
    image = _oblique(size=(32, 32, 8), spacing=(1.0, 1.0, 4.0))
    seen = []
    with pytest.raises(FitCancelled) as caught:
        super_resolve_through_plane(
            image, iterations=50, device="cpu", fit_config=TINY,
            progress=lambda d, t, phase, loss=None: seen.append(d), stop=lambda: len(seen) >= 2,
        )
    assert isinstance(caught.value, KeyboardInterrupt) and seen == [1, 2]


@pytest.mark.parametrize("bundled", [THROUGH_PLANE_WEIGHTS, LOW_RATIO_THROUGH_PLANE_WEIGHTS], ids=["general", "low-ratio"])
def test_bundled_weights_load_and_detect_tampering(tmp_path, bundled) -> None:
    from fagan_engine.util.errors import CheckpointError

    model, metadata = load_weights(bundled)
    assert metadata["model"]["upsampler"] in ("axis", "preinterp")
    assert bundled.stat().st_size < 4 << 20
    blob = bytearray(bundled.read_bytes())
    blob[-5] ^= 0xFF
    broken = tmp_path / "tp.safetensors"
    broken.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum"):
        load_weights(broken)


def test_run_options_through_their_own_function_and_two_argument_progress() -> None:
    image = _oblique(size=(32, 32, 8), spacing=(1.0, 1.0, 4.0))
    options = RunOptions(mode="through-plane", target_spacing=2.0, fit_iterations=0, device="cpu", output_dtype="int16")
    seen = []
    with pytest.warns(FAGANWarning, match="int16 rounds the input's range .* to about 100 levels"):  # values 0-100
        out = through_plane_from_options(image, options, progress=lambda done, total: seen.append((done, total)))
        typed = super_resolve_through_plane(image, 2.0, None, 0, "cpu", output_dtype="int16")
    assert out.GetSize() == (32, 32, 16) and out.GetPixelID() == sitk.sitkInt16 and same_physical_extent(image, out)
    assert seen[-1] == (64, 64)
    assert np.array_equal(sitk.GetArrayFromImage(typed), sitk.GetArrayFromImage(out))
    with pytest.raises(InputError, match="target_spacing must be a finite number"):  # one signature: a RunOptions is not a target spacing
        super_resolve_through_plane(image, options)


def test_a_report_plans_the_volume_once(monkeypatch) -> None:
    """The report's plan (with its seconds-long slice-profile estimate when no thickness is given) is handed to the
    run, not made again inside it; the result is the same as without the report."""
    import fagan_engine.pipeline.report as report
    import fagan_engine.through_plane.run as run
    from fagan_engine.pipeline.report import super_resolve_report

    calls = []

    def counted(*args, **kwargs):
        calls.append(args[1:])
        return plan_through_plane(*args, **kwargs)

    monkeypatch.setattr(report, "plan_through_plane", counted)
    monkeypatch.setattr(run, "plan_through_plane", counted)
    image = _oblique(size=(32, 32, 8), spacing=(1.0, 1.0, 4.0))
    options = RunOptions(mode="through-plane", target_spacing=2.0, fit_iterations=0, device="cpu")
    result = super_resolve_report(image, options)
    assert len(calls) == 1
    alone = super_resolve_through_plane(image, 2.0, None, 0, "cpu")
    assert np.allclose(sitk.GetArrayFromImage(result.image), sitk.GetArrayFromImage(alone), atol=1e-4)


def test_gradient_sampling_prefers_edges_and_keeps_patches_inside() -> None:
    images = np.zeros((3, 40, 50), np.float32)
    images[:, :, 30:] = 1.0  # one vertical edge at column 30
    cfg = FitConfig(batch_size=64, lr_rows=4, patch_cols=8, sampling="gradient")
    sampler = PairSampler([Direction(images, 2.0, 2.0, 0.0)], cfg, np.random.default_rng(0))
    lefts = [sampler.position(0)[2] for _ in range(200)]
    assert all(22 <= left <= 30 for left in lefts)  # every patch holds the edge (gradient at columns 29-30)
    lr, base, target = sampler.batch()
    assert target.shape == (64, 1, 8, 8) and lr.shape == (64, 1, 4, 8)
    with pytest.raises(Exception, match="sampling"):
        PairSampler([Direction(images, 2.0, 2.0, 0.0)], FitConfig(sampling="edges"), np.random.default_rng(0))


@pytest.mark.parametrize("spacing, thickness", [(4.0, None), (3.3, 2.5)])
def test_projection_makes_the_output_reslice_to_the_input(spacing: float, thickness) -> None:
    from fagan_engine.through_plane.plan import project_onto_slices, slice_matrix

    image = _oblique(size=(20, 18, 7), spacing=(1.0, 1.0, spacing))
    plan = plan_through_plane(image, slice_thickness=thickness)
    data = sitk.GetArrayFromImage(image)
    guess = np.random.default_rng(1).random((plan.n_out, 18, 20)).astype(np.float32)
    projected = project_onto_slices(guess, data, plan)
    resliced = np.einsum("ij,jyx->iyx", slice_matrix(plan), projected.astype(np.float64))
    assert np.allclose(resliced, data, atol=1e-3)
    assert np.allclose(project_onto_slices(projected, data, plan), projected, atol=1e-3)  # a projection


def test_pretraining_recipe_randomises_resolution_and_adds_noise_to_the_hr_slices(tmp_path, capsys) -> None:
    from fagan_engine.through_plane.fit import SyntheticSampler, load_pretrain_config, synthetic_pool
    from fagan_engine.util.errors import ConfigError

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("pool_size: 4\nzoom: [0.5, 0.5]\nhr_noise_probability: 1.0\nhr_noise: [0.05, 0.05]\n", encoding="utf-8")
    cfg = load_pretrain_config(recipe)
    assert cfg.zoom == (0.5, 0.5) and cfg.hr_noise == (0.05, 0.05)
    zoomed = synthetic_pool(cfg, np.random.default_rng(0))
    plain = synthetic_pool(load_pretrain_config(_write(tmp_path / "plain.yaml", "pool_size: 4\n")), np.random.default_rng(0))
    for small, full in zip(zoomed, plain):  # the same slices at half the pixel count (pixels twice as large)
        assert small.shape == tuple(round(n / 2) for n in full.shape)
    fit_cfg = FitConfig(batch_size=2, lr_rows=4, patch_cols=16)
    noisy = SyntheticSampler([np.zeros((40, 40), np.float32) + 0.5], cfg, fit_cfg, np.random.default_rng(1)).batch()[2]
    assert 0.01 < float(noisy.std()) < 0.05  # Rician noise of 5 % of the slice's robust maximum, fresh per draw
    quiet = dataclass_replace(cfg, hr_noise_probability=0.0)
    assert float(SyntheticSampler([np.zeros((40, 40), np.float32) + 0.5], quiet, fit_cfg, np.random.default_rng(1)).batch()[2].std()) == 0
    with pytest.raises(ConfigError, match="unknown"):
        load_pretrain_config(_write(tmp_path / "bad.yaml", "zooom: [1, 2]\n"))
    with pytest.raises(ConfigError, match="zoom must be"):
        load_pretrain_config(_write(tmp_path / "bad.yaml", "zoom: [0, 2]\n"))
    # the command line: a bad or missing recipe is one error line and exit 2
    from fagan_engine.cli.pretrain import main

    capsys.readouterr()
    for recipe in (tmp_path / "missing.yaml", _write(tmp_path / "bad.yaml", "zoom: [0, 2]\n")):
        assert main([str(recipe)]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")


def test_pretraining_creates_its_output_folder_and_refuses_an_unwritable_one_before_training(tmp_path, capsys) -> None:
    from fagan_engine.cli.pretrain import main
    from fagan_engine.util.atomic import atomic_write_bytes
    from fagan_engine.util.errors import OutputError

    tiny = "pool_size: 2\nfit: {iterations: 2, batch_size: 2, lr_rows: 4, patch_cols: 16}\n"
    output = tmp_path / "new" / "deeper" / "start.safetensors"
    assert main([str(_write(tmp_path / "ok.yaml", tiny + f"output: {output}\n"))]) == 0
    assert output.is_file() and output.with_suffix(".json").is_file()
    (tmp_path / "a_file").write_text("x", encoding="utf-8")
    capsys.readouterr()
    assert main([str(_write(tmp_path / "no.yaml", tiny + f"output: {tmp_path / 'a_file' / 'start.safetensors'}\n"))]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "a_file" in lines[0]  # no fit line: refused before it
    with pytest.raises(OutputError):  # a missing folder at write time is one line too, not a traceback
        atomic_write_bytes(tmp_path / "missing" / "x.bin", b"x")


def test_pretraining_continues_from_a_checkpoint_of_the_same_architecture_only(tmp_path, capsys) -> None:
    import torch

    from fagan_engine.cli.pretrain import main

    model = "model: {n_feats: 16, n_blocks: 3, upsampler: axis}\n"
    tiny = "pool_size: 2\nfit: {iterations: 2, batch_size: 2, lr_rows: 4, patch_cols: 16, lr: 1.0e-3}\n"
    output = tmp_path / "continued.safetensors"
    recipe = _write(tmp_path / "c.yaml", model + tiny + f"init: {THROUGH_PLANE_WEIGHTS}\noutput: {output}\n")
    assert main([str(recipe)]) == 0
    start, _ = load_weights()
    continued, metadata = load_weights(output)
    assert metadata["training"]["config"]["init"] == str(THROUGH_PLANE_WEIGHTS)
    moved = [float((a - b).abs().max()) for a, b in zip(start.state_dict().values(), continued.state_dict().values())]
    assert 0 < max(moved) < 0.05  # two small steps from the start, not a fresh random network
    with torch.no_grad():
        assert all(torch.isfinite(t).all() for t in continued.state_dict().values())
    capsys.readouterr()
    other = _write(tmp_path / "o.yaml", "model: {n_feats: 8}\n" + tiny + f"init: {THROUGH_PLANE_WEIGHTS}\noutput: {tmp_path / 'o.safetensors'}\n")
    assert main([str(other)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "different through-plane architecture" in lines[0]
    assert not (tmp_path / "o.safetensors").exists()


def test_an_output_that_is_a_folder_is_refused_before_any_work(tmp_path, capsys) -> None:
    from fagan_engine.cli.pretrain import main as pretrain
    from fagan_engine.training.through_plane_eval import main as evaluate

    folder = tmp_path / "results"
    folder.mkdir()
    tiny = "pool_size: 2\nfit: {iterations: 2, batch_size: 2, lr_rows: 4, patch_cols: 16}\n"
    assert pretrain([str(_write(tmp_path / "r.yaml", tiny + f"output: {folder}\n"))]) == 2
    assert evaluate(["template", "--methods", "bspline", "--output", str(folder)]) == 2  # it appended rows after the first case
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") and "is a folder" in line for line in lines)
    assert list(folder.iterdir()) == []


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_a_recipe_out_of_range_or_an_existing_output_is_refused_before_any_work(tmp_path, capsys) -> None:
    """One ``error:`` line each (ranges that numpy rejected with a traceback; an output replaced without asking)."""
    from fagan_engine.cli.pretrain import main as pretrain

    tiny = "fit: {iterations: 2, batch_size: 2, lr_rows: 4, patch_cols: 16}\n"
    output = tmp_path / "x.safetensors"
    bad = {
        "ratio": f"ratio: [3.0, 1.5]\npool_size: 2\n{tiny}output: {output}\n",
        "pool": f"pool_size: 0\n{tiny}output: {output}\n",
        "iterations": f"pool_size: 2\nfit: {{iterations: -3, batch_size: 2, lr_rows: 4, patch_cols: 16}}\noutput: {output}\n",
        "fit key": f"pool_size: 2\nfit: {{iterations: 2, steps: 4}}\noutput: {output}\n",
        "suffix": f"pool_size: 2\n{tiny}output: {tmp_path / 'x.onnx'}\n",
    }
    for name, text in bad.items():
        assert pretrain([str(_write(tmp_path / f"{name}.yaml", text))]) == 2, name
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, lines)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".yaml")) == []
    (tmp_path / "x.json").write_text("{}")  # a sidecar alone is enough to refuse
    assert pretrain([str(_write(tmp_path / "ok.yaml", f"pool_size: 2\n{tiny}output: {output}\n"))]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (tmp_path / "x.json").read_text() == "{}" and not output.exists()


def test_an_output_spacing_far_from_the_target_is_said() -> None:
    """--target-spacing 2.9 on 3 mm slices gave 2.571 mm without a word (at least one more slice than the input)."""
    image = _oblique(size=(20, 18, 6), spacing=(0.9, 0.8, 3.0))
    assert "2.571 mm, not the target 2.9 mm" in plan_through_plane(image, target_spacing=2.9).spacing_note()
    assert plan_through_plane(image, target_spacing=1.0).spacing_note() is None


@pytest.mark.parametrize("target", [1e-308, 5e-324, 0.09])
def test_a_target_spacing_far_finer_than_the_scan_resolves_is_one_line(target: float) -> None:
    """1e-308 overflowed the slice count (a traceback); 1e-300 printed a 300-digit memory figure."""
    with pytest.raises(InputError, match="more than 8 times finer than the finest in-plane spacing 0.8 mm"):
        plan_through_plane(_oblique(), target_spacing=target)
    assert plan_through_plane(_oblique(), target_spacing=0.1).target_spacing == 0.1


def test_out_of_memory_is_recognised_where_libraries_raise_no_memory_error() -> None:
    """torch's CPU allocator raises a RuntimeError ('can't allocate memory'): a traceback instead of the advice line."""
    from fagan_engine.util.failures import is_out_of_memory

    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                                         "you tried to allocate 140737488355328 bytes"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: "
                                         "you tried to allocate 123 bytes."))  # torch on Windows
    assert is_out_of_memory(OSError(12, "Cannot allocate memory")) and is_out_of_memory(RuntimeError("CUDNN_STATUS_ALLOC_FAILED"))
    assert is_out_of_memory(MemoryError()) and not is_out_of_memory(RuntimeError("size mismatch"))
    assert not is_out_of_memory(KeyError("out of memory"))


def test_a_plan_from_another_volume_or_options_of_another_mode_are_refused_before_any_work(monkeypatch) -> None:
    """Another volume's plan failed deep in torch after the work began; a target spacing beside a plan was ignored; an
    in-plane RunOptions started the through-plane fit."""
    from fagan_engine.through_plane.plan import plan_through_plane
    from fagan_engine.through_plane.run import through_plane_from_options

    image = _oblique(size=(16, 16, 4), spacing=(1.0, 1.0, 4.0))
    other = _oblique(size=(16, 16, 6), spacing=(1.0, 1.0, 4.0))
    with monkeypatch.context() as patched:
        _no_work(patched)
        with pytest.raises(InputError, match="plan was made for another volume"):
            super_resolve_through_plane(image, iterations=0, device="cpu", plan=plan_through_plane(other))
        with pytest.raises(InputError, match="target_spacing 2 differs from the plan's 1"):
            super_resolve_through_plane(image, target_spacing=2.0, iterations=0, device="cpu", plan=plan_through_plane(image))
        with pytest.raises(InputError, match="takes RunOptions.mode='through-plane'"):
            through_plane_from_options(image, RunOptions(scale=2, method="lanczos"))
