"""A single-file NIfTI's own header: its magic and data offset, and which transform decides its geometry.

ITK reads a file with a damaged magic as Analyze (losing the origin), reads the voxels from byte
348 whatever ``vox_offset`` says, and takes the slice spacing from ``pixdim`` even where a valid
sform says otherwise. The rule here (docs/reliability.md):

1. the sform, when ``sform_code`` > 0 and it is finite and not singular;
2. else the qform, when ``qform_code`` > 0 and ``pixdim[1..3]`` are finite and positive;
3. else, with both codes 0, ``pixdim[1..3]`` alone (finite and positive);
4. else the file is refused.

Any other field that disagrees with the deciding transform is named in one warning line.
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from fagan_engine.util.errors import InputError

_NIFTI1 = (348, b"n+1\0", 108, "f", 352, 76, "f")
_NIFTI2 = (540, b"n+2\0\r\n\x1a\n", 168, "q", 544, 104, "d")
"""(sizeof_hdr, single-file magic, vox_offset position, its struct type, smallest data offset,
pixdim position, its struct type)."""
_MAGIC_AT = {348: 344, 540: 4}
_REL_TOL = 1e-3


class Geometry(NamedTuple):
    """The RAS affine that decides the image's geometry (None: ITK's pixdim-only reading stands), which
    field gave it, and what disagreed (or '')."""

    affine: Optional[np.ndarray]
    source: str
    conflict: str


def check_single_file_header(path: Path) -> np.ndarray:
    """Refuse a ``.nii``/``.nii.gz`` whose header is not a single-file NIfTI-1/2 with a sound ``vox_offset``;
    return ``pixdim[1..3]`` as stored (nibabel "fixes" them on loading)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(_NIFTI2[0])
    except (OSError, EOFError, zlib.error):
        raise InputError(f"cannot read {path}: its gzip stream is damaged") from None
    for endian in "<>":
        size = struct.unpack(endian + "i", head[:4])[0] if len(head) >= 4 else 0
        for layout in (_NIFTI1, _NIFTI2):
            if size == layout[0] and len(head) >= layout[0]:
                _check_layout(path, head, endian, layout)
                return np.asarray(struct.unpack_from(endian + "4" + layout[6], head, layout[5])[1:], dtype=float)
    raise InputError(f"cannot read {path}: not a NIfTI file (its header size field is not 348 or 540, or the header is cut short)")


def _check_layout(path: Path, head: bytes, endian: str, layout: tuple) -> None:
    size, magic, offset_at, kind, smallest = layout[:5]
    found = head[_MAGIC_AT[size] : _MAGIC_AT[size] + len(magic)]
    if found != magic:
        raise InputError(
            f"cannot read {path}: its NIfTI magic is {found!r}, not {magic!r} (a single-file NIfTI); the header is damaged"
        )
    offset = struct.unpack_from(endian + kind, head, offset_at)[0]
    if not (math.isfinite(offset) and offset == int(offset) and offset >= smallest):
        raise InputError(f"cannot read {path}: its vox_offset {offset} must be a whole number >= {smallest}; the header is damaged")


def decide_geometry(header: "nibabel.Nifti1Header", pixdim: np.ndarray, path: Path) -> Geometry:  # noqa: F821
    """The transform that decides the geometry (rule in the module docstring), given the stored
    ``pixdim[1..3]``; InputError when none is valid."""
    sform, sform_code = header.get_sform(coded=True)
    qform_code = int(header["qform_code"])
    pixdim_ok = bool(np.all(np.isfinite(pixdim)) and np.all(pixdim > 0))
    sform_ok = sform_code > 0 and _usable(sform)
    if sform_ok:
        spacing = np.linalg.norm(sform[:3, :3], axis=0)
        if not pixdim_ok or np.any(np.abs(pixdim - spacing) > _REL_TOL * spacing):
            return Geometry(sform, "sform", f"pixdim {_numbers(pixdim)} disagrees with the sform's spacing {_numbers(spacing)}")
        qform = header.get_qform() if qform_code > 0 else None
        if qform is not None and _usable(qform) and not np.allclose(qform, sform, rtol=_REL_TOL, atol=_REL_TOL * (1 + np.abs(sform).max())):
            return Geometry(sform, "sform", "the qform disagrees with the sform")
        return Geometry(sform, "sform", "")
    if sform_code > 0 and not (qform_code > 0 and pixdim_ok):
        raise InputError(f"cannot read {path}: its geometry (sform) holds NaN or Inf or is singular, and no valid qform replaces it")
    if not pixdim_ok:
        raise InputError(f"cannot read {path}: pixdim {_numbers(pixdim)} must be positive numbers, and no valid sform gives the spacing")
    if qform_code > 0:
        return Geometry(header.get_qform(), "qform", "the sform holds NaN or Inf or is singular" if sform_code > 0 else "")
    return Geometry(None, "pixdim", "")


def _usable(affine: Optional[np.ndarray]) -> bool:
    return affine is not None and bool(np.all(np.isfinite(affine))) and abs(np.linalg.det(affine[:3, :3])) > 1e-12


def _numbers(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"
