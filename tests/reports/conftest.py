"""Shared fixtures for the report-layer tests (source DICOM with planted identifiers, tools)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

#: identifiers planted in the source DICOM; no output may contain them
PLANTED = {
    "PatientName": "ZQXMARKER^HELGA",
    "PatientID": "MRN-ZQX-778899",
    "PatientBirthDate": "19511123",
    "AccessionNumber": "ACC-ZQX-4455",
    "InstitutionAddress": "17 Zqxmarker Lane, Springfield",
    "InstitutionName": "Zqxmarker General Hospital",
    "ReferringPhysicianName": "ZQXDOC^WALTER",
}


def make_source_dataset(rows: int = 32, cols: int = 32):
    """A small, valid DICOM image (Secondary Capture, MONOCHROME2) with planted identifiers."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1001"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1001"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1002"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1003"
    for keyword, value in PLANTED.items():
        setattr(ds, keyword, value)
    ds.PatientSex = "F"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20240101", "120000", "S1"
    ds.Modality, ds.ConversionType = "OT", "WSD"
    ds.PatientOrientation = ["L", "F"]
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = (np.arange(rows * cols) % 256).astype(np.uint8).tobytes()
    return ds


@pytest.fixture
def source_dataset():
    return make_source_dataset()


@pytest.fixture
def source_dicom(tmp_path):
    ds = make_source_dataset()
    path = tmp_path / "source.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _require_tool(name: str) -> str:
    """Path of an external tool, or skip the test saying which Debian package provides it."""
    packages = {
        "dciodvfy": "dicom3tools",
        "qpdf": "qpdf",
        "pdftotext": "poppler-utils",
        "pdftoppm": "poppler-utils",
        "pdfinfo": "poppler-utils",
    }
    exe = shutil.which(name)
    if exe is None:
        pytest.skip(f"{name} not installed (apt-get install {packages.get(name, name)})")
    return exe


def _pdftotext(path: Path, *, layout: bool = True) -> str:
    exe = _require_tool("pdftotext")
    args = [exe, *(["-layout"] if layout else []), str(path), "-"]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def require_tool():
    """``require_tool(name)`` -> path of the tool, or skip the test naming the package."""
    return _require_tool


@pytest.fixture
def pdftotext():
    """``pdftotext(path)`` -> the PDF's text by poppler (skips when poppler-utils is absent)."""
    return _pdftotext
