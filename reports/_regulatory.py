"""The regulatory evidence report: a PDF story built only from an evidence bundle.

Nothing is recomputed here: every number printed comes from the bundle's JSON parts
(``evidence.json``, ``explanation_audit.json``, ``cases.json``), formatted by
:func:`fmt` (three decimals, ``"–"`` for an undefined value) and :func:`fmt_ci`
(``"low–high"``, three decimals each), so a test can compare the PDF's text with the
JSON. The only derived drawing is the empirical ROC step curve, traced from the per-case
scores stored in ``cases.json`` (``scores``); without them the ROC figure is omitted and
the report says so.

Sections: cover and executive summary (acceptance criteria), flow of cases, cohorts and
subgroups (forest plots), primary performance (2x2 table, metrics, threshold, ROC,
calibration), explanation evidence (audit, case gallery), limitations and deviations,
guideline map (STARD 2015, CLAIM 2024, TRIPOD+AI), reproducibility appendix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from medlens._errors import EvidenceError, param_error
from medlens.validation import EVIDENCE_METRICS

from ._bundle import EvidenceBundle, read_bundle, sha256_file
from ._case_report import OVERLAY_COLOUR_RULE
from ._findings import qualifying_findings
from ._pdf import (
    PdfContext,
    badge,
    build_pdf,
    data_table,
    figure,
    heading,
    image,
    key_value_table,
    page_break,
    paragraph,
    pdf_metadata,
    spacer,
)

__all__ = [
    "CRITERIA_NOT_RECORDED",
    "GUIDELINE_MAP",
    "TRUST_FAILURES",
    "fmt",
    "fmt_ci",
    "regulatory_story",
    "trust_criteria_text",
    "trust_failure_counts",
    "write_regulatory_report",
]

DECIMALS = 3
NO_VALIDATION = "the bundle has no validation part (evidence.json); run `medlens validate` or `medlens run` first"
GALLERY_FILE_CHANGED = "gallery image {file} has SHA-256 {got}, cases.json records {expected}"
NO_IDENTIFIERS = (
    "--include-identifiers: this bundle holds no patient identifiers; re-run "
    "`medlens run --include-identifiers` to put them into a bundle"
)
IDENTIFIERS_INCLUDED = (
    "INCLUDED: patient ID and name of the gallery cases from their DICOM headers "
    "(requested with --include-identifiers); handle this report as patient data"
)
IDENTIFIERS_EXCLUDED = "not included: pseudonymous case ids only"
BAD_CONFUSION_MATRIX = (
    "counts must be {k} rows of {k} counts (one per class); got rows of lengths {shape}"
)
GALLERY_FILE_MISSING = "gallery image {file} listed in cases.json is missing from the bundle"
_CLASSES = ("positive", "negative", "unknown")
PRIMARY_METRICS = EVIDENCE_METRICS  # the evidence contract's metrics, in its order
FOREST_METRICS = ("sensitivity", "specificity")
AUDIT_MAX_ROWS = 60

#: (guideline, item, topic, report section or None when not covered)
GUIDELINE_MAP: tuple[tuple[str, str, str, str | None], ...] = (
    ("STARD 2015", "2", "structured summary", "1 Executive summary"),
    ("STARD 2015", "3", "intended use and clinical role", "Cover (intended use)"),
    ("STARD 2015", "5-9", "participants, eligibility, setting", None),
    ("STARD 2015", "10a", "index test in sufficient detail", "Cover, 8 Reproducibility"),
    ("STARD 2015", "10b", "reference standard in sufficient detail", None),
    (
        "STARD 2015",
        "12a",
        "threshold of the index test, prespecified or not",
        "4 Primary performance",
    ),
    ("STARD 2015", "14", "methods for estimating accuracy and its precision", "4, 8"),
    ("STARD 2015", "16", "handling of missing / indeterminate results", "2 Flow of cases"),
    ("STARD 2015", "19", "flow of participants (diagram)", "2 Flow of cases"),
    ("STARD 2015", "20", "baseline characteristics", "3 Cohorts"),
    ("STARD 2015", "23", "cross-tabulation of index test by reference standard", "4 (2x2 table)"),
    ("STARD 2015", "24", "estimates of accuracy with 95 % CIs", "1, 4"),
    ("STARD 2015", "25", "adverse events from testing", None),
    ("CLAIM 2024", "5-7", "study design, data sources, inclusion", None),
    ("CLAIM 2024", "9-12", "de-identification, missing data, preprocessing", "2, 8 (config)"),
    ("CLAIM 2024", "13-17", "ground truth definition and annotators", None),
    ("CLAIM 2024", "19-21", "data partitions and leakage between them", "8 (split in config)"),
    ("CLAIM 2024", "22-27", "model, training and selection", "Cover (weights hash) only"),
    ("CLAIM 2024", "28-32", "evaluation metrics, uncertainty, robustness", "4, 3"),
    (
        "CLAIM 2024",
        "33",
        "methods for explainability or interpretability",
        "5 Explanation evidence",
    ),
    ("CLAIM 2024", "35-37", "performance on subgroups / external data", "3 Cohorts and subgroups"),
    (
        "CLAIM 2024",
        "38-40",
        "limitations, implications, failure analysis",
        "6 Limitations, 5 gallery",
    ),
    ("TRIPOD+AI", "8", "outcome and its assessment", None),
    ("TRIPOD+AI", "12", "analysis: performance measures (discrimination, calibration)", "4"),
    ("TRIPOD+AI", "14", "fairness: performance across groups", "3 Cohorts and subgroups"),
    ("TRIPOD+AI", "16", "model output and thresholds", "4 Primary performance"),
    ("TRIPOD+AI", "18", "open science: code, data, protocol availability", "8 (hashes only)"),
    ("TRIPOD+AI", "23", "performance with CIs, calibration plot", "4"),
    ("TRIPOD+AI", "26-27", "interpretation, limitations, usability", "6 Limitations"),
)


def fmt(value: Any, decimals: int = DECIMALS) -> str:
    """Format a JSON number for the report: fixed decimals, ``"–"`` for null/NaN.

    Parameters
    ----------
    value : float, int or None
    decimals : int, default 3

    Returns
    -------
    str
        e.g. ``fmt(0.91666) == "0.917"``; ``fmt(None) == "–"``.
    """
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise param_error("value", "fmt", "a number or None", value)
    if value != value:  # NaN
        return "–"
    return f"{float(value):.{decimals}f}"


def fmt_ci(low: Any, high: Any, decimals: int = DECIMALS) -> str:
    """Format a confidence interval as ``"low–high"`` (``"–"`` when undefined)."""
    if low is None or high is None:
        return "–"
    return f"{fmt(low, decimals)}–{fmt(high, decimals)}"


def _metric_row(name: str, m: Mapping[str, Any] | None) -> list[Any]:
    if not m:
        return [name, "–", "–", "–"]
    note = m.get("note")
    return [
        name,
        fmt(m.get("estimate")),
        fmt_ci(m.get("ci_low"), m.get("ci_high")),
        str(m.get("method", "")) + (f" ({note})" if note else ""),
    ]


_TASKS = {"multiclass": "multi-class", "multilabel": "multi-label"}


def _metric_table(metrics: Mapping[str, Any]) -> list[Any]:
    """Every metric with its 95 % CI and method, the primary metrics first."""
    names = [m for m in PRIMARY_METRICS if m in metrics] + sorted(
        set(metrics) - set(PRIMARY_METRICS)
    )
    return data_table(
        ["Metric", "Estimate", "95 % CI", "Method"],
        [_metric_row(m, metrics.get(m)) for m in names],
        col_widths=[34, 20, 30, 90],
        align=["LEFT", "RIGHT", "RIGHT", "LEFT"],
    )


def _multi(ev: Mapping[str, Any]) -> tuple[str, list[str], Mapping[str, Any]] | None:
    """(task, classes, overall.per_class) of multi-class / multi-label evidence, else None."""
    overall = ev.get("overall", {}) or {}
    task = overall.get("task")
    per = overall.get("per_class")
    if task not in _TASKS or not isinstance(per, Mapping):
        return None
    classes = [str(c) for c in (overall.get("classes") or list(per))]
    return str(task), classes, per


def _per_class_word(task: str) -> str:
    return "per class" if task == "multiclass" else "positive per label"


def _task_text(task: str, classes: list[str]) -> str:
    unit, one = ("classes", "class") if task == "multiclass" else ("labels", "label")
    return (
        f"{_TASKS[task]}, {len(classes)} {unit} ({', '.join(classes)}); each {one} is "
        "evaluated one-vs-rest; metrics and endpoints without a class are macro averages "
        f"over the {unit}"
    )


def _data_hash_rows(sha: Mapping[str, Any], dataset: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Cover rows that tie the report to its data: manifest, image files, labels."""
    rows = []
    if sha.get("manifest"):
        rows.append(("Manifest SHA-256", str(sha["manifest"])))
    if sha.get("dataset"):
        what = f" ({dataset['n_files']} image files, {dataset.get('split', '')})".replace(
            ", )", ")"
        )
        rows.append(
            ("Dataset SHA-256", str(sha["dataset"]) + (what if dataset.get("n_files") else ""))
        )
    if sha.get("labels"):
        rows.append(("Labels SHA-256", str(sha["labels"])))
    return rows or [("Data SHA-256", "not recorded in this bundle")]


