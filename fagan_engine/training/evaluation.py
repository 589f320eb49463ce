"""The evaluation protocol shared by trainer validation and ``fagan-eval``.

HR volume → crop in-plane to a multiple of the scale → ``forward_model.degrade_volume`` (LR, under
the acquisition the model is made for: k-space for the bundled models)
→ super-resolution through ``fagan_engine.inference.resolver`` (the same code path as ``fagan-sr``) →
PSNR/SSIM against HR (``metrics`` convention: reference's robust [0, 1] normalisation,
foreground mask, ``scale`` voxels cropped at each in-plane border).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from fagan_engine.inference.resolver import super_resolve_with_model
from fagan_engine.io.geometry import SliceLayout
from fagan_engine.mri.forward_model import AcquisitionConfig, crop_to_multiple, degrade_volume
from fagan_engine.mri.metrics import FOREGROUND_THRESHOLD, foreground_mask, psnr, ssim, volume_metrics
from fagan_engine.mri.normalization import IntensityNormalizer
from fagan_engine.pipeline.report import super_resolve
from fagan_engine.util.config import NormalizationConfig


@dataclass
class EvalCase:
    """One test volume at one scale: HR (cropped to a multiple of the scale), its LR, the in-plane axes."""

    name: str
    hr: sitk.Image
    lr: sitk.Image
    axes: Tuple[int, int]
    scale: int


def make_case(
    name: str, hr: sitk.Image, scale: int, axes: Tuple[int, int], acquisition: Optional[AcquisitionConfig] = None
) -> EvalCase:
    """Crop HR to a multiple of the scale and make its LR with the forward model (default: noise-free k-space)."""
    hr = crop_to_multiple(hr, scale, axes)
    acquisition = acquisition or AcquisitionConfig()
    rng = np.random.default_rng(0) if acquisition.noise > 0 else None
    return EvalCase(name, hr, degrade_volume(hr, scale, axes, acquisition, rng), axes, scale)


def _stacks(case: EvalCase, sr: sitk.Image) -> Tuple[np.ndarray, np.ndarray]:
    layout = SliceLayout.for_axes(case.axes)
    return layout.to_slices(sitk.GetArrayViewFromImage(case.hr)), layout.to_slices(sitk.GetArrayViewFromImage(sr))


def volume_scores(case: EvalCase, sr: sitk.Image) -> Dict[str, float]:
    """PSNR/SSIM of ``sr`` against the case's HR volume."""
    reference, test = _stacks(case, sr)
    return volume_metrics(reference, test, in_plane_axes=(1, 2), crop=case.scale)


def normalised_stacks(case: EvalCase, sr: sitk.Image) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HR and SR slice stacks in the reference's [0, 1] units, border-cropped, and the foreground mask."""
    reference, test = _stacks(case, sr)
    normalizer = IntensityNormalizer.fit(reference, NormalizationConfig())
    crop = (slice(None), slice(case.scale, -case.scale), slice(case.scale, -case.scale))
    ref = np.clip(normalizer.forward(reference), 0.0, 1.0)[crop]
    out = np.clip(normalizer.forward(test), 0.0, 1.0)[crop]
    return ref, out, foreground_mask(ref)


def has_foreground(hr: sitk.Image, axes: Tuple[int, int], scale: int) -> bool:
    """Whether ``hr`` has voxels to score at ``scale`` (the scores' normalisation, mask and border crop): a blank
    volume has none, and its PSNR/SSIM would be the mean of an empty mask (NaN)."""
    hr = crop_to_multiple(hr, scale, axes)
    _, _, mask = normalised_stacks(EvalCase("", hr, hr, axes, scale), hr)
    return bool(mask.any())


def slice_scores(case: EvalCase, sr: sitk.Image) -> List[Dict[str, float]]:
    """PSNR/SSIM per slice with foreground of its own, under the same normalisation, mask and crop as the volume scores. The
    mask is dilated in 3D, so a slice next to the head holds mask voxels without any foreground: its baselines scored an
    infinite PSNR (both zero there), so such slices are left out."""
    ref, out, mask = normalised_stacks(case, sr)
    return [
        {"psnr": psnr(ref[i], out[i], 1.0, mask[i]), "ssim": ssim(ref[i], out[i], 1.0, mask[i])}
        for i in range(ref.shape[0])
        if (ref[i] > FOREGROUND_THRESHOLD).any()
    ]


def interpolated(case: EvalCase, method: str) -> sitk.Image:
    """The case's LR upsampled by an interpolation baseline (``bicubic`` or ``lanczos``)."""
    return super_resolve(case.lr, case.scale, plane=case.axes, method=method)


def generator_sr(case: EvalCase, model: Any, normalization: NormalizationConfig, batch_size: int = 8) -> sitk.Image:
    """Super-resolve the case's LR with an in-memory generator (the inference code path)."""
    return super_resolve_with_model(case.lr, model, normalization, plane=case.axes, batch_size=batch_size)


def mean_scores(scores: List[Dict[str, float]]) -> Dict[str, float]:
    return {key: float(np.mean([s[key] for s in scores])) for key in ("psnr", "ssim")}


def validate(model: Any, normalization: NormalizationConfig, cases: List[EvalCase]) -> Dict[str, float]:
    """Mean volume PSNR/SSIM of an in-memory generator over ``cases`` (model left in its mode)."""
    was_training = model.training
    model.eval()
    try:
        return mean_scores([volume_scores(c, generator_sr(c, model, normalization)) for c in cases])
    finally:
        model.train(was_training)


def baseline(cases: List[EvalCase], method: str) -> Dict[str, float]:
    """Mean volume PSNR/SSIM of an interpolation baseline over ``cases``."""
    return mean_scores([volume_scores(c, interpolated(c, method)) for c in cases])
