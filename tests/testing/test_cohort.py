"""The synthetic DICOM cohort: determinism, splits, masks, sites, shortcut, validity."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from medlens import MedlensError
from medlens.io import read_image
from medlens.testing import GROUND_TRUTH_COLUMNS, SITES, make_synthetic_cohort
from medlens.testing._cohort import OUT_DIR_NOT_EMPTY, UNKNOWN_SHORTCUT_SITE

FULL_WINDOW = (2048.0, 4096.0)  # the demo config's window
SITE_BY_INSTITUTION = {s.institution: s for s in SITES}


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_synthetic_cohort(
        tmp_path_factory.mktemp("c") / "cohort", n_patients=40, image_size=64, seed=3
    )


@pytest.fixture(scope="module")
def table(cohort):
    gt = pd.read_csv(cohort.ground_truth)
    heads = [pydicom.dcmread(cohort.root / p, stop_before_pixels=True) for p in gt["path"]]
    gt["patient_id"] = [str(h.PatientID) for h in heads]
    gt["site"] = [SITE_BY_INSTITUTION[str(h.InstitutionName)].code for h in heads]
    gt["photometric"] = [str(h.PhotometricInterpretation) for h in heads]
    return gt


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = make_synthetic_cohort(tmp_path / "a", n_patients=6, image_size=32, seed=11)
    b = make_synthetic_cohort(tmp_path / "b", n_patients=6, image_size=32, seed=11)
    c = make_synthetic_cohort(tmp_path / "c", n_patients=6, image_size=32, seed=12)
    da, db, dc = _tree_digest(a.root), _tree_digest(b.root), _tree_digest(c.root)
    assert da == db
    assert len(da) == 3 * a.n_images + 2
    shared = sorted(k for k in set(da) & set(dc) if k.startswith("dicom/"))
    assert shared and all(da[k] != dc[k] for k in shared)


def test_small_cohort_is_a_prefix_of_a_large_one(tmp_path):
    """Patient i is the same patient (and in the same split) whatever n_patients is."""
    small = make_synthetic_cohort(tmp_path / "s", n_patients=7, image_size=32, seed=5)
    large = make_synthetic_cohort(tmp_path / "l", n_patients=15, image_size=32, seed=5)
    ds, dl = _tree_digest(small.root), _tree_digest(large.root)
    files = [k for k in ds if k.startswith(("dicom/", "masks/"))]
    assert files and all(ds[k] == dl[k] for k in files)
    gs, gl = pd.read_csv(small.ground_truth), pd.read_csv(large.ground_truth)
    pd.testing.assert_frame_equal(gs, gl.iloc[: len(gs)])


def test_ground_truth_columns_and_metadata(cohort, table):
    gt = pd.read_csv(cohort.ground_truth)
    assert tuple(gt.columns) == GROUND_TRUTH_COLUMNS
    assert set(gt["split"]) == {"train", "tune", "test"}
    assert set(gt["label"]) == {0, 1}
    meta = json.loads(cohort.metadata.read_text())
    assert meta["n_images"] == len(gt) == cohort.n_images
    assert meta["n_positive"] == int(gt["label"].sum())
    assert meta["shortcut"]["site"] == cohort.shortcut.site == "site_b"
    assert meta["shortcut"]["box"] == list(cohort.shortcut.box)
    assert meta["shortcut_images"] == int(gt["shortcut_present"].sum())
    assert 0.2 < gt["label"].mean() < 0.5
    counts = table.groupby("patient_id").size()
    assert counts.min() >= 1 and counts.max() <= 3 and counts.max() > 1
    # every DICOM file is listed, nothing else is in the DICOM folder
    assert sorted(str(p.relative_to(cohort.root)) for p in cohort.dicom_dir.iterdir()) == sorted(
        gt["path"]
    )


def test_splits_are_by_patient(table):
    splits_per_patient = table.groupby("patient_id")["split"].nunique()
    assert (splits_per_patient == 1).all()
    per_patient = table.groupby("patient_id")["split"].first().value_counts()
    # blocks of ten patients: six train, two tune, two test
    assert per_patient.to_dict() == {"train": 24, "tune": 8, "test": 8}


def test_ground_truth_holds_no_identifier(cohort):
    text = cohort.ground_truth.read_text() + cohort.metadata.read_text()
    for path in sorted(cohort.dicom_dir.iterdir())[:10]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for value in (ds.PatientID, str(ds.PatientName), ds.PatientBirthDate, ds.AccessionNumber):
            assert str(value) not in text


def test_headers_are_plausible_and_sites_differ(cohort, table):
    seen = {}
    for path, site in zip(table["path"], table["site"], strict=True):
        ds = pydicom.dcmread(cohort.root / path)
        profile = next(s for s in SITES if s.code == site)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.Modality == "CR" and ds.BodyPartExamined == "CHEST"
        assert ds.Manufacturer == profile.manufacturer
        assert ds.ManufacturerModelName == profile.model_name
        assert ds.BitsStored == profile.bits_stored and ds.HighBit == profile.bits_stored - 1
        assert float(ds.RescaleSlope) == profile.rescale_slope
        assert ds.pixel_array.shape == (64, 64)
        assert int(ds.pixel_array.max()) < 2**profile.bits_stored
        assert ds.PatientSex in ("F", "M") and ds.PatientAge.endswith("Y")
        assert ds.PatientID.startswith("MRN") and "^" in str(ds.PatientName)
        seen[site] = ds.PhotometricInterpretation
    assert seen == {
        "site_a": "MONOCHROME2",
        "site_b": "MONOCHROME2",
        "site_c": "MONOCHROME1",
        "site_d": "MONOCHROME2",
    }


def test_masks_are_aligned_with_the_images(cohort, table):
    for row in table.itertuples():
        img = read_image(cohort.root / row.path, window=FULL_WINDOW).pixels
        lesion = np.load(cohort.root / row.lesion_mask)
        lungs = np.load(cohort.root / row.anatomy_mask)
        assert lesion.shape == lungs.shape == img.shape
        assert lesion.dtype == lungs.dtype == bool
        assert lesion.any() == bool(row.label)
        # lung fields are dark (air) compared with the rest of the body
        body = img > 0.2
        assert img[lungs].mean() < img[body & ~lungs].mean() - 0.05
        if row.label:
            rr, cc = np.nonzero(lesion)
            assert lungs[int(round(rr.mean())), int(round(cc.mean()))]
            # the opacity is brighter than the lung around it (same grid, same orientation)
            from scipy import ndimage

            ring = ndimage.binary_dilation(lesion, iterations=3) & ~lesion & lungs
            assert img[lesion].mean() > img[ring].mean()


def test_monochrome1_site_is_bright_where_dense_after_reading(cohort, table):
    mono1 = table[table["photometric"] == "MONOCHROME1"]
    assert len(mono1) > 0
    for row in mono1.itertuples():
        ds = pydicom.dcmread(cohort.root / row.path)
        lungs = np.load(cohort.root / row.anatomy_mask)
        raw = apply_modality_lut(ds.pixel_array, ds)
        img = read_image(cohort.root / row.path, window=FULL_WINDOW).pixels
        spine = np.zeros_like(lungs)
        spine[20:40, 31:33] = True  # the spine runs down the middle
        # stored: air high, bone low (inverted); read: air dark, bone bright
        assert raw[lungs].mean() > raw[spine].mean()
        assert img[lungs].mean() < img[spine].mean()
        assert 0.0 <= img.min() and img.max() <= 1.0


def test_shortcut_only_at_the_stated_site_and_mostly_on_positives(cohort, table):
    marked = table[table["shortcut_present"] == 1]
    assert len(marked) > 0
    assert set(marked["site"]) == {cohort.shortcut.site}
    at_site = table[table["site"] == cohort.shortcut.site]
    rate_pos = at_site.loc[at_site["label"] == 1, "shortcut_present"].mean()
    rate_neg = at_site.loc[at_site["label"] == 0, "shortcut_present"].mean()
    assert rate_pos > 0.6 > rate_neg
    r0, r1, c0, c1 = cohort.shortcut.box
    for row in table.itertuples():
        img = read_image(cohort.root / row.path, window=FULL_WINDOW).pixels
        saturated = (img[r0:r1, c0:c1] > 0.85).mean()  # brighter than any anatomy
        if row.shortcut_present:
            assert saturated > 0.4  # the glyphs fill about half the box
        else:
            assert saturated == 0.0


def test_no_shortcut_gives_the_same_images_without_the_token(tmp_path, cohort):
    clean = make_synthetic_cohort(
        tmp_path / "clean", n_patients=40, image_size=64, seed=3, shortcut=False
    )
    assert clean.shortcut is None
    gt = pd.read_csv(cohort.ground_truth)
    gt_clean = pd.read_csv(clean.ground_truth)
    assert (gt_clean["shortcut_present"] == 0).all()
    pd.testing.assert_frame_equal(
        gt.drop(columns="shortcut_present"), gt_clean.drop(columns="shortcut_present")
    )
    r0, r1, c0, c1 = cohort.shortcut.box
    outside = np.ones((64, 64), dtype=bool)
    outside[r0:r1, c0:c1] = False
    for row in gt.itertuples():
        a = pydicom.dcmread(cohort.root / row.path).pixel_array
        b = pydicom.dcmread(clean.root / row.path).pixel_array
        np.testing.assert_array_equal(a[outside], b[outside])
        assert (a != b).any() == bool(row.shortcut_present)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_files_pass_dciodvfy(cohort, table):
    for _, row in table.groupby("site").head(1).iterrows():
        out = subprocess.run(
            ["dciodvfy", str(cohort.root / row["path"])], capture_output=True, text=True
        )
        text = out.stdout + out.stderr
        assert "Error" not in text, text
        assert "CRImage" in text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_patients": 0}, "'n_patients' parameter of make_synthetic_cohort must be an int >= 1"),
        ({"n_patients": 2.5}, "'n_patients' parameter"),
        (
            {"image_size": 16},
            "'image_size' parameter of make_synthetic_cohort must be an int >= 32",
        ),
        ({"seed": -1}, "'seed' parameter"),
        ({"seed": True}, "'seed' parameter"),
        ({"shortcut_rates": (1.5, 0.1)}, "'shortcut_rates' parameter"),
        ({"shortcut_rates": "high"}, "'shortcut_rates' parameter"),
    ],
)
def test_bad_parameters(tmp_path, kwargs, match):
    with pytest.raises(MedlensError, match=match):
        make_synthetic_cohort(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_unknown_shortcut_site(tmp_path):
    msg = UNKNOWN_SHORTCUT_SITE.format(got="site_z", valid=[s.code for s in SITES])
    with pytest.raises(MedlensError) as exc:
        make_synthetic_cohort(tmp_path / "x", shortcut_site="site_z")
    assert str(exc.value) == msg


def test_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(MedlensError) as exc:
        make_synthetic_cohort(tmp_path, n_patients=1, image_size=32)
    assert str(exc.value) == OUT_DIR_NOT_EMPTY.format(path=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
