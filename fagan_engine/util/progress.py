"""Progress callbacks with an optional phase and loss, and the cancellation exception of long fits."""
from __future__ import annotations

import inspect
from typing import Callable, Optional


class FitCancelled(KeyboardInterrupt):
    """The fit was asked to stop (Cancel, SIGTERM); nothing was written."""


def accepts_phase(progress: Optional[Callable[..., None]]) -> bool:
    """True when ``progress`` takes ``phase=``/``loss=`` keywords (else it gets ``(done, total)`` only)."""
    if progress is None:
        return False
    try:
        parameters = inspect.signature(progress).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD or p.name == "phase" for p in parameters)


def call_progress(progress: Optional[Callable[..., None]], done: int, total: int, phase: str, loss: Optional[float] = None) -> None:
    """Report ``(done, total)`` with ``phase=``/``loss=`` keywords when ``progress`` accepts them."""
    if progress is None:
        return
    if accepts_phase(progress):
        progress(done, total, phase=phase, loss=loss)
    else:
        progress(done, total)
