"""Every DICOM in pydicom's test set and in pydicom-data: equal to a reference built
directly on pydicom/highdicom calls, or a MedlensError naming the file and reason."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing

from medlens import MedlensError, UnsupportedImageError
from medlens.io import read_image

_PYDICOM_DIR = Path(pydicom.__file__).parent / "data" / "test_files"


def _data_store_files() -> list[Path]:
    try:
        import data_store
    except ImportError:  # pragma: no cover - pydicom-data is a dev dependency
        return []
    return sorted((Path(data_store.__file__).parent / "data").glob("*.dcm"))


FILES = sorted(_PYDICOM_DIR.glob("*.dcm")) + _data_store_files()
REFUSED_SOP = {
    "1.2.840.10008.5.1.4.1.1.66.4": "segmentation",
    "1.2.840.10008.5.1.4.1.1.481.2": "dose grid",
}
# Files whose failure reason we check word for word (part of the message).
REASONS = {
    "MR_truncated.dcm": "truncated pixel data",
    "meta_missing_tsyntax.dcm": "no Transfer Syntax UID",
    "no_meta.dcm": "not a DICOM file",
    "ExplVR_BigEndNoMeta.dcm": "not a DICOM file",
    "rtstruct.dcm": "not a DICOM file",
    "reportsi.dcm": "no pixel data (SOP class Basic Text SR Storage)",
    "test-SR.dcm": "no pixel data (SOP class Comprehensive SR Storage)",
    "waveform_ecg.dcm": "no pixel data (SOP class 12-lead ECG Waveform Storage)",
    "rtplan.dcm": "no pixel data (SOP class RT Plan Storage)",
    "liver.dcm": "Segmentation Storage holds a segmentation",
    "rtdose.dcm": "RT Dose Storage holds a radiation dose grid",
    "JPEG2000-embedded-sequence-delimiter.dcm": "cannot decode the 'JPEG 2000 Image Compression' codestream",
}


def _has_libjpeg() -> bool:
    try:
        import libjpeg  # noqa: F401
    except ImportError:
        return False
    return True


if not _has_libjpeg():
    REASONS["JPEG-LL.dcm"] = "pip install medlens[gpl-codecs]"
    REASONS["JPGExtended.dcm"] = "pip install medlens[gpl-codecs]"


def test_the_sweep_sees_the_whole_test_set():
    assert len(list(_PYDICOM_DIR.glob("*.dcm"))) == 78
    assert len(FILES) >= 78


def _enhanced(ds: Dataset) -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


def _stored_range(ds: Dataset) -> np.ndarray:
    bits = int(ds.BitsStored)
    if ds.PixelRepresentation == 1:
        return np.arange(-(2 ** (bits - 1)), 2 ** (bits - 1), dtype=np.int64)
    return np.arange(0, 2**bits, dtype=np.int64)


def _modality(ds: Dataset, path: Path) -> tuple[np.ndarray, float, float]:
    """Modality values (float64) and the modality range of all stored values."""
    stored = _stored_range(ds)
    if _enhanced(ds):
        import highdicom as hd

        img = hd.imread(str(path))
        frames = [
            img.get_frame(
                i + 1,
                apply_real_world_transform=False,
                apply_modality_transform=True,
                apply_voi_transform=False,
                apply_presentation_lut=False,
            )
            for i in range(int(ds.get("NumberOfFrames", 1) or 1))
        ]
        mod = np.stack(frames) if len(frames) > 1 else frames[0]
        ends = []
        for i in range(len(frames)):
            group = (
                ds.PerFrameFunctionalGroupsSequence[i]
                if "PerFrameFunctionalGroupsSequence" in ds
                else Dataset()
            )
            shared = (
                ds.SharedFunctionalGroupsSequence[0]
                if "SharedFunctionalGroupsSequence" in ds
                else Dataset()
            )
            item = (
                group.get("PixelValueTransformationSequence")
                or shared.get("PixelValueTransformationSequence")
                or [Dataset()]
            )[0]
            s, b = float(item.get("RescaleSlope", 1)), float(item.get("RescaleIntercept", 0))
            ends += [s * stored[0] + b, s * stored[-1] + b]
        return mod, min(ends), max(ends)
    mod = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    if ds.get("ModalityLUTSequence"):
        table = apply_modality_lut(stored, ds)
    else:
        table = apply_modality_lut(stored[[0, -1]], ds)
    return mod, float(np.min(table)), float(np.max(table))


def _window(mod: np.ndarray, center: float, width: float, function: str, bits: int) -> np.ndarray:
    """pydicom's apply_windowing, normalised by the output range it used."""
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored = bits
    ds.PixelRepresentation = 0
    ds.WindowCenter = center
    ds.WindowWidth = width
    ds.VOILUTFunction = function
    with np.errstate(over="ignore"):
        y = apply_windowing(mod.astype(np.float64), ds)
        lo, hi = apply_windowing(np.array([-1e300, 1e300]), ds)
    return (y - lo) / (hi - lo)


