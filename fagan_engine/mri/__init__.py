"""MRI physics and image tools: the one forward model, interpolation baselines, normalisation, noise estimate,
structure checks, metrics, synthetic data and the bundled sample.
"""
from __future__ import annotations

from fagan_engine.mri.forward_model import AcquisitionConfig, degrade, degrade_volume, project_onto_data
from fagan_engine.mri.metrics import psnr, ssim

__all__ = [
    "AcquisitionConfig",
    "degrade",
    "degrade_volume",
    "project_onto_data",
    "psnr",
    "ssim",
]
