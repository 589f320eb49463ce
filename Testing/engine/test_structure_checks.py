"""Invented structure: edge overshoot near the LR Nyquist frequency and edges on flat noisy regions.

The metric tests show the guards can fail; the model tests hold the bundled checkpoints to them
on small synthetic images made by the forward model (issue #8, item 6).
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from fagan_engine.inference.resolver import SuperResolver
from fagan_engine.inference.runners import interpolation_runner
from fagan_engine.mri.forward_model import AcquisitionConfig, degrade
from fagan_engine.mri.structure_checks import OVERSHOOT_LIMIT, edge_energy, nyquist_band_ratio
from fagan_engine.util.options import RunOptions


def disks(size: int = 128, seed: int = 0) -> np.ndarray:
    """Overlapping sharp-edged disks of random intensity on a zero background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    image = np.zeros((size, size), np.float32)
    for _ in range(6):
        cy, cx = rng.uniform(0.15 * size, 0.85 * size, 2)
        radius, value = rng.uniform(0.05 * size, 0.2 * size), rng.uniform(0.3, 1.0)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = value
    return image


def run(resolver_or_runner: object, lr: np.ndarray) -> np.ndarray:
    runner = resolver_or_runner.runner if isinstance(resolver_or_runner, SuperResolver) else resolver_or_runner
    return runner(np.ascontiguousarray(lr[None, None], dtype=np.float32))[0, 0]


def test_band_ratio_is_one_for_the_reference_and_flags_sharpening() -> None:
    hr = disks()
    assert nyquist_band_ratio(hr, hr, 2) == pytest.approx(1.0)
    sharpened = hr + 1.5 * (hr - ndimage.gaussian_filter(hr, 1.0))
    assert nyquist_band_ratio(sharpened, hr, 2) > OVERSHOOT_LIMIT
    assert nyquist_band_ratio(ndimage.gaussian_filter(hr, 1.0), hr, 2) < 1.0


def test_edge_energy_grows_with_structure() -> None:
    flat = np.full((64, 64), 0.5)
    assert edge_energy(flat) == 0.0
    stripes = flat + 0.1 * (np.arange(64) % 4 < 2)
    assert edge_energy(stripes) > edge_energy(ndimage.gaussian_filter(stripes, 1.0)) > 0


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("acquisition", ["kspace", "bicubic"])
def test_bundled_model_does_not_overshoot_edges(scale: int, acquisition: str) -> None:
    hr = np.stack([disks(seed=s) for s in range(3)])
    lr = degrade(hr, scale, AcquisitionConfig(model=acquisition))
    resolver = SuperResolver(RunOptions(scale=scale, acquisition=acquisition, device="cpu"))
    sr = np.stack([run(resolver, image) for image in lr])
    assert nyquist_band_ratio(sr, hr, scale) <= OVERSHOOT_LIMIT


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_bundled_model_adds_no_edges_to_flat_noise(scale: int) -> None:
    """A flat region under k-space acquisition with Rician noise: no more edge energy than Lanczos."""
    flat = np.full((4, 128, 128), 0.5, np.float32)
    lr = degrade(flat, scale, AcquisitionConfig(noise=0.05), np.random.default_rng(1))
    resolver = SuperResolver(RunOptions(scale=scale, device="cpu"))
    lanczos = interpolation_runner("lanczos", scale)
    inner = (slice(None), slice(8, -8), slice(8, -8))
    fagan_energy = edge_energy(np.stack([run(resolver, image) for image in lr])[inner])
    lanczos_energy = edge_energy(np.stack([run(lanczos, image) for image in lr])[inner])
    assert fagan_energy <= lanczos_energy
