"""``fagan-sr``: super-resolve one volume file."""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

from ..config import ACQUISITIONS, PLANES, SCALES
from ..options import BACKENDS, DEVICES, METHODS, NAN_POLICIES, OUTPUT_DTYPES, RunOptions
from ..protocol import emit
from . import OneLineParser, entry_point


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="fagan-sr", description="Super-resolve an MRI volume in-plane with FA-GAN.")
    parser.add_argument("input", help="input volume (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd or a DICOM folder)")
    parser.add_argument("output", help="output volume file")
    parser.add_argument("--scale", type=int, required=True, choices=SCALES, help="in-plane upscaling factor")
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
    parser.add_argument("--force", action="store_true", help="allow overwriting an existing output file")
    parser.add_argument("--untrained", action="store_true", help="use random weights when no checkpoint exists (testing only)")
    parser.add_argument("--progress", default="bar", choices=("bar", "json", "none"))
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    return entry_point(_main, argv)


def _main(argv: List[str]) -> int:
    from .. import volume_io
    from ..inference import SuperResolver

    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    options = run_options(args)
    volume_io.check_output_path(args.input, args.output, args.force)
    image = volume_io.read_volume(args.input, nan_policy=args.nan_policy, series_id=args.series_id)
    resolver = SuperResolver(options)
    report = ProgressReporter(args)
    if args.progress == "json":
        emit("start", input=args.input, output=args.output, options=options.to_dict())
    for line in resolver.warnings:
        warn(args, line)
    try:
        result = resolver(image, report)
    finally:
        report.close()
    volume_io.write_volume(result, args.output, force=args.force, input_path=args.input)
    seconds = time.perf_counter() - started
    if args.progress == "json":
        emit("finished", output=args.output, seconds=round(seconds, 3))
    elif args.progress == "bar":
        sys.stderr.write(f"wrote {args.output} ({seconds:.1f} s)\n")
    return 0


def run_options(args: argparse.Namespace) -> RunOptions:
    """The shared RunOptions from parsed ``fagan-sr`` arguments."""
    return RunOptions(
        scale=args.scale,
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
    ).validate()


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

    def __call__(self, done: int, total: int) -> None:
        if self.mode == "json":
            emit("progress", done=done, total=total, fraction=round(done / total, 4))
        elif self.mode == "bar":
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="slice", file=sys.stderr, desc="super-resolving")
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
