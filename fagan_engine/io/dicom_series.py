"""Read one DICOM series from a folder and check that its slices form a true uniform grid.

ITK rebuilds a series with a missing, unreadable or duplicated slice as a uniform grid, so the
slices after the gap sit at wrong positions. Here every slice's ImagePositionPatient is
projected on the slice normal: a duplicate is always refused, a gap is refused unless the
caller asks (``gaps="resample"``) for linear resampling onto a uniform grid at the true positions.
A file of the series that GDCM skips (no pixel data, truncated) is refused by name, and so is a missing
or invalid orientation, pixel spacing or rescale, which ITK would replace silently (identity, 1 mm, no rescale).
"""
from __future__ import annotations

import errno
import os
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from fagan_engine.util.errors import ConfigError, InputError, warn
from fagan_engine.util.options import GAP_POLICIES
from fagan_engine.util.stdio_capture import captured_stderr

_REL_TOL = 0.01  # slice distances may differ from the nominal spacing by 1 % (rounding in headers)
_MAX_ROUNDING_TOL = 0.25
"""The allowance for ImagePositionPatient written with few decimals is at most this fraction of the slice spacing."""
_POSITION_TAG = "0020|0032"
_IN_PLANE_TOL = 0.05
"""A slice may sit this fraction of a pixel off the line through the first slice along the normal (header rounding)."""
_UNIT_TOL = 1e-3
"""ImageOrientationPatient's vectors may be this far from unit length and from perpendicular (headers round them)."""


def read_dicom_series(folder: Path, series_id: Optional[str], gaps: str = "error") -> sitk.Image:
    """The series of ``folder`` (``series_id`` picks one of several) with checked slice positions."""
    if gaps not in GAP_POLICIES:
        raise ConfigError(f"DICOM gap policy must be one of {', '.join(GAP_POLICIES)}; got {gaps!r}")
    _check_no_symlink_loop(folder)
    chosen = _chosen_series(folder, series_id)
    reader = sitk.ImageSeriesReader()
    # float32, so every slice keeps its own RescaleSlope/Intercept and pixel representation: ITK otherwise takes the
    # pixel type from the first slice and truncates (or wraps) the others' rescaled values into it
    reader.SetOutputPixelType(sitk.sitkFloat32)
    with captured_stderr() as noise:
        try:
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), chosen)
            reader.SetFileNames(files)
            reader.MetaDataDictionaryArrayUpdateOn()
            image = reader.Execute()
        except RuntimeError as exc:
            image, failure = None, _last_line(exc, "")
    if image is None:
        raise InputError(_size_mismatch(files, folder) or f"cannot read DICOM series in {folder}: {noise.first_message() or failure}")
    if image.GetDimension() == 4 and len(files) == 1:
        raise InputError(
            f"{Path(files[0]).name} in {folder} is one multi-frame DICOM file (enhanced or legacy), which is not read here: convert it to "
            "a classic series of one file per slice (e.g. dcm2niix to NIfTI, or dcuncat/emf2sf) and give that"
        )
    _check_photometric(reader, files, folder)
    unread = _unread_slices(folder, chosen, files)
    per_slice = image.GetDimension() == 3 and image.GetSize()[2] == len(files)  # not one multi-frame file
    if per_slice:
        _check_same_plane(reader, files)
        _check_rescale(reader, files)
    positions = _slice_positions(reader, image, files) if per_slice and len(files) > 1 else None
    _check_unread(unread, gaps, image, positions)
    if positions is None:
        return image
    rounding = _position_rounding(reader, files, np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)[:, 2])
    return _with_slice_tags(_checked_grid(image, positions, files, gaps, rounding), reader)


def _check_photometric(reader: sitk.ImageSeriesReader, files: List[str], folder: Path) -> None:
    """Refuse a colour series (ITK mixes its channels into one grey value, as a colour volume file is refused); say that
    a MONOCHROME1 series is read as displayed (GDCM inverts it: the brightest stored value becomes the darkest)."""
    def text(tag: str) -> str:
        return reader.GetMetaData(0, tag).strip().upper() if reader.HasMetaDataKey(0, tag) else ""

    samples, photometric = text("0028|0002"), text("0028|0004")
    if (samples and samples != "1") or photometric.startswith(("RGB", "YBR", "PALETTE")):
        raise InputError(f"DICOM series in {folder} is colour ({photometric or samples + ' samples per pixel'}): "
                         "a single-channel (grayscale) volume is required")
    if photometric == "MONOCHROME1":
        warn(f"DICOM series in {folder} is MONOCHROME1 (stored values shown inverted): it is read and written as "
             "displayed, so its values are inverted against the stored ones")


