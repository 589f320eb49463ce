"""Through-plane super-resolution: which axis, which output grid, which slice profile (numpy only).

A thick-slice scan (fine in-plane, coarse slices) is made isotropic along its coarsest-spaced
SimpleITK index axis. ``plan_through_plane`` decides everything from the header and the user's
numbers; the fit (``through_plane.fit``), the network and another engineer's consistency map use
exactly these fields. No torch here.

Output grid: the output covers exactly the input's voxel-corner box along every axis. Along the
through-plane axis it has ``n_out = round(extent / target)`` samples of spacing ``extent / n_out``
(the spacing closest to the target that tiles the extent); output sample ``j`` sits at input
continuous index ``(j + 0.5)·n_in/n_out − 0.5``, the convention of ``geometry`` and PyTorch's
``align_corners=False``. In-plane axes are unchanged.

Slice profile: slice ``j`` of the input is the average of the true object over a box of the slice
thickness centred on the slice (``forward_model.slice_profile_matrix``), optionally with
Gaussian edges (``edge_sigma``, mm). A thickness below the spacing is a slice gap. The thickness
is the argument, else the DICOM header's, else the scan's own estimate (``profile_estimate``) when
it is clear, else the slice spacing.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import map_coordinates

from fagan_engine.io.geometry import SRGeometry, coarsest_axis, direction_matrix, through_plane_axis
from fagan_engine.mri.forward_model import apply_along_axis, project_along_axis, slice_profile_matrix
from fagan_engine.mri.interpolation import lanczos_matrix
from fagan_engine.through_plane.profile_estimate import ThicknessEstimate, estimate_thickness
from fagan_engine.util.errors import InputError

MIN_RATIO = 1.25
"""Slice spacing / finest in-plane spacing below which a volume counts as already isotropic."""
SPACING_NOTE_TOLERANCE = 0.05
"""Relative distance of the output spacing from the target above which the run says so (``ThroughPlanePlan.spacing_note``)."""
MAX_REFINEMENT = 8
"""A target spacing may be at most this many times finer than the finest in-plane spacing (nothing in a scan resolves
more; one stack or several)."""
MAX_THICKNESS_RATIO = 4.0
"""Slice thickness / slice spacing above which the thickness is refused (overlapping acquisitions stay near 2)."""
THICKNESS_SOURCE_WORDS = {"argument": "as given", "dicom": "from the DICOM Slice Thickness", "estimate": "estimated from the scan",
                          "spacing": "assumed: the slice spacing"}
"""Where a slice thickness came from (``ThroughPlanePlan.thickness_source``), in words for the user."""
DICOM_SLICE_THICKNESS = "0018|0050"
DICOM_SPACING_BETWEEN_SLICES = "0018|0088"


@dataclass(frozen=True)
class ThroughPlanePlan:
    """What ``super_resolve_through_plane`` will do to one volume (all lengths in mm)."""

    axis: int
    """SimpleITK index axis of the slices (the coarsest-spaced one)."""
    n_in: int
    n_out: int
    input_spacing: float
    """Slice spacing (spacing of ``axis``)."""
    output_spacing: float
    """``extent / n_out``: the spacing closest to the target that covers the extent exactly."""
    thickness: float
    """Slice thickness: the argument, else DICOM Slice Thickness, else the slice spacing."""
    edge_sigma: float = 0.0
    """Gaussian edge of the slice profile (standard deviation, mm); 0 = a sharp box."""
    in_plane_spacing: Tuple[float, float] = (1.0, 1.0)
    """Spacing of the two in-plane axes (increasing index order)."""
    target_spacing: float = 1.0
    thickness_source: str = "spacing"
    """Where the thickness came from: ``argument``, ``dicom``, ``estimate`` (from the scan, ``profile_estimate``) or ``spacing``."""
    estimated_thickness: Optional[float] = None
    """The scan's own estimate (mm) when neither argument nor header gave one and it could be made (used only when clear)."""

    @property
    def extent(self) -> float:
        return self.n_in * self.input_spacing

    @property
    def ratio(self) -> float:
        """Input slices per output sample: ``n_out / n_in``."""
        return self.n_out / self.n_in

    @property
    def in_plane_axes(self) -> Tuple[int, int]:
        first, second = (a for a in range(3) if a != self.axis)
        return first, second

    @property
    def gap(self) -> float:
        """Slice gap (mm); negative for overlapping slices."""
        return self.input_spacing - self.thickness

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    def spacing_note(self) -> Optional[str]:
        """One line when the output spacing is more than ``SPACING_NOTE_TOLERANCE`` away from the target (the slices must
        tile the extent, and there is at least one more of them than input slices), else None."""
        if abs(self.output_spacing - self.target_spacing) <= SPACING_NOTE_TOLERANCE * self.target_spacing:
            return None
        return (f"the output slice spacing is {self.output_spacing:.4g} mm, not the target {self.target_spacing:g} mm: the nearest "
                f"that tiles the {self.extent:g} mm extent with more slices than the input's {self.n_in}")

    def anisotropy_note(self) -> Optional[str]:
        """One line when the volume is coarse along two axes: an in-plane axis ``MIN_RATIO`` times coarser than the other
        and than the output spacing. Only the slice axis is made finer, so the result is not isotropic; else None (a
        target finer than both in-plane axes is the user's choice, not a second coarse axis)."""
        finest = min(self.in_plane_spacing)
        coarse = [(a, s) for a, s in zip(self.in_plane_axes, self.in_plane_spacing)
                  if s >= MIN_RATIO * finest and s >= MIN_RATIO * self.output_spacing]
        if not coarse:
            return None
        axis, spacing = coarse[0]
        return (f"the result is not isotropic: axis {axis} keeps its {spacing:g} mm spacing, since only the slice axis "
                f"{self.axis} is made finer ({self.output_spacing:.4g} mm); a volume coarse along two axes needs in-plane "
                "super-resolution for the other")

    def thickness_note(self) -> Optional[str]:
        """One line when the thickness was assumed equal to the spacing although the scan's own estimate, not clear enough
        to use, differs from it by 10 % or more (a gap or an overlap the run cannot see), else None."""
        if self.thickness_source != "spacing" or self.estimated_thickness is None:
            return None
        if abs(self.estimated_thickness - self.input_spacing) < 0.1 * self.input_spacing:
            return None
        return (f"the slice thickness is taken as the {self.input_spacing:g} mm slice spacing; the scan's own estimate, "
                f"{self.estimated_thickness:.3g} mm, is not clear enough to use: set the slice thickness (--slice-thickness) "
                "if you know it")

    def describe(self) -> str:
        gap = f", gap {self.gap:g} mm" if self.gap > 1e-6 else ""
        return (
            f"axis {self.axis}: {self.n_in} slices of {self.input_spacing:g} mm (thickness {self.thickness:g} mm, "
            f"{thickness_source_words(self.thickness_source)}{gap}) "
            f"-> {self.n_out} at {self.output_spacing:.4g} mm"
        )


