"""Test-time-augmentation uncertainty: zero for equivariant upsamplers, found where a runner is not,
exact SR geometry, the plain result reused, two-checkpoint ensembles, progress over all passes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from engine_helpers import oblique_volume, save_untrained_checkpoint

from fagan_engine.inference.ensemble import TRANSFORMS, augmented
from fagan_engine.inference.resolver import SuperResolver
from fagan_engine.io.geometry import physical_corners
from fagan_engine.models.checkpoint import load_generator, read_metadata, save_checkpoint
from fagan_engine.trust.uncertainty import tta_uncertainty
from fagan_engine.util.options import RunOptions


def nearest(batch: np.ndarray) -> np.ndarray:
    """×2 pixel replication: exactly equivariant to flips and 90° rotations."""
    return np.repeat(np.repeat(batch, 2, axis=2), 2, axis=3)


def resolver_with(runner) -> SuperResolver:
    resolver = SuperResolver(RunOptions(method="bicubic", scale=2, batch_size=3))
    resolver.use_runner(runner)
    return resolver


def test_eight_distinct_transforms_each_undone() -> None:
    batch = np.random.default_rng(0).random((2, 1, 5, 7)).astype(np.float32)
    outputs = {augmented(lambda b: b, t)(batch).tobytes() for t in TRANSFORMS}
    assert outputs == {batch.tobytes()} and len(set(TRANSFORMS)) == 8
    seen = {np.ascontiguousarray(augmented(lambda b: b * 0 + b[..., :1, :], t)(batch)).tobytes() for t in TRANSFORMS}
    assert len(seen) > 1  # a non-equivariant runner differs between transforms


def test_equivariant_identity_network_gives_zero_uncertainty() -> None:
    image = oblique_volume(size=(12, 10, 4))
    std = tta_uncertainty(image, resolver_with(nearest))
    assert np.count_nonzero(sitk.GetArrayFromImage(std)) == 0


def test_bicubic_is_equivariant_to_float_precision() -> None:
    image = oblique_volume(size=(12, 10, 4))
    std = sitk.GetArrayFromImage(tta_uncertainty(image, SuperResolver(RunOptions(method="bicubic", scale=2))))
    assert std.max() < 1e-4 * 100


def test_a_non_equivariant_runner_is_uncertain_where_it_disagrees() -> None:
    """A runner that brightens the top-left LR pixel: every transform moves it to another corner."""

    def biased(batch: np.ndarray) -> np.ndarray:
        out = nearest(batch).copy()
        out[:, :, :2, :2] += 1.0
        return out

    image = sitk.GetImageFromArray(np.full((2, 8, 8), 5.0, np.float32))
    std = sitk.GetArrayFromImage(tta_uncertainty(image, resolver_with(biased)))
    corners = std[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.all(corners > 0.1) and np.count_nonzero(std[:, 4:12, 4:12]) == 0


def test_geometry_plain_reuse_and_progress() -> None:
    image = oblique_volume(size=(12, 10, 5), spacing=(0.9, 1.3, 3.0))
    resolver = SuperResolver(RunOptions(method="lanczos", scale=2, batch_size=2))
    plain = resolver(image)
    calls = []
    std = tta_uncertainty(image, resolver, plain=plain, progress=lambda done, total: calls.append((done, total)))
    assert std.GetSize() == plain.GetSize() and std.GetDirection() == plain.GetDirection()
    assert np.allclose(physical_corners(std), physical_corners(plain), rtol=0, atol=1e-4)
    assert calls[-1] == (35, 35) and all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))  # 7 passes of 5 slices
    again = tta_uncertainty(image, resolver)  # identity member recomputed: the same map
    assert np.allclose(sitk.GetArrayFromImage(again), sitk.GetArrayFromImage(std), atol=1e-5)


def test_second_checkpoint_makes_a_two_member_ensemble(tmp_path: Path) -> None:
    first = save_untrained_checkpoint(tmp_path / "ema.safetensors", 2)
    model, _ = load_generator(str(first))
    torch.manual_seed(1)
    torch.nn.init.normal_(model.tail.weight, std=0.05)  # the untrained tail is zero: make the second one differ
    second = save_checkpoint(str(tmp_path / "final.safetensors"), model.state_dict(), read_metadata(str(first)))
    image = sitk.GetImageFromArray(np.random.default_rng(0).random((2, 8, 8)).astype(np.float32) * 100)
    resolver = SuperResolver(RunOptions(checkpoint=str(first), scale=2))
    calls = []
    alone = sitk.GetArrayFromImage(tta_uncertainty(image, resolver))
    ensemble = tta_uncertainty(image, resolver, second_checkpoint=str(second), progress=lambda d, t: calls.append(t))
    assert alone.max() < 1e-3 * 100  # an untrained generator is bicubic: equivariant
    assert sitk.GetArrayFromImage(ensemble).max() > 10 * max(alone.max(), 1e-6)
    assert calls[-1] == 16 * 2  # 16 members, 2 slices each


def test_the_map_is_the_population_spread_of_its_members_projected_when_asked(monkeypatch) -> None:
    """Mutation audit: a wrong running-variance update, or members left unprojected, went unseen."""
    from fagan_engine.mri.forward_model import project_onto_data
    from fagan_engine.trust import uncertainty

    image = sitk.GetImageFromArray(np.random.default_rng(0).random((3, 8, 8)).astype(np.float32) * 10)
    members = [np.random.default_rng(seed).random((3, 16, 16)) * 10 for seed in range(1, 9)]
    monkeypatch.setattr(uncertainty, "_member_volumes", lambda *args: iter(members))
    resolver = SuperResolver(RunOptions(method="bicubic", scale=2))
    std = sitk.GetArrayFromImage(tta_uncertainty(image, resolver))
    np.testing.assert_allclose(std, np.std(members, axis=0), rtol=1e-5, atol=1e-6)
    data = sitk.GetArrayFromImage(image)
    projected = [project_onto_data(m, data, 2, "kspace") for m in members]
    std = sitk.GetArrayFromImage(tta_uncertainty(image, resolver, project=True))
    np.testing.assert_allclose(std, np.std(projected, axis=0), rtol=1e-4, atol=1e-5)
