"""One case: read the input, super-resolve it, and publish all its outputs together.

Used by batch mode for every case and by the single-case ``fagan-sr INPUT OUTPUT`` form for
the DICOM output and trust maps. The outputs of a case (the volume or DICOM series folder and
the requested trust maps) are first written completely into hidden staging folders beside their
targets (``.<name>.tmp-<pid>-XXXX``, removed on any failure, and by a later run if the process
was killed), then published, maps first and the output last: when writing any of them fails,
none is left. The existence of the output therefore marks a finished case (batch resume).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from fagan_engine._version import __version__
from fagan_engine.inference.slices import SlabGather, SlabStream
from fagan_engine.io.dicom_source import SLICE_KEYWORDS, read_series_tags
from fagan_engine.io.dicom_stream import DicomStreamWriter
from fagan_engine.io.dicom_writer import (
    check_dicom_direction,
    check_replaceable,
    publish_folder,
    series_description,
    stage_dicom_series,
    voxel_text,
)
from fagan_engine.io.volume_io import check_nifti_direction, output_files, read_volume, remove_stale_staging, split_extension, write_volume
from fagan_engine.io.volume_stream import VolumeStreamWriter, can_stream
from fagan_engine.pipeline.batch import output_format_of
from fagan_engine.pipeline.report import SlabTarget, Streams, check_resolver, require_run_options, run_validated
from fagan_engine.util.atomic import describe_os_error, fsync_dir, fsync_file, publish_files
from fagan_engine.util.errors import InputError, OutputError, collected_warnings
from fagan_engine.util.failures import interrupts_deferred
from fagan_engine.util.options import MAP_KINDS, RunOptions

Progress = Callable[..., None]


@dataclasses.dataclass
class Outcome:
    """What super-resolving one volume produced."""

    image: Optional[sitk.Image]
    """None when the volume was streamed into its staged file."""
    maps: Dict[str, Optional[sitk.Image]] = dataclasses.field(default_factory=dict)
    warnings: List[str] = dataclasses.field(default_factory=list)
    summary: Dict[str, Any] = dataclasses.field(default_factory=dict)
    report: Optional[Dict[str, Any]] = None
    """The trust report (``SRResult.report()``) when the trust features ran."""

    @property
    def checkpoint(self) -> Optional[Dict[str, str]]:
        """Name and SHA-256 of the checkpoint that made the result, from the report's identity (through-plane: the start
        for the volume's slice ratio); None without one (interpolation, random weights) or without a report."""
        made_by = (self.report or {}).get("identity", {}).get("checkpoint")
        return {key: made_by[key] for key in ("name", "sha256")} if made_by else None

    @property
    def through_plane(self) -> Optional[Dict[str, Any]]:
        """Through-plane: what the engine decided for this volume, the report identity's ``through_plane_plan`` (slice
        thickness and its source, spacings) and ``through_plane_fit`` (what the per-scan fit did); None in-plane."""
        identity = (self.report or {}).get("identity", {})
        decided = {key: identity[key] for key in ("through_plane_plan", "through_plane_fit") if key in identity}
        return decided or None


@dataclasses.dataclass
class Source:
    """A read input: the image and, for a DICOM series, its patient/study/acquisition tags."""

    image: sitk.Image
    dicom_tags: Optional[Dict[str, Any]] = None
    seconds: float = 0.0
    warnings: List[str] = dataclasses.field(default_factory=list)
    """What reading said (geometry conflicts, header complaints, voxels the NaN policy zeroed): the case's first warnings."""


def read_source(path: str, options: RunOptions, series_id: Optional[str] = None, dicom_output: bool = False) -> Source:
    """Read one input. For a DICOM output (``dicom_output``): the tags of a folder input, and a direction a series cannot
    store (sheared) refused before any work. The engine's warnings while reading are kept with the source (so a batch names
    its case, and the report lists them)."""
    started = time.perf_counter()
    with collected_warnings() as notes:
        image = read_volume(path, nan_policy=options.nan_policy, series_id=series_id, dicom_gaps=options.dicom_gaps)
        tags = None
        if dicom_output:
            check_dicom_direction(image.GetDirection())  # the result keeps the input's direction
        if dicom_output and Path(path).is_dir():
            tags = read_series_tags(path, series_id)
    return Source(image, tags, time.perf_counter() - started, notes)