def _cover(b: EvidenceBundle, ev: Mapping[str, Any], include_identifiers: bool) -> list[Any]:
    prov = b.provenance or {}
    sha = dict(prov.get("sha256") or {})
    evprov = ev.get("provenance", {})
    plan = ev.get("plan", {}).get("definition", {})
    model = prov.get("model") or {}
    pkgs = prov.get("packages") or {}
    versions = ", ".join(f"{k} {v}" for k, v in sorted(pkgs.items()) if v) or "–"
    story: list[Any] = []
    story += paragraph(b.title, style="title")
    story += key_value_table(
        [
            ("Report id", b.report_id),
            ("Date (UTC)", str(prov.get("date_utc", "–"))),
            ("Intended use", str(plan.get("intended_use") or "not stated in the plan")),
            ("Model", str(model.get("name") or "–")),
            ("Model weights SHA-256", str(sha.get("model_weights", "–"))),
            ("Predictions SHA-256", str(evprov.get("input_sha256") or sha.get("predictions", "–"))),
            ("Plan SHA-256", str(evprov.get("plan_sha256") or sha.get("plan", "–"))),
            *_data_hash_rows(sha, prov.get("dataset") or {}),
            ("medlens", str(prov.get("medlens_version", "–"))),
            ("Versions", versions),
            (
                "Patient identifiers",
                IDENTIFIERS_INCLUDED if include_identifiers else IDENTIFIERS_EXCLUDED,
            ),
        ]
    )
    return story


def _acceptance(ev: Mapping[str, Any], audit: Mapping[str, Any] | None) -> list[Any]:
    acc = ev.get("acceptance", {})
    crit = list(acc.get("criteria", []))
    story: list[Any] = []
    story += heading("1 Executive summary", 0)
    overall = ev.get("overall", {})
    verdict = str(acc.get("verdict", "n/a")).upper()
    multi = _multi(ev)
    if multi is None:
        analysed = (
            f"{overall.get('n', '–')} ({overall.get('n_positive', '–')} positive, "
            f"{overall.get('n_negative', '–')} negative, {overall.get('n_patients', '–')} patients)"
        )
    else:
        task, classes, per = multi
        counts = ", ".join(f"{c} {(per.get(c) or {}).get('n_positive', '–')}" for c in classes)
        analysed = (
            f"{overall.get('n', '–')} ({overall.get('n_patients', '–')} patients); "
            f"{_per_class_word(task)}: {counts}"
        )
    rows_kv: list[tuple[str, Any]] = [
        ("Verdict", badge(verdict if verdict in ("PASS", "FAIL") else None)),
        ("Worst-case verdict", str(acc.get("worst_case_verdict", "–"))),
        ("Cases analysed", analysed),
    ]
    if multi is not None:
        rows_kv.append(("Task", _task_text(multi[0], multi[1])))
    rows_kv.append(("Decision rule", str(acc.get("rule", "–"))))
    story += key_value_table(rows_kv)
    story += spacer(3)
    rows = []
    failed_rows = []
    with_class = multi is not None or any(c.get("class") is not None for c in crit)
    for i, c in enumerate(crit):
        outcome = str(c.get("outcome", "")).upper()
        row = [
            str(c.get("name") or c.get("metric")),
            "primary" if c.get("primary") else "secondary",
            fmt(c.get("estimate")),
            fmt_ci(c.get("ci_low"), c.get("ci_high")),
            f"{c.get('operator', '')} {fmt(c.get('goal'))}",
            f"{c.get('bound_used', '–')} = {fmt(c.get('bound'))}",
            badge(outcome if outcome in ("PASS", "FAIL") else None),
        ]
        if with_class:
            row.insert(1, str(c["class"]) if c.get("class") is not None else "macro")
        rows.append(row)
        if outcome == "FAIL":
            failed_rows.append(i)
    if rows:
        story += paragraph("Acceptance criteria (prespecified in the analysis plan)", style="h3")
        if with_class:
            header = ["Endpoint", "Class", "Type", "Estimate", "95 % CI", "Goal", "Bound used"]
            widths = [29.5, 25, 19, 18.5, 22, 16, 25.5, 18.5]
            align = ["LEFT", "LEFT", "LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT", "CENTER"]
        else:
            header = ["Endpoint", "Type", "Estimate", "95 % CI", "Goal", "Bound used"]
            widths = [37, 17, 19, 28, 18, 33, 20]
            align = ["LEFT", "LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT", "CENTER"]
        story += data_table(
            [*header, "Outcome"],
            rows,
            col_widths=widths,
            align=align,
            highlight_rows=failed_rows,
        )
        story += paragraph(
            f"Numbers are the evidence.json values rounded to {DECIMALS} decimals. "
            "Primary endpoints are also judged with failed/indeterminate cases counted as "
            "errors (worst case; section 2)."
            + (
                " Class: the class judged one-vs-rest (that class as positive); macro: the "
                "mean over classes."
                if multi is not None
                else ""
            ),
            style="small",
        )
    else:
        story += paragraph("The analysis plan defines no acceptance criteria.")
    story += _findings_list(
        ev,
        audit,
        "Findings that qualify the verdict",
        "The verdict judges the prespecified endpoints only. Read it together with these "
        "findings from the evidence (details in sections 3-5):",
    )
    return story


def _findings_list(
    ev: Mapping[str, Any], audit: Mapping[str, Any] | None, title: str, intro: str
) -> list[Any]:
    """The :func:`~medlens.reports._findings.qualifying_findings` as a titled bullet list."""
    found = qualifying_findings(ev, audit if isinstance(audit, Mapping) else None)
    if not found:
        return []
    story = paragraph(title, style="h3") + paragraph(intro)
    for f in found:
        story += paragraph(
            f"• <b>{escape(f.topic.capitalize())}</b>: {escape(f.text)}", markup=True
        )
    return story


