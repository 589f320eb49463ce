"""Issue #20 items 15-16: through-plane results beyond memory are refused before the fit; a memory
refusal (or any failure after the progress bar began) is one stderr line."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fagan_engine.cli.sr import main
from fagan_engine.inference import memory_check


def thick_slices(tmp_path: Path) -> Path:
    image = sitk.GetImageFromArray((np.random.default_rng(0).random((6, 40, 40)) * 100).astype(np.float32))
    image.SetSpacing((1.0, 1.0, 4.0))
    path = tmp_path / "thick.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


def test_through_plane_result_beyond_memory_is_refused_before_the_fit(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_check, "available_bytes", lambda: 2**28)
    started = time.perf_counter()
    code = main([str(thick_slices(tmp_path)), str(tmp_path / "iso.nii.gz"), "--through-plane", "--target-spacing", "0.2"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: the through-plane result"), err
    assert "--target-spacing" in err and "--batch-size" not in err
    assert time.perf_counter() - started < 20 and not (tmp_path / "iso.nii.gz").exists()


def test_through_plane_memory_check_counts_the_output_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_check, "available_bytes", lambda: 2**30)
    memory_check.check_through_plane_fits(100, (256, 256), 1.0)
    with pytest.raises(memory_check.InputError, match="has 65.5 M voxels"):
        memory_check.check_through_plane_fits(1000, (256, 256), 0.1)


def test_out_of_memory_after_the_bar_began_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from fagan_engine.pipeline import case

    def run_out_of_memory(image, options, resolver, progress, *args):
        progress(1, 6)
        raise MemoryError

    monkeypatch.setattr(case, "run_validated", run_out_of_memory)
    code = main([str(thick_slices(tmp_path)), str(tmp_path / "o.nrrd"), "--scale", "2", "--method", "bicubic", "--progress", "bar"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.splitlines()[-1].startswith("error: out of memory"), repr(err)


def test_through_plane_out_of_memory_advises_the_target_spacing_not_the_batch_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from fagan_engine.pipeline import case

    def run_out_of_memory(*args):
        raise MemoryError

    monkeypatch.setattr(case, "run_validated", run_out_of_memory)
    code = main([str(thick_slices(tmp_path)), str(tmp_path / "iso.nii.gz"), "--through-plane", "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--target-spacing" in err and "--batch-size" not in err, err


def test_memory_refusal_after_a_model_warning_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(memory_check, "available_bytes", lambda: 2**28)
    code = main([str(thick_slices(tmp_path)), str(tmp_path / "o.nii"), "--scale", "2", "--backend", "onnx", "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "GiB of memory" in err, err
    assert not (tmp_path / "o.nii").exists()
