"""Data-consistency maps and hard consistency: does the SR volume reproduce its input under the forward model?

Map: the SR volume is re-degraded with ``forward_model`` (in-plane: ``acquired_like``, the noise-free acquisition
on the in-plane axes as the projection models the input: a magnitude for magnitude slices, signed for signed ones;
through-plane: the slice profile) and the input is subtracted, on the input grid, in the input's units:
``residual = A(SR) − input`` (positive where the SR is brighter than the data allow).
For overlay it is also put on the SR grid by **nearest neighbour**: every SR voxel shows the
residual of the input voxel (or slice) that contains it, so the map stays piecewise constant on
the input's voxels and is neither smoothed nor extrapolated. Both maps carry exactly the geometry
of their grid (copied from the input and from the SR image).

Summary, inside the foreground (input above ``p0.5 + 0.05·(p99.5 − p0.5)``):
``relative_rms_residual`` = ‖residual‖ / ‖input‖; ``fraction_above_3sigma`` = fraction of
foreground voxels with |residual| > 3σ, σ from ``noise_estimate`` (floored at 0.1 % of the
robust range, so noise-free inputs compare against float precision, not 0); ``noise_sigma``.

Hard consistency (``enforce_consistency``, ``forward_model.project_onto_data``): the projection of the SR volume
onto the images whose noise-free acquisition is exactly the input. k-space: the SR's central (LR-matrix) spectrum is
replaced by the input's (``forward_model.replace_lr_spectrum``); on a magnitude slice the measured magnitude takes
the sign of the SR's own LR where that is clearly negative. bicubic / gaussian / slice profile (separable matrices
A): ``x + A⁺(y − A x)`` with the pseudo-inverses of the 1D matrices, the limit of iterative back-projection
(``x ← x + μ Aᵀ(y − A x)``) reached in one step. In-plane, magnitude slices then get a few rounds of alternating
projections onto the non-negative images; the result still reproduces the input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from fagan_engine.io.geometry import SliceLayout
from fagan_engine.mri.forward_model import (
    acquired_like,
    apply_along_axis,
    project_along_axis,
    project_onto_data,
)
from fagan_engine.mri.noise_estimate import estimate_noise_sigma, foreground, robust_range
from fagan_engine.through_plane.plan import ThroughPlanePlan, slice_matrix

SIGMA_FLOOR = 1e-3
"""σ used for ``fraction_above_3sigma`` is at least this fraction of the input's robust range."""


@dataclass
class ConsistencyMaps:
    """The signed residual on the input grid and on the SR grid, and its summary figures."""

    residual_lr: sitk.Image
    residual_sr: sitk.Image
    summary: Dict[str, Optional[float]]


# ---- in-plane -----------------------------------------------------------------------------------


def redegrade(sr: sitk.Image, image: sitk.Image, scale: int, axes: Tuple[int, int], acquisition: str) -> np.ndarray:
    """The noise-free acquisition of the SR volume, as the projection models the input ``image``
    (``forward_model.acquired_like``), as an array on the input grid (z, y, x)."""
    layout = SliceLayout.for_axes(axes)
    slices = layout.to_slices(sitk.GetArrayViewFromImage(sr).astype(np.float32))
    data = layout.to_slices(sitk.GetArrayViewFromImage(image).astype(np.float32))
    return layout.from_slices(acquired_like(slices, data, scale, acquisition))


def consistency_maps(image: sitk.Image, sr: sitk.Image, scale: int, axes: Tuple[int, int], acquisition: str) -> ConsistencyMaps:
    """Residual maps of an in-plane SR result ``sr`` of ``image`` (see the module docstring)."""
    _check_in_plane(image, sr, scale, axes)
    slabs = SlabConsistency(image, scale, axes, acquisition)
    upsampled = slabs.add(0, slabs.layout.to_slices(sitk.GetArrayViewFromImage(sr)))
    residual_lr, summary = slabs.finish()
    return ConsistencyMaps(residual_lr, _like(slabs.layout.from_slices(upsampled), sr), summary)


class SlabConsistency:
    """The in-plane residual of a result given slab by slab (``inference.slices.SlabStream``): the input-grid
    residual is kept (input-sized), each slab's SR-grid residual (nearest neighbour) is handed back."""

    def __init__(self, image: sitk.Image, scale: int, axes: Tuple[int, int], acquisition: str) -> None:
        self.image = image
        self.scale = scale
        self.acquisition = acquisition
        self.layout = SliceLayout.for_axes(axes)
        self.data = np.asarray(sitk.GetArrayViewFromImage(image), dtype=np.float32)
        self.residual = np.empty_like(self.data)

    def add(self, start: int, network: np.ndarray) -> np.ndarray:
        """Record slices ``start, ...`` (n, rows·s, cols·s) of the network's output; returns their SR-grid residual."""
        data = self.layout.to_slices(self.data)[start : start + len(network)]
        residual = acquired_like(np.asarray(network, dtype=np.float32), data, self.scale, self.acquisition) - data
        self.layout.to_slices(self.residual)[start : start + len(network)] = residual
        return np.repeat(np.repeat(residual, self.scale, axis=1), self.scale, axis=2)

    def finish(self) -> Tuple[sitk.Image, Dict[str, Optional[float]]]:
        """The input-grid residual map (geometry of the input) and the summary figures."""
        return _like(self.residual, self.image), residual_summary(self.data, self.residual, self.layout.to_slices(self.data))


