"""Slice-wise volume super-resolution: geometry, intensities, planes, batching, tiling."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from engine_helpers import oblique_volume, save_untrained_checkpoint

from fagan_engine.inference.runners import bicubic_runner, tiled
from fagan_engine.io.geometry import physical_corners, plane_axes
from fagan_engine.mri.forward_model import AcquisitionConfig, degrade_volume
from fagan_engine.mri.metrics import volume_metrics
from fagan_engine.pipeline.report import super_resolve
from fagan_engine.util.errors import CheckpointError, InputError


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("method", ["bicubic", "fagan"])
def test_oblique_anisotropic_geometry_is_exact(scale: int, method: str, tmp_path: Path) -> None:
    image = oblique_volume()
    checkpoint = save_untrained_checkpoint(tmp_path / "m.safetensors", scale) if method == "fagan" else None
    out = super_resolve(image, scale, checkpoint=checkpoint, method=method)
    axes = plane_axes(image, "auto")
    assert axes == (0, 1)  # the two finest-spaced axes (0.9, 1.3 mm); 3 mm is through-plane
    expected_size = [n * scale if a in axes else n for a, n in enumerate(image.GetSize())]
    assert list(out.GetSize()) == expected_size
    expected_spacing = [s / scale if a in axes else s for a, s in enumerate(image.GetSpacing())]
    assert np.allclose(out.GetSpacing(), expected_spacing, atol=1e-9)
    assert out.GetDirection() == image.GetDirection()
    assert np.abs(physical_corners(out) - physical_corners(image)).max() < 1e-4
    assert out.GetPixelID() == sitk.sitkFloat32


def test_bicubic_preserves_intensity_units_of_a_smooth_volume() -> None:
    z, y, x = np.mgrid[0:4, 0:24, 0:24].astype(np.float32)
    array = 1000.0 + 300.0 * np.sin(x / 6.0) * np.cos(y / 7.0) + z
    image = sitk.GetImageFromArray(array)
    out = sitk.GetArrayFromImage(super_resolve(image, 2, method="bicubic"))
    assert abs(out.mean() - array.mean()) < 2.0
    assert np.allclose(out[:, ::2, ::2][:, 4:-4, 4:-4], array[:, 4:-4, 4:-4], atol=25.0)


def test_network_output_returns_to_input_intensity_units(tmp_path: Path, icbm_crop: sitk.Image) -> None:
    checkpoint = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    out = sitk.GetArrayFromImage(super_resolve(icbm_crop, 2, checkpoint=checkpoint))
    ref = sitk.GetArrayFromImage(icbm_crop)
    # an untrained network with the bicubic image residual stays close to the input's units
    assert abs(out.mean() - ref.mean()) < 0.1 * ref.max()


def test_plane_choice_selects_the_upsampled_axes() -> None:
    image = oblique_volume(size=(8, 8, 8), spacing=(1.0, 1.0, 1.0))
    for plane in ("axial", "coronal", "sagittal"):
        axes = plane_axes(image, plane)
        out = super_resolve(image, 2, plane=plane, method="bicubic")
        assert [n // m for n, m in zip(out.GetSize(), image.GetSize())] == [2 if a in axes else 1 for a in range(3)]
    explicit = super_resolve(image, 2, plane=(0, 2), method="bicubic")
    assert explicit.GetSize() == (16, 8, 16)


def test_batch_size_does_not_change_the_result(tmp_path: Path, icbm_crop: sitk.Image) -> None:
    checkpoint = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    a = sitk.GetArrayFromImage(super_resolve(icbm_crop, 2, checkpoint=checkpoint, batch_size=1))
    b = sitk.GetArrayFromImage(super_resolve(icbm_crop, 2, checkpoint=checkpoint, batch_size=4))
    assert np.allclose(a, b, atol=1e-4)


def test_tiling_is_exact_for_a_purely_convolutional_network(tmp_path: Path) -> None:
    from fagan_engine.inference.runners import torch_runner
    from fagan_engine.models.archs import build_generator, preset_config

    model = build_generator(preset_config("srgan", 2, n_feats=8, n_blocks=2)).eval()
    runner = torch_runner(model, "cpu")
    batch = np.random.default_rng(0).random((2, 1, 40, 36), dtype=np.float32)
    assert np.allclose(tiled(runner, 2, tile=16, overlap=16)(batch), runner(batch), atol=1e-5)
    assert np.allclose(tiled(bicubic_runner(2), 2, tile=12, overlap=4)(batch), bicubic_runner(2)(batch), atol=1e-5)


def test_progress_reports_every_batch(icbm_crop: sitk.Image) -> None:
    seen = []
    super_resolve(icbm_crop, 2, method="bicubic", batch_size=4, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(4, 6), (6, 6)]


def test_bad_arguments_give_clear_errors(tmp_path: Path) -> None:
    image = oblique_volume()
    with pytest.raises(InputError, match="scale must be one of"):
        super_resolve(image, 3, method="bicubic")
    with pytest.raises(InputError, match="at least 4x4"):
        super_resolve(oblique_volume(size=(3, 16, 5)), 2, method="bicubic")
    with pytest.raises(InputError, match="device 'cuda'"):
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        super_resolve(image, 2, checkpoint=save_untrained_checkpoint(tmp_path / "c.safetensors", 2), device="cuda")
    with pytest.raises(CheckpointError, match="is for x2"):
        super_resolve(image, 4, checkpoint=save_untrained_checkpoint(tmp_path / "m.safetensors", 2))
    nan = sitk.GetArrayFromImage(image)
    nan[1, 2, 3] = np.nan
    nan_image = sitk.GetImageFromArray(nan)
    with pytest.raises(InputError, match="1 non-finite"):
        super_resolve(nan_image, 2, method="bicubic")
    assert np.isfinite(sitk.GetArrayFromImage(super_resolve(nan_image, 2, method="bicubic", nan_policy="zero"))).all()


def test_integer_output_dtype_is_rounded_and_clipped_and_says_so() -> None:
    """Clipping and coarse rounding are warned about; a range that would round to one value is refused before any
    work (an ADC map in mm²/s used to come out all zeros with exit 0)."""
    from fagan_engine.pipeline.report import super_resolve_report
    from fagan_engine.util.options import RunOptions

    image = sitk.GetImageFromArray(np.linspace(0, 70000, 2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8))
    out = super_resolve(image, 2, method="bicubic", output_dtype="int16")
    assert out.GetPixelID() == sitk.sitkInt16
    assert sitk.GetArrayFromImage(out).max() == 32767
    report = super_resolve_report(image, RunOptions(scale=2, method="bicubic", output_dtype="int16"), consistency=False)
    assert any("clips the input's range" in w for w in report.warnings)
    coarse = super_resolve_report(image / 1000.0, RunOptions(scale=2, method="bicubic", output_dtype="uint16"), consistency=False)
    assert any("to about 71 levels" in w for w in coarse.warnings)
    with pytest.raises(InputError, match="to one value"):
        super_resolve(image * 1e-8, 2, method="bicubic", output_dtype="int16")


def test_an_integer_type_that_clips_the_result_says_so() -> None:
    """An input that fits uint16 overshoots it after SR near bright edges: 4.6 % of a DICOM series' voxels were clipped to
    65535 without a word."""
    from fagan_engine.pipeline.report import super_resolve_report
    from fagan_engine.util.options import RunOptions

    array = np.full((2, 8, 8), 60000, np.float32)
    array[:, :, 4:] = 65535  # a bright edge at the top of the type: bicubic overshoots it
    options = RunOptions(scale=2, method="bicubic", output_dtype="uint16")
    report = super_resolve_report(sitk.GetImageFromArray(array), options, consistency=False)
    (note,) = [w for w in report.warnings if "of the result" in w]
    float_result = sitk.GetArrayFromImage(super_resolve(sitk.GetImageFromArray(array), 2, method="bicubic"))
    assert f"clipped {int(np.count_nonzero(float_result >= 65535.5))} voxels" in note and "[0, 65535]" in note
    assert not any("of the result" in w for w in super_resolve_report(
        sitk.GetImageFromArray(array - 10000), options, consistency=False).warnings)


@pytest.mark.parametrize("acquisition", ["kspace", "bicubic", "gaussian"])
def test_acquisition_then_bicubic_lands_on_the_hr_grid(icbm_crop: sitk.Image, acquisition: str) -> None:
    axes = plane_axes(icbm_crop, "axial")
    lr = degrade_volume(icbm_crop, 2, axes, AcquisitionConfig(model=acquisition))
    out = super_resolve(lr, 2, plane=axes, method="bicubic")
    assert out.GetSize() == icbm_crop.GetSize()
    assert np.allclose(out.GetOrigin(), icbm_crop.GetOrigin(), atol=1e-6)
    assert np.allclose(out.GetSpacing(), icbm_crop.GetSpacing(), atol=1e-9)
    metrics = volume_metrics(sitk.GetArrayFromImage(icbm_crop), sitk.GetArrayFromImage(out), crop=2)
    assert metrics["psnr"] > 20 and 0.5 < metrics["ssim"] <= 1.0


def test_numpy_bicubic_equals_torch_bicubic() -> None:
    import torch
    import torch.nn.functional as F

    batch = np.random.default_rng(3).random((2, 1, 7, 13), dtype=np.float32)
    for scale in (2, 4, 8):
        expected = F.interpolate(torch.from_numpy(batch), scale_factor=scale, mode="bicubic", align_corners=False).numpy()
        assert np.abs(bicubic_runner(scale)(batch) - expected).max() < 1e-5


def test_bundled_models_and_bicubic_work_without_torch(icbm_crop_file: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import SimpleITK as sitk\n"
        "from fagan_engine import super_resolve\n"
        f"image = sitk.ReadImage({str(icbm_crop_file)!r})\n"
        "print(super_resolve(image, 2, plane='axial').GetSize(), super_resolve(image, 4, method='bicubic').GetSize())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(96, 112, 6) (192, 224, 6)"


def test_large_batches_are_split_to_bound_memory() -> None:
    from fagan_engine.inference.batching import MAX_OUTPUT_PIXELS, capped

    calls = []

    def record(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return bicubic_runner(4)(batch)

    batch = np.zeros((10, 1, 256, 256), dtype=np.float32)  # 1024² outputs: 2 slices exceed the cap
    out = capped(record, 4)(batch)
    assert out.shape == (10, 1, 1024, 1024) and max(calls) * 1024 * 1024 <= max(MAX_OUTPUT_PIXELS, 1024 * 1024)
