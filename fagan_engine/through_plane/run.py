"""Thick-slice scans to isotropic volumes: self-supervised through-plane SR with the FA-GAN generator.

``super_resolve_through_plane(image)`` plans the output grid (``through_plane.plan``), fine-tunes
the bundled pretrained through-plane generator on pairs made from the scan's own in-plane slices
(``through_plane.fit``; every fourth in-plane slice held out, the best-scoring weights kept, never worse than
the start on them: ``held_out``), applies it to the slices of both orientations that contain the
through-plane axis (e.g. coronal and sagittal for an axial scan), averages the two results and
projects them onto the input's slices (data consistency: re-slicing the output with the slice profile
gives back the input; docs/thick-slices.md). The output covers exactly the input's physical extent.

Progress: ``progress(done, total, phase="fit"|"inference", loss=None)`` when the callback takes a
``phase`` keyword, else ``progress(done, total)``. Cancellation: pass
``stop`` (a callable returning True to stop) or raise from ``progress``; the fit checks ``stop``
before every iteration and inference before every batch, raising ``FitCancelled`` (a
``KeyboardInterrupt``); nothing is returned or written.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from fagan_engine.inference.batching import MAX_OUTPUT_PIXELS
from fagan_engine.inference.memory_check import check_through_plane_fits
from fagan_engine.inference.runners import resolve_device
from fagan_engine.io.volume_io import cast_array, integer_output_note, result_clipping_note, validate_image
from fagan_engine.mri.normalization import IntensityNormalizer
from fagan_engine.through_plane.fit import (
    MIN_DIRECTION_RATIO,
    FitConfig,
    FitOutcome,
    PairSampler,
    build_model,
    fit,
    load_weights,
    scan_directions,
)
from fagan_engine.through_plane.held_out import HOLD_OUT_EVERY, NO_HELD_OUT, HeldOutPairs, split_held_out
from fagan_engine.through_plane.plan import ThroughPlanePlan, bspline_matrix, output_geometry, plan_through_plane, project_onto_slices
from fagan_engine.util.config import NormalizationConfig
from fagan_engine.util.errors import InputError, warn
from fagan_engine.util.options import (
    DEFAULT_THROUGH_PLANE_ENSEMBLE,
    RunOptions,
    check_callables,
    check_through_plane_ensemble,
    check_whole,
)
from fagan_engine.util.progress import FitCancelled, call_progress

__all__ = [
    "DEFAULT_ITERATIONS",
    "FitCancelled",
    "ThroughPlanePlan",
    "apply_through_plane",
    "plan_through_plane",
    "super_resolve_through_plane",
    "through_plane_from_options",
]

DEFAULT_ITERATIONS = FitConfig().iterations
"""Default per-scan fit length (measured: docs/thick-slices.md, "What was measured")."""
FUSIONS = ("average", "fourier")
ENSEMBLE_FLIPS: Dict[int, Tuple[Tuple[int, ...], ...]] = {1: ((),), 2: ((), (2, 3)), 4: ((), (3,), (2,), (2, 3))}
"""Self-ensemble members per size: the axes of a (batch, 1, slices, columns) tensor flipped before the network and back
after it (none; the half-turn; every flip of the slice and column axes). Both axes keep the geometry: the slice profile
and the B-spline base are symmetric under reversal."""

Progress = Callable[..., None]


def super_resolve_through_plane(
    image: sitk.Image,
    target_spacing: Optional[float] = None,
    slice_thickness: Optional[float] = None,
    iterations: Optional[int] = None,
    device: str = "auto",
    progress: Optional[Progress] = None,
    *,
    edge_sigma: float = 0.0,
    weights: Optional[Path] = None,
    pretrained: bool = True,
    fusion: str = "average",
    project: bool = True,
    stop: Optional[Callable[[], bool]] = None,
    seed: int = 0,
    fit_config: Optional[FitConfig] = None,
    nan_policy: str = "error",
    output_dtype: str = "float32",
    on_fit: Optional[Callable[[FitOutcome], None]] = None,
    ensemble: int = DEFAULT_THROUGH_PLANE_ENSEMBLE,
    batch_size: Optional[int] = RunOptions.batch_size,
    plan: Optional[ThroughPlanePlan] = None,
    on_note: Optional[Callable[[str], None]] = None,
) -> sitk.Image:
    """Make a thick-slice volume isotropic along its coarsest axis; returns a SimpleITK image (``output_dtype``).

    ``target_spacing`` defaults to the finest in-plane spacing, ``slice_thickness`` to the header's
    (DICOM Slice Thickness), else the scan's own estimate when clear, else the slice spacing (``plan.choose_thickness``).
    ``iterations`` (default ``DEFAULT_ITERATIONS``) is the per-scan fit length; 0 applies the pretrained network as it is.
    ``project``: the result is projected onto the volumes whose slice-profile acquisition is exactly the input
    (data consistency). ``pretrained=False`` fits from random weights (evaluation only); ``weights`` selects another
    through-plane checkpoint (default: the bundled start for the plan's ratio, ``models.checkpoint.bundled_through_plane``).
    ``on_fit(outcome)`` receives what the fit did (``fit.FitOutcome``: steps, the step kept,
    held-out errors; ``held_out.split_held_out``); it is not called when ``iterations`` is 0. ``ensemble`` (1, 2 or 4):
    the network on that many flipped copies of every slice, averaged (``ENSEMBLE_FLIPS``). ``batch_size``: most slices per
    network call (``RunOptions``'s default; None: as many as ``MAX_OUTPUT_PIXELS`` allows). ``plan``: this image's plan
    when the caller has made it already (``plan_through_plane`` with these ``target_spacing``, ``slice_thickness`` and
    ``edge_sigma``), so it is not made twice (its slice-profile estimate takes seconds). ``output_dtype``: one of
    ``OUTPUT_DTYPES``, under the in-plane path's rule (``io.volume_io.integer_output_note``): an integer type that would
    round the input's range to one value is refused; one that clips it or keeps few levels of it is noted, to
    ``on_note(note)`` when given, else as a ``FAGANWarning``. Bad arguments and a result beyond the available memory
    (``check_through_plane_fits``) are refused in one line before any work. From a ``RunOptions``:
    ``through_plane_from_options``.
    """
    checked_options(target_spacing=target_spacing, slice_thickness=slice_thickness, fit_iterations=iterations, device=device,
                    nan_policy=nan_policy, output_dtype=output_dtype, ensemble=ensemble,
                    batch_size=RunOptions.batch_size if batch_size is None else batch_size)
    _check_arguments(seed, fusion, progress=progress, stop=stop, on_fit=on_fit, on_note=on_note)
    _check_types(pretrained=(pretrained, bool), project=(project, bool), fit_config=(fit_config, (FitConfig, type(None))),
                 plan=(plan, (ThroughPlanePlan, type(None))), weights=(weights, (str, os.PathLike, type(None))))
    image = validate_image(image, nan_policy)
    note = integer_output_note(image, output_dtype)  # raises when the type would leave one value
    if plan is None:
        plan = plan_through_plane(image, target_spacing, slice_thickness, edge_sigma)
    else:
        _check_plan(plan, image, target_spacing, slice_thickness)
    check_memory(image, plan)
    if note is not None:
        (on_note or warn)(note)
    torch_device = resolve_device(device)
    import torch  # lazy: keeps torch out of this module's import

    cfg = fit_config or FitConfig()
    cfg = dataclasses.replace(cfg, iterations=cfg.iterations if iterations is None else iterations, seed=seed)
    volume = sitk.GetArrayViewFromImage(image)
    normalizer = IntensityNormalizer.fit(volume, NormalizationConfig())
    volume01 = normalizer.forward(np.asarray(volume, dtype=np.float32))
    if pretrained:
        model, _ = load_weights(weights, device=torch_device, ratio=plan.ratio)
    else:
        torch.manual_seed(seed)
        model = build_model().to(torch_device)
    if cfg.iterations > 0:
        outcome = fit_to_scan(model, volume01, plan, cfg, torch_device, progress, stop)
        if outcome.stopped == NO_HELD_OUT:
            (on_note or warn)(f"the per-scan fit did not run: the scan is too small to hold slices out for its stopping rule "
                               f"(fewer than {HOLD_OUT_EVERY}); the bundled start network was applied as it is")
        elif outcome.stopped == "diverged":
            kept = f"the weights of step {outcome.best_step}" if outcome.best_step else "the bundled start network"
            (on_note or warn)(f"the per-scan fit diverged at step {outcome.steps + 1}; {kept}, the best on the held-out slices, "
                               "was applied")
        if on_fit is not None:
            on_fit(outcome)
    model.eval()
    result = apply_through_plane(model, volume01, plan, torch_device, fusion, progress, stop, ensemble, batch_size)
    if project:
        result = project_onto_slices(result, volume01, plan)
    values = normalizer.inverse(result)
    clip_note = result_clipping_note(values, output_dtype)
    if clip_note:
        (on_note or warn)(clip_note)
    out = sitk.GetImageFromArray(cast_array(values, output_dtype))
    return output_geometry(image, plan).apply(out)


def checked_options(**fields: Any) -> RunOptions:
    """The through-plane ``RunOptions`` of ``fields``, validated: the API's arguments follow the options' rules
    (``util.options``), one line each. A self-ensemble size and ``fit_iterations`` are checked first, so that their
    refusals name the through-plane sizes and the API's ``iterations``."""
    if fields.get("ensemble") is not None:
        check_through_plane_ensemble(fields["ensemble"])
    if fields.get("fit_iterations") is not None:
        check_whole("iterations", fields["fit_iterations"])
    return RunOptions(mode="through-plane", **fields).validate()


def check_memory(image: sitk.Image, plan: ThroughPlanePlan) -> None:
    """Refuse, before the fit, a result of ``plan`` that cannot fit in memory (a ``target_spacing`` too fine)."""
    size = image.GetSize()
    check_through_plane_fits(plan.n_out, (size[plan.in_plane_axes[0]], size[plan.in_plane_axes[1]]), plan.output_spacing)


def _check_arguments(seed: Any, fusion: Any, **callbacks: Any) -> None:
    """InputError (one line) on the arguments no ``RunOptions`` holds: the seed, the fusion and the callbacks."""
    check_whole("seed", seed)
    if fusion not in FUSIONS:
        raise InputError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    check_callables(**callbacks)


def _check_types(**arguments: Tuple[Any, Any]) -> None:
    """InputError (one line) naming the first argument that is not of its type(s) (a string "no" read as True)."""
    for name, (value, kinds) in arguments.items():
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds if k is not type(None))
            raise InputError(f"{name} must be {names}{' or None' if type(None) in kinds else ''}, got {value!r}")


def fit_to_scan(
    model: Any,
    volume01: np.ndarray,
    plan: ThroughPlanePlan,
    cfg: FitConfig,
    device: str = "cpu",
    progress: Optional[Progress] = None,
    stop: Optional[Callable[[], bool]] = None,
) -> FitOutcome:
    """Fine-tune ``model`` in place on pairs from the normalised scan's own in-plane slices, every fourth slice held
    out (``held_out``), seeded by ``cfg.seed``; a scan with too few slices to hold any out keeps the start."""
    import torch  # lazy: keeps torch out of this module's import

    directions = scan_directions(volume01, plan)
    if not directions:
        ratio = plan.input_spacing / min(plan.in_plane_spacing)
        size = min(volume01.shape[2 - a] for a in plan.in_plane_axes)
        if ratio >= MIN_DIRECTION_RATIO:  # finer in-plane, but too few pixels to make one training pair
            raise InputError(f"the in-plane matrix ({size} pixels) is smaller than two slice spacings ({2 * ratio:.0f} pixels at "
                             f"{min(plan.in_plane_spacing):g} mm): too small to learn the slice profile from")
        raise InputError("no in-plane axis is finer than the slices: nothing to learn from; use in-plane mode instead")
    training, held = split_held_out(directions)
    if not held:
        return FitOutcome(steps=0, best_step=0, stopped=NO_HELD_OUT)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        sampler = PairSampler(training, cfg, np.random.default_rng(cfg.seed))
        return fit(model, sampler, cfg, device, progress, stop, held_out=HeldOutPairs(held, cfg, device).score)


def _check_plan(plan: ThroughPlanePlan, image: sitk.Image, target_spacing: Optional[float], slice_thickness: Optional[float]) -> None:
    """InputError when a given plan is not this image's (another volume's plan failed deep in torch) or contradicts the
    target spacing or thickness also given (the plan's were used silently)."""
    if plan.axis not in (0, 1, 2) or image.GetSize()[plan.axis] != plan.n_in or not math.isclose(
            image.GetSpacing()[plan.axis], plan.input_spacing, rel_tol=1e-6):
        raise InputError("plan was made for another volume (its slice axis, count or spacing differ): make it with "
                         "plan_through_plane(image, ...) of this image")
    for name, given, planned in (("target_spacing", target_spacing, plan.target_spacing), ("slice_thickness", slice_thickness, plan.thickness)):
        if given is not None and not math.isclose(given, planned, rel_tol=1e-6):
            raise InputError(f"{name} {given:g} differs from the plan's {planned:g}: give the plan, or the {name}, not both")


def through_plane_from_options(
    image: sitk.Image,
    options: RunOptions,
    progress: Optional[Progress] = None,
    stop: Optional[Callable[[], bool]] = None,
    project: Optional[bool] = None,
    on_fit: Optional[Callable[[FitOutcome], None]] = None,
    plan: Optional[ThroughPlanePlan] = None,
    on_note: Optional[Callable[[str], None]] = None,
) -> sitk.Image:
    """``super_resolve_through_plane`` with a validated ``RunOptions``'s ``target_spacing``, ``slice_thickness``,
    ``fit_iterations``, ``device``, ``nan_policy``, ``output_dtype``, ``ensemble_members``, ``batch_size`` and ``project``
    (``project`` overrides the last: ``pipeline.report`` projects itself, after measuring what the projection removes).
    ``plan``: the image's plan from these options, when the caller has made it already. ``on_note``: receives the
    integer-output note instead of a warning (a caller that reports ``integer_output_note`` itself)."""
    if not isinstance(options, RunOptions) or options.mode != "through-plane":  # an in-plane one ran the fit all the same
        raise InputError("through_plane_from_options takes RunOptions(mode='through-plane', ...), got "
                         f"{options.mode + ' mode' if isinstance(options, RunOptions) else type(options).__name__}")
    return super_resolve_through_plane(
        image, options.target_spacing, options.slice_thickness, options.fit_iterations, options.device, progress,
        stop=stop, nan_policy=options.nan_policy, output_dtype=options.output_dtype,
        project=options.project if project is None else project, on_fit=on_fit, ensemble=options.ensemble_members,
        batch_size=options.batch_size, plan=plan, on_note=on_note,
    )


def apply_through_plane(
    model: Any,
    volume01: np.ndarray,
    plan: ThroughPlanePlan,
    device: str = "cpu",
    fusion: str = "average",
    progress: Optional[Progress] = None,
    stop: Optional[Callable[[], bool]] = None,
    ensemble: int = 1,
    batch_size: Optional[int] = None,
) -> np.ndarray:
    """Run ``model`` on both orientations' slices of a normalised (z, y, x) array and fuse; (…) float32.

    The result has ``plan.n_out`` samples along the through-plane numpy axis ``2 − plan.axis``. ``ensemble``: the
    network's outputs on ``ENSEMBLE_FLIPS[ensemble]`` flipped copies of every slice, flipped back and averaged.
    ``batch_size``: most slices per network call (never more than ``MAX_OUTPUT_PIXELS`` output pixels).
    """
    import torch  # lazy: keeps torch out of this module's import

    through = 2 - plan.axis
    moved = np.moveaxis(volume01, through, 0)  # (n_in, A, B)
    matrix = torch.from_numpy(bspline_matrix(plan.n_in, plan.n_out).astype(np.float32)).to(device)
    outputs: List[np.ndarray] = []  # (n_out, A, B) per orientation
    totals = [moved.shape[1], moved.shape[2]]
    done, total = 0, sum(totals)
    for orientation in (0, 1):
        # orientation 0: one slice per A index, (n_in, B); orientation 1: one per B index, (n_in, A)
        stack = np.moveaxis(moved, 1 + orientation, 0)  # (count, n_in, cols)
        count, _, cols = stack.shape
        result = np.empty((count, plan.n_out, cols), dtype=np.float32)
        step = max(1, min(MAX_OUTPUT_PIXELS // (plan.n_out * cols), batch_size or count))
        for start in range(0, count, step):
            if stop is not None and stop():
                raise FitCancelled("through-plane inference cancelled")
            batch = torch.from_numpy(np.ascontiguousarray(stack[start : start + step], dtype=np.float32)[:, None]).to(device)
            with torch.inference_mode():
                out = _flip_averaged(model, batch, matrix, ENSEMBLE_FLIPS[ensemble])
            result[start : start + step] = out[:, 0].float().cpu().numpy()
            done += min(step, count - start)
            call_progress(progress, done, total, "inference")
        # back to (n_out, A, B)
        outputs.append(np.moveaxis(result, 0, 1 + orientation) if orientation == 1 else np.moveaxis(result, 1, 0))
    fused = fuse(outputs[0], outputs[1], fusion)
    return np.ascontiguousarray(np.moveaxis(fused, 0, through))


def _flip_averaged(model: Any, batch: Any, matrix: Any, flips: Tuple[Tuple[int, ...], ...]) -> Any:
    """The mean over ``flips`` of ``model`` on the flipped batch (with its B-spline base), each output flipped back."""
    total = None
    for dims in flips:
        seen = batch.flip(dims) if dims else batch
        out = model(seen, matrix @ seen)
        out = out.flip(dims) if dims else out
        total = out if total is None else total + out
    return total / len(flips)


def fuse(first: np.ndarray, second: np.ndarray, fusion: str = "average") -> np.ndarray:
    """Fuse the two orientations' results, both (n_out, A, B).

    ``average``: their mean. ``fourier``: SMORE-style; in the 2D spectrum of each (A, B) plane the
    first result (fine along B) supplies the frequencies where |k_B| ≥ |k_A| and the second (fine
    along A) the others, with equal weights on the diagonal.
    """
    if fusion == "average":
        return 0.5 * (first + second)
    rows, cols = first.shape[1], first.shape[2]
    ka = np.abs(np.fft.fftfreq(rows))[:, None]
    kb = np.abs(np.fft.fftfreq(cols))[None, :]
    weight = np.where(kb > ka, 1.0, np.where(kb < ka, 0.0, 0.5))
    spectrum = weight * np.fft.fft2(first, axes=(1, 2)) + (1 - weight) * np.fft.fft2(second, axes=(1, 2))
    return np.real(np.fft.ifft2(spectrum, axes=(1, 2))).astype(np.float32)
