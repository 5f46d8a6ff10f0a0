"""DICOM reader: stored values -> modality units -> VOI window -> [0, 1].

The pipeline follows DICOM PS3.3 C.11 (grayscale transformations) and PS3.4
N.2.1.1 in this order:

1. Modality LUT: Modality LUT Sequence, or Rescale Slope/Intercept. For
   enhanced multi-frame objects the Pixel Value Transformation Sequence of
   each frame's functional groups (per-frame, else shared).
2. VOI: the caller's window; the file's own Window Center/Width (or VOI LUT
   Sequence, honouring VOI LUT Function LINEAR, LINEAR_EXACT and SIGMOID)
   only when asked; with no window, the full range of stored values through
   the modality LUT. Never a per-image min-max.
3. MONOCHROME1 is inverted after windowing so bright means dense everywhere.
4. Clipping to [0, 1].

Colour images are decoded to RGB once (pydicom converts YBR on decode and
reports the converted interpretation, which is what we use), PALETTE COLOR is
mapped through its LUT; both are scaled by their sample range.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.hooks import hooks as _hooks
from pydicom.hooks import raw_element_value as _default_value_hook
from pydicom.hooks import raw_element_vr as _default_vr_hook
from pydicom.pixels import get_decoder
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi
from pydicom.uid import UID

from .._errors import UnreadableImageError, UnsupportedImageError
from ._types import ImageMeta, ScanImage, SourceReferences, Transform
from ._window import affine_window, apply_affine

__all__ = ["dicom_meta", "read_dicom", "sop_class_name"]

NOT_DICOM = (
    "not a DICOM file: no 'DICM' prefix after the 128-byte preamble (file meta information "
    "is missing){detail}; medlens reads DICOM Part 10 files, PNG, JPEG, TIFF and NPY"
)
BAD_HEADER = "cannot parse the DICOM header ({reason}); the file is damaged or not standard"
NO_PIXEL_DATA = "no pixel data (SOP class {sop_class}); medlens explains images only"
NOT_AN_IMAGE = "{sop_class} holds {what}, not an image; medlens explains images only"
FLOAT_PIXELS = "{keyword} (floating-point pixels) is not supported; medlens reads integer images"
MISSING_TSYNTAX = (
    "the file meta information has no Transfer Syntax UID (0002,0010), so the pixel data "
    "cannot be decoded; re-export the file with a complete file meta header"
)
MISSING_ELEMENT = "missing or invalid required image attribute {keyword} (got {got!r})"
TRUNCATED = (
    "truncated pixel data: {got} bytes where {expected} are needed for {frames} frame(s) of "
    "{rows}x{columns}x{samples} at {bits} bits; the file is incomplete, copy it again"
)
NO_DECODER = (
    "cannot decode '{tsyntax}' pixel data: no installed decoder plugin handles it; "
    "install {install}"
)
UNDECODABLE = "cannot decode the '{tsyntax}' codestream ({reason}){hint}"
UNSUPPORTED_PHOTOMETRIC = (
    "unsupported photometric interpretation {pi!r} with {samples} sample(s) per pixel; "
    "medlens reads MONOCHROME1, MONOCHROME2, PALETTE COLOR, RGB and YBR_* images"
)
NO_FILE_WINDOW = (
    "use_file_window=True but the file has no Window Center/Width or VOI LUT; "
    "pass window=(center, width) instead"
)
BAD_MODALITY_LUT = "invalid modality LUT ({reason})"

# SOP classes that carry pixel data that is not an image to explain.
_NON_IMAGE_PIXELS = {
    "1.2.840.10008.5.1.4.1.1.66.4": "a segmentation (label map)",
    "1.2.840.10008.5.1.4.1.1.66.7": "a segmentation (label map)",
    "1.2.840.10008.5.1.4.1.1.481.2": "a radiation dose grid",
    "1.2.840.10008.5.1.4.1.1.30": "a parametric map",
}
_GPL_HINT = "pip install medlens[gpl-codecs] (pylibjpeg-libjpeg, GPL licence)"
# Extra decoders by transfer syntax, for the error message.
_INSTALL = {
    "1.2.840.10008.1.2.4.51": _GPL_HINT,
    "1.2.840.10008.1.2.4.57": _GPL_HINT,
    "1.2.840.10008.1.2.4.70": _GPL_HINT,
    "1.2.840.10008.1.2.4.80": "pyjpegls (MIT) or " + _GPL_HINT,
    "1.2.840.10008.1.2.4.81": "pyjpegls (MIT) or " + _GPL_HINT,
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg>=2.4",
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg>=2.4",
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg>=2.4",
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",
}
_MONO = ("MONOCHROME1", "MONOCHROME2")
_REQUIRED = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "SamplesPerPixel",
    "PixelRepresentation",
)

# Every header value the reader uses, with the VR its raw bytes are parsed as
# ("DS*": multi-valued decimal string). Values come from ``_Header``.
_HEADER_VR = {
    "SOPClassUID": "UI",
    "StudyInstanceUID": "UI",
    "SeriesInstanceUID": "UI",
    "SOPInstanceUID": "UI",
    "Modality": "CS",
    "PresentationIntentType": "CS",
    "Manufacturer": "LO",
    "ManufacturerModelName": "LO",
    "BodyPartExamined": "CS",
    "ViewPosition": "CS",
    "SamplesPerPixel": "US",
    "PhotometricInterpretation": "CS",
    "NumberOfFrames": "IS",
    "Rows": "US",
    "Columns": "US",
    "PixelSpacing": "DS*",
    "ImagerPixelSpacing": "DS*",
    "BitsAllocated": "US",
    "BitsStored": "US",
    "PixelRepresentation": "US",
    "RescaleIntercept": "DS",
    "RescaleSlope": "DS",
}
_PIXEL_DATA = 0x7FE00010
_FLOAT_PIXEL_DATA = 0x7FE00008
_DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
_EXTENDED_OFFSET_TABLE = (0x7FE00001, 0x7FE00002)
_MODALITY_LUT_SEQUENCE = 0x00283000
_VOI_LUT_SEQUENCE = 0x00283010
_PER_FRAME_GROUPS = 0x52009230
_SHARED_GROUPS = 0x52009229
_RESCALE = (0x00281052, 0x00281053)
_NATIVE_LITTLE_ENDIAN = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
# (BitsAllocated, PixelRepresentation) -> dtype of pydicom's native decoder
_NATIVE_DTYPES = {
    (bits, signed): np.dtype(f"<{'ui'[signed]}{bits // 8}")
    for bits in (8, 16, 32)
    for signed in (0, 1)
}

# Raw values parsed here instead of by pydicom: strict subsets of what pydicom
# converts without a validation warning (pydicom.valuerep VR_REGEXES and
# MAX_VALUE_LEN, the length counted with padding as pydicom does), so a value
# parsed here equals pydicom's and pydicom would not have warned. Anything else
# (empty, multi-valued, non-ASCII, another VR in the file) returns _SLOW and is
# converted by pydicom.
_SLOW = object()
_CS = re.compile(rb"[A-Z0-9_][A-Z0-9 _]*")
_LO = re.compile(rb"[\x20-\x5b\x5d-\x7e]+")  # printable ASCII except backslash
_UI = re.compile(rb"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_DS = re.compile(rb"[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_IS = re.compile(rb"[0-9]{1,9}")


def _raw_us(raw: RawDataElement) -> Any:
    value = raw.value
    if raw.VR not in (None, "US") or type(value) is not bytes or len(value) != 2:
        return _SLOW
    return int.from_bytes(value, "little" if raw.is_little_endian else "big")


def _raw_text(raw: RawDataElement, vr: str, pattern: re.Pattern[bytes], limit: int) -> Any:
    value = raw.value
    if raw.VR not in (None, vr) or type(value) is not bytes or len(value) > limit:
        return _SLOW
    text = value.rstrip(b" \x00")
    return text.decode("ascii") if pattern.fullmatch(text) else _SLOW


def _raw_ds(raw: RawDataElement) -> Any:
    value = raw.value
    if raw.VR not in (None, "DS") or type(value) is not bytes or len(value) > 16:
        return _SLOW
    text = value.rstrip(b" ")
    return float(text) if _DS.fullmatch(text) else _SLOW


def _raw_ds_multi(raw: RawDataElement) -> Any:  # two or more values (Pixel Spacing)
    value = raw.value
    if raw.VR not in (None, "DS") or type(value) is not bytes:
        return _SLOW
    parts = value.split(b"\\")
    if len(parts) < 2 or any(len(x) > 16 for x in parts):
        return _SLOW
    parts[-1] = parts[-1].rstrip(b" ")
    if not all(_DS.fullmatch(x) for x in parts):
        return _SLOW
    return tuple(float(x) for x in parts)


def _raw_is(raw: RawDataElement) -> Any:
    value = raw.value
    if raw.VR not in (None, "IS") or type(value) is not bytes or len(value) > 12:
        return _SLOW
    text = value.rstrip(b" ")
    return int(text) if _IS.fullmatch(text) else _SLOW


_RAW_PARSERS = {
    "US": _raw_us,
    "CS": lambda raw: _raw_text(raw, "CS", _CS, 16),
    "LO": lambda raw: _raw_text(raw, "LO", _LO, 64),
    "UI": lambda raw: _raw_text(raw, "UI", _UI, 64),
    "DS": _raw_ds,
    "DS*": _raw_ds_multi,
    "IS": _raw_is,
}
# keyword -> (tag, parser of its raw value)
_HEADER = {kw: (tag_for_keyword(kw), _RAW_PARSERS[vr]) for kw, vr in _HEADER_VR.items()}


def _default_hooks() -> bool:
    # a user-registered pydicom conversion hook must see every element
    return (
        _hooks.raw_element_value is _default_value_hook
        and _hooks.raw_element_vr is _default_vr_hook
    )


class _Header:
    """The header values the reader needs, each read from the dataset once.

    ``get(keyword)`` returns what ``Dataset.get(keyword)`` would (``None`` when
    absent; ``str``, ``int`` and ``float`` stand in for pydicom's ``UID``,
    ``IS`` and ``DSfloat``). Plain values are parsed straight from the raw
    element bytes, ~10x cheaper than pydicom's element conversion; anything
    unusual is converted by pydicom, so values, warnings and errors are those
    of reading the dataset attribute. ``has(tag)`` is ``tag in ds``.
    """

    __slots__ = ("_ds", "_elements", "_fast", "_values")

    def __init__(self, ds: Dataset) -> None:
        self._ds = ds
        self._elements = dict(ds.items())  # tag -> raw or converted element, unconverted
        self._fast = _default_hooks()
        self._values: dict[str, Any] = {}

    def has(self, tag: int) -> bool:
        return tag in self._elements

    def get(self, keyword: str) -> Any:
        value = self._values.get(keyword, _SLOW)
        if value is not _SLOW:
            return value
        tag, parse = _HEADER[keyword]
        elem = self._elements.get(tag)
        if elem is None:
            value = None
        else:
            value = parse(elem) if self._fast and type(elem) is RawDataElement else _SLOW
            if value is _SLOW:
                value = self._ds[tag].value
        self._values[keyword] = value
        return value


def sop_class_name(ds: Dataset) -> str:
    """Readable SOP class of ``ds`` (e.g. 'Basic Text SR Storage'), or 'unknown'."""
    uid = ds.get("SOPClassUID") or getattr(ds, "file_meta", Dataset()).get(
        "MediaStorageSOPClassUID"
    )
    if not uid:
        return "unknown"
    uid = UID(str(uid))
    return uid.name if uid.name != str(uid) else str(uid)


def _text(h: _Header | Dataset, keyword: str) -> str | None:
    value = h.get(keyword)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _pixel_spacing(ds: Dataset, h: _Header) -> tuple[float, float] | None:
    candidates: list[_Header | Dataset] = [h]
    shared = ds.get("SharedFunctionalGroupsSequence") if h.has(_SHARED_GROUPS) else None
    if shared:
        candidates.extend(item for item in shared[0].get("PixelMeasuresSequence", []))
    for item in candidates:
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            value = item.get(keyword)
            if value is not None and len(value) == 2:
                try:
                    return float(value[0]), float(value[1])
                except (TypeError, ValueError):
                    return None
    return None


def dicom_meta(ds: Dataset) -> ImageMeta:
    """Acquisition attributes of ``ds`` without patient identifiers."""
    return _meta(ds, _Header(ds))


def _meta(ds: Dataset, h: _Header) -> ImageMeta:
    return ImageMeta(
        modality=_text(h, "Modality"),
        manufacturer=_text(h, "Manufacturer"),
        model_name=_text(h, "ManufacturerModelName"),
        photometric_interpretation=_text(h, "PhotometricInterpretation"),
        pixel_spacing=_pixel_spacing(ds, h),
        view_position=_text(h, "ViewPosition"),
        body_part=_text(h, "BodyPartExamined"),
        frame_count=_frames(h),
        rows=h.get("Rows"),
        columns=h.get("Columns"),
        bits_stored=h.get("BitsStored"),
        presentation_intent=_text(h, "PresentationIntentType"),
        sop_class_uid=_text(h, "SOPClassUID"),
    )


def _frames(h: _Header | Dataset) -> int:
    value = h.get("NumberOfFrames")
    return int(value) if value not in (None, "") else 1


def _references(h: _Header) -> SourceReferences:
    return SourceReferences(
        study_instance_uid=_text(h, "StudyInstanceUID"),
        series_instance_uid=_text(h, "SeriesInstanceUID"),
        sop_instance_uid=_text(h, "SOPInstanceUID"),
        sop_class_uid=_text(h, "SOPClassUID"),
    )


def _summary(exc: BaseException, limit: int = 300) -> str:
    text = re.sub(r"\s+", " ", str(exc)).strip() or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_dicom_prefix(head: bytes) -> bool:
    """True when the first 132 bytes carry the DICOM Part 10 'DICM' marker."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def _read_dataset(fh: Any, src: str) -> Dataset:
    try:
        return pydicom.dcmread(fh)
    except InvalidDicomError as exc:
        raise UnreadableImageError(NOT_DICOM.format(detail=""), source=src) from exc
    except MemoryError:
        raise
    except Exception as exc:
        raise UnreadableImageError(BAD_HEADER.format(reason=_summary(exc)), source=src) from exc


