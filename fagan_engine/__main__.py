"""``python -m fagan_engine {sr,train,eval,export,demo,pretrain-through-plane} ...``: the engine's subcommands."""
from __future__ import annotations

import importlib
import sys
from typing import List, Optional

COMMANDS = {
    "sr": "fagan_engine.cli.sr",
    "train": "fagan_engine.cli.train",
    "eval": "fagan_engine.cli.evaluate",
    "export": "fagan_engine.cli.export",
    "demo": "fagan_engine.cli.demo",
    "pretrain-through-plane": "fagan_engine.cli.pretrain",
}


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = f"usage: python -m fagan_engine {{{','.join(COMMANDS)}}} [options]   (COMMAND --help for its options)"
    if args[:1] in (["-h"], ["--help"]):
        sys.stdout.write(usage + "\n")
        return 0
    if not args or args[0] not in COMMANDS:
        given = f"unknown command {args[0]!r}" if args else "no command given"
        sys.stderr.write(f"error: {given}; {usage}\n")
        return 2
    module = importlib.import_module(COMMANDS[args[0]])
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
