"""fagan-sr wiring of the trust features (sr_result.super_resolve_report): maps written beside the
output and published with it or not at all, warnings as lines/events, the JSON report, batch
report columns. A stand-in ``fagan_engine.sr_result`` speaking the agreed API is used when the real
module is absent, so the CLI side is tested either way."""
from __future__ import annotations

import csv
import importlib.machinery
import json
import sys
import types
from pathlib import Path
from typing import Any, List

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_test_series import oblique_image
from fagan_engine.cli.sr import build_parser, main
from fagan_engine.protocol import parse_line

BICUBIC = ["--scale", "2", "--method", "bicubic"]


class StandInResult:
    def __init__(self, image: sitk.Image, sr: sitk.Image, sheared_map: bool) -> None:
        self.image = sr
        self.consistency = sitk.Image(sr)
        if sheared_map:
            self.consistency.SetDirection((1, 0, 0, 0.3, 1, 0, 0, 0, 1))
        self.consistency_lr = sitk.Image(image)
        self.uncertainty = None
        self.summary = {"consistency_rmse": 0.5, "consistency_max": 2.0}
        self.warnings = ["the result disagrees with the input in 3% of voxels"]
        self.identity = {"engine": "test"}

    def report(self) -> dict:
        return {"summary": self.summary, "warnings": self.warnings, "identity": self.identity}


@pytest.fixture
def trust(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The real sr_result if present, else a stand-in module (flags appear only when it exists)."""
    state = types.SimpleNamespace(sheared_map=False, calls=0)
    try:
        import fagan_engine.sr_result  # noqa: F401

        state.real = True
        return state
    except ImportError:
        state.real = False

    def super_resolve_report(image, options, resolver=None, progress=None, consistency=True, uncertainty=None):
        state.calls += 1
        return StandInResult(image, resolver(image, progress), state.sheared_map)

    module = types.ModuleType("fagan_engine.sr_result")
    module.__spec__ = importlib.machinery.ModuleSpec("fagan_engine.sr_result", None)
    module.super_resolve_report = super_resolve_report
    monkeypatch.setitem(sys.modules, "fagan_engine.sr_result", module)
    return state


def run(argv: List[object], capsys: pytest.CaptureFixture) -> "tuple[int, str, str]":
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_trust_flags_are_offered_and_maps_are_published_with_the_output(trust: Any, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    flags = {o for a in build_parser()._actions for o in a.option_strings}
    assert {"--consistency-map", "--consistency-map-lr", "--uncertainty-map", "--enforce-consistency", "--report"} <= flags
    source = tmp_path / "in.nrrd"
    sitk.WriteImage(oblique_image(), str(source))
    out, cmap = tmp_path / "sr.nrrd", tmp_path / "maps" / "c.nrrd"
    (tmp_path / "maps").mkdir()
    code, _, err = run([source, out, *BICUBIC, "--consistency-map", cmap, "--consistency-map-lr", "--report", tmp_path / "t.json",
                        "--progress", "none"], capsys)
    assert code == 0, err
    assert sitk.ReadImage(str(cmap)).GetSize() == sitk.ReadImage(str(out)).GetSize() == (32, 24, 4)
    assert (tmp_path / "sr_consistency_lr.nrrd").is_file()
    report = json.loads((tmp_path / "t.json").read_text())
    assert "summary" in report
    if not trust.real:
        assert [line for line in err.splitlines() if line.startswith("warning: ")] == ["warning: the result disagrees with the input in 3% of voxels"]


@pytest.mark.parametrize("stage", ["writing the map", "publishing the output"])
def test_a_failing_write_leaves_no_output(trust: Any, tmp_path: Path, capsys: pytest.CaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    import fagan_engine.case as case
    from fagan_engine.errors import OutputError

    if stage == "writing the map":
        original = case.write_volume

        def failing_write(image, path, *args, **kwargs):
            if "c.nrrd" in str(path):
                raise OutputError(f"no space left on device while writing {path}")
            return original(image, path, *args, **kwargs)

        monkeypatch.setattr(case, "write_volume", failing_write)
    else:
        published = case.publish_files

        def failing_publish(moves, force, target):
            if str(target).endswith("sr.nrrd"):
                raise OutputError(f"output {target} already exists (created meanwhile); pass --force to overwrite it")
            return published(moves, force, target)

        monkeypatch.setattr(case, "publish_files", failing_publish)
    source = tmp_path / "in.nrrd"
    sitk.WriteImage(oblique_image(), str(source))
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run([source, tmp_path / "sr.nrrd", *BICUBIC, "--consistency-map", tmp_path / "c.nrrd", "--progress", "none"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert ".tmp-" not in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before, f"{stage}: something was left"


def test_batch_writes_maps_beside_outputs_and_summary_columns(trust: Any, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for n in range(2):
        sitk.WriteImage(oblique_image(seed=n), str(source / f"v{n}.nii.gz"))
    out = tmp_path / "out"
    code, stdout, err = run([source, "--output-dir", out, *BICUBIC, "--consistency-map", "--progress", "json"], capsys)
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["batch-report.csv", "v0.nii.gz", "v0_consistency.nii.gz", "v1.nii.gz", "v1_consistency.nii.gz"]
    with open(out / "batch-report.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not trust.real:
        assert rows[0]["consistency_rmse"] == "0.5" and "3% of voxels" in rows[0]["warnings"]
        events = [parse_line(line) for line in stdout.splitlines()]
        assert [e for e in events if e["event"] == "warning"] and all(e["summary"] for e in events if e["event"] == "case_end")
    # a map path in batch mode is refused: maps go beside each output
    code, _, err = run([source, "--output-dir", out, *BICUBIC, "--consistency-map", tmp_path / "c.nrrd", "--progress", "none"], capsys)
    assert code == 2 and "takes no PATH" in err


def test_kill_between_map_and_output_is_repaired_by_a_rerun(trust: Any, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "in"
    source.mkdir()
    sitk.WriteImage(oblique_image(), str(source / "v.nrrd"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "v_consistency.nrrd").write_bytes(b"left by a run killed between its map and its output")
    code, _, err = run([source, "--output-dir", out, *BICUBIC, "--consistency-map", "--progress", "none"], capsys)
    assert code == 0, err
    assert sitk.ReadImage(str(out / "v_consistency.nrrd")).GetSize() == (32, 24, 4)
    np.testing.assert_equal(sitk.ReadImage(str(out / "v.nrrd")).GetSize(), (32, 24, 4))
