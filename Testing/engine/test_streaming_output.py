"""Streaming output (issue #19): ``fagan-sr`` writes the SR volume slab by slab into its staged file, with the
header and voxels the in-memory writer produces, publishes it atomically, and its peak memory no longer grows
with the output volume."""
from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path
from typing import List

import numpy as np
import pytest
import SimpleITK as sitk
from engine_helpers import fill_disk_after_first_slab, oblique_volume, peak_memory_slope

from fagan_engine.cli.sr import main
from fagan_engine.inference import memory_check
from fagan_engine.io.geometry import SliceLayout, super_resolved_geometry
from fagan_engine.io.volume_io import write_volume
from fagan_engine.io.volume_stream import VolumeStreamWriter
from fagan_engine.pipeline import case
from fagan_engine.pipeline.report import super_resolve, super_resolve_report
from fagan_engine.util.options import RunOptions

EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
BICUBIC = ["--scale", "2", "--method", "bicubic", "--batch-size", "2", "--progress", "none"]


def content(path: Path) -> bytes:
    """A file's bytes with its compressed parts inflated and MetaImage's ``CompressedDataSize`` left out (the only
    bytes another zlib may change)."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    match = re.search(rb"\n\n|ElementDataFile = LOCAL\n", data[:4096])
    head, body = (data[: match.end()], data[match.end():]) if match else (data, b"")
    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    elif re.search(rb"CompressedData = True", head) and body:
        body = zlib.decompress(body)
    elif path.suffix == ".zraw":
        head = zlib.decompress(data)
    return re.sub(rb"CompressedDataSize = \d+\n", b"", head) + body


def volume(dtype: str, size=(6, 5, 4)) -> sitk.Image:
    image = oblique_volume(size=size, spacing=(0.7, 1.1, 2.5))
    array = sitk.GetArrayFromImage(image) * 37
    out = sitk.GetImageFromArray(array.astype(dtype))
    out.CopyInformation(image)
    return out


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("ext", EXTENSIONS)
def test_streamed_file_has_the_in_memory_writers_header_and_voxels(tmp_path: Path, ext: str, compress: bool) -> None:
    for dtype in ("float32", "int16", "uint16"):
        image = volume(dtype)
        array = sitk.GetArrayFromImage(image)
        for axes in ((0, 1), (1, 2)):  # slices across the slowest axis (streamed) and along it (gathered)
            folder = tmp_path / f"{dtype}{axes[0]}"
            (folder / "memory").mkdir(parents=True)
            (folder / "stream").mkdir()
            write_volume(image, str(folder / "memory" / f"v{ext}"), compress=compress)
            layout = SliceLayout.for_axes(axes)
            geometry = super_resolved_geometry(image, 1, axes)
            writer = VolumeStreamWriter(folder / "stream" / f"v{ext}", geometry, layout, dtype, compress)
            slices = layout.to_slices(array)
            for start in range(0, len(slices), 3):
                writer.write(start, slices[start : start + 3])
            files = writer.close()
            names = sorted(p.name for p in (folder / "memory").iterdir())
            assert sorted(p.name for p in files) == sorted(p.name for p in (folder / "stream").iterdir()) == names
            for name in names:
                assert content(folder / "stream" / name) == content(folder / "memory" / name), (dtype, axes, name)
            if not compress and ext in (".nii", ".nrrd", ".mha"):
                assert (folder / "stream" / f"v{ext}").read_bytes() == (folder / "memory" / f"v{ext}").read_bytes()
            streamed, written = (sitk.ReadImage(str(folder / kind / f"v{ext}")) for kind in ("stream", "memory"))
            assert np.array_equal(sitk.GetArrayFromImage(streamed), array)
            for field in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection", "GetPixelID"):
                assert getattr(streamed, field)() == getattr(written, field)()
            if ext.startswith(".nii"):
                nib = pytest.importorskip("nibabel")
                a, b = (nib.load(str(folder / kind / f"v{ext}")) for kind in ("stream", "memory"))
                assert a.header.binaryblock == b.header.binaryblock and np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))


def spy_on_writes(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """Record every slab the stream writer receives and every whole-volume write of the case."""
    calls: List[str] = []
    streamed, whole = VolumeStreamWriter.write, case.write_volume

    def write(writer, start, slices):
        calls.append(f"slab {writer.shown.name} {start}+{len(slices)}")
        return streamed(writer, start, slices)

    def write_whole(image, path, *args, **kwargs):
        calls.append(f"whole {Path(path).name}")
        return whole(image, path, *args, **kwargs)

    monkeypatch.setattr(VolumeStreamWriter, "write", write)
    monkeypatch.setattr(case, "write_volume", write_whole)
    return calls


def test_cli_writes_the_output_and_the_map_slab_by_slab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    calls = spy_on_writes(monkeypatch)
    source = tmp_path / "in.nrrd"
    sitk.WriteImage(volume("float32"), str(source))
    code = main([str(source), str(tmp_path / "sr.nii.gz"), *BICUBIC, "--consistency-map", "--consistency-map-lr"])
    assert code == 0, capsys.readouterr().err
    assert [c for c in calls if "sr.nii.gz" in c] == ["slab sr.nii.gz 0+2", "slab sr.nii.gz 2+2"]
    assert [c for c in calls if "sr_consistency.nii.gz" in c] == ["slab sr_consistency.nii.gz 0+2", "slab sr_consistency.nii.gz 2+2"]
    assert calls[-1] == "whole sr_consistency_lr.nii.gz"  # input-sized: written whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd", "sr.nii.gz", "sr_consistency.nii.gz", "sr_consistency_lr.nii.gz"]


def test_batch_streams_every_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    calls = spy_on_writes(monkeypatch)
    (tmp_path / "in").mkdir()
    for name in ("a", "b"):
        sitk.WriteImage(volume("float32"), str(tmp_path / "in" / f"{name}.nrrd"))
    code = main([str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"), *BICUBIC])
    assert code == 0, capsys.readouterr().err
    assert [c for c in calls if c.startswith("whole")] == []
    assert {c.split()[1] for c in calls} == {"a.nrrd", "b.nrrd"}


@pytest.mark.parametrize("plane", ["axial", "sagittal"])  # slices across the file's slowest axis, and along it
@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_streamed_cli_result_equals_the_in_memory_result(tmp_path: Path, plane: str, dtype: str, capsys) -> None:
    image = volume("float32", size=(8, 8, 6))
    source = tmp_path / "in.nrrd"
    sitk.WriteImage(image, str(source))
    out, cmap = tmp_path / "sr.nii", tmp_path / "c.nrrd"
    code = main([str(source), str(out), *BICUBIC, "--plane", plane, "--dtype", dtype, "--enforce-consistency",
                 "--consistency-map", str(cmap), "--no-compression"])
    assert code == 0, capsys.readouterr().err
    options = RunOptions(scale=2, method="bicubic", batch_size=2, plane=plane, output_dtype=dtype, enforce_consistency=True)
    result = super_resolve_report(image, options)
    write_volume(result.image, str(tmp_path / "memory.nii"))
    assert out.read_bytes() == (tmp_path / "memory.nii").read_bytes()  # header and voxels, byte for byte
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(cmap))), sitk.GetArrayFromImage(result.consistency))
    plain = super_resolve(image, 2, method="bicubic", batch_size=2, plane=plane, output_dtype=dtype, enforce_consistency=True)
    assert np.array_equal(sitk.GetArrayFromImage(plain), sitk.GetArrayFromImage(result.image))


def test_a_failure_while_streaming_leaves_the_users_files_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    source = tmp_path / "in.nrrd"
    sitk.WriteImage(volume("float32"), str(source))
    out = tmp_path / "sr.mhd"
    out.write_bytes(b"theirs")
    fill_disk_after_first_slab(monkeypatch, VolumeStreamWriter)
    code = main([str(source), str(out), *BICUBIC, "--force", "--consistency-map"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0] == f"error: no space left on device while writing {out}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd", "sr.mhd"] and out.read_bytes() == b"theirs"


def test_memory_check_predicts_the_streamed_peak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A result that fits only when streamed is written by the CLI and refused in memory by the API, in one line."""
    image = volume("float32", size=(64, 64, 8))
    source = tmp_path / "in.nrrd"
    sitk.WriteImage(image, str(source))
    inputs = image.GetNumberOfPixels()
    streamed = memory_check.BASE_BYTES + memory_check.BYTES_PER_INPUT_VOXEL * inputs + 16 * memory_check.STREAMED_BYTES_PER_OUTPUT_VOXEL * inputs
    monkeypatch.setattr(memory_check, "available_bytes", lambda: streamed + memory_check.BYTES_PER_OUTPUT_VOXEL * inputs)
    x4 = ["--scale", "4", "--method", "bicubic", "--progress", "none"]
    assert main([str(source), str(tmp_path / "sr.nrrd"), *x4]) == 0
    with pytest.raises(memory_check.InputError, match="x4 result has 0.524 M voxels and needs about"):
        super_resolve(image, 4, method="bicubic")
    monkeypatch.setattr(memory_check, "available_bytes", lambda: streamed - 1)
    assert main([str(source), str(tmp_path / "sr2.nrrd"), *x4]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "GiB of memory" in err[0] and not (tmp_path / "sr2.nrrd").exists()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_peak_memory_grows_by_at_most_16_bytes_per_output_voxel(tmp_path: Path) -> None:
    """Two ×4 runs in fresh processes: the slope of peak RSS over output voxels (was about 48 bytes before streaming)."""
    slope = peak_memory_slope(tmp_path, (8, 64), ".nii.gz", ["--consistency-map"])
    assert slope <= 16, f"{slope:.1f} bytes per output voxel"


def test_a_format_that_cannot_be_streamed_is_gathered_and_written_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """NIfTI-2 sizes or a big-endian machine: the slabs are gathered, then written by the in-memory writer."""
    calls = spy_on_writes(monkeypatch)
    monkeypatch.setattr(case, "can_stream", lambda path, geometry: False)
    image = volume("float32")
    source = tmp_path / "in.nrrd"
    sitk.WriteImage(image, str(source))
    assert main([str(source), str(tmp_path / "sr.nii"), *BICUBIC, "--consistency-map"]) == 0, capsys.readouterr().err
    assert sorted(calls) == ["whole sr.nii", "whole sr_consistency.nii"]
    expected = super_resolve(image, 2, method="bicubic")
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "sr.nii"))), sitk.GetArrayFromImage(expected))