def _flow(ev: Mapping[str, Any], cases: Mapping[str, Any] | None) -> list[Any]:
    fc = ev.get("failed_cases", {})
    overall = ev.get("overall", {})
    story: list[Any] = heading("2 Flow of cases", 0)
    received = int(fc.get("n_population", overall.get("n", 0)) or 0)
    failed = int(fc.get("n_failed", 0) or 0)
    indet = int(fc.get("n_indeterminate", 0) or 0)
    analysed = int(fc.get("n_analysed", overall.get("n", 0)) or 0)
    reasons = (cases or {}).get("failed_reasons") or {}
    by_class = (cases or {}).get("excluded_by_class") or None
    multi = _multi(ev)
    class_counts = None
    if multi is not None:
        task, classes, per = multi
        class_counts = [(c, int((per.get(c) or {}).get("n_positive") or 0)) for c in classes]
    from ._report_figures import flow_figure

    story += figure(
        flow_figure(
            received=received,
            failed=failed,
            indeterminate=indet,
            analysed=analysed,
            positives=None if multi else overall.get("n_positive"),
            negatives=None if multi else overall.get("n_negative"),
            failed_reasons=sorted((str(k), int(v)) for k, v in reasons.items()),
            excluded_by_class=by_class,
            class_counts=class_counts,
            class_title=(
                "reference class"
                if multi is None or multi[0] == "multiclass"
                else "positive per label (labels overlap)"
            ),
        ),
        width_mm=130,
        caption="Figure 1. Flow of cases from the predictions file to the analysis (test split)"
        + (
            "; excluded cases split by reference class (unknown: no reference label)."
            if by_class
            else "."
        ),
    )
    if by_class:
        rows_c = [
            [status, *(int((by_class.get(status) or {}).get(k, 0)) for k in _CLASSES)]
            for status in ("failed", "indeterminate")
        ]
        rows_c.append(["total", *(sum(r[j] for r in rows_c) for j in range(1, 4))])
        story += data_table(
            ["Excluded", "Reference positive", "Reference negative", "Unknown label"],
            rows_c,
            col_widths=[40, 40, 40, 40],
        )
        story += spacer(2)
    story += paragraph(f"Handling: {fc.get('handling', 'not recorded')}", style="small")
    story += _worst_case(ev)
    by = fc.get("by_cohort") or {}
    rows = []
    for col, values in sorted(by.items()):
        for value, counts in sorted((values or {}).items()):
            text = (
                ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                if isinstance(counts, Mapping)
                else str(counts)
            )
            rows.append([col, value, text])
    if rows:
        story += paragraph("Excluded cases by cohort", style="h3")
        story += data_table(
            ["Cohort", "Value", "Excluded cases"],
            rows,
            col_widths=[40, 50, 84],
            align=["LEFT", "LEFT", "LEFT"],
        )
    return story


def _worst_case(ev: Mapping[str, Any]) -> list[Any]:
    """Primary endpoints re-judged with the failed / indeterminate cases counted as errors."""
    acc = ev.get("acceptance", {}) or {}
    primaries = [c for c in acc.get("criteria", []) or [] if c.get("primary")]
    if not primaries:
        return []
    story: list[Any] = paragraph(
        "Worst-case analysis of the primary endpoints (failed and indeterminate cases "
        "counted as errors)",
        style="h3",
    )
    with_class = _multi(ev) is not None or any(c.get("class") is not None for c in primaries)
    rows, failed = [], []
    for i, c in enumerate(primaries):
        w = c.get("worst_case")
        name = str(c.get("name") or c.get("metric"))
        row: list[Any] = [name]
        if with_class:
            row.append(str(c["class"]) if c.get("class") is not None else "macro")
        if isinstance(w, Mapping):
            outcome = str(w.get("outcome", "")).upper()
            row += [
                w.get("n_counted_as_errors"),
                fmt(w.get("estimate")),
                fmt_ci(w.get("ci_low"), w.get("ci_high")),
                f"{c.get('bound_used', '–')} = {fmt(w.get('bound'))}",
                badge(outcome if outcome in ("PASS", "FAIL") else None),
            ]
            if outcome == "FAIL":
                failed.append(i)
        else:
            row += ["–", "–", "–", "–", "not done"]
        rows.append(row)
    header = ["Endpoint", *(["Class"] if with_class else []), "Counted as errors"]
    header += ["Estimate", "95 % CI", "Bound used", "Outcome"]
    others = [*([24.0] if with_class else []), 20, 18.5, 22, 26, 19.5]
    widths = [174 - sum(others), *others]
    story += data_table(
        header,
        rows,
        col_widths=widths,
        align=["LEFT", *(["LEFT"] if with_class else []), "RIGHT", "RIGHT", "RIGHT", "RIGHT"]
        + ["CENTER"],
        highlight_rows=failed,
    )
    story += paragraph(
        f"Worst-case verdict: {acc.get('worst_case_verdict', '–')}"
        + (
            " (not done: the endpoint has no worst-case analysis; see the plan "
            "deviations in section 6)."
            if any(not isinstance(c.get("worst_case"), Mapping) for c in primaries)
            else "."
        ),
        style="small",
    )
    return story


def _cohorts(ev: Mapping[str, Any]) -> list[Any]:
    from ._report_figures import forest_figure

    cohorts = ev.get("cohorts", {})
    overall = ev.get("overall", {})
    story: list[Any] = heading("3 Cohorts and subgroups", 0)
    if not cohorts:
        return story + paragraph("No cohort column was analysed.")
    multi = _multi(ev)
    desc = []
    for col, values in cohorts.items():
        for value, g in values.items():
            row = [col, value, g.get("n"), g.get("n_patients")]
            if multi is None:
                row += [g.get("n_positive"), g.get("n_negative")]
            else:
                per = g.get("per_class") or {}
                row += [(per.get(c) or {}).get("n_positive") for c in multi[1]]
            desc.append(row)
    story += heading("3.1 Cohort description", 1)
    if multi is None:
        story += data_table(
            ["Cohort", "Value", "Cases", "Patients", "Positives", "Negatives"],
            desc,
            col_widths=[34, 50, 22, 22, 22, 22],
        )
    else:
        k = len(multi[1])
        story += paragraph(
            "Cases per reference class"
            if multi[0] == "multiclass"
            else "Positive cases per label (a case can be positive for several labels)",
            style="small",
        )
        story += data_table(
            ["Cohort", "Value", "Cases", "Patients", *multi[1]],
            desc,
            col_widths=[22, 25, 15, 18, *([min(30.0, 94.0 / k)] * k)],
        )
    sub = ev.get("plan", {}).get("definition", {}).get("subgroups", {})
    story += heading("3.2 Subgroup performance", 1)
    story += paragraph(
        "Sensitivity and specificity per cohort value with 95 % CIs; p-values test the "
        f"difference to the overall estimate, adjusted for multiplicity ({sub.get('multiplicity', '–')}) "
        "across all cohort values. * = small cohort (fewer than "
        f"{sub.get('min_positives', '–')} positives, {sub.get('min_negatives', '–')} negatives or "
        f"{sub.get('min_n', '–')} cases): estimates are unstable."
        + (
            f" {_TASKS[multi[0]].capitalize()} task: sensitivity and specificity are macro "
            f"averages over the {'classes' if multi[0] == 'multiclass' else 'labels'} "
            "(one-vs-rest)."
            if multi is not None
            else ""
        ),
        style="small",
    )
    overall_m = overall.get("metrics", {})
    for col, values in cohorts.items():
        rows, flagged_rows = [], []
        panels: dict[str, list[tuple[str, Any, Any, Any, bool]]] = {m: [] for m in FOREST_METRICS}
        for i, (value, g) in enumerate(values.items()):
            metrics = g.get("metrics", {})
            flags = g.get("flags", {}) or {}
            diff = g.get("difference_to_overall", {}) or {}
            row: list[Any] = [value, g.get("n")]
            any_flag = False
            for m in FOREST_METRICS:
                e = metrics.get(m) or {}
                flag = m in flags
                any_flag |= flag
                row.append(fmt(e.get("estimate")) + (" *" if flag else ""))
                row.append(fmt_ci(e.get("ci_low"), e.get("ci_high")))
                row.append(fmt((diff.get(m) or {}).get("p_adjusted")))
                panels[m].append(
                    (str(value), e.get("estimate"), e.get("ci_low"), e.get("ci_high"), flag)
                )
            rows.append(row)
            if any_flag:
                flagged_rows.append(i)
        story += paragraph(f"By {col}", style="h3")
        story += data_table(
            ["Value", "n", "Sens.", "95 % CI", "p adj.", "Spec.", "95 % CI", "p adj."],
            rows,
            col_widths=[36, 12, 18, 30, 16, 18, 30, 16],
        )
        goals = {
            c["metric"]: c["goal"]
            for c in ev.get("acceptance", {}).get("criteria", [])
            if c.get("metric") in FOREST_METRICS and c.get("primary") and c.get("class") is None
        }
        story += figure(
            forest_figure(
                panels,
                overall={m: (overall_m.get(m) or {}).get("estimate") for m in FOREST_METRICS},
                goals=goals,
            ),
            width_mm=150,
            caption=f"Forest plot by {col}: "
            + ("macro-average " if multi is not None else "")
            + "estimate and 95 % CI; dashed line: overall estimate; "
            "red dotted line: primary-endpoint goal"
            + (" (macro endpoints only)" if multi is not None else "")
            + "; grey, * : small cohort.",
        )
    return story


