"""``read_image``: one entry point for DICOM, PNG, JPEG, TIFF and NPY files."""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path
from typing import Any

from .._errors import MedlensError, UnreadableImageError, UnsupportedImageError, param_error
from ._dicom import NOT_DICOM, is_dicom_prefix, read_dicom
from ._raster import read_npy, read_pillow
from ._types import ScanImage
from ._window import as_window

__all__ = ["read_image"]

CANNOT_OPEN = "cannot open the file ({reason})"
UNKNOWN_FORMAT = (
    "unrecognised file format (first bytes {head!r}); medlens reads DICOM Part 10, PNG, "
    "JPEG, TIFF and NPY files"
)
UNEXPECTED = "unexpected error while reading the image ({kind}: {reason})"

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_TIFF = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_NPY = b"\x93NUMPY"
_DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ".ima", ""}


def read_image(
    path: str | os.PathLike[str],
    *,
    window: Any = None,
    use_file_window: bool = False,
) -> ScanImage:
    """Read a DICOM, PNG, JPEG, TIFF or NPY file as float32 pixels in [0, 1].

    The format is found from the file's content, not its name.

    Parameters
    ----------
    path : str or path-like
        The image file.
    window : (center, width) or object with ``.center`` and ``.width``, optional
        VOI window in modality units (e.g. HU for CT; raw values for PNG/NPY),
        e.g. :class:`medlens.config.WindowConfig`. Applied with the DICOM
        LINEAR_EXACT function (``center +- width / 2`` maps to 0 and 1). Not
        applied to colour images nor to DICOM marked FOR PRESENTATION (both
        recorded in ``transforms``). Without a window DICOM maps the full
        stored-value range through the modality LUT, and PNG/NPY integers
        their dtype's range.
    use_file_window : bool, default False
        Use the DICOM file's own VOI (VOI LUT Sequence, else Window Center /
        Width with its VOI LUT Function) instead of ``window``. ``window`` is
        then the fallback for files without one; with neither, an error.

    Returns
    -------
    ScanImage
        ``pixels`` float32 of shape (H, W), (H, W, 3), (F, H, W) or (F, H, W, 3),
        ``meta`` without identifiers, ``transforms`` with the values used.

    Raises
    ------
    UnreadableImageError
        Not an image file, not DICOM, truncated or undecodable pixel data,
        missing transfer syntax, invalid header values.
    UnsupportedImageError
        No pixel data (SR, ECG, RT plan ...), a non-image pixel payload
        (segmentation, dose grid), an unsupported photometric interpretation.
    MedlensError
        Bad ``window`` argument. No other exception type is raised.

    References
    ----------
    DICOM PS3.3 C.11 (Grayscale transformations), PS3.4 N.2 (pixel pipeline).
    """
    win = as_window(window)
    if not isinstance(use_file_window, bool):
        raise param_error("use_file_window", "read_image", "a bool", use_file_window)
    try:
        p = Path(os.fspath(path))
    except TypeError:
        raise param_error("path", "read_image", "a path (str or os.PathLike)", path) from None
    src = str(p)
    try:
        fh = open(p, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise UnreadableImageError(
            CANNOT_OPEN.format(reason=exc.strerror or exc), source=src
        ) from exc
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = _dispatch(p, fh, win, use_file_window)
    if caught:
        notes = tuple(dict.fromkeys(_redact(str(w.message)) for w in caught))
        image = dataclasses.replace(image, warnings=notes)
    return image


def _redact(message: str) -> str:
    # decoder warnings may quote header values; keep their gist, not the values
    return re.sub(r"'[^']{17,}'", "'...'", " ".join(message.split()))


def _dispatch(
    p: Path, fh: Any, win: tuple[float, float] | None, use_file_window: bool
) -> ScanImage:
    src = str(p)
    try:
        with fh:
            head = fh.read(132)
            fh.seek(0)
            if is_dicom_prefix(head):
                return read_dicom(p, fh, window=win, use_file_window=use_file_window)
            if head.startswith(_NPY):
                return read_npy(p, fh, window=win)
            if head.startswith(_PNG) or head.startswith(_JPEG) or head[:4] in _TIFF:
                return read_pillow(p, fh, window=win)
            if p.suffix.lower() in _DICOM_SUFFIXES:
                raise UnreadableImageError(NOT_DICOM.format(detail=""), source=src)
            raise UnsupportedImageError(UNKNOWN_FORMAT.format(head=head[:8]), source=src)
    except MedlensError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # last line of defence: never a bare library error
        raise UnreadableImageError(
            UNEXPECTED.format(kind=type(exc).__name__, reason=exc), source=src
        ) from exc