def thickness_source_words(source: object) -> str:
    """``THICKNESS_SOURCE_WORDS`` for ``source``; an unknown value as it is."""
    return THICKNESS_SOURCE_WORDS.get(source, str(source)) if isinstance(source, str) else str(source)


def header_slice_thickness(image: sitk.Image) -> Optional[float]:
    """DICOM Slice Thickness (0018,0050) from the image's metadata, when SimpleITK carried it over."""
    for key in (DICOM_SLICE_THICKNESS,):
        if image.HasMetaDataKey(key):
            try:
                value = float(image.GetMetaData(key).strip().split("\\")[0])
            except ValueError:
                continue
            if math.isfinite(value) and value > 0:
                return value
    return None


def plan_through_plane(
    image: sitk.Image,
    target_spacing: Optional[float] = None,
    slice_thickness: Optional[float] = None,
    edge_sigma: float = 0.0,
) -> ThroughPlanePlan:
    """Plan through-plane SR of ``image``; InputError (one line) when there is nothing sensible to do."""
    if image.GetDimension() != 3:
        raise InputError(f"through-plane super-resolution needs a 3D volume, got {image.GetDimension()}D")
    spacing = [float(s) for s in image.GetSpacing()]
    size = image.GetSize()
    axis = through_plane_axis(image, "auto")
    in_axes = tuple(a for a in range(3) if a != axis)
    finest = min(spacing[a] for a in in_axes)
    shown = "x".join(f"{s:g}" for s in spacing)
    if size[axis] < 2:
        raise InputError(
            f"volume has a single slice along its coarsest axis ({shown} mm): through-plane super-resolution needs at least 2 slices"
        )
    if spacing[axis] < MIN_RATIO * finest:
        raise InputError(
            f"volume is already (nearly) isotropic ({shown} mm): nothing to do through-plane; use in-plane mode (--scale) instead"
        )
    if min(size[a] for a in in_axes) < 8:
        raise InputError(f"in-plane size {size[in_axes[0]]}x{size[in_axes[1]]} is too small to learn from (at least 8x8)")
    for name, value in (("target spacing", target_spacing), ("slice thickness", slice_thickness), ("edge sigma", edge_sigma)):
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if value is not None and not (number and math.isfinite(value) and value >= 0 and (value > 0 or name == "edge sigma")):
            raise InputError(f"{name} must be a positive number of mm, got {value!r}")
    target = finest if target_spacing is None else float(target_spacing)
    if target < finest / MAX_REFINEMENT:
        raise InputError(f"target spacing {target:g} mm is more than {MAX_REFINEMENT} times finer than the finest in-plane "
                         f"spacing {finest:g} mm: nothing in the scan resolves it")
    if target >= spacing[axis]:
        raise InputError(
            f"target spacing {target:g} mm is not smaller than the slice spacing {spacing[axis]:g} mm: nothing to super-resolve"
        )
    thickness, source, estimate = choose_thickness(image, axis, slice_thickness)
    extent = size[axis] * spacing[axis]
    n_out = _output_count(int(size[axis]), spacing[axis], target)
    return ThroughPlanePlan(
        axis=axis,
        n_in=int(size[axis]),
        n_out=n_out,
        input_spacing=spacing[axis],
        output_spacing=extent / n_out,
        thickness=float(thickness),
        edge_sigma=float(edge_sigma),
        in_plane_spacing=(spacing[in_axes[0]], spacing[in_axes[1]]),
        target_spacing=target,
        thickness_source=source,
        estimated_thickness=estimate,
    )


