"""Shared fixtures: a crop of the real ICBM152 template and small oblique volumes."""
from __future__ import annotations

from pathlib import Path

import pytest
import SimpleITK as sitk

from fagan_engine.mri.sample_data import icbm152_t1_path


@pytest.fixture(scope="session")
def icbm_crop() -> sitk.Image:
    """A 48×56×6 float32 crop through the ICBM152 T1 template (real MRI intensities)."""
    image = sitk.ReadImage(str(icbm152_t1_path()), sitk.sitkFloat32)
    return image[70:118, 90:146, 90:96]


@pytest.fixture(scope="session")
def icbm_crop_file(icbm_crop: sitk.Image, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("icbm") / "crop.nii.gz"
    sitk.WriteImage(icbm_crop, str(path))
    return path
