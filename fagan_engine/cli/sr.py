"""``fagan-sr``: super-resolve one volume file."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from fagan_engine.cli import entry_point
from fagan_engine.cli.arguments import build_parser, run_options
from fagan_engine.cli.batch_cli import run_batch
from fagan_engine.cli.phase_bar import PhaseBar
from fagan_engine.cli.stacks import run_stacks
from fagan_engine.inference.memory_check import out_of_memory_as_advice
from fagan_engine.inference.resolver import SuperResolver
from fagan_engine.inference.runners import compute_description
from fagan_engine.pipeline.batch import OUTPUT_FORMATS, check_output_name, map_paths, output_format_of
from fagan_engine.pipeline.case import CaseOutputs, StagedOutputs, read_source, super_resolve_case, write_outputs
from fagan_engine.pipeline.validation import check_run_paths
from fagan_engine.util.errors import InputError
from fagan_engine.util.options import MAP_FLAGS
from fagan_engine.util.progress import RunFraction, event_fields
from fagan_engine.util.protocol import emit


def main(argv: Optional[List[str]] = None) -> int:
    return entry_point(_main, argv)


def _main(argv: List[str]) -> int:
    args = build_parser().parse_intermixed_args(argv)  # INPUT OUTPUT may also follow options
    if args.stacks:
        with out_of_memory_as_advice("stacks"):
            return run_stacks(args, ProgressReporter(args))
    if args.reference is not None:
        raise InputError("--reference picks the stack whose orientation the result takes: it applies to --stacks only")
    if args.output_dir is not None or args.manifest is not None:
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
    started = time.perf_counter()
    options = run_options(args)
    if options.dicom_gaps != "error" and Path(args.input).is_file():  # a batch mixes files and folders: it may be given
        raise InputError(f"--dicom-gaps applies to a DICOM series folder, and {args.input} is a file")
    maps = single_map_paths(args)
    output_is_dicom = check_single_output(args)
    check_run_paths([args.input], args.output, maps, args.report, args.force, compress=not args.no_compression)
    with out_of_memory_as_advice(options.mode):  # reading, computing and writing alike
        source = read_source(args.input, options, args.series_id, dicom_output=output_is_dicom)
        resolver = SuperResolver(options) if options.mode != "through-plane" else None
        report = ProgressReporter(args, whole_run=True)
        if args.progress == "json":
            emit("start", input=args.input, output=args.output, options=options.to_dict(), **compute_description(options))
        with StagedOutputs(CaseOutputs(args.output, maps, args.force, args.report, compress=not args.no_compression)) as staged:
            try:
                outcome = super_resolve_case(source.image, options, resolver, report, staged.streams, source.warnings)
            except BaseException:
                report.close(clear=True)  # the error line stands alone, without a half-drawn bar above it
                raise
            report.close()
            write_outputs(staged, outcome, options, resolver, source)
    notes = list(getattr(resolver, "warnings", []))
    for line in notes + [w for w in outcome.warnings if w not in notes]:  # only once the result is written: a failure prints its error line alone
        warn(args, line)
    seconds = time.perf_counter() - started
    if args.progress == "json":
        extra = {"summary": outcome.summary} if outcome.summary else {}
        emit("finished", output=args.output, seconds=round(seconds, 3), **extra)
    elif args.progress == "bar":
        sys.stderr.write(f"wrote {args.output} ({seconds:.1f} s)\n")
    return 0


def check_single_output(args: argparse.Namespace) -> bool:
    """True when OUTPUT is a DICOM series folder (a name without extension, or --output-format dicom); refuse an
    extension that is no volume format, and a format/extension mismatch."""
    check_output_name(args.output)
    if args.output_format is None:
        return output_format_of(args.output) == "dicom"
    if args.output_format == "dicom":
        if output_format_of(args.output) != "dicom":
            raise InputError(f"--output-format dicom writes a series folder; OUTPUT {args.output} has a volume file extension")
        return True
    if output_format_of(args.output) != args.output_format:
        raise InputError(f"OUTPUT {args.output} does not end in {OUTPUT_FORMATS[args.output_format]} (--output-format {args.output_format})")
    return False


def single_map_paths(args: argparse.Namespace) -> Dict[str, str]:
    """Trust map kind -> path for one volume (a flag without a path: ``<output stem>_<kind><ext>``)."""
    maps: Dict[str, str] = {}
    for kind in MAP_FLAGS:
        value = getattr(args, kind + "_map", None)
        if value is not None:
            maps[kind] = value if value is not True else map_paths(args.output, [kind])[kind]
    return maps


def warn(args: argparse.Namespace, line: str) -> None:
    """One ``warning:`` line on stderr (a protocol event in JSON mode); never changes the exit code."""
    if args.progress == "json":
        emit("warning", message=line)
    else:
        sys.stderr.write(f"warning: {line}\n")


class ProgressReporter:
    """Progress callback: a phase bar on stderr, protocol events, or nothing. With ``whole_run`` the events also carry
    ``run_fraction`` (``util.progress.RunFraction``: one volume's adaptation or fit, then inference)."""

    def __init__(self, args: argparse.Namespace, whole_run: bool = False) -> None:
        self.mode = args.progress
        self.bar = PhaseBar()
        self.run = RunFraction() if whole_run else None

    def __call__(self, done: int, total: int, phase: Optional[str] = None, loss: Optional[float] = None) -> None:
        if self.mode == "json":
            extra = event_fields(phase, loss)
            if self.run is not None:
                extra["run_fraction"] = round(self.run.update(done, total, phase), 4)
            emit("progress", done=done, total=total, fraction=round(done / total, 4) if total else 0.0, **extra)
        elif self.mode == "bar":
            self.bar.update(done, total, phase)

    def close(self, clear: bool = False) -> None:
        """End the bar: kept as a finished line, or (``clear``, on failure) erased without a newline."""
        self.bar.close(clear)
