"""Write a super-resolved volume as a DICOM MR series (pydicom; no hand-written encoding).

Each slice along index axis 2 becomes one MR Image Storage instance with new Series and SOP
Instance UIDs, ImageType ``DERIVED\\SECONDARY``, the exact geometry (ImagePositionPatient per
slice, ImageOrientationPatient, PixelSpacing, SliceThickness, SpacingBetweenSlices) and signed
16-bit pixels with RescaleSlope/RescaleIntercept chosen so that the float result is kept to
within 0.1 % of its range (in practice 0.001 %; exactly when it holds int16 integers).

When the input was a DICOM series, its patient and study attributes (same Study Instance UID),
frame of reference and MR acquisition attributes are copied (``dicom_source.read_series_tags``).

``write_dicom_series`` is atomic: the files are written into a hidden staging folder beside the
output folder, synced, and the folder is renamed into place; an existing output is never
replaced unless ``force``. ``stage_dicom_series`` writes into a given folder (``case.py``
publishes it with the case's other outputs).
"""
from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from fagan_engine._version import __version__
from fagan_engine.util.atomic import fsync_dir, fsync_file
from fagan_engine.util.errors import OutputError

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
INT16_LIMIT = 32500
"""Largest |stored value| used for quantised (non-integer) results: a margin below 32767 absorbs the
rounding of slope and intercept to DICOM decimal strings."""
MAX_RELATIVE_ERROR = 1e-3
"""The contract: |read back - result| <= 0.1 % of the result's range."""
_LO_LENGTH = 64


def write_dicom_series(image: sitk.Image, folder: str, force: bool = False, **labels: Any) -> Path:
    """Write ``image`` as a DICOM series into the new folder ``folder`` atomically; return it.

    ``labels``: ``stage_dicom_series``'s ``source_tags``, ``description`` and ``derivation``. The parent
    folder is created when missing. Without ``force`` an existing ``folder`` is an OutputError; with it
    the old folder is replaced only once the new series is complete.
    """
    target = Path(folder)
    check_dicom_output(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=str(target.parent)))
    try:
        staged = staging / target.name
        stage_dicom_series(image, staged, **labels)
        publish_folder(staged, target, force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def check_dicom_output(target: Path, force: bool) -> None:
    """Refuse a DICOM output folder that exists (unless ``force``) or is a file."""
    if target.exists() and not target.is_dir():
        raise OutputError(f"DICOM output {target} is a file; a DICOM series is written as a folder")
    if target.exists() and not force and any(target.iterdir()):
        raise OutputError(f"output {target} already exists; pass --force to overwrite it")


def publish_folder(staged: Path, target: Path, force: bool) -> None:
    """Rename the complete folder ``staged`` to ``target`` (same file system).

    An empty ``target`` is replaced; a non-empty one only with ``force``, moved aside first and
    removed once the new folder is in place (put back if the rename fails).
    """
    aside: Optional[Path] = None
    if target.exists() and force and any(target.iterdir()):
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=str(target.parent)))
        os.replace(target, aside / target.name)
    try:
        os.rename(staged, target)
    except OSError as exc:
        if aside is not None:
            os.replace(aside / target.name, target)
            shutil.rmtree(aside, ignore_errors=True)
        if exc.errno in (39, 17, 66):  # ENOTEMPTY, EEXIST (Linux / macOS)
            raise OutputError(f"output {target} already exists (created meanwhile); pass --force to overwrite it") from None
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    fsync_dir(target.parent)


def stage_dicom_series(
    image: sitk.Image,
    folder: Path,
    source_tags: Optional[Dict[str, Any]] = None,
    description: str = "FA-GAN SR",
    derivation: str = "",
) -> None:
    """Write the series' files into ``folder`` (created; must not exist) and fsync them."""
    pydicom = _pydicom()
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    image = right_handed(image)
    array = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(array)):
        raise OutputError(f"cannot write {folder}: the result holds non-finite values")
    stored, slope, intercept = quantize(np.asarray(array, dtype=np.float64))
    source = dict(source_tags or {})
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    spacing = image.GetSpacing()
    normal = direction[:, 2]
    series_uid = generate_uid(prefix=None)
    study_uid = str(source.get("StudyInstanceUID") or generate_uid(prefix=None))
    frame_uid = str(source.get("FrameOfReferenceUID") or generate_uid(prefix=None))
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    center, width = _window(stored.astype(np.float64) * slope + intercept)
    folder.mkdir(parents=True)
    for k in range(stored.shape[0]):
        sop_uid = generate_uid(prefix=None)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = pydicom.Dataset()
        ds.file_meta = meta
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                        "ReferringPhysicianName", "StudyID", "AccessionNumber", "PositionReferenceIndicator", "Manufacturer"):
            setattr(ds, keyword, "")  # type 2: present, empty when unknown
        for keyword, value in source.items():
            if keyword not in ("SeriesInstanceUID", "SeriesDescription", "SeriesNumber", "Modality", "Manufacturer",
                               "ManufacturerModelName"):
                setattr(ds, keyword, value)
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "MR"
        ds.SeriesNumber = _series_number(source.get("SeriesNumber"))
        ds.SeriesDescription = description[:_LO_LENGTH]
        ds.DerivationDescription = derivation[:1024]
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.SoftwareVersions = f"fagan_engine {__version__}"
        ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = date
        ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = time
        for keyword, default in (("ScanningSequence", "RM"), ("SequenceVariant", "NONE"), ("ScanOptions", ""),
                                 ("MRAcquisitionType", ""), ("RepetitionTime", ""), ("EchoTime", ""), ("EchoTrainLength", "")):
            if keyword not in source:
                setattr(ds, keyword, default)
        ds.InstanceNumber = k + 1
        position = np.asarray(image.TransformIndexToPhysicalPoint((0, 0, k)), dtype=float)
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # row spacing (between rows), column spacing
        ds.SliceThickness = _ds(spacing[2])
        ds.SpacingBetweenSlices = _ds(spacing[2])
        ds.SliceLocation = _ds(float(normal @ position))
        ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[2])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleSlope = _ds(slope)
        ds.RescaleType = "US"
        ds.WindowCenter, ds.WindowWidth = _ds(center), _ds(width)
        ds.PixelData = np.ascontiguousarray(stored[k], dtype="<i2").tobytes()
        path = folder / f"IM{k + 1:05d}.dcm"
        _save(pydicom, ds, path)
        fsync_file(path)
    fsync_dir(folder)


