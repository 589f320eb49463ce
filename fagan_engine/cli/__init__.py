"""Command-line entry points. ``run_cli`` gives every command the same error contract."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, List, Optional

from ..errors import FAGANError, InputError
from ..protocol import emit


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports usage mistakes as one ``error: ...`` line (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(message)


def entry_point(body: Callable[[List[str]], int], argv: Optional[List[str]]) -> int:
    """Run a command's ``body(args)`` under ``run_cli`` (``argv`` defaults to sys.argv)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return run_cli(lambda: body(args), wants_json(args))


def run_cli(body: Callable[[], int], json_progress: bool) -> int:
    """Run ``body``; turn user errors into one ``error: ...`` line (and an ``error`` event) + exit 2.

    Unexpected exceptions keep their traceback (a bug to report) and exit 1; KeyboardInterrupt
    exits 130. No command leaves partial output behind: writers are atomic.
    """
    try:
        return body()
    except FAGANError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if json_progress:
            emit("error", message=message, kind=type(exc).__name__)
        sys.stderr.write(f"error: {message}\n")
        return exc.exit_code
    except Exception as exc:
        if not _is_out_of_memory(exc):
            raise
        message = "out of memory: use a smaller batch (fagan-sr --batch-size or --tile-size; training train.batch_size or data.patch_size)"
        if json_progress:
            emit("error", message=message, kind="OutOfMemoryError")
        sys.stderr.write(f"error: {message}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130


def _is_out_of_memory(exc: BaseException) -> bool:
    """CPU MemoryError or torch.cuda.OutOfMemoryError (matched by name: torch may be absent)."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


def wants_json(argv: Optional[list]) -> bool:
    """True when ``--progress json`` is among ``argv`` (known before argparse runs)."""
    args = list(argv or [])
    return any(a == "--progress=json" or (a == "--progress" and args[i + 1 : i + 2] == ["json"]) for i, a in enumerate(args))
