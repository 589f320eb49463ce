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

import contextlib
import datetime
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from fagan_engine._version import __version__
from fagan_engine.io.geometry import SRGeometry
from fagan_engine.util.atomic import describe_os_error, fsync_dir, fsync_file, process_alive
from fagan_engine.util.errors import OutputError
from fagan_engine.util.failures import interrupts_deferred

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SOFTWARE = "fagan_engine"
"""The first word of every written instance's SoftwareVersions: how ``--force`` recognises an earlier output."""
INT16_LIMIT = 32500
"""Largest |stored value| used for quantised (non-integer) results: a margin below 32767 absorbs the
rounding of slope and intercept to DICOM decimal strings."""
MAX_RELATIVE_ERROR = 1e-3
"""The contract: |read back - result| <= 0.1 % of the result's range."""
_LO_LENGTH = 64
UTF8 = "ISO_IR 192"
"""SpecificCharacterSet for Unicode in UTF-8, set when the series's own texts need it and the source declares no other set."""


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
        stage_dicom_series(image, staged, **labels, shown=target)
        publish_folder(staged, target, force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def check_dicom_output(target: Path, force: bool) -> None:
    """Refuse a DICOM output folder that exists (unless ``force``) or is a file, and, even with ``force``, one that
    holds anything but DICOM files this engine wrote (``check_replaceable``). A replacement cut short by ``kill -9`` is finished first
    (``recover_replaced``), so a hidden old series is back before the check."""
    recover_replaced(target)
    if target.exists() and not target.is_dir():
        raise OutputError(f"DICOM output {target} is a file; a DICOM series is written as a folder")
    if target.exists() and any(target.iterdir()):
        if not force:
            raise OutputError(f"output {target} already exists; pass --force to overwrite it")
        check_replaceable(target)


def check_replaceable(target: Path) -> None:
    """OutputError unless the folder ``target`` holds only ``.dcm`` files that this engine wrote (their SoftwareVersions
    name ``fagan_engine``), as an earlier DICOM output does: ``--force`` replaces such a series, never a folder of other
    files (an OUTPUT without extension names a DICOM folder) nor a scanner's or a PACS export's series."""
    others = _foreign_entries(target)
    if others:
        listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise OutputError(f"output {target} holds more than a DICOM series ({listed}); --force replaces only an earlier "
                          "DICOM output: choose another folder")
    foreign = next((path for path in sorted(target.iterdir()) if not _written_by_engine(path)), None)
    if foreign is not None:
        raise OutputError(f"output {target} holds a DICOM series this engine did not write ({foreign.name}); --force replaces "
                          "only an earlier output of fagan-sr: choose another folder")


def _written_by_engine(path: Path) -> bool:
    """Whether the DICOM file ``path`` names this engine in its SoftwareVersions (``write_instances`` sets it)."""
    import pydicom  # lazy: pydicom only for DICOM output; io imports without it

    try:
        header = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["SoftwareVersions"])
    except Exception:  # pydicom raises many types for damaged files: not one of ours
        return False
    versions = header.get("SoftwareVersions", "")
    values = list(versions) if isinstance(versions, (list, tuple, pydicom.multival.MultiValue)) else [versions]
    return any(str(value).startswith(f"{SOFTWARE} ") for value in values)


def publish_folder(staged: Path, target: Path, force: bool) -> None:
    """Rename the complete folder ``staged`` to ``target`` (same file system).

    An empty ``target`` is replaced; a non-empty one only with ``force``: moved aside into a hidden
    ``.<name>.old-<pid>-XXXX`` folder, the new folder renamed in, then the old one removed. Ctrl-C and
    SIGTERM wait until both renames are done, and a failed rename puts the old folder back, so ``target``
    always holds the old series or the new one (after ``kill -9``: ``recover_replaced``).
    """
    aside: Optional[Path] = None
    if target.exists() and force and any(target.iterdir()):
        check_replaceable(target)  # again: the folder may have changed since the run began
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=str(target.parent)))
    with interrupts_deferred():
        try:
            _swap(staged, target, aside)
        except OSError as exc:
            if exc.errno in (39, 17, 66):  # ENOTEMPTY, EEXIST (Linux / macOS)
                raise OutputError(f"output {target} already exists (created meanwhile); pass --force to overwrite it") from None
            raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
        if aside is not None:
            _discard(aside, target.name)
    fsync_dir(target.parent)


