"""Volume I/O: exact geometry round trips, clear one-line errors, atomic writes with no leftovers."""
from __future__ import annotations

import contextlib
import errno
import locale
import os
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from fagan_engine.io.volume_io import (
    SUPPORTED_EXTENSIONS,
    check_output_path,
    from_nibabel,
    read_volume,
    split_extension,
    validate_image,
    write_volume,
)
from fagan_engine.util.errors import ConfigError, FAGANWarning, InputError, OutputError

SIZE = (12, 10, 6)
SPACING = (0.9, 1.3, 3.0)
ORIGIN = (10.5, -20.25, 33.0)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def rotation(axis, angle: float) -> np.ndarray:
    """Rodrigues rotation about an arbitrary axis."""
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def oblique_volume(seed: int = 0) -> sitk.Image:
    """Anisotropic, obliquely oriented float32 volume with integer values (exact in int16 DICOM)."""
    values = np.random.default_rng(seed).integers(-1000, 3000, size=SIZE[::-1]).astype(np.float32)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(rotation([1, 2, 3], 0.4).ravel().tolist())
    return image


def noise_volume() -> sitk.Image:
    """96 KB of incompressible float32 noise."""
    return sitk.GetImageFromArray(np.random.default_rng(0).random((20, 30, 40)).astype(np.float32))


def assert_same_geometry(actual: sitk.Image, expected: sitk.Image, tol: float = 1e-4) -> None:
    assert actual.GetSize() == expected.GetSize()
    np.testing.assert_allclose(actual.GetOrigin(), expected.GetOrigin(), rtol=0, atol=tol)
    np.testing.assert_allclose(actual.GetSpacing(), expected.GetSpacing(), rtol=0, atol=tol)
    np.testing.assert_allclose(actual.GetDirection(), expected.GetDirection(), rtol=0, atol=tol)


def assert_one_line(excinfo) -> None:
    message = str(excinfo.value)
    assert message and "\n" not in message and "Traceback" not in message, message


def assert_no_leftovers(folder: Path) -> None:
    leftovers = [p.name for p in folder.iterdir() if ".tmp-" in p.name]
    assert not leftovers, leftovers


def write_dicom_series(image: sitk.Image, folder: Path, series_uid: str, prefix: str = "slice") -> None:
    """SimpleITK's DICOM series recipe: int16 slices with position/orientation tags per slice."""
    folder.mkdir(parents=True, exist_ok=True)
    volume = sitk.Cast(image, sitk.sitkInt16)
    d = volume.GetDirection()
    shared = {
        "0008|0008": "DERIVED\\SECONDARY",
        "0008|0021": "20240101",
        "0008|0031": "120000",
        "0008|0060": "MR",
        "0008|103e": "fagan test series",
        "0020|000e": series_uid,
        "0020|0037": "\\".join(repr(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
        "0018|0050": repr(volume.GetSpacing()[2]),
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    with _locale_kept():  # ITK's GDCM writer leaves the process in the C locale (later text I/O would be ASCII)
        _write_slices(writer, volume, folder, series_uid, prefix, shared)


@contextlib.contextmanager
def _locale_kept():
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_slices(writer: sitk.ImageFileWriter, volume: sitk.Image, folder: Path, series_uid: str, prefix: str, shared: dict) -> None:
    for k in range(volume.GetDepth()):
        slice_ = volume[:, :, k]
        for tag, value in shared.items():
            slice_.SetMetaData(tag, value)
        slice_.SetMetaData("0020|0032", "\\".join(repr(v) for v in volume.TransformIndexToPhysicalPoint((0, 0, k))))
        slice_.SetMetaData("0020|0013", str(k + 1))
        slice_.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        writer.SetFileName(str(folder / f"{prefix}{k:03d}.dcm"))
        writer.Execute(slice_)


@contextlib.contextmanager
def tmpfs(folder: Path, options: str):
    """Mount a real tmpfs (root on Linux only); skip the test where that is not permitted."""
    if not IS_ROOT or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root on Linux")
    folder.mkdir(exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)]
    mounted = subprocess.run(command, capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)  # lazy: see the .nhdr descriptor leak


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("ext", SUPPORTED_EXTENSIONS)
def test_round_trip_keeps_geometry_and_voxels(tmp_path, ext):
    image = oblique_volume()
    path = tmp_path / f"volume{ext}"
    write_volume(image, str(path))
    back = read_volume(str(path))
    assert back.GetPixelID() == sitk.sitkFloat32
    assert_same_geometry(back, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert_no_leftovers(tmp_path)


@pytest.mark.parametrize("ext, compress, data_file", [(".mhd", True, "volume.zraw"), (".nhdr", False, "volume.raw")])
def test_detached_formats_write_header_and_data_file(tmp_path, ext, compress, data_file):
    write_volume(oblique_volume(), str(tmp_path / f"volume{ext}"), compress=compress)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"volume{ext}", data_file])


def test_round_trip_dicom_series_folder(tmp_path):
    image = oblique_volume()
    write_dicom_series(image, tmp_path / "series", "1.2.826.0.1.3680043.2.1125.1.1")
    back = read_volume(str(tmp_path / "series"))
    assert_same_geometry(back, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))


