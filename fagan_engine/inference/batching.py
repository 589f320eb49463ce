"""Network calls with bounded memory: a batch is split so no call produces more than ``MAX_OUTPUT_PIXELS``."""
from __future__ import annotations

from typing import Callable

import numpy as np

Runner = Callable[[np.ndarray], np.ndarray]
"""A model or baseline as numpy → numpy on (B, 1, h, w) batches in [0, 1] units, returning (B, 1, h·s, w·s)."""
MAX_OUTPUT_PIXELS = 1 << 19
"""Most output pixels per network call (8 slices of 256²): torch and ONNX Runtime need roughly 1 KiB of
working memory per output pixel and their speed does not depend on batch size, so larger batches are
split, bounding memory whatever the slice size (docs/performance.md)."""


def capped(call: Runner, scale: int) -> Runner:
    """Split a batch so no call produces more than MAX_OUTPUT_PIXELS (one slice at least)."""

    def run(batch: np.ndarray) -> np.ndarray:
        step = max(1, MAX_OUTPUT_PIXELS // (batch.shape[2] * batch.shape[3] * scale * scale))
        if step >= len(batch):
            return call(batch)
        return np.concatenate([call(np.ascontiguousarray(batch[i : i + step])) for i in range(0, len(batch), step)])

    return run