def _swap(staged: Path, target: Path, aside: Optional[Path]) -> None:
    """Move ``target`` into ``aside`` (when given), then rename ``staged`` to ``target``; on any failure or interrupt
    the old folder is put back."""
    try:
        if aside is not None:
            os.replace(target, aside / target.name)
        os.rename(staged, target)
    except BaseException:
        if aside is not None:
            _put_back(aside, target)
        raise


def _put_back(aside: Path, target: Path) -> None:
    """Return the old folder in ``aside`` to ``target`` when that name is free; remove ``aside`` once it is empty."""
    old = aside / target.name
    if old.is_dir() and not os.path.lexists(target):
        os.replace(old, target)
    if not old.exists():
        shutil.rmtree(aside, ignore_errors=True)


def _discard(aside: Path, name: str) -> None:
    """Remove the replaced folder ``aside/name``; renamed first, so that ``name`` in an ``.old-`` folder is always whole."""
    with contextlib.suppress(OSError):
        os.replace(aside / name, aside / f"{name}.discarded")
    shutil.rmtree(aside, ignore_errors=True)


def recover_replaced(target: Path) -> None:
    """Finish a replacement of ``target`` cut short by ``kill -9`` (an ``.<name>.old-<pid>-*`` folder of a process that
    no longer runs): the old series is put back when ``target`` is missing or empty, and removed when ``target`` holds
    a series (the new one, renamed in whole); anything else is left alone. Best effort."""
    prefix = f".{target.name}.old-"
    try:
        entries = [e for e in os.scandir(target.parent) if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for entry in entries:
        match = re.fullmatch(r"(\d+)-\w+", entry.name[len(prefix):])
        if match and not process_alive(int(match.group(1))):
            _recover_aside(Path(entry.path), target)


def _recover_aside(aside: Path, target: Path) -> None:
    """Put back or drop the old folder in a dead process's ``aside`` (``recover_replaced``)."""
    old = aside / target.name
    try:
        if old.is_dir() and target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
            target.rmdir()  # an empty folder made in its place: the old series goes back
        if not os.path.lexists(target) or not old.exists():
            _put_back(aside, target)
        elif _is_series(target):
            _discard(aside, target.name)
    except OSError:
        pass


def _is_series(folder: Path) -> bool:
    """True when ``folder`` is a non-empty folder of ``.dcm`` files only, as a written series is."""
    return folder.is_dir() and not folder.is_symlink() and any(folder.iterdir()) and not _foreign_entries(folder)


def _foreign_entries(folder: Path) -> List[str]:
    """The sorted names in ``folder`` that are not ``.dcm`` files."""
    return sorted(p.name for p in folder.iterdir() if not (p.suffix.lower() == ".dcm" and p.is_file() and not p.is_symlink()))


def stage_dicom_series(
    image: sitk.Image,
    folder: Path,
    source_tags: Optional[Dict[str, Any]] = None,
    description: str = "FA-GAN SR",
    derivation: str = "",
    shown: Optional[Path] = None,
) -> None:
    """Write the series' files of an in-memory ``image`` into ``folder`` (created; must not exist) and fsync them;
    errors name ``shown`` (the final series folder; default ``folder``)."""
    array = sitk.GetArrayViewFromImage(image)
    values = ValueRange(shown or folder)
    for k in range(array.shape[0]):
        values.add(array[k])
    labels = SeriesLabels(source_tags, description, derivation)
    write_instances(folder, geometry_of(image), lambda k: array[k], values, labels, shown)


@dataclass(frozen=True)
class SeriesLabels:
    """What describes a written series: the source's patient/study/acquisition tags, its description and derivation."""

    source_tags: Optional[Dict[str, Any]] = None
    description: str = "FA-GAN SR"
    derivation: str = ""


class ValueRange:
    """The running minimum, maximum and integrality of a series' values, which fix its one rescale."""

    def __init__(self, shown: Path) -> None:
        self.shown = shown
        self.low, self.high, self.integral = math.inf, -math.inf, True

    def add(self, values: np.ndarray) -> None:
        """Measure some of the values (OutputError, naming ``shown``, on a non-finite one)."""
        if not values.size:
            return
        if not np.all(np.isfinite(values)):
            raise OutputError(f"cannot write {self.shown}: the result holds non-finite values")
        self.low, self.high = min(self.low, float(values.min())), max(self.high, float(values.max()))
        self.integral = self.integral and bool(np.array_equal(values, np.rint(values)))

    def rescale(self) -> Tuple[float, float]:
        """(slope, intercept): 1 and 0 for int16 integers; else the range onto +-INT16_LIMIT, rounded as DICOM stores them."""
        low, high = (self.low, self.high) if self.low <= self.high else (0.0, 0.0)
        if self.integral and low >= -32768 and high <= 32767:
            return 1.0, 0.0
        if high == low:
            return 1.0, float(_ds(low))
        return float(_ds((high - low) / (2 * INT16_LIMIT))), float(_ds((high + low) / 2))


def to_stored(values: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """The int16 stored values of ``values`` under ``slope`` and ``intercept`` (error at most slope/2)."""
    return np.clip(np.rint((np.asarray(values, np.float64) - intercept) / slope), -32768, 32767).astype(np.int16)


def quantize(values: np.ndarray) -> Tuple[np.ndarray, float, float]:
    """int16 stored values, slope and intercept with ``stored * slope + intercept`` ~ ``values``.

    Integers within int16 are kept exactly (slope 1, intercept 0). Otherwise the range is mapped
    onto +-INT16_LIMIT, with slope and intercept rounded to what a DICOM decimal string holds
    first, so the error is at most slope/2 = range / 65000.
    """
    measured = ValueRange(Path("values"))
    measured.add(np.asarray(values))
    slope, intercept = measured.rescale()
    return to_stored(values, slope, intercept), slope, intercept


def stored_percentiles(counts: np.ndarray, percents: Tuple[float, ...]) -> List[float]:
    """``np.percentile`` (linear) of the stored values whose histogram over -32768..32767 is ``counts``."""
    cumulative = np.cumsum(counts)
    total = int(cumulative[-1]) if cumulative.size else 0
    if total == 0:
        return [0.0 for _ in percents]

    def ranked(rank: int) -> float:
        return float(np.searchsorted(cumulative, rank, side="right")) - 32768

    result = []
    for percent in percents:
        position = percent / 100 * (total - 1)
        below = int(math.floor(position))
        low, high = ranked(below), ranked(min(below + 1, total - 1))
        result.append(low + (position - below) * (high - low))
    return result


def write_instances(
    folder: Path, geometry: SRGeometry, read_slice: Callable[[int], np.ndarray], values: ValueRange, labels: SeriesLabels,
    shown: Optional[Path] = None,
) -> None:
    """Write one instance per slice along index axis 2 (``read_slice(k)``: numpy slice ``k`` of the volume) into
    ``folder`` (created; must not exist) and fsync them; one rescale and window for the whole series. A failed write
    names ``shown`` (the final series folder; default ``folder``), not the staged instance.

    The slices are read twice, once for the window's histogram and once to write them, so only one is held at a time.
    """
    pydicom = _pydicom()
    from pydicom.dataset import FileMetaDataset  # lazy: pydicom only for DICOM output; io imports without it
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid  # lazy: pydicom only for DICOM output

    geometry, flipped = right_handed(geometry)
    count = geometry.size[2]

    def stored(k: int) -> np.ndarray:
        return to_stored(read_slice(count - 1 - k if flipped else k), slope, intercept)

    slope, intercept = values.rescale()
    counts = np.zeros(65536, np.int64)
    for k in range(count):
        counts += np.bincount(stored(k).ravel().astype(np.int64) + 32768, minlength=65536)
    center, width = _window([v * slope + intercept for v in stored_percentiles(counts, (0.5, 99.5))])
    source = dict(labels.source_tags or {})
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    spacing = geometry.spacing
    normal = direction[:, 2]
    series_uid = generate_uid(prefix=None)
    study_uid = str(source.get("StudyInstanceUID") or generate_uid(prefix=None))
    frame_uid = str(source.get("FrameOfReferenceUID") or generate_uid(prefix=None))
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    folder.mkdir(parents=True)
    for k in range(count):
        sop_uid = generate_uid(prefix=None)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = pydicom.Dataset()
        ds.file_meta = meta
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                        "ReferringPhysicianName", "StudyID", "AccessionNumber", "PositionReferenceIndicator", "Manufacturer",
                        "PatientPosition"):
            setattr(ds, keyword, "")  # type 2 (PatientPosition 2C for MR): present, empty when unknown
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
        ds.SeriesDescription = labels.description[:_LO_LENGTH]
        ds.DerivationDescription = labels.derivation[:1024]
        if not _encodable(labels.description + labels.derivation, ds.get("SpecificCharacterSet")):
            ds.SpecificCharacterSet = UTF8  # a checkpoint's name in other letters: declared, not written as '?' or Latin-1
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.SoftwareVersions = f"{SOFTWARE} {__version__}"
        ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = date
        ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = time
        for keyword, default in (("ScanningSequence", "RM"), ("SequenceVariant", "NONE"), ("ScanOptions", ""),
                                 ("MRAcquisitionType", ""), ("RepetitionTime", ""), ("EchoTime", ""), ("EchoTrainLength", "")):
            if keyword not in source:
                setattr(ds, keyword, default)
        ds.InstanceNumber = k + 1
        position = np.asarray(geometry.origin, dtype=float) + direction[:, 2] * spacing[2] * k
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # row spacing (between rows), column spacing
        if "SliceThickness" not in source:  # an in-plane result keeps the acquired thickness (and so its gap)
            ds.SliceThickness = _ds(spacing[2])
        ds.SpacingBetweenSlices = _ds(spacing[2])
        ds.SliceLocation = _ds(float(normal @ position))
        ds.Rows, ds.Columns = int(geometry.size[1]), int(geometry.size[0])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleSlope = _ds(slope)
        ds.RescaleType = "US"
        ds.WindowCenter, ds.WindowWidth = _ds(center), _ds(width)
        ds.PixelData = np.ascontiguousarray(stored(k), dtype="<i2").tobytes()
        path = folder / f"IM{k + 1:05d}.dcm"
        try:
            _save(pydicom, ds, path)
            fsync_file(path)
        except OSError as exc:
            raise OutputError(describe_os_error(exc, shown or folder)) from None
    fsync_dir(folder)


def _encodable(text: str, declared: Any) -> bool:
    """Whether ``text`` can be written in the declared SpecificCharacterSet (none declared: ASCII). Where it cannot, the
    series is written in UTF-8, which holds the copied patient and study texts too (pydicom decoded them)."""
    if text.isascii():
        return True
    values = [str(v).strip() for v in (declared if isinstance(declared, (list, tuple)) else [declared or ""])]
    if values == [UTF8]:
        return True
    if values == [""]:
        return False
    from pydicom.charset import convert_encodings  # lazy: pydicom only for DICOM output; io imports without it

    for codec in convert_encodings(values):
        try:
            text.encode(codec)
            return True
        except (LookupError, UnicodeEncodeError):
            continue
    return False


def geometry_of(image: sitk.Image) -> SRGeometry:
    """The size, spacing, origin and direction of ``image``."""
    return SRGeometry(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()))


