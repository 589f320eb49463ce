"""``fagan-sr``: super-resolve one volume file."""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

from ..config import PLANES, SCALES
from ..protocol import emit
from ..volume_io import NAN_POLICIES
from . import OneLineParser, entry_point


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="fagan-sr", description="Super-resolve an MRI volume in-plane with FA-GAN.")
    parser.add_argument("input", help="input volume (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd or a DICOM folder)")
    parser.add_argument("output", help="output volume file")
    parser.add_argument("--scale", type=int, required=True, choices=SCALES, help="in-plane upscaling factor")
    parser.add_argument("--checkpoint", help="FA-GAN checkpoint (.safetensors); default: the bundled one for --scale")
    parser.add_argument("--plane", default="auto", choices=PLANES, help="slice plane (auto: two finest-spaced axes)")
    parser.add_argument("--method", default="fagan", choices=("fagan", "bicubic"))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "onnx"), help="auto: torch if installed, else ONNX Runtime")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per batch")
    parser.add_argument("--tile-size", type=int, help="process slices in overlapping LR tiles of this size (bounds memory)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "int16", "uint16"), help="output voxel type")
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
    from ..inference import super_resolve

    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    volume_io.check_output_path(args.input, args.output, args.force)
    image = volume_io.read_volume(args.input, nan_policy=args.nan_policy, series_id=args.series_id)
    report = ProgressReporter(args)
    if args.progress == "json":
        emit("start", input=args.input, output=args.output, scale=args.scale, method=args.method, device=args.device)
    try:
        result = super_resolve(
            image,
            args.scale,
            checkpoint=args.checkpoint,
            plane=args.plane,
            method=args.method,
            device=args.device,
            batch_size=args.batch_size,
            tile_size=args.tile_size,
            progress=report,
            backend=args.backend,
            untrained=args.untrained,
            output_dtype=args.dtype,
        )
    finally:
        report.close()
    volume_io.write_volume(result, args.output, force=args.force, input_path=args.input)
    seconds = time.perf_counter() - started
    if args.progress == "json":
        emit("finished", output=args.output, seconds=round(seconds, 3))
    elif args.progress == "bar":
        sys.stderr.write(f"wrote {args.output} ({seconds:.1f} s)\n")
    return 0


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