def _check_image(ds: Dataset, h: _Header, src: str) -> UID:
    """Validate that ``ds`` holds a decodable image; return its transfer syntax."""
    sop_uid = str(h.get("SOPClassUID") or "")
    for keyword, tag in (
        ("FloatPixelData", _FLOAT_PIXEL_DATA),
        ("DoubleFloatPixelData", _DOUBLE_FLOAT_PIXEL_DATA),
    ):
        if h.has(tag):
            raise UnsupportedImageError(FLOAT_PIXELS.format(keyword=keyword), source=src)
    if not h.has(_PIXEL_DATA):
        raise UnsupportedImageError(NO_PIXEL_DATA.format(sop_class=sop_class_name(ds)), source=src)
    if sop_uid in _NON_IMAGE_PIXELS:
        raise UnsupportedImageError(
            NOT_AN_IMAGE.format(sop_class=sop_class_name(ds), what=_NON_IMAGE_PIXELS[sop_uid]),
            source=src,
        )
    file_meta = getattr(ds, "file_meta", None)
    tsyntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if not tsyntax:
        raise UnreadableImageError(MISSING_TSYNTAX, source=src)
    for keyword in (*_REQUIRED, "PhotometricInterpretation"):
        value = h.get(keyword)
        if value is None or value == "":
            raise UnreadableImageError(
                MISSING_ELEMENT.format(keyword=keyword, got=value), source=src
            )
    try:
        frames = _frames(h)
    except (TypeError, ValueError):
        raise UnreadableImageError(
            MISSING_ELEMENT.format(keyword="NumberOfFrames", got=h.get("NumberOfFrames")),
            source=src,
        ) from None
    rows, columns, bits = h.get("Rows"), h.get("Columns"), h.get("BitsAllocated")
    if frames < 1 or rows < 1 or columns < 1:
        raise UnreadableImageError(
            MISSING_ELEMENT.format(
                keyword="Rows/Columns/NumberOfFrames", got=(rows, columns, frames)
            ),
            source=src,
        )
    if type(tsyntax) is not UID:
        tsyntax = UID(str(tsyntax))
    if not tsyntax.is_compressed:
        samples = h.get("SamplesPerPixel")
        if str(h.get("PhotometricInterpretation")) == "YBR_FULL_422":
            samples = 2  # two chroma samples shared by each pair of pixels (PS3.3 C.7.6.3.1.2)
        expected = (rows * columns * samples * frames * bits + 7) // 8
        got = len(ds.get_item(_PIXEL_DATA).value)
        if got < expected:
            raise UnreadableImageError(
                TRUNCATED.format(
                    got=got,
                    expected=expected,
                    frames=frames,
                    rows=rows,
                    columns=columns,
                    samples=samples,
                    bits=bits,
                ),
                source=src,
            )
    return tsyntax


