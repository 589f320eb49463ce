"""Geometry of multi-stack reconstruction: each stack's slices, rigid transforms and the common output grid.

Axes are SimpleITK index axes, world coordinates LPS mm. A stack's transform ``T`` maps a point of
the stack's own (header) frame to the reference frame, where the subject sits as in the reference
stack: ``p_ref = R·(q − c) + c + t`` (``sitk.Euler3DTransform``; the registration of the stack as
fixed image to the reference as moving image gives exactly this map).

Output grid: the reference stack's direction, an isotropic spacing, covering the box (in the
reference's axes) common to every stack's bounding box. Its voxel corners lie on the lattice of
that spacing anchored at the reference's first voxel corner, so with the reference's in-plane
spacing the output's in-plane voxels are the reference's own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from fagan_engine.io.geometry import SRGeometry, direction_matrix, through_plane_axis
from fagan_engine.through_plane.plan import choose_thickness


@dataclass(frozen=True)
class StackSlices:
    """How one stack was sliced: its through-plane axis, slice spacing and thickness (mm)."""

    axis: int
    spacing: float
    thickness: float
    thickness_source: str
    """``argument``, ``dicom``, ``estimate`` or ``spacing`` (``plan.choose_thickness``)."""
    in_plane_spacing: Tuple[float, float]

    @classmethod
    def of(cls, image: sitk.Image, thickness: Optional[float] = None) -> "StackSlices":
        axis = through_plane_axis(image, "auto")
        chosen, source, _ = choose_thickness(image, axis, thickness)
        in_plane = tuple(float(image.GetSpacing()[a]) for a in range(3) if a != axis)
        return cls(axis, float(image.GetSpacing()[axis]), chosen, source, (in_plane[0], in_plane[1]))


def transform_matrix(transform: sitk.Euler3DTransform) -> Tuple[np.ndarray, np.ndarray]:
    """(R, offset) with ``T(q) = R·q + offset``."""
    rotation = np.asarray(transform.GetMatrix(), dtype=float).reshape(3, 3)
    centre = np.asarray(transform.GetCenter(), dtype=float)
    return rotation, centre + np.asarray(transform.GetTranslation(), dtype=float) - rotation @ centre


def index_to_world(image: sitk.Image) -> Tuple[np.ndarray, np.ndarray]:
    """(M, o) with ``world = M·index + o`` (continuous SimpleITK index)."""
    return direction_matrix(image) * np.asarray(image.GetSpacing(), dtype=float)[None, :], np.asarray(image.GetOrigin(), dtype=float)


def corners(image: sitk.Image) -> np.ndarray:
    """The 8 voxel-box corners of ``image`` in world coordinates, (8, 3)."""
    size = np.asarray(image.GetSize(), dtype=float)
    unit = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=float)
    matrix, origin = index_to_world(image)
    return (unit * size - 0.5) @ matrix.T + origin


def common_box(stacks: Sequence[sitk.Image], transforms: Sequence[sitk.Euler3DTransform], reference: int) -> Tuple[np.ndarray, np.ndarray]:
    """(low, high) of a box in the reference's axes (mm from its origin) that lies inside every stack.

    The intersection of the stacks' bounding boxes, shrunk about its centre until its corners (so,
    the stacks being convex, all of it) lie inside every stack's voxel box: for oblique stacks the
    bounding boxes alone would include regions some stack never saw. Empty: ``high <= low``.
    """
    axes = direction_matrix(stacks[reference])
    origin = np.asarray(stacks[reference].GetOrigin(), dtype=float)
    low, high = np.full(3, -np.inf), np.full(3, np.inf)
    for stack, transform in zip(stacks, transforms):
        rotation, offset = transform_matrix(transform)
        local = (corners(stack) @ rotation.T + offset - origin) @ axes
        low, high = np.maximum(low, local.min(axis=0)), np.minimum(high, local.max(axis=0))
    if np.any(high <= low):
        return low, high
    centre, half = 0.5 * (low + high), 0.5 * (high - low)

    def fits(shrink: float) -> bool:
        box = _box_corners(centre - shrink * half, centre + shrink * half) @ axes.T + origin
        return all(_inside(stack, transform, box) for stack, transform in zip(stacks, transforms))

    if fits(1.0):
        return low, high
    lo, hi = 0.0, 1.0
    for _ in range(30):  # bisection on the shrink factor
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return centre - lo * half, centre + lo * half


def _box_corners(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return np.array([[(low, high)[i][0], (low, high)[j][1], (low, high)[k][2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)])


def _inside(stack: sitk.Image, transform: sitk.Euler3DTransform, points: np.ndarray) -> bool:
    """True when every reference-frame point lies inside the stack's voxel box."""
    rotation, offset = transform_matrix(transform)
    matrix, origin = index_to_world(stack)
    index = np.linalg.solve(matrix, (rotation.T @ (points - offset).T) - origin[:, None]).T
    return bool(np.all(index >= -0.5 - 1e-6) and np.all(index <= np.asarray(stack.GetSize()) - 0.5 + 1e-6))