SHEAR_TOL = 1e-4
"""Direction columns this far from perpendicular (cosine) are written as DICOM: over a 500 mm field that is 0.05 mm, and
NIfTI headers round their directions about this much (ITK reads such files as orthogonal too)."""


def check_dicom_direction(direction: Sequence[float]) -> float:
    """OutputError for a sheared (non-orthogonal) direction, which a DICOM series cannot store; else the alignment (±1) of
    the third column with the cross product of the first two."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    cross = np.cross(matrix[:, 0], matrix[:, 1])
    alignment = float(cross @ matrix[:, 2]) / max(float(np.linalg.norm(cross)), 1e-12)
    if abs(abs(alignment) - 1) > SHEAR_TOL or abs(float(matrix[:, 0] @ matrix[:, 1])) > SHEAR_TOL:
        raise OutputError("a DICOM series cannot store a sheared (non-orthogonal) volume; write .nrrd or .mha instead")
    return alignment


def right_handed(geometry: SRGeometry) -> Tuple[SRGeometry, bool]:
    """``geometry`` with its slice axis reversed when needed so that the third direction column is the cross product of
    the first two (what DICOM readers assume), and whether it was; a sheared direction is refused."""
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    if check_dicom_direction(geometry.direction) > 0:
        return geometry, False
    last = np.asarray(geometry.origin, dtype=float) + direction[:, 2] * geometry.spacing[2] * (geometry.size[2] - 1)
    reversed_direction = direction.copy()
    reversed_direction[:, 2] *= -1
    return geometry._replace(origin=tuple(float(v) for v in last), direction=tuple(reversed_direction.ravel().tolist())), True


def series_description(source_description: Any, mode: str, method: str, scale: int, spacing: Sequence[float] = (),
                       untrained: bool = False) -> str:
    """``<input description> FA-GAN SR x<scale>`` (in through-plane mode the result's voxels, ``voxel_text``; random weights:
    ``UNTRAINED FA-GAN SR``, so that the list of series says so, not only the derivation); one LO value."""
    what = ("UNTRAINED FA-GAN SR" if untrained else "FA-GAN SR") if method == "fagan" else f"{method} SR"
    amount = voxel_text(spacing) if mode == "through-plane" and len(spacing) else f"x{scale}"
    suffix = f"{what} {amount}"
    prefix = _single_value(source_description)
    room = _LO_LENGTH - len(suffix) - 1
    return f"{prefix[:room].rstrip()} {suffix}" if prefix and room > 0 else suffix


def _single_value(value: Any) -> str:
    """A DICOM text value as one value: several (``T1\\post``, a pydicom MultiValue) joined by spaces, as a viewer
    shows them; backslashes (the value delimiter) and runs of whitespace become one space."""
    values = value if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else [value]
    return " ".join(" ".join(str(v) for v in values if v is not None).replace("\\", " ").split())


def voxel_text(spacing: Sequence[float]) -> str:
    """``iso 1 mm`` for (nearly) equal spacings, else ``1x1x2.57 mm``."""
    if max(spacing) - min(spacing) <= 1e-3 * max(spacing):
        return f"iso {max(spacing):.4g} mm"
    return "x".join(f"{value:.4g}" for value in spacing) + " mm"


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters) for ``value``."""
    for digits in range(12, 4, -1):
        text = f"{float(value):.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{float(value):.4g}"


def _window(percentiles: List[float]) -> Tuple[float, float]:
    """WindowCenter and WindowWidth from the 0.5th and 99.5th percentiles."""
    low, high = percentiles
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
        import pydicom  # lazy: pydicom only for DICOM output, missing one named in an OutputError
    except ImportError:
        raise OutputError("DICOM output needs pydicom: pip install pydicom") from None
    return pydicom


def _save(pydicom: Any, ds: Any, path: Path) -> None:
    """Save as a DICOM Part 10 file with pydicom 2.x or 3.x."""
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(str(path), enforce_file_format=True)
    else:
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(str(path), write_like_original=False)
