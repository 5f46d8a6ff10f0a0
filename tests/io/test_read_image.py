"""read_image on small synthetic files: pipeline order, windows, errors, raster formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_windowing

import medlens.io
from medlens import MedlensError, UnreadableImageError, UnsupportedImageError
from medlens.config import WindowConfig
from medlens.io import ScanImage, read_image

RNG = np.random.default_rng(0)


def _ct(size: int = 32) -> np.ndarray:
    return RNG.integers(-1024, 3000, size=(size, size)).astype(np.int16)


def test_public_api_is_sorted_and_complete():
    assert medlens.io.__all__ == sorted(medlens.io.__all__)
    for name in medlens.io.__all__:
        assert hasattr(medlens.io, name)


def test_ct_rescale_then_config_window(dicom_writer):
    stored = _ct()
    path = dicom_writer(stored, RescaleSlope=2, RescaleIntercept=-1024)
    image = read_image(path, window=(40, 400))
    hu = stored.astype(np.float64) * 2 - 1024
    expected = np.clip((hu - (40 - 200)) / 400, 0, 1)
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)
    names = [str(t) for t in image.transforms]
    assert names[0] == "modality_lut slope=2 intercept=-1024 source=RescaleSlope/RescaleIntercept"
    assert names[1] == "voi_window center=40 width=400 function=LINEAR_EXACT source=config"
    assert names[-1].startswith("scale")
    assert image.pixels.dtype == np.float32 and image.pixels.shape == (32, 32)


def test_window_config_object_gives_same_pixels(dicom_writer):
    path = dicom_writer(_ct(), RescaleSlope=1, RescaleIntercept=-1024)
    a = read_image(path, window=(40, 400)).pixels
    b = read_image(path, window=WindowConfig(center=40, width=400)).pixels
    np.testing.assert_array_equal(a, b)


def test_no_window_maps_fixed_stored_range_not_min_max(dicom_writer):
    stored = RNG.integers(100, 200, size=(16, 16)).astype(np.uint16)
    path = dicom_writer(stored, bits_stored=12, RescaleSlope=1, RescaleIntercept=0)
    image = read_image(path)
    np.testing.assert_allclose(image.pixels, stored / 4095.0, atol=1e-6)
    step = [t for t in image.transforms if t.name == "value_range"][0]
    assert step.params["low"] == 0 and step.params["high"] == 4095


def test_monochrome1_inverted_after_window(dicom_writer):
    stored = RNG.integers(0, 4096, size=(16, 16)).astype(np.uint16)
    m1 = read_image(
        dicom_writer(stored, bits_stored=12, photometric="MONOCHROME1"), window=(2000, 1000)
    )
    m2 = read_image(
        dicom_writer(stored, bits_stored=12, photometric="MONOCHROME2"), window=(2000, 1000)
    )
    np.testing.assert_allclose(m1.pixels, 1 - m2.pixels, atol=1e-6)
    names = [t.name for t in m1.transforms]
    assert names.index("invert") > names.index("voi_window")
    assert str(m1.transforms[names.index("invert")]) == "invert photometric=MONOCHROME1"


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_file_window_functions_match_pydicom(dicom_writer, function):
    stored = RNG.integers(0, 4096, size=(16, 16)).astype(np.uint16)
    path = dicom_writer(
        stored,
        bits_stored=12,
        WindowCenter=1500,
        WindowWidth=800,
        VOILUTFunction=function,
        RescaleSlope=1,
        RescaleIntercept=0,
    )
    ds = Dataset()
    ds.PhotometricInterpretation, ds.BitsStored, ds.PixelRepresentation = "MONOCHROME2", 12, 0
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 1500, 800, function
    ref = (apply_windowing(stored.astype(float), ds)) / 4095
    image = read_image(path, use_file_window=True)
    np.testing.assert_allclose(image.pixels, ref, atol=2e-6)
    # the file window is ignored unless asked for
    assert "voi_window" not in [t.name for t in read_image(path).transforms]


def test_file_window_falls_back_to_config_and_errors_without_any(dicom_writer):
    path = dicom_writer(_ct())
    with pytest.raises(UnsupportedImageError, match="use_file_window=True but the file has no"):
        read_image(path, use_file_window=True)
    image = read_image(path, window=(0, 100), use_file_window=True)
    assert image.transforms[1].params["source"] == "config (file has none)"


def test_for_presentation_is_not_windowed_again(dicom_writer):
    stored = RNG.integers(0, 256, size=(8, 8)).astype(np.uint8)
    path = dicom_writer(stored, PresentationIntentType="FOR PRESENTATION", modality="DX")
    image = read_image(path, window=(10, 5))
    np.testing.assert_allclose(image.pixels, stored / 255.0, atol=1e-6)
    skipped = [t for t in image.transforms if t.name == "voi_skipped"]
    assert skipped and "FOR PRESENTATION" in skipped[0].params["reason"]


def test_modality_lut_sequence_matches_pydicom(dicom_writer):
    stored = RNG.integers(0, 256, size=(8, 8)).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 16]
    item.ModalityLUTType = "US"
    item.add_new("LUTData", "US", [int(v) for v in (np.arange(256) ** 2 // 4)])
    path = dicom_writer(stored, bits_stored=8, ModalityLUTSequence=[item])
    import pydicom

    ds = pydicom.dcmread(path)
    lut_out = apply_modality_lut(ds.pixel_array, ds).astype(float)
    full = apply_modality_lut(np.arange(256), ds)
    ref = (lut_out - full.min()) / (full.max() - full.min())
    np.testing.assert_allclose(read_image(path).pixels, ref, atol=1e-6)


def test_enhanced_per_frame_rescale(dicom_writer):
    """Two frames with different Pixel Value Transformation: each frame its own."""
    stored = RNG.integers(0, 1000, size=(2, 8, 8)).astype(np.uint16)
    frames = []
    for slope, intercept in ((1.0, -1024.0), (2.0, -500.0)):
        pvt = Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = slope, intercept, "HU"
        group = Dataset()
        group.PixelValueTransformationSequence = [pvt]
        frames.append(group)
    path = dicom_writer(
        stored, PerFrameFunctionalGroupsSequence=frames, SharedFunctionalGroupsSequence=[Dataset()]
    )
    image = read_image(path, window=(0, 2000))
    hu = np.stack([stored[0] * 1.0 - 1024, stored[1] * 2.0 - 500])
    np.testing.assert_allclose(image.pixels, np.clip((hu + 1000) / 2000, 0, 1), atol=1e-6)
    assert image.transforms[0].params["source"] == "functional_groups (per frame)"
    assert image.meta.frame_count == 2


def test_rgb_scaled_by_bit_depth_and_window_skipped(dicom_writer):
    rgb = RNG.integers(0, 256, size=(8, 8, 3)).astype(np.uint8)
    image = read_image(dicom_writer(rgb, photometric="RGB", modality="OT"), window=(1, 2))
    np.testing.assert_allclose(image.pixels, rgb / 255.0, atol=1e-7)
    assert image.pixels.shape == (8, 8, 3)
    assert "voi_skipped" in [t.name for t in image.transforms]


def test_meta_has_no_identifiers_and_references_are_hidden(dicom_writer):
    path = dicom_writer(
        _ct(),
        PatientName="ZZMARKER^NAME",
        PatientID="ZZMARKER-ID",
        InstitutionName="ZZMARKER HOSPITAL",
    )
    image = read_image(path)
    assert "ZZMARKER" not in repr(image)
    assert image.references.sop_instance_uid and image.references.sop_instance_uid not in repr(
        image
    )
    assert image.meta.modality == "CT" and image.meta.manufacturer == "Acme"
    assert isinstance(image, ScanImage)


# ----------------------------------------------------------------------------- errors
def test_truncated_pixel_data(dicom_writer, tmp_path):
    path = dicom_writer(_ct())
    data = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:-100])
    with pytest.raises(UnreadableImageError, match=r"cut\.dcm: truncated pixel data"):
        read_image(cut)


def test_not_dicom_and_unknown_format(tmp_path):
    bad = tmp_path / "scan.dcm"
    bad.write_bytes(b"hello world" * 20)
    with pytest.raises(UnreadableImageError, match=r"scan\.dcm: not a DICOM file"):
        read_image(bad)
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(UnsupportedImageError, match=r"notes\.txt: unrecognised file format"):
        read_image(other)
    with pytest.raises(UnreadableImageError, match="cannot open the file"):
        read_image(tmp_path / "absent.png")


def test_bad_arguments():
    with pytest.raises(MedlensError, match="The 'window' parameter of read_image"):
        read_image("x.dcm", window=(40, 0))
    with pytest.raises(MedlensError, match="The 'window' parameter of read_image"):
        read_image("x.dcm", window="wide")
    with pytest.raises(MedlensError, match="The 'use_file_window' parameter"):
        read_image("x.dcm", use_file_window="yes")
    with pytest.raises(MedlensError, match="The 'path' parameter"):
        read_image(12)


def test_unsupported_photometric(dicom_writer):
    path = dicom_writer(
        RNG.integers(0, 255, (4, 4, 3)).astype(np.uint8), photometric="HSV", modality="OT"
    )
    with pytest.raises(UnsupportedImageError, match="unsupported photometric interpretation 'HSV'"):
        read_image(path)


# ----------------------------------------------------------------------------- raster
def test_png_8_and_16_bit_and_rgb(tmp_path):
    g8 = RNG.integers(0, 256, (8, 9)).astype(np.uint8)
    Image.fromarray(g8).save(tmp_path / "g8.png")
    np.testing.assert_allclose(read_image(tmp_path / "g8.png").pixels, g8 / 255, atol=1e-7)
    g16 = RNG.integers(0, 65536, (8, 9)).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    np.testing.assert_allclose(read_image(tmp_path / "g16.png").pixels, g16 / 65535, atol=1e-7)
    rgb = RNG.integers(0, 256, (8, 9, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.tif")
    image = read_image(tmp_path / "c.tif")
    assert image.pixels.shape == (8, 9, 3)
    np.testing.assert_allclose(image.pixels, rgb / 255, atol=1e-7)


def test_jpeg_reads(tmp_path):
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(tmp_path / "a.jpg")
    image = read_image(tmp_path / "a.jpg")
    assert image.pixels.shape == (8, 8) and abs(float(image.pixels.mean()) - 128 / 255) < 0.02


def test_npy_float_int_and_errors(tmp_path):
    f = RNG.random((3, 5, 5)).astype(np.float32)
    np.save(tmp_path / "f.npy", f)
    image = read_image(tmp_path / "f.npy")
    np.testing.assert_array_equal(image.pixels, f)
    assert image.meta.frame_count == 3
    np.save(tmp_path / "i16.npy", np.array([[-32768, 32767]], np.int16))
    np.testing.assert_allclose(read_image(tmp_path / "i16.npy").pixels, [[0, 1]])
    np.save(tmp_path / "hu.npy", np.array([[-1000.0, 40.0, 1000.0]]))
    with pytest.raises(UnsupportedImageError, match=r"outside \[0, 1\] \(min=-1000, max=1000\)"):
        read_image(tmp_path / "hu.npy")
    np.testing.assert_allclose(
        read_image(tmp_path / "hu.npy", window=(40, 400)).pixels, [[0, 0.5, 1]]
    )
    np.save(tmp_path / "nan.npy", np.array([[np.nan, 0.5]]))
    with pytest.raises(UnreadableImageError, match="NaN"):
        read_image(tmp_path / "nan.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UnreadableImageError, match=r"obj\.npy: cannot read the file as an image"):
        read_image(tmp_path / "obj.npy")
    np.save(tmp_path / "vec.npy", np.zeros(5))
    with pytest.raises(UnsupportedImageError, match=r"array of shape \(5,\) is not an image"):
        read_image(tmp_path / "vec.npy")
    np.save(tmp_path / "i32.npy", np.zeros((4, 4), np.int32))
    with pytest.raises(UnsupportedImageError, match="cannot be scaled to"):
        read_image(tmp_path / "i32.npy")


def test_png_corrupt(tmp_path: Path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes((tmp_path / "ok.png").read_bytes()[:30])
    with pytest.raises(UnreadableImageError, match=r"bad\.png: cannot read the file as an image"):
        read_image(tmp_path / "bad.png")