def quantize(values: np.ndarray) -> Tuple[np.ndarray, float, float]:
    """int16 stored values, slope and intercept with ``stored * slope + intercept`` ~ ``values``.

    Integers within int16 are kept exactly (slope 1, intercept 0). Otherwise the range is mapped
    onto +-INT16_LIMIT, with slope and intercept rounded to what a DICOM decimal string holds
    first, so the error is at most slope/2 = range / 65000.
    """
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low >= -32768 and high <= 32767 and np.array_equal(values, np.rint(values)):
        return values.astype(np.int16), 1.0, 0.0
    if high == low:
        return np.zeros(values.shape, dtype=np.int16), 1.0, float(_ds(low))
    slope = float(_ds((high - low) / (2 * INT16_LIMIT)))
    intercept = float(_ds((high + low) / 2))
    stored = np.clip(np.rint((values - intercept) / slope), -32768, 32767).astype(np.int16)
    return stored, slope, intercept


def right_handed(image: sitk.Image) -> sitk.Image:
    """``image`` with its slice axis reversed when needed so that the third direction column is the
    cross product of the first two (what DICOM readers assume); a sheared direction is refused."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    cross = np.cross(direction[:, 0], direction[:, 1])
    alignment = float(cross @ direction[:, 2]) / max(float(np.linalg.norm(cross)), 1e-12)
    if abs(abs(alignment) - 1) > 1e-6 or abs(float(direction[:, 0] @ direction[:, 1])) > 1e-6:
        raise OutputError("a DICOM series cannot store a sheared (non-orthogonal) volume; write .nrrd or .mha instead")
    if alignment > 0:
        return image
    flipped = sitk.Flip(image, [False, False, True], flipAboutOrigin=False)
    flipped.SetOrigin(image.TransformIndexToPhysicalPoint((0, 0, image.GetSize()[2] - 1)))
    reversed_direction = direction.copy()
    reversed_direction[:, 2] *= -1
    flipped.SetDirection(reversed_direction.ravel().tolist())
    return flipped


def series_description(source_description: Optional[str], mode: str, method: str, scale: int, spacing: Optional[float]) -> str:
    """``<input description> FA-GAN SR x<scale>`` (``iso <spacing> mm`` in through-plane mode)."""
    what = "FA-GAN SR" if method == "fagan" else f"{method} SR"
    amount = f"iso {spacing:g} mm" if mode == "through-plane" and spacing else f"x{scale}"
    suffix = f"{what} {amount}"
    prefix = str(source_description or "").strip()
    room = _LO_LENGTH - len(suffix) - 1
    return f"{prefix[:room].rstrip()} {suffix}" if prefix and room > 0 else suffix


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters) for ``value``."""
    for digits in range(12, 4, -1):
        text = f"{float(value):.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{float(value):.4g}"


def _window(values: np.ndarray) -> Tuple[float, float]:
    low, high = np.percentile(values, [0.5, 99.5]) if values.size else (0.0, 1.0)
    width = max(float(high - low), 1e-6)
    return float((high + low) / 2), width


def _series_number(source: Any) -> int:
    """The source's series number + 1000 (a derived series sorts after its source), else 1000."""
    try:
        return (int(source) % 100000) + 1000 if source not in (None, "") else 1000
    except (TypeError, ValueError):
        return 1000


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError:
        raise OutputError("DICOM output needs pydicom: pip install pydicom") from None
    return pydicom


def _save(pydicom: Any, ds: Any, path: Path) -> None:
    """Save as a DICOM Part 10 file with pydicom 2.x or 3.x."""
    try:
        if int(pydicom.__version__.split(".")[0]) >= 3:
            ds.save_as(str(path), enforce_file_format=True)
        else:
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.save_as(str(path), write_like_original=False)
    except OSError as exc:
        from fagan_engine.util.atomic import describe_os_error

        raise OutputError(describe_os_error(exc, path)) from None
