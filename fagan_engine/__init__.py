"""FA-GAN super-resolution engine for MRI volumes.

Layers, bottom to top (each imports only from its own layer or below; docs/architecture.md):
``util`` → ``io`` → ``mri`` → ``models`` → ``inference`` → ``through_plane`` → ``trust`` → ``pipeline`` →
``training`` / ``cli``.

Importing this package does not import torch: the Slicer modules read configs, checkpoint
metadata and the progress protocol in a Python that may lack it. The API below is imported on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from fagan_engine._version import __version__

__all__ = ["__version__", "super_resolve", "super_resolve_through_plane", "reconstruct_stacks", "super_resolve_report", "SRResult", "RunOptions",
           "read_volume", "write_volume"]
_LAZY = {
    "read_volume": "fagan_engine.io.volume_io",
    "write_volume": "fagan_engine.io.volume_io",
    "super_resolve": "fagan_engine.pipeline.report",
    "super_resolve_report": "fagan_engine.pipeline.report",
    "SRResult": "fagan_engine.pipeline.report",
    "super_resolve_through_plane": "fagan_engine.through_plane.run",
    "reconstruct_stacks": "fagan_engine.through_plane.stacks",
    "RunOptions": "fagan_engine.util.options",
}


def __getattr__(name: str) -> Any:
    """The public API, imported on first use (keeps ``import fagan_engine`` light)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> "list[str]":
    """The lazy API too, so that tab completion (Slicer's Python console) offers it."""
    return sorted(set(globals()) | set(__all__))
