"""Progress callbacks with an optional phase and loss, and the cancellation exception of long fits."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional


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


def event_fields(phase: Optional[str], loss: Optional[float]) -> Dict[str, Any]:
    """A ``progress`` event's ``phase`` (steps reported without one are the slices' ``inference``) and ``loss`` (when given)."""
    return {"phase": phase or "inference", **({} if loss is None else {"loss": loss})}


def call_progress(progress: Optional[Callable[..., None]], done: int, total: int, phase: str, loss: Optional[float] = None) -> None:
    """Report ``(done, total)`` with the ``phase=`` and ``loss=`` keywords that ``progress`` accepts (a callback written
    as ``(done, total, phase=None)`` gets no ``loss``)."""
    if progress is None:
        return
    if not accepts_phase(progress):
        progress(done, total)
    elif _takes_keyword(progress, "loss"):
        progress(done, total, phase=phase, loss=loss)
    else:
        progress(done, total, phase=phase)


def _takes_keyword(progress: Callable[..., None], name: str) -> bool:
    parameters = inspect.signature(progress).parameters.values()
    return any(p.kind is p.VAR_KEYWORD or (p.name == name and p.kind is not p.POSITIONAL_ONLY) for p in parameters)


FIRST_PHASE_SHARES = {"adapt": 0.3, "fit": 0.6}
"""The share of a run's progress that its first phase fills, when it has one: per-scan adaptation (about a third of the
×2 default run's time) or the through-plane fit (about 60 % of a thick-slice run's; docs/performance.md). The phase
after it (inference) fills the rest."""


class RunFraction:
    """One run's progress in [0, 1] from its per-phase ``(done, total, phase)`` reports (the protocol's ``run_fraction``):
    a first phase (``FIRST_PHASE_SHARES``) fills its share and the next phase the rest, so a bar fed with it never
    restarts at 0 when inference begins; it never goes backwards."""

    def __init__(self) -> None:
        self.rest_starts = 0.0
        self.value = 0.0

    def update(self, done: int, total: int, phase: Optional[str]) -> float:
        part = min(max(done / total, 0.0), 1.0) if total else 0.0
        if phase in FIRST_PHASE_SHARES:
            self.rest_starts = FIRST_PHASE_SHARES[phase]
            value = self.rest_starts * part
        else:
            value = self.rest_starts + (1.0 - self.rest_starts) * part
        self.value = max(self.value, value)
        return self.value