def super_resolve_case(
    image: sitk.Image, options: RunOptions, resolver: Any, progress: Optional[Progress], streams: Optional[Streams] = None,
    read_warnings: Sequence[str] = (),
) -> Outcome:
    """Super-resolve ``image`` (either mode) through the trust report; ``streams``: the SR-grid volumes written slab by
    slab as they are produced (``StagedOutputs.streams``), absent from the outcome; ``read_warnings``: what reading the
    input said (``Source.warnings``), first among the outcome's and the report's warnings."""
    options = require_run_options(options).validate()  # a public entry: the options are checked here as everywhere they enter
    check_resolver(resolver, options)
    report = run_validated(image, options, resolver, progress, True, options.uncertainty, None, None, streams)
    report.warnings[:0] = [line for line in read_warnings if line not in report.warnings]
    maps = {"consistency": report.consistency, "consistency_lr": report.consistency_lr, "uncertainty": report.uncertainty}
    return Outcome(report.image, maps, list(report.warnings), dict(report.summary or {}), report.report())


def derivation_text(options: RunOptions, resolver: Any, outcome: Outcome, result_spacing: Tuple[float, ...]) -> str:
    """DerivationDescription: what made the series (method, the result's voxels through-plane, the checkpoint that ran,
    engine version)."""
    checkpoint = outcome.checkpoint["name"] if outcome.checkpoint else getattr(resolver, "checkpoint", None)
    if options.mode == "through-plane":
        what = f"through-plane super-resolution to {voxel_text(result_spacing)} voxels"
    else:
        what = f"in-plane super-resolution x{options.scale}"
    weights = Path(checkpoint).name if checkpoint else "untrained (random weights)"
    model = options.method if options.method != "fagan" else f"FA-GAN checkpoint {weights}"
    return f"{what} by fagan_engine {__version__} ({model})"


def description_for(options: RunOptions, source_tags: Optional[Dict[str, Any]], result_spacing: Tuple[float, ...]) -> str:
    """SeriesDescription of the DICOM output (``result_spacing``: the result's, named in through-plane mode)."""
    return series_description((source_tags or {}).get("SeriesDescription"), options.mode, options.method, options.scale, result_spacing,
                              options.untrained)


# --- outputs ------------------------------------------------------------------------------------


def is_done(output: str) -> bool:
    """True when the output exists (a DICOM series folder: exists and is not empty)."""
    path = Path(output)
    if path.is_dir():
        return any(path.iterdir())
    return os.path.lexists(path)


@dataclasses.dataclass
class CaseOutputs:
    """Where one case's outputs go, and how they are written."""

    output: str
    maps: Dict[str, str] = dataclasses.field(default_factory=dict)
    """Trust map kind -> path."""
    force: bool = False
    report_path: Optional[str] = None
    """The JSON trust report, published with them."""
    replace_maps: bool = False
    """Batch mode, output missing: maps left by a run killed between publishing its maps and its output are replaced."""
    compress: bool = True
    """gzip volumes whose format allows it (``--no-compression`` turns it off, for fast loading)."""


