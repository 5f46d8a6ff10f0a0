"""medlens.io: image readers (DICOM, PNG, JPEG, TIFF, NPY), manifests and cohorts."""

from __future__ import annotations

__all__: list[str] = []
