"""Read one DICOM series from a folder and check that its slices form a true uniform grid.

ITK rebuilds a series with a missing, unreadable or duplicated slice as a uniform grid, so the
slices after the gap sit at wrong positions. Here every slice's ImagePositionPatient is
projected on the slice normal: a duplicate is always refused, a gap is refused unless the
caller asks (``gaps="resample"``) for linear resampling onto a uniform grid at the true positions.
"""
from __future__ import annotations

import errno
import os
from collections import Counter
from pathlib import Path
from typing import List, Optional

import numpy as np
import SimpleITK as sitk

from fagan_engine.util.errors import ConfigError, InputError
from fagan_engine.util.options import GAP_POLICIES
from fagan_engine.util.stdio_capture import captured_stderr

_REL_TOL = 0.01  # slice distances may differ from the nominal spacing by 1 % (rounding in headers)
_POSITION_TAG = "0020|0032"
_IN_PLANE_TOL = 0.05
"""A slice may sit this fraction of a pixel off the line through the first slice along the normal (header rounding)."""
_PLANE_TAGS = (("0020|0037", "ImageOrientationPatient", 1e-3), ("0028|0030", "PixelSpacing", 1e-3),
               ("0028|0010", "Rows", 0.0), ("0028|0011", "Columns", 0.0))
"""Tags every slice of one volume shares, with the tolerance of the comparison."""


def read_dicom_series(folder: Path, series_id: Optional[str], gaps: str = "error") -> sitk.Image:
    """The series of ``folder`` (``series_id`` picks one of several) with checked slice positions."""
    if gaps not in GAP_POLICIES:
        raise ConfigError(f"DICOM gap policy must be one of {', '.join(GAP_POLICIES)}; got {gaps!r}")
    _check_no_symlink_loop(folder)
    with captured_stderr() as noise:
        try:
            ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        except RuntimeError as exc:  # GDCM throws on some damaged headers while grouping
            raise InputError(f"cannot read DICOM folder {folder}: {_last_line(exc, noise.first_message())}") from None
    if not ids:
        raise InputError(f"no DICOM series found in folder {folder}")
    if series_id is None and len(ids) > 1:
        raise InputError(f"folder {folder} holds {len(ids)} DICOM series; pass one as series_id: {', '.join(ids)}")
    if series_id is not None and series_id not in ids:
        raise InputError(f"DICOM series {series_id} not found in {folder}; available: {', '.join(ids)}")
    reader = sitk.ImageSeriesReader()
    with captured_stderr() as noise:
        try:
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id or ids[0])
            reader.SetFileNames(files)
            reader.MetaDataDictionaryArrayUpdateOn()
            image = reader.Execute()
        except RuntimeError as exc:
            image, failure = None, _last_line(exc, "")
    if image is None:
        raise InputError(f"cannot read DICOM series in {folder}: {noise.first_message() or failure}")
    if image.GetDimension() != 3 or image.GetSize()[2] != len(files) or len(files) < 2:
        return image
    _check_same_plane(reader, files)
    positions = _slice_positions(reader, image, files)
    return _with_slice_tags(_checked_grid(image, positions, files, gaps), reader)


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


def _check_same_plane(reader: sitk.ImageSeriesReader, files: List[str]) -> None:
    """Refuse a series whose slices do not all share one orientation, pixel spacing and matrix
    (ITK would stack them as a regular volume with the first slice's geometry)."""
    for tag, name, tol in _PLANE_TAGS:
        values = [_numbers(reader, index, tag) for index in range(len(files))]
        keys = [tuple(np.round(v, 3)) if v is not None else None for v in values]
        common = Counter(keys).most_common(1)[0][0]
        reference = values[keys.index(common)]
        for index, value in enumerate(values):
            if value is None and reference is None:
                continue
            if reference is None or value is None or len(value) != len(reference) or not np.allclose(value, reference, atol=tol, rtol=tol):
                shown = "missing" if value is None else "\\".join(f"{v:g}" for v in value)
                expected = "\\".join(f"{v:g}" for v in reference) if reference is not None else "missing"
                raise InputError(
                    f"DICOM slice {Path(files[index]).name} has {name} {shown}, unlike the other slices ({expected}); "
                    "the files are not one volume"
                )


def _numbers(reader: sitk.ImageSeriesReader, index: int, tag: str) -> Optional[np.ndarray]:
    try:
        values = np.asarray([float(v) for v in reader.GetMetaData(index, tag).split("\\")])
    except (RuntimeError, ValueError):
        return None
    return values if values.size and np.all(np.isfinite(values)) else None


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


def _checked_grid(image: sitk.Image, positions: np.ndarray, files: List[str], gaps: str) -> sitk.Image:
    steps = np.diff(positions)
    same = max(float(np.median(np.abs(steps))) * _REL_TOL, 1e-4)
    for index, step in enumerate(steps):
        if abs(step) <= same:
            raise InputError(
                f"DICOM slices {Path(files[index]).name} and {Path(files[index + 1]).name} are both at "
                f"{positions[index]:.3f} mm along the slice normal (duplicated slice)"
            )
    nominal = float(steps[np.argmin(np.abs(steps))])  # the acquired spacing: the closest pair of slices
    backwards = [i for i, step in enumerate(steps) if step * nominal < 0]
    if backwards:  # no resampling can mend it: a position repeats further on, or two stacks are interleaved
        index = backwards[0]
        raise InputError(
            f"DICOM slices {Path(files[index]).name} and {Path(files[index + 1]).name} go back {abs(steps[index]):.3f} mm "
            "along the slice normal: a slice position repeats (a duplicated slice) or the folder mixes two stacks"
        )
    tol = max(abs(nominal) * _REL_TOL, 1e-4)
    uneven = [i for i, step in enumerate(steps) if abs(step - nominal) > tol]
    if not uneven:
        return image
    first = uneven[0]
    if gaps == "error":
        raise InputError(
            f"DICOM series has a gap of {steps[first]:.3f} mm between slices {Path(files[first]).name} and "
            f"{Path(files[first + 1]).name} (slice spacing {nominal:.3f} mm: a slice is missing or unreadable); "
            "--dicom-gaps resample interpolates it onto a uniform grid instead"
        )
    return _resampled(image, positions, nominal)


def _resampled(image: sitk.Image, positions: np.ndarray, nominal: float) -> sitk.Image:
    """Linear interpolation along the normal onto positions ``positions[0] + k * nominal``."""
    if nominal < 0:
        raise InputError("DICOM slices are not in increasing order along their normal")
    values = sitk.GetArrayViewFromImage(image).astype(np.float32)
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