def _size_mismatch(files: List[str], folder: Path) -> Optional[str]:
    """The refusal naming a slice whose Rows or Columns differ from the series' (ITK's own message is only a size), or None."""
    import pydicom  # lazy: pydicom only reads the headers of a series ITK could not stack

    sizes = []
    for name in files:
        try:
            header = pydicom.dcmread(name, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
            sizes.append((int(header.Rows), int(header.Columns)))
        except Exception:  # pydicom raises many types for damaged files; ITK's message stands then
            return None
    common = Counter(sizes).most_common(1)[0][0] if sizes else None
    odd = [index for index, size in enumerate(sizes) if size != common]
    if not odd:
        return None
    rows, columns = sizes[odd[0]]
    return (f"DICOM slice {Path(files[odd[0]]).name} in {folder} is {rows}x{columns} pixels, unlike the other slices "
            f"({common[0]}x{common[1]}); the files are not one volume")


def _chosen_series(folder: Path, series_id: Optional[str]) -> str:
    """The GDCM id of the series to read: ``series_id``, or the folder's only series."""
    with captured_stderr() as noise:
        try:
            ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        except RuntimeError as exc:  # GDCM throws on some damaged headers while grouping
            raise InputError(f"cannot read DICOM folder {folder}: {_last_line(exc, noise.first_message())}") from None
    if not ids:
        raise InputError(f"no DICOM series found in folder {folder}")
    if series_id is None and len(ids) > 1:
        raise InputError(f"folder {folder} holds {len(ids)} DICOM series: choose one (fagan-sr --series-id, a manifest's series_id "
                         f"column), or give each series its own folder; series: {', '.join(ids)}")
    if series_id is not None and series_id not in ids:
        raise InputError(f"DICOM series {series_id} not found in {folder}; available: {', '.join(ids)}")
    return series_id or ids[0]


SLICE_TAGS = ("0018|0050", "0018|0088")
"""Slice Thickness and Spacing Between Slices: copied onto the volume (through-plane SR reads the thickness)."""


def _with_slice_tags(image: sitk.Image, reader: sitk.ImageSeriesReader) -> sitk.Image:
    for key in SLICE_TAGS:
        if reader.HasMetaDataKey(0, key):
            image.SetMetaData(key, reader.GetMetaData(0, key))
    return image


def _last_line(exc: RuntimeError, fallback: str) -> str:
    """The last non-empty line of an ITK exception (without its ``ITK ERROR: ...:`` prefix)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else fallback
    return text.split("): ", 1)[-1] if text.startswith("ITK ERROR") else (text or fallback or type(exc).__name__)


def _check_no_symlink_loop(folder: Path) -> None:
    for entry in os.scandir(folder):
        if entry.is_symlink():
            try:
                os.stat(entry.path)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise InputError(f"DICOM folder {folder} holds a symbolic link loop: {entry.name}") from None


def _orientation_problem(value: Optional[np.ndarray]) -> Optional[str]:
    """Why an ImageOrientationPatient value cannot orient the slices (ITK would read it as the identity); None if it can."""
    if value is None or value.size != 6:
        return "the orientation of the slices is unknown"
    row, column = value[:3], value[3:]
    if max(abs(np.linalg.norm(row) - 1), abs(np.linalg.norm(column) - 1), abs(row @ column)) > _UNIT_TOL:
        return "its row and column directions are not two perpendicular unit vectors"
    return None


def _spacing_problem(value: Optional[np.ndarray]) -> Optional[str]:
    """Why a PixelSpacing value cannot size the pixels (ITK would read 1 mm or flip the axes); None if it can."""
    if value is None or value.size != 2:
        return "the pixel size is unknown"
    return "a pixel size must be positive" if np.any(value <= 0) else None


_PLANE_TAGS = (("0020|0037", "ImageOrientationPatient", 1e-3, _orientation_problem),
               ("0028|0030", "PixelSpacing", 1e-3, _spacing_problem),
               ("0028|0010", "Rows", 0.0, None), ("0028|0011", "Columns", 0.0, None))
"""Tags every slice of one volume shares: the tolerance of the comparison, and the check of the shared value."""


def _check_same_plane(reader: sitk.ImageSeriesReader, files: List[str]) -> None:
    """Refuse a series whose slices do not all share one valid orientation, pixel spacing and matrix
    (ITK would stack them as a regular volume with the first slice's geometry)."""
    for tag, name, tol, problem_of in _PLANE_TAGS:
        reference = _common_value(reader, files, tag, name, tol)
        problem = problem_of(reference) if problem_of else None
        if problem:
            raise InputError(
                f"DICOM slice {Path(files[0]).name} and the rest of its series have {name} {_shown(reference)}: {problem}"
            )


def _common_value(reader: sitk.ImageSeriesReader, files: List[str], tag: str, name: str, tol: float) -> Optional[np.ndarray]:
    """The value of ``tag`` most slices hold (None: missing); refuse a slice that holds another one."""
    values = [_numbers(reader, index, tag) for index in range(len(files))]
    keys = [tuple(np.round(v, 3)) if v is not None else None for v in values]
    reference = values[keys.index(Counter(keys).most_common(1)[0][0])]
    for index, value in enumerate(values):
        if value is None and reference is None:
            continue
        if reference is None or value is None or len(value) != len(reference) or not np.allclose(value, reference, atol=tol, rtol=tol):
            raise InputError(
                f"DICOM slice {Path(files[index]).name} has {name} {_shown(value)}, unlike the other slices ({_shown(reference)}); "
                "the files are not one volume"
            )
    return reference


def _shown(value: Optional[np.ndarray]) -> str:
    """A tag's value as the header writes it (``missing`` for None)."""
    return "missing" if value is None else "\\".join(f"{v:g}" for v in value)


_RESCALE_TAGS = (("0028|1053", "RescaleSlope"), ("0028|1052", "RescaleIntercept"))


def _check_rescale(reader: sitk.ImageSeriesReader, files: List[str]) -> None:
    """Refuse a slice whose RescaleSlope or RescaleIntercept is not a finite number, or whose slope is 0
    (ITK ignores such a rescale and reads the slice's stored values unscaled)."""
    for index, path in enumerate(files):
        for tag, name in _RESCALE_TAGS:
            text = reader.GetMetaData(index, tag).strip() if reader.HasMetaDataKey(index, tag) else ""
            value = _numbers(reader, index, tag)
            if text and (value is None or value.size != 1 or (name == "RescaleSlope" and value[0] == 0)):
                raise InputError(
                    f"DICOM slice {Path(path).name} has {name} {text}: the rescale slope and intercept must be finite numbers "
                    "and the slope not 0 (ITK would read the stored values unscaled)"
                )


def _numbers(reader: sitk.ImageSeriesReader, index: int, tag: str) -> Optional[np.ndarray]:
    try:
        values = np.asarray([float(v) for v in reader.GetMetaData(index, tag).split("\\")])
    except (RuntimeError, ValueError):
        return None
    return values if values.size and np.all(np.isfinite(values)) else None


def _unread_slices(folder: Path, series: str, files: List[str]) -> List[Tuple[str, Optional[np.ndarray]]]:
    """The image files of ``series`` in ``folder`` that GDCM left out of ``files`` (no pixel data, damaged or
    truncated), each with its ImagePositionPatient; GDCM's scan: the folder's regular files, hidden ones left out."""
    read = {Path(name).name for name in files}
    skipped = sorted(Path(entry.path) for entry in os.scandir(folder)
                     if entry.name not in read and not entry.name.startswith(".") and entry.is_file())
    if not skipped:
        return []
    import pydicom  # lazy: pydicom only reads the headers of files GDCM skipped

    headers = [(path.name, _header(pydicom, path)) for path in skipped]
    return [(name, _position(header)) for name, header in headers
            if header is not None and "Rows" in header and _series_id(header) == series]


def _header(pydicom: Any, path: Path) -> Optional[Any]:
    """The header of a DICOM file; None for a file that is not DICOM (such as a text file)."""
    try:
        with warnings.catch_warnings():  # pydicom warns of the damage for which GDCM skipped the file
            warnings.simplefilter("ignore")
            return pydicom.dcmread(str(path), stop_before_pixels=True,
                                   specific_tags=["SeriesInstanceUID", "Rows", "ImagePositionPatient"])
    except pydicom.errors.InvalidDicomError:
        return None
    except Exception as exc:  # pydicom raises many types for damaged files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"DICOM file {path.name} in {path.parent} cannot be read ({reason}); it may be a slice of the series") from None


def _series_id(header: Any) -> str:
    """The series id GDCM gives the file: its SeriesInstanceUID without characters other than letters, digits and dots."""
    return re.sub(r"[^A-Za-z0-9.]", "", str(header.get("SeriesInstanceUID", "")))


def _position(header: Any) -> Optional[np.ndarray]:
    """The file's ImagePositionPatient; None when it is missing or not three finite numbers."""
    try:
        point = np.asarray([float(v) for v in header.ImagePositionPatient])
    except (AttributeError, TypeError, ValueError):
        return None
    return point if point.size == 3 and np.all(np.isfinite(point)) else None


def _check_unread(unread: List[Tuple[str, Optional[np.ndarray]]], gaps: str, image: sitk.Image,
                  positions: Optional[np.ndarray] = None) -> None:
    """Refuse a slice of the series that could not be read, unless it lies between two read slices and
    ``gaps="resample"`` interpolates it (``positions``: the read slices' positions along the normal)."""
    normal = None if positions is None else np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)[:, 2]
    for name, point in unread:
        inside = normal is not None and point is not None and min(positions) < float(point @ normal) < max(positions)
        if gaps == "resample" and inside:
            continue
        raise InputError(
            f"DICOM slice {name} of the series cannot be read (no pixel data, or a damaged or truncated file)"
            + ("; --dicom-gaps resample interpolates it from its neighbours instead" if inside else "")
        )


def _slice_positions(reader: sitk.ImageSeriesReader, image: sitk.Image, files: List[str]) -> np.ndarray:
    """Each slice's position (mm) along the slice normal, in the reader's order; refuse a slice
    shifted within the slice plane (the slices would not stack into one volume)."""
    normal = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)[:, 2]
    points = []
    for index, name in enumerate(files):
        point = _numbers(reader, index, _POSITION_TAG)
        if point is None or len(point) != 3:
            raise InputError(f"DICOM slice {Path(name).name} has no valid ImagePositionPatient")
        points.append(point)
    offsets = np.asarray(points) - points[0]
    in_plane = np.linalg.norm(offsets - np.outer(offsets @ normal, normal), axis=1)
    tol = max(0.01, _IN_PLANE_TOL * min(image.GetSpacing()[:2]))
    worst = int(np.argmax(in_plane))
    if in_plane[worst] > tol:
        raise InputError(
            f"DICOM slice {Path(files[worst]).name} is shifted {in_plane[worst]:.3f} mm within the slice plane from "
            f"{Path(files[0]).name} (ImagePositionPatient); the slices do not stack into one volume"
        )
    return offsets @ normal + float(np.asarray(points[0]) @ normal)


