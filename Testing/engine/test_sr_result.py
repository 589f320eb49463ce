"""``super_resolve_report``: the image, maps with exact geometry, summary, warnings, identity and JSON report."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from engine_helpers import oblique_volume, save_untrained_checkpoint, textured_block

from fagan_engine.inference.resolver import SuperResolver
from fagan_engine.io.geometry import physical_corners
from fagan_engine.models.checkpoint import CheckpointMetadata, bundled_through_plane, load_generator, read_metadata, save_checkpoint
from fagan_engine.mri.forward_model import AcquisitionConfig, apply_along_axis, degrade_volume
from fagan_engine.pipeline.report import NOTICE, SRResult, super_resolve, super_resolve_report
from fagan_engine.through_plane.plan import ThroughPlanePlan, slice_matrix
from fagan_engine.trust.consistency import redegrade, relative_rms
from fagan_engine.util.config import ACQUISITIONS
from fagan_engine.util.options import RunOptions

AXES = (0, 1)


def assert_same_grid(image: sitk.Image, grid: sitk.Image) -> None:
    assert image.GetSize() == grid.GetSize() and image.GetDirection() == grid.GetDirection()
    assert np.allclose(physical_corners(image), physical_corners(grid), rtol=0, atol=1e-4)


def test_bicubic_report_on_an_oblique_anisotropic_volume() -> None:
    image = oblique_volume(size=(20, 16, 5), spacing=(0.9, 1.3, 3.0))
    options = RunOptions(method="bicubic", scale=2)
    result = super_resolve_report(image, options)
    expected = super_resolve(image, 2, method="bicubic")
    assert np.array_equal(sitk.GetArrayFromImage(result.image), sitk.GetArrayFromImage(expected))
    assert_same_grid(result.image, expected)
    assert_same_grid(result.consistency, expected)
    assert_same_grid(result.consistency_lr, image)
    assert result.uncertainty is None
    assert set(result.summary) == {"relative_rms_residual", "fraction_above_3sigma", "noise_sigma", "foreground_voxels"}
    report = json.loads(json.dumps(result.report()))
    assert report["notice"] == NOTICE == "research use, not for diagnosis"
    assert report["identity"]["notice"] == NOTICE and report["identity"]["options"]["method"] == "bicubic"
    assert report["identity"]["checkpoint"] is None and report["engine_version"]
    bare = super_resolve_report(image, options, consistency=False)
    assert bare.consistency is None and bare.consistency_lr is None and bare.summary == {}


def profiled_checkpoint(tmp_path: Path) -> Path:
    """An untrained ×2 checkpoint whose data profile says: 2 mm LR spacing, 64-128 px slices, noise up to 0.04."""
    path = save_untrained_checkpoint(tmp_path / "raw.safetensors", 2)
    model, _ = load_generator(str(path))
    metadata = read_metadata(str(path))
    profile = {"lr_spacing_mm": [2.0, 2.0], "lr_slice_size": [8, 128], "max_noise": 0.04, "histogram": []}
    fields = {**vars(metadata), "data_profile": profile, "acquisitions": ["kspace"]}
    return save_checkpoint(str(tmp_path / "m.safetensors"), model.state_dict(), CheckpointMetadata(**fields))


def test_fagan_report_identity_uncertainty_and_the_four_times_spacing_warning(tmp_path: Path, icbm_crop: sitk.Image) -> None:
    checkpoint = profiled_checkpoint(tmp_path)
    lr = degrade_volume(icbm_crop[:, :, :3], 2, AXES, AcquisitionConfig())
    lr.SetSpacing((8.0, 8.0, 1.0))  # 4x the training spacing
    options = RunOptions(checkpoint=str(checkpoint), scale=2, uncertainty=True, plane="axial")
    calls = []
    result = super_resolve_report(lr, options, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (24, 24) and all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))  # 8 passes of 3 slices
    assert_same_grid(result.uncertainty, result.image)
    assert "mean_uncertainty" in result.summary
    assert any("in-plane spacing 8x8 mm is outside the 2 mm" in line for line in result.warnings)
    checkpoint_id = result.identity["checkpoint"]
    assert checkpoint_id["name"] == "m.safetensors"
    assert checkpoint_id["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert checkpoint_id["acquisitions"] == ["kspace"] and checkpoint_id["data_profile_known"]
    quiet = sitk.Image(lr)
    quiet.SetSpacing((2.0, 2.0, 1.0))
    resolver = SuperResolver(options.replace(uncertainty=False))  # batch mode: one resolver for many inputs
    assert not any("spacing" in line for line in super_resolve_report(quiet, resolver.options, resolver).warnings)


def test_acquisition_mismatch_is_reported_once(tmp_path: Path, icbm_crop: sitk.Image) -> None:
    options = RunOptions(checkpoint=str(profiled_checkpoint(tmp_path)), scale=2, acquisition="gaussian")
    warnings = super_resolve_report(icbm_crop, options, consistency=False).warnings
    assert len([line for line in warnings if "was trained for kspace acquisition, not gaussian" in line]) == 1


def test_an_input_super_resolved_already_warns(icbm_crop: sitk.Image) -> None:
    once = super_resolve(degrade_volume(icbm_crop, 4, AXES, AcquisitionConfig()), 4, method="bicubic", plane=AXES)
    warnings = super_resolve_report(once, RunOptions(method="bicubic", scale=2, plane="axial")).warnings
    assert any("already upsampled" in line for line in warnings)


@pytest.mark.parametrize("acquisition", ACQUISITIONS)
def test_enforce_consistency_option_reproduces_the_input(acquisition: str, icbm_crop: sitk.Image) -> None:
    lr = degrade_volume(icbm_crop, 2, AXES, AcquisitionConfig(model=acquisition, noise=0.01), np.random.default_rng(0))
    options = RunOptions(method="lanczos", scale=2, acquisition=acquisition, enforce_consistency=True, plane="axial")
    result = super_resolve_report(lr, options)
    assert relative_rms(redegrade(result.image, lr, 2, AXES, acquisition), sitk.GetArrayFromImage(lr)) <= 1e-3
    # the summary and maps describe what the projection removed: Lanczos does not reproduce the data
    assert result.summary["relative_rms_residual"] > 1e-3
    assert_same_grid(result.image, super_resolve(lr, 2, method="lanczos", plane=AXES))


def test_through_plane_mode_uses_the_through_plane_module_and_the_slice_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wiring only (the through-plane SR is another module): a stand-in returns the true volume."""
    plan = ThroughPlanePlan(axis=2, n_in=4, n_out=12, input_spacing=3.0, output_spacing=1.0, thickness=3.0)
    truth = np.random.default_rng(0).random((12, 10, 10)).astype(np.float32) * 100
    image = sitk.GetImageFromArray(apply_along_axis(truth, slice_matrix(plan), 0).astype(np.float32))
    image.SetSpacing((1.0, 1.0, 3.0))
    sr = sitk.GetImageFromArray(truth)
    sr.SetOrigin((0.0, 0.0, -1.0))
    from fagan_engine.pipeline import report

    monkeypatch.setattr(report, "plan_through_plane", lambda image, target_spacing=None, slice_thickness=None: plan)
    monkeypatch.setattr(report, "through_plane_from_options", lambda image, options, progress=None, **named: sr)
    assert RunOptions(mode="through-plane").project  # projected by default; this test looks at the network's own output
    result = super_resolve_report(image, RunOptions(mode="through-plane", enforce_consistency=False))
    assert result.image is sr and result.summary["relative_rms_residual"] < 1e-6
    assert_same_grid(result.consistency, sr)
    assert_same_grid(result.consistency_lr, image)
    assert result.uncertainty is None
    checkpoint = result.report()["identity"]["checkpoint"]
    assert checkpoint["name"] == bundled_through_plane(plan.ratio).name and len(checkpoint["sha256"]) == 64