def enforce_consistency(image: sitk.Image, sr: sitk.Image, scale: int, axes: Tuple[int, int], acquisition: str) -> sitk.Image:
    """``sr`` projected onto the images whose noise-free ``acquisition`` is exactly ``image``; float32."""
    _check_in_plane(image, sr, scale, axes)
    layout = SliceLayout.for_axes(axes)
    x = layout.to_slices(sitk.GetArrayViewFromImage(sr))
    y = layout.to_slices(sitk.GetArrayViewFromImage(image))
    out = project_onto_data(x, y, scale, acquisition)
    return _like(layout.from_slices(out), sr)


# ---- through-plane ------------------------------------------------------------------------------


def through_plane_consistency(image: sitk.Image, sr: sitk.Image, plan: ThroughPlanePlan) -> ConsistencyMaps:
    """Residual maps of a through-plane SR result: ``sr`` re-sliced with the slice profile, minus ``image``."""
    _check_through_plane(image, sr, plan)
    np_axis = 2 - plan.axis
    data = sitk.GetArrayViewFromImage(image).astype(np.float32)
    model = apply_along_axis(sitk.GetArrayViewFromImage(sr).astype(np.float32), slice_matrix(plan).astype(np.float32), np_axis)
    residual = model - data
    containing = np.floor((np.arange(plan.n_out) + 0.5) * plan.n_in / plan.n_out).astype(int)
    upsampled = np.take(residual, np.clip(containing, 0, plan.n_in - 1), axis=np_axis)
    in_plane = SliceLayout.for_axes([a for a in range(3) if a != plan.axis])
    return ConsistencyMaps(_like(residual, image), _like(upsampled, sr), residual_summary(data, residual, in_plane.to_slices(data)))


def enforce_through_plane(image: sitk.Image, sr: sitk.Image, plan: ThroughPlanePlan) -> sitk.Image:
    """``sr`` projected onto the volumes whose slice-profile acquisition is exactly ``image``; float32."""
    _check_through_plane(image, sr, plan)
    out = project_along_axis(sitk.GetArrayViewFromImage(sr), sitk.GetArrayViewFromImage(image), slice_matrix(plan), 2 - plan.axis)
    return _like(out, sr)


# ---- summary ------------------------------------------------------------------------------------


def residual_summary(data: np.ndarray, residual: np.ndarray, noise_slices: np.ndarray) -> Dict[str, Optional[float]]:
    """Relative RMS residual and fraction above 3σ inside the input's foreground; σ from ``noise_slices``. Without a
    foreground (a constant input) both are None: there is nothing to judge, which a 0 would not say."""
    mask = foreground(data)
    low, high = robust_range(data)
    sigma = estimate_noise_sigma(noise_slices)
    threshold = 3.0 * max(sigma, SIGMA_FLOOR * (high - low))
    inside = residual[mask].astype(np.float64)
    reference = float(np.linalg.norm(data[mask].astype(np.float64)))
    return {
        "relative_rms_residual": float(np.linalg.norm(inside)) / reference if reference > 0 else None,
        "fraction_above_3sigma": float(np.mean(np.abs(inside) > threshold)) if inside.size else None,
        "noise_sigma": sigma,
        "foreground_voxels": float(inside.size),
    }


def relative_rms(test: np.ndarray, reference: np.ndarray) -> float:
    """‖test − reference‖ / ‖reference‖ inside the reference's foreground."""
    mask = foreground(reference)
    diff = (test[mask].astype(np.float64) - reference[mask].astype(np.float64))
    return float(np.linalg.norm(diff) / np.linalg.norm(reference[mask].astype(np.float64)))


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """A float32 image of ``array`` with exactly the geometry of ``reference``."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.CopyInformation(reference)
    return image


def _check_in_plane(image: sitk.Image, sr: sitk.Image, scale: int, axes: Tuple[int, int]) -> None:
    expected = tuple(n * scale if a in axes else n for a, n in enumerate(image.GetSize()))
    if tuple(sr.GetSize()) != expected:
        raise ValueError(f"SR size {sr.GetSize()} is not the input size {image.GetSize()} times {scale} on axes {axes}")


def _check_through_plane(image: sitk.Image, sr: sitk.Image, plan: ThroughPlanePlan) -> None:
    if image.GetSize()[plan.axis] != plan.n_in or sr.GetSize()[plan.axis] != plan.n_out:
        raise ValueError(
            f"the plan has {plan.n_in} -> {plan.n_out} slices on axis {plan.axis}; "
            f"the volumes have {image.GetSize()[plan.axis]} and {sr.GetSize()[plan.axis]}"
        )
