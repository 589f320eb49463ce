"""Per-scan adaptation of the bundled in-plane FA-GAN model (``--adapt N``, ``adapt_iterations=N``).

The scan's own in-plane slices are taken as HR and degraded once more by the scale with the
acquisition forward model (``forward_model.degrade``, ``options.acquisition``, noise-free); the
in-plane generator is fine-tuned on these (LR, HR) pairs for ``options.adapt_iterations`` L1 steps
at a small learning rate, then applied to the scan as usual. The assumption (as in zero-shot SR) is
that the scan's structure looks alike one scale down. Whether it helps is measured per contrast in
docs/model-card.md ("Through-plane" section, per-scan adaptation); it is off by default.

``SuperResolver`` calls ``adapt_generator`` once per image when ``adapt_iterations > 0``: every
call starts from a fresh copy of the loaded checkpoint, so adapting to one scan never leaks
into the next.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from fagan_engine.mri.forward_model import AcquisitionConfig, degrade
from fagan_engine.mri.normalization import IntensityNormalizer
from fagan_engine.util.errors import InputError
from fagan_engine.util.options import RunOptions
from fagan_engine.util.progress import FitCancelled, call_progress

ADAPT_LR = 2e-5
"""Fine-tuning learning rate: 1/25 of the first-wave training rate, so a few hundred steps cannot undo the checkpoint."""
ADAPT_BATCH = 8
ADAPT_PATCH = 64
"""HR patch side (pixels of the scan), LR patch = ADAPT_PATCH / scale."""


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
    model: Any = None,
    normalization: Any = None,
    stop: Optional[Callable[[], bool]] = None,
    seed: int = 0,
    plane: Any = None,
) -> Any:
    """Fine-tune the in-plane model on the scan itself for ``options.adapt_iterations`` steps; returns the model (eval mode).

    ``model``: a generator to adapt (it is copied, never changed); default the checkpoint of
    ``options`` (the bundled one for its scale and acquisition). ``plane`` overrides the options'
    plane (a name or two SimpleITK in-plane axes), as in ``SuperResolver.__call__``. ``progress(done, total,
    phase="adapt", loss=...)`` after every step; ``stop()`` before every step raises ``FitCancelled``.
    """
    import torch

    from fagan_engine.inference.runners import resolve_checkpoint, resolve_device
    from fagan_engine.io.geometry import SliceLayout, plane_axes
    from fagan_engine.io.volume_io import validate_image

    if options.method != "fagan":
        raise InputError("per-scan adaptation needs --method fagan")
    device = resolve_device(options.device)
    if model is None:
        from fagan_engine.models.checkpoint import load_generator

        checkpoint = resolve_checkpoint(options)
        if checkpoint is None or checkpoint.suffix == ".onnx":
            raise InputError("per-scan adaptation needs a .safetensors checkpoint (PyTorch), not an ONNX export")
        model, metadata = load_generator(str(checkpoint), expected_scale=options.scale, device=device)
        normalization = metadata.normalization_config()
    model = copy.deepcopy(model).to(device)
    if normalization is None:
        from fagan_engine.util.config import NormalizationConfig

        normalization = NormalizationConfig()
    image = validate_image(image, options.nan_policy)
    if plane is None or isinstance(plane, str):
        axes = plane_axes(image, plane or options.plane)
    else:
        from fagan_engine.io.geometry import explicit_axes

        axes = explicit_axes(plane)
    volume = sitk.GetArrayViewFromImage(image)
    normalizer = IntensityNormalizer.fit(volume, normalization)
    slices = np.ascontiguousarray(SliceLayout.for_axes(axes).to_slices(normalizer.forward(np.asarray(volume, np.float32))))
    acquisition = AcquisitionConfig(model=options.acquisition)
    rng = np.random.default_rng(seed)
    total = options.adapt_iterations
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=ADAPT_LR, betas=(0.9, 0.999))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in range(total):
            if stop is not None and stop():
                raise FitCancelled("per-scan adaptation cancelled")
            lr, hr = (torch.from_numpy(a).to(device) for a in adaptation_pairs(slices, options.scale, acquisition, rng, ADAPT_BATCH, ADAPT_PATCH))
            loss = (model(lr) - hr).abs().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"per-scan adaptation diverged at step {step + 1}")
            call_progress(progress, step + 1, total, "adapt", value)
    return model.eval()