def test_dicom_folder_with_two_series_needs_series_id(tmp_path):
    write_dicom_series(oblique_volume(0), tmp_path, "1.2.826.0.1.3680043.2.1125.1.1", prefix="a")
    write_dicom_series(oblique_volume(1), tmp_path, "1.2.826.0.1.3680043.2.1125.1.2", prefix="b")
    with pytest.raises(InputError, match="holds 2 DICOM series") as excinfo:
        read_volume(str(tmp_path))
    assert_one_line(excinfo)
    chosen = read_volume(str(tmp_path), series_id="1.2.826.0.1.3680043.2.1125.1.2")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(chosen), sitk.GetArrayFromImage(oblique_volume(1)))
    with pytest.raises(InputError, match="not found"):
        read_volume(str(tmp_path), series_id="1.2.3")


def test_folder_without_dicom_is_rejected(tmp_path):
    with pytest.raises(InputError, match="no DICOM series") as excinfo:
        read_volume(str(tmp_path))
    assert_one_line(excinfo)


# --- nibabel fallback ----------------------------------------------------------------------


def test_sheared_nifti_refused_by_simpleitk_is_read_exactly_with_nibabel(tmp_path):
    affine = np.array([[0.9, 0.3, 0.0, 10.0], [0.0, 1.3, 0.2, -5.0], [0.1, 0.0, 3.0, 2.0], [0, 0, 0, 1]])
    data = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    nifti = nib.Nifti1Image(data, affine)
    nifti.set_qform(None, code=0)
    nifti.set_sform(affine, code=2)
    path = tmp_path / "sheared.nii.gz"
    nib.save(nifti, str(path))
    with pytest.raises(RuntimeError, match="orthonormal"):
        sitk.ReadImage(str(path))
    image = read_volume(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), data.transpose(2, 1, 0))
    for index in [(0, 0, 0), (4, 0, 0), (0, 5, 0), (0, 0, 6), (3, 2, 5)]:
        ras = affine @ np.array([*index, 1.0])
        lps = [-ras[0], -ras[1], ras[2]]
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint(index), lps, atol=1e-4)


def test_nibabel_conversion_matches_simpleitk_on_oblique_nifti(tmp_path):
    path = tmp_path / "oblique.nii.gz"
    sitk.WriteImage(oblique_volume(), str(path))
    converted = from_nibabel(nib.load(str(path)))
    assert_same_geometry(converted, sitk.ReadImage(str(path)))


# --- bad input -----------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="input not found") as excinfo:
        read_volume(str(tmp_path / "nope.nii.gz"))
    assert_one_line(excinfo)


def test_corrupt_file(tmp_path):
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(InputError, match="cannot read") as excinfo:
        read_volume(str(path))
    assert_one_line(excinfo)


def test_unsupported_input_extension(tmp_path):
    path = tmp_path / "volume.png"
    path.write_bytes(b"not a volume")
    with pytest.raises(InputError, match="supported: .nii") as excinfo:
        read_volume(str(path))
    assert_one_line(excinfo)


@pytest.mark.parametrize("ext", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_truncated_file(tmp_path, ext):
    """ITK pads truncated NIfTI data with zeros silently; read_volume must refuse it."""
    path = tmp_path / f"cut{ext}"
    sitk.WriteImage(noise_volume(), str(path), True)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(InputError, match="cannot read") as excinfo:
        read_volume(str(path))
    assert_one_line(excinfo)


def test_4d_volume(tmp_path):
    path = tmp_path / "series.nii.gz"
    sitk.WriteImage(sitk.Image([4, 4, 4, 3], sitk.sitkFloat32), str(path))
    with pytest.raises(InputError, match="4D") as excinfo:
        read_volume(str(path))
    assert_one_line(excinfo)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd"])
def test_rgb_volume(tmp_path, ext):
    path = tmp_path / f"rgb{ext}"
    sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkVectorUInt8, 3), str(path))
    with pytest.raises(InputError, match="3 components") as excinfo:
        read_volume(str(path))
    assert_one_line(excinfo)


