"""Exponential moving average of the generator, used for validation and exported checkpoints."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``ema ← d·ema + (1 − d)·θ`` after every step, with ``d_t = min(decay, (1 + t) / (10 + t))``.

    The warm-up (TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``) keeps the
    average from being dominated by the random initialisation in short runs; after about
    ``10 / (1 − decay)`` steps the configured decay applies unchanged.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Blend ``model``'s parameters in after optimisation step ``step`` (1-based)."""
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        for average, current in zip(self.model.parameters(), model.parameters()):
            average.lerp_(current.detach(), 1.0 - decay)
        for average, current in zip(self.model.buffers(), model.buffers()):
            average.copy_(current)
