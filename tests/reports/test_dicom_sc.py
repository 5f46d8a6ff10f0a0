"""DICOM Secondary Capture overlays: references, identity modes, determinism, dciodvfy."""

from __future__ import annotations

import copy
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.uid import SecondaryCaptureImageStorage

from medlens import InputDataError, MedlensError
from medlens.reports import SourceReference, scan_for_identifiers, write_secondary_capture
from medlens.reports._dicom_sc import DEIDENTIFICATION_METHOD, DEIDENTIFICATION_METHOD_CODES

PLANTED_KEYS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionAddress",
    "InstitutionName",
    "ReferringPhysicianName",
)


def _rgb(seed=0, shape=(24, 40)):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _dciodvfy_errors(require_tool, path):
    exe = require_tool("dciodvfy")
    res = subprocess.run([exe, str(path)], capture_output=True, text=True)
    out = res.stdout + res.stderr
    return [line for line in out.splitlines() if line.startswith("Error")], out


def _dciodvfy_warnings(report):
    return [line for line in report.splitlines() if line.startswith("Warning")]


#: The only warnings a de-identified object keeps: PS3.15 empties these type 2 attributes
#: (a dummy date or study id would be a fabricated value); dciodvfy notes that a DICOMDIR
#: could not index them.
DEID_DICOMDIR_WARNINGS = [
    f"Warning - Missing attribute or value that would be needed to build DICOMDIR - {name}"
    for name in ("Study Date", "Study Time", "Study ID")
]


def _source_uids(ds):
    return [
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.SOPInstanceUID),
        str(ds.file_meta.MediaStorageSOPInstanceUID),
    ]


def test_deidentified_overlay_references_source_and_hides_identity(
    tmp_path, source_dataset, require_tool
):
    source_dataset.BodyPartExamined = "CHEST"
    img = _rgb()
    out = write_secondary_capture(
        tmp_path / "overlay.dcm",
        img,
        source=source_dataset,
        series_description="medlens Grad-CAM overlay",
        pseudonym="case-0007",
        created=0,
    )
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == SecondaryCaptureImageStorage
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    # a new pseudonymous study: a PACS never sees this patient inside the source's study
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert len(set(uids)) == 3 and not set(uids) & set(_source_uids(source_dataset))
    assert all(u.startswith("2.25.") and len(u) <= 64 for u in uids)
    for seq in (ds.SourceImageSequence, ds.ReferencedImageSequence):
        assert len(seq) == 1  # the source image only by a remapped (salted hash) UID
        assert seq[0].ReferencedSOPInstanceUID.startswith("2.25.")
        assert seq[0].ReferencedSOPInstanceUID not in _source_uids(source_dataset)
        assert seq[0].ReferencedSOPClassUID == source_dataset.SOPClassUID
    assert ds.SourceImageSequence[0].PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    assert ds.SeriesDescription == "medlens Grad-CAM overlay" and ds.Modality == "OT"
    assert ds.PatientName.family_name == "case-0007" and ds.PatientID == "case-0007"
    for key in ("PatientBirthDate", "AccessionNumber", "ReferringPhysicianName"):
        assert ds.data_element(key).value == "", key
    for key in ("StudyDate", "StudyTime", "StudyID"):  # type 2: present and empty
        assert key in ds and ds.data_element(key).value == "", key
    assert ds.PatientIdentityRemoved == "YES"
    assert list(ds.DeidentificationMethod) == list(DEIDENTIFICATION_METHOD)
    assert [
        (c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning)
        for c in ds.DeidentificationMethodCodeSequence
    ] == list(DEIDENTIFICATION_METHOD_CODES)
    assert list(DEIDENTIFICATION_METHOD_CODES) == [
        ("113100", "DCM", "Basic Application Level Confidentiality Profile"),
        ("113105", "DCM", "Clean Descriptors Option"),
    ]
    assert ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3
    np.testing.assert_array_equal(ds.pixel_array, img)
    assert list(ds.PatientOrientation) == ["L", "F"]
    raw = out.read_bytes()
    for key in PLANTED_KEYS:
        assert str(source_dataset.data_element(key).value).encode() not in raw, key
    markers = [str(source_dataset.data_element(k).value) for k in PLANTED_KEYS]
    markers += [*_source_uids(source_dataset), "20240101"]  # uids, study date
    for marker in markers:
        assert marker.encode() not in raw, marker
    assert ds.StudyID == ""  # the source's is "S1" (too short for the scanner)
    assert scan_for_identifiers(tmp_path, markers) == []
    assert ds.BodyPartExamined == "CHEST" and "Laterality" not in ds  # unpaired: absent
    errors, report = _dciodvfy_errors(require_tool, out)
    assert errors == [], report
    assert _dciodvfy_warnings(report) == DEID_DICOMDIR_WARNINGS, report


