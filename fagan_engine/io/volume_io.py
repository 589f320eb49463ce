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

import hashlib
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from fagan_engine.io.dicom_series import read_dicom_series
from fagan_engine.io.geometry import direction_matrix
from fagan_engine.io.nifti_checks import inspect_nifti, is_sheared, nifti_complete
from fagan_engine.io.nifti_header import Geometry
from fagan_engine.io.paths import InputFiles, check_output_folder, check_path_text, lower_case_alias, path_text, written_files
from fagan_engine.io.text_header_checks import check_metaimage, check_nrrd
from fagan_engine.util.atomic import fsync_dir, fsync_file, process_alive, publish_files, write_error
from fagan_engine.util.errors import ConfigError, InputError, OutputError, warn
from fagan_engine.util.failures import interrupts_deferred
from fagan_engine.util.options import GAP_POLICIES, NAN_POLICIES, check_flags
from fagan_engine.util.stdio_capture import captured_stderr

SUPPORTED_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
"""File extensions that can be read and written; a DICOM series folder can also be read."""

DETACHED_EXTENSIONS = (".nhdr", ".mhd")
"""Header-only formats whose voxels live in a separate data file next to the header."""

MAX_ABS_VALUE = 1e30
"""Larger voxel magnitudes are refused: float32 (max 3.4e38) arithmetic on them overflows. Measured: FA-GAN with the
projection and the consistency map is exact up to 1e34 and returned zeros from 1e35 on (2026-12-07); the bound keeps a
margin of 10⁴. No MR image comes near it."""
DIRECTION_LENGTH_TOL = 1e-3
"""How far from 1 a direction column's length may be (headers store 6 or so decimals)."""

_NIFTI_EXTENSIONS = (".nii", ".nii.gz")
_IMAGE_IO = {
    ".nii": "NiftiImageIO", ".nii.gz": "NiftiImageIO", ".nrrd": "NrrdImageIO", ".nhdr": "NrrdImageIO",
    ".mha": "MetaImageIO", ".mhd": "MetaImageIO",
}
_SCALAR_PIXEL_IDS = frozenset(
    (
        sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkUInt32,
        sitk.sitkInt32, sitk.sitkUInt64, sitk.sitkInt64, sitk.sitkFloat32, sitk.sitkFloat64,
    )
)
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
_FAILURE_WORDS = re.compile(r"error|fail|cannot|could not|unable|not read", re.IGNORECASE)
_ITK_PREFIX = re.compile(r"^(ITK ERROR: \w+\(0x[0-9a-fA-F]+\): |sitk::ERROR: )")


def split_extension(path: str) -> Tuple[str, str]:
    """Split a path into (stem, lower-case extension), treating ``.nii.gz`` as one extension."""
    name = os.path.basename(path)
    if name.lower().endswith(".nii.gz"):
        return path[: -len(".nii.gz")], ".nii.gz"
    stem, ext = os.path.splitext(path)
    return stem, ext.lower()


def read_volume(
    path: str, nan_policy: str = "error", series_id: Optional[str] = None, dicom_gaps: str = "error"
) -> sitk.Image:
    """Read a volume file or DICOM series folder as a validated 3D float32 image.

    ``series_id`` picks one series when a DICOM folder holds several; ``dicom_gaps="resample"``
    interpolates a series with missing slices onto a uniform grid instead of refusing it.
    """
    _check_nan_policy(nan_policy)
    if dicom_gaps not in GAP_POLICIES:  # checked for files too, where it is not used: a typo is not silently taken
        raise ConfigError(f"DICOM gap policy must be one of {', '.join(GAP_POLICIES)}; got {dicom_gaps!r}")
    path = path_text(path, "input")
    source = Path(path)
    if not os.path.lexists(source):
        raise InputError(f"input not found: {path}")
    if source.is_dir():
        image = read_dicom_series(source, series_id, dicom_gaps)
    elif series_id is not None:
        raise InputError(f"a DICOM series id only applies to a DICOM folder, and {path} is a file")
    else:
        image = _read_file(source, nan_policy)
    return validate_image(image, nan_policy)


def voxel_digest(image: sitk.Image) -> str:
    """The first 16 hex digits of SHA-256 over the image's size and float32 voxels: the same data read from any path, in
    any format that keeps the values (a checkpoint records its training volumes' digests, ``fagan-eval`` compares them)."""
    digest = hashlib.sha256(np.asarray(image.GetSize(), dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(image), dtype="<f4").tobytes())
    return digest.hexdigest()[:16]