def test_2d_image_rejected_but_single_slice_volume_allowed():
    with pytest.raises(InputError, match="2D") as excinfo:
        validate_image(sitk.Image([8, 8], sitk.sitkFloat32))
    assert_one_line(excinfo)
    single = sitk.Image([8, 8, 1], sitk.sitkInt16)
    single.SetSpacing((0.5, 0.5, 4.0))
    assert_same_geometry(validate_image(single), single)


def test_empty_axis_in_file_and_in_memory(tmp_path):
    path = tmp_path / "empty.nii"
    nib.save(nib.Nifti1Image(np.zeros((0, 4, 4), np.float32), np.eye(4)), str(path))
    with pytest.raises(InputError, match="empty axis") as excinfo:
        read_volume(str(path))
    assert_one_line(excinfo)
    with pytest.raises(InputError, match="empty axis"):
        validate_image(sitk.Image([4, 0, 4], sitk.sitkFloat32))


def test_complex_pixels_rejected():
    with pytest.raises(InputError, match="not a real-valued number"):
        validate_image(sitk.Image([4, 4, 4], sitk.sitkComplexFloat32))


@pytest.mark.parametrize("ext", [".nrrd", ".nii.gz"])  # NIfTI: ITK zeroes them itself; the count comes from the file's data
def test_nan_and_inf_with_both_policies(tmp_path, ext):
    image = oblique_volume()
    values = sitk.GetArrayFromImage(image)
    values[0, 0, :3] = np.nan
    values[1, 2, 3] = np.inf
    values[2, 3, 4] = -np.inf
    dirty = sitk.GetImageFromArray(values)
    dirty.CopyInformation(image)
    path = tmp_path / f"dirty{ext}"
    sitk.WriteImage(dirty, str(path))
    with pytest.raises(InputError, match=f"5 non-finite \\(NaN or Inf\\) voxels of {values.size}") as excinfo:
        read_volume(str(path))
    assert_one_line(excinfo)
    with pytest.warns(FAGANWarning, match="5 of .* voxels were NaN or Inf and were set to 0"):  # how many is said
        cleaned = read_volume(str(path), nan_policy="zero")
    assert_same_geometry(cleaned, image)
    expected = np.where(np.isfinite(values), values, 0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(cleaned), expected)
    with pytest.raises(ConfigError, match="nan_policy"):
        validate_image(dirty, nan_policy="ignore")


def test_integer_input_cast_to_float32_with_geometry():
    image = sitk.Cast(oblique_volume(), sitk.sitkInt16)
    checked = validate_image(image)
    assert checked.GetPixelID() == sitk.sitkFloat32
    assert_same_geometry(checked, image, tol=0.0)


# --- output paths --------------------------------------------------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_output_same_as_input_is_refused_even_with_force(tmp_path, force):
    path = tmp_path / "volume.nii.gz"
    write_volume(oblique_volume(0), str(path))
    before = path.read_bytes()
    with pytest.raises(OutputError, match="is the input file") as excinfo:
        write_volume(oblique_volume(1), str(tmp_path / "." / "volume.nii.gz"), force=force, input_path=str(path))
    assert_one_line(excinfo)
    assert path.read_bytes() == before
    assert_no_leftovers(tmp_path)


@pytest.mark.parametrize("existing", ["out.nrrd", "out.raw"])
def test_existing_output_or_its_data_file_needs_force(tmp_path, existing):
    output = tmp_path / ("out.nhdr" if existing == "out.raw" else existing)
    (tmp_path / existing).write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists") as excinfo:
        write_volume(oblique_volume(), str(output))
    assert_one_line(excinfo)
    assert (tmp_path / existing).read_bytes() == b"precious"
    write_volume(oblique_volume(), str(output), force=True, compress=False)
    assert_same_geometry(read_volume(str(output)), oblique_volume())


def test_output_folder_missing(tmp_path):
    with pytest.raises(OutputError, match="does not exist") as excinfo:
        check_output_path(None, str(tmp_path / "missing" / "out.nii.gz"), force=False)
    assert_one_line(excinfo)


def test_output_is_a_folder(tmp_path):
    (tmp_path / "out.nii").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        check_output_path(None, str(tmp_path / "out.nii"), force=True)