def output_geometry(
    stacks: Sequence[sitk.Image], transforms: Sequence[sitk.Euler3DTransform], reference: int, spacing: float
) -> Optional[SRGeometry]:
    """The isotropic output grid over the common box, or None when the stacks share less than 2 voxels per axis."""
    low, high = common_box(stacks, transforms, reference)
    anchor = -0.5 * np.asarray(stacks[reference].GetSpacing(), dtype=float)
    first = anchor + np.ceil((low - anchor) / spacing - 1e-6) * spacing
    size = np.floor((high - first) / spacing + 1e-6).astype(int)
    if np.any(size < 2):
        return None
    axes = direction_matrix(stacks[reference])
    origin = np.asarray(stacks[reference].GetOrigin(), dtype=float) + axes @ (first + 0.5 * spacing)
    return SRGeometry(tuple(int(s) for s in size), (spacing,) * 3, tuple(origin.tolist()), tuple(axes.ravel().tolist()))


def fine_positions(n_slices: int, n_fine: int) -> np.ndarray:
    """Stack continuous indices of ``n_fine`` samples tiling ``n_slices`` slices (as ``plan.output_positions``)."""
    return (np.arange(n_fine) + 0.5) * n_slices / n_fine - 0.5


def fine_count(n_slices: int, slices: StackSlices, spacing: float) -> int:
    """Fine samples across a stack's slices at about ``spacing`` mm (at least one per slice)."""
    return max(n_slices, int(round(n_slices * slices.spacing / spacing)))


def fine_grid_indices(
    stack: sitk.Image, slices: StackSlices, transform: sitk.Euler3DTransform, grid: SRGeometry, n_fine: int
) -> List[np.ndarray]:
    """Output-grid continuous indices of the stack's fine samples, as an affine map of three 1D axes.

    Returns ``[offset, a0, a1, a2]`` (each (3,)-vectors times 1D arrays): the index of sample
    ``(i, j, k)`` of the fine grid (stack index axes, the through axis at ``n_fine`` samples) is
    ``offset + a0[i] + a1[j] + a2[k]``, so callers can broadcast without building N×3 in float64.
    """
    matrix, origin = index_to_world(stack)
    rotation, offset = transform_matrix(transform)
    out_axes = np.asarray(grid.direction, dtype=float).reshape(3, 3) / np.asarray(grid.spacing, dtype=float)[None, :]
    to_out = out_axes.T @ rotation @ matrix  # stack index -> output index (linear part)
    base = out_axes.T @ (rotation @ origin + offset - np.asarray(grid.origin, dtype=float))
    parts = [base]
    for axis in range(3):
        positions = fine_positions(stack.GetSize()[axis], n_fine) if axis == slices.axis else np.arange(stack.GetSize()[axis], dtype=float)
        parts.append(positions[:, None] * to_out[:, axis][None, :])
    return parts


def rotation_angle_degrees(rotation: np.ndarray) -> float:
    """The angle of a 3×3 rotation matrix."""
    return math.degrees(math.acos(float(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))
