"""Issue #20, batch and trust-report paths: the report never overwrites an input or an existing file,
is checked before any work, a manifest must be a bounded regular file with no NUL bytes, a manifest
row never writes its own input, two batches never share a report, and --report PATH.json follows
--force. A resumed batch's report keeps the rows of the cases an earlier run did."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import SimpleITK as sitk

from fagan_engine.cli.batch_cli import batch_lock
from fagan_engine.cli.sr import main
from fagan_engine.pipeline.batch import MAX_MANIFEST_BYTES, Case
from fagan_engine.pipeline.batch_runner import BatchEvents, BatchRunner
from fagan_engine.util.options import RunOptions

BICUBIC = ["--scale", "2", "--method", "bicubic", "--progress", "none"]


def run(argv: List[object], capsys: pytest.CaptureFixture) -> Tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def volumes(folder: Path, count: int = 2) -> List[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"v{index}.nii"
        sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(index).random((3, 12, 12)).astype(np.float32)), str(path))
        paths.append(path)
    return paths


def manifest(folder: Path, rows: List[Tuple[str, str]], name: str = "cases.csv") -> Path:
    path = folder / name
    path.write_text("input,output\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return path


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def refused(code: int, err: str, fragment: str) -> None:
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err


@pytest.mark.parametrize("target", ["input", "output", "manifest", "existing"])
def test_batch_report_never_overwrites_an_input_an_output_the_manifest_or_a_file(tmp_path, capsys, target):
    a, b = volumes(tmp_path)
    (tmp_path / "existing.csv").write_text("precious\n")
    cases = manifest(tmp_path, [(a.name, "out.nrrd")])
    report = {"input": a, "output": tmp_path / "out.nrrd", "manifest": cases, "existing": tmp_path / "existing.csv"}[target]
    before = snapshot(tmp_path)
    code, err = run(["--manifest", cases, "--report", report, *BICUBIC], capsys)
    refused(code, err, str(report.name))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("parent", ["a-file", "read-only"])
def test_unwritable_batch_report_is_refused_before_any_case_runs(tmp_path, capsys, parent):
    (a,) = volumes(tmp_path, 1)
    cases = manifest(tmp_path, [(a.name, "out.nrrd")])
    if parent == "a-file":
        report = a / "r.csv"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who may write anywhere (root)")
        report = locked / "r.csv"
    code, err = run(["--manifest", cases, "--report", report, *BICUBIC], capsys)
    refused(code, err, "")
    assert not (tmp_path / "out.nrrd").exists()


def test_rerun_updates_its_own_report_and_force_replaces_another_file(tmp_path, capsys):
    (a,) = volumes(tmp_path, 1)
    cases = manifest(tmp_path, [(a.name, "out.nrrd")])
    report = tmp_path / "r.csv"
    assert run(["--manifest", cases, "--report", report, *BICUBIC], capsys)[0] == 0
    first = report.read_text()
    assert run(["--manifest", cases, "--report", report, *BICUBIC], capsys)[0] == 0  # a resume updates its own report
    assert report.read_text() == first  # the case done earlier keeps its row
    other = tmp_path / "notes.csv"
    other.write_text("notes\n")
    assert run(["--manifest", cases, "--report", other, "--force", *BICUBIC], capsys)[0] == 0
    assert other.read_text().startswith("input,output,status")


def test_manifest_row_writing_its_own_input_is_refused(tmp_path, capsys):
    (a,) = volumes(tmp_path, 1)
    before = snapshot(tmp_path)
    code, err = run(["--manifest", manifest(tmp_path, [(a.name, a.name)]), "--force", *BICUBIC], capsys)
    refused(code, err, "would replace the input")
    assert snapshot(tmp_path) == {**before, "cases.csv": (tmp_path / "cases.csv").read_bytes()}


def test_manifest_output_that_is_another_rows_input_is_refused(tmp_path, capsys):
    a, b = volumes(tmp_path)
    code, err = run(["--manifest", manifest(tmp_path, [(a.name, "x.nrrd"), (b.name, a.name)]), "--force", *BICUBIC], capsys)
    refused(code, err, "would replace the input")


def test_manifest_on_a_fifo_is_refused_without_hanging(tmp_path, capsys):
    fifo = tmp_path / "cases.csv"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "fagan_engine", "sr", "--manifest", str(fifo), *BICUBIC],
                          capture_output=True, text=True, timeout=30)  # a hang fails here
    refused(proc.returncode, proc.stderr, "not a regular file")


def test_manifest_beyond_the_size_bound_is_refused(tmp_path, capsys):
    big = tmp_path / "cases.csv"
    with open(big, "wb") as handle:
        handle.write(b"input,output\n")
        handle.truncate(MAX_MANIFEST_BYTES + 1)
    refused(*run(["--manifest", big, *BICUBIC], capsys), "at most")


@pytest.mark.parametrize("column", ["input", "output"])
def test_nul_byte_in_a_manifest_path_is_one_line(tmp_path, capsys, column):
    (a,) = volumes(tmp_path, 1)
    row = (a.name + "\0x", "o.nrrd") if column == "input" else (a.name, "o\0.nrrd")
    refused(*run(["--manifest", manifest(tmp_path, [row]), *BICUBIC], capsys), "NUL byte")


def test_second_batch_on_one_report_is_refused_and_keeps_the_first_report(tmp_path, capsys):
    volumes(tmp_path / "in")
    out = tmp_path / "out"
    with batch_lock(str(out / "batch-report.csv")):
        code, err = run([tmp_path / "in", "--output-dir", out, *BICUBIC], capsys)
        refused(code, err, f"is in use by process {os.getpid()}")
        assert not (out / "v0.nii").exists() and not (out / "batch-report.csv").exists()
    assert run([tmp_path / "in", "--output-dir", out, *BICUBIC], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["batch-report.csv", "v0.nii", "v1.nii"]


def test_case_finished_meanwhile_by_another_process_is_skipped_not_failed(tmp_path):
    (a,) = volumes(tmp_path / "in", 1)
    output = tmp_path / "out" / "v0.nii"
    output.parent.mkdir()

    class Rival(BatchEvents):
        def case_start(self, index, total, case):  # another batch publishes this case first
            output.write_bytes(a.read_bytes())

    case = Case(str(a), str(output), RunOptions(scale=2, method="bicubic"), key="v0.nii")
    records = BatchRunner([case], events=Rival()).run()
    assert records[0].status == "skipped" and "meanwhile" in records[0].error


@pytest.mark.parametrize("force", [False, True])
def test_trust_report_path_follows_force_and_names_itself(tmp_path, capsys, force):
    (a,) = volumes(tmp_path, 1)
    report = tmp_path / "r.json"
    report.write_text("{}\n")
    code, err = run([a, tmp_path / "o.nrrd", "--report", report, *(["--force"] if force else []), *BICUBIC], capsys)
    if force:
        assert code == 0, err
        assert report.read_text().startswith("{\n")
        assert len(report.read_text()) > 10
    else:
        refused(code, err, "report")
        assert "DICOM" not in err and report.read_text() == "{}\n"


def test_dicom_output_folder_named_like_the_report_is_one_line(tmp_path, capsys):
    (a,) = volumes(tmp_path, 1)
    code, err = run([a, f"{tmp_path / 'r.json'}/", "--output-format", "dicom", "--report", tmp_path / "r.json", *BICUBIC], capsys)
    refused(code, err, "same path")
    assert not (tmp_path / "r.json").exists()


def test_uncertainty_map_with_through_plane_is_refused_before_any_work(tmp_path, capsys):
    (a,) = volumes(tmp_path, 1)
    code, err = run([a, tmp_path / "o.nii", "--through-plane", "--uncertainty-map", "--progress", "none"], capsys)
    refused(code, err, "uncertainty")
    assert list(p.name for p in tmp_path.iterdir()) == ["v0.nii"]


def test_a_name_taken_meanwhile_is_reported_by_its_target_not_the_staging_file(tmp_path):
    from fagan_engine.util.atomic import publish_files
    from fagan_engine.util.errors import OutputError

    staged, target = tmp_path / ".out.tmp-1-x", tmp_path / "out.nii"
    staged.write_bytes(b"new")
    target.write_bytes(b"theirs")
    with pytest.raises(OutputError, match="output .*out.nii already exists") as excinfo:
        publish_files([(staged, target)], False, target)
    assert ".tmp-" not in str(excinfo.value) and target.read_bytes() == b"theirs"


def test_a_library_error_while_unwinding_from_an_interrupt_stops_the_batch(tmp_path, monkeypatch):
    from fagan_engine.pipeline import batch_runner

    inputs = volumes(tmp_path / "in")

    def interrupted(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("trying to pop from empty mode stack")  # what torch raised on its way out

    monkeypatch.setattr(batch_runner, "super_resolve_case", interrupted)
    cases = [Case(str(p), str(tmp_path / f"o{i}.nrrd"), RunOptions(scale=2, method="bicubic"), key=str(i)) for i, p in enumerate(inputs)]
    runner = BatchRunner(cases, report_path=str(tmp_path / "r.csv"))
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    assert [r.status for r in runner.records] == ["not run", "not run"]


def test_report_inside_the_dicom_output_folder_is_refused_before_any_work(tmp_path, capsys):
    (a,) = volumes(tmp_path, 1)
    (tmp_path / "series").mkdir()
    code, err = run([a, tmp_path / "series", "--output-format", "dicom", "--report", tmp_path / "series" / "r.json", *BICUBIC], capsys)
    refused(code, err, "inside the DICOM output folder")
    assert list((tmp_path / "series").iterdir()) == []


def test_manifest_output_with_an_unknown_extension_is_refused(tmp_path, capsys):
    """``out.txt`` would have become a DICOM series folder of that name; ``series.v2/`` is one on purpose."""
    (a,) = volumes(tmp_path, 1)
    code, err = run(["--manifest", manifest(tmp_path, [(a.name, "out.txt")]), *BICUBIC], capsys)
    refused(code, err, "line 2: output out.txt: .txt is not a volume format")
    assert not (tmp_path / "out.txt").exists()
    assert run(["--manifest", manifest(tmp_path, [(a.name, "series.v2/")]), *BICUBIC], capsys)[0] == 0
    assert (tmp_path / "series.v2").is_dir()


class StopAt(BatchEvents):
    """Ctrl-C as the case ``index`` starts."""

    def __init__(self, index: int) -> None:
        self.index = index

    def case_start(self, index, total, case):
        if index == self.index:
            raise KeyboardInterrupt


def report_rows(path: Path) -> List[dict]:
    if path.suffix == ".json":
        return json.loads(path.read_text())["cases"]
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_a_resumed_batch_keeps_the_rows_of_the_cases_done_before_the_interrupt(tmp_path, suffix):
    inputs = volumes(tmp_path / "in", 3)
    cases = [Case(str(p), str(tmp_path / "out" / p.name), RunOptions(scale=2, method="bicubic"), key=p.name) for p in inputs]
    report = tmp_path / f"r{suffix}"
    with pytest.raises(KeyboardInterrupt):
        BatchRunner(cases, events=StopAt(2), report_path=str(report)).run()
    first = report_rows(report)
    assert [row["status"] for row in first] == ["done", "done", "not run"]
    assert first[0]["seconds"] and first[0]["summary" if suffix == ".json" else "noise_sigma"]  # figures to keep
    records = BatchRunner(cases, report_path=str(report)).run()
    assert [record.status for record in records] == ["skipped", "skipped", "done"]  # this run (the summary line)
    rows = report_rows(report)
    assert rows[:2] == first[:2] and rows[2]["status"] == "done"
    if suffix == ".json":
        assert json.loads(report.read_text())["totals"]["done"] == 3


EARLIER = ("input,output,status,seconds,warnings,error,checkpoint,noise_sigma\n"
           "{a},{out},done,1.5,first | second,,tiny.safetensors,0.25{extra}\n")


@pytest.mark.parametrize("damage", ["none", "cells", "seconds", "json"])
def test_a_rerun_keeps_an_earlier_row_whole_or_does_not_trust_a_damaged_report(tmp_path, damage):
    (a,) = volumes(tmp_path / "in", 1)
    output = tmp_path / "out.nii"
    output.write_bytes(a.read_bytes())
    report = tmp_path / ("r.json" if damage == "json" else "r.csv")
    text = EARLIER.format(a=a, out=output, extra=",1" if damage == "cells" else "")
    if damage == "seconds":
        text = text.replace(",1.5,", ",soon,")
    if damage == "json":
        text = '{\n  "totals": {}, "cases": [{"input": "%s", "output": "%s", "status": "done"}]}\n' % (a, output)
    report.write_text(text)
    BatchRunner([Case(str(a), str(output), RunOptions(scale=2, method="bicubic"), key="v0")], report_path=str(report)).run()
    if damage == "none":
        assert report.read_text() == text
    else:
        assert [row["status"] for row in report_rows(report)] == ["skipped"]


def test_a_batch_puts_back_a_dicom_series_left_aside_by_kill_9(tmp_path):
    """A ``--force`` run killed between moving the old series aside and renaming the new one in: the rerun finds the
    old series back in place (and skips the case) instead of redoing it beside a hidden copy."""
    (a,) = volumes(tmp_path / "in", 1)
    series = tmp_path / "out" / "v0"
    case = Case(str(a), str(series), RunOptions(scale=2, method="bicubic"), key="v0")
    assert BatchRunner([case]).run()[0].status == "done"
    old = snapshot(series)
    aside = tmp_path / "out" / ".v0.old-99999999-abc123"
    aside.mkdir()
    os.replace(series, aside / "v0")
    assert BatchRunner([case]).run()[0].status == "skipped"
    assert snapshot(series) == old and not aside.exists()


def test_two_detached_headers_that_would_share_a_data_file_are_refused_before_any_work(tmp_path: Path, capsys) -> None:
    """o.nhdr and o.mhd both write o.raw: the streamed map silently replaced the result (exit 0); in a batch one case's
    voxels replaced another's under its header."""
    first, second = volumes(tmp_path)
    code, err = run([first, tmp_path / "o.nhdr", "--scale", "2", "--method", "bicubic", "--consistency-map", tmp_path / "o.mhd",
                     "--no-compression", "--progress", "none"], capsys)
    assert code == 2 and err.startswith("error: outputs ") and "would both write the data file" in err
    assert not list(tmp_path.glob("o.*"))
    rows = manifest(tmp_path, [(str(first), "a.nhdr"), (str(second), "a.mhd")])
    code, err = run(["--manifest", rows, "--scale", "2", "--method", "bicubic", "--no-compression", "--progress", "none"], capsys)
    assert code == 2 and "would both write the data file" in err and not list(tmp_path.glob("a.*"))
    # compressed (the default) they write o.raw.gz and o.zraw: both are made
    code, err = run([first, tmp_path / "o.nhdr", "--scale", "2", "--method", "bicubic", "--consistency-map", tmp_path / "o.mhd",
                     "--progress", "none"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("o.*")) == ["o.mhd", "o.nhdr", "o.raw.gz", "o.zraw"]