@pytest.mark.parametrize("name", ["SR.NII.GZ", "sr.Nii.Gz", "SR.NII", "SR.NHDR", "SR.MHA", "SR.MHD"])
def test_an_output_extension_in_any_letter_case_is_written(tmp_path: Path, name: str, capsys) -> None:
    """SimpleITK picks its writer by a case-sensitive extension: OUT.NII.GZ gave a traceback, OUT.MHA a false 'No such file'."""
    source = tmp_path / "in.nrrd"
    image = volume("float32", size=(8, 8, 6))
    sitk.WriteImage(image, str(source))
    code = main([str(source), str(tmp_path / name), *BICUBIC])
    assert code == 0, capsys.readouterr().err
    from fagan_engine.io.volume_io import read_volume

    expected = super_resolve(image, 2, method="bicubic", plane="auto")
    written = read_volume(str(tmp_path / name))
    assert np.array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(expected))
    assert written.GetOrigin() == pytest.approx(expected.GetOrigin()) and written.GetSpacing() == pytest.approx(expected.GetSpacing())


def test_a_header_that_cannot_be_written_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """On a full disk ITK's proxy header write raised RuntimeError, or left a short file that failed to parse (tracebacks)."""
    import fagan_engine.io.volume_stream as volume_stream

    source = tmp_path / "in.nrrd"
    sitk.WriteImage(volume("float32"), str(source))

    def short_write(image, path, compress=True):
        Path(path).write_bytes(b"NRRD0004\n# truncated")

    monkeypatch.setattr(volume_stream.sitk, "WriteImage", short_write)
    monkeypatch.setattr("fagan_engine.util.atomic._free_bytes", lambda folder: 0)
    code = main([str(source), str(tmp_path / "sr.nrrd"), *BICUBIC])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: no space left on device while writing {tmp_path / 'sr.nrrd'}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd"]


