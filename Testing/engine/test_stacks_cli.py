"""fagan-sr --stacks A B [C] OUTPUT: one run end to end, and every bad input of issue #17 as one error line, exit 2, nothing written."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import SimpleITK as sitk

from fagan_engine.cli.sr import main
from fagan_engine.io.geometry import direction_matrix
from fagan_engine.through_plane.stack_geometry import corners
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
    # who made it, as the one-volume report says (the --stacks report had neither)
    assert saved["notice"] == "research use, not for diagnosis" and saved["engine_version"] and saved["inputs"] == [str(p) for p in inputs]
    err = capsys.readouterr().err
    assert "stack 3:" in err and f"wrote {output}" in err


def test_stacks_json_protocol(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    inputs = _write_stacks(tmp_path)
    output = tmp_path / "iso.nii.gz"
    assert main(["--stacks", *inputs, str(output), "--progress", "json"]) == 0
    events = [e for e in (parse_line(line) for line in capsys.readouterr().out.splitlines()) if e is not None]
    assert events[0]["event"] == "start" and events[0]["inputs"] == inputs and events[0]["options"]["mode"] == "stacks"
    assert events[0]["device"] == "cpu" and events[0]["threads"] >= 1  # as sr's start event
    assert {e.get("phase") for e in events if e["event"] == "progress"} == {"register", "reconstruct"}
    assert events[-1]["event"] == "finished" and len(events[-1]["summary"]["stacks"]) == 2 and output.is_file()


def _bad_inputs(tmp_path: Path) -> List[Tuple[List[str], List[str]]]:
    """(stacks, flags) of every refused run."""
    first, second = _write_stacks(tmp_path)
    other = _write_stacks(tmp_path, seed=1)[1]
    four_d = tmp_path / "four.nii.gz"
    sitk.WriteImage(sitk.Image([16, 16, 8, 3], sitk.sitkFloat32), str(four_d))
    far = sitk.ReadImage(second)
    far.SetOrigin(tuple(np.asarray(far.GetOrigin()) + 400.0))
    far_path = tmp_path / "far.nrrd"
    sitk.WriteImage(far, str(far_path))
    coronal = sitk.ReadImage(second)
    thin_path, edge_path = tmp_path / "thin.nrrd", tmp_path / "edge.nrrd"
    sitk.WriteImage(coronal[:, :, 2:5], str(thin_path))  # 3 slices: ITK's smoothing raised a multi-line traceback, exit 1
    edge = sitk.Image(coronal)
    edge.SetOrigin(tuple(np.asarray(coronal.GetOrigin()) + np.asarray(coronal.GetDirection()).reshape(3, 3)[:, 2] * 29.0))
    sitk.WriteImage(edge, str(edge_path))  # a sliver of overlap: "All samples map outside moving image buffer", exit 1
    iso_path = tmp_path / "iso.nrrd"
    sitk.WriteImage(simulate_stack(phantom(32), orientation("coronal"), 1.0, 1.0, sitk.Euler3DTransform()), str(iso_path))
    return [
        ([first, str(iso_path)], ["--iterations", "0"]),  # no thick slices for the prior: it advised "use --scale"
        ([first, second], ["--dicom-gaps", "resample"]),  # every stack a file: the gap policy cannot act (it was ignored)
        ([first, str(thin_path)], []),
        ([first, str(edge_path)], []),
        ([first], []),  # a single stack
        ([first, first], []),  # one stack given twice: the same volume
        ([first, second], ["--target-spacing", "1e-300"]),  # finer than anything the stacks resolve (was "do not overlap")
        ([first, second], ["--slice-thickness", "100"]),  # far beyond the slice spacing, as for one stack
        ([first, other], []),  # different subjects
        ([first, str(four_d)], []),  # a 4D stack
        ([first, str(far_path)], []),  # no overlap
        ([first, second], ["--target-spacing", "3"]),  # coarser than the input's
        ([first, second], ["--scale", "2"]),
        ([first, second], ["--uncertainty-map"]),
        ([first, second], ["--consistency-map", str(tmp_path / "map.nrrd")]),  # one map per stack: no PATH
        ([first, second], ["--reference", "0"]),
        ([first, second], ["--reference", "3"]),
        ([first, second], ["--reference", "coronal"]),
        # options of one volume that --stacks does not use: refused, not silently dropped
        ([first, second], ["--method", "lanczos"]),
        ([first, second], ["--adapt", "5"]),
        ([first, second], ["--dtype", "int16"]),
        ([first, second], ["--no-enforce-consistency"]),
        ([first, second], ["--checkpoint", first]),
        ([first, second], ["--ensemble", "2"]),  # the prior's self-ensemble: without the prior (--iterations) it has none
        ([first, second], ["--device", "cuda"]),  # the prior's device: the least squares run on the CPU
        ([first, second], ["--iterations", "0", "--ensemble", "8"]),  # through-plane flips only
        ([first, second], ["--shard", "1/2"]),  # batch options
        ([first, second], ["--prefetch"]),
    ]


def test_bad_input_is_one_error_line_exit_2_and_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "out" / "iso.nrrd"
    output.parent.mkdir()
    for paths, flags in _bad_inputs(tmp_path):
        assert main(["--stacks", *paths, str(output), *flags, "--progress", "none"]) == 2, (paths, flags)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), (paths, flags, err)
        assert list(output.parent.iterdir()) == [], (paths, flags)


def test_the_prior_runs_the_self_ensemble_asked_for_and_the_report_says_so(tmp_path: Path) -> None:
    inputs = _write_stacks(tmp_path)
    results = {}
    for ensemble in ("1", "2"):
        output, report = tmp_path / f"iso{ensemble}.nrrd", tmp_path / f"iso{ensemble}.json"
        flags = ["--iterations", "0", "--ensemble", ensemble, "--device", "cpu", "--report", str(report), "--progress", "none"]
        assert main(["--stacks", *inputs, str(output), *flags]) == 0
        assert json.loads(report.read_text())["network_ensemble"] == int(ensemble)
        results[ensemble] = sitk.GetArrayFromImage(sitk.ReadImage(str(output)))
    assert not np.allclose(results["1"], results["2"], atol=1e-6)  # the bundled network is not flip-equivariant


def test_an_output_that_is_any_input_is_refused_even_with_force(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first, second = _write_stacks(tmp_path)
    before = Path(second).read_bytes()
    assert main(["--stacks", first, second, second, "--force", "--progress", "none"]) == 2
    assert capsys.readouterr().err.startswith("error: ") and Path(second).read_bytes() == before


def _oblique_stacks(folder: Path) -> List[str]:
    """Axial, coronal and sagittal 4 mm stacks, each tilted differently (so no two share a direction)."""
    volume = phantom(40, seed=2)
    paths = []
    for plane, tilt in (("axial", 20.0), ("coronal", -15.0), ("sagittal", 10.0)):
        path = folder / f"{plane}.nrrd"
        sitk.WriteImage(simulate_stack(volume, orientation(plane, tilt), 4.0, 4.0, sitk.Euler3DTransform()), str(path))
        paths.append(str(path))
    return paths


def _inside(image: sitk.Image, stack: sitk.Image) -> bool:
    """Every outer voxel corner of ``image`` lies inside ``stack``'s voxel box."""
    local = (corners(image) - np.asarray(stack.GetOrigin())) @ direction_matrix(stack) / np.asarray(stack.GetSpacing())
    return bool(np.all(local >= -0.5 - 1e-6) and np.all(local <= np.asarray(stack.GetSize()) - 0.5 + 1e-6))


