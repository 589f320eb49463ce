"""FA-GAN super-resolution engine for MRI volumes.

Importing this package does not import torch: the Slicer modules read configs, checkpoint
metadata and the progress protocol in a Python that may lack it.
"""
from __future__ import annotations

from typing import Any

from ._version import __version__

__all__ = ["__version__", "super_resolve", "super_resolve_through_plane", "super_resolve_report", "SRResult"]


def super_resolve(image: Any, scale: int, checkpoint: Any = None, **kwargs: Any) -> Any:
    """Super-resolve a 3D SimpleITK image slice by slice; see ``fagan_engine.inference.super_resolve``."""
    from .inference import super_resolve as _super_resolve

    return _super_resolve(image, scale, checkpoint=checkpoint, **kwargs)


def super_resolve_through_plane(image: Any, **kwargs: Any) -> Any:
    """Thick slices to isotropic voxels; see ``fagan_engine.through_plane.super_resolve_through_plane``."""
    from .through_plane import super_resolve_through_plane as _through_plane

    return _through_plane(image, **kwargs)


def __getattr__(name: str) -> Any:
    """``SRResult`` and ``super_resolve_report`` (``fagan_engine.sr_result``), imported on first use."""
    if name in ("SRResult", "super_resolve_report"):
        from . import sr_result

        return getattr(sr_result, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
