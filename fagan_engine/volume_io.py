"""Read, validate and atomically write 3D scalar volumes, keeping their geometry exactly.

Reading goes through SimpleITK (NIfTI, NRRD, MetaImage, DICOM series folders); a NIfTI that
SimpleITK refuses (for example a sheared, non-orthonormal sform) is read with nibabel and its
RAS affine converted exactly to ITK's LPS origin/spacing/direction. Every image, read from disk
or handed over in memory, passes ``validate_image``: a 3D, single-channel, real-valued volume
with at least one voxel along each axis, cast to float32.

Writing is atomic: the image is written into a hidden temporary folder next to the output,
synced, checked, and only then moved into place, so an interrupted or failed write (full disk,
I/O error) never leaves a partial output and never destroys an existing file. See
``docs/decisions.md`` ("Volume I/O and geometry") for the overwrite and NaN policies.
"""
from __future__ import annotations

import errno
import gzip
import os
import re
import shutil
import struct
import tempfile
import zlib
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from .atomic import fsync_dir, fsync_file
from .errors import ConfigError, InputError, OutputError

SUPPORTED_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
"""File extensions that can be read and written; a DICOM series folder can also be read."""

DETACHED_EXTENSIONS = (".nhdr", ".mhd")
"""Header-only formats whose voxels live in a separate data file next to the header."""

NAN_POLICIES = ("error", "zero")

_NIFTI_EXTENSIONS = (".nii", ".nii.gz")
_DATA_FILE_SUFFIXES = {".mhd": (".raw", ".zraw"), ".nhdr": (".raw", ".raw.gz")}
_SCALAR_PIXEL_IDS = frozenset(
    (
        sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkUInt32,
        sitk.sitkInt32, sitk.sitkUInt64, sitk.sitkInt64, sitk.sitkFloat32, sitk.sitkFloat64,
    )
)
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
_LOW_SPACE_BYTES = 1 << 20  # a failed write with less free space than this is reported as a full disk
_ITK_PREFIX = re.compile(r"^(ITK ERROR: \w+\(0x[0-9a-fA-F]+\): |sitk::ERROR: )")


def split_extension(path: str) -> Tuple[str, str]:
    """Split a path into (stem, lower-case extension), treating ``.nii.gz`` as one extension."""
    name = os.path.basename(path)
    if name.lower().endswith(".nii.gz"):
        return path[: -len(".nii.gz")], ".nii.gz"
    stem, ext = os.path.splitext(path)
    return stem, ext.lower()


def read_volume(path: str, nan_policy: str = "error", series_id: Optional[str] = None) -> sitk.Image:
    """Read a volume file or DICOM series folder as a validated 3D float32 image.

    ``series_id`` picks one series when a DICOM folder holds several.
    """
    _check_nan_policy(nan_policy)
    source = Path(path)
    if not source.exists():
        raise InputError(f"input not found: {path}")
    image = _read_dicom_series(source, series_id) if source.is_dir() else _read_file(source)
    return validate_image(image, nan_policy)


def validate_image(image: sitk.Image, nan_policy: str = "error") -> sitk.Image:
    """Check that ``image`` is a 3D scalar real-valued volume and return it as float32.

    Non-finite voxels raise InputError (``nan_policy="error"``) or become 0 (``"zero"``).
    Origin, spacing and direction are kept; the input itself is returned when nothing changes.
    """
    _check_nan_policy(nan_policy)
    _check_shape_and_type(image)
    if image.GetPixelID() != sitk.sitkFloat32:
        image = sitk.Cast(image, sitk.sitkFloat32)
    return _apply_nan_policy(image, nan_policy)


