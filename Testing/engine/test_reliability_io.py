"""Issue #20, volume reading: damaged NIfTI headers and gzip trailers, self-contradicting NIfTI
transforms, non-UTF-8 header text, and outputs that would reach an input (even with --force)."""
from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fagan_engine.io.volume_io import read_volume, write_volume
from fagan_engine.util.errors import FAGANWarning, InputError, OutputError


def sample(tmp_path: Path, name: str = "a.nii") -> Path:
    """A 20×24×6 volume, 1×1×3 mm, origin (5, 6, 7), first voxel not 0."""
    array = (np.random.default_rng(0).random((6, 24, 20)) * 100 + 1).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 3.0))
    image.SetOrigin((5.0, 6.0, 7.0))
    path = tmp_path / name
    sitk.WriteImage(image, str(path), False)
    return path


def patched(path: Path, offset: int, fmt: str, value: object, name: str = "edited.nii") -> Path:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    target = path.with_name(name)
    target.write_bytes(bytes(data))
    return target


def refused(path: Path, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment) as excinfo:
        read_volume(str(path))
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize("offset", [0.0, 100.0, 348.0, -352.0, float("nan"), float("inf"), 352.5])
def test_nifti_vox_offset_below_352_or_not_finite_is_refused(tmp_path, offset):
    refused(patched(sample(tmp_path), 108, "<f", offset), "vox_offset")


def test_nifti_with_a_later_vox_offset_reads_its_data_there(tmp_path):
    source = sample(tmp_path)
    data = source.read_bytes()
    moved = tmp_path / "moved.nii"
    moved.write_bytes(data[:108] + struct.pack("<f", 368.0) + data[112:352] + bytes(16) + data[352:])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_volume(str(moved))), sitk.GetArrayFromImage(read_volume(str(source))))


@pytest.mark.parametrize("magic", [b"xx1\0", b"ni1\0", b"\0\0\0\0"])
def test_nifti_with_a_damaged_magic_is_refused_not_read_as_analyze(tmp_path, magic):
    data = bytearray(sample(tmp_path).read_bytes())
    data[344:348] = magic
    (tmp_path / "m.nii").write_bytes(bytes(data))
    refused(tmp_path / "m.nii", "magic")


@pytest.mark.parametrize("byte", [-8, -5, -4, -1], ids=["crc0", "crc3", "isize0", "isize3"])
def test_nii_gz_with_a_bad_gzip_trailer_is_refused(tmp_path, byte):
    path = tmp_path / "a.nii.gz"
    sitk.WriteImage(read_volume(str(sample(tmp_path))), str(path))
    data = bytearray(path.read_bytes())
    data[byte] ^= 0x01
    path.write_bytes(bytes(data))
    refused(path, "gzip stream is damaged")


