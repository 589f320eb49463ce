"""fagan-sr --stacks A B [C] OUTPUT: one run end to end, and every bad input of issue #17 as one error line, exit 2, nothing written."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np
import pytest
import SimpleITK as sitk

from fagan_engine.cli.sr import main
from fagan_engine.through_plane.stack_simulation import orientation, phantom, simulate_stack
from fagan_engine.util.protocol import parse_line


def _write_stacks(folder: Path, seed: int = 0, planes=("axial", "coronal")) -> List[str]:
    volume = phantom(32, seed=seed)
    paths = []
    for plane in planes:
        path = folder / f"{plane}{seed}.nrrd"
        sitk.WriteImage(simulate_stack(volume, orientation(plane), 4.0, 4.0, sitk.Euler3DTransform()), str(path))
        paths.append(str(path))
    return paths


def test_stacks_run_writes_the_volume_and_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    inputs = _write_stacks(tmp_path, planes=("axial", "coronal", "sagittal"))
    output, report = tmp_path / "iso.nrrd", tmp_path / "iso.json"
    assert main(["--stacks", *inputs, str(output), "--report", str(report), "--progress", "bar"]) == 0
    image = sitk.ReadImage(str(output))
    assert image.GetSpacing() == pytest.approx((1.0, 1.0, 1.0)) and image.GetDirection() == sitk.ReadImage(inputs[0]).GetDirection()
    saved = json.loads(report.read_text())
    assert [s["slices"] for s in saved["stacks"]] == [8, 8, 8] and saved["reference"] == 0
    err = capsys.readouterr().err
    assert "stack 3:" in err and f"wrote {output}" in err


def test_stacks_json_protocol(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    inputs = _write_stacks(tmp_path)
    output = tmp_path / "iso.nii.gz"
    assert main(["--stacks", *inputs, str(output), "--progress", "json"]) == 0
    events = [e for e in (parse_line(line) for line in capsys.readouterr().out.splitlines()) if e is not None]
    assert events[0]["event"] == "start" and events[0]["inputs"] == inputs and events[0]["options"]["mode"] == "stacks"
    assert {e.get("phase") for e in events if e["event"] == "progress"} == {"register", "reconstruct"}
    assert events[-1]["event"] == "finished" and len(events[-1]["summary"]["stacks"]) == 2 and output.is_file()


def _bad_inputs(tmp_path: Path) -> List[List[str]]:
    first, second = _write_stacks(tmp_path)
    other = _write_stacks(tmp_path, seed=1)[1]
    four_d = tmp_path / "four.nii.gz"
    sitk.WriteImage(sitk.Image([16, 16, 8, 3], sitk.sitkFloat32), str(four_d))
    far = sitk.ReadImage(second)
    far.SetOrigin(tuple(np.asarray(far.GetOrigin()) + 400.0))
    far_path = tmp_path / "far.nrrd"
    sitk.WriteImage(far, str(far_path))
    return [
        [first],  # a single stack
        [first, other],  # different subjects
        [first, str(four_d)],  # a 4D stack
        [first, str(far_path)],  # no overlap
        [first, second, "--target-spacing", "3"],  # coarser than the input's
        [first, second, "--scale", "2"],
        [first, second, "--consistency-map"],
    ]


def test_bad_input_is_one_error_line_exit_2_and_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "out" / "iso.nrrd"
    output.parent.mkdir()
    for case in _bad_inputs(tmp_path):
        paths = [a for a in case if not a.startswith("--") and not a.replace(".", "").isdigit()]
        flags = case[len(paths):]
        assert main(["--stacks", *paths, str(output), *flags, "--progress", "none"]) == 2, case
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), (case, err)
        assert list(output.parent.iterdir()) == [], case


def test_an_output_that_is_any_input_is_refused_even_with_force(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first, second = _write_stacks(tmp_path)
    before = Path(second).read_bytes()
    assert main(["--stacks", first, second, second, "--force", "--progress", "none"]) == 2
    assert capsys.readouterr().err.startswith("error: ") and Path(second).read_bytes() == before
