"""``super_resolve_report``: the SR volume with its trust maps, warnings and identity, as one result.

The CLI (``--consistency-map``, ``--uncertainty-map``, ``--report``), batch mode and Slicer call
this; ``super_resolve`` still returns a bare image for existing callers. Order of work:
super-resolve (in-plane via ``SuperResolver``, or through-plane via ``fagan_engine.through_plane.run``),
project onto the data (``options.project``, on by default for FA-GAN in-plane and through-plane), then the consistency
maps of the network's output (where it disagreed with the data: what the projection removed), the
TTA uncertainty of the network (``options.uncertainty``; in-plane only), the out-of-distribution
warnings and the identity block. Every result says "research use, not for diagnosis".
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

import numpy as np
import SimpleITK as sitk

from fagan_engine._version import __version__
from fagan_engine.inference.ensemble import TRANSFORMS
from fagan_engine.inference.memory_check import BYTES_PER_OUTPUT_VOXEL, check_output_fits, streamed_bytes_per_output_voxel
from fagan_engine.inference.resolver import SuperResolver
from fagan_engine.inference.slices import Progress, SlabGather, SlabStream
from fagan_engine.io.geometry import SliceLayout, explicit_axes, plane_axes
from fagan_engine.io.volume_io import (
    cast_array,
    clipped_voxels,
    clipping_note,
    integer_output_note,
    result_clipping_note,
    validate_image,
)
from fagan_engine.models.checkpoint import read_through_plane
from fagan_engine.mri.forward_model import project_onto_data
from fagan_engine.mri.noise_estimate import foreground
from fagan_engine.through_plane.plan import plan_through_plane
from fagan_engine.through_plane.run import through_plane_from_options
from fagan_engine.trust.consistency import ConsistencyMaps, SlabConsistency, enforce_through_plane, through_plane_consistency
from fagan_engine.trust.ood import ood_warnings
from fagan_engine.trust.uncertainty import tta_uncertainty
from fagan_engine.util.errors import InputError, warn
from fagan_engine.util.json_values import finite_json
from fagan_engine.util.options import RunOptions, check_callables
from fagan_engine.util.progress import accepts_phase

NOTICE = "research use, not for diagnosis"
UNCERTAINTY_CAVEAT = (
    "the uncertainty map is research output: on real scans it follows the error no better than the image gradient "
    "(docs/model-card.md, Real scans)"
)


@dataclasses.dataclass
class SRResult:
    """A super-resolved volume and what to trust about it."""

    image: Optional[sitk.Image]
    """The SR volume (as ``super_resolve`` returns it; projected onto the data when ``options.project``); None when
    it was streamed into a file (``pipeline.case``)."""
    consistency: Optional[sitk.Image]
    """Signed residual ``A(network output) − input`` (``forward_model.acquired_like``) on the SR grid (nearest neighbour), input units: where
    the network disagreed with the data, i.e. under the projection exactly what the projection removed."""
    consistency_lr: Optional[sitk.Image]
    """The same residual on the input grid."""
    uncertainty: Optional[sitk.Image]
    """Standard deviation over the test-time augmentations, SR grid, input units."""
    summary: Dict[str, Optional[float]]
    """``relative_rms_residual``, ``fraction_above_3sigma``, ``noise_sigma``, ``foreground_voxels``, and
    ``mean_uncertainty`` (foreground mean of the uncertainty map) when it was computed."""
    warnings: List[str]
    identity: Dict[str, Any]
    """Checkpoint name, SHA-256 of its file, training data, acquisitions, engine version, method, options, notice."""

    def report(self) -> Dict[str, Any]:
        """The JSON report: summary, warnings, identity, engine version and the notice (JSON types only)."""
        return {
            "notice": NOTICE,
            "engine_version": __version__,
            "summary": finite_json(self.summary),  # None where a figure is undefined (no foreground) or not finite
            "warnings": list(self.warnings),
            "identity": self.identity,
        }


def super_resolve(
    image: sitk.Image,
    scale: Optional[int] = None,
    *,
    options: Optional[RunOptions] = None,
    progress: Optional[Progress] = None,
    **overrides: Any,
) -> sitk.Image:
    """Super-resolve a 3D scalar image (in-plane by ``scale``, or through-plane with ``mode="through-plane"``).

    Options come from ``options`` (a ``RunOptions``) and/or keyword overrides of its fields
    (``checkpoint=``, ``method="lanczos"``, ``acquisition="bicubic"``, ``adapt_iterations=0``, ...); they
    are validated once here and every one takes effect, through the same path as ``super_resolve_report``
    (data-consistency projection and per-scan adaptation included). ``plane`` may also be two SimpleITK
    in-plane axes. The uncertainty map is not part of a bare image: ask ``super_resolve_report`` for it.
    """
    plane = overrides.pop("plane", None)
    fields = dict(require_run_options(options).to_dict() if options is not None else {}, **overrides)
    if scale is not None:
        fields["scale"] = scale
    if isinstance(plane, str):
        fields["plane"] = plane
    if fields.get("checkpoint") is not None:
        fields["checkpoint"] = str(fields["checkpoint"])
    run = RunOptions.from_dict(fields)
    if run.uncertainty:
        raise InputError("super_resolve returns the image only; use super_resolve_report for the uncertainty map")
    axes = explicit_axes(plane) if plane is not None and not isinstance(plane, str) else None
    result = run_validated(image, run, None, progress, False, False, None, axes)
    for note in result.warnings:  # what the report would list (clipping, the model's range, ...): Python warnings here
        warn(note)
    return result.image


def super_resolve_report(
    image: sitk.Image,
    options: RunOptions,
    resolver: Optional[SuperResolver] = None,
    progress: Optional[Progress] = None,
    consistency: bool = True,
    uncertainty: Optional[bool] = None,
    ensemble_checkpoint: Optional[str] = None,
    axes: Optional[Tuple[int, int]] = None,
) -> SRResult:
    """Super-resolve ``image`` under ``options`` and compute the trust outputs.

    ``resolver``: a ``SuperResolver`` built once for ``options`` (batch mode); inference uses its
    options, the trust outputs use ``options``. ``consistency``: compute the residual maps.
    ``uncertainty``: None follows ``options.uncertainty`` (costs 7 more inferences, 8 more with
    ``ensemble_checkpoint``, a second checkpoint such as the final weights next to the EMA ones).
    ``progress(done, total)`` counts slices over all passes.
    """
    options = require_run_options(options)  # ``uncertainty`` given: the options ask for it, under their rules (FA-GAN in-plane only)
    options = options.validate() if uncertainty is None else options.replace(uncertainty=uncertainty)
    check_resolver(resolver, options)
    if ensemble_checkpoint is not None and not options.uncertainty:
        raise InputError("ensemble_checkpoint is used only by the uncertainty map (uncertainty=True)")
    return run_validated(image, options, resolver, progress, consistency, options.uncertainty, ensemble_checkpoint, axes)


def require_run_options(options: Any) -> RunOptions:
    """``options`` when it is a ``RunOptions``; InputError otherwise (a dict: ``RunOptions.from_dict``)."""
    if not isinstance(options, RunOptions):
        raise InputError(f"options must be a RunOptions (RunOptions.from_dict builds one from a dict), got {type(options).__name__}")
    return options


class SlabTarget(Protocol):
    """Where a streamed SR-grid volume goes, slab by slab (a staged file: ``pipeline.case``)."""

    def write(self, start: int, slices: np.ndarray) -> None: ...


Streams = Dict[str, Callable[[SlabStream, str], SlabTarget]]
"""SR-grid volumes the caller writes slab by slab: ``"image"`` and/or ``"consistency"`` -> opens the target for the
stream and its output type. A streamed volume is None in the ``SRResult``."""


RESOLVER_FIELDS = ("mode", "method", "scale", "acquisition", "checkpoint", "untrained", "backend", "device", "ensemble",
                   "adapt_iterations", "tile_size")
"""What a ``SuperResolver`` computes from its options: a resolver built for other values would make another result than
the report's identity (built from ``options``) describes."""


