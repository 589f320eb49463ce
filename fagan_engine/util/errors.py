"""User-facing errors: each carries a one-line message that the CLI prints as ``error: ...``."""
from __future__ import annotations


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
