"""The patient, study and acquisition attributes of an input DICOM series (for derived series).

``volume_io`` reads a series' voxels; this module reads, with pydicom and without pixel data,
the attributes a derived series must copy from its source: patient and study (same Study
Instance UID), the frame of reference, and the MR acquisition description. The series is the
one ``volume_io.read_volume`` reads (GDCM's series grouping, ``series_id`` picks one).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import SimpleITK as sitk

from fagan_engine.util.errors import InputError
from fagan_engine.util.stdio_capture import captured_stderr

PATIENT_STUDY_KEYWORDS = (
    "SpecificCharacterSet",
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "PatientSize", "PatientWeight", "OtherPatientIDs", "EthnicGroup", "PatientComments",
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
    "StudyDescription", "InstitutionName",
)
"""Patient and General Study attributes copied unchanged into the derived series."""

SERIES_KEYWORDS = (
    "FrameOfReferenceUID", "PositionReferenceIndicator", "SeriesDescription", "SeriesNumber", "BodyPartExamined",
    "PatientPosition", "Laterality", "Manufacturer", "ManufacturerModelName", "SeriesInstanceUID", "Modality",
)
"""Series attributes read for reference (the frame of reference is kept; the series is new)."""

MR_KEYWORDS = (
    "ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType", "SequenceName", "RepetitionTime",
    "EchoTime", "InversionTime", "EchoTrainLength", "FlipAngle", "MagneticFieldStrength", "ImagingFrequency",
    "ImagedNucleus", "ProtocolName",
)
"""MR Image module attributes that describe the acquisition (unchanged by super-resolution)."""

LOSSY_KEYWORDS = ("LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod")
"""An image derived from a lossily compressed one says so (DICOM PS3.3 C.7.6.1.1.5): copied unchanged."""

SLICE_KEYWORDS = ("SliceThickness",)
"""The acquired slice thickness: an in-plane result keeps it (its slices are the input's), a through-plane one does not
(``pipeline.case``); the writer writes the slice spacing where it is absent."""


def read_series_tags(folder: str, series_id: Optional[str] = None) -> Dict[str, Any]:
    """Keyword -> pydicom DataElement value of the first file of the series in ``folder``.

    Only attributes present in the file are returned. Raises InputError when the folder holds
    no series, or several and ``series_id`` is None.
    """
    import pydicom  # lazy: pydicom only for DICOM tags; io imports without it

    with captured_stderr():
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise InputError(f"no DICOM series found in folder {folder}")
    if series_id is None and len(ids) > 1:
        raise InputError(f"folder {folder} holds {len(ids)} DICOM series; pass one as series_id: {', '.join(ids)}")
    chosen = series_id or ids[0]
    if chosen not in ids:
        raise InputError(f"DICOM series {chosen} not found in {folder}; available: {', '.join(ids)}")
    with captured_stderr():
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), chosen)
    if not files:
        raise InputError(f"no DICOM files for series {chosen} in {folder}")
    try:
        dataset = pydicom.dcmread(files[0], stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for damaged files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read the DICOM attributes of {Path(files[0]).name}: {reason}") from None
    tags: Dict[str, Any] = {}
    for keyword in PATIENT_STUDY_KEYWORDS + SERIES_KEYWORDS + MR_KEYWORDS + LOSSY_KEYWORDS + SLICE_KEYWORDS:
        element = dataset.data_element(keyword) if keyword in dataset else None
        if element is not None and element.value not in (None, ""):
            tags[keyword] = element.value
    return tags
