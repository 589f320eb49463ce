"""fagan-sr --dicom-gaps: a series with a missing slice is refused by default, resampled on request."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_test_series import oblique_image, write_mr_series

from fagan_engine.cli.sr import main


def test_missing_slice_refused_then_resampled(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = oblique_image(size=(16, 12, 6))
    folder = write_mr_series(image, tmp_path / "series")
    files = sorted(folder.iterdir())
    files[2].unlink()
    out = tmp_path / "sr.nrrd"
    args = [str(folder), str(out), "--scale", "2", "--method", "bicubic", "--progress", "none"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "gap" in err[0] and not out.exists()
    assert main(args + ["--dicom-gaps", "resample"]) == 0
    result = sitk.ReadImage(str(out))
    assert result.GetSize()[2] == 6
    corner = np.array(result.TransformContinuousIndexToPhysicalPoint([-0.5, -0.5, -0.5]))
    assert np.allclose(corner, image.TransformContinuousIndexToPhysicalPoint([-0.5, -0.5, -0.5]), atol=1e-3)
