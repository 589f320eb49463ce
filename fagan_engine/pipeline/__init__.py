"""One case end to end (read, super-resolve with trust, publish every output together), the Python API and batch mode."""
from __future__ import annotations

from fagan_engine.pipeline.batch_runner import BatchRunner
from fagan_engine.pipeline.case import super_resolve_case
from fagan_engine.pipeline.report import SRResult, super_resolve, super_resolve_report

__all__ = [
    "BatchRunner",
    "SRResult",
    "super_resolve",
    "super_resolve_case",
    "super_resolve_report",
]
