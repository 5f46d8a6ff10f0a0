"""Manifests, pseudonymisation and cohort attributes; no identifier may leak."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pandas as pd
import pytest
from pydicom.uid import BasicTextSRStorage

from medlens import InputDataError, MedlensError
from medlens.io import age_band, pseudonymize, read_image, read_manifest, scan_dicom_folder

SALT = "test-salt-123"


def test_pseudonymize_is_salted_hmac_sha256():
    expected = "p-" + hmac.new(SALT.encode(), b"12345", hashlib.sha256).hexdigest()[:16]
    assert pseudonymize("12345", salt=SALT) == expected
    assert pseudonymize(" 12345 ", salt=SALT) == expected
    assert pseudonymize("12345", salt=SALT + "x") != expected
    assert pseudonymize("", salt=SALT) is None
    assert pseudonymize(None, salt=SALT) is None
    assert pseudonymize(float("nan"), salt=SALT) is None
    with pytest.raises(MedlensError, match="The 'salt' parameter of pseudonymize"):
        pseudonymize("x", salt="short")


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (0, "0-39"),
        (39.9, "0-39"),
        (40, "40-59"),
        (79, "60-79"),
        (80, "80+"),
        (None, "missing"),
        (float("nan"), "missing"),
    ],
)
def test_age_band(age, band):
    assert age_band(age) == band


def test_age_band_bad_edges():
    assert age_band(10, (18, 65)) == "<18"
    with pytest.raises(MedlensError, match="age_band_edges"):
        age_band(10, (40, 20))


def _write_csv(tmp_path, rows, name="m.csv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_read_manifest_replaces_ids(tmp_path):
    csv = _write_csv(
        tmp_path,
        [
            {
                "path": "a.png",
                "label": 1,
                "patient_id": "ZZMARKER-ID",
                "study_id": "S1",
                "site": "A",
                "age": 45,
            },
            {
                "path": "sub/b.png",
                "label": 0,
                "patient_id": "007",
                "study_id": "S2",
                "site": "B",
                "age": "",
            },
        ],
    )
    m = read_manifest(csv, salt=SALT)
    t = m.table
    assert list(t.columns[:5]) == ["case_id", "path", "patient_key", "study_key", "label"]
    assert "patient_id" not in t.columns and "study_id" not in t.columns and "age" not in t.columns
    assert t["patient_key"].tolist() == [
        pseudonymize("ZZMARKER-ID", salt=SALT),
        pseudonymize("007", salt=SALT),
    ]
    assert t["path"].tolist() == [
        str((tmp_path / "a.png").resolve()),
        str((tmp_path / "sub/b.png").resolve()),
    ]
    assert t["age_band"].tolist() == ["40-59", "missing"]
    assert t["label"].tolist() == [1, 0]
    out = m.write_csv(tmp_path / "out.csv")
    assert "ZZMARKER" not in out.read_text() and "ZZMARKER" not in repr(m)
    root = tmp_path / "elsewhere"
    assert read_manifest(csv, salt=SALT, root=root).table["path"][0] == str(
        (root / "a.png").resolve()
    )


def test_read_manifest_errors(tmp_path):
    csv = _write_csv(tmp_path, [{"file": "a.png", "label": 1, "patient_id": "1"}])
    with pytest.raises(
        InputDataError,
        match=r"missing required column\(s\) path, study_id; the file has: file, label, patient_id",
    ):
        read_manifest(csv, salt=SALT)
    dup = _write_csv(
        tmp_path, [{"path": "a.png", "label": 1, "patient_id": "1", "study_id": "s"}] * 2, "dup.csv"
    )
    with pytest.raises(InputDataError, match="2 duplicate path"):
        read_manifest(dup, salt=SALT)
    with pytest.raises(InputDataError, match="cannot read the manifest CSV"):
        read_manifest(tmp_path / "absent.csv", salt=SALT)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputDataError, match="cannot read the manifest CSV"):
        read_manifest(tmp_path / "empty.csv", salt=SALT)
    with pytest.raises(MedlensError, match="salt"):
        read_manifest(csv, salt="")


def test_scan_dicom_folder_no_identifier_leaves(tmp_path, write_dicom_file, markers):
    write_dicom, MARKERS = write_dicom_file, markers
    folder = tmp_path / "scans"
    (folder / "deep").mkdir(parents=True)
    px = np.zeros((8, 8), np.uint16)
    write_dicom(
        folder / "a.dcm",
        px,
        PatientSex="F",
        PatientAge="045Y",
        ViewPosition="PA",
        BodyPartExamined="CHEST",
        StudyDate="20200101",
        **MARKERS,
    )
    write_dicom(
        folder / "deep" / "b.dcm", px, PatientSex="M", StudyDate="20200101", **MARKERS
    )  # age from birth date: 50
    write_dicom(folder / "c.dcm", px, **{**MARKERS, "PatientID": "", "InstitutionName": "Other"})
    write_dicom(folder / "sr.dcm", px, sop_class=BasicTextSRStorage, **MARKERS)
    del_pixels = folder / "sr.dcm"
    import pydicom

    ds = pydicom.dcmread(del_pixels)
    for kw in ("PixelData", "Rows", "Columns"):
        delattr(ds, kw)
    ds.save_as(del_pixels)
    (folder / "notes.txt").write_text("not an image ZZMARKER")

    m = scan_dicom_folder(folder, salt=SALT, site_names={"Other": "site-B"})
    t = m.table
    assert len(t) == 3
    assert list(t.columns) == [
        "case_id",
        "path",
        "patient_key",
        "study_key",
        "label",
        "site",
        "manufacturer",
        "model_name",
        "sex",
        "age_band",
        "modality",
        "view_position",
        "body_part",
    ]
    by_name = {
        p.split("/")[-1]: row for p, row in zip(t["path"], t.to_dict("records"), strict=False)
    }
    assert by_name["a.dcm"]["age_band"] == "40-59" and by_name["a.dcm"]["sex"] == "F"
    assert by_name["b.dcm"]["age_band"] == "40-59"  # 1970-01-01 -> 2020-01-01 is 50
    assert by_name["a.dcm"]["patient_key"] == pseudonymize("ZZMARKER-ID", salt=SALT)
    assert by_name["a.dcm"]["site"] == pseudonymize("ZZMARKER HOSPITAL", salt=SALT, prefix="site-")
    assert by_name["c.dcm"]["site"] == "site-B" and pd.isna(by_name["c.dcm"]["patient_key"])
    assert t["label"].isna().all()
    skipped = {s.path.split("/")[-1]: s.reason for s in m.skipped}
    assert set(skipped) == {"sr.dcm", "notes.txt"}
    assert "no pixel data (SOP class Basic Text SR Storage)" in skipped["sr.dcm"]
    assert "not a DICOM file" in skipped["notes.txt"]

    csv = m.write_csv(tmp_path / "manifest.csv")
    skipped_csv = m.write_skipped_csv(tmp_path / "skipped.csv")
    texts = [t.to_csv(), repr(m), repr(t), csv.read_text(), skipped_csv.read_text(), str(m.skipped)]
    for marker in MARKERS.values():
        for text in texts:
            assert marker not in text
            assert marker.split("^")[0] not in text
    # the CSV written from a folder scan reads back as a manifest once labelled
    back = pd.read_csv(csv)
    assert back["case_id"].tolist() == t["case_id"].tolist()


def test_scan_dicom_folder_nothing_readable(tmp_path):
    (tmp_path / "x.txt").write_text("ZZMARKER^NAME")
    with pytest.raises(
        InputDataError, match=r"no readable DICOM image in the folder \(1 file\(s\) skipped"
    ) as info:
        scan_dicom_folder(tmp_path, salt=SALT)
    assert "ZZMARKER" not in str(info.value)
    with pytest.raises(InputDataError, match="not a folder"):
        scan_dicom_folder(tmp_path / "x.txt", salt=SALT)


def test_error_messages_carry_no_identifier(tmp_path, write_dicom_file, markers):
    write_dicom, MARKERS = write_dicom_file, markers
    path = write_dicom(tmp_path / "t.dcm", np.zeros((8, 8), np.uint16), **MARKERS)
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(MedlensError) as info:
        read_image(path)
    assert "ZZMARKER" not in str(info.value)
