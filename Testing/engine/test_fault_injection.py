"""Fault injection (issue #20): edits generated from the valid sample volumes, held to the campaign's bar.

Every edit must give either one ``error:`` line (exit 2, nothing written, no input changed) or a
result with the right geometry; never a traceback, a wrong result with exit 0, or a changed input.
Generated here: NIfTI header fields, gzip trailers, MetaImage/NRRD header text in other encodings,
DICOM slice tags, SIGTERM at several moments, and output paths that alias an input. The whole
module runs within ``BUDGET_SECONDS``.
"""
from __future__ import annotations

import hashlib
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_test_series import oblique_image, write_mr_series

from fagan_engine.cli.sr import main
from fagan_engine.io.volume_io import read_volume
from fagan_engine.util.errors import InputError

BUDGET_SECONDS = 45.0
NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def module_started() -> float:
    """When this module's first test began (collection of other modules does not count)."""
    return time.perf_counter()


@pytest.fixture(autouse=True)
def within_budget(module_started: float) -> Iterator[None]:
    yield
    assert time.perf_counter() - module_started < BUDGET_SECONDS, "the fault-injection module ran past its time budget"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory, icbm_crop: sitk.Image) -> Path:
    """The ICBM152 crop as a single-file NIfTI with origin and 3 mm slices, and its truth."""
    image = sitk.Image(icbm_crop)
    image.SetSpacing((1.0, 1.0, 3.0))
    image.SetOrigin((5.0, -6.0, 7.0))
    path = tmp_path_factory.mktemp("fault") / "sample.nii"
    sitk.WriteImage(image, str(path), False)
    return path


def edited(source: Path, target: Path, offset: int, fmt: str, value: object) -> Path:
    data = bytearray(source.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    target.write_bytes(bytes(data))
    return target


def outcome(path: Path, **read_options: object) -> object:
    """The image read, or the InputError's one line; anything else fails the test."""
    try:
        return read_volume(str(path), **read_options)
    except InputError as exc:
        assert "\n" not in str(exc)
        return str(exc)


# --- header fields ---------------------------------------------------------------------------------

HEADER_EDITS = [("vox_offset", 108, "<f", v, "refused") for v in (0.0, 100.0, 348.0, -352.0, NAN, INF, 351.0)]
HEADER_EDITS += [("pixdim3", 88, "<f", v, "sform") for v in (NAN, INF, 0.0, -3.0, 1.0, 30.0)]
HEADER_EDITS += [("magic", 344, "4s", v, "refused") for v in (b"ni1\0", b"n+2\0", b"xxxx", b"\0\0\0\0")]
HEADER_EDITS += [("sizeof_hdr", 0, "<i", v, "refused") for v in (0, 540, -348, 10**6)]
HEADER_EDITS += [("bitpix", 72, "<h", v, "refused") for v in (0, 16, 64)] + [("datatype", 70, "<h", v, "refused") for v in (2, 4, 64)]
HEADER_EDITS += [("dim3", 46, "<h", v, "refused") for v in (0, -6, 3, 5, 7)] + [("dim0", 40, "<h", v, "refused") for v in (0, 2, 8)]
HEADER_EDITS += [("quatern_b", 256, "<f", v, "sform") for v in (NAN, 2.0)] + [("srow_x0", 280, "<f", v, "sform") for v in (NAN, INF, 0.0)]
"""``sform``: read with the true geometry (the sform decides, or the qform replaces a broken sform)."""


@pytest.mark.parametrize("field, offset, fmt, value, expected", HEADER_EDITS, ids=lambda v: repr(v)[:12])
def test_nifti_header_edit_is_refused_or_read_with_the_sform_geometry(sample, tmp_path, field, offset, fmt, value, expected):
    result = outcome(edited(sample, tmp_path / "e.nii", offset, fmt, value))
    if expected == "refused":
        assert isinstance(result, str), f"{field}={value!r} was read"
        return
    truth = read_volume(str(sample))
    assert not isinstance(result, str), result
    assert result.GetSpacing() == pytest.approx(truth.GetSpacing())
    assert result.GetOrigin() == pytest.approx(truth.GetOrigin())
    assert result.GetDirection() == pytest.approx(truth.GetDirection())
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(result), sitk.GetArrayViewFromImage(truth))


