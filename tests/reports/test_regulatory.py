"""The regulatory PDF: text equals evidence.json, valid PDF, deterministic, honest sections."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pypdf import PdfReader

from medlens._errors import EvidenceError, InputDataError, MedlensError
from medlens.reports import provenance, read_bundle, write_bundle
from medlens.reports._regulatory import (
    GUIDELINE_MAP,
    NO_VALIDATION,
    fmt,
    fmt_ci,
    regulatory_story,
    write_regulatory_report,
)
from medlens.reports._report_figures import (
    FOREST_EMPTY,
    ROC_LENGTHS,
    ROC_ONE_CLASS,
    flow_figure,
    forest_figure,
    reliability_figure,
    roc_figure,
)


def _evidence() -> dict:
    from medlens.validation import evaluate, parse_plan
    from medlens.validation._evidence import to_evidence

    rng = np.random.default_rng(7)
    n = 160
    patient = rng.integers(0, 60, n)
    label = (rng.random(n) < 0.35).astype(int)
    score = np.clip(0.55 * label + rng.normal(0.25, 0.2, n), 0.0, 1.0)
    df = pd.DataFrame(
        {
            "case_id": [f"case-{i:04d}" for i in range(n)],
            "patient_key": [f"p{p:03d}" for p in patient],
            "label": label,
            "score": score,
            "site": [f"site_{'abc'[p % 3]}" for p in patient],
            "sex": ["F" if p % 2 else "M" for p in patient],
        }
    )
    plan = parse_plan(
        {
            "version": 1,
            "intended_use": "Synthetic test of the report layer.",
            "analysis": {
                "bootstrap": {"replicates": 200, "seed": 1},
                "calibration": {"null_simulations": 100},
            },
            "primary_endpoints": [
                {"metric": "sensitivity", "operator": ">=", "goal": 0.7},
                {"metric": "specificity", "operator": ">=", "goal": 0.99},
            ],
            "secondary_endpoints": [{"metric": "brier", "operator": "<=", "goal": 0.2}],
        }
    )
    import warnings

    from medlens.validation import UndefinedMetricWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        ev = to_evidence(evaluate(df, plan))
    return ev, df


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ev, df = _evidence()
    folder = tmp_path_factory.mktemp("bundle")
    cases = {
        "scores": {
            "case_id": list(df["case_id"]),
            "label": [int(v) for v in df["label"]],
            "score": [float(v) for v in df["score"]],
        },
        "gallery": [],
    }
    write_bundle(
        folder, provenance=provenance(date=0, seeds={"run": 0}), validation=ev, cases=cases
    )
    return folder


@pytest.fixture(scope="module")
def pdf(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_regulatory_report(bundle_dir, tmp_path_factory.mktemp("pdf") / "report.pdf")


def _text(path: Path) -> list[str]:
    return [page.extract_text() for page in PdfReader(str(path)).pages]


def test_fmt_is_three_decimals_and_dash_for_undefined() -> None:
    assert fmt(0.91666) == "0.917"
    assert fmt(1) == "1.000"
    assert fmt(None) == "–"
    assert fmt(float("nan")) == "–"
    assert fmt_ci(0.1, 0.25) == "0.100–0.250"
    assert fmt_ci(None, 0.2) == "–"
    with pytest.raises(MedlensError, match="'value' parameter of fmt"):
        fmt("0.5")


def test_acceptance_table_text_equals_evidence(bundle_dir: Path, pdf: Path) -> None:
    ev = read_bundle(bundle_dir).validation
    first = re.sub(r"\s+", " ", _text(pdf)[0])
    criteria = ev["acceptance"]["criteria"]
    assert len(criteria) == 3
    for c in criteria:
        row = (
            rf"{re.escape(c['name'])} {'primary' if c['primary'] else 'secondary'} "
            rf"{re.escape(fmt(c['estimate']))} "
            rf"{re.escape(fmt_ci(c['ci_low'], c['ci_high']))} "
            rf"{re.escape(c['operator'])} {re.escape(fmt(c['goal']))} "
            rf"{c['bound_used']} = {re.escape(fmt(c['bound']))} {c['outcome'].upper()}"
        )
        assert re.search(row, first), (row, first)
    # the specificity >= 0.99 endpoint cannot pass with this data: the table must say FAIL
    assert ev["acceptance"]["verdict"] == "fail"
    assert "FAIL" in first
    assert "Synthetic test of the report layer." in first


def test_primary_metrics_and_2x2_match_evidence(bundle_dir: Path, pdf: Path) -> None:
    ev = read_bundle(bundle_dir).validation
    text = re.sub(r"\s+", " ", " ".join(_text(pdf)))
    conf = ev["overall"]["confusion"]
    assert re.search(rf"Model positive {conf['tp']} {conf['fp']} {conf['tp'] + conf['fp']}", text)
    assert re.search(rf"Model negative {conf['fn']} {conf['tn']} {conf['fn'] + conf['tn']}", text)
    for name in ("sensitivity", "specificity", "auc", "brier"):
        m = ev["overall"]["metrics"][name]
        row = f"{name} {fmt(m['estimate'])} {fmt_ci(m['ci_low'], m['ci_high'])}"
        assert row in text, row
    for site, g in ev["cohorts"]["site"].items():
        assert re.search(rf"{site} {g['n']} ", text)


def test_pdf_is_valid_and_has_all_sections(pdf: Path) -> None:
    pages = _text(pdf)
    assert len(pages) >= 8
    text = " ".join(pages)
    for title in (
        "1 Executive summary",
        "2 Flow of cases",
        "3 Cohorts and subgroups",
        "4 Primary performance",
        "5 Explanation evidence",
        "6 Limitations and plan deviations",
        "7 Guideline map",
        "8 Reproducibility appendix",
    ):
        assert title in text
    # no audit in this bundle: the report says so instead of staying silent
    assert "Not run: the bundle holds no explanation audit" in text
    assert f"page 1 of {len(pages)}" in pages[0]
    n_missing = sum(1 for row in GUIDELINE_MAP if row[3] is None)
    assert text.count("not covered") >= n_missing
    if shutil.which("qpdf"):
        done = subprocess.run(["qpdf", "--check", str(pdf)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_same_bundle_gives_identical_bytes(bundle_dir: Path, pdf: Path, tmp_path: Path) -> None:
    from medlens.cli import main

    again = write_regulatory_report(bundle_dir, tmp_path / "again.pdf")
    assert again.read_bytes() == pdf.read_bytes()
    assert main(["report", "--evidence", str(bundle_dir), "--out", str(tmp_path / "cli.pdf")]) == 0
    assert (tmp_path / "cli.pdf").read_bytes() == pdf.read_bytes()


def test_audit_is_rendered_when_present(bundle_dir: Path, tmp_path: Path) -> None:
    b = read_bundle(bundle_dir)
    audit = {"sanity": {"model_randomisation": {"passed": True, "similarity": 0.123456}}}
    folder = tmp_path / "b"
    write_bundle(
        folder, provenance=b.provenance, validation=b.validation, audit=audit, cases=b.cases
    )
    text = " ".join(_text(write_regulatory_report(folder, tmp_path / "r.pdf")))
    assert "sanity.model_randomisation.similarity" in text
    assert "0.123" in text
    assert "Not run" not in text


def test_gallery_image_tampering_is_detected(bundle_dir: Path, tmp_path: Path) -> None:
    from medlens.reports import render_heatmap_overlay, sha256_file

    b = read_bundle(bundle_dir)
    folder = tmp_path / "g"
    (folder / "gallery").mkdir(parents=True)
    png = render_heatmap_overlay(np.eye(16), np.ones((16, 16)))
    (folder / "gallery" / "c1_gradcam.png").write_bytes(png)
    entry = {"method": "gradcam", "file": "gallery/c1_gradcam.png"}
    entry["sha256"] = sha256_file(folder / "gallery" / "c1_gradcam.png")
    cases = dict(
        b.cases,
        gallery=[
            {
                "case_id": "c1",
                "kind": "true positive",
                "label": 1,
                "score": 0.9,
                "overlays": [entry],
            }
        ],
    )
    write_bundle(folder, provenance=b.provenance, validation=b.validation, cases=cases)
    text = " ".join(_text(write_regulatory_report(folder, tmp_path / "ok.pdf")))
    assert "true positive: case c1" in text
    (folder / "gallery" / "c1_gradcam.png").write_bytes(png + b"x")
    with pytest.raises(EvidenceError, match="gallery image gallery/c1_gradcam.png has SHA-256"):
        write_regulatory_report(folder, tmp_path / "bad.pdf")


def test_bad_inputs(bundle_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(MedlensError, match="'bundle' parameter of regulatory_story"):
        regulatory_story({"validation": {}})
    b = read_bundle(bundle_dir)
    folder = tmp_path / "novalidation"
    write_bundle(folder, provenance=b.provenance, cases=b.cases)
    with pytest.raises(EvidenceError, match=re.escape(NO_VALIDATION[:40])):
        write_regulatory_report(folder, tmp_path / "x.pdf")
    with pytest.raises(EvidenceError, match="no bundle.json"):
        write_regulatory_report(tmp_path, tmp_path / "y.pdf")
    assert not (tmp_path / "x.pdf").exists()


def test_figures_reject_bad_input() -> None:
    with pytest.raises(InputDataError, match=re.escape(ROC_ONE_CLASS.format(n_pos=0, n_neg=3))):
        roc_figure([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(InputDataError, match=re.escape(ROC_LENGTHS.format(n_labels=2, n_scores=3))):
        roc_figure([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(InputDataError, match="non-finite"):
        roc_figure([0, 1], [0.1, float("nan")])
    with pytest.raises(InputDataError, match=re.escape(FOREST_EMPTY)):
        forest_figure({})
    with pytest.raises(MedlensError, match="'failed' parameter of flow_figure"):
        flow_figure(received=3, failed=-1, indeterminate=0, analysed=3)
    with pytest.raises(MedlensError, match="'curve' parameter of reliability_figure"):
        reliability_figure({"observed": [0.1]})


def test_roc_curve_matches_sklearn() -> None:
    from sklearn.metrics import auc, roc_curve

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 50)
    s = np.round(rng.random(50), 1)  # ties
    fig = roc_figure(y, s)
    line = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("ROC")][0]
    fpr, tpr = line.get_data()
    ref_fpr, ref_tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    assert auc(fpr, tpr) == pytest.approx(auc(ref_fpr, ref_tpr))


def test_pr_curve_matches_sklearn() -> None:
    from sklearn.metrics import precision_recall_curve

    from medlens.reports._report_figures import pr_figure

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.random(60), 1)  # ties
    fig = pr_figure(y, s)
    line = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("precision")][0]
    recall, precision = line.get_data()
    ref_p, ref_r, _ = precision_recall_curve(y, s)
    np.testing.assert_allclose(recall, ref_r[::-1])
    np.testing.assert_allclose(precision, ref_p[::-1])
    with pytest.raises(InputDataError, match=re.escape(ROC_ONE_CLASS.format(n_pos=2, n_neg=0))):
        pr_figure([1, 1], [0.2, 0.4])


def test_medlens_audit_record_is_summarised_per_method(bundle_dir: Path, tmp_path: Path) -> None:
    b = read_bundle(bundle_dir)
    audit = {
        "n_cases": 40,
        "methods": {
            "gradcam": {
                "evaluations": {"total": 1234},
                "sanity": {"passed": True},
                "faithfulness": {
                    "deletion_auc": 0.3111,
                    "deletion_auc_random": 0.9222,
                    "insertion_auc": 0.8333,
                    "insertion_auc_random": 0.5444,
                },
                "localisation": {"pointing_game": 0.75},
                "shortcut": {
                    "flagged_cohorts": [
                        {
                            "cohort": "site",
                            "value": "site_b",
                            "region": "corner_top_left",
                            "rule": "case_rate",
                        }
                    ]
                },
                "trust": {"n_trusted": 7, "n_cases": 40},
            },
            "saliency": {"sanity": {"passed": False}, "shortcut": {"flagged_cohorts": []}},
        },
    }
    folder = tmp_path / "b"
    write_bundle(
        folder, provenance=b.provenance, validation=b.validation, audit=audit, cases=b.cases
    )
    text = " ".join(_text(write_regulatory_report(folder, tmp_path / "r.pdf")))
    for needle in (
        "0.311 / 0.922",
        "0.833 / 0.544",
        "0.750",
        "7 / 40",
        "1234",
        "FAIL",
        "site = site_b",
        "corner_top_left",
    ):
        assert needle in text, needle
    assert "Audit entry" not in text  # the structured summary, not the raw key dump


def test_gallery_captions_mark_the_trust_verdict() -> None:
    from medlens.reports._regulatory import _gallery_caption

    assert _gallery_caption({"method": "gradcam", "trusted": False}) == (
        "gradcam: FAILED trust checks, not evidence"
    )
    assert (
        _gallery_caption({"method": "gradcam", "trusted": True}) == "gradcam: passed trust checks"
    )
    assert _gallery_caption({"method": "saliency"}) == "saliency: trust not checked"


def _rebundle(bundle_dir: Path, folder: Path, *, cases=None, prov=None, validation=None) -> Path:  # noqa: ANN001
    b = read_bundle(bundle_dir)
    write_bundle(
        folder,
        provenance=prov if prov is not None else b.provenance,
        validation=validation if validation is not None else b.validation,
        cases=cases if cases is not None else b.cases,
    )
    return folder


def test_flow_splits_excluded_cases_by_class(bundle_dir: Path, tmp_path: Path) -> None:
    b = read_bundle(bundle_dir)
    by_class = {
        "failed": {"positive": 3, "negative": 5, "unknown": 2},
        "indeterminate": {"positive": 1, "negative": 0, "unknown": 4},
    }
    folder = _rebundle(bundle_dir, tmp_path / "b", cases={**b.cases, "excluded_by_class": by_class})
    text = " ".join(_text(write_regulatory_report(folder, tmp_path / "r.pdf"))[1].split())
    assert "Excluded Reference positive Reference negative Unknown label" in text
    assert "failed 3 5 2" in text and "indeterminate 1 0 4" in text and "total 4 5 6" in text
    assert "excluded cases split by reference class" in text
    with pytest.raises(MedlensError, match="'excluded_by_class' parameter of flow_figure"):
        flow_figure(
            received=3,
            failed=1,
            indeterminate=0,
            analysed=2,
            excluded_by_class={"failed": {"positive": -1}},
        )


def test_roc_band_from_the_evidence_is_drawn_and_described(
    bundle_dir: Path, tmp_path: Path
) -> None:
    from medlens.validation._roc_band import roc_band

    b = read_bundle(bundle_dir)
    sc = b.cases["scores"]
    band = roc_band(sc["label"], sc["score"], n_replicates=50, seed=4).to_dict()
    folder = _rebundle(bundle_dir, tmp_path / "b", validation={**b.validation, "roc_band": band})
    text = " ".join(" ".join(_text(write_regulatory_report(folder, tmp_path / "r.pdf"))).split())
    assert "pointwise 95 % band of the sensitivity at 51 fixed false-positive rates" in text
    assert f"{band['n_valid']} of 50 replicates" in text and "not a simultaneous band" in text
    plain = " ".join(
        " ".join(_text(write_regulatory_report(bundle_dir, tmp_path / "p.pdf"))).split()
    )
    assert "No pointwise CI band is drawn: the evidence holds none." in plain
    # the band changes the figure (pixels), not only the caption
    fig_a = roc_figure(sc["label"], sc["score"], band=band)
    fig_b = roc_figure(sc["label"], sc["score"])
    from medlens.reports import figure_png

    assert figure_png(fig_a) != figure_png(fig_b)


def test_identifiers_only_when_asked_and_held(bundle_dir: Path, tmp_path: Path) -> None:
    from medlens.reports._regulatory import IDENTIFIERS_EXCLUDED, NO_IDENTIFIERS

    b = read_bundle(bundle_dir)
    entry = {
        "case_id": "case-0001",
        "kind": "true positive",
        "label": 1,
        "score": 0.9,
        "overlays": [],
        "identifiers": {"patient_id": "MRN-ZQX-1", "patient_name": "ZQX^ANNA"},
    }
    folder = _rebundle(
        bundle_dir,
        tmp_path / "b",
        cases={**b.cases, "gallery": [entry]},
        prov={**b.provenance, "identifiers_included": True},
    )
    plain = " ".join(" ".join(_text(write_regulatory_report(folder, tmp_path / "p.pdf"))).split())
    assert "MRN-ZQX-1" not in plain and "ZQX^ANNA" not in plain
    assert f"Patient identifiers {IDENTIFIERS_EXCLUDED}" in plain
    named = write_regulatory_report(folder, tmp_path / "n.pdf", include_identifiers=True)
    text = " ".join(" ".join(_text(named)).split())
    assert "case case-0001 [patient ID MRN-ZQX-1, name ZQX^ANNA]" in text
    assert "Patient identifiers INCLUDED" in text
    assert "CONTAINS PATIENT IDENTIFIERS" in PdfReader(str(named)).metadata["/Subject"]
    assert "IDENTIFIERS" not in PdfReader(str(tmp_path / "p.pdf")).metadata["/Subject"]
    with pytest.raises(EvidenceError, match=re.escape(NO_IDENTIFIERS[:50])):
        write_regulatory_report(bundle_dir, tmp_path / "x.pdf", include_identifiers=True)
    with pytest.raises(MedlensError, match="'include_identifiers' parameter of regulatory_story"):
        regulatory_story(b, include_identifiers="yes")


def test_worst_case_of_primary_endpoints_is_shown_in_section_2(bundle_dir: Path, pdf: Path) -> None:
    ev = read_bundle(bundle_dir).validation
    pages = [re.sub(r"\s+", " ", t) for t in _text(pdf)]
    page = next(p for p in pages if "2 Flow of cases" in p)
    primaries = [c for c in ev["acceptance"]["criteria"] if c["primary"]]
    assert len(primaries) == 2
    for c in primaries:
        w = c["worst_case"]
        row = (
            f"{c['name']} {w['n_counted_as_errors']} {fmt(w['estimate'])} "
            f"{fmt_ci(w['ci_low'], w['ci_high'])} {c['bound_used']} = {fmt(w['bound'])} "
            f"{w['outcome'].upper()}"
        )
        assert row in page, row
    assert f"Worst-case verdict: {ev['acceptance']['worst_case_verdict']}." in page


def test_gallery_caption_names_the_failed_checks() -> None:
    from medlens.reports._regulatory import _gallery_caption

    overlay = {
        "method": "gradcam",
        "trusted": False,
        "trust_label": "FAILED trust checks: not evidence (failed: anatomy, faithfulness)",
    }
    assert _gallery_caption(overlay) == (
        "gradcam: FAILED trust checks (failed: anatomy, faithfulness), not evidence"
    )


def _trust_audit():
    """An audit record with real trust cards and criteria whose thresholds differ from the
    package defaults, so that the report can only get them from the record."""
    import copy

    from medlens.xai._trust import TRUST_CRITERIA, trust_cards

    criteria = copy.deepcopy(TRUST_CRITERIA)
    criteria["randomisation"]["pass_if"] = "rho < 0.4"
    criteria["faithfulness"]["threshold"] = 0.35
    criteria["anatomy"]["margin"] = "region widened by 0.125 of the smallest in-plane side"
    criteria["anatomy"]["threshold"] = 1.5
    criteria["anatomy"]["shortcut_region_factor"] = 2.5
    cards = trust_cards(
        [f"c{i}" for i in range(6)],
        "gradcam",
        randomisation_spearman=[0.0, 0.9, 0.0, 0.0, 0.9, 0.0],
        faithfulness_gap=[0.5, 0.5, 0.1, 0.5, 0.1, np.nan],
        inside_anatomy_share=[0.6, 0.6, 0.6, 0.05, 0.05, 0.6],
        anatomy_fraction=[0.3] * 6,
        anatomy_region=["lesion"] * 6,
        shortcut_region_ratio=[1.0, 1.0, 1.0, 4.0, 1.0, 3.5],
        shortcut_region=["corner_top_left"] * 6,
    )
    dicts = [c.to_dict() for c in cards]
    return {
        "n_cases": 6,
        "trust_criteria": criteria,
        "methods": {
            "gradcam": {
                "sanity": {"passed": True},
                "trust": {
                    "n_trusted": sum(c.trusted for c in cards),
                    "n_cases": len(cards),
                    "criteria": criteria,
                    "cards": dicts,
                },
            }
        },
    }, dicts


def test_trust_criteria_and_failures_are_quoted_from_the_audit_record(
    bundle_dir: Path, tmp_path: Path
) -> None:
    from medlens.reports._regulatory import trust_criteria_text, trust_failure_counts

    audit, cards = _trust_audit()
    crit = audit["trust_criteria"]
    sentence = trust_criteria_text(crit)
    for needle in (
        "A map is trusted when: it changes under model randomisation (Spearman rho < 0.4",
        "(LeRF - MoRF gap >= 0.35 of the score range)",
        "its mass per pixel on the lesion (else the anatomy), widened by 1/8 of the image side, "
        "is at least 1.5 times a uniform map's",
        "it puts no more than 2.5x a uniform map's share in an image corner or a user region",
        "two seeds give similar maps (Spearman rho >= 0.8)",
    ):
        assert needle in sentence, needle
    # independent count per check from the card fields and the record's thresholds
    want = {
        "randomisation": sum(c["randomisation_spearman"] >= 0.5 for c in cards),
        "faithfulness": sum(not c["faithfulness_gap"] >= 0.3 for c in cards),
        "stability": 0,
        "anatomy": sum(
            c["anatomy"] == "fail" and c["inside_anatomy_share"] < 1.5 * c["anatomy_fraction"]
            for c in cards
        ),
        "shortcut_region": sum(c["shortcut_region_ratio"] > 2.5 for c in cards),
    }
    assert want == {
        "randomisation": 2,
        "faithfulness": 3,
        "stability": 0,
        "anatomy": 2,
        "shortcut_region": 2,
    }
    assert trust_failure_counts(cards, crit) == want
    b = read_bundle(bundle_dir)
    folder = tmp_path / "b"
    write_bundle(
        folder, provenance=b.provenance, validation=b.validation, audit=audit, cases=b.cases
    )
    text = " ".join(" ".join(_text(write_regulatory_report(folder, tmp_path / "r.pdf"))).split())
    assert " ".join(sentence.split()) in text
    n_trusted = audit["methods"]["gradcam"]["trust"]["n_trusted"]
    assert n_trusted == 1
    assert (
        f"gradcam {n_trusted} / 6 2 3 0 2 2 faithfulness 3, randomisation 2, anatomy 2, "
        "shortcut region 2" in text
    )


def test_old_audit_without_criteria_or_cards_still_renders(
    bundle_dir: Path, tmp_path: Path
) -> None:
    from medlens.reports._regulatory import CRITERIA_NOT_RECORDED, trust_criteria_text

    audit, _ = _trust_audit()
    del audit["trust_criteria"]
    trust = audit["methods"]["gradcam"]["trust"]
    del trust["criteria"], trust["cards"]
    assert trust_criteria_text(None) == CRITERIA_NOT_RECORDED
    b = read_bundle(bundle_dir)
    folder = tmp_path / "b"
    write_bundle(
        folder, provenance=b.provenance, validation=b.validation, audit=audit, cases=b.cases
    )
    text = " ".join(" ".join(_text(write_regulatory_report(folder, tmp_path / "r.pdf"))).split())
    assert " ".join(CRITERIA_NOT_RECORDED.split()) in text
    assert "criteria not recorded" in CRITERIA_NOT_RECORDED
    assert "gradcam 1 / 6 – – – – – cards not recorded" in text


def test_executive_summary_and_limitations_state_the_qualifying_findings(
    bundle_dir: Path, tmp_path: Path
) -> None:
    from medlens.reports._findings import qualifying_findings

    b = read_bundle(bundle_dir)
    audit, _ = _trust_audit()
    audit["methods"]["gradcam"]["shortcut"] = {
        "flagged_cohorts": [
            {"cohort": "site", "value": "B", "region": "corner_top_left", "rule": "case_rate"}
        ]
    }
    folder = tmp_path / "b"
    write_bundle(
        folder, provenance=b.provenance, validation=b.validation, audit=audit, cases=b.cases
    )
    pages = _text(write_regulatory_report(folder, tmp_path / "r.pdf"))
    found = qualifying_findings(b.validation, audit)
    assert [f.topic for f in found][:2] == ["shortcut", "explanations"]
    summary = " ".join(" ".join(p.split()) for p in pages[:2])
    assert "Findings that qualify the verdict" in summary
    assert "site=B (corner_top_left)" in summary
    limitations = next(p for p in pages if "6 Limitations" in p)
    assert "Limitations found in this evidence" in limitations
    assert "possible shortcut" in " ".join(limitations.split())
    # without an audit and with nothing else to qualify, no findings block appears
    plain = _text(write_regulatory_report(bundle_dir, tmp_path / "plain.pdf"))
    if not qualifying_findings(b.validation):
        assert not any("Findings that qualify the verdict" in p for p in plain)


def test_cover_ties_the_report_to_its_data() -> None:
    from medlens.reports._regulatory import _data_hash_rows

    sha = {"dataset": "d" * 64, "labels": "l" * 64}
    rows = dict(_data_hash_rows(sha, {"n_files": 95, "split": "split 'test'"}))
    assert rows == {
        "Dataset SHA-256": "d" * 64 + " (95 image files, split 'test')",
        "Labels SHA-256": "l" * 64,
    }
    assert dict(_data_hash_rows({"manifest": "m" * 64}, {})) == {"Manifest SHA-256": "m" * 64}
    assert _data_hash_rows({}, {}) == [("Data SHA-256", "not recorded in this bundle")]


def test_appendix_values_are_plain_text_not_python_reprs() -> None:
    from medlens.reports._regulatory import _plain

    assert _plain({"numpy": "2.4.6", "medlens": "0.1.0"}) == "medlens 0.1.0, numpy 2.4.6"
    assert _plain({"column": "split", "value": "test"}) == "column split, value test"
    assert _plain([0.5, {"a": 1}]) == "0.500, a 1"
    assert _plain({}) == "–"
