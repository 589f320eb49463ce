"""fagan-sr wiring of the trust features (pipeline.report.super_resolve_report): maps written beside the
output and published with it or not at all, warnings as lines/events, the JSON report, batch
report columns."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import List

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_test_series import oblique_image

from fagan_engine.cli.sr import build_parser, main
from fagan_engine.util.protocol import parse_line

BICUBIC = ["--scale", "2", "--method", "bicubic"]


def run(argv: List[object], capsys: pytest.CaptureFixture) -> "tuple[int, str, str]":
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_trust_flags_are_offered_and_maps_are_published_with_the_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
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
    assert "summary" in report and "research use" in json.dumps(report)


@pytest.mark.parametrize("stage", ["writing the map", "publishing the output"])
def test_a_failing_write_leaves_no_output(tmp_path: Path, capsys: pytest.CaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    import fagan_engine.pipeline.case as case
    from fagan_engine.util.errors import OutputError

    if stage == "writing the map":
        original = case.write_volume

        def failing_write(image, path, *args, **kwargs):
            if "c.nrrd" in str(path):
                raise OutputError(f"no space left on device while writing {path}")
            return original(image, path, *args, **kwargs)

        monkeypatch.setattr(case, "write_volume", failing_write)
        streamed = case.VolumeStreamWriter.write

        def failing_stream(writer, start, slices):  # the SR-grid map is written slab by slab
            if "c.nrrd" in str(writer.path):
                raise OutputError(f"no space left on device while writing {writer.shown}")
            return streamed(writer, start, slices)

        monkeypatch.setattr(case.VolumeStreamWriter, "write", failing_stream)
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


def test_batch_writes_maps_beside_outputs_and_summary_columns(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
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
    assert rows[0]["relative_rms_residual"] and rows[0]["fraction_above_3sigma"]
    events = [parse_line(line) for line in stdout.splitlines()]
    assert all(e["summary"] for e in events if e is not None and e["event"] == "case_end")
    # a map path in batch mode is refused: maps go beside each output
    code, _, err = run([source, "--output-dir", out, *BICUBIC, "--consistency-map", tmp_path / "c.nrrd", "--progress", "none"], capsys)
    assert code == 2 and "takes no PATH" in err


def test_kill_between_map_and_output_is_repaired_by_a_rerun(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
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
