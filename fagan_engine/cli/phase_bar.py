"""The terminal progress bar of ``fagan-sr`` and its batch mode: one tqdm bar that each phase restarts.

A run has phases (``adapt``, then the slices; ``fit``, then ``inference``; ``register``, then ``reconstruct``).
Each new phase restarts the bar's count, timer and rate under its own name and unit, so the per-scan
adaptation's steps are not shown as slices and the slices' rate does not include the adaptation's time.
"""
from __future__ import annotations

import sys
from typing import Any, Optional

DEFAULT_PHASE = "super-resolving"
PHASE_UNITS = {"adapt": "step", "fit": "step", "register": "round", "reconstruct": "iteration"}
"""What a phase counts; any other phase (and none) counts slices."""


class PhaseBar:
    """``update(done, total, phase)`` draws the bar on stderr; ``close(clear)`` ends it."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        """Extra tqdm arguments (``position``, ``leave``)."""
        self.bar: Any = None
        self.phase: Optional[str] = None

    def update(self, done: int, total: int, phase: Optional[str] = None) -> None:
        name = phase or DEFAULT_PHASE
        unit = PHASE_UNITS.get(name, "slice")
        if self.bar is None:
            from tqdm import tqdm  # lazy: tqdm only for a terminal progress bar

            self.bar = tqdm(total=total, unit=unit, file=sys.stderr, desc=name, **self.options)
        elif name != self.phase:
            self.bar.set_description(name, refresh=False)
            self.bar.unit = unit
            self.bar.reset(total=total)
        self.phase = name
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self, clear: bool = False) -> None:
        """End the bar: kept as a finished line, or (``clear``, on failure) erased without a newline."""
        if self.bar is not None:
            if clear:
                self.bar.leave = False
            self.bar.close()
            self.bar = None
