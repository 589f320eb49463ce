"""Shared fixtures: a crop of the real ICBM152 template and small oblique volumes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fagan_engine.sample_data import icbm152_t1_path


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


def oblique_volume(size=(20, 16, 5), spacing=(0.9, 1.3, 3.0), seed: int = 0) -> sitk.Image:
    """An anisotropic volume rotated about an oblique axis, with smooth random content."""
    rng = np.random.default_rng(seed)
    array = rng.random(size[::-1]).astype(np.float32) * 100
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 40.25, 7.0))
    axis = np.array([1.0, 2.0, 0.5])
    axis /= np.linalg.norm(axis)
    angle = 0.6
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    image.SetDirection(tuple(rotation.flatten()))
    return image


def save_untrained_checkpoint(path: Path, scale: int, **overrides) -> Path:
    """A small random-weight FA-GAN checkpoint."""
    from fagan_engine.archs import build_generator, preset_config
    from fagan_engine.checkpoint import CheckpointMetadata, save_checkpoint
    from fagan_engine.config import NormalizationConfig

    cfg = preset_config("fagan", scale, n_feats=16, n_blocks=1, **overrides)
    model = build_generator(cfg)
    return save_checkpoint(str(path), model.state_dict(), CheckpointMetadata.create(cfg, NormalizationConfig()))
