"""Small synthetic DICOM MR series for the batch and DICOM-output tests (made here with pydicom;
no bundled test files of any package are used)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np
import SimpleITK as sitk

PATIENT_STUDY = {
    "PatientName": "Test^Synthetic",
    "PatientID": "FAGAN-0001",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.100",
    "StudyDate": "20240102",
    "StudyTime": "101500",
    "StudyID": "42",
    "AccessionNumber": "ACC123",
    "ReferringPhysicianName": "Ref^Doctor",
    "StudyDescription": "synthetic brain",
}
SOURCE_SERIES_UID = "1.2.826.0.1.3680043.8.498.101"
FRAME_UID = "1.2.826.0.1.3680043.8.498.102"


def oblique_image(size=(16, 12, 4), spacing=(0.9, 1.1, 3.0), seed: int = 0, integers: bool = True) -> sitk.Image:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2000, size=size[::-1]).astype(np.float32)
    if not integers:
        values = values / 7.3
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing)
    image.SetOrigin((-20.5, 13.25, 40.0))
    axis = np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5])
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(0.5) * cross + (1 - np.cos(0.5)) * cross @ cross
    image.SetDirection(rotation.ravel().tolist())
    return image


def write_mr_series(image: sitk.Image, folder: Path, series_uid: str = SOURCE_SERIES_UID, description: str = "T1 axial",
                    tags: Optional[Dict[str, str]] = None, prefix: str = "slice") -> Path:
    """An MR series of int16 slices with patient/study tags and exact oblique geometry."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    values = sitk.GetArrayFromImage(image).astype(np.int16)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    for k in range(values.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        meta.MediaStorageSOPInstanceUID = uid = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        for key, value in {**PATIENT_STUDY, **(tags or {})}.items():
            setattr(ds, key, value)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, uid
        ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = "MR", series_uid, 3, description
        ds.FrameOfReferenceUID = FRAME_UID
        ds.ScanningSequence, ds.SequenceVariant, ds.RepetitionTime, ds.EchoTime = "GR", "SP", "8.1", "3.7"
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [str(image.GetSpacing()[1]), str(image.GetSpacing()[0])]
        ds.SliceThickness = str(image.GetSpacing()[2])
        ds.Rows, ds.Columns = values.shape[1], values.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = values[k].astype("<i2").tobytes()
        if int(pydicom.__version__.split(".")[0]) >= 3:
            ds.save_as(str(folder / f"{prefix}{k:03d}.dcm"), enforce_file_format=True)
        else:
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.save_as(str(folder / f"{prefix}{k:03d}.dcm"), write_like_original=False)
    return folder


def read_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def folder_digest(folder: Path) -> Dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