class StagedOutputs:
    """One case's outputs written into staging folders beside their targets, then published together.

    Volumes of the SR grid (the output, a file or a DICOM series, and the consistency map) are written slab by slab
    while they are produced (``streams``, ``io.volume_stream``, ``io.dicom_stream``); the others are staged whole
    (``add_volume``, ``add_dicom``)."""

    def __init__(self, outputs: CaseOutputs) -> None:
        self.outputs = outputs
        self.force = outputs.force
        self.compress = outputs.compress
        self.staging: Dict[Path, Path] = {}
        self.items: List[Tuple[str, Path, Path, bool]] = []  # (kind file|dicom, staged, target, replace)
        self.streamed: Dict[str, Tuple[Any, Path, Path]] = {}  # kind -> (writer, staged, target)

    def __enter__(self) -> "StagedOutputs":
        return self

    def __exit__(self, *exc: Any) -> None:
        with interrupts_deferred():  # a SIGTERM here (right after a case was published) would leave a staging folder
            try:
                for writer, _, _ in self.streamed.values():
                    if isinstance(writer, (VolumeStreamWriter, DicomStreamWriter)):
                        writer.abort()
            finally:
                for folder in self.staging.values():
                    shutil.rmtree(folder, ignore_errors=True)

    @property
    def streams(self) -> Streams:
        """The SR-grid volumes this case writes slab by slab: the output and the consistency map."""
        targets = {"consistency": self.outputs.maps.get("consistency"), "image": self.outputs.output}
        return {kind: functools.partial(self._open_stream, kind, target) for kind, target in targets.items() if target is not None}

    def _open_stream(self, kind: str, target: str, stream: SlabStream, dtype: str) -> SlabTarget:
        """A staged file of ``target`` for ``stream``'s volume (gathered in memory when its format cannot be streamed)."""
        if kind == "image" and output_format_of(target) == "dicom":
            path = Path(target.rstrip("/" + os.sep))
            writer: Any = DicomStreamWriter(self._staged_path(path), stream.geometry, stream.layout, dtype, shown=path)
            self.streamed[kind] = (writer, writer.folder, path)
            return writer
        path = Path(target)
        staged = self._staged_path(path)
        check_nifti_direction(path, np.asarray(stream.geometry.direction).reshape(3, 3))
        if can_stream(str(staged), stream.geometry):
            writer = VolumeStreamWriter(staged, stream.geometry, stream.layout, dtype, self.compress, shown=path)
        else:
            writer = SlabGather(stream, dtype)
        self.streamed[kind] = (writer, staged, path)
        return writer

    def finish_stream(self, kind: str, replace: Optional[bool] = None, **labels: Any) -> None:
        """Complete a streamed volume and stage it for publishing (in the order of these calls); ``labels``: a DICOM
        series' ``source_tags``, ``description`` and ``derivation``."""
        writer, staged, target = self.streamed[kind]
        if isinstance(writer, DicomStreamWriter):
            writer.close(**labels)
            self.items.append(("dicom", staged, target, self.force))
            return
        if isinstance(writer, SlabGather):
            del self.streamed[kind]
            self.add_volume(writer.image(), str(target), replace)
            return
        writer.close()
        self.items.append(("file", staged, target, self.force if replace is None else replace))

    def _staged_path(self, path: Path) -> Path:
        staged = self._folder(path) / path.name
        if staged.exists() or any(item[1] == staged for item in self.items) or any(s == staged for _, s, _ in self.streamed.values()):
            raise OutputError(f"two outputs of one case are named {path.name} in {path.parent}")
        return staged

    def _folder(self, target: Path) -> Path:
        parent = target.parent
        if parent not in self.staging:
            parent.mkdir(parents=True, exist_ok=True)
            stem = split_extension(target.name)[0]
            remove_stale_staging(parent, stem)
            try:
                self.staging[parent] = Path(tempfile.mkdtemp(prefix=f".{stem}.tmp-{os.getpid()}-", dir=str(parent)))
            except OSError as exc:
                raise OutputError(describe_os_error(exc, target)) from None
        return self.staging[parent]

    def add_volume(self, image: sitk.Image, target: str, replace: Optional[bool] = None) -> None:
        """Stage a volume file (NIfTI, NRRD, MetaImage; detached data files included); ``replace``
        (default: ``force``) lets it replace an existing file."""
        path = Path(target)
        staged = self._staged_path(path)
        try:
            write_volume(image, str(staged), compress=self.compress)
        except OutputError as exc:  # name the real target, not the staging folder
            raise OutputError(str(exc).replace(str(staged), str(path))) from None
        self.items.append(("file", staged, path, self.force if replace is None else replace))

    def add_bytes(self, data: bytes, target: str) -> None:
        """Stage a small file (the JSON trust report)."""
        path = Path(target)
        staged = self._folder(path) / path.name
        try:
            staged.write_bytes(data)
            fsync_file(staged)
        except OSError as exc:  # a full disk: one line naming the target
            raise OutputError(describe_os_error(exc, path)) from None
        self.items.append(("file", staged, path, self.force))

    def add_dicom(self, image: sitk.Image, target: str, **labels: Any) -> None:
        """Stage a DICOM series folder (``labels``: ``stage_dicom_series``'s ``source_tags``, ``description``, ``derivation``)."""
        path = Path(target.rstrip("/" + os.sep))
        staged = self._folder(path) / path.name
        stage_dicom_series(image, staged, **labels, shown=path)
        self.items.append(("dicom", staged, path, self.force))

    def publish(self) -> None:
        """Publish in the order staged (output last) as one set: every refusal is checked before anything is moved (an
        output that appeared meanwhile, a DICOM folder that may not be replaced), Ctrl-C and SIGTERM wait until the whole
        set is in place, and on a failure what this call created is removed again (replaced files cannot be restored)."""
        self._check_publishable()
        published: List[Tuple[str, Path]] = []
        with interrupts_deferred():
            try:
                for kind, staged, target, replace in self.items:
                    if kind == "dicom":
                        publish_folder(staged, target, replace)
                        if not replace:
                            published.append(("dicom", target))
                        continue
                    names = [staged.parent / Path(p).name for p in output_files(staged)]
                    moves = [(f, target.parent / f.name) for f in names if f.exists() and f != staged] + [(staged, target)]
                    publish_files(moves, replace, target)
                    if not replace:
                        published += [("file", destination) for _, destination in moves]
            except BaseException:
                for kind, path in published:
                    if kind == "dicom":
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        try:
                            path.unlink()
                        except OSError:
                            pass
                raise
        for parent in self.staging:
            fsync_dir(parent)

    def _check_publishable(self) -> None:
        """OutputError, before anything is moved, for an item that may not be published: a name that exists now without
        leave to replace it (written meanwhile by another process: its maps must not be replaced by this run's), or a
        DICOM folder that holds more than a series."""
        for kind, _, target, replace in self.items:
            exists = is_done(str(target)) if kind == "dicom" else os.path.lexists(target)
            if exists and not replace:
                raise OutputError(f"output {target} already exists (created meanwhile); pass --force to overwrite it")
            if exists and kind == "dicom":
                check_replaceable(target)


