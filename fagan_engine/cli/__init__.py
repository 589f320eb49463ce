"""Command-line entry points. ``run_cli`` gives every command the same error contract."""
from __future__ import annotations

import sys
from typing import Callable, Optional

from ..errors import FAGANError
from ..protocol import emit


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
    except MemoryError:
        message = "out of memory: lower --batch-size or set --tile-size"
        if json_progress:
            emit("error", message=message, kind="MemoryError")
        sys.stderr.write(f"error: {message}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130


def wants_json(argv: Optional[list]) -> bool:
    """True when ``--progress json`` is among ``argv`` (known before argparse runs)."""
    args = list(argv or [])
    return any(a == "--progress=json" or (a == "--progress" and args[i + 1 : i + 2] == ["json"]) for i, a in enumerate(args))
