"""The identifier scan finds planted markers in every kind of output, and nothing in clean files."""

from __future__ import annotations

import copy
import io
import json

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medlens import InputDataError, MedlensError
from medlens.reports import (
    Finding,
    heading,
    markers_from_dataset,
    paragraph,
    render_pdf,
    scan_for_identifiers,
)

MARKER = "ZQXMARKER^HELGA"
MARKERS = [MARKER, "MRN-ZQX-778899", "Zqxmärker"]


def _png(info: PngInfo | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _where(findings, path_part):
    return sorted({f.where for f in findings if path_part in f.path})


def test_finds_markers_in_every_kind(tmp_path, source_dataset):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text(
        "patient zqxmarker helga was scanned\n"
    )  # ^ written as space, other case
    (out / "table.csv").write_text("case,id\ncase-1,MRN-ZQX-778899\n")
    (out / "esc.json").write_text(
        json.dumps({"name": "Zqxmärker"}, ensure_ascii=True)
    )  # only \u00e4 in bytes
    (out / "key.json").write_text(json.dumps({"MRN-ZQX-778899": 1}))
    (out / "utf16.bin").write_bytes("x MRN-ZQX-778899 y".encode("utf-16-le"))
    (out / "page.pdf").write_bytes(
        render_pdf([paragraph("Seen: MRN-ZQX-778899")], report_id="R", title="clean")
    )
    (out / "meta.pdf").write_bytes(
        render_pdf([paragraph("clean text")], report_id="R", title="Report for Zqxmärker")
    )
    (out / "outline.pdf").write_bytes(
        render_pdf([heading("ZQXMARKER, HELGA", 0), paragraph("x")], report_id="R", title="T")
    )
    info = PngInfo()
    info.add_text("Comment", "MRN-ZQX-778899")
    (out / "text.png").write_bytes(_png(info))
    info = PngInfo()
    info.add_text("Author", "MRN-ZQX-778899", zip=True)
    (out / "ztxt.png").write_bytes(_png(info))
    info = PngInfo()
    info.add_itxt("Description", "Zqxmärker", zip=True)
    (out / "itxt.png").write_bytes(_png(info))
    nested = copy.deepcopy(source_dataset)
    for key in ("PatientName", "PatientID"):
        setattr(nested, key, "anon")
    item = Dataset()
    item.PatientID = "MRN-ZQX-778899"
    nested.OtherPatientIDsSequence = Sequence([item])
    nested.save_as(out / "nested.dcm", enforce_file_format=True)
    source_dataset.save_as(out / "source.dcm", enforce_file_format=True)
    (out / "ZQXMARKER^HELGA").mkdir()
    (out / "ZQXMARKER^HELGA" / "fine.txt").write_text("nothing here")
    (out / "mrn-zqx-778899_overlay.png").write_bytes(_png())

    findings = scan_for_identifiers(out, MARKERS)
    assert findings == sorted(findings) and all(isinstance(f, Finding) for f in findings)
    assert "text (utf-8)" in _where(findings, "notes.txt")
    assert _where(findings, "table.csv") == ["bytes (utf-8)", "text (utf-8)"]
    assert _where(findings, "esc.json") == ["json value at /name"]
    assert _where(findings, "key.json") == ["bytes (utf-8)", "json key at /"]
    assert _where(findings, "utf16.bin") == ["bytes (utf-16)"]
    assert "pdf page 1 text" in _where(findings, "page.pdf")
    assert "pdf metadata /Title" in _where(findings, "meta.pdf")
    assert "pdf outline" in _where(findings, "outline.pdf")
    assert "png tEXt 'Comment'" in _where(findings, "text.png")
    assert _where(findings, "ztxt.png") == ["png zTXt 'Author'"]  # compressed: not in raw bytes
    assert _where(findings, "itxt.png") == ["png iTXt 'Description'"]
    assert any("dicom (0010,1002)" in w or "PatientID" in w for w in _where(findings, "nested.dcm"))
    source_hits = _where(findings, "source.dcm")
    assert (
        "dicom (0010,0010) PatientName" in source_hits
        and "dicom (0010,0020) PatientID" in source_hits
    )
    assert [f for f in findings if f.path.endswith("ZQXMARKER^HELGA") and f.where == "file name"]
    assert [f for f in findings if f.path.endswith("overlay.png") and f.where == "file name"]
    assert not [f for f in findings if f.path.endswith("fine.txt")]
    assert (
        "MRN-ZQX-778899" in str(findings[0])
        or MARKER in str(findings[0])
        or "Zqx" in str(findings[0])
    )


def test_clean_outputs_have_no_findings(tmp_path):
    (tmp_path / "report.pdf").write_bytes(
        render_pdf(
            [heading("Results", 0), paragraph("case-0001 score 0.93")],
            report_id="MLR-1",
            title="Evidence",
        )
    )
    (tmp_path / "e.json").write_text(json.dumps({"case": "case-0001", "auc": 0.9}))
    (tmp_path / "t.csv").write_text("case,score\ncase-0001,0.9\n")
    info = PngInfo()
    info.add_text("Comment", "case-0001")
    (tmp_path / "o.png").write_bytes(_png(info))
    ds = Dataset()
    ds.PatientName, ds.PatientID = "case-0001", "case-0001"
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "1.2.3"
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(tmp_path / "o.dcm", enforce_file_format=True)
    assert scan_for_identifiers(tmp_path, MARKERS) == []
    assert scan_for_identifiers([tmp_path / "o.png", tmp_path / "e.json"], MARKERS) == []


def test_markers_from_dataset(source_dataset):
    markers = markers_from_dataset(source_dataset)
    for expected in (
        "ZQXMARKER^HELGA",
        "ZQXMARKER",
        "HELGA",
        "MRN-ZQX-778899",
        "ACC-ZQX-4455",
        "19511123",
        "1951-11-23",
        "17 Zqxmarker Lane, Springfield",
        "Zqxmarker General Hospital",
        "ZQXDOC^WALTER",
    ):
        assert expected in markers
    assert len(markers) == len(set(markers))
    with pytest.raises(MedlensError, match="'ds' parameter of markers_from_dataset"):
        markers_from_dataset({"PatientName": "x"})


def test_bad_input(tmp_path):
    with pytest.raises(InputDataError, match="path does not exist"):
        scan_for_identifiers(tmp_path / "missing", ["abcd"])
    with pytest.raises(
        MedlensError,
        match="'markers' parameter of scan_for_identifiers must be strings of at least 3",
    ):
        scan_for_identifiers(tmp_path, ["ab"])
    with pytest.raises(MedlensError, match="at least one marker"):
        scan_for_identifiers(tmp_path, [])
    assert scan_for_identifiers(tmp_path, "abcd") == []
