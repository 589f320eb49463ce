"""Held-out pairs of the per-scan through-plane fit: the fit never returns a model worse than its start on them.

Every ``HOLD_OUT_EVERY``-th in-plane slice of the scan (both directions of it) is kept out of the training
pairs. Its pairs are made once, deterministically (non-overlapping row windows of the training patch height,
full width, degraded with the scan's slice profile), and scored the way the product's output is made: the
network's output projected onto its thick-slice input (``mri.forward_model.project_along_axis``), mean squared
error against the held-out slice. ``fit.fit`` scores them before the first step and every ``CHECK_EVERY``
steps, stops after ``PATIENCE`` checks without improvement and returns the best model seen, which is the start
itself when no check improved on it (the rule per-scan adaptation of the in-plane model follows,
``inference.adaptation``). A scan with fewer than ``HOLD_OUT_EVERY`` in-plane slices has nothing to hold out:
``split_held_out`` returns no held-out directions and the run keeps the pretrained start.
"""
from __future__ import annotations

import dataclasses
from typing import Any, List, Sequence, Tuple

import numpy as np

from fagan_engine.mri.forward_model import project_along_axis
from fagan_engine.through_plane.fit import Direction, FitConfig

HOLD_OUT_EVERY = 4
"""Every fourth in-plane slice is held out (a quarter of the pairs)."""
NO_HELD_OUT = "no held-out slices"
"""``FitOutcome.stopped`` of a scan too small to hold slices out: the fit does not run."""
MAX_HELD_OUT_PIXELS = 1 << 18
"""Cap on the HR pixels scored per check over all directions (evenly spread windows beyond it)."""


def split_held_out(directions: Sequence[Direction]) -> Tuple[List[Direction], List[Direction]]:
    """(training directions, held-out directions): every ``HOLD_OUT_EVERY``-th slice held out; no held-out
    directions (and the directions unchanged) when there are fewer slices than that."""
    if not directions or directions[0].images.shape[0] < HOLD_OUT_EVERY:
        return list(directions), []
    n = directions[0].images.shape[0]
    held = np.arange(n) % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1
    training = [dataclasses.replace(d, images=np.ascontiguousarray(d.images[~held])) for d in directions]
    held_out = [dataclasses.replace(d, images=np.ascontiguousarray(d.images[held])) for d in directions]
    return training, held_out


class HeldOutPairs:
    """The fixed held-out (input, base, target) windows of one scan; ``score(model)`` is their projected MSE."""

    def __init__(self, directions: Sequence[Direction], cfg: FitConfig, device: str = "cpu") -> None:
        self.device = device
        self.pairs: List[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        budget = MAX_HELD_OUT_PIXELS // max(len(directions), 1)
        for direction in directions:
            d = dataclasses.replace(direction).prepare(cfg.lr_rows, cfg.max_hr_rows)
            n, rows, cols = d.images.shape
            windows = [(i, top) for i in range(n) for top in range(0, rows - d.hr_rows + 1, d.hr_rows)]
            keep = max(1, min(len(windows), budget // (d.hr_rows * cols)))
            chosen = [windows[int(k)] for k in np.linspace(0, len(windows) - 1, keep).round().astype(int)]
            lr, base, target = d.pairs(np.stack([d.images[i, top : top + d.hr_rows] for i, top in chosen]))
            self.pairs.append((lr, base, target[:, 0], d.profile))

    def score(self, model: Any) -> float:
        """Mean squared error of ``model``'s projected output on the held-out windows (all directions pooled)."""
        import torch  # lazy: keeps torch out of this module's import

        was_training = model.training
        model.eval()
        errors, count = 0.0, 0
        with torch.inference_mode():
            for lr, base, target, profile in self.pairs:
                out = model(torch.from_numpy(lr).to(self.device), torch.from_numpy(base).to(self.device))
                projected = project_along_axis(out[:, 0].float().cpu().numpy(), lr[:, 0], profile, 1)
                errors += float(((projected - target) ** 2).sum())
                count += target.size
        model.train(was_training)
        return errors / max(count, 1)
