"""Issue #12: corrupt, extreme and hostile inputs and outputs are refused in one line, never read wrongly."""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from test_volume_io import assert_no_leftovers, assert_one_line, assert_same_geometry, oblique_volume, write_dicom_series

from fagan_engine.io.volume_io import read_volume, validate_image, write_volume
from fagan_engine.util.atomic import publish_files
from fagan_engine.util.errors import FAGANWarning, InputError, OutputError
from fagan_engine.util.stdio_capture import captured_stderr

UID = "1.2.826.0.1.3680043.2.1125.1.9"


def small_volume() -> sitk.Image:
    return sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6))


def refused(path: Path, match: str, **kwargs) -> None:
    with pytest.raises(InputError, match=match) as excinfo:
        read_volume(str(path), **kwargs)
    assert_one_line(excinfo)


# --- 1: letter case of extensions -----------------------------------------------------------


@pytest.mark.parametrize("name", ["o.MHA", "o.Mha", "o.MHD", "o.NII", "o.Nii.Gz", "o.NRRD"])
def test_upper_case_output_writes_the_named_file_and_checks_its_data_file(tmp_path, name):
    (tmp_path / "o.mhd").write_text("keep")
    (tmp_path / "o.zraw").write_text("keep")
    target = tmp_path / name
    if name.lower().endswith(".mhd"):
        with pytest.raises(OutputError, match="already exists"):
            write_volume(small_volume(), str(target))
        return
    write_volume(small_volume(), str(target))
    assert (tmp_path / "o.mhd").read_text() == "keep" and (tmp_path / "o.zraw").read_text() == "keep"
    assert target.is_file()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_volume(str(target))), sitk.GetArrayFromImage(small_volume()))
    assert_no_leftovers(tmp_path)