def check_resolver(resolver: Optional[SuperResolver], options: RunOptions) -> None:
    """InputError (one line) when ``resolver`` was built for options that differ from ``options`` in a ``RESOLVER_FIELDS``."""
    if resolver is None:
        return
    built = getattr(resolver, "options", None)
    if not isinstance(built, RunOptions):  # "x", or another object: an AttributeError deep in the run
        raise InputError(f"resolver must be a SuperResolver (inference.resolver) or None, got {type(resolver).__name__}")
    mine, theirs = options.to_dict(), built.to_dict()
    differing = next((field for field in RESOLVER_FIELDS if mine.get(field) != theirs.get(field)), None)
    if differing is not None:
        raise InputError(f"the resolver was built for {differing} {theirs.get(differing)!r}, these options say "
                         f"{mine.get(differing)!r}: build it from the same options")


def run_validated(
    image: sitk.Image,
    options: RunOptions,
    resolver: Optional[SuperResolver],
    progress: Optional[Progress],
    consistency: bool,
    want_uncertainty: bool,
    ensemble_checkpoint: Optional[str],
    axes: Optional[Tuple[int, int]],
    streams: Optional[Streams] = None,
) -> SRResult:
    """``super_resolve_report`` for options validated by the caller (the one path of ``super_resolve`` and the report).

    In-plane the volume is produced slab by slab: network, projection, output type, consistency residual; each slab
    is written to its ``streams`` target, or gathered into the in-memory result. ``streams`` (files: ``pipeline.case``)
    apply in-plane without the uncertainty map (which needs every pass in memory); with ``streams`` the SR-grid
    consistency map is made only when streamed.
    """
    check_callables(progress=progress)
    if axes is not None:
        if options.mode == "through-plane":  # the plan picks the slice axis; an explicit pair was ignored
            raise InputError("through-plane takes its slices across the coarsest-spaced axis; explicit in-plane axes do not apply")
        axes = explicit_axes(axes)
    image = validate_image(image, options.nan_policy)
    dtype_note = integer_output_note(image, options.output_dtype)  # refuses before any work when nothing would be left
    if options.mode == "through-plane":
        result = _through_plane(image, options, progress, consistency)
        result.warnings.extend([dtype_note] if dtype_note else [])
        return result
    resolver = resolver or SuperResolver(options)
    axes = axes or plane_axes(image, options.plane)
    streaming = streams is not None and not want_uncertainty
    streams = streams if streaming else {}
    check_output_fits(image.GetNumberOfPixels(), options.scale, _bytes_per_output_voxel(streams, axes, options), want_uncertainty)
    reuse_plain = options.output_dtype == "float32" and options.ensemble_members == 1  # the plain result is the identity member
    extra = len(TRANSFORMS) * (2 if ensemble_checkpoint else 1) - int(reuse_plain) if want_uncertainty else 0
    stream = resolver.stream(image, _share(progress, 0, 1 + extra), axes, adapt_progress=progress if accepts_phase(progress) else None)
    targets: Dict[str, Any] = {kind: open_target(stream, "float32" if kind == "consistency" else options.output_dtype)
                               for kind, open_target in streams.items()}
    sr_out = targets.get("image") or SlabGather(stream, options.output_dtype)
    residual_out = targets.get("consistency") or (SlabGather(stream, "float32") if consistency and not streaming else None)
    network_out = SlabGather(stream, "float32") if want_uncertainty and reuse_plain and options.project else None
    residuals = SlabConsistency(image, options.scale, axes, options.acquisition) if consistency else None
    data = stream.layout.to_slices(sitk.GetArrayViewFromImage(image))
    clipped = 0
    for start, network in stream.slabs:
        sr = project_onto_data(network, data[start : start + len(network)], options.scale, options.acquisition) if options.project else network
        clipped += clipped_voxels(sr, options.output_dtype)
        sr_out.write(start, cast_array(sr, options.output_dtype))
        if network_out is not None:
            network_out.write(start, network)
        if residuals is not None:  # where the network disagreed with the data: under the projection, exactly what it removed
            upsampled = residuals.add(start, network)
            if residual_out is not None:
                residual_out.write(start, upsampled)
    result = sr_out.image() if "image" not in targets else None
    residual_sr = residual_out.image() if residual_out is not None and "consistency" not in targets else None
    residual_lr, summary = residuals.finish() if residuals is not None else (None, {})
    std = None
    notes: List[str] = []
    if want_uncertainty:
        plain = (network_out.image() if network_out is not None else result) if reuse_plain else None
        std = tta_uncertainty(image, resolver, axes, plain, ensemble_checkpoint, _share(progress, 1, 1 + extra, extra), options.project)
        summary["mean_uncertainty"] = _foreground_mean(std, result)
        notes.append(UNCERTAINTY_CAVEAT)
    metadata = resolver.metadata
    notes += [dtype_note] if dtype_note else []
    clip_note = clipping_note(clipped, image.GetNumberOfPixels() * options.scale ** 2, options.output_dtype)
    notes += [clip_note] if clip_note else []
    lines = list(resolver.warnings) + list(resolver.image_notes) + notes + ood_warnings(
        image,
        axes,
        metadata.data_profile if metadata else None,
        metadata.normalization_config() if metadata else None,
        resolver.checkpoint.name if resolver.checkpoint else "the checkpoint",
    )
    who = identity(options, resolver, ensemble_checkpoint)
    who["in_plane_axes"] = [int(a) for a in axes]  # the SimpleITK index axes the slices spanned: the plane that ran
    if resolver.adaptation is not None:
        who["adaptation"] = resolver.adaptation.summary()
    return SRResult(result, residual_sr, residual_lr, std, summary, lines, who)


