"""Out-of-distribution warnings (each triggered and not), the training data profile and its checkpoint field."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from engine_helpers import save_untrained_checkpoint

from fagan_engine.io.geometry import SliceLayout
from fagan_engine.models.checkpoint import CheckpointMetadata, default_checkpoint, load_generator, parse_metadata, read_metadata, save_checkpoint
from fagan_engine.mri.forward_model import AcquisitionConfig, crop_to_multiple, degrade_volume
from fagan_engine.mri.normalization import IntensityNormalizer
from fagan_engine.mri.sample_data import icbm152_t1_path
from fagan_engine.pipeline.report import super_resolve
from fagan_engine.training.profile import data_profile
from fagan_engine.trust.ood import HISTOGRAM_DISTANCE, histogram_distance, nyquist_ratio, ood_warnings
from fagan_engine.trust.profile import histogram
from fagan_engine.util.config import NormalizationConfig, load_config
from fagan_engine.util.errors import CheckpointError

AXES = (0, 1)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template_lr() -> sitk.Image:
    """Held-out-slab-like axial slices of the template, acquired at ×2 (2 mm) by noise-free k-space."""
    hr = sitk.ReadImage(str(icbm152_t1_path()), sitk.sitkFloat32)[:, :, 80:86]
    return degrade_volume(crop_to_multiple(hr, 2, AXES), 2, AXES, AcquisitionConfig())


@pytest.fixture(scope="module")
def profile(template_lr: sitk.Image) -> dict:
    """A profile like the bundled ×2 recipe's, its histogram taken from the template's own LR slices."""
    array = sitk.GetArrayFromImage(template_lr)
    normalised = IntensityNormalizer.fit(array, NormalizationConfig()).forward(array)
    return {"lr_spacing_mm": [2.0, 2.0], "lr_slice_size": [64, 128], "max_noise": 0.04, "histogram": histogram(normalised)}


def lines(image: sitk.Image, profile: dict, word: str) -> list:
    return [line for line in ood_warnings(image, AXES, profile, checkpoint_name="m.safetensors") if word in line]


def with_array(image: sitk.Image, array: np.ndarray) -> sitk.Image:
    out = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    out.CopyInformation(image)
    return out


def test_in_distribution_input_gives_no_warning(template_lr: sitk.Image, profile: dict) -> None:
    assert ood_warnings(template_lr, AXES, profile) == []


def test_spacing_outside_the_training_range_warns(template_lr: sitk.Image, profile: dict) -> None:
    four_times = sitk.Image(template_lr)
    four_times.SetSpacing((8.0, 8.0, 1.0))  # 4x the 2 mm training spacing
    assert len(lines(four_times, profile, "in-plane spacing 8x8 mm")) == 1
    assert "outside the 2 mm that m.safetensors was trained on" in lines(four_times, profile, "spacing")[0]
    slightly = sitk.Image(template_lr)
    slightly.SetSpacing((2.5, 1.8, 1.0))
    assert lines(slightly, profile, "spacing") == []
    assert ood_warnings(four_times, AXES, {}) == []  # no profile: unknown range, no range warning
    malformed = {"lr_spacing_mm": "2 mm", "lr_slice_size": [128, 64], "max_noise": None, "histogram": [1.0]}
    assert ood_warnings(four_times, AXES, malformed) == []  # a malformed entry skips its check, never raises


def test_slice_size_outside_the_training_range_warns(template_lr: sitk.Image, profile: dict) -> None:
    assert lines(template_lr, profile, "slice size") == []
    big = sitk.Image([300, 40, 2], sitk.sitkFloat32)
    big.SetSpacing((2.0, 2.0, 1.0))
    assert len(lines(big, profile, "slice size 300x40 pixels")) == 1


def test_noise_above_the_training_noise_warns(template_lr: sitk.Image, profile: dict) -> None:
    hr = crop_to_multiple(sitk.ReadImage(str(icbm152_t1_path()), sitk.sitkFloat32)[:, :, 80:86], 2, AXES)
    noisy = degrade_volume(hr, 2, AXES, AcquisitionConfig(noise=0.12), np.random.default_rng(0))
    assert len(lines(noisy, profile, "estimated noise level")) == 1
    trained = degrade_volume(hr, 2, AXES, AcquisitionConfig(noise=0.04), np.random.default_rng(0))
    assert lines(trained, profile, "noise") == []


def test_far_intensity_histogram_warns(template_lr: sitk.Image, profile: dict) -> None:
    array = sitk.GetArrayFromImage(template_lr)
    assert histogram_distance(SliceLayout.for_axes(AXES).to_slices(array), profile["histogram"]) < 0.02
    mask = with_array(template_lr, (array > 0.3 * array.max()) * 100.0)  # a binary image: nothing like an MRI
    bundled = dict(profile, histogram=read_metadata(str(default_checkpoint(2))).data_profile["histogram"])  # the shipped ×2 profile
    assert len(lines(mask, bundled, "intensity histogram is far")) == 1
    assert lines(template_lr, profile, "histogram") == [] and lines(template_lr, bundled, "histogram") == []


def test_already_upsampled_input_warns(template_lr: sitk.Image, profile: dict) -> None:
    """A bicubic ×2 upsampling and an SR result of the native input, against the native input itself."""
    assert lines(template_lr, profile, "Nyquist") == []
    bicubic = super_resolve(template_lr, 2, method="bicubic", plane=AXES)
    assert len(lines(bicubic, {}, "already upsampled")) == 1
    slab = sitk.ReadImage(str(icbm152_t1_path()), sitk.sitkFloat32)[:, :, 80:86]
    lr4 = degrade_volume(crop_to_multiple(slab, 4, AXES), 4, AXES, AcquisitionConfig())
    twice = super_resolve(lr4, 4, method="lanczos", plane=AXES)
    assert len(lines(twice, {}, "already upsampled")) == 1
    assert nyquist_ratio(np.zeros((1, 8, 8))) is None  # too small to tell


def test_acquisition_warning_is_the_inference_line(template_lr: sitk.Image) -> None:
    other = ood_warnings(template_lr, AXES, None, checkpoint_name="m.safetensors", acquisition=(["kspace"], "bicubic"))
    assert other == [
        "checkpoint m.safetensors was trained for kspace acquisition, not bicubic: the result may show artefacts; see docs/model-card.md"
    ]
    assert ood_warnings(template_lr, AXES, None, acquisition=(["kspace", "bicubic"], "bicubic")) == []


def test_training_profile_of_a_recipe() -> None:
    cfg = load_config(str(REPO / "configs" / "tiny_smoke.yaml"))
    found = data_profile(cfg, samples=16)
    assert found["lr_spacing_mm"] == [2.0, 2.0] and found["max_noise"] == 0.0
    assert found["lr_slice_size"] == [98, 116]  # the template's 197x233 axial slices at x2
    assert sum(found["histogram"]) == pytest.approx(1.0, abs=1e-4) and found["samples"] == 16
    assert data_profile(cfg, samples=16) == found  # cached and deterministic


def test_data_profile_is_stored_checked_and_optional(tmp_path: Path) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    metadata = read_metadata(str(path))
    stored = json.loads(metadata.to_json())  # empty late fields are left out: format-2 checksums of older files hold
    assert metadata.data_profile == {} and "data_profile" not in stored and "onnx_sha256" not in stored
    model, _ = load_generator(str(path))
    profile = {"lr_spacing_mm": [2.0, 2.0], "max_noise": 0.04}
    save_checkpoint(str(tmp_path / "p.safetensors"), model.state_dict(), CheckpointMetadata(**{**vars(metadata), "data_profile": profile}))
    assert read_metadata(str(tmp_path / "p.safetensors")).data_profile == profile
    bad = json.loads(metadata.to_json())
    bad["data_profile"] = [1, 2]
    with pytest.raises(CheckpointError, match="data_profile must be a mapping"):
        parse_metadata(json.dumps(bad), tmp_path / "x.json")


def test_add_data_profile_script_updates_a_checkpoint_in_place(tmp_path: Path) -> None:
    import runpy

    main = runpy.run_path(str(REPO / "scripts" / "add_data_profile.py"))["main"]
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    before = read_metadata(str(path))
    assert main([str(path), str(REPO / "configs" / "tiny_smoke.yaml")]) == 0
    after = read_metadata(str(path))
    assert after.data_profile["lr_spacing_mm"] == [2.0, 2.0] and after.weights_sha256 == before.weights_sha256
    assert json.loads(path.with_suffix(".json").read_text())["data_profile"] == after.data_profile
    assert main([str(path), str(REPO / "configs" / "fagan_x4_acquisition.yaml")]) == 2  # not its recipe


def test_the_histogram_check_is_quiet_on_the_bundled_models_own_held_out_data_and_warns_on_a_label_map() -> None:
    """At 0.25 it warned on the noise-free held-out template slab (0.25-0.27) against the stage-4 profiles."""
    from fagan_engine.mri.forward_model import degrade
    from fagan_engine.training.acquisition_eval import held_out_slab
    from fagan_engine.util.config import NormalizationConfig

    for scale, acquisition in ((2, "kspace"), (4, "bicubic")):
        bundled = default_checkpoint(scale, acquisition)
        metadata = read_metadata(str(bundled))
        trained, normalization = metadata.data_profile["histogram"], NormalizationConfig(**metadata.normalization)
        slab = sitk.GetArrayFromImage(held_out_slab(bundled)[0]).astype(np.float32)
        rows, cols = (n - n % scale for n in slab.shape[1:])
        lr = degrade(slab[:, :rows, :cols], scale, AcquisitionConfig(model=acquisition))
        assert histogram_distance(lr, trained, normalization) <= HISTOGRAM_DISTANCE
        assert histogram_distance((lr > np.percentile(lr, 60)).astype(np.float32), trained, normalization) > HISTOGRAM_DISTANCE


def test_a_segmentation_loaded_as_a_volume_warns_and_a_uint16_scan_does_not(template_lr: sitk.Image, profile: dict) -> None:
    """A 4-label tissue map was super-resolved into 3,518 fractional values without a word: its histogram is as close to
    the training data's as a T1's."""
    array = sitk.GetArrayFromImage(template_lr)
    labels = np.digitize(array, np.quantile(array, [0.3, 0.6, 0.85])).astype(np.float32)  # 0..3
    assert len(lines(with_array(template_lr, labels), profile, "4 distinct whole-number values")) == 1
    scan = np.round(array / array.max() * 4000)  # a uint16-like MR: whole numbers, thousands of them
    assert lines(with_array(template_lr, scan), profile, "label map") == []
    assert lines(with_array(template_lr, np.full_like(array, 7.0)), profile, "label map") == []  # constant: not labels


def test_pixels_far_from_square_warn(template_lr: sitk.Image, profile: dict) -> None:
    """A coronal plane across 4 mm slices (1x4 mm pixels) passed every check: each spacing alone is in range."""
    rectangular = sitk.Image(template_lr)
    rectangular.SetSpacing((2.0, 5.0, 2.0))
    assert len(lines(rectangular, profile, "the in-plane pixels are 2x5 mm, far from square")) == 1
    slightly = sitk.Image(template_lr)
    slightly.SetSpacing((2.0, 3.2, 2.0))  # rectangular acquisition pixels (0.7x1.1 mm and the like): not flagged
    assert lines(slightly, profile, "far from square") == []


def test_a_constant_input_reports_no_consistency_figures_rather_than_perfect_ones() -> None:
    from fagan_engine.pipeline.report import super_resolve_report
    from fagan_engine.util.options import RunOptions

    image = sitk.Image(16, 16, 3, sitk.sitkFloat32) + 5.0
    report = super_resolve_report(image, RunOptions(scale=2, method="bicubic")).report()
    assert report["summary"]["relative_rms_residual"] is None and report["summary"]["fraction_above_3sigma"] is None
    json.dumps(report, allow_nan=False)
