"""``fagan-train``: train an FA-GAN generator from a JSON/YAML config (see docs/training.md)."""
from __future__ import annotations

import sys
from typing import List, Optional

from ..config import load_config
from . import OneLineParser, entry_point


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="fagan-train", description="Train FA-GAN (pixel-loss pre-training, then GAN).")
    parser.add_argument("--config", required=True, help="config file (.json, .yaml or .yml)")
    parser.add_argument(
        "--set", dest="overrides", nargs="+", action="extend", default=[], metavar="SECTION.KEY=VALUE",
        help="override config values (VALUE parsed as JSON, else as a string), e.g. train.iterations=100",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's training state")
    parser.add_argument("--progress", default="bar", choices=("bar", "json", "none"))
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    return entry_point(_main, argv)


def _main(argv: List[str]) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config).with_overrides(args.overrides)
    from ..training.data import prepare_data
    from ..training.trainer import Trainer, preflight

    preflight(cfg, args.resume)
    data = prepare_data(cfg)
    return Trainer(cfg, data, progress=args.progress, resume=args.resume).run()


if __name__ == "__main__":
    sys.exit(main())
