"""fagan-sr --through-plane wiring: flags -> RunOptions(mode="through-plane", ...), fit/inference
phases on the bar and in protocol events, batch and DICOM output (``iso <spacing> mm``)."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import SimpleITK as sitk

from fagan_engine.cli.sr import build_parser, main
from fagan_engine.models.checkpoint import LOW_RATIO_THROUGH_PLANE_WEIGHTS, THROUGH_PLANE_WEIGHTS
from fagan_engine.through_plane.run import super_resolve_through_plane
from fagan_engine.util.protocol import parse_line


def thick_volume(seed: int = 0) -> sitk.Image:
    image = sitk.GetImageFromArray(np.random.default_rng(seed).random((5, 24, 20)).astype(np.float32) * 100)
    image.SetSpacing((1.0, 1.0, 3.0))
    return image


def call_progress(progress, done, total, phase, loss):
    """Report a phase where the callback takes one (the CLI's does; pipeline.report's shares do not)."""
    try:
        progress(done, total, phase=phase, loss=loss)
    except TypeError:
        progress(done, total)


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> List[Dict[str, Any]]:
    """Replace the fit by linear resampling to the target spacing, recording each call's arguments."""
    import fagan_engine.pipeline.report as report

    calls: List[Dict[str, Any]] = []

    def fake(image, options, progress=None, stop=None, project=None, on_fit=None, plan=None, on_note=None):
        from fagan_engine.through_plane.plan import output_geometry

        target_spacing, slice_thickness, iterations, device = (
            options.target_spacing, options.slice_thickness, options.fit_iterations, options.device)
        calls.append(dict(target_spacing=target_spacing, slice_thickness=slice_thickness, iterations=iterations, device=device))
        assert (plan.target_spacing, plan.thickness) == (target_spacing or plan.target_spacing, slice_thickness or plan.thickness)
        for done in (1, 2):
            call_progress(progress, done, 2, "fit", 0.5 / done)
        geometry = output_geometry(image, plan)
        reference = geometry.apply(sitk.Image(list(geometry.size), sitk.sitkFloat32))
        out = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear)
        call_progress(progress, 1, 1, "inference", None)
        return out

    monkeypatch.setattr(report, "through_plane_from_options", fake)  # where the pipeline calls it
    return calls


