"""Per-scan adaptation of the in-plane FA-GAN model, on by default (``adapt_iterations``; ``--adapt 0`` turns it off).

The scan's own in-plane slices are taken as HR and degraded once more by the scale with the
acquisition forward model (``mri.forward_model.degrade``, ``options.acquisition``, noise-free); the
generator is fine-tuned on these (LR, HR) pairs with an L1 loss. Part of the pairs is **held out**
(every fourth slice, or the last quarter of the columns when the scan has fewer than four slices)
and scored every ``CHECK_EVERY`` steps the way the product's output is made: the network's output
projected onto its input (``mri.forward_model.project_onto_data``), MSE against the held-out HR.
Adaptation stops when that score has not improved for ``PATIENCE`` checks, when the loss
diverges, or after ``options.adapt_steps`` steps, and returns the best model seen, which is the loaded model itself
when no step improved on it: adaptation never returns a model worse than its start on the held-out pairs.

``SuperResolver`` calls ``adapt_generator`` once per image: every call starts from a fresh copy of
the loaded checkpoint, so adapting to one scan never leaks into the next. Measured gains and costs:
docs/model-card.md ("Real scans").
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from fagan_engine.io.geometry import SliceLayout
from fagan_engine.mri.forward_model import AcquisitionConfig, degrade, project_onto_data
from fagan_engine.mri.normalization import IntensityNormalizer
from fagan_engine.util.config import NormalizationConfig
from fagan_engine.util.errors import InputError
from fagan_engine.util.options import RunOptions
from fagan_engine.util.progress import FitCancelled, call_progress

ADAPT_LR = 1e-4
"""Fine-tuning learning rate (the held-out check, not a tiny rate, keeps the model from drifting)."""
ADAPT_BATCH = 4
ADAPT_PATCH = 64
"""HR patch side (pixels of the scan), LR patch = ADAPT_PATCH / scale."""
CHECK_EVERY = 20
"""Steps between two scores on the held-out pairs."""
PATIENCE = 2
"""Checks without improvement before adaptation stops."""
HELD_OUT_PATCHES = 16
MIN_SIDE = 48
"""Smallest in-plane side (input pixels) adaptation runs on. Chosen on the real development slices: on
smaller ones (LR sides 16–38 px: a 2 mm T1, a TOF MIP, a 64² spin echo at ×2; everything at ×4) adaptation
improved the held-out pairs but lost up to 1.2 dB on the real task, while on 48–64 px DWI and EPI slices it
gained up to 1 dB (docs/model-card.md, "Real scans")."""


@dataclass
class Adaptation:
    """What adaptation did to one scan: the model to use and the figures for the report."""

    model: Any
    steps: int
    best_step: int
    held_out_start: float
    held_out_best: float
    stopped: str

    def summary(self) -> Dict[str, Any]:
        """JSON figures: steps run, the step kept (0: the loaded model), held-out MSE before and after, why it stopped."""
        return {"steps": self.steps, "best_step": self.best_step, "held_out_mse_start": self.held_out_start,
                "held_out_mse_best": self.held_out_best, "stopped": self.stopped}


def patch_side(shape: Tuple[int, int], scale: int) -> int:
    """The HR patch side adaptation uses on slices of ``shape``; 0 when they are too small to adapt on."""
    side = min(ADAPT_PATCH, *shape)
    side -= side % scale
    return side if side >= 4 * scale else 0


def split_held_out(slices01: np.ndarray, scale: int) -> Tuple[np.ndarray, np.ndarray]:
    """(training slices, held-out slices): every fourth slice, or the last quarter of the columns of each slice."""
    n, rows, cols = slices01.shape
    if min(rows, cols) < MIN_SIDE:
        raise InputError(f"in-plane slices of {cols}x{rows} are smaller than the {MIN_SIDE}x{MIN_SIDE} that per-scan adaptation needs")
    if n >= 4:
        keep = np.ones(n, dtype=bool)
        keep[3::4] = False
        return slices01[keep], slices01[~keep]
    side = patch_side((rows, cols // 2), scale)
    if not side:
        raise InputError(f"in-plane slices of {rows}x{cols} are too small to hold out adaptation pairs at x{scale}")
    cut = cols - max(side, cols // 4)
    return slices01[:, :, :cut], slices01[:, :, cut:]


def adaptation_pairs(
    slices01: np.ndarray, scale: int, acquisition: AcquisitionConfig, rng: np.random.Generator, batch: int, patch: int
) -> Tuple[np.ndarray, np.ndarray]:
    """One batch of (LR, HR) patches from (n, rows, cols) normalised slices; HR patches are patch², LR patch/scale."""
    n, rows, cols = slices01.shape
    side = min(patch, rows, cols)
    side -= side % scale
    if side < 4 * scale:
        raise InputError(f"in-plane slices of {rows}x{cols} are too small to adapt a x{scale} model on (need {4 * scale}x{4 * scale})")
    threshold = 0.05
    hr = np.empty((batch, side, side), dtype=np.float32)
    for b in range(batch):
        for _ in range(8):
            i, top, left = int(rng.integers(n)), int(rng.integers(rows - side + 1)), int(rng.integers(cols - side + 1))
            piece = slices01[i, top : top + side, left : left + side]
            if piece.mean() > threshold:
                break
        if rng.random() < 0.5:
            piece = piece[::-1]
        if rng.random() < 0.5:
            piece = piece[:, ::-1]
        hr[b] = piece
    lr = degrade(hr, scale, acquisition)
    return lr[:, None], hr[:, None]


def adapt_generator(
    image: sitk.Image,
    options: RunOptions,
    progress: Optional[Callable[..., None]] = None,
    *,
    model: Any,
    normalization: NormalizationConfig,
    axes: Tuple[int, int],
    stop: Optional[Callable[[], bool]] = None,
    seed: int = 0,
) -> Adaptation:
    """Fine-tune a copy of ``model`` on the scan itself (at most ``options.adapt_steps`` steps, early-stopped on held-out pairs).

    ``image`` is a validated volume, ``axes`` its two in-plane SimpleITK axes. ``progress(done, total,
    phase="adapt", loss=...)`` after every step; ``stop()`` before every step raises ``FitCancelled``.
    The returned model is in eval mode; ``model`` itself is never changed.
    """
    import torch  # lazy: keeps torch out of this module's import

    device = str(next(model.parameters()).device)
    volume = sitk.GetArrayViewFromImage(image)
    normalizer = IntensityNormalizer.fit(volume, normalization)
    slices = np.ascontiguousarray(SliceLayout.for_axes(axes).to_slices(normalizer.forward(np.asarray(volume, np.float32))))
    train_slices, held_slices = split_held_out(slices, options.scale)
    acquisition = AcquisitionConfig(model=options.acquisition)
    held_lr, held_hr = adaptation_pairs(held_slices, options.scale, acquisition, np.random.default_rng(seed + 1), HELD_OUT_PATCHES, ADAPT_PATCH)
    rng = np.random.default_rng(seed)
    total = options.adapt_steps
    work = copy.deepcopy(model)

    def held_out_mse() -> float:
        work.eval()
        with torch.inference_mode():
            out = work(torch.from_numpy(held_lr).to(device)).float().cpu().numpy()
        work.train()
        projected = project_onto_data(out[:, 0], held_lr[:, 0], options.scale, options.acquisition)
        return float(np.mean((np.clip(projected, 0.0, None) - held_hr[:, 0]) ** 2))

    start = best = held_out_mse()
    best_state, best_step, since_best, stopped, step = None, 0, 0, "step budget", 0
    work.train()
    optimizer = torch.optim.Adam(work.parameters(), lr=ADAPT_LR, betas=(0.9, 0.999))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in range(1, total + 1):
            if stop is not None and stop():
                raise FitCancelled("per-scan adaptation cancelled")
            pairs = adaptation_pairs(train_slices, options.scale, acquisition, rng, ADAPT_BATCH, ADAPT_PATCH)
            lr, hr = (torch.from_numpy(a).to(device) for a in pairs)
            loss = (work(lr) - hr).abs().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            call_progress(progress, step, total, "adapt", value)
            if not math.isfinite(value):
                stopped = "diverged"
                break
            if step % CHECK_EVERY and step != total:
                continue
            score = held_out_mse()
            if score < best:
                best, best_step, since_best = score, step, 0
                best_state = copy.deepcopy(work.state_dict())
            else:
                since_best += 1
                if since_best >= PATIENCE:
                    stopped = "held-out loss stopped falling"
                    break
    if best_state is None:
        return Adaptation(model.eval(), step, 0, start, start, stopped)
    work.load_state_dict(best_state)
    return Adaptation(work.eval(), step, best_step, start, best, stopped)