def test_a_full_disk_that_also_fails_the_final_flush_leaves_no_staging_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                              capsys) -> None:
    """Closing a stream flushes it again, which raises ENOSPC on a full disk: a traceback, and the staging folder with its
    partial data stayed behind."""
    import errno

    from fagan_engine.util.errors import OutputError

    streamed = VolumeStreamWriter.write

    class FlushFails:
        def __init__(self, handle) -> None:
            self.handle = handle

        def close(self) -> None:
            self.handle.close()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name: str):
            return getattr(self.handle, name)

    def full_disk(writer, start, slices):
        if start > 0:
            for data in writer.files:
                data.handle = FlushFails(data.handle)
            raise OutputError(f"no space left on device while writing {writer.shown}")
        return streamed(writer, start, slices)

    monkeypatch.setattr(VolumeStreamWriter, "write", full_disk)
    source = tmp_path / "in.nrrd"
    sitk.WriteImage(volume("float32"), str(source))
    code = main([str(source), str(tmp_path / "sr.nii.gz"), *BICUBIC, "--consistency-map"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: no space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd"]


def test_a_signal_while_publishing_waits_for_the_whole_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """SIGTERM after the map was linked left the map without its output (and a rerun was refused); the set is published
    whole, then the run stops."""
    import os
    import signal

    source = tmp_path / "in.nrrd"
    sitk.WriteImage(volume("float32"), str(source))
    real = os.link

    def link(src, dst, *args, **kwargs):
        real(src, dst, *args, **kwargs)
        if Path(dst).name == "sr_consistency.nii.gz":
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "link", link)
    code = main([str(source), str(tmp_path / "sr.nii.gz"), *BICUBIC, "--consistency-map", "--report", str(tmp_path / "r.json")])
    capsys.readouterr()
    assert code == 143
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd", "r.json", "sr.nii.gz", "sr_consistency.nii.gz"]


def test_a_refusal_at_publishing_replaces_none_of_the_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A DICOM output that came to hold another file during the run was refused only after the run's map had replaced the
    earlier one (with --force): the map then described another result than the series beside it."""
    source = tmp_path / "in.nrrd"
    sitk.WriteImage(volume("float32"), str(source))
    argv = [str(source), str(tmp_path / "series"), *BICUBIC, "--consistency-map", str(tmp_path / "cm.nii.gz")]
    assert main(argv) == 0
    before = (tmp_path / "cm.nii.gz").read_bytes()
    publish = case.StagedOutputs.publish

    def someone_writes_into_the_series(staged):
        (tmp_path / "series" / "README.txt").write_text("notes")
        return publish(staged)

    monkeypatch.setattr(case.StagedOutputs, "publish", someone_writes_into_the_series)
    sitk.WriteImage(volume("float32") * 2, str(source))
    capsys.readouterr()
    assert main([*argv, "--force"]) == 2
    assert "holds more than a DICOM series" in capsys.readouterr().err
    assert (tmp_path / "cm.nii.gz").read_bytes() == before