def test_with_identifiers_copies_patient_module_for_pacs_filing(
    tmp_path, source_dicom, require_tool
):
    src = pydicom.dcmread(source_dicom)
    src.BodyPartExamined = "CHEST"
    out = write_secondary_capture(
        tmp_path / "o.dcm",
        _rgb(),
        source=src,
        series_description="medlens SHAP overlay",
        include_identifiers=True,
        created=0,
    )
    ds = pydicom.dcmread(out)
    for key in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "ReferringPhysicianName",
    ):
        assert ds.data_element(key).value == src.data_element(key).value, key
    assert "PatientIdentityRemoved" not in ds and "DeidentificationMethodCodeSequence" not in ds
    assert "InstitutionAddress" not in ds  # not part of what a PACS needs to file the object
    # the source's study, with references, so the PACS shows the overlay beside the original
    assert ds.StudyInstanceUID == src.StudyInstanceUID
    assert ds.SeriesInstanceUID not in (src.SeriesInstanceUID, "")
    assert ds.SOPInstanceUID != src.SOPInstanceUID
    for seq in (ds.SourceImageSequence, ds.ReferencedImageSequence):
        assert [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in seq] == [
            (src.SOPClassUID, src.SOPInstanceUID)
        ]
    errors, report = _dciodvfy_errors(require_tool, out)
    assert errors == [], report
    assert _dciodvfy_warnings(report) == [], report


