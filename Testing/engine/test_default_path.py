"""The default path of fagan-sr and super_resolve: projection onto the data, per-scan adaptation, every option honoured,
one write path, and the resolved device in the protocol."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fagan_engine.cli.sr import main
from fagan_engine.pipeline.report import super_resolve, super_resolve_report
from fagan_engine.trust.consistency import redegrade
from fagan_engine.util.errors import InputError
from fagan_engine.util.options import RunOptions
from fagan_engine.util.protocol import parse_line


def _volume(slices: int = 3, side: int = 32) -> sitk.Image:
    rng = np.random.default_rng(1)
    array = np.zeros((slices, side, side), np.float32)
    array[:, 6:side - 6, 5:side - 5] = 40 + 30 * rng.random((slices, side - 12, side - 10))
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 3.0))
    return image


@pytest.mark.parametrize("acquisition", ["kspace", "bicubic"])
def test_super_resolve_projects_onto_the_data_by_default_and_the_opt_out_takes_effect(acquisition: str) -> None:
    image = _volume()
    data = sitk.GetArrayFromImage(image)
    default = super_resolve(image, 2, acquisition=acquisition, adapt_iterations=0, device="cpu", plane="axial")
    plain = super_resolve(image, 2, acquisition=acquisition, adapt_iterations=0, enforce_consistency=False, device="cpu", plane="axial")
    range_ = float(data.max())
    assert np.abs(redegrade(default, image, 2, (0, 1), acquisition) - data).max() < 1e-3 * range_
    assert np.abs(redegrade(plain, image, 2, (0, 1), acquisition) - data).max() > 1e-2 * range_


def test_super_resolve_refuses_the_uncertainty_map_it_cannot_return() -> None:
    with pytest.raises(InputError, match="super_resolve_report"):
        super_resolve(_volume(), 2, uncertainty=True, device="cpu")


def test_the_report_maps_what_the_projection_removed_and_records_adaptation() -> None:
    image = _volume(slices=4, side=48)
    result = super_resolve_report(image, RunOptions(scale=2, device="cpu", plane="axial", adapt_iterations=20))
    residual = sitk.GetArrayFromImage(result.consistency_lr)
    assert np.abs(residual).max() > 0  # the network's disagreement with the data, not the ~0 of the projected image
    assert result.summary["relative_rms_residual"] > 1e-4
    adaptation = result.identity["adaptation"]
    assert adaptation["steps"] <= 20 and adaptation["held_out_mse_best"] <= adaptation["held_out_mse_start"]


def test_start_event_names_the_device_and_threads_and_no_compression_writes_raw_data(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sitk.WriteImage(_volume(), str(tmp_path / "v.nrrd"))
    code = main([str(tmp_path / "v.nrrd"), str(tmp_path / "o.nrrd"), "--scale", "2", "--method", "lanczos",
                 "--no-compression", "--progress", "json"])
    events = [parse_line(line) for line in capsys.readouterr().out.splitlines()]
    start = next(e for e in events if e and e["event"] == "start")
    assert code == 0 and start["device"] == "cpu" and start["threads"] >= 1
    header = (tmp_path / "o.nrrd").read_bytes()[:400].decode("latin-1")
    assert "encoding: raw" in header
    assert main([str(tmp_path / "v.nrrd"), str(tmp_path / "c.nrrd"), "--scale", "2", "--method", "lanczos", "--progress", "none"]) == 0
    assert "encoding: gzip" in (tmp_path / "c.nrrd").read_bytes()[:400].decode("latin-1")