def validate_image(image: sitk.Image, nan_policy: str = "error") -> sitk.Image:
    """Check that ``image`` is a 3D scalar real-valued volume and return it as float32.

    Non-finite voxels raise InputError (``nan_policy="error"``) or become 0 (``"zero"``).
    Non-finite or non-positive geometry and values beyond +-MAX_ABS_VALUE are refused.
    Origin, spacing and direction are kept; the input itself is returned when nothing changes.
    """
    _check_nan_policy(nan_policy)
    if not isinstance(image, sitk.Image):
        raise InputError(f"the input must be a SimpleITK image (read a file with fagan_engine.io.volume_io.read_volume), "
                         f"got {type(image).__name__}")
    _check_shape_and_type(image)
    _check_geometry(image)
    _check_value_range(image)
    if image.GetPixelID() != sitk.sitkFloat32:
        cast = sitk.Cast(image, sitk.sitkFloat32)
        _copy_metadata(image, cast)
        image = cast
    return _apply_nan_policy(image, nan_policy)


def _copy_metadata(source: sitk.Image, target: sitk.Image) -> None:
    """Copy the header's text fields (e.g. the DICOM slice thickness, which through-plane SR reads);
    a value that is not UTF-8 (``PatientName`` in Latin-1) is left out: SimpleITK cannot store it back."""
    for key in source.GetMetaDataKeys():
        try:
            target.SetMetaData(key, source.GetMetaData(key))
        except (TypeError, UnicodeError):
            continue


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
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    spacing, direction, origin = lps_geometry(nifti.affine)
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.tolist())
    image.SetOrigin(origin.tolist())
    return image