def from_nibabel(nifti: "nibabel.Nifti1Image") -> sitk.Image:  # noqa: F821
    """Convert a nibabel image to SimpleITK, mapping its RAS affine exactly to LPS geometry.

    Affine columns need not be orthonormal: a sheared affine gives a non-orthogonal direction.
    Trailing axes of size 1 beyond the third are dropped (as ITK does).
    """
    data = np.asarray(nifti.get_fdata(dtype=np.float32))
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise _dimension_error(data.ndim, data.shape)
    matrix = _LPS_FROM_RAS @ nifti.affine[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing(spacing.tolist())
    image.SetDirection((matrix / spacing).ravel().tolist())
    image.SetOrigin((_LPS_FROM_RAS @ nifti.affine[:3, 3]).tolist())
    return image


def check_output_path(input_path: Optional[str], output_path: str, force: bool = False) -> None:
    """Raise OutputError unless ``output_path`` can be written without losing data.

    Refused: unsupported extension, missing or unwritable folder, an output that is a folder,
    and, unless ``force``, an output that is the input or any other existing file (for
    ``.nhdr``/``.mhd`` also the data file next to the header).
    """
    ext = split_extension(output_path)[1]
    if ext not in SUPPORTED_EXTENSIONS:
        raise OutputError(
            f"unsupported output format {ext or '(no extension)'!r} for {output_path}; "
            f"supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    target = Path(output_path)
    folder = target.parent
    if not folder.is_dir():
        raise OutputError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder is not writable: {folder}")
    if target.is_dir():
        raise OutputError(f"output {output_path} is a folder, not a file name")
    if force:
        return
    if input_path is not None and _same_file(input_path, output_path):
        raise OutputError(
            f"output {output_path} is the input file; choose another output or pass --force to replace it"
        )
    existing = [p for p in _output_files(target) if os.path.lexists(p)]
    if existing:
        raise OutputError(f"output {existing[0]} already exists; pass --force to overwrite it")


def write_volume(
    image: sitk.Image,
    path: str,
    force: bool = False,
    input_path: Optional[str] = None,
    compress: bool = True,
) -> None:
    """Write ``image`` to ``path`` atomically; on failure raise OutputError and leave no file behind.

    The image is written into a hidden ``.<name>.tmp-XXXX`` folder beside ``path``, fsynced,
    checked complete, then each file is moved into place with ``os.replace`` (for
    ``.nhdr``/``.mhd`` the data file first, the header last).
    """
    check_output_path(input_path, path, force)
    target = Path(path)
    stem = os.path.basename(split_extension(path)[0])
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{stem}.tmp-", dir=str(target.parent)))
    except OSError as exc:
        raise _write_error(target, exc.strerror, exc.errno) from None
    try:
        for written in _write_staged(image, staging, target, compress):
            os.replace(written, target.parent / written.name)
    except OSError as exc:
        raise _write_error(target, exc.strerror, exc.errno) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    fsync_dir(target.parent)


def _check_nan_policy(nan_policy: str) -> None:
    if nan_policy not in NAN_POLICIES:
        raise ConfigError(f"nan_policy must be one of {', '.join(NAN_POLICIES)}; got {nan_policy!r}")


def _read_file(path: Path) -> sitk.Image:
    ext = split_extension(str(path))[1]
    if ext not in SUPPORTED_EXTENSIONS:
        raise InputError(
            f"unsupported input format {ext or '(no extension)'!r} for {path}; "
            f"supported: {', '.join(SUPPORTED_EXTENSIONS)} or a DICOM series folder"
        )
    if ext in _NIFTI_EXTENSIONS:
        return _read_nifti(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"cannot read {path}: {_itk_detail(exc)}") from None


def _read_nifti(path: Path) -> sitk.Image:
    """SimpleITK first; nibabel when SimpleITK refuses the file."""
    if not _nifti_data_complete(path):
        raise InputError(f"cannot read {path}: file is truncated (it holds fewer voxels than its header declares)")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        sitk_detail = _itk_detail(exc)
    try:
        import nibabel as nib

        return from_nibabel(nib.load(str(path)))
    except InputError:
        raise
    except Exception:  # nibabel raises many types; SimpleITK's reason is the one to report
        raise InputError(f"cannot read {path}: {sitk_detail}") from None


def _nifti_data_complete(path: Path) -> bool:
    """False when the file is shorter than its header declares (ITK would silently pad with zeros)."""
    try:
        import nibabel as nib

        header = nib.load(str(path)).header
    except Exception:  # unreadable header: SimpleITK reports the problem
        return True
    shape = header.get_data_shape()
    expected = int(header.get_data_offset()) + int(np.prod(shape)) * header.get_data_dtype().itemsize
    if split_extension(str(path))[1] == ".nii":
        return path.stat().st_size >= expected
    return _gzip_trailer_size(path) == expected % (1 << 32) or _gunzipped_size(path) >= expected


def _gzip_trailer_size(path: Path) -> int:
    """The uncompressed size modulo 2**32 stored in the last gzip member's trailer."""
    with open(path, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        return struct.unpack("<I", handle.read(4))[0]


def _gunzipped_size(path: Path) -> int:
    """Decompressed size of a (possibly multi-member) gzip file, or -1 when the stream is broken."""
    total = 0
    try:
        with gzip.open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                total += len(chunk)
    except (EOFError, OSError, zlib.error):
        return -1
    return total


def _read_dicom_series(folder: Path, series_id: Optional[str]) -> sitk.Image:
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise InputError(f"no DICOM series found in folder {folder}")
    if series_id is None and len(ids) > 1:
        raise InputError(f"folder {folder} holds {len(ids)} DICOM series; pass one as series_id: {', '.join(ids)}")
    if series_id is not None and series_id not in ids:
        raise InputError(f"DICOM series {series_id} not found in {folder}; available: {', '.join(ids)}")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id or ids[0]))
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read DICOM series in {folder}: {_itk_detail(exc)}") from None


def _check_shape_and_type(image: sitk.Image) -> None:
    size = image.GetSize()
    if image.GetDimension() != 3:
        raise _dimension_error(image.GetDimension(), size)
    components = image.GetNumberOfComponentsPerPixel()
    if components > 1:
        raise InputError(
            f"input has {components} components per voxel (RGB or vector image); a single-channel volume is required"
        )
    if image.GetPixelID() not in _SCALAR_PIXEL_IDS:
        raise InputError(f"input pixel type '{image.GetPixelIDTypeAsString()}' is not a real-valued number")
    if 0 in size:
        raise InputError(f"input has an empty axis (size {size})")


def _dimension_error(dim: int, size: Tuple[int, ...]) -> InputError:
    if dim == 2:
        return InputError(
            f"input is a 2D image (size {size}); a 3D volume is required "
            "(a single slice must be a 3D image with one slice)"
        )
    return InputError(
        f"input is {dim}D (size {tuple(size)}); a single 3D volume is required (extract one volume of a series first)"
    )


def _apply_nan_policy(image: sitk.Image, nan_policy: str) -> sitk.Image:
    values = sitk.GetArrayViewFromImage(image)
    finite = np.isfinite(values)
    bad = values.size - int(np.count_nonzero(finite))
    if bad == 0:
        return image
    if nan_policy == "error":
        raise InputError(
            f"input has {bad} non-finite (NaN or Inf) voxels of {values.size}; "
            "use the 'zero' NaN policy to replace them with 0"
        )
    cleaned = sitk.GetImageFromArray(np.where(finite, values, np.float32(0)))
    cleaned.CopyInformation(image)
    return cleaned


def _same_file(first: str, second: str) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist yet
        return os.path.realpath(first) == os.path.realpath(second)


def _output_files(target: Path) -> List[Path]:
    """The header/image file and, for detached formats, every data file name it may use."""
    stem, ext = split_extension(str(target))
    return [target] + [Path(stem + suffix) for suffix in _DATA_FILE_SUFFIXES.get(ext, ())]


def _write_staged(image: sitk.Image, staging: Path, target: Path, compress: bool) -> List[Path]:
    """Write ``target``'s files into ``staging``, sync and check them; return them, header last."""
    staged = staging / target.name
    try:
        sitk.WriteImage(image, str(staged), compress)
    except RuntimeError as exc:
        raise _write_error(target, _itk_detail(exc)) from None
    if split_extension(str(staged))[1] in _NIFTI_EXTENSIONS and not _nifti_data_complete(staged):
        raise _write_error(target, "the written file is incomplete")
    files = sorted(staging.iterdir(), key=lambda f: f == staged)
    for written in files:
        fsync_file(written)
    return files


def _write_error(target: Path, detail: str, error_number: Optional[int] = None) -> OutputError:
    """One-line OutputError; a failure on a nearly full disk is reported as a full disk.

    ITK writers do not expose errno, so for them the free space left (measured while the
    partial file still exists) decides.
    """
    full = error_number == errno.ENOSPC or (error_number is None and _free_bytes(target.parent) < _LOW_SPACE_BYTES)
    if full:
        return OutputError(f"no space left on device while writing {target}")
    return OutputError(f"cannot write {target}: {detail}")


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(str(folder)).free
    except OSError:
        return _LOW_SPACE_BYTES


def _itk_detail(exc: RuntimeError) -> str:
    """The informative last line of a SimpleITK exception, without file/line and object prefixes."""
    lines = [line.strip() for line in str(exc).splitlines()]
    useful = [_ITK_PREFIX.sub("", line) for line in lines[1:] if line and not line.startswith("Reason:")]
    return useful[-1] if useful else (lines[0] if lines and lines[0] else type(exc).__name__)
