"""Checks of a NIfTI file's own header and data that SimpleITK does not make.

ITK silently pads a truncated file with zeros, turns NaN/Inf voxels into 0, reads a header with
0 or negative sizes as one slice, and coerces a sheared sform to its orthogonal qform. nibabel
sees the file as written, so it decides here what is refused and which reader is exact.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple, Optional, Tuple

import numpy as np

from fagan_engine.io.nifti_header import Geometry, check_single_file_header, decide_geometry
from fagan_engine.util.errors import InputError
from fagan_engine.util.stdio_capture import captured_stderr

_ORTHOGONAL_TOL = 1e-6


class NiftiFacts(NamedTuple):
    """What the header and data say: voxels that are not finite, whether the affine is sheared, and
    the transform that decides the geometry."""

    non_finite: int
    sheared: bool
    geometry: Geometry
    voxels: int


def inspect_nifti(path: Path) -> Optional["NiftiFacts"]:
    """Check ``path`` and return its facts; None when nibabel cannot parse it (ITK then reports why).

    Raises InputError for a damaged magic or data offset, voxel scaling that readers disagree on, a bitpix that disagrees with the datatype,
    non-positive sizes, no valid transform, a data section shorter or longer than the header declares
    and (``.nii.gz``) a gzip stream whose CRC or length check fails.
    """
    stored = check_single_file_header(path)
    _check_scaling(stored.scaling, path)
    try:
        import nibabel as nib  # lazy: nibabel only for NIfTI files; io imports without it

        with captured_stderr():  # nibabel logs header fix-ups ("sizeof_hdr should be 348") on stderr
            image = nib.load(str(path))
        header = image.header
        dims = [int(d) for d in header["dim"]]
    except Exception:  # nibabel raises many types for unparsable headers
        return None
    count = dims[0]
    if not 1 <= count <= 7 or min(dims[1 : count + 1]) < 1:
        raise InputError(
            f"cannot read {path}: its header declares an empty axis (sizes {tuple(dims[1:count + 1])}, each must be >= 1)"
        )
    bits = header.get_data_dtype().itemsize * 8
    if stored.bitpix != bits:
        raise InputError(f"cannot read {path}: its bitpix {stored.bitpix} disagrees with its datatype ({bits} bits); the header is damaged")
    with captured_stderr():
        geometry = decide_geometry(header, stored.pixdim, path)
    if geometry.affine is not None and not np.all(np.isfinite(geometry.affine)):
        raise InputError(f"cannot read {path}: its geometry (sform/qform) holds NaN or Inf")
    gzipped = path.name.lower().endswith(".gz")
    held = _gunzipped_size(path) if gzipped else path.stat().st_size
    if gzipped and held < 0:
        raise InputError(f"cannot read {path}: its gzip stream is damaged (truncated, or its CRC or length check fails)")
    if held < _data_end(image):
        raise InputError(f"cannot read {path}: file is truncated (it holds fewer voxels than its header declares)")
    if held > _data_end(image):
        raise InputError(
            f"cannot read {path}: it holds {held - _data_end(image)} bytes more than its header declares "
            f"(sizes {tuple(image.shape)}); the header is damaged"
        )
    sheared = geometry.affine is not None and is_sheared(geometry.affine[:3, :3])
    with captured_stderr():
        return NiftiFacts(_non_finite(image), sheared, geometry, int(np.prod(image.shape)))


def _check_scaling(scaling: Tuple[float, float], path: Path) -> None:
    """Refuse voxel scaling that readers disagree on: a non-finite ``scl_slope`` or ``scl_inter`` (ITK applies part of
    it, nibabel drops it), or ``scl_inter`` without a slope (the standard says slope 0 means no scaling; ITK adds it)."""
    slope, inter = scaling
    if not (math.isfinite(slope) and math.isfinite(inter)):
        raise InputError(
            f"cannot read {path}: its voxel scaling (scl_slope {slope:g}, scl_inter {inter:g}) is not finite; the header is damaged"
        )
    if slope == 0 and inter != 0:
        raise InputError(
            f"cannot read {path}: its scl_inter {inter:g} comes without a scl_slope (0 means no scaling); the header is damaged"
        )


def nifti_complete(path: Path) -> bool:
    """False when ``path`` holds fewer bytes than its header declares (or cannot be parsed). The header is read here, not
    by nibabel, so that a NIfTI output is checked where nibabel is not installed (it read "incomplete" there)."""
    try:
        return data_complete(path, check_single_file_header(path).data_end)
    except Exception:  # unparsable: not a complete NIfTI
        return False


def is_sheared(matrix: np.ndarray) -> bool:
    """True when the columns of ``matrix`` (spacing × direction) are not mutually orthogonal."""
    columns = matrix / np.linalg.norm(matrix, axis=0)
    gram = columns.T @ columns
    return bool(np.abs(gram - np.diag(np.diag(gram))).max() > _ORTHOGONAL_TOL)


def data_complete(path: Path, expected: int) -> bool:
    """False when the (possibly gzipped) file holds fewer than ``expected`` bytes."""
    if not path.name.lower().endswith(".gz"):
        return path.stat().st_size >= expected
    return _gzip_trailer_size(path) == expected % (1 << 32) or _gunzipped_size(path) >= expected


def _data_end(image: "nibabel.Nifti1Image") -> int:  # noqa: F821
    """Byte offset where the voxel data ends (the data object knows the real ``vox_offset``)."""
    return int(image.dataobj.offset) + int(np.prod(image.shape)) * image.header.get_data_dtype().itemsize


def _non_finite(image: "nibabel.Nifti1Image") -> int:  # noqa: F821
    """Non-finite voxels in the file's own (unscaled) float data; ITK would turn them into 0."""
    if image.header.get_data_dtype().kind not in "fc":
        return 0
    try:
        data = np.asanyarray(image.dataobj.get_unscaled())
    except Exception:  # unreadable data: ITK reports the problem
        return 0
    return int(data.size - np.count_nonzero(np.isfinite(data)))


def _gzip_trailer_size(path: Path) -> int:
    """The uncompressed size modulo 2**32 stored in the last gzip member's trailer."""
    with open(path, "rb") as handle:
        if handle.seek(0, os.SEEK_END) < 4:
            return -1
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
