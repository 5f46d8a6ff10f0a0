"""The DICOM reader's fast path, pinned against pydicom on synthetic edge cases.

For uncompressed little-endian grayscale files medlens views the pixel bytes
itself instead of calling pydicom's decoder, and parses header values from the
raw element bytes (``medlens.io._dicom._Header``). Each file below is written
with pydicom and read twice: by ``read_image`` and by the reference of
``test_sweep.py`` (``ds.pixel_array`` -> ``apply_modality_lut`` -> window ->
[0, 1]), which goes through pydicom's own decoder and value conversion only.
Where the fast path must apply, pydicom's decoder is made to fail so the
result can only come from the fast path; where it must not, a spy checks that
pydicom's decoder did the work.
"""

from __future__ import annotations

import importlib.util
import struct
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels.decoders.base import Decoder
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from medlens import MedlensError, UnreadableImageError
from medlens.io import read_image
from medlens.io._dicom import _Header, _native_monochrome


def _sweep_module() -> ModuleType:
    """tests/io/test_sweep.py, whose ``reference`` builds the expected pixels.

    Tests run under ``--import-mode=importlib`` without packages, so the module
    is loaded from its path (under a private name, so pytest does not collect it
    twice).
    """
    name = "_medlens_tests_io_sweep_reference"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("test_sweep.py")
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _stored_ends(ds: pydicom.Dataset) -> np.ndarray:
    bits = int(ds.BitsStored)
    if ds.PixelRepresentation == 1:
        return np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1], dtype=np.int64)
    return np.array([0, 2**bits - 1], dtype=np.int64)


_SWEEP = _sweep_module()
# test_sweep's _stored_range lists every stored value (32 GiB at 32 bits); without a
# Modality LUT Sequence (none here) the reference only uses its two ends.
_SWEEP._stored_range = _stored_ends
reference = _SWEEP.reference

RNG = np.random.default_rng(20261124)
I16 = RNG.integers(-3000, 3000, (17, 23)).astype(np.int16)
# full 16-bit range: with BitsStored < 16 the unused high bits hold junk
U16_JUNK = RNG.integers(0, 2**16, (17, 23)).astype(np.uint16)
I16_JUNK = RNG.integers(-(2**15), 2**15, (17, 23)).astype(np.int16)
U8 = RNG.integers(0, 256, (7, 9)).astype(np.uint8)  # 63 bytes: written with a padding byte
I8 = RNG.integers(-128, 128, (7, 9)).astype(np.int8)
I32 = RNG.integers(-(2**31), 2**31, (5, 6)).astype(np.int32)
U32 = RNG.integers(0, 2**32, (5, 6), dtype=np.uint64).astype(np.uint32)
FRAMES = RNG.integers(0, 2**16, (3, 8, 9)).astype(np.uint16)

RESCALE = {"RescaleSlope": 2, "RescaleIntercept": -1024}


def _set_raw(path: Path, tag: int, vr: str, placeholder: bytes, raw: bytes) -> Path:
    """Replace the value of the element ``tag`` (written as ``placeholder``) by ``raw``.

    Explicit VR Little Endian, 2-byte length VRs; the bytes go into the file
    as they are, with no validation or padding by pydicom.
    """
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    old = head + struct.pack("<H", len(placeholder)) + placeholder
    data = path.read_bytes()
    assert data.count(old) == 1, (path.name, hex(tag))
    path.write_bytes(data.replace(old, head + struct.pack("<H", len(raw)) + raw))
    return path


def _resave(path: Path, change: Callable[[pydicom.Dataset], None]) -> Path:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)
    return path


def _extend_pixels(extra: bytes) -> Callable[[pydicom.Dataset], None]:
    def change(ds: pydicom.Dataset) -> None:
        ds.PixelData = ds.PixelData + extra

    return change


