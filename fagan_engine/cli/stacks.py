"""``fagan-sr --stacks A B [C] OUTPUT``: thick-slice stacks of one subject to one isotropic volume (docs/thick-slices.md).

``--reference N`` picks the stack (1 = the first given) whose orientation the output takes (default 1).
``--target-spacing`` and ``--slice-thickness`` apply to every stack; ``--iterations N`` adds the FA-GAN
prior (each stack's through-plane network fitted for N steps; 0: the pretrained one; ``--ensemble 1|2|4`` its
self-ensemble); ``--device``, ``--nan-policy`` and ``--dicom-gaps`` apply as for one volume; any other option of
one volume is refused in one line (``STACKS_FIELDS``); ``--report R.json``
writes the registration and reconstruction report; ``--consistency-map`` (no PATH) writes each stack's
consistency map beside OUTPUT (``<stem>_consistency_stack<k><ext>``, on that stack's grid). Every check
(inputs, outputs, overlap, registration) runs before anything is written; writes are atomic.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict

from fagan_engine._version import __version__
from fagan_engine.util.errors import FAGANError, InputError
from fagan_engine.util.options import CLI_FLAGS, MAP_FLAGS, RunOptions, check_through_plane_ensemble
from fagan_engine.util.protocol import emit

USAGE = "fagan-sr --stacks A B [C] OUTPUT"
MAP_KIND = "consistency_stack"
"""``--consistency-map``'s kind per stack: ``consistency_stack<k>``, k = 1 for the first stack given."""
STACKS_FIELDS = ("target_spacing", "slice_thickness", "fit_iterations", "device", "nan_policy", "dicom_gaps", "ensemble")
"""The ``RunOptions`` fields ``--stacks`` uses; a flag of any other that is given a value other than its default is refused."""


def add_arguments(group: Any) -> None:
    """``--stacks``'s own flags, for ``fagan-sr``'s parser."""
    group.add_argument(
        "--reference", type=int, metavar="N",
        help="--stacks: the stack (1 = the first given) whose orientation the output takes (default 1)",
    )


def _read_stack(index: int, path: str, args: argparse.Namespace) -> Any:
    """Stack ``index`` read as one volume is; its error line says which stack it is."""
    from fagan_engine.io import volume_io  # lazy: keeps SimpleITK out of this module's import

    try:
        return volume_io.read_volume(path, args.nan_policy, dicom_gaps=args.dicom_gaps)
    except FAGANError as exc:
        raise type(exc)(f"stack {index + 1}: {exc}") from None


def run_stacks(args: argparse.Namespace, progress: Any) -> int:
    """Reconstruct, write OUTPUT (the consistency maps, the JSON report); ``progress`` is the CLI's reporter (closed here)."""
    from fagan_engine.io import volume_io  # lazy: keeps SimpleITK out of this module's import
    from fagan_engine.io.geometry import direction_matrix  # lazy: as above (cli.arguments imports it)
    from fagan_engine.pipeline.case import CaseOutputs, StagedOutputs  # lazy: keeps SimpleITK out of this module's import
    from fagan_engine.pipeline.report import NOTICE  # lazy: keeps SimpleITK/scipy out of this module's import
    from fagan_engine.pipeline.validation import check_run_paths  # lazy: keeps SimpleITK/scipy out of this module's import
    from fagan_engine.through_plane.stacks import reconstruct_stacks  # lazy: keeps SimpleITK/scipy out of this module's import

    started = time.perf_counter()
    _check_arguments(args)
    if importlib.util.find_spec("torch") is None:  # the least squares run on torch: say so before the registration's minutes
        raise InputError("combining stacks needs PyTorch, which is not installed: pip install torch (in Slicer, the PyTorch "
                         "extension provides it)")
    *inputs, output = args.paths
    reference = (args.reference or 1) - 1
    maps = consistency_map_paths(output, len(inputs)) if args.consistency_map else {}
    check_run_paths(inputs, output, maps, args.report, args.force, not args.no_compression)  # nothing reaches any input; the report is writable
    if args.dicom_gaps != "error" and all(Path(path).is_file() for path in inputs):
        raise InputError("--dicom-gaps applies to DICOM series folders, and every stack is a file")
    images = [_read_stack(k, path, args) for k, path in enumerate(inputs)]
    for path, grid in [*zip(maps.values(), images), (output, images[reference])]:  # each map lies on its stack's grid,
        volume_io.check_nifti_direction(Path(path), direction_matrix(grid))  # the output in the reference's orientation:
    # every file is known to take its volume before the reconstruction, so none is written unless all can be
    if args.progress == "json":
        options = {
            "mode": "stacks", "reference": reference + 1, "target_spacing": args.target_spacing,
            "slice_thickness": args.slice_thickness, "fit_iterations": args.fit_iterations, "ensemble": args.ensemble,
        }
        from fagan_engine.inference.runners import compute_description  # lazy: keeps torch out of this module's import

        prior = RunOptions(device=args.device) if args.fit_iterations is not None else RunOptions(method="bicubic")  # CPU alone
        emit("start", input=inputs[reference], inputs=inputs, output=output, options=options,  # sr's start event, plus every input
             **compute_description(prior))
    try:
        image, report = reconstruct_stacks(
            images, args.target_spacing, reference, args.slice_thickness, network_iterations=args.fit_iterations,
            device=args.device, progress=progress, **({} if args.ensemble is None else {"network_ensemble": args.ensemble}),
        )
    except BaseException:
        progress.close(clear=True)  # the error line stands alone, without a half-drawn bar above it
        raise
    progress.close()
    # one set, as every run publishes its outputs (pipeline.case): maps, report, output last; all of them or none
    with StagedOutputs(CaseOutputs(output, force=args.force, compress=not args.no_compression)) as staged:
        for path, consistency in zip(maps.values(), report.consistency_maps):
            staged.add_volume(consistency, path)
        if args.report is not None:  # who made it, as every other report says (pipeline.report.identity)
            document = {"notice": NOTICE, "engine_version": __version__, "inputs": inputs, "output": output, **report.to_dict()}
            staged.add_bytes((json.dumps(document, indent=2) + "\n").encode(), args.report)
        staged.add_volume(image, output)
        staged.publish()
    seconds = time.perf_counter() - started
    if args.progress == "json":
        emit("finished", output=output, seconds=round(seconds, 3), summary=report.to_dict(), maps=list(maps.values()))
    elif args.progress == "bar":
        sys.stderr.write("".join(line + "\n" for line in report.describe()) + f"wrote {output} ({seconds:.1f} s)\n")
    return 0



