"""``fagan-sr --stacks A B [C] OUTPUT``: thick-slice stacks of one subject to one isotropic volume (docs/thick-slices.md).

The first stack is the reference (its orientation is the output's). ``--target-spacing`` and
``--slice-thickness`` apply to every stack; ``--iterations N`` adds the FA-GAN prior (each stack's
through-plane network fitted for N steps; 0: the pretrained one); ``--report R.json`` writes the
registration and reconstruction report. Every check (inputs, outputs, overlap, registration) runs before anything
is written; writes are atomic.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from fagan_engine.util.errors import InputError
from fagan_engine.util.options import MAP_FLAGS
from fagan_engine.util.protocol import emit

USAGE = "fagan-sr --stacks A B [C] OUTPUT"


def run_stacks(args: argparse.Namespace, progress: Any) -> int:
    """Reconstruct, write OUTPUT (and the JSON report); ``progress`` is the CLI's reporter (closed here)."""
    from fagan_engine.io import volume_io
    from fagan_engine.pipeline.validation import check_run_paths
    from fagan_engine.through_plane.stacks import reconstruct_stacks
    from fagan_engine.util.atomic import atomic_write_bytes

    started = time.perf_counter()
    _check_arguments(args)
    *inputs, output = args.paths
    check_run_paths(inputs, output, {}, args.report, args.force)  # no output reaches any input; the report is writable
    images = [volume_io.read_volume(path, args.nan_policy) for path in inputs]
    if args.progress == "json":
        options = {"mode": "stacks", "target_spacing": args.target_spacing, "slice_thickness": args.slice_thickness}
        emit("start", input=inputs[0], inputs=inputs, output=output, options=options)  # sr's start event, plus every input
    try:
        image, report = reconstruct_stacks(
            images, args.target_spacing, 0, args.slice_thickness, network_iterations=args.fit_iterations, device=args.device,
            progress=progress
        )
    finally:
        progress.close()
    volume_io.write_volume(image, output, force=args.force, input_path=inputs[0])
    if args.report is not None:
        atomic_write_bytes(args.report, (json.dumps(report.to_dict(), indent=2) + "\n").encode())
    seconds = time.perf_counter() - started
    if args.progress == "json":
        emit("finished", output=output, seconds=round(seconds, 3), summary=report.to_dict())
    elif args.progress == "bar":
        sys.stderr.write("".join(line + "\n" for line in report.describe()) + f"wrote {output} ({seconds:.1f} s)\n")
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    """One-line refusals of what ``--stacks`` cannot combine with or lacks."""
    others = [
        ("--through-plane", args.through_plane or None),
        ("--scale", args.scale),
        ("--output-dir", args.output_dir),
        ("--manifest", args.manifest),
        ("--series-id", args.series_id),
        ("--output-format", args.output_format),
    ]
    others += [(flag, getattr(args, f"{kind}_map", None)) for kind, flag in MAP_FLAGS.items()]
    for flag, value in others:
        if value is not None:
            raise InputError(f"--stacks cannot be combined with {flag}")
    if len(args.paths) < 3:
        stacks = max(len(args.paths) - 1, 0)
        raise InputError(f"--stacks needs at least 2 stacks and an OUTPUT ({USAGE}); got {stacks} stack{'s' * (stacks != 1)}")
    if args.report is not None and not args.report.lower().endswith(".json"):
        raise InputError(f"--report with --stacks writes the JSON report; {args.report} does not end in .json")

