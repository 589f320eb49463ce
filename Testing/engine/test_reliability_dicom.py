"""Issue #20 item 8: a DICOM slice that does not share the series' plane is refused; gaps keep the
acquired spacing and the error names the right slices and the CLI flag."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_test_series import oblique_image, write_mr_series

from fagan_engine.cli.sr import main
from fagan_engine.io.volume_io import read_volume
from fagan_engine.util.errors import InputError


def series(tmp_path: Path, count: int = 6) -> Path:
    return write_mr_series(oblique_image(size=(16, 12, count), spacing=(0.9, 1.1, 1.0)), tmp_path / "series")


def edit_slice(folder: Path, index: int, change) -> None:
    path = sorted(folder.iterdir())[index]
    ds = pydicom.dcmread(str(path))
    change(ds)
    ds.save_as(str(path))


def rotate_30_degrees_in_plane(ds: pydicom.Dataset) -> None:
    row, column = np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float)
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*(c * row + s * column), *(-s * row + c * column))]


@pytest.mark.parametrize("change, tag", [
    (rotate_30_degrees_in_plane, "ImageOrientationPatient"),
    (lambda ds: setattr(ds, "PixelSpacing", ["2", "2"]), "PixelSpacing"),
], ids=["orientation", "pixel-spacing"])
def test_one_inconsistent_slice_is_refused(tmp_path: Path, change, tag: str) -> None:
    folder = series(tmp_path)
    edit_slice(folder, 3, change)
    with pytest.raises(InputError, match=f"slice003.dcm has {tag}") as excinfo:
        read_volume(str(folder))
    assert "\n" not in str(excinfo.value)


def test_resampling_gaps_keeps_the_acquired_spacing(tmp_path: Path) -> None:
    folder = series(tmp_path, count=10)
    for index, path in enumerate(sorted(folder.iterdir())):
        if index not in (0, 3, 9):
            path.unlink()
    image = read_volume(str(folder), dicom_gaps="resample")
    assert image.GetSize()[2] == 4 and image.GetSpacing()[2] == pytest.approx(3.0, rel=1e-4)


def test_gap_error_names_the_gap_and_the_cli_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = series(tmp_path, count=10)
    for index, path in enumerate(sorted(folder.iterdir())):
        if index not in (0, 3, 9):
            path.unlink()
    assert main([str(folder), str(tmp_path / "o.nrrd"), "--scale", "2", "--method", "bicubic", "--progress", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "between slices slice003.dcm and slice009.dcm" in err[0]
    assert "--dicom-gaps resample" in err[0] and "read_volume" not in err[0]


def test_slice_shifted_within_its_plane_is_refused_by_name(tmp_path: Path) -> None:
    folder = series(tmp_path)

    def shift_5mm_along_x(ds) -> None:
        ds.ImagePositionPatient = [f"{float(ds.ImagePositionPatient[0]) + 5.0:.6f}"] + list(ds.ImagePositionPatient[1:])

    edit_slice(folder, 3, shift_5mm_along_x)
    with pytest.raises(InputError, match="slice003.dcm is shifted .* within the slice plane") as excinfo:
        read_volume(str(folder))
    assert "\n" not in str(excinfo.value)