def consistency_map_paths(output: str, stacks: int) -> Dict[str, str]:
    """``consistency_stack<k>`` -> ``<output stem>_consistency_stack<k><ext>``, k = 1..stacks."""
    from fagan_engine.pipeline.batch import map_paths  # lazy: keeps SimpleITK/scipy out of this module's import

    return map_paths(output, [f"{MAP_KIND}{k}" for k in range(1, stacks + 1)])


def _check_arguments(args: argparse.Namespace) -> None:
    """One-line refusals of what ``--stacks`` cannot combine with or lacks."""
    others = [
        ("--through-plane", args.through_plane or None),
        ("--scale", args.scale),
        ("--output-dir", args.output_dir),
        ("--manifest", args.manifest),
        ("--series-id", args.series_id),
        ("--output-format", args.output_format),
        ("--shard", args.shard),
        ("--prefetch", args.prefetch or None),
    ]
    others += [(flag, getattr(args, f"{kind}_map", None)) for kind, flag in MAP_FLAGS.items() if kind != "consistency"]
    defaults = RunOptions()
    others += [(flag, getattr(args, name)) for name, flag in CLI_FLAGS.items() if name not in STACKS_FIELDS + ("scale",)
               and getattr(args, name) != getattr(defaults, name)]
    for flag, value in others:
        if value is not None:
            raise InputError(f"--stacks cannot be combined with {flag}")
    prior_only = [flag for flag, given in (("--ensemble", args.ensemble is not None), ("--device cuda", args.device == "cuda")) if given]
    if prior_only and args.fit_iterations is None:
        raise InputError(f"with --stacks, {' and '.join(prior_only)} concern the FA-GAN prior's networks: add --iterations N to use "
                         "the prior (the least squares run on the CPU)")
    if args.ensemble is not None:
        check_through_plane_ensemble(args.ensemble)
    if args.consistency_map not in (None, True):
        raise InputError(
            f"--consistency-map with --stacks writes one map per stack beside OUTPUT (<stem>_{MAP_KIND}<k><ext>): give it no PATH"
        )
    if len(args.paths) < 3:
        stacks = max(len(args.paths) - 1, 0)
        raise InputError(f"--stacks needs at least 2 stacks and an OUTPUT ({USAGE}); got {stacks} stack{'s' * (stacks != 1)}")
    stacks = len(args.paths) - 1
    if args.reference is not None and not 1 <= args.reference <= stacks:
        raise InputError(f"--reference must be a stack number from 1 to {stacks} (in the order given), got {args.reference}")
    from fagan_engine.io.volume_io import SUPPORTED_EXTENSIONS  # lazy: keeps SimpleITK out of this module's import
    from fagan_engine.pipeline.batch import check_output_name, output_format_of  # lazy: as above

    output = args.paths[-1]
    check_output_name(output)
    if output_format_of(output) == "dicom":
        raise InputError(f"--stacks writes one volume file ({', '.join(SUPPORTED_EXTENSIONS)}); OUTPUT {output} has no volume extension")
    if args.report is not None and not args.report.lower().endswith(".json"):
        raise InputError(f"--report with --stacks writes the JSON report; {args.report} does not end in .json")

