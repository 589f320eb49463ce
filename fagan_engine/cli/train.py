"""``fagan-train``: train an FA-GAN generator from a JSON/YAML config (see docs/training.md)."""
from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import List, Optional

from fagan_engine.cli import OneLineParser, entry_point, raise_terminated
from fagan_engine.training.stop import StopRequest
from fagan_engine.util.atomic import remove_stale_temp_files
from fagan_engine.util.config import load_config
from fagan_engine.util.locking import RunFolderLock


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="fagan-train", description="Train FA-GAN (pixel-loss pre-training, then GAN).")
    parser.add_argument("--config", required=True, help="config file (.json, .yaml or .yml)")
    parser.add_argument(
        "--set", dest="overrides", nargs="+", action="extend", default=[], metavar="SECTION.KEY=VALUE",
        help="override config values (VALUE parsed as JSON, else as a string), e.g. train.iterations=5000",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's training state")
    parser.add_argument("--progress", default="bar", choices=("bar", "json", "none"))
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """A first SIGTERM/SIGINT stops gracefully (even during start-up: a ``stopped`` event follows),
    a second one unwinds at once (exit 143 / 130)."""
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    stop = StopRequest().install()
    try:
        return entry_point(lambda args: _main(args, stop), argv)
    finally:
        stop.restore()
        signal.signal(signal.SIGTERM, previous)


def _main(argv: List[str], stop: StopRequest) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config).with_overrides(args.overrides)
    from fagan_engine.training.ddp import launch_environment  # lazy: keeps torch out of this module's import

    run_dir = Path(cfg.train.output_dir)
    lock = RunFolderLock(run_dir, "train.output_dir") if launch_environment().is_main else None
    if lock is not None:  # DDP: rank 0 owns the folder
        lock.acquire()
        stop.watch(run_dir)  # a STOP left by an earlier run is removed now; one written from here on stops this run
        remove_stale_temp_files(run_dir, lock.acquired_at)
        remove_stale_temp_files(run_dir / "checkpoints", lock.acquired_at)
    trainer = None
    try:
        from fagan_engine.training.data import prepare_data  # lazy: keeps torch out of this module's import
        from fagan_engine.training.trainer import Trainer, preflight  # lazy: keeps torch out of this module's import

        preflight(cfg, args.resume)
        data = prepare_data(cfg)
        trainer = Trainer(cfg, data, progress=args.progress, resume=args.resume, stop=stop)
        return trainer.run()
    finally:
        if lock is not None:
            lock.remove = lock.remove or trainer is None  # refused before the run: no lock file left in the user's folder
            lock.release()


if __name__ == "__main__":
    sys.exit(main())