def slice_ratio(size: Sequence[int], spacing: Sequence[float], target_spacing: Optional[float] = None) -> float:
    """The ``ratio`` ``plan_through_plane`` gives a volume of ``size`` and ``spacing`` (index order), from the geometry
    alone (no checks, no thickness): what picks the bundled start (``models.checkpoint.bundled_through_plane``) before
    a run, where only the geometry is at hand (the Slicer module)."""
    axis = coarsest_axis(spacing)
    finest = min(float(spacing[a]) for a in range(3) if a != axis)
    count = int(size[axis])
    return _output_count(count, float(spacing[axis]), finest if target_spacing is None else float(target_spacing)) / count


def _output_count(count: int, spacing: float, target: float) -> int:
    """Output samples across ``count`` slices of ``spacing`` mm at ``target`` mm (at least one more than the input)."""
    return max(count + 1, int(round(count * spacing / target)))


def choose_thickness(image: sitk.Image, axis: int, slice_thickness: Optional[float] = None) -> Tuple[float, str, Optional[float]]:
    """(thickness mm, source, the scan's estimate or None) of the slices across index ``axis``:
    the argument, else the DICOM header's, else the scan's estimate when clear, else the slice spacing. InputError when it
    is more than ``MAX_THICKNESS_RATIO`` times the slice spacing (no acquisition overlaps its slices that much)."""
    spacing = float(image.GetSpacing()[axis])
    chosen = _chosen_thickness(image, axis, slice_thickness)
    if chosen[0] > MAX_THICKNESS_RATIO * spacing:
        given = {"argument": "--slice-thickness", "dicom": "the DICOM Slice Thickness"}.get(chosen[1], "the estimated thickness")
        raise InputError(
            f"slice thickness {chosen[0]:g} mm ({given}) is more than {MAX_THICKNESS_RATIO:g} times the slice spacing "
            f"{spacing:g} mm: no acquisition overlaps its slices that much; check the value"
        )
    return chosen


def _chosen_thickness(image: sitk.Image, axis: int, slice_thickness: Optional[float]) -> Tuple[float, str, Optional[float]]:
    if slice_thickness is not None:
        return float(slice_thickness), "argument", None
    header = header_slice_thickness(image)
    if header is not None:
        return header, "dicom", None
    estimate = scan_thickness_estimate(image, axis)
    if estimate is not None and estimate.clear:
        return estimate.thickness, "estimate", estimate.thickness
    return float(image.GetSpacing()[axis]), "spacing", None if estimate is None else estimate.thickness


