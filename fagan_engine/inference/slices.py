"""Slice-wise super-resolution of 3D volumes with exact geometry and bounded memory.

The volume is cut into 2D slices along the through-plane axis, normalised with the
checkpoint's robust percentile convention, pushed through a *runner* (``inference.runners``) in
batches, optionally in overlapping tiles, mapped back to the input's intensity units and written
into an output volume (or handed on slab by slab, ``stream_slices``) whose geometry comes from ``io.geometry.super_resolved_geometry``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from fagan_engine.inference.runners import Runner, tiled
from fagan_engine.io.geometry import Plane, SliceLayout, SRGeometry, explicit_axes, plane_axes, super_resolved_geometry
from fagan_engine.io.volume_io import cast_array
from fagan_engine.mri.normalization import IntensityNormalizer
from fagan_engine.util.config import NormalizationConfig
from fagan_engine.util.errors import InputError

Progress = Callable[[int, int], None]
MIN_SLICE = 4
"""Smallest in-plane LR size (pixels) the networks accept (2×2 attention pooling, 3×3 convs)."""


@dataclasses.dataclass
class SlabStream:
    """The SR slices of one volume, batch by batch: ``slabs`` yields (first slice, float32 (n, rows·s, cols·s)
    slices in the input's intensity units), in order; ``layout`` places them in the volume of ``geometry``."""

    layout: SliceLayout
    geometry: SRGeometry
    count: int
    slabs: Iterator[Tuple[int, np.ndarray]]


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
    return gather(stream_slices(image, scale, plane, runner, normalization, batch_size, tile_size, progress), output_dtype)


def gather(stream: SlabStream, output_dtype: str) -> sitk.Image:
    """Every slab of ``stream`` in ``output_dtype`` (``io.volume_io.cast_array``), as one SR image."""
    gathered = SlabGather(stream, output_dtype)
    for start, slices in stream.slabs:
        gathered.write(start, cast_array(slices, output_dtype))
    return gathered.image()


def stream_slices(image: sitk.Image, scale: int, plane: Plane, runner: Runner, normalization: NormalizationConfig, batch_size: int,
                  tile_size: Optional[int], progress: Optional[Progress]) -> SlabStream:
    """``run_slices`` one batch at a time: nothing of the SR volume is held (the caller writes or keeps each slab)."""
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
    slices = layout.to_slices(sitk.GetArrayViewFromImage(image))
    normalizer = IntensityNormalizer.fit(sitk.GetArrayViewFromImage(image), normalization)

    def slabs() -> Iterator[Tuple[int, np.ndarray]]:
        total = slices.shape[0]
        for start in range(0, total, batch_size):
            batch = normalizer.forward(np.ascontiguousarray(slices[start : start + batch_size], dtype=np.float32))
            yield start, normalizer.inverse(runner(batch[:, None])[:, 0]).astype(np.float32, copy=False)
            if progress is not None:
                progress(min(start + batch_size, total), total)

    return SlabStream(layout, super_resolved_geometry(image, scale, axes), slices.shape[0], slabs())


class SlabGather:
    """The slabs of a ``SlabStream`` gathered into one SR image in ``output_dtype`` (the in-memory result)."""

    def __init__(self, stream: SlabStream, output_dtype: str) -> None:
        self.layout = stream.layout
        self.geometry = stream.geometry
        self.volume = np.empty(tuple(reversed(stream.geometry.size)), np.dtype(output_dtype))

    def write(self, start: int, slices: np.ndarray) -> None:
        self.layout.to_slices(self.volume)[start : start + len(slices)] = slices

    def image(self) -> sitk.Image:
        """The SR image with its exact geometry (the gathered array is released)."""
        volume, self.volume = self.volume, None
        return self.geometry.apply(sitk.GetImageFromArray(volume, isVector=False))
