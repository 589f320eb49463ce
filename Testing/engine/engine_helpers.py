"""Builders shared by the engine tests (importable by name, unlike conftest)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk


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
    from fagan_engine.models.archs import build_generator, preset_config
    from fagan_engine.models.checkpoint import CheckpointMetadata, save_checkpoint
    from fagan_engine.util.config import NormalizationConfig

    cfg = preset_config("fagan", scale, n_feats=16, n_blocks=1, **overrides)
    model = build_generator(cfg)
    return save_checkpoint(str(path), model.state_dict(), CheckpointMetadata.create(cfg, NormalizationConfig()))