def test_package_exports_are_lazy() -> None:
    code = (
        "import sys, fagan_engine; assert 'fagan_engine.pipeline.report' not in sys.modules; "
        "from fagan_engine import SRResult, super_resolve_report; print(SRResult.__module__, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["fagan_engine.pipeline.report", "False"]
    assert SRResult.__module__ == "fagan_engine.pipeline.report"


def test_the_python_api_refuses_what_it_cannot_do_and_warns_as_the_report_does(tmp_path: Path) -> None:
    """A dict for options and a plane of 5 raised AttributeError / TypeError; the uncertainty map of an interpolation
    method was all zeros; a second checkpoint without the map was recorded as if used; super_resolve dropped warnings."""
    import warnings

    from fagan_engine.util.errors import FAGANWarning, InputError

    image = oblique_volume(size=(16, 16, 4)) - 50.0
    for call, fragment in ((lambda: super_resolve(image, 2, options={"method": "lanczos"}), "must be a RunOptions"),
                           (lambda: super_resolve_report(image, {"scale": 2}), "must be a RunOptions"),
                           (lambda: super_resolve(image, 2, method="lanczos", plane=5), "in-plane axes"),
                           (lambda: super_resolve(image, 2, method="lanczos", plane=["x", "y"]), "in-plane axes"),
                           (lambda: super_resolve_report(image, RunOptions(method="lanczos"), uncertainty=True), "uncertainty"),
                           (lambda: super_resolve_report(image, RunOptions(method="lanczos"), ensemble_checkpoint="x.safetensors"),
                            "ensemble_checkpoint is used only by the uncertainty map")):
        with pytest.raises(InputError, match=fragment):
            call()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        super_resolve(image, 2, method="lanczos", output_dtype="uint16")
    assert any(issubclass(w.category, FAGANWarning) and "clips" in str(w.message) for w in caught), [str(w.message) for w in caught]


@pytest.mark.parametrize("not_an_image", [np.zeros((4, 16, 16), dtype=np.float32), None, "volume.nii.gz"])
def test_an_input_that_is_not_an_image_is_refused_in_one_line(not_an_image) -> None:
    from fagan_engine.util.errors import InputError

    with pytest.raises(InputError, match="must be a SimpleITK image"):
        super_resolve(not_an_image, 2, method="lanczos")


def test_the_python_api_refuses_in_one_line_what_it_cannot_use(tmp_path) -> None:
    """Found by an API audit: pathlib paths gave a TypeError; a non-callable progress failed after inference; explicit
    axes were ignored through-plane and a plane name as axes gave a TypeError; an unknown acquisition model ran as Gaussian."""
    from pathlib import Path

    from fagan_engine.io.volume_io import read_volume, write_volume
    from fagan_engine.mri.forward_model import AcquisitionConfig, degrade
    from fagan_engine.pipeline.report import super_resolve
    from fagan_engine.util.errors import ConfigError, InputError

    image = sitk.GetImageFromArray(np.random.default_rng(0).random((4, 16, 16)).astype(np.float32))
    write_volume(image, Path(tmp_path / "v.nrrd"))  # a pathlib.Path, as notebooks pass it
    assert read_volume(Path(tmp_path / "v.nrrd")).GetSize() == (16, 16, 4)
    with pytest.raises(InputError, match="must be a string or a pathlib.Path, got int"):
        read_volume(5)
    with pytest.raises(InputError, match="progress must be a function or None"):
        super_resolve(image, 2, method="bicubic", progress=5)
    thick = sitk.GetImageFromArray(np.random.default_rng(0).random((8, 16, 16)).astype(np.float32))
    thick.SetSpacing((1.0, 1.0, 3.0))
    with pytest.raises(InputError, match="explicit in-plane axes do not apply"):
        super_resolve(thick, mode="through-plane", fit_iterations=0, plane=(0, 2), device="cpu")
    with pytest.raises(InputError, match="in-plane axes must be two different axes"):
        super_resolve_report(image, RunOptions(method="bicubic", scale=2), axes="axial")
    with pytest.raises(ConfigError, match="acquisition.model must be one of"):
        degrade(np.zeros((8, 8), np.float32), 2, AcquisitionConfig(model="foo"))


def test_through_plane_and_write_volume_arguments_are_type_checked(tmp_path) -> None:
    """pretrained="no" ran the pretrained start; fit_config="x" and plan="x" gave raw errors; write_volume wrote 2D and
    vector images that read_volume then refused, and compress="no" gave a SWIG TypeError."""
    from fagan_engine.io.volume_io import write_volume
    from fagan_engine.through_plane.run import super_resolve_through_plane
    from fagan_engine.util.errors import InputError

    thick = sitk.GetImageFromArray(np.random.default_rng(0).random((8, 16, 16)).astype(np.float32))
    thick.SetSpacing((1.0, 1.0, 3.0))
    for keyword, value in (("pretrained", "no"), ("project", "x"), ("fit_config", "x"), ("plan", "x"), ("weights", 3)):
        with pytest.raises(InputError, match=f"{keyword} must be"):
            super_resolve_through_plane(thick, iterations=0, device="cpu", **{keyword: value})
    for image in (sitk.Image(8, 8, sitk.sitkFloat32), sitk.Image([8, 8, 4], sitk.sitkVectorFloat32, 2), np.zeros((4, 8, 8))):
        with pytest.raises(InputError, match="non-empty 3D scalar SimpleITK image"):
            write_volume(image, str(tmp_path / "x.nrrd"))
    with pytest.raises(InputError, match="compress must be True or False"):
        write_volume(thick, str(tmp_path / "x.nrrd"), compress="no")
    assert list(tmp_path.iterdir()) == []


def test_a_resolver_built_for_other_options_is_refused() -> None:
    """A bicubic resolver with FA-GAN options ran bicubic while the identity said FA-GAN with the projection."""
    from fagan_engine.inference.resolver import SuperResolver
    from fagan_engine.util.errors import InputError

    image = sitk.GetImageFromArray(np.random.default_rng(0).random((4, 16, 16)).astype(np.float32))
    with pytest.raises(InputError, match="the resolver was built for method 'bicubic', these options say 'fagan'"):
        super_resolve_report(image, RunOptions(scale=2, adapt_iterations=0), resolver=SuperResolver(RunOptions(method="bicubic", scale=2)))
    options = RunOptions(method="bicubic", scale=2)
    assert super_resolve_report(image, options, resolver=SuperResolver(options)).image.GetSize() == (32, 32, 4)


# The tests below were added after a mutation audit (2026-12-07): each fails on a plausible bug the suite missed.

def test_interpolation_is_not_projected_and_the_identity_says_so():
    from fagan_engine.pipeline.report import identity
    from fagan_engine.util.options import RunOptions

    options = RunOptions(method="lanczos").validate()
    assert options.project is False
    assert identity(options, None)["projection"] is False
    assert identity(RunOptions(method="lanczos", enforce_consistency=True).validate(), None)["projection"] is True


def test_a_resolver_built_for_another_acquisition_is_refused():
    from fagan_engine.inference.resolver import SuperResolver
    from fagan_engine.pipeline.report import super_resolve_report
    from fagan_engine.util.errors import InputError
    from fagan_engine.util.options import RunOptions

    resolver = SuperResolver(RunOptions(method="lanczos", scale=2, acquisition="bicubic"))
    with pytest.raises(InputError, match="acquisition"):
        super_resolve_report(textured_block(), RunOptions(method="lanczos", scale=2, acquisition="kspace"), resolver)
    for field, built, asked in (("adapt_iterations", 0, 5), ("tile_size", None, 32), ("ensemble", None, 2)):
        resolver = SuperResolver(RunOptions(scale=2, untrained=True, **{field: built}))
        with pytest.raises(InputError, match=field):
            super_resolve_report(textured_block(), RunOptions(scale=2, untrained=True, **{field: asked}), resolver)


def test_the_identity_names_this_engine_version() -> None:
    from fagan_engine._version import __version__
    from fagan_engine.pipeline.report import identity

    assert identity(RunOptions(method="lanczos").validate(), None)["engine_version"] == __version__


def test_the_identity_names_the_in_plane_axes_that_ran() -> None:
    """Explicit axes made a coronal result whose identity said only plane 'auto'."""
    image = textured_block(6)
    options = RunOptions(method="bicubic", scale=2)
    assert super_resolve_report(image, options).identity["in_plane_axes"] == [0, 1]
    assert super_resolve_report(image, options, axes=(0, 2)).identity["in_plane_axes"] == [0, 2]


def test_super_resolve_case_checks_the_options_it_is_given() -> None:
    """A public entry of ``pipeline``: it ran a projection for enforce_consistency="no" and wrote int8 volumes."""
    import numpy as np
    import pytest
    import SimpleITK as sitk

    from fagan_engine.pipeline.case import super_resolve_case
    from fagan_engine.util.errors import InputError
    from fagan_engine.util.options import RunOptions

    image = sitk.GetImageFromArray(np.random.default_rng(0).random((2, 16, 16)).astype(np.float32))
    with pytest.raises(InputError, match="enforce_consistency"):
        super_resolve_case(image, RunOptions(scale=2, enforce_consistency="no", adapt_iterations=0), None, None)
    with pytest.raises(InputError, match="options must be a RunOptions"):
        super_resolve_case(image, {"scale": 2}, None, None)
    with pytest.raises(InputError, match="resolver must be a SuperResolver"):
        super_resolve_case(image, RunOptions(scale=2, method="bicubic"), "x", None)