def lps_geometry(affine: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ITK's (spacing, flattened direction, origin) of a NIfTI RAS affine, exactly (no orthogonalisation)."""
    matrix = _LPS_FROM_RAS @ affine[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero column is refused by validate_image
        direction = (matrix / spacing).ravel()
    return spacing, direction, _LPS_FROM_RAS @ affine[:3, 3]


def check_output_path(input_path: Optional[str], output_path: str, force: bool = False) -> None:
    """Raise OutputError unless ``output_path`` can be written without losing data.

    Refused: unsupported extension (any letter case is accepted), missing or unwritable folder,
    an output that is a folder, and, unless ``force``, an output that is the input or any other
    existing file the writer would create (for ``.nhdr``/``.mhd`` also the data file).
    """
    check_path_text(output_path, "output")
    ext = split_extension(output_path)[1]
    if ext not in SUPPORTED_EXTENSIONS:
        raise OutputError(
            f"unsupported output format {ext or '(no extension)'!r} for {output_path}; "
            f"supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    target = Path(output_path)
    check_output_folder(target.parent)
    if target.is_dir():
        raise OutputError(f"output {output_path} is a folder, not a file name")
    if input_path is not None and InputFiles([input_path]).reached_by(output_path):
        raise OutputError(f"output {output_path} is the input file (or shares its data); choose another output (--force never replaces an input)")
    if force:
        return
    existing = [p for p in output_files(target) if os.path.lexists(p)]
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

    The image is written into a hidden ``.<name>.tmp-<pid>-XXXX`` folder beside ``path``, fsynced,
    checked complete, then published (for ``.nhdr``/``.mhd`` the data file first, the header
    last). Without ``force`` publishing is a hard link, which fails if another process created
    the name meanwhile; with ``force`` it is ``os.replace``. NIfTI cannot hold a sheared
    (non-orthogonal) direction, so such an image is refused for ``.nii``/``.nii.gz``.
    """
    check_flags(force=force, compress=compress)
    path = path_text(path, "output")
    wanted = "write_volume writes a non-empty 3D scalar SimpleITK image (what read_volume takes back)"
    if not isinstance(image, sitk.Image):
        raise InputError(f"{wanted}, got {type(image).__name__}")
    try:
        _check_shape_and_type(image)  # read_volume's own rule
    except InputError as exc:
        raise InputError(f"{wanted}: {str(exc).replace('input ', 'this image ', 1)}") from None
    if not isinstance(compress, bool):
        raise InputError(f"compress must be True or False, got {compress!r}")
    check_output_path(None if input_path is None else path_text(input_path, "input"), path, force)
    target = Path(path)
    check_nifti_direction(target, direction_matrix(image))
    stem = os.path.basename(split_extension(path)[0])
    remove_stale_staging(target.parent, stem)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{stem}.tmp-{os.getpid()}-", dir=str(target.parent)))
    except OSError as exc:
        raise write_error(target, exc.strerror, exc.errno) from None
    try:
        staged = _write_staged(image, staging, target, compress)
        publish_files([(f, target if f == staged[-1] else target.parent / f.name) for f in staged], force, target)
    finally:
        with interrupts_deferred():  # a SIGTERM during the removal would leave the staging folder
            shutil.rmtree(staging, ignore_errors=True)
    fsync_dir(target.parent)


def check_nifti_direction(target: Path, direction: np.ndarray) -> None:
    """OutputError unless ``target`` can store ``direction``: NIfTI cannot hold a sheared (non-orthogonal) one."""
    if split_extension(str(target))[1] in _NIFTI_EXTENSIONS and is_sheared(direction):
        raise OutputError(
            f"cannot write {target}: its direction is sheared (not orthogonal), which NIfTI cannot store exactly; "
            "write .nrrd or .mha instead"
        )


def output_files(target: Path) -> List[Path]:
    """The header/image file and, for detached formats, every data file name the writer may use."""
    return written_files(str(target))


def remove_stale_staging(folder: Path, stem: str) -> None:
    """Remove ``.<stem>.tmp-<pid>-*`` staging folders whose writing process no longer runs."""
    for entry in folder.glob(f".{glob_escape(stem)}.tmp-*"):
        match = re.fullmatch(r"\.(.*)\.tmp-(\d+)-\w+", entry.name)
        if match and match.group(1) == stem and entry.is_dir() and not process_alive(int(match.group(2))):
            shutil.rmtree(entry, ignore_errors=True)


def glob_escape(text: str) -> str:
    """``text`` with glob metacharacters escaped."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _check_nan_policy(nan_policy: str) -> None:
    if nan_policy not in NAN_POLICIES:
        raise ConfigError(f"nan_policy must be one of {', '.join(NAN_POLICIES)}; got {nan_policy!r}")


def _read_file(path: Path, nan_policy: str) -> sitk.Image:
    ext = split_extension(str(path))[1]
    if ext not in SUPPORTED_EXTENSIONS:
        raise InputError(
            f"unsupported input format {ext or '(no extension)'!r} for {path}; "
            f"supported: {', '.join(SUPPORTED_EXTENSIONS)} or a DICOM series folder"
        )
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise InputError(f"input {path} is not a regular file (a FIFO, device or socket cannot be read)")
    try:
        if ext in _NIFTI_EXTENSIONS:
            with lower_case_alias(path, ext) as alias:
                try:
                    return _read_nifti(alias, nan_policy)
                except InputError as exc:
                    raise InputError(str(exc).replace(str(alias), str(path))) from None
        if ext in (".mha", ".mhd"):
            check_metaimage(path)
        else:
            check_nrrd(path)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    return _itk_read(path, ext)




def _itk_read(path: Path, ext: str, quiet: bool = False) -> sitk.Image:
    """Read with the ImageIO of ``ext`` (so the letter case of the name does not matter).

    The C libraries' stderr is captured: a read during which one of them reported an error is
    refused (ITK may return zeros), other messages become one FAGANWarning, unless ``quiet``
    (the header was checked here, and its one warning line says what matters).
    """
    reader = sitk.ImageFileReader()
    reader.SetImageIO(_IMAGE_IO[ext])
    reader.SetFileName(str(path))
    failure = None
    with captured_stderr() as noise:
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            failure = _itk_detail(exc)
    complaint = noise.first_message()
    if failure is not None or noise.has_error() or _FAILURE_WORDS.search(complaint):
        raise InputError(f"cannot read {path}: {failure or complaint}")
    if complaint and not quiet:
        warn(f"{path.name}: {complaint}", stacklevel=2)
    return image


def _read_nifti(path: Path, nan_policy: str) -> sitk.Image:
    """SimpleITK, unless the sform is sheared (ITK would coerce it) or ITK refuses: then nibabel.

    NaN/Inf voxels are counted in the file's own data, since ITK turns them into 0.
    """
    facts = inspect_nifti(path)
    if facts is not None and facts.non_finite and nan_policy == "error":
        raise _non_finite_error(facts.non_finite, facts.voxels)
    if facts is None or not facts.sheared:
        try:
            image = _itk_read(path, ".nii", quiet=facts is not None)
        except InputError:
            if facts is None:
                raise
        else:
            if facts is not None and facts.non_finite:  # ITK has already set them to 0: say how many, as for other formats
                _warn_zeroed(facts.non_finite, facts.voxels)
            return image if facts is None else _with_geometry(image, facts.geometry, path)
    import nibabel as nib  # lazy: nibabel only for NIfTI files; io imports without it

    with captured_stderr():
        try:
            return from_nibabel(nib.load(str(path)))
        except InputError:
            raise
        except Exception as exc:  # nibabel raises many types for damaged files
            raise InputError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def _with_geometry(image: sitk.Image, geometry: Geometry, path: Path) -> sitk.Image:
    """``image`` with the geometry of the transform the NIfTI rule chose (ITK may have read another),
    and one warning line when the header disagreed with itself."""
    if geometry.conflict:
        warn(f"{path.name}: {geometry.conflict}; the geometry follows the {geometry.source} (docs/reliability.md)",
             stacklevel=3)
    if geometry.affine is None or image.GetDimension() != 3:  # not 3D: validate_image refuses it
        return image
    spacing, direction, origin = lps_geometry(geometry.affine)
    if not (np.allclose(image.GetSpacing(), spacing, rtol=1e-5) and np.allclose(image.GetDirection(), direction, atol=1e-5)
            and np.allclose(image.GetOrigin(), origin, atol=1e-4)):
        image.SetSpacing(spacing.tolist())
        image.SetDirection(direction.tolist())
        image.SetOrigin(origin.tolist())
    return image


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


def _check_geometry(image: sitk.Image) -> None:
    spacing, origin, direction = (np.asarray(v, dtype=float) for v in (image.GetSpacing(), image.GetOrigin(), image.GetDirection()))
    if not (np.all(np.isfinite(spacing)) and np.all(np.isfinite(origin)) and np.all(np.isfinite(direction))):
        raise InputError("input geometry (origin, spacing or direction) holds NaN or Inf")
    if np.any(spacing <= 0):
        raise InputError(f"input spacing {tuple(spacing)} must be positive")
    if abs(np.linalg.det(direction.reshape(3, 3))) < 1e-6:
        raise InputError("input direction matrix is singular (two axes point the same way)")
    lengths = np.linalg.norm(direction.reshape(3, 3), axis=0)
    if np.any(np.abs(lengths - 1) > DIRECTION_LENGTH_TOL):
        raise InputError(
            f"input direction columns have lengths {tuple(round(float(v), 6) for v in lengths)}, not 1: a scaled direction "
            "(e.g. a MetaImage TransformMatrix that holds the spacing) would place every voxel wrongly"
        )


def _check_value_range(image: sitk.Image) -> None:
    values = sitk.GetArrayViewFromImage(image)
    if values.dtype.kind != "f" or values.size == 0:
        return
    largest = max(abs(float(values.min())), abs(float(values.max())))  # no copy of the volume
    if not np.isfinite(largest):  # NaN/Inf present (rare): the NaN policy decides about those
        with np.errstate(invalid="ignore"):
            largest = float(np.max(np.abs(np.where(np.isfinite(values), values, 0))))
    if largest > MAX_ABS_VALUE:
        raise InputError(
            f"input holds values up to {largest:.3g} in magnitude; beyond +/-{MAX_ABS_VALUE:.0e} float32 arithmetic "
            "would overflow, rescale the volume first"
        )


def _dimension_error(dim: int, size: Tuple[int, ...]) -> InputError:
    if dim == 2:
        return InputError(
            f"input is a 2D image (size {size}); a 3D volume is required "
            "(a single slice must be a 3D image with one slice)"
        )
    return InputError(
        f"input is {dim}D (size {tuple(size)}); a single 3D volume is required (extract one volume of a series first)"
    )


def _warn_zeroed(count: int, total: int) -> None:
    warn(f"{count} of {total} voxels were NaN or Inf and were set to 0 (the 'zero' NaN policy)", stacklevel=4)


def _non_finite_error(count: int, total: int) -> InputError:
    return InputError(f"input has {count} non-finite (NaN or Inf) voxels of {total}; use the 'zero' NaN policy to replace them with 0")


def _apply_nan_policy(image: sitk.Image, nan_policy: str) -> sitk.Image:
    values = sitk.GetArrayViewFromImage(image)
    finite = np.isfinite(values)
    bad = values.size - int(np.count_nonzero(finite))
    if bad == 0:
        return image
    if nan_policy == "error":
        raise _non_finite_error(bad, values.size)
    _warn_zeroed(bad, values.size)
    cleaned = sitk.GetImageFromArray(np.where(finite, values, np.float32(0)))
    cleaned.CopyInformation(image)
    return cleaned


def _write_staged(image: sitk.Image, staging: Path, target: Path, compress: bool) -> List[Path]:
    """Write ``target``'s files into ``staging`` under the writer's lower-case extension, sync and
    check them; return them, header (the file named like the target) last."""
    stem, ext = split_extension(target.name)
    staged = staging / (stem + ext)
    with captured_stderr() as noise:
        try:
            sitk.WriteImage(image, str(staged), compress)
            failure = None
        except RuntimeError as exc:
            failure = _itk_detail(exc)
    if failure is not None:
        raise write_error(target, noise.first_message() or failure)
    try:
        if ext in _NIFTI_EXTENSIONS and not nifti_complete(staged):
            raise write_error(target, "the written file is incomplete")
        files = sorted(staging.iterdir(), key=lambda f: f == staged)
        for written in files:
            fsync_file(written)
    except OSError as exc:
        raise write_error(target, exc.strerror, exc.errno) from None
    return files


def _itk_detail(exc: RuntimeError) -> str:
    """The informative line of a SimpleITK exception, without file/line and object prefixes:
    the last ``ITK ERROR`` line (later lines may be matrix rows), else the last line."""
    lines = [line.strip() for line in str(exc).splitlines()]
    flagged = [_ITK_PREFIX.sub("", line) for line in lines[1:] if _ITK_PREFIX.match(line)]
    if flagged:
        return flagged[-1]
    useful = [line for line in lines[1:] if line and not line.startswith("Reason:")]
    return useful[-1] if useful else (lines[0] if lines and lines[0] else type(exc).__name__)


MIN_INTEGER_LEVELS = 256
"""An integer output type rounds the result to whole numbers: below this many levels across the input's range, say so."""


def integer_output_note(image: sitk.Image, output_dtype: str) -> Optional[str]:
    """For an integer ``output_dtype``: InputError when rounding would leave at most one level of the input's range
    (an ADC map in mm²/s becomes all zeros), else a warning when the type clips the range or keeps fewer than
    ``MIN_INTEGER_LEVELS`` levels of it; None for float outputs and ranges that fit."""
    dtype = np.dtype(output_dtype)
    if dtype.kind not in "iu":
        return None
    array = sitk.GetArrayViewFromImage(image)
    low, high = float(np.min(array)), float(np.max(array))
    info = np.iinfo(dtype)
    if high - low < 1.0:
        raise InputError(f"--dtype {output_dtype} would round the input's whole range [{low:.4g}, {high:.4g}] to one value; "
                         "keep float32 for this volume")
    if low < info.min or high > info.max:
        return f"--dtype {output_dtype} clips the input's range [{low:.6g}, {high:.6g}] to [{info.min}, {info.max}]"
    if high - low < MIN_INTEGER_LEVELS:
        return (f"--dtype {output_dtype} rounds the input's range [{low:.4g}, {high:.4g}] to about {int(high - low) + 1} levels; "
                "float32 keeps its detail")
    return None


def clipped_voxels(array: np.ndarray, output_dtype: str) -> int:
    """How many of the float32 result's voxels an integer ``output_dtype`` clips (``cast_array``); 0 for float outputs."""
    dtype = np.dtype(output_dtype)
    if dtype.kind not in "iu":
        return 0
    info = np.iinfo(dtype)
    return int(np.count_nonzero((array < info.min - 0.5) | (array >= info.max + 0.5)))


def clipping_note(clipped: int, total: int, output_dtype: str) -> Optional[str]:
    """The warning for ``clipped`` of ``total`` result voxels clipped by an integer output type (None when none were):
    super-resolution overshoots the input's range near bright edges, so an input that fits the type need not."""
    if not clipped:
        return None
    info = np.iinfo(np.dtype(output_dtype))
    return (f"--dtype {output_dtype} clipped {clipped} voxels ({100.0 * clipped / max(total, 1):.2g} %) of the result to "
            f"[{info.min}, {info.max}]; float32 keeps them")


def result_clipping_note(values: np.ndarray, output_dtype: str) -> Optional[str]:
    """``clipping_note`` of a whole float32 result (a result cast at once; a streamed one adds up ``clipped_voxels``)."""
    return clipping_note(clipped_voxels(values, output_dtype), values.size, output_dtype)


def cast_array(array: np.ndarray, output_dtype: str) -> np.ndarray:
    """Cast the float32 result, rounding and clipping for integer outputs."""
    dtype = np.dtype(output_dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(array), info.min, info.max).astype(dtype)
    return np.ascontiguousarray(array, dtype=dtype)
