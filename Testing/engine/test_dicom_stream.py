"""Streaming DICOM output (issue #19): the series is measured slab by slab, spooled to disk (or gathered when the
slices cross the DICOM slice axis) and written at the end with the same rescale, window, geometry and pixels as
the in-memory writer; nothing of it or of the user's files is left when it fails."""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_test_series import folder_digest, oblique_image, read_series
from engine_helpers import fill_disk_after_first_slab, peak_memory_slope

from fagan_engine.cli.sr import main
from fagan_engine.io.dicom_stream import DicomStreamWriter
from fagan_engine.io.dicom_writer import geometry_of, quantize, stored_percentiles, write_dicom_series
from fagan_engine.io.geometry import SliceLayout
from fagan_engine.pipeline.report import super_resolve_report
from fagan_engine.util.errors import OutputError
from fagan_engine.util.options import RunOptions

pydicom = pytest.importorskip("pydicom")
BICUBIC = ["--scale", "2", "--method", "bicubic", "--batch-size", "2", "--progress", "none"]
PER_INSTANCE = ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "ImagePositionPatient",
                "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "SliceLocation", "Rows", "Columns", "PixelData")


def instances(folder: Path) -> List:
    return [pydicom.dcmread(str(p)) for p in sorted(folder.iterdir())]


def test_window_percentiles_from_the_histogram_equal_numpy() -> None:
    rng = np.random.default_rng(3)
    for values in (rng.normal(0, 9000, 5001), rng.integers(-5, 7, 10), np.array([4.0])):
        stored, _, _ = quantize(values)
        counts = np.bincount(stored.astype(np.int64) + 32768, minlength=65536)
        assert np.allclose(stored_percentiles(counts, (0.5, 50, 99.5)), np.percentile(stored, [0.5, 50, 99.5]))


def spy_on_slabs(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    calls: List[str] = []
    streamed = DicomStreamWriter.write

    def write(writer, start, slices):
        calls.append(f"{writer.shown.name} {start}+{len(slices)} spooled={writer.gathered is None}")
        return streamed(writer, start, slices)

    monkeypatch.setattr(DicomStreamWriter, "write", write)
    return calls


@pytest.mark.parametrize("left_handed", [False, True])
@pytest.mark.parametrize("plane", ["axial", "sagittal"])  # spooled along the DICOM slice axis; gathered across it
@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_streamed_series_equals_the_in_memory_series(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys,
                                                     plane: str, dtype: str, left_handed: bool) -> None:
    calls = spy_on_slabs(monkeypatch)
    image = oblique_image(size=(8, 6, 4), integers=False)
    if left_handed:
        direction = np.asarray(image.GetDirection()).reshape(3, 3)
        direction[:, 2] *= -1
        image.SetDirection(direction.ravel().tolist())
    source = tmp_path / "in.nrrd"
    sitk.WriteImage(image, str(source))
    out = tmp_path / "series"
    assert main([str(source), str(out), *BICUBIC, "--plane", plane, "--dtype", dtype]) == 0, capsys.readouterr().err
    slices = 4 if plane == "axial" else 8
    assert calls == [f"series {start}+2 spooled={plane == 'axial'}" for start in range(0, slices, 2)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd", "series"]  # no spool, no staging left
    result = super_resolve_report(image, RunOptions(scale=2, method="bicubic", batch_size=2, plane=plane, output_dtype=dtype))
    memory = write_dicom_series(result.image, str(tmp_path / "memory"))
    streamed_files, written_files = instances(out), instances(memory)
    assert len(streamed_files) == len(written_files) == result.image.GetSize()[2]
    for streamed, written in zip(streamed_files, written_files):
        for keyword in PER_INSTANCE:
            assert streamed.get(keyword) == written.get(keyword), keyword
    back = sitk.GetArrayFromImage(read_series(out))[:: -1 if left_handed else 1]  # a left-handed volume is stored reversed
    expected = sitk.GetArrayFromImage(result.image)
    assert np.abs(back - expected).max() <= 1e-3 * max(np.ptp(expected), 1e-6)


def test_a_failure_while_streaming_dicom_leaves_the_users_series_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    source = tmp_path / "in.nrrd"
    sitk.WriteImage(oblique_image(size=(8, 6, 4)), str(source))
    out = tmp_path / "series"
    assert main([str(source), str(out), *BICUBIC]) == 0  # an earlier output, which --force may replace
    before = folder_digest(out)
    fill_disk_after_first_slab(monkeypatch, DicomStreamWriter)
    code = main([str(source), str(out), *BICUBIC, "--force", "--consistency-map", str(tmp_path / "c.nrrd")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: no space left on device while writing {out}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd", "series"]
    assert folder_digest(out) == before


def test_non_finite_values_are_refused_before_any_instance_is_written(tmp_path: Path) -> None:
    image = oblique_image(size=(4, 4, 3))
    writer = DicomStreamWriter(tmp_path / "series", geometry_of(image), SliceLayout.for_axes((0, 1)), "float32")
    with pytest.raises(OutputError, match="non-finite"):
        writer.write(0, np.full((1, 4, 4), np.nan, np.float32))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_dicom_output_peak_memory_grows_by_at_most_16_bytes_per_output_voxel(tmp_path: Path) -> None:
    """Two ×4 runs to a DICOM series in fresh processes: the slope of peak RSS over output voxels."""
    slope = peak_memory_slope(tmp_path, (8, 48), "", [])
    assert slope <= 16, f"{slope:.1f} bytes per output voxel"
