"""``fagan-export``: export a checkpoint's generator to ONNX for the torch-free ONNX Runtime path."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from fagan_engine.cli import OneLineParser, entry_point
from fagan_engine.util.errors import OutputError


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="fagan-export",
        description="Export an FA-GAN checkpoint to ONNX (dynamic batch and slice size); "
        "its metadata is stored inside and beside it as OUTPUT.onnx.json.",
    )
    parser.add_argument("checkpoint", help="FA-GAN checkpoint (.safetensors)")
    parser.add_argument("output", help="output model (.onnx); use NAME.onnx beside NAME.safetensors to let fagan-sr find it")
    parser.add_argument("--force", action="store_true", help="allow overwriting an existing output file")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    return entry_point(_main, argv)


def _main(argv: List[str]) -> int:
    from fagan_engine.inference.onnx_backend import export_onnx  # lazy: keeps SimpleITK/scipy out of this module's import

    args = build_parser().parse_args(argv)
    if Path(args.output).exists() and not args.force:
        raise OutputError(f"output {args.output} exists; pass --force to overwrite it")
    target = export_onnx(args.checkpoint, args.output)
    sys.stderr.write(f"wrote {target} and {target.name}.json\n")
    return 0
