"""medlens: make medical-imaging classifiers answerable."""

from __future__ import annotations

from ._errors import (
    ConfigError,
    EvidenceError,
    ExplanationError,
    InputDataError,
    MedlensError,
    MissingExtraError,
    ModelLoadError,
    UnreadableImageError,
    UnsupportedImageError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "EvidenceError",
    "ExplanationError",
    "InputDataError",
    "MedlensError",
    "MissingExtraError",
    "ModelLoadError",
    "UnreadableImageError",
    "UnsupportedImageError",
    "__version__",
]