def scan_thickness_estimate(image: sitk.Image, axis: int) -> Optional[ThicknessEstimate]:
    """``profile_estimate.estimate_thickness`` of the slices across index ``axis``; None when the scan is too small for it."""
    spacing = image.GetSpacing()
    pixels = tuple(float(spacing[2 - k]) for k in range(3) if k != 2 - axis)  # numpy axes, increasing
    try:
        return estimate_thickness(sitk.GetArrayViewFromImage(image), 2 - axis, float(spacing[axis]), (pixels[0], pixels[1]))
    except ValueError:
        return None


def output_geometry(image: sitk.Image, plan: ThroughPlanePlan) -> SRGeometry:
    """The output grid: same corners as ``image``; ``n_out`` samples of ``output_spacing`` along the axis."""
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    new_spacing = spacing.copy()
    new_spacing[plan.axis] = plan.output_spacing
    origin = np.asarray(image.GetOrigin(), dtype=float) + direction_matrix(image) @ (0.5 * (new_spacing - spacing))
    size = list(image.GetSize())
    size[plan.axis] = plan.n_out
    return SRGeometry(tuple(size), tuple(new_spacing.tolist()), tuple(origin.tolist()), tuple(image.GetDirection()))


# ---- interpolation along one axis (the baselines, and the network's base image) -------------------


def output_positions(n_in: int, n_out: int) -> np.ndarray:
    """Input continuous indices of the output samples: ``(j + 0.5)·n_in/n_out − 0.5``."""
    return (np.arange(n_out) + 0.5) * n_in / n_out - 0.5


def bspline_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) cubic B-spline interpolation (prefiltered, interpolating) onto the output grid.

    Built by interpolating unit impulses with ``scipy.ndimage.map_coordinates(order=3)``, mirror
    (half-sample symmetric) boundaries, so the half input voxel beyond the outer slice centres is
    extrapolated smoothly.
    """
    positions = output_positions(n_in, n_out)[None, :]
    eye = np.eye(n_in)
    return np.stack(
        [map_coordinates(eye[k], positions, order=3, mode="reflect") for k in range(n_in)], axis=1
    ).astype(np.float64)


def interpolation_matrix(method: str, n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix for ``bspline`` (cubic B-spline), ``lanczos`` (Lanczos-3) or ``linear``."""
    if method == "bspline":
        return bspline_matrix(n_in, n_out)
    if method == "lanczos":
        return lanczos_matrix(n_in, n_out)
    if method == "linear":
        positions = np.clip(output_positions(n_in, n_out), 0, n_in - 1)
        lo = np.floor(positions).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        w = positions - lo
        matrix = np.zeros((n_out, n_in))
        matrix[np.arange(n_out), lo] += 1 - w
        matrix[np.arange(n_out), hi] += w
        return matrix
    raise InputError(f"interpolation must be bspline, lanczos or linear, got {method!r}")


def interpolate_through_plane(image: sitk.Image, plan: ThroughPlanePlan, method: str = "bspline") -> sitk.Image:
    """The interpolation baseline: ``image`` resampled along ``plan.axis`` onto the output grid."""
    array = sitk.GetArrayViewFromImage(image).astype(np.float32)
    matrix = interpolation_matrix(method, plan.n_in, plan.n_out).astype(np.float32)
    out = apply_along_axis(array, matrix, 2 - plan.axis).astype(np.float32)
    result = sitk.GetImageFromArray(np.ascontiguousarray(out))
    return output_geometry(image, plan).apply(result)


def slice_matrix(plan: ThroughPlanePlan) -> np.ndarray:
    """(n_in, n_out) slice-profile matrix of ``plan``: how each input slice averages the output samples."""
    unit = plan.output_spacing
    return slice_profile_matrix(plan.n_out, plan.n_in, plan.input_spacing / unit, plan.thickness / unit, plan.edge_sigma / unit)


def project_onto_slices(volume: np.ndarray, slices: np.ndarray, plan: ThroughPlanePlan) -> np.ndarray:
    """The (z, y, x) array nearest to ``volume`` (output grid) whose re-slicing with the plan's profile is ``slices``
    (the input grid); float32. The minimum-norm correction ``pinv(S)·(slices − S·volume)`` along the through-plane axis."""
    return project_along_axis(volume, slices, slice_matrix(plan), 2 - plan.axis).astype(np.float32)


def profile_in_pixels(plan: ThroughPlanePlan, pixel_spacing: float) -> Tuple[float, float, float]:
    """(slice spacing, thickness, edge sigma) in pixels of ``pixel_spacing`` mm (for training pairs)."""
    return plan.input_spacing / pixel_spacing, plan.thickness / pixel_spacing, plan.edge_sigma / pixel_spacing