def _est_ci(m: Mapping[str, Any] | None) -> list[str]:
    """[estimate, "low–high"] cells of one evidence metric object."""
    m = m or {}
    return [fmt(m.get("estimate")), fmt_ci(m.get("ci_low"), m.get("ci_high"))]


def _performance_multi(
    ev: Mapping[str, Any], multi: tuple[str, list[str], Mapping[str, Any]]
) -> list[Any]:
    """Section 4 of multi-class / multi-label evidence: per class, then macro averages."""
    task, classes, per = multi
    overall = ev.get("overall", {})
    thr = ev.get("plan", {}).get("threshold", {}) or {}
    story: list[Any] = heading("4 Primary performance", 0)
    story += paragraph(f"Task: {_task_text(task, classes)}.")
    if task == "multiclass":
        story += paragraph(
            f"Decision rule: {thr.get('rule', '–')} ({thr.get('source', '–')}). One-vs-rest "
            "for a class: a case is positive when that class is the predicted class."
        )
    else:
        story += paragraph(
            f"Threshold {fmt(thr.get('value'))} per label (rule: {thr.get('rule', '–')}, "
            f"source: {thr.get('source', '–')}); a label is predicted when its score ≥ "
            "threshold."
        )
    word = "class" if task == "multiclass" else "label"
    head = word.capitalize()
    story += paragraph(f"Cross-tabulation per {word} (one-vs-rest)", style="h3")
    rows = []
    for c in classes:
        g = per.get(c) or {}
        conf = g.get("confusion") or {}
        rows.append(
            [
                c,
                g.get("n_positive"),
                g.get("n_negative"),
                *(conf.get(k) for k in ("tp", "fn", "fp", "tn")),
            ]
        )
    story += data_table(
        [head, "Reference positive", "Reference negative", "TP", "FN", "FP", "TN"],
        rows,
        col_widths=[40, 30, 30, 18, 18, 18, 18],
    )
    story += paragraph(
        f"{overall.get('n', '–')} cases analysed. "
        + (
            "Each case is a reference positive for exactly one class, so the counts summed "
            "over classes count every case once as positive and "
            f"{len(classes) - 1} times as negative (evidence.json overall.note); no pooled "
            "2x2 table is shown."
            if task == "multiclass"
            else "A case can be positive for several labels; no pooled 2x2 table is shown."
        ),
        style="small",
    )
    if task == "multiclass":
        story += _confusion_matrix(overall.get("confusion_matrix"), classes)
    story += paragraph(f"Per-{word} metrics with 95 % confidence intervals", style="h3")
    rows = []
    methods: set[str] = set()
    for c in classes:
        m = (per.get(c) or {}).get("metrics") or {}
        row: list[Any] = [c]
        for name in ("sensitivity", "specificity", "ppv", "auc"):
            row += _est_ci(m.get(name))
            if (m.get(name) or {}).get("method"):
                methods.add(f"{name}: {m[name]['method']}")
        rows.append(row)
    story += data_table(
        [head, "Sens.", "95 % CI", "Spec.", "95 % CI", "PPV", "95 % CI", "AUC", "95 % CI"],
        rows,
        col_widths=[24, 13, 23, 13, 23, 13, 23, 13, 23],
    )
    rows = []
    for c in classes:
        m = (per.get(c) or {}).get("metrics") or {}
        rows.append(
            [
                c,
                fmt((m.get("balanced_accuracy") or {}).get("estimate")),
                *_est_ci(m.get("f1")),
                *_est_ci(m.get("average_precision")),
                fmt((m.get("lr_positive") or {}).get("estimate")),
                fmt((m.get("lr_negative") or {}).get("estimate")),
            ]
        )
    story += spacer(2)
    story += data_table(
        [head, "Bal. accuracy", "F1", "95 % CI", "Avg precision", "95 % CI", "LR+", "LR−"],
        rows,
        col_widths=[24, 20, 14, 24, 20, 24, 18, 18],
    )
    if methods:
        story += paragraph("CI methods: " + "; ".join(sorted(methods)) + ".", style="small")
    story += paragraph("Macro-averaged metrics with 95 % confidence intervals", style="h3")
    story += _metric_table(overall.get("metrics", {}))
    story += paragraph(
        f"ROC and precision-recall curves are not drawn for a {_TASKS[task]} task; the "
        f"per-{word} AUC and average precision with their CIs are in the tables above "
        "(evidence.json overall.per_class).",
        style="small",
    )
    story += _calibration_multi(ev, classes, word)
    return story


def _confusion_matrix(cm: Mapping[str, Any] | None, classes: list[str]) -> list[Any]:
    """The K x K table of a multi-class task (evidence.json overall.confusion_matrix)."""
    story: list[Any] = paragraph(
        "Confusion matrix (rows: reference class, columns: predicted class)", style="h3"
    )
    if not isinstance(cm, Mapping) or not cm.get("counts"):
        return story + paragraph(
            "Not recorded: this evidence.json has no overall.confusion_matrix (written by an "
            "older medlens); the per-class one-vs-rest tables above hold the same margins.",
            style="small",
        )
    names = [str(c) for c in cm.get("classes") or classes]
    counts = [[int(v) for v in row] for row in cm["counts"]]
    k = len(names)
    if len(counts) != k or any(len(row) != k for row in counts):
        raise EvidenceError(
            BAD_CONFUSION_MATRIX.format(k=k, shape=[len(r) for r in counts]),
            source="evidence.json overall.confusion_matrix",
        )
    rows: list[list[Any]] = []
    for name, row in zip(names, counts, strict=True):
        rows.append([name, *row, sum(row)])
    col_tot = [sum(r[j] for r in counts) for j in range(k)]
    rows.append(["Total predicted", *col_tot, sum(col_tot)])
    first = 40.0
    other = min(30.0, (174.0 - first) / (k + 1))
    table = data_table(
        ["Reference \\ predicted", *names, "Total"],
        rows,
        col_widths=[first, *([other] * (k + 1))],
        zebra=False,
    )
    from reportlab.platypus import TableStyle

    from ._pdf import _register_fonts

    bold = _register_fonts()[1]
    table[0].setStyle(
        TableStyle([("FONTNAME", (i + 1, i + 1), (i + 1, i + 1), bold) for i in range(k)])
    )
    story += table
    correct = sum(counts[i][i] for i in range(k))
    story += paragraph(
        f"Diagonal (bold): correctly classified cases, {correct} of {sum(col_tot)}. "
        "Row totals are the cases per reference class; column totals the cases per "
        "predicted class.",
        style="small",
    )
    return story


