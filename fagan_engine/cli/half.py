"""``python -m fagan_engine store-half CHECKPOINT OUTPUT``: a checkpoint's weights stored as float16, as the bundled
in-plane checkpoints ship (``models.checkpoint.store_half``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from fagan_engine.cli import OneLineParser, entry_point
from fagan_engine.util.errors import OutputError


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m fagan_engine store-half",
        description="Write an FA-GAN checkpoint again with float16 weights (half the file; it loads into a float32 "
        "model as before); metadata kept, checksums renewed, the .json sidecar beside it.",
    )
    parser.add_argument("checkpoint", help="FA-GAN checkpoint (.safetensors)")
    parser.add_argument("output", help="output checkpoint (.safetensors)")
    parser.add_argument("--force", action="store_true", help="allow overwriting an existing output file")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    return entry_point(_main, argv)


def _main(argv: List[str]) -> int:
    from fagan_engine.models.checkpoint import store_half  # lazy: loading weights imports torch

    args = build_parser().parse_args(argv)
    output = Path(args.output)
    if output.suffix != ".safetensors":
        raise OutputError(f"output {args.output} must end in .safetensors")
    if output.resolve() == Path(args.checkpoint).resolve():
        raise OutputError("output must differ from the checkpoint")
    if (output.exists() or output.with_suffix(".json").exists()) and not args.force:
        raise OutputError(f"output {args.output} (or its .json) exists; pass --force to overwrite it")
    target = store_half(args.checkpoint, str(output))
    sys.stderr.write(f"wrote {target} and {target.with_suffix('.json').name}\n")
    return 0
