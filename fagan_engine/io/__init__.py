"""Volumes in and out with exact geometry: NIfTI/NRRD/MetaImage/DICOM reading and checks, atomic writes, DICOM series output, slice geometry."""
from __future__ import annotations

from fagan_engine.io.geometry import SliceLayout, plane_axes, super_resolved_geometry
from fagan_engine.io.volume_io import cast_array, read_volume, validate_image, write_volume

__all__ = [
    "SliceLayout",
    "cast_array",
    "plane_axes",
    "read_volume",
    "super_resolved_geometry",
    "validate_image",
    "write_volume",
]
