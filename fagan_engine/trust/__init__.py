"""What to trust about a result: data-consistency maps and projection, TTA uncertainty, out-of-distribution
warnings, the training-profile histogram.
"""
from __future__ import annotations

from fagan_engine.trust.consistency import consistency_maps, enforce_consistency
from fagan_engine.trust.ood import ood_warnings

__all__ = [
    "consistency_maps",
    "enforce_consistency",
    "ood_warnings",
]
