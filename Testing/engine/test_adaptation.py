"""Per-scan adaptation of the in-plane model: on by default, at most N steps, early-stopped on held-out pairs, never worse than the start, cancel."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from engine_helpers import textured_block

from fagan_engine.inference.resolver import SuperResolver
from fagan_engine.util.errors import InputError
from fagan_engine.util.options import RunOptions
from fagan_engine.util.progress import FitCancelled


def _volume() -> sitk.Image:
    rng = np.random.default_rng(0)
    array = np.zeros((3, 48, 48), np.float32)
    array[:, 8:40, 6:42] = 50 + 20 * rng.random((3, 32, 36))
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 3.0))
    return image


def test_adaptation_runs_at_most_n_steps_and_keeps_the_base_model() -> None:
    import torch

    image = _volume()
    resolver = SuperResolver(RunOptions(scale=2, adapt_iterations=3, device="cpu"))
    before = {k: v.clone() for k, v in resolver.base_model.state_dict().items()}
    calls = []
    out = resolver(image, progress=lambda done, total, phase=None, loss=None: calls.append((phase, done, total)))
    assert [c for c in calls if c[0] == "adapt"] == [("adapt", 1, 3), ("adapt", 2, 3), ("adapt", 3, 3)]
    assert calls[-1] == (None, 3, 3)  # then the slices, reported as before
    assert out.GetSize() == (96, 96, 3)
    assert all(torch.equal(before[k], v) for k, v in resolver.base_model.state_dict().items())
    summary = resolver.adaptation.summary()
    assert summary["steps"] == 3 and summary["held_out_mse_best"] <= summary["held_out_mse_start"]


def test_adaptation_never_returns_a_model_worse_than_its_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from fagan_engine.inference import adaptation

    monkeypatch.setattr(adaptation, "ADAPT_LR", 0.5)  # every step wrecks the model
    monkeypatch.setattr(adaptation, "CHECK_EVERY", 1)
    image = _volume()
    plain = SuperResolver(RunOptions(scale=2, adapt_iterations=0, device="cpu"))(image)
    resolver = SuperResolver(RunOptions(scale=2, adapt_iterations=20, device="cpu"))
    out = resolver(image)
    summary = resolver.adaptation.summary()
    assert summary["best_step"] == 0 and summary["stopped"] in ("held-out loss stopped falling", "diverged")
    assert summary["steps"] <= adaptation.PATIENCE < 20
    np.testing.assert_allclose(  # the same weights; layouts and attention-window batches differ, so float sums do
        sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(plain), rtol=1e-4, atol=2e-3)


def test_adaptation_is_on_by_default_for_fagan_in_plane_only() -> None:
    from fagan_engine.util.options import ADAPT_DEFAULT_STEPS

    assert RunOptions().adapt_steps == ADAPT_DEFAULT_STEPS > 0
    assert RunOptions(method="lanczos").validate().adapt_steps == 0
    assert RunOptions(mode="through-plane").validate().adapt_steps == 0
    assert RunOptions(adapt_iterations=0).adapt_steps == 0
    with pytest.raises(InputError, match="through-plane"):
        RunOptions(mode="through-plane", adapt_iterations=5).validate()


def test_small_slices_skip_default_adaptation_with_a_note_and_refuse_an_explicit_one() -> None:
    tiny = sitk.GetImageFromArray(np.full((2, 6, 6), 10.0, np.float32))
    resolver = SuperResolver(RunOptions(scale=2, device="cpu"))
    assert resolver(tiny).GetSize() == (12, 12, 2)
    assert resolver.adaptation is None and resolver.image_notes[0].startswith("per-scan adaptation skipped:")
    with pytest.raises(InputError, match="smaller than"):
        SuperResolver(RunOptions(scale=2, adapt_iterations=5, device="cpu"))(tiny)


def test_two_argument_progress_still_works_and_adaptation_can_be_cancelled() -> None:
    image = _volume()
    resolver = SuperResolver(RunOptions(scale=2, adapt_iterations=2, device="cpu"))
    seen = []
    resolver(image, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(3, 3)]
    with pytest.raises(FitCancelled):
        resolver(image, stop=lambda: True)


def test_adaptation_refuses_onnx_when_asked_and_is_off_with_a_warning_by_default() -> None:
    with pytest.raises(InputError, match="ONNX"):
        SuperResolver(RunOptions(scale=2, adapt_iterations=2, backend="onnx", device="cpu"))
    resolver = SuperResolver(RunOptions(scale=2, backend="onnx", device="cpu"))
    assert resolver.base_model is None and any("adaptation is off" in line for line in resolver.warnings)


# The tests below were added after a mutation audit (2026-12-07): each fails on a plausible bug the suite missed.

def test_adaptation_with_finite_but_harmful_steps_keeps_the_loaded_model(monkeypatch):
    from fagan_engine.inference import adaptation
    from fagan_engine.inference.resolver import SuperResolver
    from fagan_engine.util.options import RunOptions

    monkeypatch.setattr(adaptation, "ADAPT_LR", 0.01)  # finite losses, worse held-out MSE (not the NaN path)
    resolver = SuperResolver(RunOptions(scale=2, adapt_iterations=60, device="cpu"))
    resolver(textured_block())
    s = resolver.adaptation.summary()
    assert s["stopped"] != "diverged"
    assert s["best_step"] == 0 and s["held_out_mse_best"] == s["held_out_mse_start"], s


def test_adaptation_returns_the_best_step_not_the_last(monkeypatch):
    from fagan_engine.inference import adaptation
    from fagan_engine.inference.resolver import SuperResolver
    from fagan_engine.util.options import RunOptions

    monkeypatch.setattr(adaptation, "ADAPT_LR", 1e-3)
    long = SuperResolver(RunOptions(scale=2, adapt_iterations=60, device="cpu"))
    out_long = long(textured_block())
    best = long.adaptation.summary()["best_step"]
    assert 0 < best < long.adaptation.summary()["steps"]  # the scenario: a later step was worse
    short = SuperResolver(RunOptions(scale=2, adapt_iterations=best, device="cpu"))
    out_short = short(textured_block())
    np.testing.assert_allclose(sitk.GetArrayFromImage(out_long), sitk.GetArrayFromImage(out_short), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("n", [3, 8])
def test_held_out_pairs_never_train(monkeypatch, n):
    from fagan_engine.inference import adaptation
    from fagan_engine.inference.resolver import SuperResolver
    from fagan_engine.util.options import RunOptions

    seen = []
    real = adaptation.adaptation_pairs
    monkeypatch.setattr(adaptation, "adaptation_pairs", lambda s, *a, **k: (seen.append(np.array(s)), real(s, *a, **k))[1])
    SuperResolver(RunOptions(scale=2, adapt_iterations=2, device="cpu"))(textured_block(n))
    held, trained = seen[0], seen[1:]
    for t in trained:  # a partition: every voxel of the scan is either held out or trained on, never both
        assert t.size + held.size == np.prod(textured_block(n).GetSize())


def test_held_out_score_is_of_the_projected_output(monkeypatch):
    from fagan_engine.inference import adaptation
    from fagan_engine.inference.resolver import SuperResolver
    from fagan_engine.util.options import RunOptions

    calls = []
    real = adaptation.project_onto_data
    monkeypatch.setattr(adaptation, "project_onto_data", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    SuperResolver(RunOptions(scale=2, adapt_iterations=1, device="cpu"))(textured_block())
    assert len(calls) >= 2  # start score and the step's score
