"""Checks of MetaImage and NRRD headers that ITK does not make.

ITK reads a MetaImage whose data file list is empty, or whose "compressed" data is raw, as an
all-zero volume, and turns a NaN origin in a NRRD header into 0. These checks read the text
header and the data it points at, and refuse what would silently become a wrong volume.
"""
from __future__ import annotations

import gzip
import math
import re
import stat
import zlib
from pathlib import Path
from typing import Dict, Optional

from fagan_engine.util.errors import InputError

_MAX_HEADER = 1 << 20
_META_GEOMETRY = ("Offset", "Position", "Origin", "ElementSpacing", "ElementSize", "TransformMatrix", "Rotation", "Orientation")
_META_TYPE_SIZES = {
    "MET_UCHAR": 1, "MET_CHAR": 1, "MET_USHORT": 2, "MET_SHORT": 2, "MET_UINT": 4, "MET_INT": 4,
    "MET_ULONG_LONG": 8, "MET_LONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}
_NRRD_TYPE_SIZES = {
    **dict.fromkeys(("char", "signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
                     "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"), 4),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t",
                     "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t", "double"), 8),
}
"""Bytes per value of the NRRD type names (teem's spellings)."""
_NRRD_GEOMETRY = ("space origin", "space directions", "spacings", "thicknesses", "axis mins", "axis maxs")
_NUMBER = re.compile(r"[-+]?(?:nan|inf(?:inity)?|\d+\.?\d*(?:e[-+]?\d+)?|\.\d+(?:e[-+]?\d+)?)", re.IGNORECASE)


def check_metaimage(path: Path) -> None:
    """Refuse a MetaImage with non-finite geometry, missing, short or long data, or corrupt compressed data."""
    head = _read_head(path)
    fields: Dict[str, str] = {}
    lines = head.split(b"\n")
    data_start = len(head)
    position = 0
    for raw in lines:
        position += len(raw) + 1
        key, sep, value = raw.decode("latin-1").partition("=")
        if not sep:
            continue
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            data_start = position
            break
    for key in _META_GEOMETRY:
        _check_finite(path, key, fields.get(key))
    data_file = fields.get("ElementDataFile", "")
    if data_file.upper().startswith("LIST"):
        listed = [line.strip() for line in head[data_start:].decode("latin-1").splitlines() if line.strip()]
        if not listed:
            raise InputError(f"cannot read {path}: ElementDataFile = LIST names no data files")
        return
    if not data_file or "%" in data_file:
        return  # ITK reports a missing field; numbered file patterns are left to ITK
    if data_file.upper() == "LOCAL":
        source, offset = path, data_start
    else:
        source, offset = path.parent / data_file, 0
        _check_regular(source, f"data file {data_file} of {path}")
    expected = _meta_data_size(fields)
    if expected is None:
        return
    skip = _int(fields.get("HeaderSize")) or 0
    if fields.get("CompressedData", "").lower() == "true":
        inflated = _inflated_size(source, offset)
        if inflated < expected:
            raise InputError(f"cannot read {path}: its compressed data is corrupt or shorter than the header declares")
        _check_not_longer(path, inflated, expected)
    else:
        held = source.stat().st_size - offset - max(skip, 0)
        if held < expected:
            raise InputError(f"cannot read {path}: file is truncated (it holds fewer voxels than its header declares)")
        if skip != -1:  # HeaderSize = -1: the data are the file's last bytes, whatever precedes them
            _check_not_longer(path, held, expected)


