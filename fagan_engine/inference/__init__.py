"""In-plane inference: runners (torch, ONNX Runtime, interpolation), slice-wise volume SR, per-scan adaptation,
the memory check and ``SuperResolver``.
"""
from __future__ import annotations

from fagan_engine.inference.resolver import SuperResolver
from fagan_engine.inference.runners import load_runner, resolve_device
from fagan_engine.inference.slices import run_slices

__all__ = [
    "SuperResolver",
    "load_runner",
    "resolve_device",
    "run_slices",
]
