"""Typed errors raised by medlens.

Every error says what was expected, what was found and, where possible, how to
fix it. The message templates are module constants so tests can match them.
"""

from __future__ import annotations

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
]

PARAM_ERROR = "The {name!r} parameter of {func} must be {expected}. Got {got!r} instead."
MISSING_EXTRA = (
    "{feature} needs the optional package {package!r}; install it with: pip install {install}"
)


class MedlensError(ValueError):
    """Base class of every error medlens raises on purpose.

    Parameters
    ----------
    message : str
        Full human-readable message (what was expected, what was got, how to fix).
    source : str, optional
        The file, column or config field the error is about; prefixed to the message.
    """

    def __init__(self, message: str, *, source: str | None = None) -> None:
        self.source = None if source is None else str(source)
        self.message = message
        super().__init__(f"{self.source}: {message}" if self.source else message)


class UnreadableImageError(MedlensError):
    """A file could not be read as an image (not DICOM, truncated, undecodable)."""


class UnsupportedImageError(MedlensError):
    """A readable file that medlens does not handle (no pixel data, odd photometric)."""


class ModelLoadError(MedlensError):
    """A model file or factory could not be loaded safely."""


class ConfigError(MedlensError):
    """A configuration file or value is invalid."""


class InputDataError(MedlensError):
    """A table, array or argument does not have the expected content."""


class ExplanationError(MedlensError):
    """An explanation cannot be computed for this model or input."""


class EvidenceError(MedlensError):
    """An evidence bundle is missing or inconsistent."""


class MissingExtraError(MedlensError, ImportError):
    """An optional dependency is not installed."""


def param_error(name: str, func: str, expected: str, got: object) -> MedlensError:
    """Build the standard parameter error (see ``PARAM_ERROR``)."""
    return MedlensError(PARAM_ERROR.format(name=name, func=func, expected=expected, got=got))


def missing_extra(feature: str, package: str, install: str | None = None) -> MissingExtraError:
    """Build the error for a missing optional package, with its install command."""
    return MissingExtraError(
        MISSING_EXTRA.format(feature=feature, package=package, install=install or package)
    )
