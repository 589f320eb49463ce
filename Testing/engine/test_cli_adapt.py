"""fagan-sr --adapt N reaches RunOptions.adapt_iterations in one-volume and batch (manifest column) form."""
from __future__ import annotations

from pathlib import Path

import pytest
import SimpleITK as sitk
from dicom_test_series import oblique_image
from engine_helpers import save_untrained_checkpoint

from fagan_engine.cli.sr import build_parser, main
from fagan_engine.util.protocol import parse_line


def test_adapt_flag_reaches_the_options_and_a_batch_row(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert "--adapt" in {o for a in build_parser()._actions for o in a.option_strings}
    checkpoint = save_untrained_checkpoint(tmp_path / "tiny.safetensors", 2)
    sitk.WriteImage(oblique_image(size=(48, 48, 3)), str(tmp_path / "v.nrrd"))  # large enough to hold out pairs
    code = main([str(tmp_path / "v.nrrd"), str(tmp_path / "sr.nrrd"), "--scale", "2", "--checkpoint", str(checkpoint),
                 "--adapt", "1", "--progress", "json"])
    events = [parse_line(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and events[0]["options"]["adapt_iterations"] == 1 and (tmp_path / "sr.nrrd").is_file()
    manifest = tmp_path / "m.csv"
    manifest.write_text("input,output,adapt_iterations\nv.nrrd,out/a1.nrrd,1\nv.nrrd,out/b.nrrd,bicubic-not-a-number\n")
    code = main(["--manifest", str(manifest), "--scale", "2", "--checkpoint", str(checkpoint), "--progress", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: manifest {manifest} line 3: adapt_iterations must be an integer, got 'bicubic-not-a-number'"]
    manifest.write_text("input,output,adapt_iterations\nv.nrrd,out/a1.nrrd,1\n")
    assert main(["--manifest", str(manifest), "--scale", "2", "--checkpoint", str(checkpoint), "--progress", "none"]) == 0
    assert (tmp_path / "out" / "a1.nrrd").is_file()
