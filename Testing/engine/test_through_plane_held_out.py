"""The per-scan through-plane fit's held-out guard: split, projected score, early stop, never worse than the start."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fagan_engine.mri.forward_model import apply_along_axis
from fagan_engine.through_plane import fit as fit_module
from fagan_engine.through_plane.fit import Direction, FitConfig, PairSampler, build_model, fit
from fagan_engine.through_plane.held_out import HOLD_OUT_EVERY, HeldOutPairs, split_held_out

CFG = FitConfig(iterations=6, batch_size=2, lr_rows=4, patch_cols=16, lr=1e-3)


def _directions(n: int = 9) -> list:
    images = np.random.default_rng(0).random((n, 24, 20)).astype(np.float32)
    return [Direction(images, 3.0, 3.0, 0.0), Direction(np.ascontiguousarray(images.swapaxes(1, 2)), 2.5, 2.5, 0.0)]


def test_every_fourth_slice_is_held_out_in_both_directions() -> None:
    directions = _directions(9)
    training, held = split_held_out(directions)
    assert [d.images.shape[0] for d in training] == [7, 7] and [d.images.shape[0] for d in held] == [2, 2]
    assert np.array_equal(held[0].images, directions[0].images[[3, 7]])
    assert np.array_equal(held[1].images, directions[1].images[[3, 7]])
    assert not any(np.array_equal(t, directions[0].images[3]) for t in training[0].images)


def test_too_few_slices_hold_nothing_out() -> None:
    training, held = split_held_out(_directions(HOLD_OUT_EVERY - 1))
    assert held == [] and training[0].images.shape[0] == HOLD_OUT_EVERY - 1


class _Perfect(torch.nn.Module):
    """Returns the held-out targets it was given (to check the score), whatever its input."""

    def __init__(self, targets: list) -> None:
        super().__init__()
        self.targets = iter(targets)

    def forward(self, lr: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(next(self.targets))[:, None]


def test_score_is_the_projected_error_of_the_windows() -> None:
    held = split_held_out(_directions(8))[1]
    pairs = HeldOutPairs(held, CFG)
    assert pairs.score(_Perfect([target for _, _, target, _ in pairs.pairs])) == pytest.approx(0.0, abs=1e-10)
    for lr, _, target, profile in pairs.pairs:
        assert np.allclose(apply_along_axis(target, profile, 1), lr[:, 0], atol=1e-5)  # pairs follow the slice profile
    # the B-spline base, projected, is better than the base itself and worse than the truth
    base_error = np.mean(np.concatenate([((b[:, 0] - t) ** 2).ravel() for _, b, t, _ in pairs.pairs]))
    projected = pairs.score(_Perfect([b[:, 0] for _, b, _, _ in pairs.pairs]))
    assert 0 < projected < base_error


def test_fit_keeps_the_start_when_no_check_improves(monkeypatch) -> None:
    monkeypatch.setattr(fit_module, "CHECK_EVERY", 2)
    training, held = split_held_out(_directions())
    torch.manual_seed(0)
    model = build_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    scores = iter([1.0, 2.0, 3.0, 4.0])
    outcome = fit(model, PairSampler(training, CFG, np.random.default_rng(0)), CFG, held_out=lambda m: next(scores))
    assert (outcome.steps, outcome.best_step, outcome.stopped) == (4, 0, "no improvement")  # patience 2 checks
    assert outcome.held_out_best == outcome.held_out_start == 1.0
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items()) and not model.training


def test_fit_returns_the_best_checked_weights(monkeypatch) -> None:
    monkeypatch.setattr(fit_module, "CHECK_EVERY", 2)
    training, held = split_held_out(_directions())
    model = build_model()
    kept = {}

    def score(m) -> float:
        value = [5.0, 1.0, 3.0, 2.0][len(kept)]
        kept[len(kept)] = {k: v.clone() for k, v in m.state_dict().items()}
        return value

    outcome = fit(model, PairSampler(training, CFG, np.random.default_rng(0)), CFG, held_out=score)
    assert (outcome.steps, outcome.best_step, outcome.held_out_best, outcome.stopped) == (6, 2, 1.0, "iterations")
    assert all(torch.equal(kept[1][k], v) for k, v in model.state_dict().items())


def test_a_diverging_fit_keeps_its_best_weights_and_pretraining_says_so_in_one_line() -> None:
    """A loss that is not finite raised FloatingPointError: a traceback from fagan-pretrain (and from a per-scan fit)."""
    import SimpleITK as sitk

    from fagan_engine.through_plane.run import super_resolve_through_plane
    from fagan_engine.util.errors import ConfigError

    training, held = split_held_out(_directions())
    wild = FitConfig(iterations=6, batch_size=2, lr_rows=4, patch_cols=16, lr=1e30)
    torch.manual_seed(0)
    model = build_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    outcome = fit(model, PairSampler(training, wild, np.random.default_rng(0)), wild, held_out=HeldOutPairs(held, wild).score)
    assert outcome.stopped == "diverged" and outcome.best_step == 0
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="diverged .* lower fit.lr"):
        fit(build_model(), PairSampler(training, wild, np.random.default_rng(0)), wild)
    image = sitk.GetImageFromArray(np.random.default_rng(0).random((8, 24, 20)).astype(np.float32) * 100)
    image.SetSpacing((1.0, 1.0, 3.0))
    notes = []
    super_resolve_through_plane(image, iterations=6, device="cpu", fit_config=wild, on_note=notes.append)
    assert len(notes) == 1 and "the per-scan fit diverged" in notes[0] and "bundled start network" in notes[0]


def test_a_real_fit_scores_its_held_out_pairs() -> None:
    training, held = split_held_out(_directions())
    pairs = HeldOutPairs(held, CFG)
    outcome = fit(build_model(), PairSampler(training, CFG, np.random.default_rng(0)), CFG, held_out=pairs.score)
    assert outcome.held_out_best <= outcome.held_out_start and outcome.steps == CFG.iterations
    assert set(outcome.summary()) == {"steps", "best_step", "held_out_start", "held_out_best", "stopped"}


def test_a_scan_with_too_few_slices_keeps_the_pretrained_start() -> None:
    import SimpleITK as sitk

    from fagan_engine.through_plane.run import super_resolve_through_plane

    image = sitk.GetImageFromArray(np.random.default_rng(0).random((3, 24, 20)).astype(np.float32) * 100)
    image.SetSpacing((1.0, 1.0, 3.0))
    seen, phases, notes = [], [], []
    fitted = super_resolve_through_plane(image, iterations=5, device="cpu", fit_config=CFG, on_fit=seen.append,
                                         progress=lambda d, t, phase, loss=None: phases.append(phase), on_note=notes.append)
    start = super_resolve_through_plane(image, iterations=0, device="cpu")
    assert [(o.steps, o.stopped) for o in seen] == [(0, "no held-out slices")] and "fit" not in phases
    assert len(notes) == 1 and notes[0].startswith("the per-scan fit did not run")  # the user who asked for 5 steps is told
    assert np.array_equal(sitk.GetArrayFromImage(fitted), sitk.GetArrayFromImage(start))
