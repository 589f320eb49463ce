"""User-facing errors: each carries a one-line message that the CLI prints as ``error: ...``."""
from __future__ import annotations

import contextlib
import threading
import warnings
from typing import Iterator, List


class FAGANError(Exception):
    """Base class for every error a user can cause and fix (bad input, bad checkpoint, bad config)."""

    exit_code = 2


class InputError(FAGANError):
    """The input volume cannot be read or is not a single-channel 3D volume with finite values."""


class CheckpointError(FAGANError):
    """A checkpoint is missing, not safetensors, tampered with, or made for another scale/architecture."""


class ConfigError(FAGANError):
    """A configuration has unknown keys, wrong types or impossible values."""


class OutputError(FAGANError):
    """The output cannot be written (same as input, unwritable folder, full disk)."""


class FAGANWarning(UserWarning):
    """Something the user should know that does not stop the work; CLIs print ``warning: ...``."""


_collectors = threading.local()


@contextlib.contextmanager
def collected_warnings() -> Iterator[List[str]]:
    """Within this thread (a batch prefetches its next input in another), the engine's warnings (``warn``) go into the
    yielded list, without repeats, instead of Python's warnings machinery."""
    outer = getattr(_collectors, "notes", None)
    notes: List[str] = []
    _collectors.notes = notes
    try:
        yield notes
    finally:
        _collectors.notes = outer


def warn(message: str, stacklevel: int = 1) -> None:
    """An engine warning: into this thread's ``collected_warnings`` list when one is open, else a ``FAGANWarning``
    (``stacklevel`` counts from the caller of ``warn``)."""
    notes = getattr(_collectors, "notes", None)
    if notes is None:
        warnings.warn(message, FAGANWarning, stacklevel=stacklevel + 2)
    elif message not in notes:
        notes.append(message)