def _calibration_multi(ev: Mapping[str, Any], classes: list[str], word: str) -> list[Any]:
    """Section 4.1 for multi-class / multi-label: per-class reliability and calibration."""
    from ._report_figures import reliability_grid_figure

    cal = ev.get("calibration") or {}
    per = cal.get("per_class") or {}
    story: list[Any] = heading("4.1 Calibration", 1)
    if not per:
        return story + paragraph(
            "Not available: the evidence holds no per-class calibration (calibration.per_class)."
        )
    method = str(cal.get("method") or "one-vs-rest per class")
    story += paragraph(
        method[:1].upper()
        + method[1:]
        + f". A {word} is miscalibrated beyond chance when its ECE lies above its null band "
        "(the ECE expected under perfect calibration at the same n and scores).",
        style="small",
    )
    panels = []
    for c in classes:
        pc = per.get(c) or {}
        curve = (pc.get("reliability") or {}).get("uniform")
        panels.append((c, curve if curve and curve.get("count") else None, pc.get("ece")))
    story += figure(
        reliability_grid_figure(panels),
        width_mm=min(170, 58 * min(3, len(panels))),
        caption=f"Figure. Reliability diagrams per {word} (one-vs-rest, equal-width bins; "
        "95 % CI per bin as in evidence.json) with bin counts; title: ECE and its null 95 % "
        "band (red: ECE above the band).",
    )
    rows, flagged = [], []
    for i, c in enumerate(classes):
        pc = per.get(c)
        if not pc:
            rows.append([c, *(["–"] * 10)])
            continue
        ece = pc.get("ece") or {}
        brier = pc.get("brier") or {}
        slope = pc.get("calibration_slope") or {}
        icpt = pc.get("calibration_intercept") or {}
        rows.append(
            [
                c,
                fmt(ece.get("ece")),
                fmt_ci(ece.get("null_low"), ece.get("null_high")),
                fmt(ece.get("p_value")),
                fmt(brier.get("brier") if isinstance(brier, Mapping) else brier),
                *_est_ci(slope),
                *_est_ci(icpt),
                fmt((pc.get("hosmer_lemeshow") or {}).get("p_value")),
                fmt((pc.get("spiegelhalter") or {}).get("p_value")),
            ]
        )
        if ece.get("ece") is not None and ece.get("null_high") is not None:
            if float(ece["ece"]) > float(ece["null_high"]):
                flagged.append(i)
    story += data_table(
        [
            word.capitalize(),
            "ECE",
            "Null band",
            "p (ECE)",
            "Brier",
            "Slope",
            "95 % CI",
            "Intercept",
            "95 % CI",
            "H-L p",
            "z test p",
        ],
        rows,
        col_widths=[23, 11, 19.5, 12.5, 12, 12.5, 22, 17.5, 22, 10.5, 11],
        font_size=7.0,
        highlight_rows=flagged,
    )
    methods = sorted(
        {
            str((per.get(c) or {}).get(k, {}).get("method"))
            for c in classes
            for k in ("calibration_slope",)
            if isinstance((per.get(c) or {}).get(k), Mapping)
            and (per.get(c) or {}).get(k, {}).get("method")
        }
    )
    nulls = sorted(
        {
            f"{(per.get(c) or {}).get('ece', {}).get('null_method')}, "
            f"{(per.get(c) or {}).get('ece', {}).get('n_simulations')} simulations"
            for c in classes
            if isinstance((per.get(c) or {}).get("ece"), Mapping)
        }
    )
    story += paragraph(
        "Bold rows: ECE above its null band. Null band: "
        + ("; ".join(nulls) or "–")
        + ". Slope and intercept: logistic recalibration ("
        + (", ".join(methods) or "–")
        + "); H-L: Hosmer-Lemeshow test; z test: Spiegelhalter z test.",
        style="small",
    )
    return story


def _performance(b: EvidenceBundle, ev: Mapping[str, Any]) -> list[Any]:
    from ._report_figures import reliability_figure, roc_figure

    multi = _multi(ev)
    if multi is not None:
        return _performance_multi(ev, multi)

    overall = ev.get("overall", {})
    metrics = overall.get("metrics", {})
    thr = ev.get("plan", {}).get("threshold", {})
    conf = overall.get("confusion", {})
    story: list[Any] = heading("4 Primary performance", 0)
    story += paragraph(
        f"Operating threshold {fmt(thr.get('value'))} (rule: {thr.get('rule', '–')}, "
        f"source: {thr.get('source', '–')}); a case is positive when score ≥ threshold."
    )
    tp, fp, fn, tn = (conf.get(k) for k in ("tp", "fp", "fn", "tn"))
    story += paragraph("Cross-tabulation at the threshold (2x2 table)", style="h3")
    tot = [
        None if any(v is None for v in p) else sum(p)
        for p in ((tp, fp), (fn, tn), (tp, fn), (fp, tn))
    ]
    story += data_table(
        ["", "Reference positive", "Reference negative", "Total"],
        [
            ["Model positive", tp, fp, tot[0]],
            ["Model negative", fn, tn, tot[1]],
            ["Total", tot[2], tot[3], overall.get("n")],
        ],
        col_widths=[40, 40, 40, 30],
        zebra=False,
    )
    story += paragraph("Metrics with 95 % confidence intervals", style="h3")
    story += _metric_table(metrics)
    scores = (b.cases or {}).get("scores") if b.cases else None
    if scores and scores.get("label") and len(set(scores["label"])) == 2:
        story += figure(
            roc_figure(
                scores["label"],
                scores["score"],
                threshold=thr.get("value"),
                sensitivity=metrics.get("sensitivity"),
                specificity=metrics.get("specificity"),
                auc=metrics.get("auc"),
                band=ev.get("roc_band"),
            ),
            width_mm=105,
            caption=_roc_caption(ev.get("roc_band")),
        )
    else:
        story += paragraph(
            "ROC curve: not shown; the bundle holds no per-case scores (cases.json 'scores')."
        )
    if scores and scores.get("label") and len(set(scores["label"])) == 2:
        from ._report_figures import pr_figure

        story += figure(
            pr_figure(
                scores["label"],
                scores["score"],
                ppv=metrics.get("ppv"),
                sensitivity=metrics.get("sensitivity"),
                average_precision=metrics.get("average_precision"),
            ),
            width_mm=105,
            caption="Figure. Precision-recall curve (per-case scores in cases.json) with the "
            "operating point and its 95 % CIs (evidence.json); dotted line: prevalence.",
        )
    cal = ev.get("calibration") or {}  # null when undefined (e.g. one class analysed)
    story += heading("4.1 Calibration", 1)
    rel = (cal.get("reliability") or {}).get("uniform")
    if rel and rel.get("count"):
        story += figure(
            reliability_figure(rel, ece=cal.get("ece")),
            width_mm=100,
            caption="Figure. Reliability diagram (equal-width bins; 95 % CI per bin as in evidence.json) and bin counts.",
        )
    ece = cal.get("ece") or {}
    hl = cal.get("hosmer_lemeshow") or {}
    sp = cal.get("spiegelhalter") or {}
    rows = [
        _metric_row("calibration slope", cal.get("calibration_slope")),
        _metric_row("calibration intercept", cal.get("calibration_intercept")),
        [
            "ECE",
            fmt(ece.get("ece")),
            f"null band {fmt_ci(ece.get('null_low'), ece.get('null_high'))}",
            f"p = {fmt(ece.get('p_value'))} ({ece.get('null_method', '')})",
        ],
        [
            "Hosmer-Lemeshow",
            fmt(hl.get("statistic")),
            f"df {hl.get('df', '–')}",
            f"p = {fmt(hl.get('p_value'))}",
        ],
        ["Spiegelhalter z", fmt(sp.get("z")), "", f"p = {fmt(sp.get('p_value'))}"],
    ]
    story += data_table(
        ["Measure", "Value", "Interval", "Method / test"],
        rows,
        col_widths=[34, 20, 40, 80],
        align=["LEFT", "RIGHT", "RIGHT", "LEFT"],
    )
    return story


