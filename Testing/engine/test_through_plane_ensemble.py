"""Through-plane self-ensemble (``through_plane.run.ENSEMBLE_FLIPS``, ``RunOptions.ensemble``): the flips are undone
exactly, the members are averaged, and every way in (API, ``RunOptions``) runs the ensemble it asks for."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from fagan_engine.through_plane.plan import plan_through_plane
from fagan_engine.through_plane.run import ENSEMBLE_FLIPS, apply_through_plane, super_resolve_through_plane, through_plane_from_options
from fagan_engine.util.errors import InputError
from fagan_engine.util.options import DEFAULT_THROUGH_PLANE_ENSEMBLE, THROUGH_PLANE_ENSEMBLE_SIZES, RunOptions


class BaseOnly(torch.nn.Module):
    """Returns the B-spline base it is given (symmetric under reversal), plus ``bump`` on its first output row and column."""

    def __init__(self, bump: float = 0.0) -> None:
        super().__init__()
        self.bump = bump

    def forward(self, lr: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        out = base.clone()
        out[:, :, 0, 0] += self.bump
        return out


def _thick(size=(12, 10, 6), spacing=(1.0, 1.0, 3.0), seed=0) -> sitk.Image:
    image = sitk.GetImageFromArray(np.random.default_rng(seed).random(size[::-1]).astype(np.float32))
    image.SetSpacing(spacing)
    return image


def test_sizes_match_the_options_and_the_default_is_listed() -> None:
    assert tuple(ENSEMBLE_FLIPS) == THROUGH_PLANE_ENSEMBLE_SIZES and DEFAULT_THROUGH_PLANE_ENSEMBLE in ENSEMBLE_FLIPS
    assert [len(ENSEMBLE_FLIPS[n]) for n in THROUGH_PLANE_ENSEMBLE_SIZES] == [1, 2, 4]


def test_flips_are_undone_exactly_and_members_averaged() -> None:
    image = _thick()
    plan = plan_through_plane(image)
    volume = sitk.GetArrayFromImage(image)
    plain = apply_through_plane(BaseOnly(), volume, plan, ensemble=1)
    for size in (2, 4):  # an equivariant network: the ensemble changes nothing
        assert np.allclose(apply_through_plane(BaseOnly(), volume, plan, ensemble=size), plain, atol=1e-5)
    # a bump on the first (slice, column) sample of every network output lands, flipped back, on that member's corner
    single = apply_through_plane(BaseOnly(1.0), volume, plan, ensemble=1) - plain
    half_turn = apply_through_plane(BaseOnly(1.0), volume, plan, ensemble=2) - plain
    all_flips = apply_through_plane(BaseOnly(1.0), volume, plan, ensemble=4) - plain
    assert single.max() == pytest.approx(1.0, abs=1e-5)  # one orientation's bump, halved by the fusion, twice on one voxel
    assert half_turn.sum() == pytest.approx(single.sum(), abs=1e-3) and half_turn.max() == pytest.approx(0.5, abs=1e-5)
    assert all_flips.sum() == pytest.approx(single.sum(), abs=1e-3) and all_flips.max() == pytest.approx(0.25, abs=1e-5)
    through = 2 - plan.axis
    first, last = np.take(half_turn, 0, axis=through), np.take(half_turn, -1, axis=through)
    assert first.sum() > 0 and first.sum() == pytest.approx(last.sum(), abs=1e-4)  # the half-turn's bump: on the last slice


def test_every_way_in_runs_the_ensemble_it_asks_for() -> None:
    image = _thick(size=(24, 24, 6), spacing=(1.0, 1.0, 4.0))
    options = RunOptions(mode="through-plane", fit_iterations=0, device="cpu").validate()
    assert options.ensemble_members == DEFAULT_THROUGH_PLANE_ENSEMBLE
    default = sitk.GetArrayFromImage(through_plane_from_options(image, options))
    assert np.array_equal(default, sitk.GetArrayFromImage(super_resolve_through_plane(image, iterations=0, device="cpu")))
    single = RunOptions(mode="through-plane", fit_iterations=0, device="cpu", ensemble=1).validate()
    plain = sitk.GetArrayFromImage(through_plane_from_options(image, single))
    assert np.array_equal(plain, sitk.GetArrayFromImage(super_resolve_through_plane(image, iterations=0, device="cpu", ensemble=1)))
    assert not np.allclose(plain, default, atol=1e-6)  # the bundled network is not flip-equivariant: members differ
    with pytest.raises(InputError, match="1, 2 or 4"):
        super_resolve_through_plane(image, iterations=0, device="cpu", ensemble=8)
    with pytest.raises(InputError, match="1, 2 or 4"):
        RunOptions(mode="through-plane", ensemble=8).validate()
