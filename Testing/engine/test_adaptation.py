"""Per-scan adaptation of the in-plane model: N steps, a changed output, an untouched base model, cancel."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from fagan_engine.inference.resolver import SuperResolver
from fagan_engine.util.errors import InputError
from fagan_engine.util.options import RunOptions
from fagan_engine.util.progress import FitCancelled


def _volume() -> sitk.Image:
    rng = np.random.default_rng(0)
    array = np.zeros((3, 32, 32), np.float32)
    array[:, 8:24, 6:26] = 50 + 20 * rng.random((3, 16, 20))
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 3.0))
    return image


def test_adaptation_runs_n_steps_changes_the_output_and_keeps_the_base_model() -> None:
    import torch

    image = _volume()
    plain = SuperResolver(RunOptions(scale=2, device="cpu"))(image)
    resolver = SuperResolver(RunOptions(scale=2, adapt_iterations=3, device="cpu"))
    before = {k: v.clone() for k, v in resolver.base_model.state_dict().items()}
    calls = []
    out = resolver(image, progress=lambda done, total, phase=None, loss=None: calls.append((phase, done, total)))
    assert [c for c in calls if c[0] == "adapt"] == [("adapt", 1, 3), ("adapt", 2, 3), ("adapt", 3, 3)]
    assert calls[-1] == (None, 3, 3)  # then the slices, reported as before
    assert out.GetSize() == plain.GetSize() == (64, 64, 3)
    difference = np.abs(sitk.GetArrayFromImage(out) - sitk.GetArrayFromImage(plain)).max()
    assert difference > 1e-3
    assert all(torch.equal(before[k], v) for k, v in resolver.base_model.state_dict().items())
    assert resolver.adapted_model is not None and resolver.runner is not None


def test_two_argument_progress_still_works_and_adaptation_can_be_cancelled() -> None:
    image = _volume()
    resolver = SuperResolver(RunOptions(scale=2, adapt_iterations=2, device="cpu"))
    seen = []
    resolver(image, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(3, 3)]
    with pytest.raises(FitCancelled):
        resolver(image, stop=lambda: True)


def test_adaptation_refuses_onnx() -> None:
    with pytest.raises(InputError, match="ONNX"):
        SuperResolver(RunOptions(scale=2, adapt_iterations=2, backend="onnx", device="cpu"))