def _roc_caption(band: Mapping[str, Any] | None) -> str:
    text = (
        "Figure. Empirical ROC curve (from the per-case scores in cases.json) with the "
        "operating point and its 95 % CIs (evidence.json). "
    )
    if not band:
        return text + "No pointwise CI band is drawn: the evidence holds none."
    return text + (
        f"Shaded: pointwise {fmt(100 * float(band.get('level', 0.95)), 0)} % band of the "
        f"sensitivity at {len(band.get('fpr', []))} fixed false-positive rates "
        f"(evidence.json roc_band: {band.get('method', '')}, "
        f"{band.get('n_valid', '–')} of {band.get('n_replicates', '–')} replicates over "
        f"{band.get('n_clusters', '–')} patients"
        + (", stratified by site" if band.get("stratified") else "")
        + f", seed {band.get('seed', '–')}); not a simultaneous band."
    )


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if isinstance(obj, Mapping):
        for k in sorted(obj):
            out += _flatten(obj[k], f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list) and obj and all(not isinstance(v, (Mapping, list)) for v in obj):
        text = ", ".join(fmt(v) if isinstance(v, float) else str(v) for v in obj[:12])
        out.append((prefix, text + (f", … ({len(obj)} values)" if len(obj) > 12 else "")))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _flatten(v, f"{prefix}[{i}]")
    else:
        out.append((prefix, fmt(obj) if isinstance(obj, float) else str(obj)))
    return out


def _plain(value: Any) -> str:
    """A JSON value as reader-facing text: ``k v, k v`` for a mapping, not a Python repr."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_plain(v)}" for k, v in sorted(value.items())) or "–"
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value) or "–"
    return fmt(value) if isinstance(value, float) else str(value)


def _gallery_png(bundle_dir: Path | None, entry: Mapping[str, Any]) -> bytes | None:
    if bundle_dir is None:
        return None
    path = bundle_dir / str(entry["file"])
    if Path(str(entry["file"])).is_absolute() or ".." in Path(str(entry["file"])).parts:
        raise EvidenceError(GALLERY_FILE_MISSING.format(file=entry["file"]))
    if not path.is_file():
        raise EvidenceError(GALLERY_FILE_MISSING.format(file=entry["file"]))
    got = sha256_file(path)
    if entry.get("sha256") and got != entry["sha256"]:
        raise EvidenceError(
            GALLERY_FILE_CHANGED.format(file=entry["file"], got=got, expected=entry["sha256"])
        )
    return path.read_bytes()


#: The checks of a trust card, in the order of its ``reasons`` (see :mod:`medlens.xai._trust`),
#: with the failure categories the report counts (the anatomy check fails for a low share on
#: the reference region, for a shortcut region, or both).
TRUST_FAILURES = (
    ("randomisation", "Randomisation"),
    ("faithfulness", "Faithfulness"),
    ("stability", "Stability"),
    ("anatomy", "Anatomy"),
    ("shortcut_region", "Shortcut region"),
)
CRITERIA_NOT_RECORDED = (
    "Trust criteria not recorded: this bundle's explanation_audit.json has no "
    "trust_criteria (written by an older medlens); the trusted counts cannot be tied to "
    "stated thresholds."
)


def _trust_criteria(audit: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The audit record's ``trust_criteria`` (else the first method's ``trust.criteria``)."""
    crit = audit.get("trust_criteria")
    if isinstance(crit, Mapping) and crit:
        return crit
    for rec in (audit.get("methods") or {}).values():
        c = ((rec or {}).get("trust") or {}).get("criteria")
        if isinstance(c, Mapping) and c:
            return c
    return None


def _fraction_text(text: Any) -> str:
    """ "region widened by 0.0625 of the ..." -> "1/16" (the margin as a simple fraction)."""
    import re
    from fractions import Fraction

    m = re.search(r"(\d+(?:\.\d+)?)", str(text or ""))
    if not m:
        return ""
    f = Fraction(m.group(1)).limit_denominator(100)
    if f == 0:
        return "0"
    return (
        f"{f.numerator}/{f.denominator}" if abs(float(f) - float(m.group(1))) < 1e-9 else m.group(1)
    )


def trust_criteria_text(criteria: Mapping[str, Any] | None) -> str:
    """Plain-language rule of the per-case trust card, quoted from the audit record.

    Parameters
    ----------
    criteria : mapping or None
        ``trust_criteria`` of ``explanation_audit.json`` (:data:`medlens.xai.TRUST_CRITERIA`).

    Returns
    -------
    str
        "A map is trusted when: ..." with the recorded thresholds, or
        :data:`CRITERIA_NOT_RECORDED` when the record holds none.
    """
    if not criteria:
        return CRITERIA_NOT_RECORDED
    parts = []
    rnd = criteria.get("randomisation") or {}
    if rnd:
        parts.append(
            "it changes under model randomisation (Spearman "
            f"{rnd.get('pass_if', '–')} between the maps of the original and the fully "
            "randomised model)"
        )
    faith = criteria.get("faithfulness") or {}
    if faith:
        gap = faith.get("threshold")
        parts.append(
            "removing its most relevant pixels lowers the logit faster than removing its "
            "least relevant (LeRF - MoRF gap >= "
            f"{'–' if gap is None else f'{gap:g}'} of the score range)"
        )
    anat = criteria.get("anatomy") or {}
    if anat:
        t = anat.get("threshold")
        times = (
            "at least a uniform map's"
            if t == 1
            else f"at least {'–' if t is None else f'{t:g}'} times a uniform map's"
        )
        margin = _fraction_text(anat.get("margin"))
        widened = f", widened by {margin} of the image side," if margin else ""
        parts.append(f"its mass per pixel on the lesion (else the anatomy){widened} is {times}")
        factor = anat.get("shortcut_region_factor")
        if factor is not None:
            parts.append(
                f"it puts no more than {factor:g}x a uniform map's share in an image corner "
                "or a user region (e.g. burned-in text)"
            )
    stab = criteria.get("stability") or {}
    if stab:
        methods = ", ".join(map(str, stab.get("methods") or [])) or "stochastic methods"
        parts.append(
            f"for stochastic methods ({methods}), two seeds give similar maps (Spearman "
            f"{stab.get('pass_if', '–')})"
        )
    if not parts:
        return CRITERIA_NOT_RECORDED
    text = "A map is trusted when: " + "; ".join(parts[:-1])
    text += ("; and " if len(parts) > 1 else "") + parts[-1] + "."
    how = criteria.get("trusted_if")
    if how:
        text += f" Rule: {how}."
    anat_na = anat.get("not_assessed")
    if anat_na:
        text += f" Anatomy not assessed: {anat_na}."
    return text


