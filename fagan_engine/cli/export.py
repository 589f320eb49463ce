"""``fagan-export``: export a checkpoint's generator to ONNX for the torch-free ONNX Runtime path, or (an output ending in
``.safetensors``) store it again with float16 weights, as the bundled in-plane checkpoints ship
(``models.checkpoint.store_half``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from fagan_engine.cli import OneLineParser, entry_point
from fagan_engine.util.errors import InputError, OutputError

EXPORT_SUFFIXES = (".onnx", ".safetensors")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="fagan-export",
        description="Export an FA-GAN checkpoint to ONNX (dynamic batch and slice size; its metadata is stored inside and "
        "beside it as OUTPUT.onnx.json), or to a .safetensors checkpoint with float16 weights (half the file; it loads "
        "into the same float32 model; metadata kept, checksums renewed, the .json sidecar beside it).",
    )
    parser.add_argument("checkpoint", help="FA-GAN checkpoint (.safetensors)")
    parser.add_argument(
        "output",
        help="output model: .onnx (use NAME.onnx beside NAME.safetensors to let fagan-sr find it) or .safetensors (float16)",
    )
    parser.add_argument("--force", action="store_true", help="allow overwriting an existing output file")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    return entry_point(_main, argv)


def _main(argv: List[str]) -> int:
    args = build_parser().parse_args(argv)
    output = Path(args.output)
    suffix = output.suffix
    if suffix not in EXPORT_SUFFIXES or output.name == suffix:
        raise InputError(f"output {args.output} must name a file ending in .onnx or .safetensors (NAME.onnx, NAME.safetensors)")
    if suffix == ".safetensors":
        return _store_half(args.checkpoint, output, args.force)
    sidecar = output.with_name(output.name + ".json")
    if (output.exists() or sidecar.exists()) and not args.force:
        raise OutputError(f"output {args.output} (or its {sidecar.name}) exists; pass --force to overwrite it")
    from fagan_engine.inference.onnx_backend import export_onnx  # lazy: keeps SimpleITK/scipy out of this module's import

    target = export_onnx(args.checkpoint, args.output)
    sys.stderr.write(f"wrote {target} and {target.name}.json\n")
    return 0


def _store_half(checkpoint: str, output: Path, force: bool) -> int:
    from fagan_engine.models.checkpoint import store_half  # lazy: loading weights imports torch

    given = Path(checkpoint)
    weights = given.with_suffix(".safetensors") if given.suffix == ".json" else given  # a checkpoint may be named by its sidecar
    if output.resolve() == weights.resolve():
        raise OutputError("output must differ from the checkpoint")
    if (output.exists() or output.with_suffix(".json").exists()) and not force:
        raise OutputError(f"output {output} (or its .json) exists; pass --force to overwrite it")
    target = store_half(checkpoint, str(output))
    sys.stderr.write(f"wrote {target} (float16 weights) and {target.with_suffix('.json').name}\n")
    return 0