def test_reference_gives_the_output_that_stacks_orientation_and_maps_lie_on_each_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    inputs = _oblique_stacks(tmp_path)
    output, report = tmp_path / "iso.nrrd", tmp_path / "iso.json"
    argv = ["--stacks", *inputs, str(output), "--reference", "2", "--consistency-map", "--report", str(report)]
    assert main(argv + ["--progress", "json", "--no-compression"]) == 0
    events = [e for e in (parse_line(line) for line in capsys.readouterr().out.splitlines()) if e is not None]
    assert events[0]["options"]["reference"] == 2 and events[0]["input"] == inputs[1]
    image, stacks = sitk.ReadImage(str(output)), [sitk.ReadImage(path) for path in inputs]
    np.testing.assert_allclose(direction_matrix(image), direction_matrix(stacks[1]), atol=1e-9)
    assert not np.allclose(direction_matrix(image), direction_matrix(stacks[0]), atol=1e-3)
    assert image.GetSpacing() == pytest.approx((1.0, 1.0, 1.0)) and all(_inside(image, stack) for stack in stacks)
    lattice = np.linalg.solve(direction_matrix(stacks[1]), np.asarray(image.GetOrigin()) - np.asarray(stacks[1].GetOrigin()))
    np.testing.assert_allclose(lattice[:2], np.round(lattice[:2]), atol=1e-6)  # on the reference's in-plane voxels
    saved = json.loads(report.read_text())
    assert saved["reference"] == 1 and saved["stacks"][1]["rotation_degrees"] == 0.0
    assert events[-1]["maps"] == [str(tmp_path / f"iso_consistency_stack{k}.nrrd") for k in (1, 2, 3)]
    for path, stack in zip(events[-1]["maps"], stacks):
        consistency = sitk.ReadImage(path)
        assert consistency.GetSize() == stack.GetSize() and consistency.GetOrigin() == pytest.approx(stack.GetOrigin())
        assert consistency.GetDirection() == pytest.approx(stack.GetDirection())