def trust_failure_counts(
    cards: list[Mapping[str, Any]], criteria: Mapping[str, Any] | None
) -> dict[str, int]:
    """Failed maps per check (a map can fail several), from the audit's trust cards.

    ``anatomy``: the share on the widened lesion/anatomy is below the recorded threshold
    (or undefined); ``shortcut_region``: the shortcut-region ratio is above the recorded
    factor. Both come from the card's anatomy check; a failed anatomy check that fits
    neither (an older card) counts as ``anatomy``.
    """
    anat = (criteria or {}).get("anatomy") or {}
    ratio_min = anat.get("threshold")
    factor = anat.get("shortcut_region_factor")
    out = {key: 0 for key, _ in TRUST_FAILURES}
    for c in cards:
        for key in ("randomisation", "faithfulness", "stability"):
            out[key] += c.get(key) == "fail"
        if c.get("anatomy") != "fail":
            continue
        lean = c.get("shortcut_region_ratio")
        shortcut = lean is not None and factor is not None and lean == lean and lean > factor
        inside, frac = c.get("inside_anatomy_share"), c.get("anatomy_fraction")
        low = (
            bool(c.get("anatomy_region"))
            and frac is not None
            and (inside is None or ratio_min is None or inside < ratio_min * frac)
        )
        out["shortcut_region"] += shortcut
        out["anatomy"] += low or not shortcut
    return out


def _audit_summary(audit: Mapping[str, Any]) -> list[Any]:
    """Per-method table, trust criteria and failures, and shortcut flags of an audit record."""
    story: list[Any] = paragraph(
        f"{audit.get('n_cases', '–')} test cases audited (explanation_audit.json). Sanity: "
        "cascading layer randomisation (Adebayo et al. 2018); faithfulness: area under the "
        "deletion curve (lower is better) and insertion curve (higher is better) against a "
        "random removal order; trusted: maps passing their per-case trust card.",
        style="small",
    )
    criteria = _trust_criteria(audit)
    rows, flags, trust_rows = [], [], []
    for method, rec in sorted(audit["methods"].items()):
        sanity = rec.get("sanity") or {}
        faith = rec.get("faithfulness") or {}
        loc = rec.get("localisation") or {}
        trust = rec.get("trust") or {}
        trusted = f"{trust.get('n_trusted', '–')} / {trust.get('n_cases', '–')}"
        rows.append(
            [
                method,
                ("pass" if sanity.get("passed") else "FAIL")
                + (f" ({sanity['n_cases']} cases)" if sanity.get("n_cases") else ""),
                f"{fmt(faith.get('deletion_auc'))} / {fmt(faith.get('deletion_auc_random'))}",
                f"{fmt(faith.get('insertion_auc'))} / {fmt(faith.get('insertion_auc_random'))}",
                fmt(loc.get("pointing_game")) if loc else "–",
                trusted,
                str((rec.get("evaluations") or {}).get("total", "–")),
            ]
        )
        cards = [c for c in trust.get("cards") or [] if isinstance(c, Mapping)]
        if cards:
            counts = trust_failure_counts(cards, trust.get("criteria") or criteria)
            failed = sorted(
                ((n, label) for (key, label) in TRUST_FAILURES if (n := counts[key])),
                key=lambda t: -t[0],
            )
            main = ", ".join(f"{label.lower()} {n}" for n, label in failed) or "none"
            trust_rows.append([method, trusted, *(counts[key] for key, _ in TRUST_FAILURES), main])
        elif trust:
            trust_rows.append(
                [method, trusted, *(["–"] * len(TRUST_FAILURES)), "cards not recorded"]
            )
        for f in (rec.get("shortcut") or {}).get("flagged_cohorts", []):
            flags.append(
                [method, f"{f['cohort']} = {f['value']}", f.get("region", "–"), f.get("rule", "–")]
            )
    story += data_table(
        [
            "Method",
            "Sanity",
            "Deletion AUC / random",
            "Insertion AUC / random",
            "Pointing game",
            "Trusted maps",
            "Model evaluations",
        ],
        rows,
    )
    story += heading("Per-case trust cards", 2)
    story += paragraph(trust_criteria_text(criteria), style="small")
    if trust_rows:
        story += data_table(
            ["Method", "Trusted", *(label for _, label in TRUST_FAILURES), "Main failures"],
            trust_rows,
            col_widths=[19, 17, 28, 24, 18, 18, 18, 32],
            font_size=7.5,
            align=["LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT", "RIGHT", "RIGHT", "LEFT"],
        )
        story += paragraph(
            "Trusted: maps passing every check, of the maps audited. The other columns count "
            "the maps failing each check (a map can fail several; an undefined value fails). "
            "Anatomy: too little attribution on the widened lesion or anatomy; shortcut "
            "region: too much in a corner or user region. Failed maps are shown as "
            "'FAILED trust checks, not evidence' wherever they appear.",
            style="small",
        )
    story += heading("Shortcut audit: cohorts that lean on evidence outside the anatomy", 2)
    if flags:
        story += data_table(["Method", "Cohort", "Region", "Rule"], flags, align=["LEFT"] * 4)
        story += paragraph(
            "A flagged cohort's explanations put more attribution in the named region than "
            "the other cases (Holm-adjusted); check those images for markers, text or "
            "scanner artefacts before trusting the model there.",
            style="small",
        )
    else:
        story += paragraph("No cohort flagged.")
    return story


def _explanations(
    b: EvidenceBundle, bundle_dir: Path | None, include_identifiers: bool
) -> list[Any]:
    story: list[Any] = heading("5 Explanation evidence", 0)
    story += heading("5.1 Explanation audit", 1)
    if b.audit and isinstance(b.audit.get("methods"), Mapping):
        story += _audit_summary(b.audit)
    elif b.audit:
        rows = _flatten(b.audit)
        story += paragraph(
            "Values from explanation_audit.json (sanity checks, faithfulness, localisation, "
            f"shortcut audit), {len(rows)} entries"
            + (f"; the first {AUDIT_MAX_ROWS} are shown." if len(rows) > AUDIT_MAX_ROWS else "."),
            style="small",
        )
        story += data_table(
            ["Audit entry", "Value"],
            [[k, v] for k, v in rows[:AUDIT_MAX_ROWS]],
            col_widths=[80, 94],
            align=["LEFT", "LEFT"],
        )
    else:
        story += paragraph(
            "Not run: the bundle holds no explanation audit (explanation_audit.json). Whether "
            "the explanations below are faithful to the model, localise the finding or reveal "
            "a shortcut has not been tested for this report."
        )
    story += heading("5.2 Case gallery", 1)
    gallery = list((b.cases or {}).get("gallery", []) or [])
    if not gallery:
        return story + paragraph("No case gallery in this bundle.")
    story += paragraph(
        "Highest-scoring true positives, highest-scoring false positives and lowest-scoring "
        "false negatives, each explained by several methods. A heatmap shows what influenced "
        "the model's score, not where disease is. "
        + OVERLAY_COLOUR_RULE
        + " Case ids are pseudonymous"
        + (
            "; patient identifiers from the DICOM headers are shown in brackets "
            "(--include-identifiers)."
            if include_identifiers
            else "."
        ),
        style="small",
    )
    from reportlab.platypus import KeepTogether, Table, TableStyle

    for case in gallery:
        who = ""
        if include_identifiers:
            ident = case.get("identifiers") or {}
            who = (
                f" [patient ID {ident.get('patient_id') or '–'}, "
                f"name {ident.get('patient_name') or '–'}]"
            )
        title = paragraph(
            f"{case.get('kind', '')}: case {case.get('case_id')}{who} (reference "
            f"{case.get('label')}, score {fmt(case.get('score'))})",
            style="h3",
        )
        pngs = [
            (_gallery_caption(o), _gallery_png(bundle_dir, o)) for o in case.get("overlays", [])
        ]
        pngs = [(m, p) for m, p in pngs if p is not None]
        if not pngs:
            story += title
            story += paragraph(
                "overlay images not available (bundle folder not given)", style="small"
            )
            continue
        w = min(55.0, 170.0 / len(pngs))
        cells = [image(p, width_mm=w - 3) + paragraph(m, style="caption") for m, p in pngs]
        t = Table([cells], colWidths=[w * 2.8346] * len(cells), hAlign="LEFT")
        t.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))  # images level
        story.append(KeepTogether([*title, t]))
    return story


