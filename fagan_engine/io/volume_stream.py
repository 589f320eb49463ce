"""Write a volume file slab by slab (NIfTI, NRRD, MetaImage) with exactly the header SimpleITK writes.

The header comes from SimpleITK itself: a proxy image with the same geometry and pixel type but at
most two slices along the slowest (numpy first, ITK last) axis is written next to the output, and its
size field is patched (NIfTI ``dim[3]``, NRRD ``sizes``, MetaImage ``DimSize`` and, compressed,
``CompressedDataSize``). The voxels follow as SimpleITK lays them out: little-endian, raw, gzip
(``.nii.gz``, NRRD ``encoding: gzip``) or zlib (MetaImage ``CompressedData``; in an attached ``.mha``
the compressed size precedes the data, so the data are staged in a second file and copied after the
header). Only the compressed bytes may differ from SimpleITK's (another zlib); the header and the
voxels are identical (``Testing/engine/test_streaming_output.py``). Memory: one slab, plus, when the
slices do not run along the slowest axis, the whole volume in the output type (gathered, then written).
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import sys
import zlib
from pathlib import Path
from typing import BinaryIO, List, Optional

import numpy as np
import SimpleITK as sitk

from fagan_engine.io.geometry import SliceLayout, SRGeometry
from fagan_engine.io.nifti_checks import nifti_complete
from fagan_engine.io.paths import lower_extension
from fagan_engine.util.atomic import describe_os_error, fsync_file, write_error
from fagan_engine.util.errors import OutputError
from fagan_engine.util.stdio_capture import captured_stderr

STREAMED_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
NIFTI1_MAX_DIM = 32767
"""NIfTI-1 stores sizes as int16: such a volume is not streamed, and SimpleITK refuses to write it (one line naming the
size, after the work: write .nrrd or .mha, which take any size)."""
CHUNK_BYTES = 1 << 24
"""Bytes per write when a gathered volume is written out."""

_GZIP, _ZLIB = 31, 15  # zlib window bits: gzip member, zlib stream (the default level, as SimpleITK's writers)


def can_stream(path: str, geometry: SRGeometry) -> bool:
    """True when ``path``'s format is written slab by slab here (a little-endian machine; NIfTI-1 sizes)."""
    ext = lower_extension(path)
    if sys.byteorder != "little" or ext not in STREAMED_EXTENSIONS:
        return False
    return ext not in (".nii", ".nii.gz") or max(geometry.size) <= NIFTI1_MAX_DIM


_DATA_FILE = {".nhdr": rb"^data file: (.+)$", ".mhd": rb"^ElementDataFile = (.+)$"}
"""A detached header's line naming its data file."""

class _DataFile:
    """One data file: raw, or a gzip member / zlib stream of the bytes written."""

    def __init__(self, path: Path, codec: Optional[int]) -> None:
        self.path = path
        self.handle: BinaryIO = open(path, "wb")
        self.compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, codec) if codec else None
        self.size = 0

    def write_raw(self, data: bytes) -> None:
        self.handle.write(data)
        self.size += len(data)

    def write(self, data: bytes) -> None:
        self.write_raw(self.compressor.compress(data) if self.compressor else data)

    def close(self) -> None:
        if self.compressor is not None:
            self.write_raw(self.compressor.flush())
            self.compressor = None
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()


