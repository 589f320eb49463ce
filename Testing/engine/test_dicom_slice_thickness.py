"""The DICOM Slice Thickness reaches through-plane SR: read_volume keeps it, plan_through_plane uses it."""
from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from dicom_test_series import oblique_image, write_mr_series

from fagan_engine.io.volume_io import read_volume
from fagan_engine.through_plane.plan import plan_through_plane


def test_slice_thickness_from_the_series_header(tmp_path: Path) -> None:
    folder = write_mr_series(oblique_image(size=(16, 12, 5), spacing=(0.9, 0.9, 3.0)), tmp_path / "series")
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.SliceThickness = "2.5"  # thinner than the 3 mm spacing: a 0.5 mm gap
        ds.save_as(path)
    image = read_volume(str(folder))
    assert float(image.GetMetaData("0018|0050")) == pytest.approx(2.5)
    plan = plan_through_plane(image)
    assert plan.thickness == pytest.approx(2.5) and plan.thickness_source == "dicom"


def test_an_in_plane_dicom_result_keeps_the_acquired_thickness_and_a_through_plane_one_gets_its_spacing(tmp_path: Path, capsys) -> None:
    """The in-plane result wrote its slice spacing as SliceThickness: run through-plane on it, the 0.5 mm gap was gone."""
    from fagan_engine.cli.sr import main

    folder = write_mr_series(oblique_image(size=(16, 12, 5), spacing=(0.9, 0.9, 3.0)), tmp_path / "series")
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.SliceThickness = "2.5"
        ds.save_as(path)
    common = ["--method", "bicubic", "--output-format", "dicom", "--progress", "none"]
    assert main([str(folder), str(tmp_path / "inplane"), "--scale", "2", *common]) == 0, capsys.readouterr().err
    written = [pydicom.dcmread(p) for p in sorted((tmp_path / "inplane").iterdir())]
    assert {float(ds.SliceThickness) for ds in written} == {2.5} and float(written[0].SpacingBetweenSlices) == pytest.approx(3.0)
    assert plan_through_plane(read_volume(str(tmp_path / "inplane"))).thickness == pytest.approx(2.5)
    assert main([str(folder), str(tmp_path / "through"), "--through-plane", "--target-spacing", "1.5", "--iterations", "0", *common[2:]]) == 0
    through = pydicom.dcmread(sorted((tmp_path / "through").iterdir())[0])
    assert float(through.SliceThickness) == pytest.approx(1.5) == float(through.SpacingBetweenSlices)
    # in-plane, but in a plane across the slices: the slices are new (1.5 mm apart), the acquired thickness no longer applies
    assert main([str(folder), str(tmp_path / "coronal"), "--scale", "2", "--plane", "coronal", *common]) == 0
    across = pydicom.dcmread(sorted((tmp_path / "coronal").iterdir())[0])
    assert float(across.SliceThickness) == pytest.approx(float(across.SpacingBetweenSlices)) == pytest.approx(1.5)