def check_nrrd(path: Path) -> None:
    """Refuse a NRRD with non-finite geometry, a detached data file that is not a regular file,
    gzip-encoded data whose stream is damaged (CRC or length; teem ignores the length), or more data
    than its sizes and type declare."""
    head = _read_head(path)
    end = head.find(b"\n\n")
    text = head[: end if end >= 0 else len(head)].decode("latin-1")
    fields: Dict[str, str] = {}
    source: Optional[Path] = path
    for line in text.splitlines()[1:]:
        key, sep, value = line.partition(":")
        if not sep or line.startswith("#"):
            continue
        key = key.strip().lower()
        fields[key] = value.strip()
        if key in _NRRD_GEOMETRY:
            _check_finite(path, key, value)
        if key in ("data file", "datafile"):
            name = value.strip()
            source = None
            if name and " " not in name and not name.upper().startswith("LIST"):
                source = path.parent / name
                _check_regular(source, f"data file {name} of {path}")
    skips = {"byte skip", "byteskip", "line skip", "lineskip"} & set(fields)
    if source is None or skips or (end < 0 and source == path):
        return
    offset = end + 2 if source == path else 0
    encoding = fields.get("encoding", "").lower()
    if encoding in ("gzip", "gz"):
        held = _gunzipped_size(source, offset)
        if held < 0:
            raise InputError(f"cannot read {path}: its gzip data is damaged (truncated, or its CRC or length check fails)")
    elif encoding == "raw":
        held = source.stat().st_size - offset
    else:
        return
    expected = _nrrd_data_size(fields)
    if expected is not None and held < expected:
        raise InputError(f"cannot read {path}: file is truncated (it holds fewer voxels than its header declares)")
    if expected is not None:
        _check_not_longer(path, held, expected)


def _gunzipped_size(path: Path, offset: int) -> int:
    """Bytes the gzip stream starting at ``offset`` decompresses to, with its CRC and length checked; -1 when damaged."""
    total = 0
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            with gzip.GzipFile(fileobj=handle) as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    total += len(chunk)
    except (OSError, EOFError, zlib.error):
        return -1
    return total


def _check_not_longer(path: Path, held: int, expected: int) -> None:
    """Refuse data longer than the header declares: a damaged size or type would be read as a wrong volume."""
    if held > expected:
        raise InputError(f"cannot read {path}: it holds {held - expected} bytes of data more than its header declares; the header is damaged")


def _nrrd_data_size(fields: Dict[str, str]) -> Optional[int]:
    """Bytes of voxel data the NRRD header declares (sizes × type), or None when a type is not known here."""
    element = _NRRD_TYPE_SIZES.get(" ".join(fields.get("type", "").lower().split()))
    sizes = [_int(token) for token in fields.get("sizes", "").split()]
    if element is None or not sizes or None in sizes:
        return None
    total = element
    for size in sizes:
        total *= size
    return total


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(_MAX_HEADER)


def _check_finite(path: Path, key: str, value: Optional[str]) -> None:
    if value is None:
        return
    numbers = [float(token) for token in _NUMBER.findall(value)]
    if not all(math.isfinite(number) for number in numbers):
        raise InputError(f"cannot read {path}: its geometry ({key}) holds NaN or Inf")


def _check_regular(path: Path, what: str) -> None:
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):  # ValueError: a NUL byte in the name
        raise InputError(f"{what} not found") from None
    if not stat.S_ISREG(mode):
        raise InputError(f"{what} is not a regular file")


def _meta_data_size(fields: Dict[str, str]) -> Optional[int]:
    sizes = [_int(token) for token in fields.get("DimSize", "").split()]
    element = _META_TYPE_SIZES.get(fields.get("ElementType", ""))
    channels = _int(fields.get("ElementNumberOfChannels", "1"))
    if not sizes or None in sizes or element is None or channels is None:
        return None
    total = element * channels
    for size in sizes:
        total *= size
    return total


def _int(text: Optional[str]) -> Optional[int]:
    try:
        return int(str(text).strip())
    except ValueError:
        return None


def _inflated_size(path: Path, offset: int) -> int:
    """Bytes a zlib stream starting at ``offset`` inflates to; -1 when it is corrupt."""
    inflater = zlib.decompressobj()
    total = 0
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                total += len(inflater.decompress(chunk))
                if inflater.eof:
                    break
            total += len(inflater.flush())
    except zlib.error:
        return -1
    return total
