"""Fixtures for medlens.io tests: small DICOM files written with pydicom."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

MARKERS = {
    "PatientName": "ZZMARKER^NAME",
    "PatientID": "ZZMARKER-ID",
    "InstitutionName": "ZZMARKER HOSPITAL",
    "AccessionNumber": "ZZMARKERACC",
    "PatientBirthDate": "19700101",
    "InstitutionAddress": "ZZMARKER STREET 1",
}


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    signed: bool | None = None,
    bits_stored: int | None = None,
    sop_class: str = CTImageStorage,
    modality: str = "CT",
    **attrs: Any,
) -> Path:
    """Write an uncompressed Explicit VR Little Endian DICOM file with ``pixels``."""
    pixels = np.asarray(pixels)
    signed = pixels.dtype.kind == "i" if signed is None else signed
    bits_alloc = pixels.dtype.itemsize * 8
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.Manufacturer = "Acme"
    ds.ManufacturerModelName = "Model-1"
    color = photometric in ("RGB",)
    frames = pixels.shape[0] if pixels.ndim == (4 if color else 3) else 1
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if color else pixels.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 3 if color else 1
    if color:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_alloc
    ds.BitsStored = bits_stored or bits_alloc
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def dicom_writer(tmp_path: Path):
    counter = iter(range(10**6))

    def make(pixels: np.ndarray, name: str | None = None, **kw: Any) -> Path:
        return write_dicom(tmp_path / (name or f"img{next(counter)}.dcm"), pixels, **kw)

    return make


@pytest.fixture
def markers() -> dict[str, str]:
    """Identifier values planted in test files; they must never appear in outputs."""
    return dict(MARKERS)


@pytest.fixture
def write_dicom_file():
    """``write_dicom(path, pixels, **attrs)`` (tests import no conftest under importlib mode)."""
    return write_dicom
