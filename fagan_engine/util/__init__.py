"""Bottom layer: plain dataclasses, errors and small services every layer uses (no torch, no SimpleITK)."""
from __future__ import annotations

from fagan_engine.util.config import FAGANConfig, load_config
from fagan_engine.util.errors import CheckpointError, ConfigError, FAGANError, InputError, OutputError
from fagan_engine.util.options import MAP_KINDS, RunOptions
from fagan_engine.util.progress import FitCancelled, call_progress
from fagan_engine.util.protocol import emit, parse_line

__all__ = [
    "CheckpointError",
    "ConfigError",
    "FAGANConfig",
    "FAGANError",
    "FitCancelled",
    "InputError",
    "MAP_KINDS",
    "OutputError",
    "RunOptions",
    "call_progress",
    "emit",
    "load_config",
    "parse_line",
]