class VolumeStreamWriter:
    """A volume file of ``geometry`` in ``dtype``, written from its slices in order (``write``), complete at ``close``.

    ``layout``: how the slices given to ``write`` lie in the volume; slices across the slowest axis are
    written as they come, others are gathered in memory first. ``compress`` as ``write_volume``'s.
    ``path`` is the staged file (the caller publishes it; ``shown`` names it in errors); ``close`` returns every file,
    the header last.
    """

    def __init__(
        self, path: Path, geometry: SRGeometry, layout: SliceLayout, dtype: str, compress: bool, shown: Optional[Path] = None
    ) -> None:
        if not can_stream(str(path), geometry):
            raise ValueError(f"{path.name} cannot be written slab by slab")
        self.path = Path(path)
        self.shown = shown or self.path
        """The name in error messages (the final target, not the staged file)."""
        self.geometry = geometry
        self.layout = layout
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.shape = tuple(reversed(geometry.size))
        self.ext = lower_extension(str(path))
        self.written = 0
        self.gathered = None if layout.through_axis == 0 else np.empty(self.shape, self.dtype)
        self.files: List[_DataFile] = []
        try:
            self.header = self._proxy_header(compress)
            self._open()
        except OSError as exc:
            self.abort()
            raise OutputError(describe_os_error(exc, self.shown)) from None
        except OutputError:
            self.abort()
            raise

    # --- header ----------------------------------------------------------------------------------

    def _proxy_header(self, compress: bool) -> bytes:
        """The header SimpleITK writes for a proxy of at most two slices (size field patched at ``_header``)."""
        folder = self.path.parent / (self.path.name + ".header")
        folder.mkdir()
        try:
            slices = min(self.shape[0], 2)
            proxy = sitk.GetImageFromArray(np.zeros((slices,) + self.shape[1:], self.dtype.newbyteorder("=")))
            proxy.SetSpacing(self.geometry.spacing)
            proxy.SetOrigin(self.geometry.origin)
            proxy.SetDirection(self.geometry.direction)
            # SimpleITK picks its writer by a case-sensitive extension: the proxy takes the lower-case one (a detached
            # header's data file is then named after the output's stem with the writer's lower-case suffix)
            written = folder / (self.path.name[: len(self.path.name) - len(self.ext)] + self.ext)
            with captured_stderr():  # ITK's own lines on a failed write (a full disk) do not reach the user
                try:
                    sitk.WriteImage(proxy, str(written), compress)
                except RuntimeError:
                    raise write_error(self.shown, "the header could not be written") from None
            data = written.read_bytes()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        try:  # a short proxy (ITK may stop writing on a full disk without raising) does not parse
            if self.ext == ".nii.gz":
                data = zlib.decompress(data, _GZIP)
            if self.ext in (".nii", ".nii.gz"):
                return data[: int(struct.unpack_from("<f", data, 108)[0])]
            if self.ext in (".nrrd", ".mha"):
                end = b"\n\n" if self.ext == ".nrrd" else b"ElementDataFile = LOCAL\n"
                return data[: data.index(end) + len(end)]
        except (ValueError, struct.error, zlib.error):
            raise write_error(self.shown, "the header could not be written") from None
        if self.ext in (".nhdr", ".mhd") and not re.search(_DATA_FILE[self.ext], data, re.M):
            raise write_error(self.shown, "the header could not be written")
        return data

    def _header(self, compressed_size: Optional[int] = None) -> bytes:
        """The proxy's header with this volume's number of slices (and compressed data size)."""
        header = self.header
        if self.ext in (".nii", ".nii.gz"):
            return header[:46] + struct.pack("<h", self.shape[0]) + header[48:]
        text = header.decode("latin-1")
        field = "sizes: " if self.ext in (".nrrd", ".nhdr") else "DimSize = "
        text = re.sub(rf"^({re.escape(field)}\d+ \d+ )\d+$", rf"\g<1>{self.shape[0]}", text, count=1, flags=re.M)
        if compressed_size is not None:
            text = re.sub(r"^CompressedDataSize = \d+$", f"CompressedDataSize = {compressed_size}", text, count=1, flags=re.M)
        return text.encode("latin-1")

    def _codec(self) -> Optional[int]:
        if self.ext == ".nii.gz" or re.search(rb"^encoding: gzip$", self.header, re.M):
            return _GZIP
        if re.search(rb"^CompressedData = True$", self.header, re.M):
            return _ZLIB
        return None

    def _open(self) -> None:
        codec = self._codec()
        if self.ext in (".nhdr", ".mhd"):  # detached: data file now, header at close (its line checked by _proxy_header)
            name = re.search(_DATA_FILE[self.ext], self.header, re.M).group(1).decode("latin-1")
            self.files.append(_DataFile(self.path.parent / name, codec))
        elif codec == _ZLIB:  # .mha: the compressed size comes first, the data are staged apart
            self.files.append(_DataFile(self.path.parent / (self.path.name + ".data"), codec))
        else:  # the header, then the data; a .nii.gz is one gzip member of both
            data = _DataFile(self.path, codec)
            (data.write if self.ext == ".nii.gz" else data.write_raw)(self._header())
            self.files.append(data)

    # --- data ------------------------------------------------------------------------------------

    def write(self, start: int, slices: np.ndarray) -> None:
        """Slices ``start, start + 1, ...`` (n, rows, cols), given in order; cast to the output type by the caller."""
        if start != self.written:
            raise ValueError(f"slices must come in order: expected {self.written}, got {start}")
        self.written += len(slices)
        if self.gathered is not None:
            self.layout.to_slices(self.gathered)[start : self.written] = slices
            return
        self._append(np.ascontiguousarray(slices, dtype=self.dtype))

    def _append(self, block: np.ndarray) -> None:
        try:
            self.files[-1].write(block.tobytes())
        except OSError as exc:
            raise OutputError(describe_os_error(exc, self.shown)) from None

    def close(self) -> List[Path]:
        """Finish the file(s); returns them, the one named ``path`` (the header) last."""
        total = self.shape[self.layout.through_axis]
        if self.written != total:
            raise ValueError(f"{self.written} of {total} slices were written")
        if self.gathered is not None:
            step = max(1, CHUNK_BYTES // max(1, self.gathered[0].nbytes))
            for first in range(0, self.shape[0], step):
                self._append(self.gathered[first : first + step])
            self.gathered = None
        data = self.files.pop()
        try:
            data.close()
            if data.path == self.path:
                if self.ext in (".nii", ".nii.gz") and not nifti_complete(self.path):
                    raise OutputError(f"cannot write {self.shown}: the written file is incomplete")
                return [self.path]
            header = self._header(data.size if self._codec() == _ZLIB else None)
            if self.ext == ".mha":  # header, then the staged compressed data
                with open(self.path, "wb") as out, open(data.path, "rb") as source:
                    out.write(header)
                    shutil.copyfileobj(source, out, CHUNK_BYTES)
                data.path.unlink()
                fsync_file(self.path)
                return [self.path]
            self.path.write_bytes(header)
            fsync_file(self.path)
            return [data.path, self.path]
        except OSError as exc:
            raise OutputError(describe_os_error(exc, self.shown)) from None

    def abort(self) -> None:
        """Close and remove what was written (the staging folder is removed by its owner anyway)."""
        for data in self.files:
            try:  # closing flushes the buffer again: on a full disk that raises ENOSPC, and the file goes anyway
                data.handle.close()
            except OSError:
                pass
            try:
                data.path.unlink()
            except OSError:
                pass
        self.files = []
