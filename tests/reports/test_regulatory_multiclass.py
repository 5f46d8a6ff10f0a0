"""The regulatory PDF of multi-class and multi-label evidence: per-class counts, class
endpoints, per-class calibration, and no pooled numbers that would mislead."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pypdf import PdfReader

from medlens._errors import InputDataError, MedlensError
from medlens.reports import provenance, read_bundle, reliability_grid_figure, write_bundle
from medlens.reports._regulatory import fmt, fmt_ci, write_regulatory_report
from medlens.reports._report_figures import GRID_EMPTY, flow_figure

CLASSES = ["normal", "effusion", "pneumothorax"]
LABELS = ["edema", "nodule"]
ANALYSIS = {"bootstrap": {"replicates": 100, "seed": 1}, "calibration": {"null_simulations": 60}}


def _evaluate(df: pd.DataFrame, plan: dict) -> dict:
    from medlens.validation import UndefinedMetricWarning, evaluate, parse_plan
    from medlens.validation._evidence import to_evidence

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return to_evidence(evaluate(df, parse_plan(plan)))


def _multiclass_evidence() -> dict:
    rng = np.random.default_rng(11)
    n = 150
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.3 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pat = rng.integers(0, 70, n)
    status = np.where(rng.random(n) < 0.06, "failed", "ok")
    df = pd.DataFrame(
        {
            "case_id": [f"c{i:04d}" for i in range(n)],
            "patient_key": [f"p{j:03d}" for j in pat],
            "label": np.array(CLASSES)[y],
            **{f"prob_{c}": p[:, j] for j, c in enumerate(CLASSES)},
            "site": np.array(["A", "B"])[pat % 2],
            "status": status,
        }
    )
    return _evaluate(
        df,
        {
            "task": "multiclass",
            "classes": CLASSES,
            "intended_use": "Synthetic multi-class test of the report layer.",
            "analysis": ANALYSIS,
            "primary_endpoints": [
                {"metric": "auc", "goal": 0.6},
                {"metric": "sensitivity", "goal": 0.5, "class": "effusion"},
            ],
            "secondary_endpoints": [{"metric": "specificity", "goal": 0.95, "class": "normal"}],
        },
    )


def _multilabel_evidence() -> dict:
    rng = np.random.default_rng(5)
    n = 120
    p = rng.random((n, 2))
    y = (rng.random((n, 2)) < p).astype(int)
    df = pd.DataFrame({"case_id": [f"m{i:03d}" for i in range(n)]})
    df["sex"] = rng.choice(["F", "M"], n)
    for j, c in enumerate(LABELS):
        df[f"prob_{c}"] = p[:, j]
        df[f"label_{c}"] = y[:, j]
    return _evaluate(
        df,
        {
            "task": "multilabel",
            "classes": LABELS,
            "analysis": ANALYSIS,
            "primary_endpoints": [{"metric": "auc", "goal": 0.6, "class": "nodule"}],
        },
    )


def _write(folder: Path, ev: dict) -> Path:
    write_bundle(folder, provenance=provenance(date=0, seeds={"run": 0}), validation=ev)
    return write_regulatory_report(folder, folder / "report.pdf")


@pytest.fixture(scope="module")
def mc(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("mc")
    pdf = _write(folder, _multiclass_evidence())
    return read_bundle(folder).validation, pdf


@pytest.fixture(scope="module")
def ml(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("ml")
    pdf = _write(folder, _multilabel_evidence())
    return read_bundle(folder).validation, pdf


def _pages(path: Path) -> list[str]:
    return [re.sub(r"\s+", " ", p.extract_text()) for p in PdfReader(str(path)).pages]


def _page_with(pages: list[str], needle: str) -> str:
    hits = [p for p in pages if needle in p]
    assert hits, needle
    return hits[0]


def test_executive_summary_shows_cases_and_per_class_counts(mc) -> None:  # noqa: ANN001
    ev, pdf = mc
    first = _pages(pdf)[0]
    o = ev["overall"]
    per = ", ".join(f"{c} {o['per_class'][c]['n_positive']}" for c in CLASSES)
    assert f"{o['n']} ({o['n_patients']} patients); per class: {per}" in first
    assert sum(o["per_class"][c]["n_positive"] for c in CLASSES) == o["n"]
    # the summed one-vs-rest counts (n_positive == n, n_negative == 2n) are not shown
    assert f"{o['n_negative']} negative" not in first
    assert "multi-class, 3 classes (normal, effusion, pneumothorax)" in first


def test_acceptance_rows_name_the_class(mc) -> None:  # noqa: ANN001
    ev, pdf = mc
    first = _pages(pdf)[0]
    criteria = ev["acceptance"]["criteria"]
    assert [c.get("class") for c in criteria] == [None, "effusion", "normal"]
    for c in criteria:
        row = (
            rf"{re.escape(c['name'])} {c.get('class') or 'macro'} "
            rf"{'primary' if c['primary'] else 'secondary'} {re.escape(fmt(c['estimate']))} "
            rf"{re.escape(fmt_ci(c['ci_low'], c['ci_high']))} {re.escape(c['operator'])} "
            rf"{re.escape(fmt(c['goal']))} {c['bound_used']} = {re.escape(fmt(c['bound']))} "
            rf"{c['outcome'].upper()}"
        )
        assert re.search(row, first), (row, first)


def test_performance_is_per_class_with_no_pooled_2x2(mc) -> None:  # noqa: ANN001
    ev, pdf = mc
    pages = _pages(pdf)
    page = _page_with(pages, "Cross-tabulation per class (one-vs-rest)")
    assert "2x2 table" not in " ".join(pages[1:5]).replace("no pooled 2x2 table", "")
    assert "Model positive" not in page
    for c in CLASSES:
        g = ev["overall"]["per_class"][c]
        k = g["confusion"]
        counts = f"{c} {g['n_positive']} {g['n_negative']} {k['tp']} {k['fn']} {k['fp']} {k['tn']}"
        assert counts in page, counts
        m = g["metrics"]
        row = " ".join(
            [
                c,
                *(
                    f"{fmt(m[x]['estimate'])} {fmt_ci(m[x]['ci_low'], m[x]['ci_high'])}"
                    for x in (
                        "sensitivity",
                        "specificity",
                        "ppv",
                        "auc",
                    )
                ),
            ]
        )
        assert row in page, row
    auc = ev["overall"]["metrics"]["auc"]
    # the macro table follows the K x K matrix and may split onto the next page
    text = " ".join(pages)
    macro = text[text.index("Macro-averaged metrics with 95 % confidence intervals") :]
    assert f"auc {fmt(auc['estimate'])} {fmt_ci(auc['ci_low'], auc['ci_high'])}" in macro
    assert "a case is positive when score ≥ threshold" not in " ".join(pages)


def test_calibration_per_class_table_and_figure(mc) -> None:  # noqa: ANN001
    ev, pdf = mc
    text = " ".join(_pages(pdf))
    start = text.index("4.1 Calibration")
    section = text[start : text.index("5 Explanation evidence")]
    assert "Reliability diagrams per class" in section
    for c in CLASSES:
        pc = ev["calibration"]["per_class"][c]
        e, s, i = pc["ece"], pc["calibration_slope"], pc["calibration_intercept"]
        row = (
            f"{c} {fmt(e['ece'])} {fmt_ci(e['null_low'], e['null_high'])} {fmt(e['p_value'])} "
            f"{fmt(pc['brier']['brier'])} {fmt(s['estimate'])} {fmt_ci(s['ci_low'], s['ci_high'])} "
            f"{fmt(i['estimate'])} {fmt_ci(i['ci_low'], i['ci_high'])} "
            f"{fmt(pc['hosmer_lemeshow']['p_value'])} {fmt(pc['spiegelhalter']['p_value'])}"
        )
        assert row in section, row
    # the binary table's empty rows ("calibration slope – –") are gone
    assert "calibration slope –" not in section


def test_multilabel_counts_positives_per_label(ml) -> None:  # noqa: ANN001
    ev, pdf = ml
    pages = _pages(pdf)
    o = ev["overall"]
    per = ", ".join(f"{c} {o['per_class'][c]['n_positive']}" for c in LABELS)
    assert f"{o['n']} ({o['n_patients']} patients); positive per label: {per}" in pages[0]
    (c,) = ev["acceptance"]["criteria"]
    assert re.search(
        rf"{re.escape(c['name'])} nodule primary {re.escape(fmt(c['estimate']))}", pages[0]
    )
    text = " ".join(pages)
    assert "Positive cases per label (a case can be positive for several labels)" in text
    for value, g in ev["cohorts"]["sex"].items():
        pos = " ".join(str(g["per_class"][c]["n_positive"]) for c in LABELS)
        assert f"sex {value} {g['n']} {g['n_patients']} {pos}" in text
    assert f"Threshold {fmt(ev['plan']['threshold']['value'])} per label" in text
    assert "Cross-tabulation per label (one-vs-rest)" in text
    assert "Reliability diagrams per label" in text
    for label in LABELS:
        assert f"{label} {fmt(ev['calibration']['per_class'][label]['ece']['ece'])}" in text


def test_multiclass_pdf_is_valid_and_deterministic(mc, tmp_path: Path) -> None:  # noqa: ANN001
    _, pdf = mc
    again = write_regulatory_report(pdf.parent, tmp_path / "again.pdf")
    assert again.read_bytes() == pdf.read_bytes()
    if shutil.which("qpdf"):
        done = subprocess.run(["qpdf", "--check", str(pdf)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def _curve(k: int = 4) -> dict:
    x = np.linspace(0.05, 0.95, k)
    return {
        "mean_predicted": list(x),
        "observed": list(x),
        "ci_low": list(x - 0.05),
        "ci_high": list(x + 0.05),
        "count": [5] * k,
    }


def test_reliability_grid_draws_one_panel_per_class() -> None:
    ece_in = {"ece": 0.02, "null_low": 0.01, "null_high": 0.05}
    ece_out = {"ece": 0.09, "null_low": 0.01, "null_high": 0.05}
    fig = reliability_grid_figure(
        [
            ("a", _curve(), ece_in),
            ("b", _curve(), ece_out),
            ("c", None, None),
            ("d", _curve(), None),
        ],
        ncols=3,
    )
    assert len(fig.axes) == 8  # a diagram and its count histogram per class
    titles = [ax.get_title() for ax in fig.axes[::2]]
    assert titles[0] == "a\nECE 0.020 (null 0.010–0.050)"
    assert titles[2] == "c\nECE undefined" and titles[3] == "d\nECE undefined"
    colours = [ax.title.get_color() for ax in fig.axes[::2]]
    assert colours[0] == "black" and colours[1] != "black"  # above the null band: red
    assert [t.get_text() for t in fig.axes[4].texts] == ["undefined"]


def test_multiclass_figures_reject_bad_input() -> None:
    with pytest.raises(InputDataError, match=re.escape(GRID_EMPTY)):
        reliability_grid_figure([])
    with pytest.raises(MedlensError, match="'curve' parameter of reliability_grid_figure"):
        reliability_grid_figure([("a", {"observed": [0.1]}, None)])
    with pytest.raises(MedlensError, match="'ncols' parameter of reliability_grid_figure"):
        reliability_grid_figure([("a", _curve(), None)], ncols=0)
    with pytest.raises(MedlensError, match="'class_counts' parameter of flow_figure"):
        flow_figure(received=3, failed=0, indeterminate=0, analysed=3, class_counts=[("a", -1)])
    fig = flow_figure(
        received=30,
        failed=0,
        indeterminate=0,
        analysed=30,
        class_counts=[(f"class {i}", 3) for i in range(10)],
    )
    text = "\n".join(t.get_text() for t in fig.axes[0].texts)
    assert "class 6: n = 3" in text and "class 7" not in text
    assert "3 other classes: n = 9" in text


def test_worst_case_table_shows_class_endpoints_and_says_what_was_not_done(mc) -> None:  # noqa: ANN001
    ev, pdf = mc
    page = _page_with(_pages(pdf), "Worst-case analysis of the primary endpoints")
    auc, sens = [c for c in ev["acceptance"]["criteria"] if c["primary"]]
    assert "worst_case" not in auc and auc.get("class") is None
    assert f"{auc['name']} macro – – – – not done" in page
    w = sens["worst_case"]
    assert 0 < w["n_counted_as_errors"] <= ev["failed_cases"]["n_failed"]
    row = (
        f"{sens['name']} effusion {w['n_counted_as_errors']} {fmt(w['estimate'])} "
        f"{fmt_ci(w['ci_low'], w['ci_high'])} ci_low = {fmt(w['bound'])} {w['outcome'].upper()}"
    )
    assert row in page, row
    assert f"Worst-case verdict: {ev['acceptance']['worst_case_verdict']} (not done" in page
    for value, counts in ev["failed_cases"]["by_cohort"]["site"].items():
        text = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        assert f"site {value} {text}" in page


def test_multiclass_confusion_matrix_is_drawn_from_the_evidence(mc) -> None:  # noqa: ANN001
    ev, pdf = mc
    cm = ev["overall"]["confusion_matrix"]
    assert cm["classes"] == CLASSES and cm["rows"] == "true" and cm["columns"] == "predicted"
    page = _page_with(_pages(pdf), "Confusion matrix (rows: reference class")
    for c, row in zip(CLASSES, cm["counts"], strict=True):
        cells = f"{c} {' '.join(map(str, row))} {sum(row)}"
        assert cells in page, (cells, page)
    totals = [sum(r[j] for r in cm["counts"]) for j in range(len(CLASSES))]
    assert f"Total predicted {' '.join(map(str, totals))} {ev['overall']['n']}" in page
    correct = sum(cm["counts"][i][i] for i in range(len(CLASSES)))
    assert correct == ev["overall"]["confusion"]["tp"]
    assert f"correctly classified cases, {correct} of {ev['overall']['n']}" in page


def test_old_multiclass_evidence_without_matrix_still_renders(tmp_path: Path) -> None:
    ev = _multiclass_evidence()
    del ev["overall"]["confusion_matrix"]
    pdf = _write(tmp_path, ev)
    page = _page_with(_pages(pdf), "Confusion matrix (rows: reference class")
    assert "Not recorded: this evidence.json has no overall.confusion_matrix" in page


def test_multilabel_report_has_no_kxk_matrix(ml) -> None:  # noqa: ANN001
    ev, pdf = ml
    assert "confusion_matrix" not in ev["overall"]
    assert "Confusion matrix (rows" not in " ".join(_pages(pdf))


def test_malformed_confusion_matrix_is_a_clear_error(tmp_path: Path) -> None:
    from medlens._errors import EvidenceError

    ev = _multiclass_evidence()
    ev["overall"]["confusion_matrix"]["counts"] = [[1, 2], [3, 4]]
    with pytest.raises(EvidenceError, match=r"counts must be 3 rows of 3 counts .* \[2, 2\]"):
        _write(tmp_path, ev)
