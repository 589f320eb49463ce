"""Slice-plane selection and the exact physical geometry of a super-resolved volume.

Axes are SimpleITK index axes (0 = i/x, 1 = j/y, 2 = k/z); world coordinates are LPS mm.
A super-resolved image covers exactly the same physical box (voxel corners) as its input:
HR pixel ``j`` along an upsampled axis sits at LR continuous index ``(j + 0.5) / scale - 0.5``,
the convention of PixelShuffle and of bicubic interpolation with ``align_corners=False``.
"""
from __future__ import annotations

import dataclasses
import itertools
import numbers
from typing import Iterable, NamedTuple, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from fagan_engine.util.config import PLANES
from fagan_engine.util.errors import ConfigError, InputError

_WORLD_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}  # LPS: L-R, A-P, S-I
_TIE_RTOL = 1e-5


class SRGeometry(NamedTuple):
    """Size, spacing, origin and direction of a super-resolved image (no voxel memory)."""

    size: Tuple[int, ...]
    spacing: Tuple[float, ...]
    origin: Tuple[float, ...]
    direction: Tuple[float, ...]

    def apply(self, image: sitk.Image) -> sitk.Image:
        """Set this geometry on ``image`` (whose size must match) and return it."""
        if tuple(image.GetSize()) != self.size:
            raise ValueError(f"image size {image.GetSize()} does not match the SR geometry size {self.size}")
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def direction_matrix(image: sitk.Image) -> np.ndarray:
    """The direction cosines as a (dim, dim) matrix; column ``a`` is index axis ``a`` in LPS."""
    dim = image.GetDimension()
    return np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)


def through_plane_axis(image: sitk.Image, plane: str = "auto") -> int:
    """The index axis across the slices of ``plane``.

    ``auto``: the coarsest-spaced axis. ``axial``/``coronal``/``sagittal``: the index axis
    whose direction is most aligned (largest |cosine|) with S-I / A-P / L-R, so oblique
    acquisitions work. Near-ties (relative 1e-5) go to the largest index.
    """
    if plane not in PLANES:
        raise ConfigError(f"plane must be one of {', '.join(PLANES)}; got {plane!r}")
    if image.GetDimension() != 3:
        raise ValueError(f"plane selection needs a 3D image, got {image.GetDimension()}D")
    if plane == "auto":
        return coarsest_axis(image.GetSpacing())
    return _last_argmax(np.abs(direction_matrix(image)[_WORLD_AXIS[plane], :]))


def coarsest_axis(spacing: Sequence[float]) -> int:
    """The index axis of the largest spacing (near-ties to the largest index): ``through_plane_axis``'s ``auto``."""
    return _last_argmax(spacing)


def plane_axes(image: sitk.Image, plane: str = "auto") -> Tuple[int, int]:
    """The two in-plane index axes of ``plane``, in increasing order (see ``through_plane_axis``). With ``auto``, a volume of
    one slice (exactly one axis of size 1) is super-resolved in that slice, whatever its spacing says (a single DICOM
    slice reads as 1 mm thick, a NIfTI slice may store any pixdim)."""
    single = [axis for axis, size in enumerate(image.GetSize()) if size == 1] if plane == "auto" else []
    through = single[0] if len(single) == 1 else through_plane_axis(image, plane)
    first, second = (axis for axis in range(3) if axis != through)
    return first, second


