"""FA-GAN super-resolution engine for MRI volumes.

Importing this package does not import torch: the Slicer modules read configs, checkpoint
metadata and the progress protocol in a Python that may lack it.
"""
from __future__ import annotations

from typing import Any

from ._version import __version__

__all__ = ["__version__", "super_resolve"]


def super_resolve(image: Any, scale: int, checkpoint: Any = None, **kwargs: Any) -> Any:
    """Super-resolve a 3D SimpleITK image slice by slice; see ``fagan_engine.inference.super_resolve``."""
    from .inference import super_resolve as _super_resolve

    return _super_resolve(image, scale, checkpoint=checkpoint, **kwargs)