@pytest.mark.parametrize("ext, gzipped", [(".nii.gz", ".nii.gz"), (".nrrd", ".nrrd"), (".nhdr", ".raw.gz")])
@pytest.mark.parametrize("byte", range(-8, 0))
def test_every_gzip_trailer_byte_flip_is_refused(sample, tmp_path, byte, ext, gzipped):
    path = tmp_path / f"v{ext}"
    sitk.WriteImage(read_volume(str(sample)), str(path), True)
    stream = tmp_path / f"v{gzipped}"
    data = bytearray(stream.read_bytes())
    data[byte] ^= 0x10
    stream.write_bytes(bytes(data))
    assert isinstance(outcome(path), str)


TEXT_HEADER_EDITS = [
    (".mha", "DimSize = {x} {y} {z}", "DimSize = {x} {y} {z1}"), (".mha", "DimSize = {x} {y} {z}", "DimSize = {x} {y}"),
    (".mha", "ElementType = MET_FLOAT", "ElementType = MET_SHORT"), (".mha", "DimSize = {x} {y} {z}", "DimSize = {x} {y} {z2}"),
    (".nrrd", "sizes: {x} {y} {z}", "sizes: {x} {y} {z1}"), (".nrrd", "type: float", "type: short"),
    (".nrrd", "sizes: {x} {y} {z}", "sizes: {x} {y} {z2}"),
]


@pytest.mark.parametrize("ext, old, new", TEXT_HEADER_EDITS, ids=lambda v: str(v)[:24])
def test_metaimage_and_nrrd_size_or_type_edits_are_refused(sample, tmp_path, ext, old, new):
    image = read_volume(str(sample))
    path = tmp_path / f"v{ext}"
    sitk.WriteImage(image, str(path), False)
    x, y, z = image.GetSize()
    names = {"x": x, "y": y, "z": z, "z1": z - 1, "z2": z + 1}
    data = path.read_bytes()
    assert old.format(**names).encode() in data
    path.write_bytes(data.replace(old.format(**names).encode(), new.format(**names).encode(), 1))
    assert isinstance(outcome(path), str), f"{new} was read"


# --- metadata encodings ----------------------------------------------------------------------------

ENCODINGS = {"latin-1": "Müller".encode("latin-1"), "utf-16": "Müller".encode("utf-16"), "bytes": bytes(range(0x80, 0x90))}


@pytest.mark.parametrize("ext", [".mha", ".nrrd"])
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_header_text_in_other_encodings_reads_the_same_voxels(sample, tmp_path, ext, encoding):
    image = sitk.Cast(read_volume(str(sample)), sitk.sitkInt16)
    path = tmp_path / f"v{ext}"
    sitk.WriteImage(image, str(path), False)
    data = path.read_bytes()
    value = ENCODINGS[encoding].replace(b"\n", b" ").replace(b"\0", b" ")
    if ext == ".mha":
        at = data.index(b"ElementDataFile")
        data = data[:at] + b"PatientName = " + value + b"\n" + data[at:]
    else:
        at = data.index(b"\n\n")
        data = data[:at] + b"\nPatientName:=" + value + data[at:]
    path.write_bytes(data)
    result = outcome(path)
    assert not isinstance(result, str), result
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(result), sitk.GetArrayFromImage(image).astype(np.float32))


# --- DICOM slice tags ------------------------------------------------------------------------------


def _rotate(ds: pydicom.Dataset) -> None:
    row, column = np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float)
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*(c * row + s * column), *(-s * row + c * column))]


def _set(name: str, value: object) -> Callable[[pydicom.Dataset], None]:
    return lambda ds: setattr(ds, name, value)


