"""A synthetic multi-slice CT series as DICOM Part 10 files (for tests, benchmarks and trying the adapter).

Each slice is a complete CT Image Storage instance (patient, study, series, frame of
reference, image plane and pixel modules), written by pydicom in Explicit VR Little
Endian, so dcmtk, Orthanc and dicom-reader stages take it as a scanner's output.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional


def write_ct_series(folder: Path, *, slices: int = 8, size: int = 64, patient_id: str = "ADAPTER-TEST",
                    study_uid: Optional[str] = None, series_uid: Optional[str] = None,
                    spacing: float = 2.5) -> List[Path]:
    """Write ``slices`` CT images of ``size`` x ``size`` (int16, HU with an elliptic body); their paths."""
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    y, x = np.mgrid[0:size, 0:size]
    body = ((x - size / 2) / (size * 0.4)) ** 2 + ((y - size / 2) / (size * 0.3)) ** 2 <= 1
    paths = []
    for index in range(slices):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"CT{index + 1:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Adapter^Test", patient_id, "19700101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "A1"
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, index + 1
        ds.Manufacturer, ds.PatientPosition = "clara-wf", "HFS"
        ds.BodyPartExamined = "CHEST"
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [-(size / 2), -(size / 2), index * spacing]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceThickness, ds.PixelSpacing = spacing, [1.0, 1.0]
        ds.KVP, ds.AcquisitionNumber = 120, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        pixels = np.where(body, 40 + (index % 7) * 5, -1000).astype(np.int16)
        ds.PixelData = pixels.tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
