"""Graceful stop of a training run: SIGTERM/SIGINT or a ``STOP`` file in the run folder (no torch).

``fagan-train`` installs the handlers before anything else, so a signal in its first second
is remembered and the run ends with a ``stopped`` event instead of dying silently.
"""
from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Any, Dict, Optional

STOP_FILE = "STOP"
"""Creating this file in the run folder stops the run like SIGTERM (portable, e.g. Windows)."""


class StopRequest:
    """SIGTERM/SIGINT, or a ``STOP`` file in the watched run folder, ask the loop to stop after the
    current step; a second signal acts as the previous handler does."""

    def __init__(self) -> None:
        self.signalled = False
        self.stop_file: Optional[Path] = None
        self.previous: Dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signalled or (self.stop_file is not None and self.stop_file.exists())

    def install(self) -> "StopRequest":
        """Catch SIGTERM and SIGINT (idempotent)."""
        if not self.previous:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def watch(self, run_dir: Path) -> None:
        """Also stop on ``run_dir/STOP``; a stale one from an earlier run is removed now."""
        self.stop_file = Path(run_dir) / STOP_FILE
        with contextlib.suppress(FileNotFoundError):
            self.stop_file.unlink()

    def _handle(self, signum: int, frame: Any) -> None:
        self.signalled = True
        signal.signal(signum, self.previous[signum])

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}
