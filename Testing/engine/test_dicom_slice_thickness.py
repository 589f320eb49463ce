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
