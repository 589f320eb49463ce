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


def test_the_gap_policy_on_one_volume_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """It was accepted and did nothing (a batch, which may mix files and series folders, still takes it)."""
    volume = tmp_path / "v.nrrd"
    sitk.WriteImage(oblique_image(size=(16, 12, 6)), str(volume))
    code = main([str(volume), str(tmp_path / "sr.nrrd"), "--scale", "2", "--method", "bicubic", "--dicom-gaps", "resample",
                 "--progress", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: --dicom-gaps applies to a DICOM series folder, and {volume} is a file"]
    assert not (tmp_path / "sr.nrrd").exists()
    code = main([str(volume), "--output-dir", str(tmp_path / "out"), "--scale", "2", "--method", "bicubic", "--dicom-gaps",
                 "resample", "--progress", "none"])
    assert code == 0 and (tmp_path / "out" / "v.nrrd").is_file()
    code = main([str(tmp_path / "missing.nrrd"), str(tmp_path / "sr.nrrd"), "--scale", "2", "--method", "bicubic",
                 "--dicom-gaps", "resample", "--progress", "none"])
    assert code == 2 and "input not found" in capsys.readouterr().err  # not "is a file"
