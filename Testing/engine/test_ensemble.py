"""Geometric self-ensemble (``RunOptions.ensemble``): its members, its defaults (8 for FA-GAN in-plane from ×4), the
refusals, and the resolver and CLI that take it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from engine_helpers import save_untrained_checkpoint

from fagan_engine.cli.sr import main
from fagan_engine.inference.ensemble import ENSEMBLES, self_ensemble
from fagan_engine.inference.resolver import SuperResolver
from fagan_engine.pipeline.report import identity, super_resolve
from fagan_engine.util.errors import InputError
from fagan_engine.util.options import DEFAULT_THROUGH_PLANE_ENSEMBLE, RunOptions


def nearest(batch: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(batch, 2, axis=2), 2, axis=3)


def corner_biased(batch: np.ndarray) -> np.ndarray:
    """Brightens the top-left 2×2 of its output: every transform carries that to another corner."""
    out = nearest(batch).astype(np.float32)
    out[:, :, :2, :2] += 1.0
    return out


def test_members_are_averaged_and_an_equivariant_runner_is_unchanged() -> None:
    batch = np.random.default_rng(0).random((2, 1, 6, 6)).astype(np.float32)
    assert {len(ENSEMBLES[n]) for n in ENSEMBLES} == {1, 2, 4, 8} and len(set(ENSEMBLES[8])) == 8
    assert self_ensemble(nearest, 1) is nearest
    for members in (2, 4, 8):
        assert np.allclose(self_ensemble(nearest, members)(batch), nearest(batch), atol=1e-6)
    excess = self_ensemble(corner_biased, 8)(batch) - nearest(batch)
    corners = excess[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.allclose(corners, 0.25) and np.allclose(excess[:, :, 3:9, 3:9], 0, atol=1e-6)  # each corner: 2 of 8 members
    mirrored = self_ensemble(corner_biased, 2)(batch) - nearest(batch)
    assert np.allclose(mirrored[:, :, 0, [0, -1]], 0.5) and np.allclose(mirrored[:, :, -1, [0, -1]], 0, atol=1e-6)


def test_defaults_and_refusals() -> None:
    assert [RunOptions(scale=s).ensemble_members for s in (2, 4, 8)] == [1, 8, 8]
    assert RunOptions(scale=4, method="lanczos").ensemble_members == 1
    assert RunOptions(scale=4, mode="through-plane").ensemble_members == DEFAULT_THROUGH_PLANE_ENSEMBLE == 2
    assert RunOptions(mode="through-plane", ensemble=4).validate().ensemble_members == 4
    assert RunOptions(scale=4, ensemble=2).validate().ensemble_members == 2
    assert RunOptions(scale=2, ensemble=4).cli_arguments() == ["--scale", "2", "--ensemble", "4"]
    assert identity(RunOptions(scale=4), None)["self_ensemble"] == 8 and identity(RunOptions(scale=2), None)["self_ensemble"] == 1
    # the projection that ran, resolved like the ensemble (the options keep None for the default)
    assert [identity(RunOptions(method=m), None)["projection"] for m in ("fagan", "lanczos")] == [True, False]
    assert identity(RunOptions(enforce_consistency=False), None)["projection"] is False
    for bad in (dict(ensemble=3), dict(ensemble=2, method="bicubic"), dict(ensemble=8, mode="through-plane")):
        with pytest.raises(InputError):
            RunOptions(**bad).validate()


def test_the_resolver_runs_the_ensemble_the_options_ask_for(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = str(save_untrained_checkpoint(tmp_path / "x4.safetensors", 4))
    common = dict(checkpoint=checkpoint, adapt_iterations=0, enforce_consistency=False, device="cpu", plane="axial")
    batch = np.random.default_rng(2).random((1, 1, 6, 6)).astype(np.float32)
    default = SuperResolver(RunOptions(scale=4, **common).validate())  # 8 members at x4
    assert default.runner is not default.base_runner
    default.use_runner(corner_biased)
    assert np.allclose(default.runner(batch), self_ensemble(corner_biased, 8)(batch))
    single = SuperResolver(RunOptions(scale=4, ensemble=1, **common).validate())
    assert single.runner is single.base_runner
    image = sitk.GetImageFromArray(np.random.default_rng(1).random((2, 12, 10)).astype(np.float32) * 100)
    expected = sitk.GetArrayFromImage(super_resolve(image, 4, ensemble=1, **common))
    source, out = tmp_path / "in.nrrd", tmp_path / "out.nrrd"
    sitk.WriteImage(image, str(source))
    flags = ["--scale", "4", "--checkpoint", checkpoint, "--adapt", "0", "--no-enforce-consistency", "--plane", "axial",
             "--progress", "none", "--device", "cpu"]
    code, captured = main([str(source), str(out), *flags, "--ensemble", "1"]), capsys.readouterr()
    assert code == 0, captured.err
    assert np.allclose(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), expected, atol=1e-5)
    assert main([str(source), str(tmp_path / "bad.nrrd"), *flags, "--ensemble", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and not (tmp_path / "bad.nrrd").exists()
