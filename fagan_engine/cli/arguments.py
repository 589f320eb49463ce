"""``fagan-sr``'s arguments: the parser, and ``RunOptions`` from parsed arguments.

Every flag of a ``RunOptions`` field (``util.options.CLI_FLAGS``) is added with ``dest`` set to the
field's name and the dataclass default, so ``run_options`` is a plain copy of those attributes and
the flag table cannot drift from the dataclass (``Testing/engine/test_run_options_cli.py``).
"""
from __future__ import annotations

import argparse
from typing import Any, Dict

from fagan_engine.cli import OneLineParser
from fagan_engine.cli.stacks import add_arguments as add_stacks_arguments
from fagan_engine.pipeline.batch import OUTPUT_FORMATS
from fagan_engine.util.config import ACQUISITIONS, PLANES, SCALES
from fagan_engine.util.errors import InputError
from fagan_engine.util.options import (
    ADAPT_DEFAULT_STEPS,
    BACKENDS,
    CLI_FLAGS,
    DEFAULT_ENSEMBLE_FROM_SCALE,
    DEFAULT_THROUGH_PLANE_ENSEMBLE,
    DEVICES,
    ENSEMBLE_SIZES,
    GAP_POLICIES,
    MAP_FLAGS,
    METHODS,
    NAN_POLICIES,
    OUTPUT_DTYPES,
    RunOptions,
)

DEFAULTS = RunOptions()


def _option(parser: Any, field: str, **kwargs: Any) -> None:
    """Add the flag of RunOptions ``field`` with ``dest=field`` and the dataclass default."""
    if kwargs.get("action") != "store_true":
        kwargs.setdefault("default", getattr(DEFAULTS, field))
    parser.add_argument(CLI_FLAGS[field], dest=field, **kwargs)


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
    _option(parser, "scale", type=int, choices=SCALES, default=None, help="in-plane upscaling factor (required in-plane)")
    _option(parser, "checkpoint", help="FA-GAN checkpoint (.safetensors); default: the bundled one for --scale")
    _option(parser, "plane", choices=PLANES, help="slice plane (auto: two finest-spaced axes)")
    _option(parser, "method", choices=METHODS, help="FA-GAN, or an interpolation baseline")
    _option(
        parser, "acquisition", choices=ACQUISITIONS,
        help="how the input lost its resolution (selects the matching bundled checkpoint and the data-consistency model): "
        "kspace = a smaller acquisition matrix (a real scan), bicubic = the paper's anti-aliased bicubic downsampling, "
        "gaussian = a Gaussian PSF",
    )
    _option(parser, "device", choices=DEVICES)
    _option(parser, "backend", choices=BACKENDS, help="auto: torch if installed, else ONNX Runtime")
    _option(parser, "batch_size", type=int, help="slices per batch")
    _option(parser, "tile_size", type=int, help="process slices in overlapping LR tiles of this size (bounds memory)")
    _option(parser, "output_dtype", choices=OUTPUT_DTYPES, help="output voxel type")
    _option(parser, "nan_policy", choices=NAN_POLICIES, help="non-finite input voxels: refuse, or treat as 0")
    _option(parser, "untrained", action="store_true",
            help="random weights instead of the bundled checkpoint, to test a pipeline (a warning says so on every result)")
    parser.add_argument("--series-id", help="DICOM folder with several series: the SeriesInstanceUID to read")
    parser.add_argument("--force", action="store_true", help="allow overwriting an existing output file (batch: redo finished cases)")
    parser.add_argument("--progress", default="bar", choices=("bar", "json", "none"))
    parser.add_argument("--no-compression", action="store_true", help="write volumes without gzip (larger files that load faster); "
                        "a .nii.gz OUTPUT is refused, batch NIfTI outputs are .nii")
    batch = parser.add_argument_group("batch mode (docs/batch.md)")
    batch.add_argument("--output-dir", help="batch mode: write each input's output here, mirroring sub-folders (with "
                       "--manifest, whose rows name their outputs: only where the default report goes)")
    batch.add_argument("--manifest", help="batch mode: CSV with columns input,output[,series_id][,RunOptions fields]")
    batch.add_argument(
        "--output-format", choices=tuple(OUTPUT_FORMATS),
        help="format of every output (default: the input's; .nrrd for DICOM inputs); dicom writes a DICOM series folder",
    )
    batch.add_argument(
        "--report", metavar="PATH",
        help="batch: the batch report (.csv or .json; default <output-dir>/batch-report.csv); one volume: the JSON trust report",
    )
    batch.add_argument("--shard", metavar="K/N",
                       help="process only shard K of N (0 <= K < N); default from RANK/WORLD_SIZE or SLURM_ARRAY_TASK_ID/COUNT")
    batch.add_argument("--prefetch", action="store_true", help="read the next input while the current one runs (docs/performance.md)")
    _feature_flags(parser)
    return parser


