"""Parse a safetensors file without torch, check its header, and hash what defines its content.

The digest covers every tensor's name, dtype, shape and bytes (in name order) plus a text the
caller adds (its metadata JSON), so swapping the ``data_offsets`` of two tensors, pointing one
tensor at another's bytes or editing the metadata all change it. It detects corruption and
naive edits; it is not a signature (see docs/decisions.md, "Threat model").
"""
from __future__ import annotations

import hashlib
import json
import struct
from typing import Any, Dict, Optional, Tuple

from fagan_engine.util.errors import CheckpointError

MAX_HEADER = 100 * 1024 * 1024
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}


class SafetensorsFormatError(ValueError):
    """The bytes are not a well-formed safetensors file; the message says why, in one line."""


def split_safetensors(blob: bytes) -> Tuple[Dict[str, Any], Dict[str, str], memoryview]:
    """(tensor entries by name, ``__metadata__`` strings, data section) of a checked safetensors blob.

    Every entry must have a known dtype, a shape of non-negative integers and offsets inside the
    data section whose length matches dtype and shape.
    """
    if len(blob) < 8:
        raise SafetensorsFormatError("too short")
    (length,) = struct.unpack("<Q", blob[:8])
    if length > MAX_HEADER or 8 + length > len(blob):
        raise SafetensorsFormatError("header length is beyond the end of the file (truncated?)")
    try:
        header = json.loads(bytes(blob[8 : 8 + length]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise SafetensorsFormatError("header is not JSON") from None
    if not isinstance(header, dict):
        raise SafetensorsFormatError("header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise SafetensorsFormatError("__metadata__ is not a map of strings")
    data = memoryview(blob)[8 + length :]
    for name, entry in header.items():
        _check_entry(name, entry, len(data))
    return header, metadata, data


def split_tagged(blob: bytes, key: str, damaged: str, missing: str, instead: Optional[Dict[str, str]] = None
                 ) -> Tuple[Dict[str, Any], Dict[str, str], memoryview]:
    """``split_safetensors`` of a file whose header must carry the metadata string ``key``.

    CheckpointError ``"{damaged}: <reason>"`` for a malformed file; when ``key`` is absent, the message ``instead`` gives
    for another project key the header carries (another kind of FA-GAN file), else ``missing``.
    """
    try:
        entries, strings, data = split_safetensors(blob)
    except SafetensorsFormatError as exc:
        raise CheckpointError(f"{damaged}: {exc}") from None
    if key not in strings:
        raise CheckpointError(next((message for other, message in (instead or {}).items() if other in strings), missing))
    return entries, strings, data


def names_and_bytes_digest(buffers: Dict[str, Any]) -> str:
    """SHA-256 over each buffer's name and bytes, in name order: the through-plane checkpoint's ``tensors_sha256``."""
    digest = hashlib.sha256()
    for name in sorted(buffers):
        digest.update(name.encode())
        digest.update(buffers[name])
    return digest.hexdigest()


def content_digest(entries: Dict[str, Any], data: memoryview, text: str) -> str:
    """SHA-256 over each tensor's name, dtype, shape and bytes (name order), then ``text``."""
    digest = hashlib.sha256()
    for name in sorted(entries):
        entry = entries[name]
        begin, end = entry["data_offsets"]
        digest.update(json.dumps([name, entry["dtype"], entry["shape"], end - begin]).encode("utf-8"))
        digest.update(data[begin:end])
    digest.update(text.encode("utf-8"))
    return digest.hexdigest()


def _check_entry(name: str, entry: Any, data_length: int) -> None:
    if not isinstance(entry, dict):
        raise SafetensorsFormatError(f"tensor {name!r} has no description")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_SIZES:
        raise SafetensorsFormatError(f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise SafetensorsFormatError(f"tensor {name!r} has an invalid shape")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_length
    ):
        raise SafetensorsFormatError(f"tensor {name!r} has offsets outside the file")
    count = 1
    for n in shape:
        count *= n
    if offsets[1] - offsets[0] != count * DTYPE_SIZES[dtype]:
        raise SafetensorsFormatError(f"tensor {name!r} has {offsets[1] - offsets[0]} bytes for shape {shape} {dtype}")