def _implicit(ds: pydicom.Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian


def _rle(ds: pydicom.Dataset) -> None:
    ds.compress(RLELossless)


_SLOPE, _FRAMES, _LO, _CS, _UI = 0x00281053, 0x00280008, 0x00080070, 0x00080060, 0x0020000D


def _raw_case(
    pixels: np.ndarray, tag: int, vr: str, placeholder: str, raw: bytes, **attrs: Any
) -> Callable[[Callable[..., Path], Path], Path]:
    keyword = pydicom.datadict.keyword_for_tag(tag)
    attrs = {**RESCALE, **attrs, keyword: placeholder}
    if keyword == "Modality":
        attrs.pop("Modality")
        attrs["modality"] = placeholder

    def build(write: Callable[..., Path], path: Path) -> Path:
        return _set_raw(write(path, pixels, **attrs), tag, vr, placeholder.encode(), raw)

    return build


def _case(pixels: np.ndarray, then: Callable[[pydicom.Dataset], None] | None = None, **attrs: Any):
    def build(write: Callable[..., Path], path: Path) -> Path:
        path = write(path, pixels, **attrs)
        return _resave(path, then) if then is not None else path

    return build


def _testdata(name: str):
    def build(write: Callable[..., Path], path: Path) -> Path:
        return Path(get_testdata_file(name))

    return build


# name -> (builder, path): True = the fast path must decode the pixels, False =
# pydicom's decoder must, None = not pinned (header cases, and files that fail
# before decoding).
CASES: dict[str, tuple[Callable[[Callable[..., Path], Path], Path], bool | None]] = {
    "i16": (_case(I16, **RESCALE), True),
    "u16_bs12_junk": (_case(U16_JUNK, bits_stored=12, **RESCALE), True),
    "u16_bs1_junk": (_case(U16_JUNK, bits_stored=1), True),
    "i16_bs12_junk": (
        _case(I16_JUNK, bits_stored=12, RescaleSlope="0.5", RescaleIntercept="-10.25"),
        True,
    ),
    "i16_bs9_junk_m1": (_case(I16_JUNK, bits_stored=9, photometric="MONOCHROME1"), True),
    "u16_bs10_junk_m1": (_case(U16_JUNK, bits_stored=10, photometric="MONOCHROME1"), True),
    "u8_odd_padded": (_case(U8), True),
    "i8_odd_padded": (_case(I8), True),
    "u8_bs7_junk": (_case(U8, bits_stored=7), True),
    "i8_bs5_junk": (_case(I8, bits_stored=5), True),
    "i32": (_case(I32), True),
    "u32": (_case(U32), True),
    "u32_bs28_junk": (_case(U32, bits_stored=28), True),
    "i32_bs20_junk": (_case(I32, bits_stored=20, photometric="MONOCHROME1"), True),
    "multiframe": (_case(FRAMES, bits_stored=12, NumberOfFrames=3, **RESCALE), True),
    "multiframe_is_string": (_case(FRAMES[:2], NumberOfFrames="2"), True),
    "one_frame_declared": (_case(I16, NumberOfFrames=1), True),
    "implicit_vr": (_case(I16_JUNK, _implicit, bits_stored=12, **RESCALE), True),
    "implicit_vr_odd_u8": (_case(U8, _implicit), True),
    "excess_padding": (_case(I16, _extend_pixels(b"\0" * 10), **RESCALE), False),
    "excess_odd_u8": (_case(U8, _extend_pixels(b"\0" * 2)), False),
    "rle": (_case(I16_JUNK, _rle, bits_stored=12, **RESCALE), False),
    "big_endian": (_testdata("MR_small_bigendian.dcm"), False),
    "truncated": (_case(I16, lambda ds: setattr(ds, "PixelData", ds.PixelData[:-10])), None),
    # header values: what pydicom converts, or an error where pydicom cannot
    "ds_not_a_number": (_raw_case(I16, _SLOPE, "DS", "9999", b"abc "), None),
    "ds_comma": (_raw_case(I16, _SLOPE, "DS", "9999", b"1,5 "), None),
    "ds_leading_space": (_raw_case(I16, _SLOPE, "DS", "9999", b" 1. "), None),
    "ds_exponent": (_raw_case(I16, _SLOPE, "DS", "9999", b"1.5E-1"), None),
    "ds_plus_zeros": (_raw_case(I16, _SLOPE, "DS", "9999", b"+0002.50"), None),
    "ds_multi_valued": (_raw_case(I16, _SLOPE, "DS", "9999", b"2\\3 "), None),
    "ds_long_padding": (_raw_case(I16, _SLOPE, "DS", "9999", b"2" + b" " * 19), None),
    "is_not_a_number": (_raw_case(I16, _FRAMES, "IS", "9173", b"ab"), None),
    "is_plus_sign": (_raw_case(I16, _FRAMES, "IS", "9173", b"+1"), None),
    "is_long_padding": (_raw_case(I16, _FRAMES, "IS", "9173", b"1" + b" " * 15), None),
    "ui_trailing_nul": (_raw_case(I16, _UI, "UI", "1.2.3.4444", b"1.2.3.44\0"), None),
    "ui_leading_zero": (_raw_case(I16, _UI, "UI", "1.2.3.4444", b"1.02.3.4"), None),
    "ui_long_padding": (_raw_case(I16, _UI, "UI", "1.2.3.4444", b"1.2.3.4" + b"\0" * 65), None),
    "cs_lower_case": (_raw_case(I16, _CS, "CS", "QQ", b"ct"), None),
    "cs_nul": (_raw_case(I16, _CS, "CS", "QQ", b"M\0"), None),
    "cs_long_padding": (_raw_case(I16, _CS, "CS", "QQ", b"CT" + b" " * 20), None),
    "lo_long_padding": (_raw_case(I16, _LO, "LO", "QQQQ", b"ABC" + b" " * 69), None),
    "lo_too_long": (_raw_case(I16, _LO, "LO", "QQQQ", b"X" * 70), None),
    "lo_control_char": (_raw_case(I16, _LO, "LO", "QQQQ", b"A\tB "), None),
    "lo_backslash": (_raw_case(I16, _LO, "LO", "QQQQ", b"A\\B "), None),
    "lo_latin1_no_charset": (_raw_case(I16, _LO, "LO", "QQQQ", "Mü  ".encode("latin1")), None),
    "lo_latin1": (
        _raw_case(
            I16, _LO, "LO", "QQQQ", "Müller".encode("latin1"), SpecificCharacterSet="ISO_IR 100"
        ),
        None,
    ),
    "lo_utf8": (
        _raw_case(I16, _LO, "LO", "QQQQ", "Müller".encode(), SpecificCharacterSet="ISO_IR 192"),
        None,
    ),
}


@pytest.fixture
def write(write_dicom_file):
    """``write_dicom`` with pydicom's validation warnings for odd values silenced."""

    def make(path: Path, pixels: np.ndarray, **attrs: Any) -> Path:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return write_dicom_file(path, pixels, **attrs)

    return make


def _pydicom_text(ds: pydicom.Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return None if value is None else (str(value).strip() or None)


@pytest.mark.parametrize("name", list(CASES))
def test_read_image_matches_pydicom_reference(name, write, tmp_path, monkeypatch):
    build, fast = CASES[name]
    path = build(write, tmp_path / f"{name}.dcm")
    try:
        expected = reference(path)
    except MemoryError:
        raise
    except Exception as exc:  # pydicom itself cannot read the file: medlens must say so
        with pytest.raises(MedlensError) as info:
            read_image(path)
        assert str(info.value).startswith(f"{path}: "), (exc, info.value)
        return

    calls: list[str] = []
    real_as_array = Decoder.as_array

    def no_decoder(self, *args: Any, **kw: Any) -> Any:
        raise RuntimeError("pydicom's decoder was called on a fast-path file")

    def spy(self, *args: Any, **kw: Any) -> Any:
        calls.append(str(self.UID))
        return real_as_array(self, *args, **kw)

    monkeypatch.setattr(Decoder, "as_array", no_decoder if fast else spy)

    image = read_image(path)  # any warning fails the test (filterwarnings = error)
    assert image.pixels.dtype == np.float32
    assert image.pixels.shape == expected["default"].shape
    np.testing.assert_allclose(image.pixels, expected["default"], rtol=0, atol=2e-5)
    lo, hi = expected["range"]
    windowed = read_image(path, window=((lo + hi) / 2, (hi - lo) / 4))
    np.testing.assert_allclose(windowed.pixels, expected["window"], rtol=0, atol=2e-5)
    if fast is False:
        assert calls, "pydicom's decoder was not used"

    # header values as pydicom converts them
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        meta, refs = image.meta, image.references
        assert meta.modality == _pydicom_text(ds, "Modality")
        assert meta.manufacturer == _pydicom_text(ds, "Manufacturer")
        assert meta.model_name == _pydicom_text(ds, "ManufacturerModelName")
        assert meta.photometric_interpretation == _pydicom_text(ds, "PhotometricInterpretation")
        assert (meta.rows, meta.columns, meta.bits_stored) == (ds.Rows, ds.Columns, ds.BitsStored)
        assert meta.frame_count == int(ds.get("NumberOfFrames") or 1)
        assert meta.sop_class_uid == _pydicom_text(ds, "SOPClassUID")
        assert refs.study_instance_uid == _pydicom_text(ds, "StudyInstanceUID")
        assert refs.series_instance_uid == _pydicom_text(ds, "SeriesInstanceUID")
        assert refs.sop_instance_uid == _pydicom_text(ds, "SOPInstanceUID")
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            step = image.transforms[0]
            assert step.name == "modality_lut"
            assert step.params["slope"] == float(ds.RescaleSlope)
            assert step.params["intercept"] == float(ds.RescaleIntercept)


FAST = [name for name, (_, fast) in CASES.items() if fast]


@pytest.mark.parametrize("name", FAST)
def test_fast_decoder_returns_exactly_pydicoms_array(name, write, tmp_path):
    """Same dtype, shape and values (high bits masked / sign-extended) as pixel_array."""
    path = CASES[name][0](write, tmp_path / f"{name}.dcm")
    want = pydicom.dcmread(path).pixel_array
    ds = pydicom.dcmread(path)  # fresh: read_image hands the reader unconverted elements
    got = _native_monochrome(ds, _Header(ds), ds.file_meta.TransferSyntaxUID)
    assert got is not None
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    bits = int(ds.BitsStored)
    if ds.PixelRepresentation == 1:
        assert got.min() >= -(2 ** (bits - 1)) and got.max() < 2 ** (bits - 1)
    else:
        assert got.min() >= 0 and got.max() < 2**bits


def test_junk_high_bits_are_really_in_the_files(write, tmp_path):
    """The masking cases mean something only if the stored bytes carry junk."""
    path = CASES["u16_bs12_junk"][0](write, tmp_path / "junk.dcm")
    raw = np.frombuffer(pydicom.dcmread(path).PixelData, dtype="<u2")
    assert (raw >> 12).any()


def test_truncated_pixel_data_raises_medlens_error(write, tmp_path):
    path = CASES["truncated"][0](write, tmp_path / "cut.dcm")
    with pytest.raises(UnreadableImageError, match=r"cut\.dcm: truncated pixel data: 772 bytes"):
        read_image(path)


def test_pydicom_path_still_used_when_the_decoder_is_required(monkeypatch):
    """Big-endian and compressed files fail loudly if pydicom's decoder cannot run."""

    def broken(self, *args: Any, **kw: Any) -> Any:
        raise RuntimeError("decoder broken for this test")

    monkeypatch.setattr(Decoder, "as_array", broken)
    for name in ("MR_small_bigendian.dcm", "MR_small_RLE.dcm"):
        with pytest.raises(UnreadableImageError, match="decoder broken for this test"):
            read_image(get_testdata_file(name))
