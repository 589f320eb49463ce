"""Robust per-volume intensity normalisation and its exact inverse."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fagan_engine.util.config import NormalizationConfig


@dataclass(frozen=True)
class IntensityNormalizer:
    """Linear map sending the volume's low/high percentiles to 0/1 (values outside are kept)."""

    low: float
    high: float

    @classmethod
    def fit(cls, array: np.ndarray, cfg: NormalizationConfig) -> "IntensityNormalizer":
        low, high = np.percentile(array, [cfg.low_percentile, cfg.high_percentile])
        if not high > low:  # constant or near-constant volume: fall back to min/max, then identity
            low, high = float(array.min()), float(array.max())
            if not high > low:  # a span relative to the value: low + 1.0 == low beyond 2**53
                high = low + max(1.0, abs(low))
        return cls(float(low), float(high))

    def forward(self, array: np.ndarray) -> np.ndarray:
        return ((array - self.low) / (self.high - self.low)).astype(np.float32, copy=False)

    def inverse(self, array: np.ndarray) -> np.ndarray:
        return (array * (self.high - self.low) + self.low).astype(np.float32, copy=False)
