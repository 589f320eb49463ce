"""Thick-slice stacks simulated from an isotropic volume, for tests and benchmarks of ``reconstruct_stacks``.

A stack is acquired on a grid of any orientation: the volume, moved rigidly (the subject's
motion), is sampled on a fine grid of the stack's orientation (cubic B-spline) and made
thick-sliced by the forward model (``forward_model.degrade_through_plane``: box of the slice
thickness, sampled at the slice spacing). The stack covers the volume's box in its own axes.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from fagan_engine.mri.forward_model import degrade_through_plane
from fagan_engine.through_plane.stack_geometry import corners

PERMUTATIONS = {"axial": (0, 1, 2), "coronal": (0, 2, 1), "sagittal": (1, 2, 0)}
"""World axes (LPS) of the index axes of a stack whose slices are across index axis 2."""


def orientation(plane: str, tilt_degrees: float = 0.0) -> np.ndarray:
    """Direction matrix of an ``axial``/``coronal``/``sagittal`` stack (slices across index axis 2), tilted about its first axis."""
    columns = np.eye(3)[:, PERMUTATIONS[plane]]
    angle = math.radians(tilt_degrees)
    tilt = np.array([[1, 0, 0], [0, math.cos(angle), -math.sin(angle)], [0, math.sin(angle), math.cos(angle)]])
    return columns @ tilt


def motion(rotation_degrees: Sequence[float], translation_mm: Sequence[float], centre: Sequence[float]) -> sitk.Euler3DTransform:
    """A rigid motion (Euler angles about x, y, z in degrees, then a translation) about ``centre``: stack frame → volume frame."""
    transform = sitk.Euler3DTransform()
    transform.SetCenter(tuple(float(c) for c in centre))
    transform.SetRotation(*(math.radians(a) for a in rotation_degrees))
    transform.SetTranslation(tuple(float(t) for t in translation_mm))
    return transform


def simulate_stack(
    volume: sitk.Image,
    direction: np.ndarray,
    slice_spacing: float,
    thickness: float,
    moved: sitk.Transform,
    fine: float = 1.0,
    noise: float = 0.0,
    seed: int = 0,
) -> sitk.Image:
    """A stack with index axes along ``direction``'s columns and slices across index axis 2, in float32.

    ``fine`` (mm) is the in-plane spacing and the sampling of the slice profile; ``moved`` maps
    points of the stack's frame to the volume's (``motion``); ``noise`` is Rician, relative to the
    robust maximum (``degrade_through_plane``).
    """
    centre = corners(volume).mean(axis=0)
    local = (corners(volume) - centre) @ direction
    low, high = local.min(axis=0), local.max(axis=0)
    steps = max(1, int(round(slice_spacing / fine)))
    size = np.floor((high - low) / fine).astype(int)
    n_slices = int(size[2] // steps)
    size[2] = n_slices * steps
    grid = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    grid.SetSpacing((fine,) * 3)
    grid.SetDirection(tuple(direction.ravel()))
    start = low + 0.5 * ((high - low) - size * fine) + 0.5 * fine
    grid.SetOrigin(tuple((centre + direction @ start).tolist()))
    sampled = sitk.GetArrayFromImage(sitk.Resample(volume, grid, moved, sitk.sitkBSpline, 0.0, sitk.sitkFloat32))
    thick = degrade_through_plane(np.clip(sampled, 0.0, None), 0, steps, thickness / fine, noise=noise, rng=np.random.default_rng(seed))
    stack = sitk.GetImageFromArray(thick)
    stack.SetSpacing((fine, fine, fine * steps))
    stack.SetDirection(grid.GetDirection())
    stack.SetOrigin(tuple((np.asarray(grid.GetOrigin()) + direction[:, 2] * 0.5 * fine * (steps - 1)).tolist()))
    return stack


def phantom(size: int = 64, seed: int = 0, count: int = 40) -> sitk.Image:
    """An isotropic 1 mm test object: random soft-edged ellipsoids of random intensity in a larger ellipsoid."""
    rng = np.random.default_rng(seed)
    axes = (np.arange(size) - (size - 1) / 2.0) / (size / 2.0)
    z, y, x = np.meshgrid(axes, axes, axes, indexing="ij")
    points = np.stack([x, y, z], axis=-1)
    image = 0.3 * _soft(np.sqrt(((points / np.array([0.9, 0.8, 0.85])) ** 2).sum(-1)), size)
    for _ in range(count):
        centre = rng.uniform(-0.55, 0.55, 3)
        radii = rng.uniform(0.05, 0.3, 3)
        rotation = np.linalg.qr(rng.standard_normal((3, 3)))[0]
        local = (points - centre) @ rotation / radii
        image += rng.uniform(-0.25, 0.5) * _soft(np.sqrt((local**2).sum(-1)), size * float(radii.min()))
    out = sitk.GetImageFromArray(np.clip(image, 0.0, None).astype(np.float32))
    out.SetOrigin((-(size - 1) / 2.0,) * 3)
    return out


def _soft(radius: np.ndarray, scale: float) -> np.ndarray:
    """1 inside a unit radius, 0 outside, with an edge about a voxel wide (``scale``: voxels per unit radius)."""
    return 1.0 / (1.0 + np.exp(np.clip((radius - 1.0) * scale * 2.0, -50, 50)))
