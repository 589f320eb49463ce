"""``fagan-sr``: super-resolve one volume file."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Dict, List, Optional

from ..batch import OUTPUT_FORMATS
from ..config import ACQUISITIONS, PLANES, SCALES
from ..errors import InputError
from ..options import BACKENDS, DEVICES, GAP_POLICIES, METHODS, NAN_POLICIES, OUTPUT_DTYPES, RunOptions
from ..protocol import emit
from . import OneLineParser, entry_point


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="fagan-sr",
        description="Super-resolve MRI volumes in-plane with FA-GAN: fagan-sr INPUT OUTPUT --scale N (one volume), "
        "fagan-sr INPUT... --output-dir D or fagan-sr --manifest CSV (a batch, docs/batch.md).",
    )
    parser.add_argument(
        "paths", nargs="*", metavar="PATH",
        help="INPUT OUTPUT (one volume), or with --output-dir any number of inputs: volume files (.nii, .nii.gz, .nrrd, "
        ".nhdr, .mha, .mhd), DICOM series folders, or folders searched recursively for both",
    )
    parser.add_argument("--scale", type=int, choices=SCALES, help="in-plane upscaling factor (required in-plane)")
    parser.add_argument("--checkpoint", help="FA-GAN checkpoint (.safetensors); default: the bundled one for --scale")
    parser.add_argument("--plane", default="auto", choices=PLANES, help="slice plane (auto: two finest-spaced axes)")
    parser.add_argument("--method", default="fagan", choices=METHODS, help="FA-GAN, or an interpolation baseline")
    parser.add_argument(
        "--acquisition",
        default="kspace",
        choices=ACQUISITIONS,
        help="how the input lost its resolution (selects the matching bundled checkpoint): kspace = a smaller "
        "acquisition matrix (a real scan), bicubic = the paper's anti-aliased bicubic downsampling, gaussian = a Gaussian PSF",
    )
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--backend", default="auto", choices=BACKENDS, help="auto: torch if installed, else ONNX Runtime")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per batch")
    parser.add_argument("--tile-size", type=int, help="process slices in overlapping LR tiles of this size (bounds memory)")
    parser.add_argument("--dtype", default="float32", choices=OUTPUT_DTYPES, help="output voxel type")
    parser.add_argument("--nan-policy", default="error", choices=NAN_POLICIES, help="non-finite input voxels: refuse, or treat as 0")
    parser.add_argument("--series-id", help="DICOM folder with several series: the SeriesInstanceUID to read")
    parser.add_argument("--force", action="store_true", help="allow overwriting an existing output file (batch: redo finished cases)")
    batch = parser.add_argument_group("batch mode (docs/batch.md)")
    batch.add_argument("--output-dir", help="batch mode: write each input's output here, mirroring sub-folders")
    batch.add_argument("--manifest", help="batch mode: CSV with columns input,output[,series_id][,RunOptions fields]")
    batch.add_argument(
        "--output-format", choices=tuple(OUTPUT_FORMATS),
        help="format of every output (default: the input's; .nrrd for DICOM inputs); dicom writes a DICOM series folder",
    )
    batch.add_argument(
        "--report", metavar="PATH",
        help="batch: the batch report (.csv or .json; default <output-dir>/batch-report.csv); one volume: the JSON trust report",
    )
    batch.add_argument("--shard", metavar="K/N", help="process only shard K of N (0 <= K < N); default from RANK/WORLD_SIZE or SLURM_ARRAY_TASK_ID/COUNT")
    batch.add_argument("--prefetch", action="store_true", help="read the next input while the current one runs (docs/performance.md)")
    parser.add_argument("--untrained", action="store_true", help="use random weights when no checkpoint exists (testing only)")
    parser.add_argument("--progress", default="bar", choices=("bar", "json", "none"))
    add_feature_flags(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    return entry_point(_main, argv)


def _main(argv: List[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.output_dir is not None or args.manifest is not None:
        from .batch_cli import run_batch

        return run_batch(args)
    if len(args.paths) != 2:
        raise InputError(
            "give INPUT and OUTPUT for one volume, or several inputs with --output-dir D (or --manifest CSV) for a batch"
        )
    args.input, args.output = args.paths
    for flag, value in (("--shard", args.shard), ("--prefetch", args.prefetch or None)):
        if value is not None:
            raise InputError(f"{flag} applies to batch mode (--output-dir or --manifest)")
    return _single(args)


def _single(args: argparse.Namespace) -> int:
    """``fagan-sr INPUT OUTPUT``: one volume (the form the Slicer module runs)."""
    from .. import volume_io
    from ..case import check_outputs, read_source, super_resolve_case, write_outputs
    from ..inference import SuperResolver

    started = time.perf_counter()
    options = run_options(args)
    if args.report is not None and not args.report.lower().endswith(".json"):
        raise InputError(f"--report for one volume writes the JSON trust report; {args.report} does not end in .json")
    maps = single_map_paths(args)
    output_is_dicom = check_single_output(args)
    plain = not (maps or output_is_dicom or args.report)
    if plain:
        volume_io.check_output_path(args.input, args.output, args.force)
    else:
        check_outputs(args.input, args.output, dict(maps, **({"report": args.report} if args.report else {})), args.force)
    source = read_source(args.input, options, args.series_id, need_tags=output_is_dicom)
    resolver = SuperResolver(options) if options.mode != "through-plane" else None
    report = ProgressReporter(args)
    if args.progress == "json":
        emit("start", input=args.input, output=args.output, options=options.to_dict())
    for line in getattr(resolver, "warnings", []):
        warn(args, line)
    try:
        outcome = super_resolve_case(source.image, options, resolver, report, tuple(maps))
    finally:
        report.close()
    if plain:
        volume_io.write_volume(outcome.image, args.output, force=args.force, input_path=args.input)
    else:
        write_outputs(outcome, args.output, maps, args.force, options, resolver, source.dicom_tags, report_path=args.report)
    for line in outcome.warnings:  # about the result: only once it is written (a failure prints its error line alone)
        if line not in getattr(resolver, "warnings", []):
            warn(args, line)
    seconds = time.perf_counter() - started
    if args.progress == "json":
        extra = {"summary": outcome.summary} if outcome.summary else {}
        emit("finished", output=args.output, seconds=round(seconds, 3), **extra)
    elif args.progress == "bar":
        sys.stderr.write(f"wrote {args.output} ({seconds:.1f} s)\n")
    return 0


def check_single_output(args: argparse.Namespace) -> bool:
    """True when OUTPUT is a DICOM series folder (--output-format dicom); refuse a format/extension mismatch."""
    from ..batch import output_format_of

    if args.output_format is None:
        return False
    if args.output_format == "dicom":
        if output_format_of(args.output) != "dicom":
            raise InputError(f"--output-format dicom writes a series folder; OUTPUT {args.output} has a volume file extension")
        return True
    if output_format_of(args.output) != args.output_format:
        raise InputError(f"OUTPUT {args.output} does not end in {OUTPUT_FORMATS[args.output_format]} (--output-format {args.output_format})")
    return False


def single_map_paths(args: argparse.Namespace) -> Dict[str, str]:
    """Trust map kind -> path for one volume (a flag without a path: ``<output stem>_<kind><ext>``)."""
    from ..batch import map_paths

    maps: Dict[str, str] = {}
    for kind in MAP_FLAGS:
        value = getattr(args, kind + "_map", None)
        if value is not None:
            maps[kind] = value if value is not True else map_paths(args.output, [kind])[kind]
    return maps


MAP_FLAGS = ("consistency", "consistency_lr", "uncertainty")
"""Trust maps: ``--consistency-map``, ``--consistency-map-lr``, ``--uncertainty-map`` (dest ``<kind>_map``)."""


def run_options(args: argparse.Namespace) -> RunOptions:
    """The shared RunOptions from parsed ``fagan-sr`` arguments (batch: the defaults of every case)."""
    through_plane = args.through_plane
    if args.scale is None and not through_plane and args.manifest is None:
        raise InputError("the following arguments are required: --scale")
    return RunOptions(
        scale=args.scale if args.scale is not None else 2,
        mode="through-plane" if through_plane else "in-plane",
        method=args.method,
        acquisition=args.acquisition,
        checkpoint=args.checkpoint,
        plane=args.plane,
        device=args.device,
        backend=args.backend,
        batch_size=args.batch_size,
        tile_size=args.tile_size,
        nan_policy=args.nan_policy,
        output_dtype=args.dtype,
        untrained=args.untrained,
        adapt_iterations=args.adapt,
        target_spacing=args.target_spacing,
        slice_thickness=args.slice_thickness,
        fit_iterations=args.iterations,
        enforce_consistency=args.enforce_consistency,
        uncertainty=args.uncertainty_map is not None,
        dicom_gaps=args.dicom_gaps,
    ).validate()


def add_feature_flags(parser: argparse.ArgumentParser) -> None:
    """Through-plane, per-scan adaptation, DICOM gap and trust-map flags."""
    group = parser.add_argument_group("through-plane super-resolution")
    group.add_argument("--through-plane", action="store_true", help="super-resolve across slices to isotropic voxels (--scale not needed)")
    group.add_argument("--target-spacing", type=float, metavar="MM", help="through-plane: output spacing (default: the in-plane spacing)")
    group.add_argument("--slice-thickness", type=float, metavar="MM", help="through-plane: acquired slice thickness (default: the slice spacing)")
    group.add_argument("--iterations", type=int, metavar="N", help="through-plane: fitting iterations")
    parser.add_argument("--adapt", type=int, metavar="N", default=0, help="per-scan adaptation: N fine-tuning iterations on the input itself")
    parser.add_argument(
        "--dicom-gaps",
        default="error",
        choices=GAP_POLICIES,
        help="DICOM series with missing or duplicated slices: refuse (default), or resample onto a uniform grid at the true positions",
    )
    group = parser.add_argument_group("trust maps (written with the output, atomically)")
    for kind, flag in (("consistency", "--consistency-map"), ("consistency_lr", "--consistency-map-lr"), ("uncertainty", "--uncertainty-map")):
        group.add_argument(flag, dest=f"{kind}_map", nargs="?", const=True, metavar="PATH",
                           help=f"write the {kind.replace('_', ' ')} map (batch, or no PATH: <output stem>_{kind}<ext>)")
    group.add_argument("--enforce-consistency", action="store_true", help="project the result onto the input (data consistency)")


def warn(args: argparse.Namespace, line: str) -> None:
    """One ``warning:`` line on stderr (a protocol event in JSON mode); never changes the exit code."""
    if args.progress == "json":
        emit("warning", message=line)
    else:
        sys.stderr.write(f"warning: {line}\n")


class ProgressReporter:
    """Progress callback: tqdm bar on stderr, protocol events, or nothing."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.mode = args.progress
        self.bar = None

    def __call__(self, done: int, total: int, phase: Optional[str] = None, loss: Optional[float] = None) -> None:
        if self.mode == "json":
            extra = {k: v for k, v in (("phase", phase), ("loss", loss)) if v is not None}
            emit("progress", done=done, total=total, fraction=round(done / total, 4) if total else 0.0, **extra)
        elif self.mode == "bar":
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="slice", file=sys.stderr, desc="super-resolving")
            if phase is not None and self.bar.desc != phase:
                self.bar.set_description(phase)
            self.bar.total = total
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