def test_upper_case_detached_header_finds_its_data_file(tmp_path):
    write_volume(small_volume(), str(tmp_path / "v.MHD"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.MHD", "v.zraw"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_volume(str(tmp_path / "v.MHD"))), sitk.GetArrayFromImage(small_volume()))


@pytest.mark.parametrize("header", ["my scan.nhdr", "my scan.mhd"])
def test_force_never_replaces_an_input_data_file_whose_name_has_a_space(tmp_path, header, capsys):
    """The data-file field of a detached header runs to the end of its line: ``my scan.raw`` was read as ``my`` and
    ``--force`` then rewrote the input's voxels through the other header format."""
    from fagan_engine.cli.sr import main

    sitk.WriteImage(small_volume(), str(tmp_path / header))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    other = "my scan.mhd" if header.endswith(".nhdr") else "my scan.nhdr"
    code = main([str(tmp_path / header), str(tmp_path / other), "--scale", "2", "--method", "bicubic", "--no-compression",
                 "--force", "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "would replace the input" in err, err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# --- 2, 3, 20: NIfTI header and data ---------------------------------------------------------


def nifti_bytes(data: np.ndarray, suffix: str, tmp_path: Path) -> bytes:
    path = tmp_path / f"src{suffix}"
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path.read_bytes()


@pytest.mark.parametrize("cut", [1, 100, 352])
def test_nifti_missing_up_to_a_header_of_bytes_is_truncated(tmp_path, cut):
    data = np.ones((6, 5, 4), np.float32)
    path = tmp_path / "cut.nii"
    path.write_bytes(nifti_bytes(data, ".nii", tmp_path)[:-cut])
    refused(path, "truncated")
    raw = gzip.decompress(nifti_bytes(data, ".nii.gz", tmp_path))[:-cut]
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(raw))
    refused(tmp_path / "cut.nii.gz", "truncated")


def test_nifti_vox_offset_past_the_end_is_truncated(tmp_path):
    blob = bytearray(nifti_bytes(np.ones((6, 5, 4), np.float32), ".nii", tmp_path))
    blob[108:112] = np.float32(len(blob) + 64).tobytes()
    (tmp_path / "far.nii").write_bytes(bytes(blob))
    refused(tmp_path / "far.nii", "truncated")


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_nan_and_inf_are_seen_although_itk_zeroes_them(tmp_path, suffix):
    data = np.ones((6, 5, 4), np.float32)
    data[1, 2, 3], data[0, 0, 0] = np.nan, np.inf
    path = tmp_path / f"nan{suffix}"
    path.write_bytes(nifti_bytes(data, suffix, tmp_path))
    refused(path, "2 non-finite")
    values = sitk.GetArrayFromImage(read_volume(str(path), nan_policy="zero"))
    assert np.isfinite(values).all() and values[3, 2, 1] == 0


@pytest.mark.parametrize("size", [0, -3])
def test_nifti_with_zero_or_negative_slices(tmp_path, size):
    blob = bytearray(nifti_bytes(np.ones((6, 5, 4), np.float32), ".nii", tmp_path))
    blob[46:48] = np.int16(size).tobytes()  # dim[3]
    (tmp_path / "flat.nii").write_bytes(bytes(blob))
    refused(tmp_path / "flat.nii", "empty axis")


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_nifti_with_non_finite_sform_is_refused(tmp_path, bad):
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    affine[0, 3] = bad
    image = nib.Nifti1Image(np.ones((6, 5, 4), np.float32), affine)
    image.set_qform(None, code=0)
    image.set_sform(affine, code=1)
    nib.save(image, str(tmp_path / "geo.nii"))
    refused(tmp_path / "geo.nii", "NaN or Inf")


# --- 4: values near the float32 limit ----------------------------------------------------------


@pytest.mark.parametrize("value", [3.0e38, 1.0e36])
def test_values_near_the_float32_limit_are_refused(value):
    """1e36 passed the old bound (1e37) and came out of FA-GAN as zeros with numpy's overflow warnings."""
    image = sitk.GetImageFromArray(np.full((3, 4, 4), value, np.float32))
    with pytest.raises(InputError, match="overflow") as excinfo:
        validate_image(image)
    assert_one_line(excinfo)
    validate_image(sitk.GetImageFromArray(np.full((3, 4, 4), 1.0e29, np.float32)))


# --- 5: broken MetaImage -------------------------------------------------------------------------


def test_metaimage_compressed_flag_on_raw_data_is_refused(tmp_path):
    path = tmp_path / "v.mhd"
    write_volume(small_volume(), str(path), compress=False)
    path.write_text(path.read_text().replace("CompressedData = False", "CompressedData = True"))
    refused(path, "compressed data is corrupt")


def test_metaimage_list_without_files_is_refused(tmp_path):
    path = tmp_path / "v.mhd"
    write_volume(small_volume(), str(path), compress=False)
    text = path.read_text()
    path.write_text(text[: text.index("ElementDataFile")] + "ElementDataFile = LIST\n")
    refused(path, "names no data files")


def test_metaimage_short_raw_data_is_refused(tmp_path):
    path = tmp_path / "v.mhd"
    write_volume(small_volume(), str(path), compress=False)
    raw = tmp_path / "v.raw"
    raw.write_bytes(raw.read_bytes()[:-8])
    refused(path, "truncated")


def test_compressed_metaimage_still_reads(tmp_path):
    path = tmp_path / "v.mha"
    write_volume(small_volume(), str(path), compress=True)
    assert zlib.decompress(path.read_bytes()[path.read_bytes().index(b"LOCAL\n") + 6 :])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_volume(str(path))), sitk.GetArrayFromImage(small_volume()))


# --- 15: non-finite geometry in text headers ----------------------------------------------------


def test_nan_origin_in_nrrd_and_metaimage_is_refused(tmp_path):
    nrrd = tmp_path / "v.nrrd"
    write_volume(small_volume(), str(nrrd), compress=False)
    blob = nrrd.read_bytes()
    start = blob.index(b"space origin: ")
    end = blob.index(b"\n", start)
    nrrd.write_bytes(blob[:start] + b"space origin: (nan,0,0)" + blob[end:])
    refused(nrrd, r"geometry \(space origin\) holds NaN")
    mha = tmp_path / "v.mha"
    write_volume(small_volume(), str(mha), compress=False)
    blob = mha.read_bytes()
    mha.write_bytes(blob.replace(b"Offset = 0 0 0", b"Offset = 0 inf 0"))
    refused(mha, r"geometry \(Offset\) holds NaN")


def test_in_memory_non_finite_or_zero_spacing_is_refused():
    image = small_volume()
    image.SetOrigin((0.0, float("nan"), 0.0))
    with pytest.raises(InputError, match="NaN or Inf"):
        validate_image(image)


# --- 16: non-regular files -------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_input_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.nii")
    refused(tmp_path / "pipe.nii", "not a regular file")


# --- 6: DICOM slice gaps and duplicates -------------------------------------------------------------


def dicom_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "series"
    write_dicom_series(oblique_volume(), folder, UID)
    return folder


def test_dicom_missing_slice_is_refused_and_resampled_on_request(tmp_path):
    folder = dicom_folder(tmp_path)
    (folder / "slice002.dcm").unlink()
    refused(folder, "gap of 6.000 mm between slices slice001.dcm and slice003.dcm")
    image = read_volume(str(folder), dicom_gaps="resample")
    original = oblique_volume()
    assert_same_geometry(image, original, tol=1e-3)
    values, expected = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(original)
    np.testing.assert_array_equal(values[[0, 1, 3, 4, 5]], expected[[0, 1, 3, 4, 5]])
    np.testing.assert_allclose(values[2], (expected[1] + expected[3]) / 2, atol=1e-3)


@pytest.mark.parametrize("damage", ["empty", "corrupt"])
def test_dicom_unreadable_slice_is_a_gap(tmp_path, damage):
    folder = dicom_folder(tmp_path)
    victim = folder / "slice003.dcm"
    victim.write_bytes(b"" if damage == "empty" else os.urandom(2000))
    refused(folder, "gap")


@pytest.mark.parametrize("copy", ["slice002_copy.dcm", "slice999.dcm"])
def test_dicom_duplicated_slice_is_refused(tmp_path, copy):
    """Next to its original, or sorted after the last slice (it was then called a gap of -12 mm, a missing slice)."""
    folder = dicom_folder(tmp_path)
    shutil.copy(folder / ("slice002.dcm" if copy.startswith("slice002") else "slice001.dcm"), folder / copy)
    refused(folder, "duplicated slice")


def test_dicom_folder_with_a_symlink_loop(tmp_path):
    folder = dicom_folder(tmp_path)
    os.symlink(folder / "loop_b", folder / "loop_a")
    os.symlink(folder / "loop_a", folder / "loop_b")
    refused(folder, "symbolic link loop")


# --- 7: sheared geometry ---------------------------------------------------------------------------------


def sheared_image() -> sitk.Image:
    image = small_volume()
    image.SetDirection((1.0, 0.3, 0.0, 0.0, 0.95393920, 0.0, 0.0, 0.0, 1.0))
    return image


def test_sheared_image_is_refused_for_nifti_and_kept_in_nrrd_and_mha(tmp_path):
    for ext in (".nii", ".nii.gz"):
        with pytest.raises(OutputError, match="sheared") as excinfo:
            write_volume(sheared_image(), str(tmp_path / f"s{ext}"))
        assert_one_line(excinfo)
    for ext in (".nrrd", ".mha", ".nhdr", ".mhd"):
        write_volume(sheared_image(), str(tmp_path / f"s{ext}"))
        assert_same_geometry(read_volume(str(tmp_path / f"s{ext}")), sheared_image(), tol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("s.nii")) == []


def test_sheared_sform_with_an_orthogonal_qform_is_read_from_the_sform(tmp_path):
    affine = np.array([[0.9, 0.3, 0.0, 10.0], [0.0, 1.3, 0.0, -5.0], [0.0, 0.0, 3.0, 2.0], [0, 0, 0, 1]])
    image = nib.Nifti1Image(np.ones((5, 6, 7), np.float32), affine)
    image.set_qform(np.diag([0.9, 1.3, 3.0, 1.0]), code=1)
    image.set_sform(affine, code=2)
    nib.save(image, str(tmp_path / "s.nii"))
    read = read_volume(str(tmp_path / "s.nii"))
    ras = affine @ np.array([4.0, 5.0, 6.0, 1.0])
    np.testing.assert_allclose(read.TransformIndexToPhysicalPoint((4, 5, 6)), [-ras[0], -ras[1], ras[2]], atol=1e-4)


# --- 8: atomic publish -------------------------------------------------------------------------------------


def test_publish_never_replaces_a_file_created_after_the_check(tmp_path):
    staged = tmp_path / "staged"
    staged.write_text("new")
    (tmp_path / "out.nii").write_text("theirs")
    with pytest.raises(OutputError, match="already exists"):
        publish_files([(staged, tmp_path / "out.nii")], force=False, target=tmp_path / "out.nii")
    assert (tmp_path / "out.nii").read_text() == "theirs"


def test_publish_rolls_back_a_detached_pair_when_the_header_name_is_taken(tmp_path):
    data, header = tmp_path / "d.zraw.staged", tmp_path / "h.staged"
    data.write_text("d")
    header.write_text("h")
    (tmp_path / "v.mhd").write_text("theirs")
    with pytest.raises(OutputError):
        publish_files([(data, tmp_path / "v.zraw"), (header, tmp_path / "v.mhd")], force=False, target=tmp_path / "v.mhd")
    assert not (tmp_path / "v.zraw").exists() and (tmp_path / "v.mhd").read_text() == "theirs"


def test_stale_staging_of_a_dead_process_is_removed(tmp_path):
    stale = tmp_path / ".out.tmp-999999999-abc"
    stale.mkdir()
    (stale / "out.nii").write_bytes(b"partial")
    mine = tmp_path / f".out.tmp-{os.getpid()}-abc"
    mine.mkdir()
    write_volume(small_volume(), str(tmp_path / "out.nii"))
    assert not stale.exists() and mine.exists()


# --- 17: C-library output ------------------------------------------------------------------------------


def test_c_library_stderr_is_captured_at_the_descriptor_level():
    with captured_stderr() as captured:
        os.write(2, b"ITK ERROR: something\nsecond line\n")
    assert captured.lines == ["ITK ERROR: something", "second line"]
    assert captured.first_message() == "ITK ERROR: something"


def test_fagan_warning_is_a_user_warning():
    assert issubclass(FAGANWarning, UserWarning)


def test_two_processes_racing_for_one_output_never_both_succeed(tmp_path):
    source = tmp_path / "in.nii.gz"
    write_volume(oblique_volume(), str(source))
    for trial in range(3):
        target = tmp_path / f"race{trial}.nrrd"
        command = [sys.executable, "-m", "fagan_engine", "sr", str(source), str(target), "--scale", "2", "--method", "bicubic", "--progress", "none"]
        procs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = sorted((p.wait(timeout=60), p.stderr.read()) for p in procs)
        assert [code for code, _ in results] == [0, 2], results
        assert "already exists" in results[1][1] and results[1][1].count("\n") == 1, results
    assert_no_leftovers(tmp_path)


@pytest.mark.parametrize("ext", [".nrrd", ".nhdr", ".mha", ".mhd", ".nii", ".nii.gz"])
def test_geometry_survives_the_cli_for_every_output_format(tmp_path, ext):
    """Oblique input: every format keeps the physical box; sheared input: NIfTI output is refused."""
    from fagan_engine.cli.sr import main
    from fagan_engine.io.geometry import physical_corners

    for name, image in (("oblique", oblique_volume()), ("sheared", sheared_image())):
        source = tmp_path / f"{name}.nrrd"
        write_volume(image, str(source))
        target = tmp_path / f"{name}_sr{ext}"
        code = main([str(source), str(target), "--scale", "2", "--method", "bicubic", "--progress", "none"])
        if name == "sheared" and ext.startswith(".nii"):
            assert code == 2 and not target.exists()
            continue
        assert code == 0
        result = read_volume(str(target))
        assert result.GetSize()[2] == image.GetSize()[2]
        np.testing.assert_allclose(physical_corners(result), physical_corners(image), atol=1e-3)


def test_fifo_detached_data_file_is_refused(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs FIFOs")
    path = tmp_path / "v.mhd"
    write_volume(small_volume(), str(path), compress=False)
    (tmp_path / "v.raw").unlink()
    os.mkfifo(tmp_path / "v.raw")
    refused(path, "not a regular file")


@pytest.mark.parametrize("where, name", [("input", "v\udcff.nii.gz"), ("output", "v\udcff.nii.gz"), ("report", "v\udcff.nii.gz"),
                                         ("output", "a" * 300 + ".nii.gz"), ("report", "a" * 300 + ".nii.gz")])
def test_paths_that_are_not_utf8_or_too_long_are_one_line(tmp_path, capsys, where, name):
    """A name that is not UTF-8 made SimpleITK abort the process (leaving a staging folder); one longer than 255 bytes
    raised OSError from pathlib."""
    from fagan_engine.cli.sr import main

    source = tmp_path / "v.nii.gz"
    write_volume(small_volume(), str(source))
    odd = os.path.join(str(tmp_path), name if where != "report" else name.replace(".nii.gz", ".json"))
    if where == "input":
        shutil.copy(source, os.fsencode(odd))
    paths = {"input": [odd, str(tmp_path / "o.nii.gz")], "output": [str(source), odd],
             "report": [str(source), str(tmp_path / "o.nii.gz"), "--report", odd]}[where]
    before = sorted(os.listdir(os.fsencode(str(tmp_path))))
    assert main([*paths, "--scale", "2", "--method", "bicubic", "--progress", "none"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and ("UTF-8" in err[0] or "longer than 255" in err[0]), err
    assert sorted(os.listdir(os.fsencode(str(tmp_path)))) == before