def reference(path: Path) -> dict[str, object]:
    """Reference pixels for every mode that applies to the file (decoded once)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
        pi = ds.PhotometricInterpretation
        if pi == "PALETTE COLOR":
            rgb = apply_color_lut(arr, ds)
            if (
                ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRBigEndian
                and rgb.dtype.itemsize > 1
                and "RedPaletteColorLookupTableData" in ds
            ):
                rgb = rgb.byteswap()  # pydicom 3.0 reads big-endian OW LUT data as native
            return {"default": rgb / (2.0 ** ds.RedPaletteColorLookupTableDescriptor[2] - 1)}
        if pi not in ("MONOCHROME1", "MONOCHROME2"):
            return {"default": arr / (2.0**ds.BitsStored - 1)}
        mod, lo, hi = _modality(ds, path)
        out: dict[str, object] = {"range": (lo, hi)}
        modes = ["default", "window"] + (["file_window"] if _has_file_window(ds) else [])
        for mode in modes:
            out[mode] = _mono(ds, path, mode, mod, lo, hi)
        return out


def _mono(ds: Dataset, path: Path, mode: str, mod: np.ndarray, lo: float, hi: float) -> np.ndarray:
    pi = ds.PhotometricInterpretation
    if True:
        for_presentation = ds.get("PresentationIntentType") == "FOR PRESENTATION"
        if mode == "window" and not for_presentation:
            y = _window(mod, (lo + hi) / 2, (hi - lo) / 4, "LINEAR_EXACT", 16)
        elif mode == "file_window" and ds.get("VOILUTSequence"):
            y = apply_voi(np.floor(mod).astype(np.int64), ds) / (
                2.0 ** ds.VOILUTSequence[0].LUTDescriptor[2] - 1
            )
        elif mode == "file_window" and _enhanced(ds):
            import highdicom as hd

            img = hd.imread(str(path))
            n = int(ds.get("NumberOfFrames", 1) or 1)
            frames = [
                img.get_frame(
                    i + 1,
                    apply_real_world_transform=False,
                    apply_voi_transform=True,
                    voi_output_range=(0.0, 1.0),
                    apply_presentation_lut=False,
                )
                for i in range(n)
            ]
            y = np.stack(frames) if n > 1 else frames[0]
        elif mode == "file_window":
            c, w = ds.WindowCenter, ds.WindowWidth
            c = c[0] if isinstance(c, pydicom.multival.MultiValue) else c
            w = w[0] if isinstance(w, pydicom.multival.MultiValue) else w
            y = _window(mod, float(c), float(w), ds.get("VOILUTFunction", "LINEAR") or "LINEAR", 16)
        else:
            y = (mod - lo) / (hi - lo)
        if pi == "MONOCHROME1":
            y = 1.0 - y
        return np.clip(y, 0.0, 1.0)


def _has_file_window(ds: Dataset) -> bool:
    if ds.get("VOILUTSequence") or ds.get("WindowCenter") not in (None, ""):
        return True
    shared = ds.get("SharedFunctionalGroupsSequence")
    return bool(shared and shared[0].get("FrameVOILUTSequence")) or bool(
        ds.get("PerFrameFunctionalGroupsSequence")
        and ds.PerFrameFunctionalGroupsSequence[0].get("FrameVOILUTSequence")
    )


def _expected(path: Path) -> dict[str, object] | str:
    """Reference pixels, or why pydicom itself cannot give them (or we refuse by design)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:
            return f"dcmread: {type(exc).__name__}"
        if str(ds.get("SOPClassUID", "")) in REFUSED_SOP:
            return REFUSED_SOP[str(ds.SOPClassUID)]
    try:
        return reference(path)
    except Exception as exc:
        return f"pixel_array: {type(exc).__name__}"


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_file_loads_like_reference_or_fails_clearly(path: Path):
    expected = _expected(path)
    if isinstance(expected, str):
        with pytest.raises(MedlensError) as info:
            read_image(path)
        message = str(info.value)
        assert message.startswith(str(path) + ": "), message
        if path.name in REASONS:
            assert REASONS[path.name] in message
        return
    assert path.name not in REASONS or path.name in ("JPEG-LL.dcm", "JPGExtended.dcm")
    image = read_image(path)
    assert image.pixels.dtype == np.float32
    assert image.pixels.min() >= 0.0 and image.pixels.max() <= 1.0
    assert image.pixels.shape == expected["default"].shape
    _assert_close(image.pixels, expected["default"])
    if "range" not in expected:  # colour: windows do not apply
        return
    lo, hi = expected["range"]
    windowed = read_image(path, window=((lo + hi) / 2, (hi - lo) / 4))
    np.testing.assert_allclose(windowed.pixels, expected["window"], rtol=0, atol=2e-5)
    if "file_window" in expected:
        own = read_image(path, use_file_window=True)
        np.testing.assert_allclose(own.pixels, expected["file_window"], rtol=0, atol=2e-5)
    else:
        with pytest.raises(UnsupportedImageError, match="use_file_window=True but the file has no"):
            read_image(path, use_file_window=True)


def _assert_close(got: np.ndarray, want: np.ndarray) -> None:
    # frame by frame: a large multi-frame file would otherwise need GBs of temporaries
    if got.ndim == 4:
        for g, w in zip(got, want, strict=False):
            np.testing.assert_allclose(g, w, rtol=0, atol=2e-5)
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)


def test_sweep_total_size_is_reasonable():
    # the sweep reads every file several times; keep an eye on what it costs
    total = sum(os.path.getsize(p) for p in FILES)
    assert total < 200 * 2**20