@pytest.mark.parametrize("name", ["iso", "iso.txt"])
def test_an_output_that_is_no_volume_file_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture, name: str) -> None:
    """--stacks writes one volume file: a folder name (a DICOM series elsewhere) or an unknown extension is refused
    before registration, not after the reconstruction."""
    inputs = _write_stacks(tmp_path)
    assert main(["--stacks", *inputs, str(tmp_path / name), "--progress", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and not (tmp_path / name).exists(), err


def test_a_map_nifti_cannot_hold_is_refused_before_the_reconstruction_and_nothing_is_written(tmp_path: Path, capsys) -> None:
    """A sheared stack's consistency map cannot be NIfTI: the run used to write the first map, reconstruct, then fail."""
    first, second = _write_stacks(tmp_path)
    sheared = sitk.ReadImage(second)
    sheared.SetDirection(tuple((np.array(sheared.GetDirection()).reshape(3, 3) @ np.array([[1, 0.2, 0], [0, 1, 0], [0, 0, 1]])).ravel()))
    sheared_path = tmp_path / "sheared.nrrd"
    sitk.WriteImage(sheared, str(sheared_path))
    out = tmp_path / "out"
    out.mkdir()
    assert main(["--stacks", first, str(sheared_path), str(out / "iso.nii.gz"), "--consistency-map", "--progress", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sheared" in err[0] and list(out.iterdir()) == [], err


def test_running_out_of_memory_gives_the_stacks_advice(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    """It advised --batch-size or --tile-size, which --stacks refuses."""
    from fagan_engine.through_plane import stacks

    def exhausted(*args, **named):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(stacks, "reconstruct_stacks", exhausted)
    inputs = _write_stacks(tmp_path)
    assert main(["--stacks", *inputs, str(tmp_path / "iso.nrrd"), "--progress", "none"]) == 2
    assert capsys.readouterr().err.strip() == ("error: out of memory: the combined volume does not fit; choose a larger "
                                               "--target-spacing or crop the stacks")
    assert not (tmp_path / "iso.nrrd").exists()
    monkeypatch.undo()  # while writing the result, too (it gave the in-plane advice)
    from fagan_engine.pipeline import case

    def full(*args, **named):
        raise MemoryError()

    monkeypatch.setattr(case, "write_volume", full)  # the stacks' outputs are published as one set (pipeline.case)
    assert main(["--stacks", *inputs, str(tmp_path / "iso.nrrd"), "--progress", "none"]) == 2
    assert "the combined volume does not fit" in capsys.readouterr().err


def test_the_maps_report_and_output_are_one_set(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    """A full disk at the output left both consistency maps (a rerun was then refused: they exist), and a report that
    could not be written came after the output and maps. All of them are published together, or none."""
    from fagan_engine.pipeline import case
    from fagan_engine.util.errors import OutputError

    inputs = _write_stacks(tmp_path)
    written = case.write_volume

    def full_at_the_output(image, path, **named):
        if Path(path).name == "iso.nii":
            raise OutputError(f"no space left on device while writing {path}")
        return written(image, path, **named)

    monkeypatch.setattr(case, "write_volume", full_at_the_output)
    argv = ["--stacks", *inputs, str(tmp_path / "iso.nii"), "--consistency-map", "--report", str(tmp_path / "r.json"),
            "--progress", "none"]
    assert main(argv) == 2 and capsys.readouterr().err.startswith("error: no space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(Path(p).name for p in inputs)