def test_unsupported_output_extension_lists_supported(tmp_path):
    with pytest.raises(OutputError, match=r"supported: \.nii, \.nii\.gz, \.nrrd") as excinfo:
        write_volume(oblique_volume(), str(tmp_path / "out.png"))
    assert_one_line(excinfo)


@pytest.mark.skipif(os.name == "nt", reason="permission bits do not lock folders on Windows")
def test_unwritable_output_folder(tmp_path):
    folder = tmp_path / "locked"
    if IS_ROOT:  # root ignores permission bits: use a read-only file system instead
        context = tmpfs(folder, "ro,size=64k")
    else:
        folder.mkdir()
        folder.chmod(0o500)
        context = contextlib.nullcontext(folder)
    with context:
        with pytest.raises(OutputError, match="not writable") as excinfo:
            write_volume(oblique_volume(), str(folder / "out.nii.gz"))
        assert_one_line(excinfo)
        assert list(folder.iterdir()) == []
    folder.chmod(0o700)


@pytest.fixture
def full_disk(tmp_path):
    """A real 64 KiB tmpfs: every test volume below is larger, so each write hits ENOSPC."""
    with tmpfs(tmp_path / "disk", "size=64k") as folder:
        yield folder


@pytest.mark.parametrize("ext", SUPPORTED_EXTENSIONS)
def test_full_disk_on_real_tmpfs_leaves_nothing(full_disk, ext):
    with pytest.raises(OutputError, match="no space left on device while writing") as excinfo:
        write_volume(noise_volume(), str(full_disk / f"out{ext}"))
    assert_one_line(excinfo)
    assert list(full_disk.iterdir()) == []
    if ext != ".nhdr":  # teem leaks the detached data file's descriptor on write errors (docs/decisions.md)
        assert shutil.disk_usage(str(full_disk)).free == shutil.disk_usage(str(full_disk)).total


def test_full_disk_on_real_tmpfs_keeps_existing_output(full_disk):
    existing = full_disk / "out.nii.gz"
    existing.write_bytes(b"old result")
    with pytest.raises(OutputError, match="no space left"):
        write_volume(noise_volume(), str(existing), force=True)
    assert existing.read_bytes() == b"old result"
    assert [p.name for p in full_disk.iterdir()] == ["out.nii.gz"]


def test_enospc_simulated_at_fsync_leaves_nothing(tmp_path, monkeypatch):
    """Portable variant of the full-disk test: fsync fails with ENOSPC (as on NFS or ext4 delalloc)."""

    def no_space(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OutputError, match="no space left on device while writing") as excinfo:
        write_volume(oblique_volume(), str(tmp_path / "out.mhd"))
    assert_one_line(excinfo)
    assert list(tmp_path.iterdir()) == []


def test_split_extension():
    assert split_extension("/a/b.c/Brain.NII.GZ") == ("/a/b.c/Brain", ".nii.gz")
    assert split_extension("scan.nrrd") == ("scan", ".nrrd")
    assert split_extension("noext") == ("noext", "")


# The tests below were added after a mutation audit (2026-12-07): each fails on a plausible bug the suite missed.

def test_integer_output_rounds_to_nearest():
    from fagan_engine.io.volume_io import cast_array

    assert cast_array(np.array([1.6, -1.6, 2.4, 40000.0], np.float32), "int16").tolist() == [2, -2, 2, 32767]


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_a_written_nifti_is_checked_without_nibabel(tmp_path, monkeypatch, name) -> None:
    """Where nibabel is not installed (Slicer's Python, bicubic needing nothing else) every NIfTI output was refused as
    "the written file is incomplete": the check read the header with nibabel."""
    import gzip
    import sys

    import numpy as np
    import SimpleITK as sitk

    from fagan_engine.io.nifti_checks import nifti_complete

    path = tmp_path / name
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)), str(path))
    monkeypatch.setitem(sys.modules, "nibabel", None)
    assert nifti_complete(path)
    raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    cut = raw[:-8]
    path.write_bytes(gzip.compress(cut) if name.endswith(".gz") else cut)
    assert not nifti_complete(path)


def test_an_unknown_dicom_gap_policy_is_refused_for_a_file_too(tmp_path) -> None:
    import numpy as np
    import SimpleITK as sitk

    from fagan_engine.io.volume_io import read_volume
    from fagan_engine.util.errors import ConfigError

    path = tmp_path / "v.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 4, 4), np.float32)), str(path))
    with pytest.raises(ConfigError, match="DICOM gap policy must be one of"):
        read_volume(str(path), dicom_gaps="bogus")