@pytest.mark.parametrize("pixdim", [float("nan"), float("inf"), 0.0, -3.0, 5.0])
def test_nifti_pixdim_contradicting_a_valid_sform_follows_the_sform_with_one_warning(tmp_path, pixdim):
    source = sample(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = read_volume(str(patched(source, 88, "<f", pixdim)))
    assert image.GetSpacing() == pytest.approx((1.0, 1.0, 3.0))
    assert image.GetDirection() == pytest.approx(np.eye(3).ravel())
    assert image.GetOrigin() == pytest.approx((5.0, 6.0, 7.0))
    notes = [str(w.message) for w in caught if issubclass(w.category, FAGANWarning)]
    assert len(notes) == 1 and "follows the sform" in notes[0] and "pixdim" in notes[0], notes
    assert not any(".cxx" in str(w.message) or "0x" in str(w.message) for w in caught)


@pytest.mark.parametrize("pixdim", [float("nan"), 0.0, -3.0])
def test_nifti_pixdim_invalid_without_an_sform_is_refused(tmp_path, pixdim):
    source = patched(sample(tmp_path), 254, "<h", 0, name="nosform.nii")  # sform_code 0: the qform (with pixdim) decides
    refused(patched(source, 88, "<f", pixdim), "pixdim")


def test_nifti_without_an_orientation_is_read_as_itk_does_with_one_warning(tmp_path):
    """Both codes 0: read as ITK does (identity direction), which nibabel-based tools place flipped; nothing said so."""
    source = patched(patched(sample(tmp_path), 254, "<h", 0, name="nosform.nii"), 252, "<h", 0, name="nocodes.nii")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = read_volume(str(source))
    lines = [str(w.message) for w in caught if issubclass(w.category, FAGANWarning)]
    assert len(lines) == 1 and "sform_code and qform_code are 0" in lines[0] and "identity direction" in lines[0]
    assert image.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize("unit, mm_per_unit", [(1, 1000.0), (3, 0.001), (2, 1.0), (0, 1.0)], ids=["metre", "micron", "mm", "unknown"])
@pytest.mark.parametrize("rule", ["sform", "qform"])
def test_nifti_transform_in_metres_or_microns_is_read_in_millimetres(tmp_path, unit, mm_per_unit, rule):
    """xyzt_units: a transform stored in metres or microns was taken as millimetres (a 1 mm voxel read as 1000 mm)."""
    source = sample(tmp_path)
    if rule == "qform":
        source = patched(source, 254, "<h", 0, name="qform.nii")  # sform_code 0: the qform decides
    data = bytearray(source.read_bytes())
    for start, count in ((76 + 4, 3), (280, 12)):  # pixdim[1..3] and the sform rows, in the file's unit
        values = struct.unpack_from(f"<{count}f", data, start)
        struct.pack_into(f"<{count}f", data, start, *(v / mm_per_unit for v in values))
    for offset in (268, 272, 276):  # the qform offsets
        struct.pack_into("<f", data, offset, struct.unpack_from("<f", data, offset)[0] / mm_per_unit)
    data[123] = unit  # xyzt_units: the spatial code in its low 3 bits
    path = tmp_path / f"units{unit}.nii"
    path.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = read_volume(str(path))
    assert image.GetSpacing() == pytest.approx((1.0, 1.0, 3.0), rel=1e-5)
    assert image.GetOrigin() == pytest.approx((5.0, 6.0, 7.0), rel=1e-5)
    assert not [w for w in caught if issubclass(w.category, FAGANWarning)]


@pytest.mark.parametrize("direction", [(2, 0, 0, 0, 2, 0, 0, 0, 2), (1, 0, 0, 0, 1, 0, 0, 0, 0.5)])
def test_a_scaled_direction_is_refused(tmp_path, direction):
    """A MetaImage TransformMatrix that holds the spacing was accepted: .mha output kept it, NIfTI output dropped it."""
    image = sitk.GetImageFromArray(np.ones((4, 8, 8), dtype=np.float32))
    image.SetDirection(direction)
    sitk.WriteImage(image, str(tmp_path / "scaled.mha"))
    refused(tmp_path / "scaled.mha", "direction columns have lengths")


@pytest.mark.parametrize("slope, inter", [(2.0, float("inf")), (float("nan"), 1.0), (float("inf"), 0.0), (0.0, 5.0)])
def test_nifti_voxel_scaling_that_readers_disagree_on_is_refused(tmp_path, slope, inter):
    """ITK applied part of such a scaling and nibabel none of it: values were read without a word."""
    refused(patched(patched(sample(tmp_path), 112, "<f", slope), 116, "<f", inter), "scl_")


def test_cli_prints_the_geometry_rule_not_itk_text(tmp_path):
    import subprocess
    import sys

    edited = patched(sample(tmp_path), 88, "<f", float("nan"))
    proc = subprocess.run([sys.executable, "-m", "fagan_engine", "sr", str(edited), str(tmp_path / "o.nrrd"), "--scale", "2",
                           "--method", "bicubic", "--progress", "none"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("warning: ") and "follows the sform" in proc.stderr
    assert sitk.ReadImage(str(tmp_path / "o.nrrd")).GetSpacing() == pytest.approx((0.5, 0.5, 3.0))


@pytest.mark.parametrize("ext", [".mha", ".nrrd"])
def test_int16_header_with_latin1_text_is_read(tmp_path, ext):
    image = sitk.Cast(read_volume(str(sample(tmp_path))), sitk.sitkInt16)
    path = tmp_path / f"v{ext}"
    sitk.WriteImage(image, str(path), False)
    data = path.read_bytes()
    if ext == ".mha":
        at = data.index(b"ElementDataFile")
        data = data[:at] + "PatientName = Müller\n".encode("latin-1") + data[at:]
    else:
        at = data.index(b"\n\n")
        data = data[:at] + "\nPatientName:=Müller".encode("latin-1") + data[at:]
    path.write_bytes(data)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_volume(str(path))), sitk.GetArrayFromImage(image).astype(np.float32))


@pytest.mark.parametrize("how", ["symlink", "hardlink", "detached-data"])
def test_output_reaching_the_input_is_refused_even_with_force(tmp_path, how):
    source = sample(tmp_path, "in.mhd" if how == "detached-data" else "in.nii")
    files = {p: p.read_bytes() for p in tmp_path.iterdir()}
    if how == "symlink":
        output = tmp_path / "link.nii"
        os.symlink(source, output)
    elif how == "hardlink":
        output = tmp_path / "hard.nii"
        os.link(source, output)
    else:
        output = tmp_path / "in.nhdr"  # writes in.raw, the data file of in.mhd
    with pytest.raises(OutputError, match="input") as excinfo:
        write_volume(read_volume(str(source)), str(output), force=True, input_path=str(source))
    assert "\n" not in str(excinfo.value)
    assert all(p.read_bytes() == data for p, data in files.items())


def test_library_messages_lose_source_locations_and_object_addresses():
    from fagan_engine.util.stdio_capture import CapturedText

    noise = CapturedText()
    noise.lines = ["WARNING: In /tmp/SimpleITK-build/ITK/Modules/IO/NIFTI/src/itkNiftiImageIO.cxx, line 2008",
                   "NiftiImageIO (0x55f66c2e11f0): p.nii has unexpected scales in sform"]
    assert noise.first_message() == "p.nii has unexpected scales in sform" and not noise.has_error()
    noise.lines = ["Warning: In /src/gdcmReader.cxx, line 521, function bool gdcm::Reader::InternalReadCommon()", "odd tag",
                   "ERROR: In /src/itkImageFileReader.hxx, line 97", "ImageFileReader (0x1): could not read the data"]
    assert noise.first_message() == "could not read the data" and noise.has_error()


def test_api_paths_with_a_nul_byte_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="NUL byte"):
        read_volume(str(tmp_path / "a\0.nii"))
    with pytest.raises(InputError, match="NUL byte"):
        write_volume(read_volume(str(sample(tmp_path))), str(tmp_path / "o\0.nii"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii"]
