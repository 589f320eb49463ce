"""Write a DICOM series from SR slabs as they are produced (``pipeline.case`` streams the output through it).

A series has one rescale (slope, intercept) and one window, fixed by the whole volume's range, so no instance can be
written before the last slab. The slabs are measured as they come (range, integrality, finite values) and kept until
``close``: appended to a raw spool file beside the series folder when they run along the DICOM slice axis (numpy axis
0, the usual case: an axial series super-resolved in-plane), gathered in memory otherwise (as ``io.volume_stream``
does for the same layout). ``close`` then writes one instance per slice, reading the spool back one slice at a time
(``dicom_writer.write_instances``). Memory: one slab, or the gathered volume in the output type.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from fagan_engine.io.dicom_writer import SeriesLabels, ValueRange, write_instances
from fagan_engine.io.geometry import SliceLayout, SRGeometry
from fagan_engine.util.atomic import describe_os_error
from fagan_engine.util.errors import OutputError


class DicomStreamWriter:
    """A DICOM series of ``geometry`` in folder ``folder`` (created at ``close``; must not exist), written from its slices
    in order (``write``, slices laid out by ``layout``, already cast to ``dtype`` by the caller).

    ``shown`` names the final target in errors (``folder`` is the staged one); ``labels`` may be given at ``close``.
    """

    def __init__(self, folder: Path, geometry: SRGeometry, layout: SliceLayout, dtype: str, shown: Optional[Path] = None) -> None:
        self.folder = Path(folder)
        self.shown = shown or self.folder
        self.geometry = geometry
        self.layout = layout
        self.dtype = np.dtype(dtype)
        self.shape = tuple(reversed(geometry.size))
        self.values = ValueRange(self.shown)
        self.written = 0
        self.gathered = None if layout.through_axis == 0 else np.empty(self.shape, self.dtype)
        self.spool_path = self.folder.parent / (self.folder.name + ".spool")
        self.spool: Any = None
        if self.gathered is None:
            try:
                self.spool = open(self.spool_path, "xb")
            except OSError as exc:
                raise OutputError(describe_os_error(exc, self.shown)) from None

    def write(self, start: int, slices: np.ndarray) -> None:
        """Slices ``start, start + 1, ...`` (n, rows, cols), given in order."""
        if start != self.written:
            raise ValueError(f"slices must come in order: expected {self.written}, got {start}")
        self.values.add(slices)
        self.written += len(slices)
        if self.gathered is not None:
            self.layout.to_slices(self.gathered)[start : self.written] = slices
            return
        try:
            self.spool.write(np.ascontiguousarray(slices, dtype=self.dtype).tobytes())
        except OSError as exc:
            raise OutputError(describe_os_error(exc, self.shown)) from None

    def close(self, source_tags: Optional[Dict[str, Any]] = None, description: str = "FA-GAN SR", derivation: str = "") -> Path:
        """Write the series' instances (and fsync them); returns the staged folder. The spool is removed."""
        total = self.shape[self.layout.through_axis]
        if self.written != total:
            raise ValueError(f"{self.written} of {total} slices were written")
        labels = SeriesLabels(source_tags, description, derivation)
        try:
            if self.gathered is not None:
                volume, self.gathered = self.gathered, None
                write_instances(self.folder, self.geometry, lambda k: volume[k], self.values, labels, self.shown)
                return self.folder
            self.spool.close()
            slice_items = self.shape[1] * self.shape[2]
            with open(self.spool_path, "rb") as spool:

                def read_slice(k: int) -> np.ndarray:
                    spool.seek(k * slice_items * self.dtype.itemsize)
                    return np.fromfile(spool, self.dtype, slice_items).reshape(self.shape[1:])

                write_instances(self.folder, self.geometry, read_slice, self.values, labels, self.shown)
            return self.folder
        except OSError as exc:
            raise OutputError(describe_os_error(exc, self.shown)) from None
        finally:
            self.abort()

    def abort(self) -> None:
        """Close and remove the spool (the series folder belongs to the caller's staging)."""
        self.gathered = None
        if self.spool is not None:
            try:  # a full disk makes the final flush fail; the spool goes anyway
                self.spool.close()
            except OSError:
                pass
            self.spool = None
            try:
                os.unlink(self.spool_path)
            except OSError:
                pass
