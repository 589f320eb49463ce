"""fagan-sr end to end on a crop of the ICBM152 template, and every bad input from issue #2."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
import SimpleITK as sitk
from engine_helpers import save_untrained_checkpoint

from fagan_engine.cli.sr import main
from fagan_engine.io.geometry import physical_corners
from fagan_engine.util.protocol import parse_line


def run(argv: List[str], capsys: pytest.CaptureFixture) -> "tuple[int, str, str]":
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_end_to_end_on_the_template_crop(icbm_crop_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = save_untrained_checkpoint(tmp_path / "x2.safetensors", 2)
    out = tmp_path / "sr.nrrd"
    code, stdout, err = run([icbm_crop_file, out, "--scale", 2, "--checkpoint", checkpoint, "--progress", "json"], capsys)
    assert code == 0, err
    events = [parse_line(line) for line in stdout.splitlines()]
    assert [e["event"] for e in events][0] == "start" and events[-1]["event"] == "finished"
    assert any(e["event"] == "progress" and e["done"] == e["total"] for e in events)
    source, result = sitk.ReadImage(str(icbm_crop_file)), sitk.ReadImage(str(out))
    assert result.GetSize() == (96, 112, 6)
    assert np.abs(physical_corners(result) - physical_corners(source)).max() < 1e-4


def test_console_script_runs_with_a_progress_bar(icbm_crop_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "bicubic.nii.gz"
    proc = subprocess.run(
        [sys.executable, "-m", "fagan_engine", "sr", str(icbm_crop_file), str(out), "--scale", "4", "--method", "bicubic"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "super-resolving" in proc.stderr and out.is_file()


def _write(path: Path, image: sitk.Image) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def _bad_inputs(tmp: Path, good: Path) -> dict:
    """name -> (argv, expected message fragment)."""
    corrupt = tmp / "corrupt.nii.gz"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4000))
    truncated = tmp / "truncated.nii"
    sitk.WriteImage(sitk.ReadImage(str(good)), str(truncated))
    truncated.write_bytes(truncated.read_bytes()[:-3000])
    four_d = _write(tmp / "4d.nii.gz", sitk.JoinSeries([sitk.Image(8, 8, 4, sitk.sitkFloat32)] * 3))
    rgb = _write(tmp / "rgb.nrrd", sitk.Image([8, 8, 4], sitk.sitkVectorFloat32, 3))
    tiny = _write(tmp / "tiny.nrrd", sitk.Image([3, 3, 4], sitk.sitkFloat32))
    nan_array = np.ones((4, 8, 8), dtype=np.float32)
    nan_array[0, 0, 0] = np.inf
    nan = _write(tmp / "nan.nrrd", sitk.GetImageFromArray(nan_array))
    x2 = save_untrained_checkpoint(tmp / "x2.safetensors", 2)
    pickled = tmp / "model.pth"
    pickled.write_bytes(b"\x80\x04\x95not really a checkpoint")
    tampered = save_untrained_checkpoint(tmp / "tampered.safetensors", 2)
    blob = bytearray(tampered.read_bytes())
    blob[-1] ^= 0xFF
    tampered.write_bytes(bytes(blob))
    locked = tmp / "locked"
    locked.mkdir()
    (tmp / "taken.zraw").write_bytes(b"someone else's data")
    out = tmp / "out.nrrd"
    return {
        "missing file": ([tmp / "nope.nii.gz", out, "--scale", 2, "--method", "bicubic"], "not found"),
        "corrupt file": ([corrupt, out, "--scale", 2, "--method", "bicubic"], "cannot read"),
        "truncated file": ([truncated, out, "--scale", 2, "--method", "bicubic"], "truncated"),
        "4D volume": ([four_d, out, "--scale", 2, "--method", "bicubic"], "4D"),
        "RGB volume": ([rgb, out, "--scale", 2, "--method", "bicubic"], "component"),
        "slice too small": ([tiny, out, "--scale", 2, "--method", "bicubic"], "at least 4x4"),
        "NaN/Inf voxels": ([nan, out, "--scale", 2, "--method", "bicubic"], "non-finite"),
        "unknown scale": ([good, out, "--scale", 3], "invalid choice"),
        "checkpoint for another scale": ([good, out, "--scale", 4, "--checkpoint", x2], "is for x2"),
        "pickled checkpoint": ([good, out, "--scale", 2, "--checkpoint", pickled], "safetensors"),
        "tampered checkpoint": ([good, out, "--scale", 2, "--checkpoint", tampered], "checksum"),
        "output equals input": ([good, good, "--scale", 2, "--method", "bicubic"], "input"),
        "unwritable folder": ([good, tmp / "missing-dir" / "o.nrrd", "--scale", 2, "--method", "bicubic"], "folder"),
        "checkpoint with bicubic": ([good, out, "--scale", 2, "--method", "bicubic", "--checkpoint", tmp / "gone.safetensors"], "checkpoint"),
        "checkpoint with lanczos": ([good, out, "--scale", 2, "--method", "lanczos", "--checkpoint", x2], "checkpoint"),
        "series id for a file": ([good, out, "--scale", 2, "--method", "bicubic", "--series-id", "1.2.3"], "DICOM"),
        "upper-case data file taken": ([good, tmp / "taken.MHD", "--scale", 2, "--method", "bicubic"], "already exists"),
    }


def test_every_bad_input_gives_one_error_line_and_no_output(icbm_crop_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = tmp_path / "good.nii.gz"
    good.write_bytes(icbm_crop_file.read_bytes())
    before = good.read_bytes()
    for name, (argv, fragment) in _bad_inputs(tmp_path, good).items():
        listing = sorted(p.name for p in tmp_path.rglob("*"))
        code, _, err = run(argv, capsys)
        assert code == 2, name
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
        assert fragment.lower() in lines[0].lower(), (name, lines[0])
        assert sorted(p.name for p in tmp_path.rglob("*")) == listing, f"{name} left files behind"
    assert good.read_bytes() == before


def test_error_event_in_json_mode(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, stdout, _ = run([tmp_path / "nope.nrrd", tmp_path / "o.nrrd", "--scale", 2, "--progress", "json"], capsys)
    assert code == 2
    event = parse_line(stdout.strip().splitlines()[-1])
    assert event["event"] == "error" and "not found" in event["message"]


def test_sigterm_during_a_run_cleans_up_and_exits_143(tmp_path: Path) -> None:
    """issue #12: SIGTERM unwinds like Ctrl-C: no staging folder, no output, exit 143, one line."""
    import signal
    import time

    source = tmp_path / "big.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((48, 160, 160)).astype(np.float32)), str(source))
    out = tmp_path / "out" / "sr.nii"
    out.parent.mkdir()
    command = [sys.executable, "-m", "fagan_engine", "sr", str(source), str(out), "--scale", "4", "--method", "bicubic",
               "--progress", "json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if '"progress"' in line:
            break
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")
    assert proc.returncode == 143 and err.strip().splitlines()[-1] == "error: terminated", err
    assert list(out.parent.iterdir()) == []


def test_a_bug_keeps_its_traceback_and_tells_a_json_reader(capsys: pytest.CaptureFixture) -> None:
    """An unexpected exception (a bug) exits 1 with its traceback; under --progress json an ``error`` event
    (``internal error: ...``) comes first, so a parent process such as the Slicer module learns of it."""
    from fagan_engine.cli import run_cli

    def bug() -> int:
        raise ZeroDivisionError("division by zero\nsecond line")

    for json_progress in (True, False):
        with pytest.raises(ZeroDivisionError):
            run_cli(bug, json_progress)
        events = [parse_line(line) for line in capsys.readouterr().out.splitlines()]
        expected = [{"message": "internal error: division by zero", "kind": "ZeroDivisionError"}] if json_progress else []
        assert [{k: e[k] for k in ("message", "kind")} for e in events if e and e["event"] == "error"] == expected


def test_only_the_engines_own_warnings_reach_the_user(capsys: pytest.CaptureFixture) -> None:
    """numpy's "invalid value encountered in dot" (nibabel reading an Inf pixdim) was printed as a warning line."""
    import warnings

    from fagan_engine.cli import run_cli
    from fagan_engine.util.errors import FAGANWarning

    def body() -> int:
        warnings.warn("invalid value encountered in dot", RuntimeWarning, stacklevel=1)
        warnings.warn("a.nii: pixdim disagrees with the sform", FAGANWarning, stacklevel=1)
        warnings.warn("a.nii: pixdim disagrees with the sform", FAGANWarning, stacklevel=1)
        return 0

    assert run_cli(body, json_progress=False) == 0
    assert capsys.readouterr().err.splitlines() == ["warning: a.nii: pixdim disagrees with the sform"]
