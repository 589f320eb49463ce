"""Builders shared by the engine tests (importable by name, unlike conftest)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence, Tuple

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


def textured_block(slices: int = 3) -> sitk.Image:
    """A 48x48 textured block on a dark background, ``slices`` slices of 3 mm (large enough to adapt on)."""
    rng = np.random.default_rng(0)
    array = np.zeros((slices, 48, 48), np.float32)
    array[:, 8:40, 6:42] = 50 + 20 * rng.random((slices, 32, 36))
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 3.0))
    return image


def save_untrained_checkpoint(path: Path, scale: int, **overrides) -> Path:
    """A small random-weight FA-GAN checkpoint."""
    from fagan_engine.models.archs import build_generator, preset_config
    from fagan_engine.models.checkpoint import CheckpointMetadata, save_checkpoint
    from fagan_engine.util.config import NormalizationConfig

    cfg = preset_config("fagan", scale, n_feats=16, n_blocks=1, **overrides)
    model = build_generator(cfg)
    return save_checkpoint(str(path), model.state_dict(), CheckpointMetadata.create(cfg, NormalizationConfig()))


PEAK_CHILD = """
import sys
from fagan_engine.__main__ import main
code = main(["sr"] + sys.argv[2:])
open(sys.argv[1], "w").write([line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0].split()[1])
sys.exit(code)
"""


def peak_memory_slope(folder: Path, slices: Tuple[int, int], output_suffix: str, flags: Sequence[str]) -> float:
    """Bytes of peak RSS (``VmHWM``) per output voxel between two ``fagan-sr`` ×4 runs in fresh processes, on random
    128² inputs of ``slices`` slices; outputs ``sr<n><output_suffix>`` (``""``: a DICOM series folder)."""
    peaks, voxels = [], []
    for count in slices:
        array = np.random.default_rng(count).random((count, 128, 128), dtype=np.float32) * 100
        source = folder / f"in{count}.nii.gz"
        sitk.WriteImage(sitk.GetImageFromArray(array), str(source))
        peak = folder / f"peak{count}"
        command = [sys.executable, "-c", PEAK_CHILD, str(peak), str(source), str(folder / f"sr{count}{output_suffix}"),
                   "--scale", "4", "--method", "bicubic", "--progress", "none", *flags]
        subprocess.run(command, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=str(Path(__file__).resolve().parents[2]))
        peaks.append(int(peak.read_text()) * 1024)
        voxels.append(count * 512 * 512)
    return (peaks[1] - peaks[0]) / (voxels[1] - voxels[0])


def fill_disk_after_first_slab(monkeypatch, writer_class) -> None:
    """Make ``writer_class.write`` (a slab writer with ``shown``) fail like a full disk on every slab after the first."""
    from fagan_engine.util.errors import OutputError

    streamed = writer_class.write

    def full_disk(writer, start, slices):
        if start > 0:
            raise OutputError(f"no space left on device while writing {writer.shown}")
        return streamed(writer, start, slices)

    monkeypatch.setattr(writer_class, "write", full_disk)