def _native_monochrome(ds: Dataset, h: _Header, tsyntax: UID) -> np.ndarray | None:
    """Uncompressed little-endian grayscale pixels without pydicom's decoder, or None.

    For the common case (one sample, 8/16/32 bits allocated, pixel data of
    exactly the expected length) this is what pydicom's native decoder returns
    (same dtype, shape and values, unused high bits masked or sign-extended the
    same way), but as a read-only view on the element's bytes instead of a
    copy, and without pydicom re-reading the Image Pixel module (for a 512x512
    CT slice pydicom's decoder costs about as much again as ``dcmread``).
    Anything else returns None and goes through pydicom, warnings included.
    """
    if (
        tsyntax not in _NATIVE_LITTLE_ENDIAN
        or h.get("SamplesPerPixel") != 1
        or h.get("PhotometricInterpretation") not in _MONO
    ):
        return None
    allocated, stored = h.get("BitsAllocated"), h.get("BitsStored")
    signed = h.get("PixelRepresentation")
    rows, columns, frames = h.get("Rows"), h.get("Columns"), h.get("NumberOfFrames")
    if frames is None and not h.has(_HEADER["NumberOfFrames"][0]):
        frames = 1
    # plain ints in range, as pydicom's runner validates them (rows, columns >= 1 checked)
    dtype = (
        _NATIVE_DTYPES.get((allocated, signed)) if type(allocated) is type(signed) is int else None
    )
    if dtype is None or type(stored) is not int or not 1 <= stored <= allocated:
        return None
    if type(rows) is not int or type(columns) is not int or type(frames) is not int or frames < 1:
        return None
    if h.has(_EXTENDED_OFFSET_TABLE[0]) or h.has(_EXTENDED_OFFSET_TABLE[1]):
        return None
    elem = ds.get_item(_PIXEL_DATA)
    buffer = elem.value
    if elem.VR not in (None, "OB", "OW", "OB or OW") or not isinstance(buffer, bytes):
        return None
    count = rows * columns * frames
    expected = count * (allocated // 8)
    if len(buffer) not in (expected, expected + expected % 2):
        return None  # pydicom warns about the excess padding
    arr = np.frombuffer(buffer, dtype=dtype, count=count)
    arr = arr.reshape((frames, rows, columns) if frames > 1 else (rows, columns))
    if stored < allocated:
        # unused high bits: masked (unsigned) or sign-extended (signed), as pydicom does
        shift = allocated - stored
        arr = np.left_shift(arr, shift)
        np.right_shift(arr, shift, out=arr)
    return arr


def _decode(
    ds: Dataset, h: _Header, tsyntax: UID, src: str, *, monochrome: bool
) -> tuple[np.ndarray, str]:
    """Decode all frames; return the array and its photometric interpretation after decoding."""
    if monochrome:
        arr = _native_monochrome(ds, h, tsyntax)
        if arr is not None:
            return arr, str(h.get("PhotometricInterpretation"))
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as exc:
        raise UnreadableImageError(
            NO_DECODER.format(
                tsyntax=tsyntax.name, install=_INSTALL.get(tsyntax, "a decoder for it")
            ),
            source=src,
        ) from exc
    if not decoder.is_available:
        raise UnreadableImageError(
            NO_DECODER.format(tsyntax=tsyntax.name, install=_INSTALL.get(tsyntax, "gdcm")),
            source=src,
        )
    try:
        arr, info = decoder.as_array(ds, as_rgb=True)
    except MemoryError:
        raise
    except Exception as exc:
        text = _summary(exc)
        if "less than expected" in text or "truncat" in text.lower():
            raise UnreadableImageError(f"truncated pixel data ({text})", source=src) from exc
        missing = " ".join(decoder.missing_dependencies)
        hint = ""
        if tsyntax.is_compressed and "libjpeg" in missing:
            hint = "; another decoder may read it: " + _INSTALL.get(tsyntax, _GPL_HINT)
        raise UnreadableImageError(
            UNDECODABLE.format(tsyntax=tsyntax.name, reason=text, hint=hint), source=src
        ) from exc
    return arr, str(info.get("photometric_interpretation", ds.PhotometricInterpretation))


def _stored_range(h: _Header) -> tuple[int, int]:
    bits = int(h.get("BitsStored"))
    if int(h.get("PixelRepresentation")) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _functional_item(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """The ``sequence`` item for ``frame``: per-frame group, else shared group."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        seq = per_frame[frame].get(sequence)
        if seq:
            return seq[0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        seq = shared[0].get(sequence)
        if seq:
            return seq[0]
    return None


def _is_enhanced(ds: Dataset) -> bool:
    return _PER_FRAME_GROUPS in ds or _SHARED_GROUPS in ds


def _float(value: Any, default: float) -> float:
    if value is None or value == "":
        return default
    return float(value)


def _rescales(ds: Dataset, h: _Header, frames: int) -> tuple[list[tuple[float, float]], str]:
    """Per-frame (slope, intercept) and where they came from."""
    if h.has(_PER_FRAME_GROUPS) or h.has(_SHARED_GROUPS):
        found = []
        origin = "default"
        for i in range(frames):
            item = _functional_item(ds, i, "PixelValueTransformationSequence")
            if item is not None:
                origin = "functional_groups"
                found.append(
                    (
                        _float(item.get("RescaleSlope"), 1.0),
                        _float(item.get("RescaleIntercept"), 0.0),
                    )
                )
            else:
                found.append(
                    (_float(h.get("RescaleSlope"), 1.0), _float(h.get("RescaleIntercept"), 0.0))
                )
        if origin == "default" and (h.has(_RESCALE[0]) or h.has(_RESCALE[1])):
            origin = "RescaleSlope/RescaleIntercept"
        return found, origin
    pair = (_float(h.get("RescaleSlope"), 1.0), _float(h.get("RescaleIntercept"), 0.0))
    origin = (
        "RescaleSlope/RescaleIntercept" if h.has(_RESCALE[0]) or h.has(_RESCALE[1]) else "default"
    )
    return [pair] * frames, origin


def _file_windows(ds: Dataset, frames: int) -> list[tuple[float, float, str]] | None:
    """Per-frame (center, width, function) from the file, first value when multi-valued."""

    def pick(item: Dataset) -> tuple[float, float, str] | None:
        center, width = item.get("WindowCenter"), item.get("WindowWidth")
        if center in (None, "") or width in (None, ""):
            return None
        center = center[0] if isinstance(center, pydicom.multival.MultiValue) else center
        width = width[0] if isinstance(width, pydicom.multival.MultiValue) else width
        function = str(item.get("VOILUTFunction", "") or ds.get("VOILUTFunction", "") or "LINEAR")
        return float(center), float(width), function.strip().upper()

    if _is_enhanced(ds):
        out = []
        for i in range(frames):
            item = _functional_item(ds, i, "FrameVOILUTSequence")
            win = pick(item) if item is not None else pick(ds)
            if win is None:
                return None
            out.append(win)
        return out
    win = pick(ds)
    return None if win is None else [win] * frames


def _frame_views(arr: np.ndarray, frames: int) -> list[np.ndarray]:
    return [arr] if frames == 1 and arr.ndim == 2 else [arr[i] for i in range(arr.shape[0])]


def _monochrome(
    arr: np.ndarray,
    ds: Dataset,
    h: _Header,
    window: tuple[float, float] | None,
    use_file_window: bool,
    src: str,
) -> tuple[np.ndarray, list[Transform]]:
    frames = _frames(h)
    pi = str(h.get("PhotometricInterpretation"))
    invert = pi == "MONOCHROME1"
    smin, smax = _stored_range(h)
    steps: list[Transform] = []
    dtype = np.float64 if int(h.get("BitsStored")) > 24 else np.float32

    # 1. Modality LUT ------------------------------------------------------------------
    lut_table: np.ndarray | None = None
    rescale: list[tuple[float, float]] = []
    if h.has(_MODALITY_LUT_SEQUENCE) and ds.get("ModalityLUTSequence"):
        item = ds.ModalityLUTSequence[0]
        try:
            # pydicom parses the LUT (descriptor quirks, OW endianness); we evaluate
            # it once over every possible stored value and index into that table.
            lut_table = apply_modality_lut(np.arange(smin, smax + 1, dtype=np.int64), ds).astype(
                np.float64
            )
        except MemoryError:
            raise
        except Exception as exc:
            raise UnreadableImageError(
                BAD_MODALITY_LUT.format(reason=_summary(exc)), source=src
            ) from exc
        descriptor = list(item.LUTDescriptor)
        steps.append(
            Transform(
                "modality_lut",
                {
                    "source": "ModalityLUTSequence",
                    "entries": descriptor[0] or 65536,
                    "first_mapped": descriptor[1],
                    "bits": descriptor[2],
                    "type": str(item.get("ModalityLUTType", "")),
                },
            )
        )
        lo, hi = float(lut_table.min()), float(lut_table.max())
    else:
        rescale, origin = _rescales(ds, h, frames)
        distinct = sorted(set(rescale))
        if len(distinct) == 1:
            slope, intercept = distinct[0]
            steps.append(
                Transform(
                    "modality_lut", {"slope": slope, "intercept": intercept, "source": origin}
                )
            )
        else:
            steps.append(
                Transform(
                    "modality_lut",
                    {
                        "slope": [s for s, _ in rescale],
                        "intercept": [b for _, b in rescale],
                        "source": origin + " (per frame)",
                    },
                )
            )
        if any(s == 0 for s, _ in rescale):
            raise UnreadableImageError(
                BAD_MODALITY_LUT.format(reason="RescaleSlope is 0"), source=src
            )
        ends = [s * v + b for s, b in rescale for v in (smin, smax)]
        lo, hi = min(ends), max(ends)

    # 2. VOI ----------------------------------------------------------------------------
    presentation = str(h.get("PresentationIntentType") or "").upper() == "FOR PRESENTATION"
    windows: list[tuple[float, float, str]] | None = None
    voi_lut: tuple[np.ndarray, int, int] | None = None
    if use_file_window:
        if h.has(_VOI_LUT_SEQUENCE) and ds.get("VOILUTSequence"):
            item = ds.VOILUTSequence[0]
            descriptor = list(item.LUTDescriptor)
            entries = descriptor[0] or 65536
            first = int(descriptor[1])
            try:
                lut = apply_voi(np.arange(first, first + entries, dtype=np.int64), ds, index=0)
            except MemoryError:
                raise
            except Exception as exc:
                raise UnreadableImageError(
                    f"invalid VOI LUT ({_summary(exc)})", source=src
                ) from exc
            out_max = 2 ** int(descriptor[2]) - 1
            voi_lut = (np.asarray(lut, dtype=np.float64) / out_max, first, entries)
            steps.append(
                Transform(
                    "voi_lut",
                    {
                        "source": "file VOILUTSequence",
                        "entries": entries,
                        "first_mapped": first,
                        "bits": int(descriptor[2]),
                    },
                )
            )
        else:
            windows = _file_windows(ds, frames)
            if windows is not None:
                centers = sorted({(c, w, f) for c, w, f in windows})
                if len(centers) == 1:
                    c, w, f = centers[0]
                    steps.append(
                        Transform(
                            "voi_window", {"center": c, "width": w, "function": f, "source": "file"}
                        )
                    )
                else:
                    steps.append(
                        Transform(
                            "voi_window",
                            {
                                "center": [c for c, _, _ in windows],
                                "width": [w for _, w, _ in windows],
                                "function": windows[0][2],
                                "source": "file (per frame)",
                            },
                        )
                    )
            elif window is None:
                raise UnsupportedImageError(NO_FILE_WINDOW, source=src)
    if windows is None and voi_lut is None:
        if window is not None and presentation:
            steps.append(
                Transform(
                    "voi_skipped",
                    {
                        "reason": "PresentationIntentType FOR PRESENTATION",
                        "ignored_center": window[0],
                        "ignored_width": window[1],
                    },
                )
            )
        elif window is not None:
            windows = [(window[0], window[1], "LINEAR_EXACT")] * frames
            source = "config (file has none)" if use_file_window else "config"
            steps.append(
                Transform(
                    "voi_window",
                    {
                        "center": window[0],
                        "width": window[1],
                        "function": "LINEAR_EXACT",
                        "source": source,
                    },
                )
            )
        if windows is None:
            if hi <= lo:
                raise UnreadableImageError(
                    BAD_MODALITY_LUT.format(reason=f"empty output range [{lo:g}, {hi:g}]"),
                    source=src,
                )
            steps.append(
                Transform(
                    "value_range",
                    {
                        "low": lo,
                        "high": hi,
                        "source": (
                            f"stored range [{smin}, {smax}] "
                            f"(BitsStored={int(h.get('BitsStored'))}, "
                            f"PixelRepresentation={int(h.get('PixelRepresentation'))}) "
                            "through the modality LUT"
                        ),
                    },
                )
            )
            windows = [((lo + hi) / 2, hi - lo, "LINEAR_EXACT")] * frames

    if invert:
        steps.append(Transform("invert", {"photometric": pi}))
    steps.append(Transform("scale", {"range": [0.0, 1.0], "clip": True}))

    # 3. Compute: one pass per frame, in place --------------------------------------------
    out = np.empty(arr.shape, dtype=dtype)
    if lut_table is not None or voi_lut is not None:
        if lut_table is not None:
            modality = lut_table[np.clip(arr.astype(np.int64) - smin, 0, lut_table.size - 1)]
        else:
            modality = np.empty(arr.shape, dtype=np.float64)
            for view, target, (s, b) in zip(
                _frame_views(arr, frames), _frame_views(modality, frames), rescale, strict=False
            ):
                np.multiply(view, s, out=target)
                target += b
        if voi_lut is not None:
            table, first, entries = voi_lut
            index = np.clip(np.floor(modality).astype(np.int64) - first, 0, entries - 1)
            out[...] = table[index]
            if invert:
                np.subtract(1.0, out, out=out)
            np.clip(out, 0.0, 1.0, out=out)
        else:
            assert windows is not None
            for view, target, (c, w, f) in zip(
                _frame_views(modality, frames), _frame_views(out, frames), windows, strict=False
            ):
                x0, gain = affine_window(c, w, f, source=src)
                apply_affine(view, x0, gain, sigmoid=f == "SIGMOID", invert=invert, out=target)
        return out, steps

    assert windows is not None
    if frames == 1 or len(set(zip(rescale, windows, strict=True))) == 1:
        # the same rescale and window for every frame: one pass over the whole array
        views, targets, rescale, windows = [arr], [out], rescale[:1], windows[:1]
    else:
        views, targets = _frame_views(arr, frames), _frame_views(out, frames)
    for view, target, (s, b), (c, w, f) in zip(views, targets, rescale, windows, strict=False):
        # rescale and window fused into one multiply-add in stored units: with
        # m = s x + b, (m - m0) g = (x - (m0 - b) / s) (g s)
        x0, gain = affine_window(c, w, f, source=src)
        apply_affine(
            view, (x0 - b) / s, gain * s, sigmoid=f == "SIGMOID", invert=invert, out=target
        )
    return out, steps


def _big_endian(ds: Dataset) -> bool:
    tsyntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    if tsyntax:
        return not UID(str(tsyntax)).is_little_endian
    return ds.original_encoding[1] is False


def _color(
    arr: np.ndarray, ds: Dataset, decoded_pi: str, src: str
) -> tuple[np.ndarray, list[Transform]]:
    pi = str(ds.PhotometricInterpretation)
    steps: list[Transform] = []
    if pi == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(arr, ds)
        except MemoryError:
            raise
        except Exception as exc:
            raise UnreadableImageError(
                f"invalid palette colour LUT ({_summary(exc)})", source=src
            ) from exc
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        params: dict[str, Any] = {"bits": bits}
        if rgb.dtype.itemsize > 1 and _big_endian(ds) and "RedPaletteColorLookupTableData" in ds:
            # pydicom 3.0 reads plain (non-segmented) 16-bit LUT data in native byte
            # order; in a big-endian file the entries must be swapped.
            rgb = rgb.byteswap()
            params["byte_order"] = "big-endian LUT data swapped"
        steps.append(Transform("palette_lut", params))
        maximum = 2**bits - 1
        arr = rgb
    else:
        if pi != decoded_pi:
            steps.append(
                Transform("color_convert", {"from": pi, "to": decoded_pi, "by": "pydicom decoder"})
            )
        maximum = 2 ** int(ds.BitsStored) - 1
    dtype = np.float64 if maximum >= 2**24 else np.float32
    out = np.multiply(arr, 1.0 / maximum, dtype=dtype)
    np.clip(out, 0.0, 1.0, out=out)
    steps.append(Transform("scale", {"divisor": float(maximum), "range": [0.0, 1.0]}))
    return out, steps


def read_dicom(
    path: Path,
    fh: Any,
    *,
    window: tuple[float, float] | None,
    use_file_window: bool,
) -> ScanImage:
    """Read one DICOM file (already opened as ``fh``) into a :class:`ScanImage`."""
    src = str(path)
    ds = _read_dataset(fh, src)
    try:
        h = _Header(ds)  # each header value is read once, here and below
        tsyntax = _check_image(ds, h, src)
        meta = _meta(ds, h)
        references = _references(h)
        pi = str(h.get("PhotometricInterpretation")).strip().upper()
        samples = int(h.get("SamplesPerPixel"))
        supported = (
            (pi in _MONO and samples == 1)
            or (pi == "PALETTE COLOR" and samples == 1)
            or (samples == 3 and (pi == "RGB" or pi.startswith("YBR_")))
        )
        if not supported:
            raise UnsupportedImageError(
                UNSUPPORTED_PHOTOMETRIC.format(pi=pi, samples=samples), source=src
            )
        arr, decoded_pi = _decode(ds, h, tsyntax, src, monochrome=pi in _MONO)
        if pi in _MONO:
            pixels, steps = _monochrome(arr, ds, h, window, use_file_window, src)
        else:
            if samples == 3 and decoded_pi != "RGB":
                raise UnsupportedImageError(
                    UNSUPPORTED_PHOTOMETRIC.format(pi=pi, samples=samples), source=src
                )
            pixels, steps = _color(arr, ds, decoded_pi, src)
            if window is not None:
                steps.insert(
                    -1,
                    Transform(
                        "voi_skipped",
                        {
                            "reason": "colour image",
                            "ignored_center": window[0],
                            "ignored_width": window[1],
                        },
                    ),
                )
    except (UnreadableImageError, UnsupportedImageError):
        raise
    except MemoryError:
        raise
    except Exception as exc:  # a malformed header value met while decoding
        raise UnreadableImageError(BAD_HEADER.format(reason=_summary(exc)), source=src) from exc
    if pixels.dtype != np.float32:
        pixels = pixels.astype(np.float32)
    return ScanImage(
        pixels=pixels, meta=meta, transforms=tuple(steps), source=src, references=references
    )
