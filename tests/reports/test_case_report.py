"""Clinician case report: one page per case, marks untrusted maps, deterministic bytes."""

from __future__ import annotations

import io
import subprocess

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image
from pypdf import PdfReader

from medlens import InputDataError, MedlensError
from medlens.reports import (
    CASE_CAVEATS,
    CaseInput,
    CaseMap,
    render_case_reports,
    render_heatmap_overlay,
    scan_for_identifiers,
    write_case_reports,
)
from medlens.reports._case_report import TRUSTED_LABEL, UNCHECKED_LABEL, UNTRUSTED_LABEL


def _scan(seed=0, size=32):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    return np.exp(
        -((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (size * 4)
    ) + 0.05 * rng.standard_normal((size, size))


def _case(i, *, n_maps=3, agreement=0.8):
    rng = np.random.default_rng(100 + i)
    kinds = [True, False, None]
    maps = [
        CaseMap(
            f"Method {k}",
            rng.random((8, 8)),
            kinds[k % 3],
            "randomisation check failed" if kinds[k % 3] is False else "",
        )
        for k in range(n_maps)
    ]
    return CaseInput(
        case_id=f"case-{i:04d}",
        scan=_scan(i),
        score=0.2 + 0.3 * i,
        threshold=0.5,
        predicted_class="positive" if 0.2 + 0.3 * i >= 0.5 else "negative",
        maps=maps,
        agreement=agreement,
        threshold_source="locked on tuning split (Youden)",
        model_name="tiny-cnn",
    )


def _pages(data):
    return [" ".join(p.extract_text().split()) for p in PdfReader(io.BytesIO(data)).pages]


def test_one_page_per_case_with_its_own_content(tmp_path):
    cases = [_case(0), _case(1, agreement=0.3), _case(2, n_maps=7)]
    path = write_case_reports(tmp_path / "cases.pdf", cases, report_id="MLR-CASES")
    data = path.read_bytes()
    pages = _pages(data)
    assert len(pages) == 3
    for i, text in enumerate(pages):
        assert f"case-{i:04d}" in text
        assert all(f"case-{j:04d}" not in text for j in range(3) if j != i)
        assert f"page {i + 1} of 3" in text and "Report MLR-CASES" in text
        assert "not where disease is" in text
        assert UNTRUSTED_LABEL in text and TRUSTED_LABEL in text and UNCHECKED_LABEL in text
        assert "Not evidence:" in text
    assert "0.200 (below the threshold 0.500)" in pages[0]
    assert "0.500 (at or above the threshold 0.500)" in pages[1]
    assert "The methods disagree" in pages[1] and "The methods disagree" not in pages[0]
    assert "Method 6" in pages[2], "seven maps still fit on the single page"
    for caveat in CASE_CAVEATS:
        assert caveat.split()[1] in " ".join(pages)
    reader = PdfReader(io.BytesIO(data))
    assert [o.title for o in reader.outline] == ["case-0000", "case-0001", "case-0002"]
    assert [reader.get_destination_page_number(o) for o in reader.outline] == [0, 1, 2]


def test_deterministic_bytes_and_qpdf(tmp_path, require_tool):
    cases = [_case(0), _case(1)]
    a = render_case_reports(cases, report_id="MLR-CASES")
    b = render_case_reports([_case(0), _case(1)], report_id="MLR-CASES")
    assert a == b
    (tmp_path / "c.pdf").write_bytes(a)
    qpdf = require_tool("qpdf")
    res = subprocess.run([qpdf, "--check", str(tmp_path / "c.pdf")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


def test_png_overlay_input_and_no_identifiers(tmp_path):
    png = render_heatmap_overlay(_scan(), np.ones((4, 4)))
    case = CaseInput(
        case_id="7",
        scan=_scan()[None],
        score=3.2,
        threshold=1.0,
        predicted_class="positive",
        maps=[CaseMap("Grad-CAM", png, True)],
    )
    out = write_case_reports(tmp_path / "c.pdf", [case], report_id="MLR-X")
    text = _pages(out.read_bytes())[0]
    assert "Case 7" in text and "Method agreement" not in text
    assert scan_for_identifiers(tmp_path, ["ZQXMARKER^HELGA", "MRN-ZQX-778899"]) == []


def test_render_heatmap_overlay_matches_hand_blend():
    scan = np.linspace(0, 1, 16).reshape(4, 4)
    heat = np.zeros((4, 4))
    heat[1, 2] = -2.0  # absolute value is shown
    heat[3, 3] = 1.0
    png = render_heatmap_overlay(scan, heat, alpha=0.5, cmap="viridis")
    assert png == render_heatmap_overlay(scan, heat, alpha=0.5, cmap="viridis")
    out = np.asarray(Image.open(io.BytesIO(png)))
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    grey = np.round(scan * 255)
    lut = np.asarray(colormaps["viridis"](np.linspace(0, 1, 256)))[:, :3] * 255
    expected_peak = np.round(grey[1, 2] * 0.5 + lut[255] * 0.5)
    np.testing.assert_array_equal(out[1, 2], expected_peak)
    # colour scale clipped at the 99th percentile of |map| (1.85 here): 2.0 saturates,
    # 1.0 sits at 1 / 1.85 of the scale
    v = np.percentile(np.abs(heat), 99)
    assert v == pytest.approx(1.85)
    h = 1.0 / v
    expected_half = np.round(grey[3, 3] * (1 - 0.5 * h) + lut[int(np.round(h * 255))] * 0.5 * h)
    np.testing.assert_array_equal(out[3, 3], expected_half)
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
    assert (out[0, 1] == grey[0, 1]).all()  # zero attribution leaves the scan untouched
    small = render_heatmap_overlay(np.zeros((16, 16)), np.ones((4, 4)))
    assert np.asarray(Image.open(io.BytesIO(small))).shape == (16, 16, 3)


def test_bad_input(tmp_path):
    good = _case(0)
    with pytest.raises(InputDataError, match="score must be a finite number"):
        render_case_reports([CaseInput(**{**good.__dict__, "score": float("nan")})], report_id="R")
    with pytest.raises(InputDataError, match="threshold must be a finite number"):
        render_case_reports([CaseInput(**{**good.__dict__, "threshold": "high"})], report_id="R")
    with pytest.raises(
        InputDataError, match=r"scan must be a finite 2D array \(H, W\); got shape \(2, 4, 4\)"
    ):
        render_case_reports(
            [CaseInput(**{**good.__dict__, "scan": np.zeros((2, 4, 4))})], report_id="R"
        )
    with pytest.raises(InputDataError, match=r"duplicate case ids \['case-0000'\]"):
        render_case_reports([good, good], report_id="R")
    with pytest.raises(MedlensError, match="at least one CaseInput"):
        render_case_reports([], report_id="R")
    with pytest.raises(MedlensError, match="CaseInput objects; item 0"):
        render_case_reports([{"case_id": "x"}], report_id="R")
    with pytest.raises(InputDataError, match="case_id must be a non-empty pseudonymous key"):
        render_case_reports([CaseInput(**{**good.__dict__, "case_id": ""})], report_id="R")
    with pytest.raises(InputDataError, match="predicted_class must be a non-empty str"):
        render_case_reports([CaseInput(**{**good.__dict__, "predicted_class": ""})], report_id="R")
    with pytest.raises(MedlensError, match="'maps' parameter"):
        render_case_reports([CaseInput(**{**good.__dict__, "maps": ["x"]})], report_id="R")
    with pytest.raises(InputDataError, match="heatmap for 'IG' must be a finite 2D array"):
        render_heatmap_overlay(np.zeros((4, 4)), np.full((4, 4), np.nan), method="IG")
    with pytest.raises(MedlensError, match="'alpha' parameter"):
        render_heatmap_overlay(np.zeros((4, 4)), np.ones((4, 4)), alpha=0)
    with pytest.raises(MedlensError, match="'cmap' parameter"):
        render_heatmap_overlay(np.zeros((4, 4)), np.ones((4, 4)), cmap="rainbowz")
    with pytest.raises(MedlensError, match="'report_id' parameter"):
        write_case_reports(tmp_path / "x.pdf", [good], report_id="")
    assert not (tmp_path / "x.pdf").exists()


def test_identifiers_are_shown_next_to_the_key_only_when_given(tmp_path):
    import dataclasses

    from medlens.reports._case_report import (
        IDENTIFIER_MISSING,
        SUBJECT_IDENTIFIED,
        SUBJECT_PSEUDONYMOUS,
    )

    markers = ["ZQXMARKER^HELGA", "MRN-ZQX-778899"]
    plain = write_case_reports(tmp_path / "c.pdf", [_case(0)], report_id="MLR-X")
    assert scan_for_identifiers(plain, markers) == []
    assert PdfReader(str(plain)).metadata["/Subject"] == SUBJECT_PSEUDONYMOUS
    named_case = dataclasses.replace(
        _case(0),
        identifiers={"patient_id": "MRN-ZQX-778899", "patient_name": "ZQXMARKER^HELGA"},
        identifiers_requested=True,
    )
    missing = dataclasses.replace(_case(1), identifiers={}, identifiers_requested=True)
    named = write_case_reports(tmp_path / "n.pdf", [named_case, missing], report_id="MLR-X")
    pages = _pages(named.read_bytes())
    assert "Pseudonymous key case-0000 Patient ID (DICOM) MRN-ZQX-778899" in pages[0]
    assert "Patient name (DICOM) ZQXMARKER^HELGA" in pages[0]
    assert f"Patient ID (DICOM) {IDENTIFIER_MISSING}" in pages[1]
    assert PdfReader(str(named)).metadata["/Subject"] == SUBJECT_IDENTIFIED
    assert {f.marker for f in scan_for_identifiers(named, markers)} == set(markers)


def _cards():
    from medlens.xai._trust import trust_cards

    return trust_cards(
        ["a", "b", "c", "d"],
        "gradcam",
        randomisation_spearman=[0.9, 0.0, 0.0, 0.0],
        faithfulness_gap=[0.5, 0.5, 0.1, 0.5],
        inside_anatomy_share=[0.5, 0.05, 0.6, 0.9],
        anatomy_fraction=[0.3, 0.3, 0.3, 0.3],
        anatomy_region=["lesion", "anatomy", "lesion", "lesion"],
        shortcut_region_ratio=[1.0, 5.0, 1.0, 4.2],
        shortcut_region=["corner_top_left"] * 4,
    )


def test_failed_trust_reasons_quote_the_failed_checks_only():
    from medlens.reports import failed_trust_reasons

    rnd, both, faith, shortcut = _cards()
    assert failed_trust_reasons(rnd) == (rnd.reasons[0],)
    assert "barely changes" in rnd.reasons[0]
    # low share on the anatomy and a shortcut region: both reasons of the anatomy check
    assert failed_trust_reasons(both) == (both.reasons[3], both.reasons[4])
    assert both.reasons[3].startswith("only 5%") and "corner_top_left" in both.reasons[4]
    assert failed_trust_reasons(faith.to_dict()) == (faith.reasons[1],)
    # concentrated on the lesion but leaning on the corner: only the shortcut reason
    assert failed_trust_reasons(shortcut) == (shortcut.reasons[4],)
    assert "4.2x" in shortcut.reasons[4] or "4.2 times" in shortcut.reasons[4]
    ok = _cards()[3].to_dict() | {"anatomy": "pass", "trusted": True}
    assert failed_trust_reasons(ok) == ()
    with pytest.raises(MedlensError, match="'card' parameter of failed_trust_reasons"):
        failed_trust_reasons({"anatomy": "fail"})
    with pytest.raises(MedlensError, match="'card' parameter of failed_trust_reasons"):
        failed_trust_reasons("gradcam")


def test_failed_map_quotes_its_reasons_and_caveat_names_all_checks():
    from medlens.reports import failed_trust_reasons

    _, both, _, _ = _cards()
    reasons = failed_trust_reasons(both)
    case = CaseInput(
        case_id="case-0042",
        scan=_scan(),
        score=0.7,
        threshold=0.5,
        predicted_class="positive",
        maps=[
            CaseMap("gradcam", np.ones((8, 8)), False, "failed: anatomy", reasons),
            CaseMap("saliency", np.ones((8, 8)), True, "", ("never shown for a trusted map",)),
        ],
    )
    text = _pages(render_case_reports([case], report_id="MLR-R"))[0]
    assert "sanity, faithfulness, anatomy and shortcut-region checks" in " ".join(CASE_CAVEATS)
    assert "sanity, faithfulness, anatomy and shortcut-region checks" in text
    for reason in reasons:
        assert text.count(reason) == 2, reason  # under the map and in the Not-evidence line
    assert f"Not evidence: gradcam ({'; '.join(reasons)}) failed the trust checks" in text
    assert "never shown for a trusted map" not in text
