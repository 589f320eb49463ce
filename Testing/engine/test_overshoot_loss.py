"""The band-overshoot training penalty measures what ``structure_checks.nyquist_band_ratio`` measures."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fagan_engine.mri.structure_checks import nyquist_band_ratio
from fagan_engine.training.losses import band_overshoot_loss


@pytest.mark.parametrize("scale", [2, 4])
def test_one_sample_penalty_is_the_ratio_excess(scale: int) -> None:
    rng = np.random.default_rng(scale)
    hr = rng.normal(size=(48, 40))
    sr = hr + 0.3 * rng.normal(size=hr.shape)
    ratio = nyquist_band_ratio(sr, hr, scale)
    assert ratio > 1.0
    penalty = band_overshoot_loss(torch.tensor(sr)[None, None], torch.tensor(hr)[None, None], scale)
    assert float(penalty) == pytest.approx(ratio - 1.0, rel=1e-4)


def test_no_penalty_below_the_reference_and_a_gradient_above_it() -> None:
    hr = torch.randn(3, 1, 32, 32)
    assert float(band_overshoot_loss(0.8 * hr, hr, 2)) == 0.0
    sr = (1.5 * hr).requires_grad_(True)
    loss = band_overshoot_loss(sr, hr, 2)
    assert float(loss.detach()) == pytest.approx(0.5, rel=1e-4)
    loss.backward()
    assert torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0


def test_only_overshooting_samples_count() -> None:
    hr = torch.randn(2, 1, 32, 32)
    sr = torch.stack([1.4 * hr[0], 0.5 * hr[1]])
    expected = 0.4 * band_amplitude_share(hr, 0)
    assert float(band_overshoot_loss(sr, hr, 2)) == pytest.approx(expected, rel=1e-4)


def band_amplitude_share(hr: torch.Tensor, index: int) -> float:
    """Sample ``index``'s share of the batch's HR band amplitude, from the numpy measure."""
    from fagan_engine.mri.structure_checks import band_power

    amplitudes = [np.sqrt(band_power(hr[i, 0].numpy(), 2)) for i in range(hr.shape[0])]
    return amplitudes[index] / sum(amplitudes)