def _position_rounding(reader: sitk.ImageSeriesReader, files: List[str], normal: np.ndarray) -> float:
    """How far (mm) a step between two slices along ``normal`` may be off from rounding alone: ImagePositionPatient is
    text, often written with two decimals (0.9375 mm slices read 0.94, 0.93, 0.94, ...). Each coordinate that varies
    over the series adds the last decimal its longest value writes, weighted by the normal's component; one that stays
    the same rounds the same way on every slice and adds nothing."""
    texts = [reader.GetMetaData(index, _POSITION_TAG).split("\\") if reader.HasMetaDataKey(index, _POSITION_TAG) else []
             for index in range(len(files))]
    rounding = 0.0
    for axis in range(3):
        column = [parts[axis].strip() for parts in texts if len(parts) == 3]
        if len(set(column)) < 2 or any("e" in value.lower() for value in column):
            continue
        decimals = max(len(value.split(".")[1]) if "." in value else 0 for value in column)  # a dropped trailing zero
        # (``12.5`` beside ``13.4375``) says nothing of the writer's precision: its longest value does
        rounding += abs(float(normal[axis])) * 10.0 ** -decimals
    return rounding


def _checked_grid(image: sitk.Image, positions: np.ndarray, files: List[str], gaps: str, rounding: float = 0.0) -> sitk.Image:
    """Refuse duplicated, backward or (unless ``gaps="resample"``) uneven steps between slices; ``rounding``: how far a step
    may be off from the header's rounding of the positions (``_position_rounding``). An even series gets the mean step
    from the first to the last slice as its spacing (ITK takes the first step, off by that rounding)."""
    steps = np.diff(positions)
    same = max(float(np.median(np.abs(steps))) * _REL_TOL, 1e-4)
    for index, step in enumerate(steps):
        if abs(step) <= same:
            raise InputError(
                f"DICOM slices {Path(files[index]).name} and {Path(files[index + 1]).name} are both at "
                f"{positions[index]:.3f} mm along the slice normal (duplicated slice)"
            )
    smallest = float(steps[np.argmin(np.abs(steps))])  # the acquired spacing: the closest pair of slices
    backwards = [i for i, step in enumerate(steps) if step * smallest < 0]
    if backwards:  # no resampling can mend it: a position repeats further on, or two stacks are interleaved
        index = backwards[0]
        raise InputError(
            f"DICOM slices {Path(files[index]).name} and {Path(files[index + 1]).name} go back {abs(steps[index]):.3f} mm "
            "along the slice normal: a slice position repeats (a duplicated slice) or the folder mixes two stacks"
        )
    tol = max(abs(smallest) * _REL_TOL, min(2 * rounding, abs(smallest) * _MAX_ROUNDING_TOL), 1e-4)
    uneven = [i for i, step in enumerate(steps) if abs(step - smallest) > tol]
    nominal = float(np.mean([step for step in steps if abs(step - smallest) <= tol]))  # rounding averages out
    if not uneven:
        return _with_spacing(image, (positions[-1] - positions[0]) / (len(positions) - 1))
    first = uneven[0]
    if gaps == "error":
        raise InputError(
            f"DICOM series has a gap of {steps[first]:.3f} mm between slices {Path(files[first]).name} and "
            f"{Path(files[first + 1]).name} (slice spacing {nominal:.3f} mm: a slice is missing or unreadable); "
            "--dicom-gaps resample interpolates it onto a uniform grid instead"
        )
    return _resampled(image, positions, nominal)


