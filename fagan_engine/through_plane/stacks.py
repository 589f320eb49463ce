"""Several thick-slice stacks of one subject (e.g. axial, coronal, sagittal T2) to one isotropic volume.

``reconstruct_stacks(stacks)`` registers every stack rigidly to the reference stack (Mattes mutual
information, multi-resolution; ``stack_registration``), matches their intensities to the
reference, and solves for the volume whose slice-profile-degraded copies match every stack
(``stack_solver``: one least-squares data term per stack through the forward model's slice
profile, plus a smoothness term), starting from register-and-average. The registration is then
refined against that reconstruction and the volume solved again. The output grid is the
reference's orientation at the finest in-plane spacing, over the common field of view
(``stack_geometry``). Returns the image and a ``StackReport`` (transforms, intensity factors,
per-stack residuals and consistency maps). Refusals are one-line ``InputError``s, made before any work.
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

if TYPE_CHECKING:
    import torch

from fagan_engine.inference.memory_check import check_through_plane_fits
from fagan_engine.io.geometry import SRGeometry
from fagan_engine.io.volume_io import validate_image
from fagan_engine.models.checkpoint import read_through_plane
from fagan_engine.mri.noise_estimate import estimate_noise_sigma
from fagan_engine.through_plane.plan import MAX_REFINEMENT, plan_through_plane, thickness_source_words
from fagan_engine.through_plane.run import checked_options, super_resolve_through_plane
from fagan_engine.through_plane.stack_geometry import (
    StackSlices,
    common_box,
    output_geometry,
    rotation_angle_degrees,
    transform_matrix,
)
from fagan_engine.through_plane.stack_registration import (
    foreground_correlation,
    normalised_mutual_information,
    overlap_samples,
    register,
)
from fagan_engine.through_plane.stack_solver import StackOperator, build_operator, residuals, solve
from fagan_engine.util.errors import InputError
from fagan_engine.util.options import DEFAULT_THROUGH_PLANE_ENSEMBLE, check_callables, check_whole, is_whole
from fagan_engine.util.progress import call_progress

MIN_NMI = 0.08
"""Normalised mutual information below which two registered stacks are refused as not the same subject/contrast."""
MIN_CORRELATION = 0.75
"""Foreground intensity correlation below which two registered stacks are refused (``stack_registration``)."""
MAX_ROTATION_DEGREES = 30.0
SMOOTHNESS = (0.01, 40.0)
"""Default weight of ``‖∇x‖²`` against the data terms: ``a + b·σ²`` for the stacks' mean noise σ
(intensities normalised to the reference's 99.5th percentile; chosen on simulated phantoms)."""
ITERATIONS = 30
REFINEMENTS = 2
"""Rounds of registration against the reconstruction, each followed by a new solve."""
PRIOR_WEIGHT = 0.1
"""μ of the network prior; with it the smoothness weight is halved (chosen on the benchmark's smoke case)."""
ROBUST_PERCENTILE = 99.5
MIN_REGISTRATION_SIDE = 4
"""Voxels along each axis below which ITK's smoothing, and so the registration, fails."""
FOREGROUND_FRACTION = 0.1
"""Overlap samples above this fraction of their own robust maximum are foreground (``intensity_gain``)."""

Progress = Callable[..., None]
Images = Sequence[sitk.Image]
Transforms = Sequence[sitk.Euler3DTransform]
Thickness = Union[None, float, Sequence[Optional[float]]]


@dataclass
class StackReport:
    """What ``reconstruct_stacks`` did: per-stack registration, intensity factor and residual."""

    reference: int
    spacing: float
    smoothness: float = 0.0
    network_iterations: Optional[int] = None
    """Fit steps of the FA-GAN prior's per-stack networks (None: no network prior)."""
    network_ensemble: Optional[int] = None
    """Flipped copies of every slice those networks ran on (None: no network prior)."""
    stacks: List[Dict[str, Any]] = field(default_factory=list)
    transforms: List[sitk.Euler3DTransform] = field(default_factory=list)
    """Stack frame → reference frame, per stack (identity for the reference)."""
    intensity_scales: List[float] = field(default_factory=list)
    """Factor applied to each stack's intensities to match the reference."""
    consistency_maps: List[sitk.Image] = field(default_factory=list)
    """|A_k x − y_k| on each stack's own grid, in that stack's own intensity units (0 where the stack lies outside the
    output: no residual there, not a perfect fit; ``voxels_used`` counts the voxels that have one)."""
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        fields = {"reference": self.reference, "spacing": self.spacing, "smoothness": self.smoothness, "stacks": self.stacks}
        fields["network_iterations"], fields["network_ensemble"] = self.network_iterations, self.network_ensemble
        return dict(fields, seconds=round(self.seconds, 3))

    def describe(self) -> List[str]:
        """One line per stack."""
        return [
            f"stack {i + 1}: {s['slices']} slices of {s['slice_spacing']:g} mm "
            f"(thickness {s['thickness']:g} mm, {thickness_source_words(s['thickness_source'])}); "
            f"rotation {s['rotation_degrees']:.2f} deg, translation {s['translation_mm']:.2f} mm, intensity x{s['intensity_scale']:.3f}, "
            f"NMI {s['nmi']:.3f}, correlation {s['correlation']:.2f}, residual {s['residual_rms']:.4f}"
            for i, s in enumerate(self.stacks)
        ]


def reconstruct_stacks(
    stacks: Sequence[sitk.Image],
    target_spacing: Optional[float] = None,
    reference: int = 0,
    slice_thickness: Thickness = None,
    *,
    smoothness: Optional[float] = None,
    iterations: int = ITERATIONS,
    refinements: int = REFINEMENTS,
    network_iterations: Optional[int] = None,
    device: str = "auto",
    progress: Optional[Progress] = None,
    seed: int = 0,
    network_ensemble: Optional[int] = None,
    nan_policy: str = "error",
) -> Tuple[sitk.Image, StackReport]:
    """One isotropic float32 volume from 2+ stacks of the same subject, and the report of how.

    ``target_spacing`` defaults to the finest in-plane spacing (a coarser one is refused);
    ``slice_thickness`` (mm, one value or one per stack) overrides the header's (DICOM Slice
    Thickness, else the slice spacing). ``smoothness`` defaults to one set by the stacks' noise
    (``SMOOTHNESS``). ``network_iterations`` (None: off) adds the FA-GAN prior: each stack made
    isotropic by ``super_resolve_through_plane`` with that many fit steps on its own in-plane detail (0:
    the pretrained network), the results averaged on the output grid and the volume solved again with
    ``μ‖x − u‖²`` beside the data terms; those networks run on ``device`` (the least squares on the
    CPU; ``"cuda"`` without the prior is refused), each on ``network_ensemble`` flipped copies of every slice
    (``super_resolve_through_plane``'s ``ensemble``; None: ``DEFAULT_THROUGH_PLANE_ENSEMBLE``; refused without the prior).
    ``nan_policy``: non-finite voxels refuse a stack ("error") or read as 0 ("zero"), as for one volume.
    ``progress(done, total, phase="register"|"reconstruct"|"fit"|"inference")``.
    """
    started = time.perf_counter()
    _check_arguments(target_spacing, smoothness, iterations, refinements, network_iterations, device, progress, seed, network_ensemble,
                     nan_policy)
    network_ensemble = DEFAULT_THROUGH_PLANE_ENSEMBLE if network_ensemble is None else network_ensemble
    stacks, slices, spacing = _check_inputs(stacks, target_spacing, reference, slice_thickness, nan_policy)
    scale = float(np.percentile(sitk.GetArrayViewFromImage(stacks[reference]), ROBUST_PERCENTILE)) or 1.0
    stacks = [sitk.Cast(s, sitk.sitkFloat32) / scale for s in stacks]
    identity = [sitk.Euler3DTransform() for _ in stacks]
    grid = output_geometry(stacks, identity, reference, spacing)
    if grid is None:
        raise InputError("the stacks do not overlap: their fields of view share no region")
    _check_memory(grid, slices[reference].axis)
    start = sitk.Euler3DTransform()
    start.SetCenter(_box_centre(stacks, identity, reference))
    transforms = [sitk.Euler3DTransform(start) for _ in stacks]
    moving = stacks[reference]
    for round_ in range(1 + refinements):  # round 0: against the reference stack; then against the reconstruction
        call_progress(progress, round_, 1 + refinements, "register")
        shrink = (4, 2, 1) if round_ == 0 else (2, 1)
        transforms = [t if i == reference else _register(i, stacks, moving, t, seed, shrink, reference) for i, t in enumerate(transforms)]
        matches = [_check_match(i, stacks[i], stacks[reference], transforms[i], reference) for i in range(len(stacks))]
        gains = [m[2] for m in matches]
        if smoothness is None:
            smoothness = _default_smoothness(stacks, slices, gains)
        grid, operators, volume = _solve(stacks, slices, transforms, gains, reference, spacing, smoothness, iterations, progress)
        moving = grid.apply(sitk.GetImageFromArray(volume[0, 0].numpy()))
    starts: List[Dict[str, str]] = []
    if network_iterations is not None:
        prior, starts = network_prior(stacks, slices, transforms, grid, gains, network_iterations, device, progress, seed, network_ensemble)
        smoothness *= 0.5
        volume = solve(volume, operators, smoothness, iterations, _phase(progress, "reconstruct"), prior=prior, prior_weight=PRIOR_WEIGHT)
    report = _report(stacks, slices, transforms, matches, operators, volume, reference, spacing, scale)
    for entry, start in zip(report.stacks, starts):
        entry["network_start"] = start
    report.smoothness, report.network_iterations, report.seconds = smoothness, network_iterations, time.perf_counter() - started
    report.network_ensemble = None if network_iterations is None else network_ensemble
    out = grid.apply(sitk.GetImageFromArray((volume[0, 0].numpy() * scale).astype(np.float32)))
    return out, report


def network_prior(
    stacks: Images, slices: Sequence[StackSlices], transforms: Transforms, grid: SRGeometry, gains: Sequence[float],
    iterations: int, device: str, progress: Optional[Progress], seed: int, ensemble: int = DEFAULT_THROUGH_PLANE_ENSEMBLE,
) -> Tuple["torch.Tensor", List[Dict[str, str]]]:
    """The mean of the stacks' through-plane SR results on ``grid``, (1, 1, D, H, W), each fitted on its own stack with
    that stack's slice thickness (``slices``: the argument's, the header's or the estimate the data terms use; the
    normalised stacks carry no header); and the name and SHA-256 of the pretrained start each one began from."""
    import torch  # lazy: keeps torch out of this module's import

    isotropic, starts = [], []
    for index, (stack, info, gain) in enumerate(zip(stacks, slices, gains)):
        try:
            plan = plan_through_plane(stack, None, info.thickness)
        except InputError as exc:  # one volume's advice (in-plane mode) does not apply to a stack: say which, and why
            reason = str(exc).split("; use in-plane mode")[0]
            raise InputError(f"stack {index + 1}: {reason}; the FA-GAN prior (a through-plane fit per stack) cannot run on it: "
                             "combine these stacks without it") from None
        result = super_resolve_through_plane(
            stack, None, info.thickness, iterations, device, progress, seed=seed, ensemble=ensemble, plan=plan
        )
        isotropic.append(gain * result)
        weights = read_through_plane(ratio=plan.ratio).identity()
        starts.append({"name": weights["name"], "sha256": weights["sha256"]})
    unit = [1.0] * len(stacks)
    return torch.from_numpy(average_stacks(isotropic, transforms, grid, unit))[None, None], starts


def average_stacks(
    stacks: Sequence[sitk.Image], transforms: Sequence[sitk.Euler3DTransform], grid: SRGeometry, gains: Sequence[float]
) -> np.ndarray:
    """Register-and-average: each stack (or any image in its frame) resampled (cubic B-spline) onto ``grid``
    and averaged where it covers; (z, y, x) float32."""
    reference = grid.apply(sitk.Image(list(grid.size), sitk.sitkFloat32))
    total = np.zeros(grid.size[::-1], dtype=np.float64)
    weight = np.zeros_like(total)
    for stack, transform, gain in zip(stacks, transforms, gains):
        inverse = transform.GetInverse()
        values = sitk.Resample(stack, reference, inverse, sitk.sitkBSpline, 0.0, sitk.sitkFloat32)
        ones = sitk.Image(stack.GetSize(), sitk.sitkFloat32) + 1.0
        ones.CopyInformation(stack)
        cover = sitk.GetArrayFromImage(sitk.Resample(ones, reference, inverse, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
        total += gain * cover * sitk.GetArrayFromImage(values)
        weight += cover
    return (total / np.maximum(weight, 1e-6)).astype(np.float32)


# ---- checks --------------------------------------------------------------------------------------


def _check_arguments(
    target: Optional[float], smoothness: Optional[float], iterations: int, refinements: int, network_iterations: Optional[int],
    device: str, progress: Optional[Progress], seed: int, network_ensemble: Optional[int], nan_policy: str,
) -> None:
    """InputError (one line) on an argument of ``reconstruct_stacks`` other than the stacks, their thickness and the reference."""
    counts = (("iterations", iterations), ("refinements", refinements), ("seed", seed), ("network_iterations", network_iterations))
    for name, count in counts:  # before the options: named as here
        if count is not None:
            check_whole(name, count)
    checked_options(target_spacing=target, fit_iterations=network_iterations, device=device, nan_policy=nan_policy, ensemble=network_ensemble)
    check_callables(progress=progress)
    number = isinstance(smoothness, numbers.Real) and not isinstance(smoothness, bool)
    if smoothness is not None and not (number and math.isfinite(smoothness) and smoothness >= 0):
        raise InputError(f"smoothness must be a finite number >= 0 (None: set by the stacks' noise), got {smoothness!r}")
    unused = [name for name, given in (("network_ensemble", network_ensemble is not None), ("device 'cuda'", device == "cuda")) if given]
    if network_iterations is None and unused:
        raise InputError(f"{' and '.join(unused)} {'is' if len(unused) == 1 else 'are'} for the FA-GAN prior's networks, which run only "
                         "with network_iterations set (the least squares run on the CPU)")


def _check_inputs(
    stacks: Sequence[sitk.Image], target: Optional[float], reference: int, thickness: Thickness, nan_policy: str
) -> Tuple[List[sitk.Image], List[StackSlices], float]:
    """Validated stacks, their slicing and the output spacing; InputError otherwise."""
    if not isinstance(stacks, (list, tuple)):
        raise InputError(f"stacks must be a list of SimpleITK images, got {type(stacks).__name__}")
    if len(stacks) < 2:
        raise InputError(f"combining stacks needs at least 2 stacks, got {len(stacks)}")
    stacks = [_checked_stack(index, stack, nan_policy) for index, stack in enumerate(stacks)]
    if not (is_whole(reference) and 0 <= reference < len(stacks)):
        raise InputError(f"reference must be a stack index from 0 to {len(stacks) - 1}, got {reference!r}")
    _check_distinct(stacks)
    slices = [_stack_slices(index, s, t) for index, (s, t) in enumerate(zip(stacks, _thicknesses(thickness, len(stacks))))]
    finest = min(min(s.in_plane_spacing) for s in slices)
    spacing = finest if target is None else float(target)
    if spacing > finest * (1 + 1e-6):
        raise InputError(f"target spacing {spacing:g} mm is coarser than the stacks' finest in-plane spacing {finest:g} mm")
    if spacing < finest / MAX_REFINEMENT:
        raise InputError(f"target spacing {spacing:g} mm is more than {MAX_REFINEMENT} times finer than the stacks' finest in-plane "
                         f"spacing {finest:g} mm: nothing in the stacks resolves it")
    return stacks, slices, spacing


def _stack_slices(index: int, stack: sitk.Image, thickness: Optional[float]) -> StackSlices:
    """``StackSlices.of`` with its refusals naming the stack."""
    try:
        return StackSlices.of(stack, thickness)
    except InputError as error:
        raise InputError(f"stack {index + 1}: {error}") from None


def _check_distinct(stacks: Sequence[sitk.Image]) -> None:
    """InputError when two stacks are one volume (the same file given twice): combining needs different acquisitions."""
    for later in range(1, len(stacks)):
        for earlier in range(later):
            if _same_volume(stacks[earlier], stacks[later]):
                raise InputError(f"stacks {earlier + 1} and {later + 1} are the same volume: combining needs different acquisitions")


def _same_volume(first: sitk.Image, second: sitk.Image) -> bool:
    geometry = ("GetSize", "GetSpacing", "GetOrigin", "GetDirection")
    if any(getattr(first, name)() != getattr(second, name)() for name in geometry):
        return False
    return bool(np.array_equal(sitk.GetArrayViewFromImage(first), sitk.GetArrayViewFromImage(second)))


def _checked_stack(index: int, stack: Any, nan_policy: str) -> sitk.Image:
    """Stack ``index`` validated (``validate_image``, its errors naming the stack); InputError when it holds no signal."""
    try:
        stack = validate_image(stack, nan_policy)
    except InputError as error:
        raise InputError(f"stack {index + 1}: {error}") from None
    values = sitk.GetArrayViewFromImage(stack)
    if values.min() == values.max():
        raise InputError(f"stack {index + 1} holds no signal: every voxel is {float(values.min()):g}")
    return stack


def _thicknesses(thickness: Thickness, count: int) -> List[Optional[float]]:
    """One slice thickness per stack (None: the header's), each checked as ``RunOptions.slice_thickness``."""
    if isinstance(thickness, (list, tuple)):
        values = list(thickness)
    elif thickness is None or isinstance(thickness, numbers.Real):
        values = [thickness] * count
    else:
        raise InputError(f"slice_thickness must be a number of mm or a list of one per stack, got {type(thickness).__name__}")
    if len(values) != count:
        raise InputError(f"give one slice thickness, or one per stack ({count}), not {len(values)}")
    for value in values:
        checked_options(slice_thickness=value)
    return values


def _check_memory(grid: SRGeometry, axis: int) -> None:
    """Refuse, before the registration, an output grid that cannot fit in memory (a ``target_spacing`` too fine)."""
    size = grid.size
    check_through_plane_fits(size[axis], (size[(axis + 1) % 3], size[(axis + 2) % 3]), grid.spacing[axis])


def _register(index: int, stacks: Images, moving: sitk.Image, transform: sitk.Euler3DTransform, seed: int,
              shrink: Tuple[int, ...], reference: int) -> sitk.Euler3DTransform:
    """``register``'s transform of ``stacks[index]``; InputError (one line) where ITK cannot register (a stack of a few
    slices, stacks whose fields of view barely overlap) instead of its multi-line exception."""
    try:
        return register(stacks[index], moving, transform, seed, shrink)[0]
    except RuntimeError:
        pass
    thin = [k for k in (index, reference) if min(stacks[k].GetSize()) < MIN_REGISTRATION_SIDE]
    reason = (f"stack {thin[0] + 1} has only {min(stacks[thin[0]].GetSize())} voxels along one axis (registration needs "
              f"{MIN_REGISTRATION_SIDE})") if thin else "their fields of view overlap too little for mutual information"
    raise InputError(f"stack {index + 1} cannot be registered to the reference stack {reference + 1}: {reason}")


def _check_match(index: int, stack: sitk.Image, ref: sitk.Image, transform: sitk.Euler3DTransform, reference: int) -> Tuple[float, float, float]:
    """(NMI, correlation, intensity gain) of a registered stack against the reference; InputError when they do not match."""
    fixed, moving = overlap_samples(stack, ref, transform)
    if fixed.size < 64:
        raise InputError(f"stack {index + 1} does not overlap the reference stack {reference + 1} after registration")
    nmi, correlation = normalised_mutual_information(fixed, moving), foreground_correlation(fixed, moving)
    angle = rotation_angle_degrees(transform_matrix(transform)[0])
    if index != reference and (nmi < MIN_NMI or correlation < MIN_CORRELATION or angle > MAX_ROTATION_DEGREES):
        raise InputError(
            f"stack {index + 1} does not match the reference stack {reference + 1} after registration (normalised mutual "
            f"information {nmi:.3f}, correlation {correlation:.2f}, rotation {angle:.1f} deg): different subjects or contrasts?"
        )
    return nmi, correlation, intensity_gain(fixed, moving)


def intensity_gain(fixed: np.ndarray, moving: np.ndarray) -> float:
    """The factor that brings a stack's overlap samples ``fixed`` to the reference's ``moving``: the ratio of their
    foreground means for magnitude data (both non-negative; each one's foreground above a tenth of its own robust maximum,
    so a stack 20 times dimmer than the reference is matched as one 20 times brighter); for signed data (z-scored,
    offset), where a ratio of means is meaningless, the least-squares factor through the origin over the whole overlap;
    1 when there is too little."""
    if min(float(fixed.min()), float(moving.min())) >= 0:
        levels = [FOREGROUND_FRACTION * float(np.percentile(samples, ROBUST_PERCENTILE)) for samples in (fixed, moving)]
        foreground = (fixed > levels[0]) & (moving > levels[1])
        return float(moving[foreground].mean() / fixed[foreground].mean()) if foreground.sum() > 64 else 1.0
    energy = float(np.dot(fixed, fixed))
    return float(np.dot(fixed, moving) / energy) if energy > 0 and fixed.size > 64 else 1.0


# ---- steps ---------------------------------------------------------------------------------------


def _box_centre(stacks: Sequence[sitk.Image], transforms: Sequence[sitk.Euler3DTransform], reference: int) -> Tuple[float, float, float]:
    low, high = common_box(stacks, transforms, reference)
    axes = np.asarray(stacks[reference].GetDirection(), dtype=float).reshape(3, 3)
    return tuple((np.asarray(stacks[reference].GetOrigin(), dtype=float) + axes @ (0.5 * (low + high))).tolist())


def _grid(stacks: Sequence[sitk.Image], transforms: Sequence[sitk.Euler3DTransform], reference: int, spacing: float) -> SRGeometry:
    grid = output_geometry(stacks, transforms, reference, spacing)
    if grid is None:
        raise InputError("the registered stacks do not overlap: their fields of view share no region")
    return grid


def _default_smoothness(stacks: Sequence[sitk.Image], slices: Sequence[StackSlices], gains: Sequence[float]) -> float:
    """``SMOOTHNESS`` for the stacks' mean noise level after intensity matching."""
    sigmas = [g * estimate_noise_sigma(np.moveaxis(sitk.GetArrayFromImage(s), 2 - i.axis, 0)) for s, i, g in zip(stacks, slices, gains)]
    return SMOOTHNESS[0] + SMOOTHNESS[1] * float(np.mean(sigmas)) ** 2


def _solve(
    stacks: Images, slices: Sequence[StackSlices], transforms: Transforms, gains: Sequence[float], reference: int,
    spacing: float, smoothness: float, iterations: int, progress: Optional[Progress],
) -> Tuple[SRGeometry, List[StackOperator], "torch.Tensor"]:
    """(grid, operators, volume): the least-squares volume for these transforms, from register-and-average."""
    import torch  # lazy: keeps torch out of this module's import

    grid = _grid(stacks, transforms, reference, spacing)
    start = torch.from_numpy(average_stacks(stacks, transforms, grid, gains))[None, None]
    operators = _operators(stacks, slices, transforms, grid, gains)
    return grid, operators, solve(start, operators, smoothness, iterations, _phase(progress, "reconstruct"))


def _operators(
    stacks: Images, slices: Sequence[StackSlices], transforms: Transforms, grid: SRGeometry, gains: Sequence[float]
) -> List[StackOperator]:
    """The forward model of every stack on the output grid (intensities times their gain)."""
    operators = []
    for index, (stack, info, transform, gain) in enumerate(zip(stacks, slices, transforms, gains)):
        operator = build_operator(stack, info, transform, grid, sitk.GetArrayFromImage(stack) * np.float32(gain))
        if operator is None:
            raise InputError(f"stack {index + 1} has no slice inside the common field of view")
        operators.append(operator)
    return operators


def _phase(progress: Optional[Progress], phase: str) -> Optional[Callable[[int, int], None]]:
    return None if progress is None else (lambda done, total: call_progress(progress, done, total, phase))


def _report(
    stacks: Images, slices: Sequence[StackSlices], transforms: Transforms, matches: Sequence[Tuple[float, float, float]],
    operators: Sequence[StackOperator], volume: "torch.Tensor", reference: int, spacing: float, scale: float,
) -> StackReport:
    """The per-stack report and consistency maps (each residual placed back on its stack's grid). The solver's data are
    the stacks divided by ``scale`` (the reference's robust maximum) and times their gain; the maps and ``residual_rms``
    are given back in each stack's own units."""
    report = StackReport(reference=reference, spacing=spacing, transforms=list(transforms))
    for stack, info, transform, (nmi, correlation, gain), operator, normalised in zip(
        stacks, slices, transforms, matches, operators, residuals(volume, operators)
    ):
        residual = normalised * np.float32(scale / gain)
        rotation, offset = transform_matrix(transform)
        full = np.zeros(stack.GetSize()[::-1], dtype=np.float32)
        full[operator.crop] = np.abs(residual)
        consistency = sitk.GetImageFromArray(full)
        consistency.CopyInformation(stack)
        report.consistency_maps.append(consistency)
        count = float(operator.mask.sum())
        report.intensity_scales.append(gain)
        report.stacks.append(
            {
                "slices": int(stack.GetSize()[info.axis]),
                "axis": info.axis,
                "slice_spacing": info.spacing,
                "thickness": info.thickness,
                "thickness_source": info.thickness_source,
                "rotation_degrees": rotation_angle_degrees(rotation),
                "translation_mm": float(np.linalg.norm(np.asarray(transform.GetTranslation()))),
                "matrix": rotation.round(6).tolist(),
                "offset_mm": offset.round(4).tolist(),
                "intensity_scale": gain,
                "nmi": nmi,
                "correlation": correlation,
                "residual_rms": float(np.sqrt((residual**2).sum() / max(count, 1.0))),
                "voxels_used": int(count),
            }
        )
    return report