def test_with_identifiers_missing_study_attributes_are_present_and_empty(
    tmp_path, source_dataset, require_tool
):
    for key in ("StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        source_dataset.pop(key, None)
    source_dataset.BodyPartExamined = "CHEST"
    out = write_secondary_capture(
        tmp_path / "o.dcm",
        _rgb(),
        source=source_dataset,
        series_description="overlay",
        include_identifiers=True,
        created=0,
    )
    ds = pydicom.dcmread(out)
    for key in ("StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        assert key in ds and ds.data_element(key).value == "", key
    errors, report = _dciodvfy_errors(require_tool, out)
    assert errors == [], report


@pytest.mark.parametrize(
    ("body_part", "laterality", "expected", "warned"),
    [
        ("CHEST", None, None, False),  # unpaired: Laterality absent
        ("BREAST", "L", "L", False),  # paired and known: its value
        (None, "R", "R", False),
        (None, None, "", True),  # nothing known: empty is what the standard asks for
    ],
)
def test_laterality_follows_type_2c_rule(
    tmp_path, source_dataset, require_tool, body_part, laterality, expected, warned
):
    if body_part:
        source_dataset.BodyPartExamined = body_part
    if laterality:
        source_dataset.Laterality = laterality
    out = write_secondary_capture(
        tmp_path / "o.dcm",
        _rgb(),
        source=source_dataset,
        series_description="overlay",
        include_identifiers=True,
        created=0,
    )
    ds = pydicom.dcmread(out)
    assert ds.get("Laterality") == expected
    errors, report = _dciodvfy_errors(require_tool, out)
    assert errors == [], report
    lat_warnings = [w for w in _dciodvfy_warnings(report) if "<Laterality>" in w]
    # the one unavoidable warning: dciodvfy cannot know that an empty value means "unknown"
    assert bool(lat_warnings) is warned, report


def test_deterministic_uids_and_bytes(tmp_path, source_dataset):
    kw = dict(
        source=source_dataset,
        series_description="medlens Grad-CAM overlay",
        pseudonym="case-0007",
        created=1_700_000_000,
    )
    a = write_secondary_capture(tmp_path / "a.dcm", _rgb(0), **kw)
    b = write_secondary_capture(tmp_path / "b.dcm", _rgb(0), **kw)
    c = write_secondary_capture(tmp_path / "c.dcm", _rgb(1), instance_number=2, **kw)
    d = write_secondary_capture(
        tmp_path / "d.dcm", _rgb(0), **{**kw, "series_description": "medlens LIME overlay"}
    )
    e = write_secondary_capture(tmp_path / "e.dcm", _rgb(0), **{**kw, "uid_salt": "secret"})
    f = write_secondary_capture(tmp_path / "f.dcm", _rgb(0), **{**kw, "pseudonym": "case-0008"})
    assert a.read_bytes() == b.read_bytes()
    da, dc, dd, de, df = (pydicom.dcmread(p) for p in (a, c, d, e, f))
    # one pseudonymous study per case key (and salt), one series per description
    assert da.StudyInstanceUID == dc.StudyInstanceUID == dd.StudyInstanceUID
    assert len({da.StudyInstanceUID, de.StudyInstanceUID, df.StudyInstanceUID}) == 3
    ref_uids = {x.SourceImageSequence[0].ReferencedSOPInstanceUID for x in (da, dc, de, df)}
    assert len(ref_uids) == 3  # same source + key -> same remapped reference
    assert da.SeriesInstanceUID == dc.SeriesInstanceUID != dd.SeriesInstanceUID
    assert da.SOPInstanceUID != dc.SOPInstanceUID
    assert da.SOPInstanceUID.startswith("2.25.") and len(da.SOPInstanceUID) <= 64
    assert da.ContentDate == "20231114" and da.ContentTime == "221320"
    assert da.InstanceCreationDate == "20231114"
    names = ["a.dcm", "b.dcm", "c.dcm", "d.dcm", "e.dcm", "f.dcm"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_source_reference_without_dataset(tmp_path, source_dataset, require_tool):
    ref = SourceReference(
        study_instance_uid=source_dataset.StudyInstanceUID,
        series_instance_uid=source_dataset.SeriesInstanceUID,
        sop_instance_uid=source_dataset.SOPInstanceUID,
        sop_class_uid=source_dataset.SOPClassUID,
    )
    assert "ZQX" not in repr(SourceReference.from_dataset(source_dataset))
    out = write_secondary_capture(
        tmp_path / "r.dcm",
        _rgb(),
        source=ref,
        series_description="overlay",
        pseudonym="case-1",
        created=0,
    )
    ds = pydicom.dcmread(out)
    assert ds.StudyInstanceUID != ref.study_instance_uid and ds.PatientOrientation == ""
    errors, report = _dciodvfy_errors(require_tool, out)
    assert errors == [], report


def test_bad_input(tmp_path, source_dataset):
    kw = dict(source=source_dataset, series_description="overlay", pseudonym="case-1")
    p = tmp_path / "x.dcm"
    with pytest.raises(
        InputDataError, match=r"shape \(H, W, 3\) and dtype uint8; got shape \(8, 8\)"
    ):
        write_secondary_capture(p, np.zeros((8, 8), np.uint8), **kw)
    with pytest.raises(InputDataError, match="dtype float64"):
        write_secondary_capture(p, np.zeros((8, 8, 3)), **kw)
    with pytest.raises(InputDataError, match="needs a pseudonym"):
        write_secondary_capture(p, _rgb(), **{**kw, "pseudonym": None})
    with pytest.raises(InputDataError, match="pseudonym equals the source's PatientID"):
        write_secondary_capture(p, _rgb(), **{**kw, "pseudonym": source_dataset.PatientID})
    with pytest.raises(MedlensError, match="'series_description' parameter"):
        write_secondary_capture(p, _rgb(), **{**kw, "series_description": "x" * 65})
    with pytest.raises(MedlensError, match="'series_number' parameter"):
        write_secondary_capture(p, _rgb(), series_number=0, **kw)
    with pytest.raises(MedlensError, match="'uid_salt' parameter"):
        write_secondary_capture(p, _rgb(), uid_salt=1, **kw)  # type: ignore[arg-type]
    with pytest.raises(MedlensError, match="'include_identifiers' parameter"):
        write_secondary_capture(p, _rgb(), include_identifiers="yes", **kw)  # type: ignore[arg-type]
    with pytest.raises(InputDataError, match="the pseudonym must be 1-64 characters"):
        write_secondary_capture(p, _rgb(), **{**kw, "pseudonym": "case 1/Müller"})
    broken = copy.deepcopy(source_dataset)
    del broken.StudyInstanceUID
    with pytest.raises(InputDataError, match="the source has no StudyInstanceUID"):
        write_secondary_capture(p, _rgb(), **{**kw, "source": broken})
    with pytest.raises(MedlensError, match="'ds' parameter of SourceReference.from_dataset"):
        write_secondary_capture(p, _rgb(), **{**kw, "source": {"StudyInstanceUID": "1.2"}})
    with pytest.raises(MedlensError, match="'sop_class_uid' parameter of SourceReference"):
        SourceReference("1.2", "1.3", "1.4", "")
    assert not p.exists()


def test_non_ascii_identity_keeps_its_character_set(tmp_path, source_dataset, require_tool):
    source_dataset.SpecificCharacterSet = "ISO_IR 192"
    source_dataset.PatientName = "Müller^Jürgen"
    out = write_secondary_capture(
        tmp_path / "u.dcm",
        _rgb(),
        source=source_dataset,
        series_description="overlay",
        include_identifiers=True,
        created=0,
    )
    ds = pydicom.dcmread(out)
    assert ds.SpecificCharacterSet == "ISO_IR 192" and ds.PatientName == "Müller^Jürgen"
    errors, report = _dciodvfy_errors(require_tool, out)
    assert errors == [], report