SLICE_EDITS: Dict[str, Callable[[pydicom.Dataset], None]] = {
    "orientation-30-degrees": _rotate,
    "pixel-spacing-2": _set("PixelSpacing", ["2", "2"]),
    "position-duplicated": lambda ds: setattr(
        ds, "ImagePositionPatient", list(ds.ImagePositionPatient[:2]) + [f"{float(ds.ImagePositionPatient[2]) - 3.0:.6f}"]
    ),
    "position-missing": lambda ds: delattr(ds, "ImagePositionPatient"),
    "position-shifted-in-plane": lambda ds: setattr(
        ds, "ImagePositionPatient", [f"{float(ds.ImagePositionPatient[0]) + 5.0:.6f}"] + list(ds.ImagePositionPatient[1:])
    ),
    "orientation-flipped-row": lambda ds: setattr(
        ds, "ImageOrientationPatient", [f"{-float(v):.8f}" for v in ds.ImageOrientationPatient[:3]] + list(ds.ImageOrientationPatient[3:])
    ),
}


@pytest.mark.parametrize("edit", sorted(SLICE_EDITS))
def test_one_damaged_dicom_slice_is_refused_in_one_line(tmp_path, edit):
    image = oblique_image(size=(16, 12, 6), spacing=(0.9, 1.1, 3.0))
    image.SetDirection(np.eye(3).ravel().tolist())
    folder = write_mr_series(image, tmp_path / "series")
    path = sorted(folder.iterdir())[3]
    ds = pydicom.dcmread(str(path))
    SLICE_EDITS[edit](ds)
    ds.save_as(str(path))
    assert isinstance(outcome(folder), str), f"{edit} was read as a regular volume"


# --- output paths that alias an input --------------------------------------------------------------


def _digests(folder: Path) -> Dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


def _aliases(folder: Path, source: Path) -> Dict[str, List[str]]:
    """Argument lists whose output (or report or map) reaches ``source`` or another existing file."""
    os.symlink(source, folder / "link.nii")
    os.link(source, folder / "hard.nii")
    (folder / "cases.csv").write_text(f"input,output\n{source},{source}\n")
    (folder / "other.csv").write_text(f"input,output\n{source},{folder / 'out.nrrd'}\n")
    (folder / "notes.json").write_text("{}\n")
    base = ["--scale", "2", "--method", "bicubic", "--progress", "none"]
    return {
        "same-force": [str(source), str(source), "--force", *base],
        "symlink-force": [str(source), str(folder / "link.nii"), "--force", *base],
        "hardlink-force": [str(source), str(folder / "hard.nii"), "--force", *base],
        "report-is-input": [str(source), str(folder / "o.nrrd"), "--report", str(source), *base],
        "report-exists": [str(source), str(folder / "o.nrrd"), "--report", str(folder / "notes.json"), *base],
        "map-is-input": [str(source), str(folder / "o.nrrd"), "--consistency-map", str(folder / "hard.nii"), "--force", *base],
        "dicom-folder-holds-input": [str(source), str(folder), "--output-format", "dicom", "--force", *base],
        "manifest-row-is-its-input": ["--manifest", str(folder / "cases.csv"), "--force", *base],
        "batch-report-is-input": ["--manifest", str(folder / "other.csv"), "--report", str(folder / "link.nii"), *base],
        "batch-report-is-manifest": ["--manifest", str(folder / "other.csv"), "--report", str(folder / "other.csv"), "--force", *base],
        "batch-report-exists": ["--manifest", str(folder / "other.csv"), "--report", str(folder / "notes.json"), *base],
    }


def test_outputs_aliasing_an_input_are_refused_before_any_work(sample, tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    source = folder / "a.nii"
    source.write_bytes(sample.read_bytes())
    cases = _aliases(folder, source)
    before, names = _digests(folder), sorted(os.listdir(folder))
    for name, argv in cases.items():
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), f"{name}: {code} {err!r}"
        assert _digests(folder) == before, f"{name} changed a file"
        assert sorted(os.listdir(folder)) == names, f"{name} left a file"