def _bytes_per_output_voxel(streams: Streams, axes: Tuple[int, int], options: RunOptions) -> int:
    """The memory check's bytes per output voxel: in memory, or streamed (gathered where slices cross the slowest axis)."""
    if "image" not in streams:
        return BYTES_PER_OUTPUT_VOXEL
    across = SliceLayout.for_axes(axes).through_axis != 0
    gathered = [options.output_dtype] * ("image" in streams) + ["float32"] * ("consistency" in streams) if across else []
    return streamed_bytes_per_output_voxel(gathered)


def identity(
    options: RunOptions, resolver: Optional[SuperResolver], ensemble_checkpoint: Optional[str] = None, ratio: Optional[float] = None
) -> Dict[str, Any]:
    """Who made the result: checkpoint (name, file SHA-256, training data, acquisitions), engine, method, options, and the
    self-ensemble and projection that ran (``RunOptions.ensemble_members``, ``RunOptions.project``: the options keep ``None``
    for "the default"). Through-plane,
    the checkpoint is the bundled start for the plan's ``ratio`` (``models.checkpoint.bundled_through_plane``)."""
    block: Dict[str, Any] = {
        "notice": NOTICE,
        "engine_version": __version__,
        "method": options.method,
        "mode": options.mode,
        "acquisition": options.acquisition,
        "options": options.to_dict(),
        "self_ensemble": options.ensemble_members,
        "projection": options.project,
        "checkpoint": None,
    }
    if resolver is not None and resolver.checkpoint is not None:
        metadata = resolver.metadata
        block["checkpoint"] = {
            "name": resolver.checkpoint.name,
            "sha256": metadata.file_sha256 or file_sha256(resolver.checkpoint),  # the verified bytes where the loader kept them
            "content_sha256": metadata.content_sha256 or metadata.weights_sha256,
            "acquisitions": list(metadata.acquisitions),
            "training_data": metadata.training.get("train_data"),
            "validation_data": metadata.training.get("validation_data"),
            "engine_version": metadata.engine_version,
            "created": metadata.created,
            "data_profile_known": bool(metadata.data_profile),
        }
    if options.mode == "through-plane":
        block["checkpoint"] = {**read_through_plane(ratio=ratio).identity(), "per_scan_fit": True}
    if ensemble_checkpoint is not None:
        block["ensemble_checkpoint"] = {"name": Path(ensemble_checkpoint).name, "sha256": file_sha256(Path(ensemble_checkpoint))}
    return block


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (what ``sha256sum`` prints); computed once per file version, so a
    batch does not re-read the checkpoint for every case."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _through_plane(image: sitk.Image, options: RunOptions, progress: Optional[Progress], consistency: bool) -> SRResult:
    """Through-plane SR by ``fagan_engine.through_plane.run`` (another engineer's module) with the slice-profile maps."""
    plan = plan_through_plane(image, options.target_spacing, options.slice_thickness)
    fits: List[Dict[str, Any]] = []
    notes: List[str] = []  # what the run says (the fit that could not run): the report's warnings
    network = through_plane_from_options(  # float32: the projection and the maps see the network's own values; cast once
        image, dataclasses.replace(options, output_dtype="float32"), progress, project=False,
        on_fit=lambda o: fits.append(o.summary()), plan=plan, on_note=notes.append,
    )
    result = enforce_through_plane(image, network, plan) if options.project else network
    clip_note = result_clipping_note(sitk.GetArrayViewFromImage(result), options.output_dtype)
    notes += [clip_note] if clip_note else []
    sr = _cast(result, options.output_dtype)
    maps = through_plane_consistency(image, network, plan) if consistency else None
    # no OOD lines: the in-plane checks describe the in-plane network's training data, and the
    # through-plane model is fitted to each scan (the uncertainty map is in-plane only: RunOptions refuses it here)
    who = identity(options, None, ratio=plan.ratio)
    who["through_plane_plan"] = dict(plan.to_dict(), description=plan.describe())
    if fits:
        who["through_plane_fit"] = fits[0]
    lines = [note for note in (plan.spacing_note(), plan.anisotropy_note(), plan.thickness_note()) if note] + notes
    return SRResult(sr, *_maps(maps), None, dict(maps.summary) if maps else {}, lines, who)


def _maps(maps: Optional[ConsistencyMaps]) -> List[Optional[sitk.Image]]:
    return [maps.residual_sr, maps.residual_lr] if maps else [None, None]


def _share(progress: Optional[Progress], first: int, passes: int, count: int = 1) -> Optional[Progress]:
    """Progress of ``count`` passes (reported as (done, count · slices)) that start at pass ``first`` of ``passes``."""
    if progress is None:
        return None
    report: Callable[[int, int], None] = progress

    def share(done: int, total: int) -> None:
        per_pass = total // count
        report(first * per_pass + done, passes * per_pass)

    return share


def _foreground_mean(std: sitk.Image, sr: sitk.Image) -> float:
    values = sitk.GetArrayViewFromImage(sr).astype(np.float32)
    mask = foreground(values)
    return float(sitk.GetArrayViewFromImage(std)[mask].mean()) if mask.any() else 0.0


def _cast(image: sitk.Image, output_dtype: str) -> sitk.Image:
    """The float32 image in the requested output type (``io.volume_io.cast_array``), geometry kept."""
    if output_dtype == "float32":
        return image
    out = sitk.GetImageFromArray(cast_array(sitk.GetArrayViewFromImage(image), output_dtype))
    out.CopyInformation(image)
    return out
