"""medlens.io: image readers (DICOM, PNG, JPEG, TIFF, NPY), manifests and cohorts."""

from __future__ import annotations

from ._cohort import age_band, cohort_attributes, pseudonymize
from ._manifest import Manifest, SkippedFile, read_manifest, scan_dicom_folder
from ._read import read_image
from ._types import ImageMeta, ScanImage, SourceReferences, Transform

__all__ = [
    "ImageMeta",
    "Manifest",
    "ScanImage",
    "SkippedFile",
    "SourceReferences",
    "Transform",
    "age_band",
    "cohort_attributes",
    "pseudonymize",
    "read_image",
    "read_manifest",
    "scan_dicom_folder",
]