def _with_spacing(image: sitk.Image, spacing: float) -> sitk.Image:
    """``image`` with its slice spacing set to ``spacing`` (the series' mean step), where ITK's differs."""
    if spacing > 0 and abs(image.GetSpacing()[2] - spacing) > 1e-6 * spacing:
        image.SetSpacing((*image.GetSpacing()[:2], spacing))
    return image


_WHOLE_STEPS_TOL = 0.05
"""A first-to-last distance within this many steps of a whole number of them is that number (header rounding)."""


def _resampled(image: sitk.Image, positions: np.ndarray, nominal: float) -> sitk.Image:
    """Linear interpolation along the normal onto positions ``positions[0] + k * nominal`` (``nominal`` made to fit a
    whole number of steps between the first and last slice when it nearly does)."""
    if nominal < 0:
        raise InputError("DICOM slices are not in increasing order along their normal")
    values = sitk.GetArrayViewFromImage(image).astype(np.float32)
    steps = (positions[-1] - positions[0]) / nominal
    if abs(steps - round(steps)) <= _WHOLE_STEPS_TOL:  # missing slices: a whole number of steps from the first to the last
        nominal = (positions[-1] - positions[0]) / round(steps)
    count = int(np.floor((positions[-1] - positions[0]) / nominal + 1e-6)) + 1
    targets = positions[0] + nominal * np.arange(count)
    upper = np.clip(np.searchsorted(positions, targets, side="right"), 1, len(positions) - 1)
    lower = upper - 1
    weight = ((targets - positions[lower]) / (positions[upper] - positions[lower])).astype(np.float32)[:, None, None]
    array = values[lower] * (1 - weight) + values[upper] * weight
    result = sitk.GetImageFromArray(array)
    result.SetOrigin(image.GetOrigin())
    result.SetDirection(image.GetDirection())
    result.SetSpacing((*image.GetSpacing()[:2], nominal))
    return result