def test_flags_reach_the_fit_and_phases_reach_the_protocol(stand_in: List[Dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    flags = {o for a in build_parser()._actions for o in a.option_strings}
    assert {"--through-plane", "--target-spacing", "--slice-thickness", "--iterations"} <= flags
    source = tmp_path / "thick.nrrd"
    sitk.WriteImage(thick_volume(), str(source))
    out = tmp_path / "iso.nrrd"
    code = main([str(source), str(out), "--through-plane", "--target-spacing", "1.5", "--slice-thickness", "3.5", "--iterations", "7",
                 "--device", "cpu", "--progress", "json"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert stand_in == [dict(target_spacing=1.5, slice_thickness=3.5, iterations=7, device="cpu")]
    events = [parse_line(line) for line in stdout.splitlines()]
    assert events[0]["options"]["mode"] == "through-plane"
    phases = [(e.get("phase"), e.get("loss")) for e in events if e["event"] == "progress"]
    assert phases == [("fit", 0.5), ("fit", 0.25), ("inference", None)]
    # the phase's own fraction restarts at inference; the run's fills the fit's 60 % first and never goes back
    fractions = [(e["fraction"], e["run_fraction"]) for e in events if e["event"] == "progress"]
    assert fractions == [(0.5, 0.3), (1.0, 0.6), (1.0, 1.0)]
    assert sitk.ReadImage(str(out)).GetSpacing()[2] == pytest.approx(1.5)


def test_through_plane_batch_to_dicom_says_iso(stand_in: List[Dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pydicom = pytest.importorskip("pydicom")
    source = tmp_path / "in"
    source.mkdir()
    sitk.WriteImage(thick_volume(), str(source / "a.nrrd"))
    code = main([str(source), "--output-dir", str(tmp_path / "out"), "--through-plane", "--target-spacing", "1",
                 "--output-format", "dicom", "--progress", "none"])
    assert code == 0, capsys.readouterr().err
    first = pydicom.dcmread(str(sorted((tmp_path / "out" / "a").iterdir())[0]))
    assert first.SeriesDescription == "FA-GAN SR iso 1 mm" and "through-plane super-resolution to iso 1 mm voxels" in first.DerivationDescription
    assert LOW_RATIO_THROUGH_PLANE_WEIGHTS.name in first.DerivationDescription  # the start that ran (3 mm to 1 mm), not "untrained"


def test_dicom_texts_name_the_voxels_the_result_has() -> None:
    """--target-spacing 2.9 gave a 1x1x2.571 mm series described as "iso 2.9 mm"."""
    from fagan_engine.io.dicom_writer import series_description

    assert series_description("T1 thick", "through-plane", "fagan", 2, (1.0, 1.0, 18 / 7)) == "T1 thick FA-GAN SR 1x1x2.571 mm"
    assert series_description(None, "through-plane", "fagan", 2, (0.9, 0.9, 0.9)) == "FA-GAN SR iso 0.9 mm"
    assert series_description(None, "in-plane", "lanczos", 4, (0.5, 0.5, 3.0)) == "lanczos SR x4"
    assert series_description("T1", "in-plane", "fagan", 2, untrained=True) == "T1 UNTRAINED FA-GAN SR x2"  # random weights


def test_scale_is_not_needed_and_the_real_fit_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "thick.nrrd"
    sitk.WriteImage(thick_volume(), str(source))
    code = main([str(source), str(tmp_path / "iso.nrrd"), "--through-plane", "--iterations", "1", "--device", "cpu", "--progress", "none",
                 "--report", str(tmp_path / "report.json")])
    assert code == 0, capsys.readouterr().err
    assert sitk.ReadImage(str(tmp_path / "iso.nrrd")).GetSpacing()[2] == pytest.approx(1.0)
    who = json.loads((tmp_path / "report.json").read_text())["identity"]
    fitted = who["through_plane_fit"]  # the held-out guard's record
    assert fitted["steps"] == 1 and fitted["best_step"] in (0, 1) and fitted["held_out_best"] <= fitted["held_out_start"]
    # the plan the maps and the projection assumed (the report gave no thickness, source or output spacing)
    plan = who["through_plane_plan"]
    assert plan["thickness_source"] in ("spacing", "estimate", "dicom") and plan["output_spacing"] == pytest.approx(1.0)
    assert plan["description"].startswith("axis 2: ") and who["projection"] is True


def test_an_unclear_thickness_estimate_that_differs_from_the_spacing_is_said() -> None:
    """2 mm slices 6 mm apart: the estimate (3 mm) was not clear, the run assumed 6 mm, and nothing said so."""
    from fagan_engine.through_plane.plan import ThroughPlanePlan

    common = dict(axis=2, n_in=10, n_out=30, input_spacing=6.0, output_spacing=2.0, thickness=6.0, thickness_source="spacing")
    note = ThroughPlanePlan(**common, estimated_thickness=3.0).thickness_note()
    assert note is not None and "6 mm slice spacing" in note and "3 mm" in note and "--slice-thickness" in note
    assert "9 mm" in ThroughPlanePlan(**common, estimated_thickness=9.0).thickness_note()  # an overlap is said the same way
    assert ThroughPlanePlan(**common, estimated_thickness=5.8).thickness_note() is None
    assert ThroughPlanePlan(**common).thickness_note() is None
    assert ThroughPlanePlan(**dict(common, thickness=2.0, thickness_source="argument"), estimated_thickness=3.0).thickness_note() is None


@pytest.mark.parametrize("slice_spacing, bundled", [(2.0, LOW_RATIO_THROUGH_PLANE_WEIGHTS), (3.0, LOW_RATIO_THROUGH_PLANE_WEIGHTS),
                                                    (4.0, THROUGH_PLANE_WEIGHTS)])
def test_each_slice_ratio_gets_its_bundled_start_and_the_report_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture, slice_spacing: float, bundled: Path
) -> None:
    image = thick_volume()
    image.SetSpacing((1.0, 1.0, slice_spacing))
    sitk.WriteImage(image, str(tmp_path / "thick.nrrd"))
    code = main([str(tmp_path / "thick.nrrd"), str(tmp_path / "iso.nrrd"), "--through-plane", "--iterations", "0", "--device", "cpu",
                 "--progress", "none", "--report", str(tmp_path / "report.json")])
    assert code == 0, capsys.readouterr().err
    named = json.loads((tmp_path / "report.json").read_text())["identity"]["checkpoint"]
    assert named["name"] == bundled.name and named["sha256"] == hashlib.sha256(bundled.read_bytes()).hexdigest()
    by_path = super_resolve_through_plane(image, iterations=0, device="cpu", weights=bundled)
    the_other_start = LOW_RATIO_THROUGH_PLANE_WEIGHTS if bundled == THROUGH_PLANE_WEIGHTS else THROUGH_PLANE_WEIGHTS
    other = super_resolve_through_plane(image, iterations=0, device="cpu", weights=the_other_start)
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "iso.nrrd")))
    np.testing.assert_allclose(written, sitk.GetArrayFromImage(by_path), rtol=1e-5, atol=1e-4)
    assert np.abs(written - sitk.GetArrayFromImage(other)).max() > 1e-3  # the two starts differ, so the check above can fail


def test_a_batch_records_the_start_each_case_used(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "in").mkdir()
    for name, thick in (("a", 2.0), ("b", 4.0)):
        image = thick_volume()
        image.SetSpacing((1.0, 1.0, thick))
        if name == "b":  # a DICOM Slice Thickness in the header: the engine uses it, and the batch says so per case
            image.SetMetaData("0018|0050", "3")
        sitk.WriteImage(image, str(tmp_path / "in" / f"{name}.nrrd"))
    code = main([str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"), "--through-plane", "--iterations", "0", "--device", "cpu",
                 "--progress", "json", "--report", str(tmp_path / "batch.csv")])
    out = capsys.readouterr().out
    assert code == 0
    ends = [event for event in map(parse_line, out.splitlines()) if event and event["event"] == "case_end"]
    assert [event["checkpoint"]["name"] for event in ends] == [LOW_RATIO_THROUGH_PLANE_WEIGHTS.name, THROUGH_PLANE_WEIGHTS.name]
    assert [event["checkpoint"]["sha256"] for event in ends] == [hashlib.sha256(p.read_bytes()).hexdigest()
                                                                 for p in (LOW_RATIO_THROUGH_PLANE_WEIGHTS, THROUGH_PLANE_WEIGHTS)]
    with open(tmp_path / "batch.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["checkpoint"] for row in rows] == [LOW_RATIO_THROUGH_PLANE_WEIGHTS.name, THROUGH_PLANE_WEIGHTS.name]
    plans = [event["through_plane"]["through_plane_plan"] for event in ends]
    assert [(plan["thickness"], plan["thickness_source"]) for plan in plans] == [(2.0, "spacing"), (3.0, "dicom")]


def test_sigterm_during_the_fit_leaves_nothing(tmp_path: Path) -> None:
    """Cancel (SIGTERM, as the Slicer module sends) during the through-plane fit: exit 143, no output."""
    import signal
    import subprocess
    import sys

    source = tmp_path / "thick.nrrd"
    sitk.WriteImage(thick_volume(), str(source))
    out = tmp_path / "out" / "iso.nrrd"
    out.parent.mkdir()
    command = [sys.executable, "-m", "fagan_engine", "sr", str(source), str(out), "--through-plane", "--iterations", "100000",
               "--device", "cpu", "--progress", "json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        event = parse_line(line)
        if event is not None and event["event"] == "progress" and event.get("phase") == "fit":
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and err.strip().splitlines()[-1] == "error: terminated", err
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize(
    "flags",
    [["--scale", "4"], ["--checkpoint", "x.safetensors"], ["--acquisition", "bicubic"], ["--plane", "axial"],
     ["--backend", "onnx"], ["--tile-size", "64"], ["--untrained"], ["--ensemble", "8"]],
)
def test_in_plane_options_are_refused_not_dropped(flags: List[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "thick.nrrd"
    sitk.WriteImage(thick_volume(), str(source))
    assert main([str(source), str(tmp_path / "iso.nrrd"), "--through-plane", *flags, "--progress", "none"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and flags[0] in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thick.nrrd"]


def test_batch_size_caps_the_slices_per_network_call() -> None:
    from fagan_engine.through_plane.fit import load_weights
    from fagan_engine.through_plane.plan import plan_through_plane
    from fagan_engine.through_plane.run import apply_through_plane

    image = thick_volume()
    volume = sitk.GetArrayFromImage(image) / 100
    model, _ = load_weights()
    sizes: List[int] = []
    model.register_forward_hook(lambda module, inputs, output: sizes.append(inputs[0].shape[0]))
    plan = plan_through_plane(image)
    default = apply_through_plane(model, volume, plan)
    assert max(sizes) > 3
    sizes.clear()
    capped = apply_through_plane(model, volume, plan, batch_size=3)
    assert max(sizes) == 3 and np.allclose(capped, default, atol=1e-4)  # float32 summation order only


def test_run_fraction_gives_the_first_phase_its_share_and_never_goes_back() -> None:
    """An in-plane run with per-scan adaptation (stopped early at 40 of 100 steps), then 4 slices of inference; a run
    without a first phase is inference alone."""
    from fagan_engine.util.progress import RunFraction

    run = RunFraction()
    seen = [run.update(done, 100, "adapt") for done in (20, 40)] + [run.update(done, 4, "inference") for done in (1, 2, 4)]
    assert seen == pytest.approx([0.06, 0.12, 0.3 + 0.7 / 4, 0.3 + 0.7 / 2, 1.0])
    plain = RunFraction()
    assert [plain.update(done, 2, "inference") for done in (1, 2)] == [0.5, 1.0]
    assert plain.update(0, 0, "inference") == 1.0  # a report without a total never moves it back


def test_a_matrix_too_small_for_the_slice_ratio_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """0.5 mm pixels under 6 mm slices: finer in-plane, but 20 pixels hold no pair of 24-pixel slices (it was called
    "no in-plane axis is finer than the slices")."""
    image = sitk.GetImageFromArray(np.random.default_rng(0).random((10, 20, 20)).astype(np.float32))
    image.SetSpacing((0.5, 0.5, 6.0))
    source = tmp_path / "thin.nrrd"
    sitk.WriteImage(image, str(source))
    assert main([str(source), str(tmp_path / "iso.nrrd"), "--through-plane", "--iterations", "2", "--progress", "none"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "smaller than two slice spacings (24 pixels at 0.5 mm)" in err[0], err
    assert not (tmp_path / "iso.nrrd").exists()
