"""The intensity histogram of a training data profile, shared by training (which records it) and the OOD check (which reads it)."""
from __future__ import annotations

from typing import List

import numpy as np

HISTOGRAM_EDGES = np.linspace(0.0, 1.6, 65)
"""Bins of the intensity histogram (normalised units: robust range of the volume = [0, 1])."""
FOREGROUND_LEVEL = 0.05
"""Intensities above this (normalised units) enter the histogram: the trust maps' foreground."""


def histogram(normalised: np.ndarray) -> List[float]:
    """Normalised histogram (sums to 1) of the foreground values of a normalised array on ``HISTOGRAM_EDGES``."""
    values = np.clip(normalised[normalised > FOREGROUND_LEVEL], HISTOGRAM_EDGES[0], HISTOGRAM_EDGES[-1])
    counts = np.histogram(values, HISTOGRAM_EDGES)[0].astype(np.float64)
    total = counts.sum()
    return [round(float(c), 6) for c in (counts / total if total > 0 else counts)]