def _feature_flags(parser: argparse.ArgumentParser) -> None:
    """Through-plane, per-scan adaptation, data-consistency, DICOM gap and trust-map flags."""
    group = parser.add_argument_group("through-plane super-resolution")
    group.add_argument("--through-plane", action="store_true", help="super-resolve across slices to isotropic voxels (--scale not needed)")
    group.add_argument("--stacks", action="store_true",
                       help="PATH... = A B [C] OUTPUT: combine thick-slice stacks of one subject into one isotropic volume (docs/thick-slices.md)")
    add_stacks_arguments(group)
    _option(group, "target_spacing", type=float, metavar="MM", help="through-plane: output spacing (default: the in-plane spacing)")
    _option(group, "slice_thickness", type=float, metavar="MM",
            help="through-plane: acquired slice thickness (default: the DICOM Slice Thickness, else the scan's own estimate "
            "when clear, else the slice spacing)")
    _option(group, "fit_iterations", type=int, metavar="N", help="through-plane: fitting iterations")
    _option(
        parser, "adapt_iterations", type=int, metavar="N",
        help="per-scan adaptation of the FA-GAN model on the input itself, stopped early on held-out pairs: at most N steps "
        f"(default {ADAPT_DEFAULT_STEPS} in-plane; 0 turns it off)",
    )
    _option(
        parser, "enforce_consistency", action=argparse.BooleanOptionalAction,
        help="project the result onto the input under --acquisition, so that it reproduces the measured data "
        "(default: on for FA-GAN, off for the interpolation baselines)",
    )
    _option(
        parser, "ensemble", type=int, choices=ENSEMBLE_SIZES, metavar="N",
        help="self-ensemble: run the FA-GAN network on N flipped/rotated copies of each slice (1, 2, 4, 8; through-plane "
        f"1, 2, 4 flipped copies) and average; N times the network's time (default {ENSEMBLE_SIZES[-1]} in-plane from "
        f"x{DEFAULT_ENSEMBLE_FROM_SCALE}, {DEFAULT_THROUGH_PLANE_ENSEMBLE} through-plane, else 1)",
    )
    _option(
        parser, "dicom_gaps", choices=GAP_POLICIES,
        help="DICOM series with missing or duplicated slices: refuse (default), or resample onto a uniform grid at the true positions",
    )
    group = parser.add_argument_group("trust maps (written with the output, atomically)")
    caveats = {"uncertainty": "; research output: on real scans it follows the error no better than the image gradient "
                              "(docs/model-card.md)"}
    for kind, flag in MAP_FLAGS.items():
        group.add_argument(flag, dest=f"{kind}_map", nargs="?", const=True, metavar="PATH",
                           help=f"write the {kind.replace('_', ' ')} map (batch, or no PATH: <output stem>_{kind}<ext>)"
                           f"{caveats.get(kind, '')}")


def run_options(args: argparse.Namespace) -> RunOptions:
    """The shared RunOptions from parsed ``fagan-sr`` arguments (batch: the defaults of every case); validated once here."""
    through_plane = args.through_plane
    if args.scale is None and not through_plane and args.manifest is None:
        raise InputError("the following arguments are required: --scale")
    if args.scale is not None and through_plane:
        raise InputError("--through-plane takes its ratio from the slice spacing: give --target-spacing MM, not --scale")
    fields: Dict[str, Any] = {name: getattr(args, name) for name in CLI_FLAGS}
    fields["scale"] = args.scale if args.scale is not None else DEFAULTS.scale
    fields["mode"] = "through-plane" if through_plane else "in-plane"
    fields["uncertainty"] = args.uncertainty_map is not None
    return RunOptions(**fields).validate()