def _gallery_caption(overlay: Mapping[str, Any]) -> str:
    """Method name, marked when the map failed its trust card (never shown as evidence)."""
    import re

    method = str(overlay.get("method", ""))
    if overlay.get("trusted") is False:
        failed = re.search(r"\((failed: [^)]*)\)", str(overlay.get("trust_label") or ""))
        which = f" ({failed.group(1)})" if failed else ""
        return f"{method}: FAILED trust checks{which}, not evidence"
    if overlay.get("trusted") is True:
        return f"{method}: passed trust checks"
    return f"{method}: trust not checked"


def _limitations(b: EvidenceBundle, ev: Mapping[str, Any]) -> list[Any]:
    story: list[Any] = heading("6 Limitations and plan deviations", 0)
    dev = list(ev.get("acceptance", {}).get("deviations", []) or [])
    dev += [
        d
        for d in ev.get("plan", {}).get("definition", {}).get("deviations", []) or []
        if d not in dev
    ]
    story += paragraph(
        "Plan deviations: " + ("; ".join(map(str, dev)) if dev else "none recorded.")
    )
    notes = list(ev.get("provenance", {}).get("notes", []) or [])
    items = [
        "Retrospective evaluation on the cases in the predictions file; it does not show "
        "clinical benefit.",
        "Cohorts with few cases or positives (marked *) have wide CIs; their p-values are "
        "multiplicity-adjusted and exploratory.",
        "Explanation maps show what influenced the model, not where disease is.",
    ]
    if not b.audit:
        items.append("The explanation audit was not run for this report.")
    story += _findings_list(
        ev,
        b.audit,
        "Limitations found in this evidence",
        "From the evidence itself (the same findings as in the executive summary):",
    )
    story += paragraph("Known limitations:", style="h3")
    for text in items + [str(n) for n in notes]:
        story += paragraph(f"• {text}")
    return story


def _guidelines() -> list[Any]:
    story: list[Any] = heading("7 Guideline map", 0)
    story += paragraph(
        "Where this report answers reporting-guideline items. Items marked 'not covered' "
        "must be answered in the study protocol or manuscript; the report cannot know them.",
        style="small",
    )
    rows = [[g, item, topic, section or "not covered"] for g, item, topic, section in GUIDELINE_MAP]
    missing = [i for i, r in enumerate(GUIDELINE_MAP) if r[3] is None]
    story += data_table(
        ["Guideline", "Item", "Topic", "Section"],
        rows,
        col_widths=[24, 14, 86, 50],
        align=["LEFT", "LEFT", "LEFT", "LEFT"],
        highlight_rows=missing,
    )
    return story


def _appendix(b: EvidenceBundle, ev: Mapping[str, Any]) -> list[Any]:
    prov = b.provenance or {}
    story: list[Any] = heading("8 Reproducibility appendix", 0)
    plan = ev.get("plan", {})
    rows: list[tuple[str, Any]] = [
        (
            "Seeds",
            ", ".join(f"{k}={v}" for k, v in sorted((prov.get("seeds") or {}).items())) or "–",
        ),
        (
            "Bootstrap",
            ", ".join(f"{k}={v}" for k, v in sorted((plan.get("bootstrap") or {}).items())) or "–",
        ),
        ("Python", str((prov.get("python") or {}).get("version", "–"))),
        (
            "Platform",
            ", ".join(f"{k}={v}" for k, v in sorted((prov.get("platform") or {}).items())),
        ),
        (
            "torch",
            ", ".join(f"{k}={v}" for k, v in sorted((prov.get("torch") or {}).items())) or "–",
        ),
    ]
    for name, digest in sorted((prov.get("sha256") or {}).items()):
        rows.append((f"SHA-256 {name}", str(digest)))
    for name, digest in sorted(b.part_sha256.items()):
        rows.append((f"SHA-256 part {name}", str(digest)))
    for key, value in sorted((ev.get("provenance") or {}).items()):
        if key in ("notes",):
            continue
        rows.append((f"validation {key}", _plain(value)))
    story += key_value_table(rows, key_width_mm=50)
    config = prov.get("config")
    if config:
        story += paragraph("Run configuration", style="h3")
        story += data_table(
            ["Setting", "Value"],
            [[k, v] for k, v in _flatten(config)],
            col_widths=[70, 104],
            align=["LEFT", "LEFT"],
        )
    return story


def regulatory_story(
    bundle: EvidenceBundle,
    *,
    bundle_dir: str | os.PathLike[str] | None = None,
    include_identifiers: bool = False,
) -> list[Any]:
    """The story builders of the regulatory report for one evidence bundle.

    Parameters
    ----------
    bundle : EvidenceBundle
        Must hold a validation part.
    bundle_dir : path, optional
        The bundle folder, where the case-gallery PNGs listed in ``cases.json`` live
        (their SHA-256 is checked); without it the gallery shows no images.
    include_identifiers : bool, default False
        Show the patient identifiers the bundle holds (a bundle written by
        ``medlens run --include-identifiers``) next to the gallery's case ids, and say so
        on the cover. Off: pseudonymous case ids only, whatever the bundle holds.

    Returns
    -------
    list
        Story builders for :func:`medlens.reports.build_pdf`.

    Raises
    ------
    EvidenceError
        If the bundle has no validation part, a gallery image is missing or changed, or
        identifiers are asked for and the bundle holds none.
    """
    if not isinstance(bundle, EvidenceBundle):
        raise param_error("bundle", "regulatory_story", "an EvidenceBundle", type(bundle).__name__)
    if not isinstance(include_identifiers, bool):
        raise param_error("include_identifiers", "regulatory_story", "a bool", include_identifiers)
    if bundle.validation is None:
        raise EvidenceError(NO_VALIDATION, source=bundle.report_id)
    if include_identifiers and not (bundle.provenance or {}).get("identifiers_included"):
        raise EvidenceError(NO_IDENTIFIERS, source=bundle.report_id)
    ev = bundle.validation
    folder = Path(bundle_dir) if bundle_dir is not None else None

    def section(fn: Any, *args: Any) -> Any:
        def build(ctx: PdfContext) -> list[Any]:
            return fn(*args)

        return build

    return [
        section(_cover, bundle, ev, include_identifiers),
        section(_acceptance, ev, bundle.audit),
        page_break(),
        section(_flow, ev, bundle.cases),
        page_break(),
        section(_cohorts, ev),
        page_break(),
        section(_performance, bundle, ev),
        page_break(),
        section(_explanations, bundle, folder, include_identifiers),
        page_break(),
        section(_limitations, bundle, ev),
        section(_guidelines),
        page_break(),
        section(_appendix, bundle, ev),
    ]


def write_regulatory_report(
    bundle_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    verify: bool = True,
    include_identifiers: bool = False,
) -> Path:
    """Render the regulatory PDF from an evidence bundle folder (nothing is recomputed).

    Parameters
    ----------
    bundle_dir : path
        Folder written by :func:`medlens.reports.write_bundle` (``bundle.json`` and parts).
    out : path
        PDF to write (atomically). The same bundle gives byte-identical PDFs.
    verify : bool, default True
        Check the parts' SHA-256 against ``bundle.json``.
    include_identifiers : bool, default False
        See :func:`regulatory_story` (``--include-identifiers``).

    Returns
    -------
    Path
        The written PDF.
    """
    bundle = read_bundle(bundle_dir, verify=verify)
    story = regulatory_story(bundle, bundle_dir=bundle_dir, include_identifiers=include_identifiers)
    meta = pdf_metadata(bundle)
    if include_identifiers:
        meta["subject"] += "; CONTAINS PATIENT IDENTIFIERS (requested with --include-identifiers)"
    return build_pdf(out, story, **meta, header_right="Regulatory evidence report")
