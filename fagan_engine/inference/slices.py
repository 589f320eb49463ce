"""Slice-wise super-resolution of 3D volumes with exact geometry and bounded memory.

The volume is cut into 2D slices along the through-plane axis, normalised with the
checkpoint's robust percentile convention, pushed through a *runner* (``inference.runners``) in
batches, optionally in overlapping tiles, mapped back to the input's intensity units and written
into an output volume whose geometry comes from ``io.geometry.super_resolved_geometry``.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from fagan_engine.inference.runners import Runner, tiled
from fagan_engine.io.geometry import Plane, SliceLayout, explicit_axes, plane_axes, super_resolved_geometry
from fagan_engine.io.volume_io import cast_array
from fagan_engine.mri.normalization import IntensityNormalizer
from fagan_engine.util.config import NormalizationConfig
from fagan_engine.util.errors import InputError

Progress = Callable[[int, int], None]
MIN_SLICE = 4
"""Smallest in-plane LR size (pixels) the networks accept (2×2 attention pooling, 3×3 convs)."""


def run_slices(
    image: sitk.Image,
    scale: int,
    plane: Plane,
    runner: Runner,
    normalization: NormalizationConfig,
    batch_size: int,
    tile_size: Optional[int],
    progress: Optional[Progress],
    output_dtype: str,
) -> sitk.Image:
    """Run ``runner`` over the volume's in-plane slices (normalised, batched, optionally tiled) and
    return the SR volume on the exact SR grid, in the input's intensity units."""
    axes = plane_axes(image, plane) if isinstance(plane, str) else explicit_axes(plane)
    size = image.GetSize()
    if min(size[a] for a in axes) < MIN_SLICE:
        raise InputError(
            f"in-plane slice is {size[axes[0]]}x{size[axes[1]]} voxels; the network needs at least {MIN_SLICE}x{MIN_SLICE}"
        )
    if tile_size is not None:
        if tile_size < MIN_SLICE:
            raise InputError(f"tile size must be >= {MIN_SLICE}, got {tile_size}")
        runner = tiled(runner, scale, tile_size)
    layout = SliceLayout.for_axes(axes)
    volume = sitk.GetArrayViewFromImage(image)
    normalizer = IntensityNormalizer.fit(volume, normalization)
    slices = layout.to_slices(volume)
    result = np.empty((slices.shape[0], slices.shape[1] * scale, slices.shape[2] * scale), dtype=np.float32)
    total = slices.shape[0]
    for start in range(0, total, batch_size):
        batch = normalizer.forward(np.ascontiguousarray(slices[start : start + batch_size], dtype=np.float32))
        result[start : start + batch_size] = normalizer.inverse(runner(batch[:, None])[:, 0])
        if progress is not None:
            progress(min(start + batch_size, total), total)
    out = sitk.GetImageFromArray(cast_array(layout.from_slices(result), output_dtype), isVector=False)
    return super_resolved_geometry(image, scale, axes).apply(out)