def super_resolved_geometry(image: sitk.Image, scale: int, axes: Iterable[int]) -> SRGeometry:
    """Geometry of ``image`` upsampled by ``scale`` along ``axes`` with the same physical box.

    Size is multiplied and spacing divided by ``scale`` along ``axes``; the direction is kept
    and ``origin' = origin + D @ delta`` with ``delta[a] = 0.5 * spacing[a] * (1 / scale - 1)``
    on upsampled axes (0 elsewhere), so voxel corners stay where they were.
    """
    dim = image.GetDimension()
    upsampled = set(axes)
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    if not upsampled <= set(range(dim)):
        raise ValueError(f"axes {sorted(upsampled)} are not index axes of a {dim}D image")
    factor = np.array([scale if axis in upsampled else 1 for axis in range(dim)], dtype=float)
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    new_spacing = spacing / factor
    origin = np.asarray(image.GetOrigin(), dtype=float) + direction_matrix(image) @ (0.5 * (new_spacing - spacing))
    size = tuple(int(n * f) for n, f in zip(image.GetSize(), factor))
    return SRGeometry(size, tuple(new_spacing.tolist()), tuple(origin.tolist()), tuple(image.GetDirection()))


def super_resolved_reference(
    image: sitk.Image, scale: int, axes: Iterable[int], pixel_type: int = sitk.sitkFloat32
) -> sitk.Image:
    """A zero-filled image with the SR geometry (see ``super_resolved_geometry``).

    It allocates the full HR volume; use ``super_resolved_geometry(...).apply(result)`` to
    stamp the geometry on an existing result without the extra memory.
    """
    geometry = super_resolved_geometry(image, scale, axes)
    return geometry.apply(sitk.Image(geometry.size, pixel_type))


def physical_corners(image: sitk.Image) -> np.ndarray:
    """The (2**dim, dim) LPS corners of the voxel-grid box (centres +- half a voxel)."""
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    origin = np.asarray(image.GetOrigin(), dtype=float)
    matrix = direction_matrix(image) * spacing
    extremes = itertools.product(*[(-0.5, n - 0.5) for n in image.GetSize()])
    return np.array([origin + matrix @ np.asarray(corner) for corner in extremes])


def same_physical_extent(first: sitk.Image, second: sitk.Image, tol: float = 1e-4) -> bool:
    """True when both images' voxel-grid boxes have the same corners (in index order) within ``tol`` mm."""
    if first.GetDimension() != second.GetDimension():
        return False
    return bool(np.allclose(physical_corners(first), physical_corners(second), rtol=0.0, atol=tol))


def _last_argmax(values: Sequence[float]) -> int:
    """Index of the largest value; near-ties go to the largest index (deterministic)."""
    top = float(np.max(values))
    return max(index for index, value in enumerate(values) if np.isclose(value, top, rtol=_TIE_RTOL, atol=0.0))


Plane = Union[str, Tuple[int, int]]
"""A plane name (auto/axial/coronal/sagittal) or the two in-plane SimpleITK index axes."""


@dataclasses.dataclass
class SliceLayout:
    """How a volume array (z, y, x) maps to a stack of 2D slices (n, rows, cols) and back."""

    through_axis: int
    in_plane_axes: Tuple[int, int]

    @classmethod
    def for_axes(cls, sitk_axes: Sequence[int]) -> "SliceLayout":
        np_axes = tuple(sorted(2 - a for a in sitk_axes))
        through = ({0, 1, 2} - set(np_axes)).pop()
        return cls(through, (np_axes[0], np_axes[1]))

    def to_slices(self, array: np.ndarray) -> np.ndarray:
        return np.moveaxis(array, self.through_axis, 0)

    def from_slices(self, slices: np.ndarray) -> np.ndarray:
        return np.moveaxis(slices, 0, self.through_axis)


def explicit_axes(axes: Sequence[int]) -> Tuple[int, int]:
    """Two different in-plane SimpleITK axes, sorted; InputError otherwise (also for anything but a pair of whole numbers)."""
    try:
        pair = tuple(sorted(axes))
    except TypeError:  # not a sequence, or of values that do not compare
        pair = ()
    if len(pair) != 2 or not all(isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in pair) \
            or pair[0] == pair[1] or not set(pair) <= {0, 1, 2}:
        raise InputError(f"in-plane axes must be two different axes among 0, 1, 2; got {axes!r}")
    return int(pair[0]), int(pair[1])