def _same_slices(source: Optional[Source], spacing: Sequence[float]) -> bool:
    """Whether the result keeps the input's DICOM slices (slice axis 2 at the input's spacing: an in-plane result whose
    plane is the slices'), so that their acquired Slice Thickness still describes it."""
    return source is not None and math.isclose(spacing[2], source.image.GetSpacing()[2], rel_tol=1e-6)


def write_outputs(staged: StagedOutputs, outcome: Outcome, options: RunOptions, resolver: Any = None, source: Optional[Source] = None) -> None:
    """Stage what was not streamed and publish the output and the requested maps together, or none of them (the one
    write path of every run): maps first, then the report, the output last. ``source``: the input as read (a DICOM
    output takes its series' tags)."""
    source_tags = source.dicom_tags if source is not None else None
    outputs = staged.outputs
    for kind in MAP_KINDS:
        if kind not in outputs.maps:
            continue
        replace = outputs.force or outputs.replace_maps
        if kind in staged.streamed:
            staged.finish_stream(kind, replace)
        elif outcome.maps.get(kind) is not None:
            staged.add_volume(outcome.maps[kind], outputs.maps[kind], replace=replace)
        else:
            raise InputError(f"the {kind.replace('_', ' ')} map was not computed (the uncertainty map needs in-plane mode)")
    if outputs.report_path is not None:
        if outcome.report is None:
            raise InputError("--report PATH.json for one case needs the trust features (fagan_engine.pipeline.report)")
        text = json.dumps(outcome.report, indent=2, default=str, allow_nan=False) + "\n"
        staged.add_bytes(text.encode("utf-8"), outputs.report_path)
    streamed = staged.streamed.get("image")
    labels: Dict[str, Any] = {}
    if output_format_of(outputs.output) == "dicom":
        spacing = streamed[0].geometry.spacing if streamed else outcome.image.GetSpacing()
        if source_tags and not _same_slices(source, spacing):  # new slices: their thickness is the output spacing
            source_tags = {k: v for k, v in source_tags.items() if k not in SLICE_KEYWORDS}
        labels = dict(source_tags=source_tags, description=description_for(options, source_tags, spacing),
                      derivation=derivation_text(options, resolver, outcome, spacing))
    if streamed:
        staged.finish_stream("image", **labels)
    elif labels:
        staged.add_dicom(outcome.image, outputs.output, **labels)
    else:
        staged.add_volume(outcome.image, outputs.output)
    staged.publish()