# --- signals ----------------------------------------------------------------------------------------

SIGNAL_DELAYS = (0.0, 0.3, 0.8, 1.5, 2.5)
"""Seconds after the engine catches SIGTERM (its first ~50 ms, the interpreter starting, cannot): during
the imports of SimpleITK and torch, the checkpoint load, the adaptation, the inference."""


def _catches_sigterm(pid: int) -> bool:
    """True once process ``pid`` has a SIGTERM handler (Linux /proc; elsewhere assumed after 1 s)."""
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        time.sleep(1.0)
        return True
    for line in status.read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def test_sigterm_at_several_moments_exits_143_in_one_line_and_leaves_nothing(sample, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    runs = {}
    for delay in SIGNAL_DELAYS:
        folder = tmp_path / f"t{delay}"
        folder.mkdir()
        argv = [sys.executable, "-m", "fagan_engine", "sr", str(sample), str(folder / "o.nii.gz"), "--scale", "2", "--adapt", "8",
                "--uncertainty-map", "--progress", "none"]
        runs[delay] = (folder, subprocess.Popen(argv, stderr=subprocess.PIPE, env=env))
    catching: Dict[float, float] = {}
    sent: Dict[float, str] = {}
    started = time.perf_counter()
    pending = set(SIGNAL_DELAYS)
    while pending:
        for delay in sorted(pending):
            process = runs[delay][1]
            if process.poll() is not None:  # ended before its moment: the assertions below say how
                sent[delay] = "never sent: the run ended first"
                pending.discard(delay)
                continue
            if delay not in catching and _catches_sigterm(process.pid):
                catching[delay] = time.perf_counter()
            if delay in catching and time.perf_counter() >= catching[delay] + delay:
                process.send_signal(signal.SIGTERM)
                now = time.perf_counter()
                sent[delay] = f"sent {now - started:.2f} s after the start, {now - catching[delay]:.2f} s after the handler"
                pending.discard(delay)
        time.sleep(0.002)
    for delay, (folder, process) in runs.items():
        err = process.communicate(timeout=60)[1].decode()
        assert process.returncode == 143 and err == "error: terminated\n", (
            f"SIGTERM at {delay} s ({sent.get(delay)}): {process.returncode} {err!r}")
        assert list(folder.iterdir()) == [], f"SIGTERM at {delay} s left {list(folder.iterdir())}"


def test_sigterm_during_an_import_is_acted_on_once_the_import_ends(tmp_path):
    (tmp_path / "slow_module.py").write_text(
        "import os, signal, sys\nos.kill(os.getpid(), signal.SIGTERM)\nsum(range(2 * 10**6))\n"
        "open(sys.argv[1], 'w').write('imported')\n"
    )
    script = (
        "import sys, time\nsys.path.insert(0, sys.argv[2])\nfrom fagan_engine.cli import entry_point\n"
        "def body(args):\n    import slow_module\n    time.sleep(30)\n    return 0\n"
        "sys.exit(entry_point(body, []))\n"
    )
    marker = tmp_path / "imported"
    proc = subprocess.run([sys.executable, "-c", script, str(marker), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 143 and proc.stderr == "error: terminated\n", proc.stderr
    assert marker.read_text() == "imported"


@pytest.mark.parametrize("failure", ["RuntimeError", "OutputError"])
def test_a_library_error_while_unwinding_from_sigterm_is_still_one_line_and_143(tmp_path, failure):
    script = (
        "import os, signal, sys\nfrom fagan_engine.cli import entry_point\nfrom fagan_engine.util.errors import OutputError\n"
        "def body(args):\n    try:\n        os.kill(os.getpid(), signal.SIGTERM)\n        sum(range(10**6))\n"
        f"    finally:\n        raise {failure}('trying to pop from empty mode stack')\n"
        "sys.exit(entry_point(body, []))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 143 and proc.stderr == "error: terminated\n", proc.stderr
