"""A single-file NIfTI's own header: its magic and data offset, and which transform decides its geometry.

ITK reads a file with a damaged magic as Analyze (losing the origin), reads the voxels from byte
348 whatever ``vox_offset`` says, and takes the slice spacing from ``pixdim`` even where a valid
sform says otherwise. The rule here (docs/reliability.md):

1. the sform, when ``sform_code`` > 0 and it is finite and not singular;
2. else the qform, when ``qform_code`` > 0 and ``pixdim[1..3]`` are finite and positive;
3. else, with both codes 0, ``pixdim[1..3]`` alone (finite and positive);
4. else the file is refused.

Any other field that disagrees with the deciding transform is named in one warning line. The transform is in the
file's spatial unit (``xyzt_units``: metres, millimetres or microns; unknown is taken as millimetres, as ITK does) and is
returned in millimetres.
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import NamedTuple, Optional, Tuple

import numpy as np

from fagan_engine.util.errors import InputError


class _Layout(NamedTuple):
    """Where a NIfTI version keeps the fields checked here (byte positions, struct types)."""

    size: int
    magic: bytes
    magic_at: int
    vox_offset_at: int
    vox_offset_type: str
    smallest_offset: int
    pixdim_at: int
    pixdim_type: str
    bitpix_at: int
    scaling_at: int
    dim_at: int
    dim_type: str


_LAYOUTS = (_Layout(348, b"n+1\0", 344, 108, "f", 352, 76, "f", 72, 112, 40, "h"),
            _Layout(540, b"n+2\0\r\n\x1a\n", 4, 168, "q", 544, 104, "d", 14, 176, 16, "q"))
_REL_TOL = 1e-3
_MM_PER_UNIT = {1: 1000.0, 2: 1.0, 3: 0.001}
"""NIfTI ``xyz_units`` code (metre, millimetre, micron) -> millimetres per unit; any other code counts as millimetres."""


class Stored(NamedTuple):
    """Header fields as the file stores them (nibabel "fixes" them on loading)."""

    pixdim: np.ndarray
    """``pixdim[1..3]``."""
    bitpix: int
    scaling: Tuple[float, float]
    """``scl_slope``, ``scl_inter`` (nibabel's loaded header holds NaN for both once its data proxy took them)."""
    data_end: int
    """Byte offset where the voxel data ends: ``vox_offset`` + the voxels of ``dim[1..dim[0]]`` × ``bitpix`` / 8."""


class Geometry(NamedTuple):
    """The RAS affine that decides the image's geometry (None: ITK's pixdim-only reading stands), which
    field gave it, and the one warning line about it (what disagreed, or that the file gives no orientation; or '')."""

    affine: Optional[np.ndarray]
    source: str
    conflict: str


def check_single_file_header(path: Path) -> Stored:
    """Refuse a ``.nii``/``.nii.gz`` whose header is not a single-file NIfTI-1/2 with a sound ``vox_offset``;
    return the stored fields the later checks need."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(_LAYOUTS[1].size)
    except (OSError, EOFError, zlib.error):
        raise InputError(f"cannot read {path}: its gzip stream is damaged") from None
    for endian in "<>":
        size = struct.unpack(endian + "i", head[:4])[0] if len(head) >= 4 else 0
        for layout in _LAYOUTS:
            if size == layout.size and len(head) >= layout.size:
                _check_layout(path, head, endian, layout)
                pixdim = struct.unpack_from(endian + "4" + layout.pixdim_type, head, layout.pixdim_at)[1:]
                scaling = struct.unpack_from(endian + "2" + layout.pixdim_type, head, layout.scaling_at)
                bitpix = struct.unpack_from(endian + "h", head, layout.bitpix_at)[0]
                dims = struct.unpack_from(endian + "8" + layout.dim_type, head, layout.dim_at)
                offset = int(struct.unpack_from(endian + layout.vox_offset_type, head, layout.vox_offset_at)[0])
                voxels = math.prod(max(int(d), 0) for d in dims[1 : 1 + min(max(int(dims[0]), 0), 7)])
                return Stored(np.asarray(pixdim, dtype=float), bitpix, scaling, offset + voxels * max(bitpix, 0) // 8)
    raise InputError(f"cannot read {path}: not a NIfTI file (its header size field is not 348 or 540, or the header is cut short)")


def _check_layout(path: Path, head: bytes, endian: str, layout: _Layout) -> None:
    found = head[layout.magic_at : layout.magic_at + len(layout.magic)]
    if found != layout.magic:
        raise InputError(
            f"cannot read {path}: its NIfTI magic is {found!r}, not {layout.magic!r} (a single-file NIfTI); the header is damaged"
        )
    offset = struct.unpack_from(endian + layout.vox_offset_type, head, layout.vox_offset_at)[0]
    if not (math.isfinite(offset) and offset == int(offset) and offset >= layout.smallest_offset):
        raise InputError(
            f"cannot read {path}: its vox_offset {offset} must be a whole number >= {layout.smallest_offset}; the header is damaged"
        )


def decide_geometry(header: "nibabel.Nifti1Header", pixdim: np.ndarray, path: Path) -> Geometry:  # noqa: F821
    """The transform that decides the geometry (rule in the module docstring), in millimetres, given the stored
    ``pixdim[1..3]``; InputError when none is valid."""
    geometry = _deciding_transform(header, pixdim, path)
    if geometry.affine is None:
        return geometry
    affine = geometry.affine.copy()
    affine[:3, :] *= _MM_PER_UNIT.get(int(header["xyzt_units"]) & 0x07, 1.0)
    return geometry._replace(affine=affine)


def _deciding_transform(header: "nibabel.Nifti1Header", pixdim: np.ndarray, path: Path) -> Geometry:  # noqa: F821
    """``decide_geometry`` in the file's own spatial unit."""
    sform, sform_code = header.get_sform(coded=True)
    has_qform = int(header["qform_code"]) > 0
    qform = _qform(header) if has_qform else None
    pixdim_ok = bool(np.all(np.isfinite(pixdim)) and np.all(pixdim > 0))
    if sform_code > 0 and _usable(sform):
        spacing = np.linalg.norm(sform[:3, :3], axis=0)
        conflict = ""
        if not pixdim_ok or np.any(np.abs(pixdim - spacing) > _REL_TOL * spacing):
            conflict = f"pixdim {_numbers(pixdim)} disagrees with the sform's spacing {_numbers(spacing)}"
        elif has_qform and not _usable(qform):
            conflict = "the qform is not valid (NaN, Inf or not a rotation)"
        elif has_qform and not np.allclose(qform, sform, rtol=_REL_TOL, atol=_REL_TOL * (1 + np.abs(sform).max())):
            conflict = "the qform disagrees with the sform"
        return Geometry(sform, "sform", conflict)
    if not pixdim_ok:
        raise InputError(f"cannot read {path}: pixdim {_numbers(pixdim)} must be positive numbers, and no valid sform gives the spacing")
    if (sform_code > 0 or has_qform) and not (has_qform and _usable(qform)):
        raise InputError(f"cannot read {path}: neither its sform nor its qform is valid (they hold NaN or Inf, are singular or not a rotation)")
    if has_qform:
        return Geometry(qform, "qform", "the sform holds NaN or Inf or is singular" if sform_code > 0 else "")
    return Geometry(None, "pixdim", "sform_code and qform_code are 0, so the file gives no orientation or origin: read as ITK "
                    "reads it (identity direction, origin 0), which nibabel-based tools (FSL, ...) place differently")


def _qform(header: "nibabel.Nifti1Header") -> Optional[np.ndarray]:  # noqa: F821
    """The qform affine, or None when its quaternion is not a rotation (nibabel raises)."""
    try:
        return header.get_qform()
    except (ValueError, np.linalg.LinAlgError):
        return None


def _usable(affine: Optional[np.ndarray]) -> bool:
    return affine is not None and bool(np.all(np.isfinite(affine))) and abs(np.linalg.det(affine[:3, :3])) > 1e-12


def _numbers(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"
