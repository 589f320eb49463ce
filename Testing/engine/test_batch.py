"""Batch mode of fagan-sr (issue #13 items 1-2): discovery and naming, per-case failures, resume,
report, protocol events, one model per distinct options, manifests, shards, and the bad inputs."""
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
from dicom_test_series import oblique_image, write_mr_series
from engine_helpers import save_untrained_checkpoint

from fagan_engine.cli.sr import main
from fagan_engine.pipeline.batch import parse_shard, select_shard, shard_of
from fagan_engine.util.errors import InputError
from fagan_engine.util.protocol import parse_line

BICUBIC = ["--scale", "2", "--method", "bicubic"]


def run(argv: List[object], capsys: pytest.CaptureFixture) -> Tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def listing(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def make_tree(root: Path) -> Path:
    """in/a.nii.gz, in/sub/b.nrrd, in/sub/deeper/c.mha, in/sub/broken.nii.gz, in/dicom/t1/ (a series), in/notes.txt."""
    (root / "in" / "sub" / "deeper").mkdir(parents=True)
    sitk.WriteImage(oblique_image(seed=1), str(root / "in" / "a.nii.gz"))
    sitk.WriteImage(oblique_image(seed=2), str(root / "in" / "sub" / "b.nrrd"))
    sitk.WriteImage(oblique_image(seed=3), str(root / "in" / "sub" / "deeper" / "c.mha"))
    (root / "in" / "sub" / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip" * 50)
    write_mr_series(oblique_image(seed=4), root / "in" / "dicom" / "t1")
    (root / "in" / "notes.txt").write_text("ignored")
    return root / "in"


def read_report(path: Path) -> List[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_folder_batch_mirrors_names_goes_on_after_a_failure_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = make_tree(tmp_path)
    out = tmp_path / "out"
    code, _, err = run([source, "--output-dir", out, *BICUBIC, "--progress", "none"], capsys)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {source / 'sub' / 'broken.nii.gz'}: ")
    assert "4 done, 0 skipped (output exists), 1 failed" in err
    made = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert made == ["a.nii.gz", "batch-report.csv", "dicom/t1.nrrd", "sub/b.nrrd", "sub/deeper/c.mha"]
    image = sitk.ReadImage(str(out / "dicom" / "t1.nrrd"))
    assert image.GetSize() == (32, 24, 4)
    rows = {Path(r["input"]).name: r for r in read_report(out / "batch-report.csv")}
    assert rows["broken.nii.gz"]["status"] == "failed" and "cannot read" in rows["broken.nii.gz"]["error"]
    assert rows["a.nii.gz"]["status"] == "done" and float(rows["a.nii.gz"]["seconds"]) > 0
    assert list(read_report(out / "batch-report.csv")[0])[:6] == ["input", "output", "status", "seconds", "warnings", "error"]
    # rerun: finished cases are skipped and left untouched; --force redoes them
    before = listing(out / "sub")
    code, _, err = run([source, "--output-dir", out, *BICUBIC, "--progress", "none"], capsys)
    assert code == 2 and "0 done, 4 skipped" in err and listing(out / "sub") == before
    (source / "sub" / "broken.nii.gz").unlink()
    code, _, err = run([source, "--output-dir", out, *BICUBIC, "--progress", "none", "--force", "--report", out / "r.json"], capsys)
    assert code == 0, err
    report = json.loads((out / "r.json").read_text())
    assert report["totals"]["done"] == 4 and {c["status"] for c in report["cases"]} == {"done"}


def test_a_rerun_asking_for_maps_the_outputs_lack_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for seed in range(2):
        sitk.WriteImage(oblique_image(seed=seed), str(source / f"v{seed}.nrrd"))
    out = tmp_path / "out"
    assert run([source, "--output-dir", out, *BICUBIC, "--progress", "none"], capsys)[0] == 0
    code, _, err = run([source, "--output-dir", out, *BICUBIC, "--progress", "none", "--consistency-map"], capsys)
    assert code == 0 and "0 done, 2 skipped" in err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2 and all("without its consistency map" in line and "--force" in line for line in warnings)
    assert all("without its consistency map" in row["error"] for row in read_report(out / "batch-report.csv"))
    code, _, err = run([source, "--output-dir", out, *BICUBIC, "--progress", "none", "--consistency-map", "--force"], capsys)
    assert code == 0 and sorted(p.name for p in out.glob("*_consistency.nrrd")) == ["v0_consistency.nrrd", "v1_consistency.nrrd"]
    code, _, err = run([source, "--output-dir", out, *BICUBIC, "--progress", "none", "--consistency-map"], capsys)
    assert code == 0 and "warning: " not in err and {row["status"] for row in read_report(out / "batch-report.csv")} == {"done"}


@pytest.mark.parametrize("prefetch", [False, True])
def test_what_reading_says_is_each_cases_warning_in_the_lines_and_the_report(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                              prefetch: bool) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for count in (1, 2, 3):
        image = sitk.GetArrayFromImage(oblique_image(seed=count)).astype(np.float32)
        image[0, 0, :count] = np.nan
        sitk.WriteImage(sitk.GetImageFromArray(image), str(source / f"v{count}.nrrd"))
    out = tmp_path / "out"
    code, _, err = run([source, "--output-dir", out, *BICUBIC, "--progress", "none", "--nan-policy", "zero",
                        *(["--prefetch"] if prefetch else [])], capsys)
    assert code == 0, err
    for count in (1, 2, 3):  # one line each, naming its input, not merged into one unnamed line at the end
        assert err.count(f"warning: {source / f'v{count}.nrrd'}: {count} of ") == 1
    assert err.count("warning: ") == 3
    rows = {Path(row["input"]).name: row for row in read_report(out / "batch-report.csv")}
    assert all(rows[f"v{count}.nrrd"]["warnings"].startswith(f"{count} of ") for count in (1, 2, 3))
    code, _, err = run([source / "v2.nrrd", tmp_path / "one.nrrd", *BICUBIC, "--progress", "none", "--nan-policy", "zero",
                        "--report", tmp_path / "one.json"], capsys)
    assert code == 0 and err.count("warning: 2 of ") == 1
    assert json.loads((tmp_path / "one.json").read_text())["warnings"][0].startswith("2 of ")


def test_output_format_and_explicit_inputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = make_tree(tmp_path)
    out = tmp_path / "out"
    inputs = [source / "a.nii.gz", source / "sub" / "b.nrrd", source / "dicom" / "t1"]
    code, _, err = run([*inputs, "--output-dir", out, *BICUBIC, "--output-format", "dicom", "--progress", "none"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "batch-report.csv", "t1"]
    assert len(list((out / "t1").iterdir())) == 4
    code, _, err = run([*inputs, "--output-dir", out / "nii", *BICUBIC, "--output-format", "nifti", "--progress", "none"], capsys)
    assert code == 0 and sorted(p.name for p in (out / "nii").iterdir()) == ["a.nii.gz", "b.nii.gz", "batch-report.csv", "t1.nii.gz"]


def test_dicom_output_of_a_file_named_like_two_formats_is_a_series_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``scan.nrrd.nii.gz`` with --output-format dicom wrote the NRRD file ``scan.nrrd`` (the stem read as a format), exit 0."""
    source = tmp_path / "in"
    source.mkdir()
    sitk.WriteImage(oblique_image(), str(source / "scan.nrrd.nii.gz"))
    out = tmp_path / "out"
    code, _, err = run([source, "--output-dir", out, *BICUBIC, "--output-format", "dicom", "--progress", "none"], capsys)
    assert code == 0, err
    assert (out / "scan.nrrd").is_dir() and len(list((out / "scan.nrrd").iterdir())) == 4
    code, _, err = run([source, "--output-dir", out, *BICUBIC, "--output-format", "dicom", "--progress", "none"], capsys)
    assert code == 0 and "1 skipped" in err  # a rerun finds it done


def test_json_protocol_reports_overall_and_per_case_progress(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for seed in range(3):
        sitk.WriteImage(oblique_image(seed=seed), str(source / f"v{seed}.nrrd"))
    code, out, _ = run([source, "--output-dir", tmp_path / "out", *BICUBIC, "--progress", "json"], capsys)
    assert code == 0
    events = [parse_line(line) for line in out.splitlines()]
    assert all(events)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "batch_start" and kinds[-1] == "finished" and kinds.count("case_start") == kinds.count("case_end") == 3
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and all({"case", "cases", "done", "total", "fraction", "run_fraction", "overall", "phase"} <= set(e) for e in progress)
    overall = [e["overall"] for e in events if "overall" in e]
    assert overall == sorted(overall), "the batch's progress went backwards"
    assert [e["overall"] for e in events if e["event"] == "case_end"] == [pytest.approx(1 / 3, abs=1e-3), pytest.approx(2 / 3, abs=1e-3), 1.0]
    assert events[-1]["done"] == 3 and events[-1]["failed"] == 0


def test_the_model_is_loaded_once_per_distinct_options(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import fagan_engine.inference.resolver as inference

    built = []
    original = inference.SuperResolver.__init__

    def counting(self, options):
        built.append(options.scale)
        original(self, options)

    monkeypatch.setattr(inference.SuperResolver, "__init__", counting)
    checkpoint = save_untrained_checkpoint(tmp_path / "x2.safetensors", 2)
    source = tmp_path / "in"
    source.mkdir()
    rows = ["input,output,scale,method"]
    for seed in range(2):
        sitk.WriteImage(oblique_image(size=(8, 8, 3), seed=seed), str(source / f"v{seed}.nrrd"))
        rows.append(f"in/v{seed}.nrrd,out/v{seed}.nrrd,,")
    rows.append("in/v0.nrrd,out/v0_x4.nrrd,4,bicubic")
    manifest = tmp_path / "cases.csv"
    manifest.write_text("\n".join(rows) + "\n")
    code, _, err = run(["--manifest", manifest, "--scale", 2, "--checkpoint", checkpoint, "--ensemble", 2, "--progress", "none"], capsys)
    assert code == 0, err  # the bicubic row drops the network's options (--checkpoint, --ensemble)
    assert sorted(built) == [2, 4]
    assert sitk.ReadImage(str(tmp_path / "out" / "v0_x4.nrrd")).GetSize() == (32, 32, 3)
    assert (tmp_path / "cases.report.csv").is_file()


def test_manifest_with_series_id_and_relative_paths(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "data" / "two"
    write_mr_series(oblique_image(seed=5), folder, series_uid="1.2.826.0.1.3680043.8.498.201", prefix="a")
    write_mr_series(oblique_image(seed=6), folder, series_uid="1.2.826.0.1.3680043.8.498.202", prefix="b")
    manifest = tmp_path / "data" / "m.csv"
    manifest.write_text("input,output,series_id\ntwo,../out/first.nrrd,1.2.826.0.1.3680043.8.498.201\n")
    code, _, err = run(["--manifest", manifest, *BICUBIC, "--progress", "none"], capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "first.nrrd").is_file()


def test_manifest_checkpoint_cell_is_relative_to_the_manifest(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Like its input and output: it used to be read from the current folder, where a file of the same name would have
    been used without a word."""
    from fagan_engine.pipeline.batch import read_manifest
    from fagan_engine.util.options import RunOptions

    data = tmp_path / "data"
    data.mkdir()
    sitk.WriteImage(oblique_image(seed=7), str(data / "v.nrrd"))
    checkpoint = save_untrained_checkpoint(data / "ck.safetensors", 2)
    manifest = data / "m.csv"
    manifest.write_text("input,output,checkpoint\nv.nrrd,v_sr.nrrd,ck.safetensors\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (case,) = read_manifest(str(manifest), RunOptions(scale=2))
    assert Path(case.options.checkpoint) == checkpoint
    code, _, err = run(["--manifest", manifest, "--scale", "2", "--adapt", "0", "--progress", "none"], capsys)
    assert code == 0, err
    assert (data / "v_sr.nrrd").is_file()


def test_rows_drop_the_command_line_options_they_cannot_use(tmp_path: Path) -> None:
    """A baseline row drops the network's options (the uncertainty map included), a through-plane row the in-plane ones
    (--scale 2 used to pass silently there while --scale 4 was refused); the FA-GAN in-plane rows keep them all."""
    from fagan_engine.pipeline.batch import read_manifest
    from fagan_engine.util.options import RunOptions

    manifest = tmp_path / "m.csv"
    manifest.write_text("input,output,method,mode\na.nrrd,a_sr.nrrd,,\na.nrrd,a_bic.nrrd,bicubic,\na.nrrd,a_iso.nrrd,,through-plane\n")
    for scale in (2, 4):
        command_line = RunOptions(scale=scale, uncertainty=True, ensemble=2, acquisition="bicubic")
        cases = read_manifest(str(manifest), command_line, maps=["uncertainty"])
        network, baseline, through = (case.options for case in cases)
        assert [set(case.maps) for case in cases] == [{"uncertainty"}, set(), set()]
        assert network == command_line
        assert baseline == RunOptions(scale=scale, method="bicubic", acquisition="bicubic")
        assert through == RunOptions(mode="through-plane", ensemble=2)
    with pytest.raises(InputError, match="uncertainty"):
        RunOptions(method="lanczos", uncertainty=True).validate()


def test_no_compression_takes_effect_or_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--no-compression with a .nii.gz output was accepted and wrote gzip anyway: a batch now writes .nii, a named
    .nii.gz output is refused."""
    source = tmp_path / "in"
    source.mkdir()
    sitk.WriteImage(oblique_image(seed=3), str(source / "v.nii.gz"))
    code, _, err = run([source, "--output-dir", tmp_path / "out", *BICUBIC, "--no-compression", "--progress", "none"], capsys)
    assert code == 0, err
    written = tmp_path / "out" / "v.nii"
    assert written.is_file() and written.read_bytes()[:2] != b"\x1f\x8b" and not (tmp_path / "out" / "v.nii.gz").exists()
    code, _, err = run([source / "v.nii.gz", tmp_path / "one.nii.gz", *BICUBIC, "--no-compression", "--progress", "none"], capsys)
    assert code == 2 and err.splitlines() == [err.splitlines()[0]] and "name it .nii" in err and not (tmp_path / "one.nii.gz").exists()


def bad_batches(tmp: Path) -> dict:
    """name -> (argv, fragment of the one error line)."""
    source = make_tree(tmp)
    (tmp / "other").mkdir()
    sitk.WriteImage(oblique_image(seed=9), str(tmp / "other" / "a.nii.gz"))
    no_output = tmp / "no_output.csv"
    no_output.write_text("input,scale\nin/a.nii.gz,2\n")
    bad_value = tmp / "bad_value.csv"
    bad_value.write_text("input,output,scale\nin/a.nii.gz,x.nrrd,two\n")
    unknown = tmp / "unknown.csv"
    unknown.write_text("input,output,colour\nin/a.nii.gz,x.nrrd,red\n")
    duplicate = tmp / "duplicate.csv"
    duplicate.write_text("input,output\nin/a.nii.gz,x.nrrd\nin/sub/b.nrrd,x.nrrd\n")
    cased = tmp / "cased.csv"
    cased.write_text("input,output\nin/a.nii.gz,out/A.nrrd\nin/sub/b.nrrd,out/a.nrrd\n")
    out = tmp / "results"
    return {
        "output dir inside the input dir": ([source, "--output-dir", source / "results", *BICUBIC], "inside the input folder"),
        "two inputs, one output name": ([source / "a.nii.gz", tmp / "other" / "a.nii.gz", "--output-dir", out, *BICUBIC], "both map to"),
        "manifest without an output column": (["--manifest", no_output, *BICUBIC], "no 'output' column"),
        "manifest with a bad value": (["--manifest", bad_value, *BICUBIC], "line 2: scale must be an integer"),
        "manifest with an unknown column": (["--manifest", unknown, *BICUBIC], "unknown column 'colour'"),
        "manifest with a duplicate output": (["--manifest", duplicate, *BICUBIC], "both map to the output"),
        "manifest outputs one in letter case": (["--manifest", cased, *BICUBIC], "differ only in letter case"),
        "missing manifest": (["--manifest", tmp / "nope.csv", *BICUBIC], "manifest not found"),
        "bad shard": ([source, "--output-dir", out, *BICUBIC, "--shard", "3/3"], "0 <= K < N"),
        "inputs and a manifest": ([source, "--manifest", duplicate, *BICUBIC], "not both"),
        "one path, no output dir": ([source / "a.nii.gz", *BICUBIC], "give INPUT and OUTPUT"),
    }


def test_every_bad_batch_gives_one_error_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for name, (argv, fragment) in bad_batches(tmp_path).items():
        before = listing(tmp_path)
        code, _, err = run([*argv, "--progress", "none"], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (name, err)
        assert fragment in lines[0], (name, lines[0])
        assert listing(tmp_path) == before, f"{name} changed files"


def test_a_folder_with_two_series_fails_alone_and_finished_outputs_are_kept(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "in"
    write_mr_series(oblique_image(seed=1), source / "good")
    two = source / "mixed"
    write_mr_series(oblique_image(seed=2), two, series_uid="1.2.826.0.1.3680043.8.498.401", prefix="a")
    write_mr_series(oblique_image(seed=3), two, series_uid="1.2.826.0.1.3680043.8.498.402", prefix="b")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    code, _, err = run([source, "--output-dir", out, *BICUBIC, "--progress", "none"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "holds 2 DICOM series" in errors[0] and str(two) in errors[0]
    assert (out / "good.nrrd").is_file() and not (out / "mixed.nrrd").exists() and (out / "keep.txt").read_text() == "user file"


def test_shard_selection_from_flag_and_environment() -> None:
    assert parse_shard("1/3", {}) == (1, 3)
    assert parse_shard(None, {"RANK": "2", "WORLD_SIZE": "4"}) == (2, 4)
    assert parse_shard(None, {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "3"}) == (1, 3)
    assert parse_shard(None, {}) == (0, 1)
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(InputError):
            parse_shard(bad, {})
    from fagan_engine.pipeline.batch import Case
    from fagan_engine.util.options import RunOptions

    cases = [Case(f"i{n}", f"o{n}", RunOptions(), key=f"o{n}.nrrd") for n in range(60)]
    parts = [select_shard(cases, k, 3) for k in range(3)]
    assert sorted(c.key for part in parts for c in part) == sorted(c.key for c in cases)
    assert all(10 <= len(part) <= 30 for part in parts)
    assert shard_of("o1.nrrd", 3) == shard_of("o1.nrrd", 3)


def test_three_shard_processes_do_every_case_exactly_once(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    rows = ["input,output"]
    for n in range(6):
        sitk.WriteImage(oblique_image(size=(8, 8, 3), seed=n), str(source / f"v{n}.nrrd"))
        rows.append(f"in/v{n}.nrrd,out/v{n}.nrrd")
    manifest = tmp_path / "all.csv"
    manifest.write_text("\n".join(rows) + "\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "fagan_engine", "sr", "--manifest", str(manifest), *BICUBIC, "--progress", "none"],
            env=dict(env, RANK=str(k), WORLD_SIZE="3"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for k in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    done = []
    for k in range(3):
        rows_k = read_report(tmp_path / f"all.report.shard-{k}-of-3.csv")
        done += [Path(r["output"]).name for r in rows_k if r["status"] == "done"]
    assert sorted(done) == sorted(f"v{n}.nrrd" for n in range(6))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(done)
    for n in range(6):
        assert sitk.ReadImage(str(tmp_path / "out" / f"v{n}.nrrd")).GetSize() == (16, 16, 3)


def test_kill_9_mid_batch_leaves_only_complete_outputs_and_a_rerun_finishes(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for n in range(6):
        values = np.random.default_rng(n).random((16, 48, 48)).astype(np.float32)
        sitk.WriteImage(sitk.GetImageFromArray(values), str(source / f"v{n}.nii.gz"))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "fagan_engine", "sr", str(source), "--output-dir", str(out), "--scale", "4",
               "--method", "bicubic", "--progress", "none"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import time

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (out.is_dir() and any(p.suffix == ".gz" for p in out.iterdir())):
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    visible = [p for p in out.iterdir() if not p.name.startswith(".") and p.name != "batch-report.csv"] if out.is_dir() else []
    for path in visible:
        assert sitk.ReadImage(str(path)).GetSize() == (192, 192, 16), path  # complete, never partial
    if (out / "batch-report.csv").exists():  # written after each case: the rows of the cases finished before the kill
        done = {Path(row["output"]).name for row in read_report(out / "batch-report.csv") if row["status"] == "done"}
        assert done <= {p.name for p in visible}
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert f"{6 - len(visible)} done, {len(visible)} skipped" in finished.stderr
    assert sorted(p.name for p in out.iterdir()) == ["batch-report.csv"] + [f"v{n}.nii.gz" for n in range(6)]


def test_sigterm_stops_between_cases_with_a_report(tmp_path: Path) -> None:
    import signal
    import time

    source = tmp_path / "in"
    source.mkdir()
    for n in range(12):  # enough cases that the batch is still running when SIGTERM arrives, even on a loaded machine
        values = np.random.default_rng(n).random((16, 48, 48)).astype(np.float32)
        sitk.WriteImage(sitk.GetImageFromArray(values), str(source / f"v{n}.nii.gz"))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fagan_engine", "sr", str(source), "--output-dir", str(out), "--scale", "4", "--method", "bicubic",
         "--progress", "none"], env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (out.is_dir() and any(p.suffix == ".gz" for p in out.iterdir())):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("the batch finished before SIGTERM arrived")
    assert proc.returncode == 143 and err.strip().splitlines()[-1] == "error: terminated"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "staging left behind"
    statuses = [r["status"] for r in read_report(out / "batch-report.csv")]
    assert "done" in statuses and "not run" in statuses


def test_manifest_uncertainty_cell_writes_or_withholds_the_map() -> None:
    """A row's ``uncertainty`` cell used to compute the eight passes and write no map."""
    import tempfile

    from fagan_engine.pipeline.batch import read_manifest
    from fagan_engine.util.options import RunOptions

    with tempfile.TemporaryDirectory() as folder:
        manifest = Path(folder) / "m.csv"
        manifest.write_text("input,output,uncertainty\na.nrrd,a_sr.nrrd,true\nb.nrrd,b_sr.nrrd,false\nc.nrrd,c_sr.nrrd,\n")
        with_map, without, default = read_manifest(str(manifest), RunOptions(scale=2))
        assert list(with_map.maps) == ["uncertainty"] and with_map.maps["uncertainty"].endswith("a_sr_uncertainty.nrrd")
        assert without.maps == {} and default.maps == {}
        flagged = read_manifest(str(manifest), RunOptions(scale=2, uncertainty=True), maps=["uncertainty"])
        assert [sorted(case.maps) for case in flagged] == [["uncertainty"], [], ["uncertainty"]]


@pytest.mark.parametrize("options, message", [
    ({"method": "bicubic", "tile_size": 16}, "--tile-size is used only by --method fagan"),
    ({"mode": "through-plane", "checkpoint": "x.safetensors"}, "does not use --checkpoint"),
    ({"method": "lanczos", "uncertainty": True}, "not lanczos's"),
    ({"scale": 3}, "scale must be one of"),
])
def test_the_python_batch_api_refuses_options_that_cannot_run(tmp_path: Path, options: dict, message: str) -> None:
    """cases_from_inputs + BatchRunner (docs/batch.md, "From Python") ran these, ignoring the options or failing per case."""
    from fagan_engine.pipeline.batch import cases_from_inputs
    from fagan_engine.util.options import RunOptions

    source = tmp_path / "in"
    source.mkdir()
    sitk.WriteImage(oblique_image(seed=1), str(source / "a.nrrd"))
    with pytest.raises(InputError, match=message):
        cases_from_inputs([str(source)], str(tmp_path / "out"), RunOptions(**options), None)
    assert not (tmp_path / "out").exists()


def test_an_in_plane_row_under_a_through_plane_command_line_needs_its_scale_and_drops_the_thick_slice_flags(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Such a row without a scale ran at x2 (the default) though docs/batch.md asks every in-plane row for one, and
    with one it was refused for --iterations, "add --through-plane", which the command line had."""
    sitk.WriteImage(oblique_image(seed=1), str(tmp_path / "a.nrrd"))
    (tmp_path / "m.csv").write_text("input,output,mode,method\na.nrrd,out/a.nrrd,in-plane,bicubic\n")
    code, _, err = run(["--manifest", tmp_path / "m.csv", "--through-plane", "--progress", "none"], capsys)
    assert code == 2 and err.strip() == "error: manifest " + str(tmp_path / "m.csv") + \
        " line 2: no scale; give --scale or a scale cell in every in-plane row"
    assert not (tmp_path / "out").exists()
    (tmp_path / "m.csv").write_text("input,output,mode,scale,method\na.nrrd,out/a.nrrd,in-plane,4,bicubic\n")
    code, _, err = run(["--manifest", tmp_path / "m.csv", "--through-plane", "--iterations", "0", "--progress", "none"], capsys)
    assert code == 0, err
    assert sitk.ReadImage(str(tmp_path / "out" / "a.nrrd")).GetSize()[:2] == tuple(4 * n for n in oblique_image(seed=1).GetSize()[:2])


# The tests below were added after a mutation audit (2026-12-07): each fails on a plausible bug the suite missed.

def test_an_empty_dicom_output_folder_is_not_done(tmp_path: Path):
    from fagan_engine.pipeline.case import is_done

    (tmp_path / "series").mkdir()
    assert not is_done(str(tmp_path / "series"))
    (tmp_path / "series" / "x.dcm").write_bytes(b"")
    assert is_done(str(tmp_path / "series"))


def test_a_through_plane_row_drops_the_command_lines_in_plane_network_options(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--adapt 5 and --ensemble 8 (in-plane only) refused a through-plane row instead of being dropped for it."""
    thick = oblique_image(seed=1)
    thick.SetSpacing((1.0, 1.0, 4.0))
    sitk.WriteImage(thick, str(tmp_path / "t.nrrd"))
    sitk.WriteImage(oblique_image(seed=2), str(tmp_path / "a.nrrd"))
    (tmp_path / "m.csv").write_text("input,output,mode,fit_iterations,method\n"
                                    "t.nrrd,out/t.nrrd,through-plane,0,\na.nrrd,out/a.nrrd,,,bicubic\n")
    code, _, err = run(["--manifest", tmp_path / "m.csv", "--scale", "2", "--adapt", "5", "--ensemble", "8", "--progress", "none"],
                       capsys)
    assert code == 0, err
    rows = {Path(row["input"]).name: row for row in read_report(tmp_path / "m.report.csv")}
    assert rows["t.nrrd"]["status"] == rows["a.nrrd"]["status"] == "done"


def test_shards_given_one_report_path_each_write_their_own(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--report r.csv with --shard K/N: the second shard replaced the first one's rows (run side by side, one was refused)."""
    source = tmp_path / "in"
    source.mkdir()
    for seed in range(4):
        sitk.WriteImage(oblique_image(seed=seed), str(source / f"v{seed}.nrrd"))
    for shard in ("0/2", "1/2"):
        code, _, err = run([source, "--output-dir", tmp_path / "out", *BICUBIC, "--report", tmp_path / "r.csv", "--shard", shard,
                            "--progress", "none"], capsys)
        assert code == 0, err
    rows = [row for k in (0, 1) for row in read_report(tmp_path / f"r.shard-{k}-of-2.csv")]
    assert sorted(Path(row["input"]).name for row in rows) == [f"v{seed}.nrrd" for seed in range(4)]
    assert not (tmp_path / "r.csv").exists()


def test_a_case_another_batch_finished_meanwhile_keeps_that_batchs_maps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture) -> None:
    """Two batches on one output folder: the one that found the output written meanwhile still replaced the winner's trust
    map (batches may replace maps that a killed run left without their output), so the map described another result."""
    from fagan_engine.pipeline import case as case_module

    source = tmp_path / "in"
    source.mkdir()
    sitk.WriteImage(oblique_image(), str(source / "a.nii.gz"))
    out = tmp_path / "out"
    publish = case_module.StagedOutputs.publish

    def the_other_batch_finishes_first(staged):
        (out / "a_consistency.nii.gz").write_bytes(b"winner's map")
        (out / "a.nii.gz").write_bytes(b"winner's output")
        return publish(staged)

    monkeypatch.setattr(case_module.StagedOutputs, "publish", the_other_batch_finishes_first)
    code, _, err = run([source, "--output-dir", out, *BICUBIC, "--progress", "none", "--consistency-map"], capsys)
    assert code == 0 and "1 skipped" in err
    assert (out / "a_consistency.nii.gz").read_bytes() == b"winner's map" and (out / "a.nii.gz").read_bytes() == b"winner's output"


def test_the_report_is_written_after_every_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """It was written only at the end: a batch killed outright (kill -9, the out-of-memory killer) lost every row."""
    from fagan_engine.pipeline import batch_runner

    source = tmp_path / "in"
    source.mkdir()
    for seed in range(3):
        sitk.WriteImage(oblique_image(seed=seed), str(source / f"v{seed}.nrrd"))
    report = tmp_path / "out" / "batch-report.csv"
    seen: List[List[str]] = []
    run_one = batch_runner.BatchRunner._run_one

    def watching(runner, index, prefetched):
        seen.append([row["status"] for row in read_report(report)] if report.exists() else [])
        return run_one(runner, index, prefetched)

    monkeypatch.setattr(batch_runner.BatchRunner, "_run_one", watching)
    code, _, _ = run([source, "--output-dir", tmp_path / "out", *BICUBIC, "--progress", "none"], capsys)
    assert code == 0
    assert seen == [[], ["done", "not run", "not run"], ["done", "done", "not run"]]


def test_hand_built_cases_get_the_clis_checks(tmp_path: Path) -> None:
    """The Python batch API ran two cases onto one output (the second replaced the first) and wrote a DICOM folder named
    out.txt; force="no" acted as True and redid finished cases."""
    from fagan_engine.pipeline.batch import Case
    from fagan_engine.pipeline.batch_runner import BatchRunner
    from fagan_engine.util.options import RunOptions

    source, other = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    sitk.WriteImage(oblique_image(), str(source))
    sitk.WriteImage(oblique_image(seed=1), str(other))
    options = RunOptions(scale=2, method="bicubic")
    same = [Case(str(source), str(tmp_path / "o.nii.gz"), options, key="a"), Case(str(other), str(tmp_path / "o.nii.gz"), options, key="b")]
    with pytest.raises(InputError, match="o.nii.gz"):
        BatchRunner(same, force=True)
    with pytest.raises(InputError, match=r"\.txt is not a volume format"):
        BatchRunner([Case(str(source), str(tmp_path / "out.txt"), options, key="a")])
    with pytest.raises(InputError, match="force must be True or False, got 'no'"):
        BatchRunner([Case(str(source), str(tmp_path / "o.nii.gz"), options, key="a")], force="no")
    from fagan_engine.io.volume_io import write_volume

    with pytest.raises(InputError, match="force must be True or False"):
        write_volume(sitk.Image(4, 4, 2, sitk.sitkFloat32), str(tmp_path / "w.nii.gz"), force="no")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.nii.gz"]


def test_a_manifest_series_folder_named_like_a_file_keeps_its_slash(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``scan.nrrd/`` in a manifest lost its "/" and became the NRRD file scan.nrrd."""
    sitk.WriteImage(oblique_image(), str(tmp_path / "a.nii.gz"))
    (tmp_path / "m.csv").write_text("input,output\na.nii.gz,scan.nrrd/\n")
    code, _, err = run(["--manifest", tmp_path / "m.csv", *BICUBIC, "--progress", "none"], capsys)
    assert code == 0, err
    assert (tmp_path / "scan.nrrd").is_dir() and len(list((tmp_path / "scan.nrrd").iterdir())) == 4


def test_cases_from_inputs_refuses_misuse_in_one_line(tmp_path: Path) -> None:
    """A str made one case per character, an upper-case format a KeyError, an unknown map kind a map never written."""
    from fagan_engine.pipeline.batch import cases_from_inputs
    from fagan_engine.util.options import RunOptions

    options = RunOptions(scale=2, method="bicubic")
    for inputs, output_format, maps, words in (("scans", None, (), "a list of paths"), (["scans"], "NIFTI", (), "output_format must be"),
                                               (["scans"], None, ["bogus"], "maps are among")):
        with pytest.raises(InputError, match=words):
            cases_from_inputs(inputs, str(tmp_path / "out"), options, output_format, maps)


def test_a_report_temporary_left_by_a_kill_is_removed_by_the_next_batch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The report is written after every case, so a kill -9 can land inside its atomic write: its temporary stayed."""
    import os
    import time

    source = tmp_path / "in"
    source.mkdir()
    sitk.WriteImage(oblique_image(), str(source / "a.nii.gz"))
    out = tmp_path / "out"
    out.mkdir()
    orphan, other = out / ".batch-report.csv.abc123.tmp", out / ".someone-else.csv.xyz.tmp"
    for path in (orphan, other):
        path.write_text("partial")
        os.utime(path, (time.time() - 60, time.time() - 60))
    code, _, _ = run([source, "--output-dir", out, *BICUBIC, "--progress", "none"], capsys)
    assert code == 0 and not orphan.exists() and other.exists()  # only the temporaries of the report it locks
