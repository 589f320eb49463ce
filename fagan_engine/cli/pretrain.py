"""``python -m fagan_engine pretrain-through-plane RECIPE.yaml``: pretrain the bundled through-plane weights
(``through_plane.fit.pretrain``; recipes in ``configs/through_plane_pretrain*.yaml``)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

from fagan_engine.cli import OneLineParser, entry_point

REPORT_EVERY = 50


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="python -m fagan_engine pretrain-through-plane",
        description="Pretrain the through-plane generator on synthetic slices; writes the recipe's output (.safetensors + .json).",
    )
    parser.add_argument("config", type=Path, help="pretraining recipe (YAML), e.g. configs/through_plane_pretrain_realistic.yaml")
    parser.add_argument("--force", action="store_true", help="replace the recipe's output (.safetensors and .json) if it exists")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    return entry_point(_main, argv)


def _main(argv: List[str]) -> int:
    from fagan_engine.through_plane.fit import pretrain  # lazy: keeps torch out of this module's import

    args = build_parser().parse_args(argv)

    def report(done: int, total: int, phase: str = "fit", loss: Optional[float] = None) -> None:
        if done % REPORT_EVERY == 0 or done == total:
            print(f"{phase} {done}/{total} loss {loss:.5f}", file=sys.stderr, flush=True)

    print(pretrain(args.config, report, force=args.force))
    return 0
