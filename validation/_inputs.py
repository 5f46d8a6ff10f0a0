"""Checked per-case inputs of the validation engine: columns, labels, scores and status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from medlens._errors import InputDataError

from ._common import check_binary, check_probabilities
from ._data import PredictionTable, check_case_ids, check_status, require_columns
from ._multiclass import class_inputs
from ._plan import AUTO, DEFAULT_COHORTS, AnalysisPlan

__all__ = [
    "CaseInputs",
    "label_column",
    "patient_codes",
    "read_inputs",
    "resolve_columns",
    "score_column",
    "select_rows",
]


@dataclass(frozen=True)
class CaseInputs:
    """Every row of the predictions table, checked.

    ``y`` / ``s`` are the 0/1 labels and probabilities, of shape (n,) for a binary task
    and (n, K) (one-vs-rest indicator, per-class probability) otherwise; scores are NaN
    in rows whose status is not ok.
    """

    frame: pd.DataFrame
    source: str
    cols: dict[str, Any]
    status: np.ndarray
    ok: np.ndarray
    y: np.ndarray
    s: np.ndarray
    classes: tuple[str, ...] | None


def resolve_columns(plan: AnalysisPlan, frame: pd.DataFrame) -> dict[str, Any]:
    """Column names of the plan, with "auto" resolved against the table."""
    c = plan.columns
    cols = set(frame.columns)

    def default(value: str | None, name: str) -> str | None:
        if value == AUTO:
            return name if name in cols else None
        return value

    cohorts = c.cohorts if c.cohorts is not None else [x for x in DEFAULT_COHORTS if x in cols]
    subgroup_cols = plan.subgroups.columns if plan.subgroups.columns is not None else cohorts
    return {
        "case_id": c.case_id,
        "label": c.label,
        "score": c.score,
        "patient": default(c.patient, "patient_key"),
        "site": default(c.site, "site"),
        "split": default(c.split, "split"),
        "status": default(c.status, "status"),
        "cohorts": list(dict.fromkeys(subgroup_cols)),
    }


def label_column(series: pd.Series, plan: AnalysisPlan, source: str) -> np.ndarray:
    """0/1 labels of a binary task (mapped through ``plan.classes`` when declared)."""
    if series.isna().any():
        raise InputDataError(
            f"{int(series.isna().sum())} cases have no label; every case needs a reference label.",
            source=f"{source}:{series.name}",
        )
    if plan.classes is not None:
        neg, pos = plan.classes
        text = series.astype(str).to_numpy()
        bad = sorted(set(text.tolist()) - {str(neg), str(pos)})
        if bad:
            raise InputDataError(
                f"labels must be one of the declared classes {[neg, pos]}; found {bad[:5]}.",
                source=f"{source}:{series.name}",
            )
        return (text == str(pos)).astype(np.int8)
    try:
        return check_binary(series.to_numpy(), f"label column {series.name!r}")
    except InputDataError as exc:
        raise InputDataError(exc.message, source=source) from None


def score_column(series: pd.Series, plan: AnalysisPlan, ok: np.ndarray, source: str) -> np.ndarray:
    """Probabilities of one score column (NaN where not ``ok``)."""
    values = pd.to_numeric(series, errors="coerce")
    bad_text = values.isna() & series.notna()
    if bad_text.any():
        ex = series[bad_text].astype(str).unique()[:3].tolist()
        raise InputDataError(
            f"score column {series.name!r} has non-numeric values, e.g. {ex}.", source=source
        )
    s = values.to_numpy(dtype=np.float64)
    if plan.score_type == "logit":
        s = special.expit(s)
    try:
        s_ok = check_probabilities(s[ok], f"score column {series.name!r}", probabilities=True)
    except InputDataError as exc:
        raise InputDataError(exc.message, source=source) from None
    out = np.full(s.shape, np.nan)
    out[ok] = s_ok
    return out


def patient_codes(ids: pd.Series) -> np.ndarray:
    """Codes 0..P-1 of patient ids in sorted order of their text (independent of row order)."""
    codes, _ = pd.factorize(ids.astype(str).to_numpy(dtype=object), sort=True)
    return codes.astype(np.int64)


def select_rows(frame: pd.DataFrame, col: str | None, want: str | None) -> np.ndarray:
    """Rows where ``frame[col] == want`` (every row when either is None)."""
    if col is None or want is None:
        return np.ones(len(frame), dtype=bool)
    return (frame[col].astype("string") == str(want)).fillna(False).to_numpy(dtype=bool)


def _require_plan_columns(frame: pd.DataFrame, cols: dict[str, Any], plan: AnalysisPlan, src: str):
    require_columns(
        frame,
        [
            (cols["case_id"], "case id", "Set columns.case_id in the plan."),
            (
                cols["label"] if plan.task != "multilabel" else None,
                "label",
                "Set columns.label in the plan or --label-col.",
            ),
            (
                cols["score"] if plan.task == "binary" else None,
                "score",
                "Set columns.score in the plan or --score-col.",
            ),
            (cols["patient"], "patient id", "Set columns.patient in the plan or --patient-col."),
            (cols["site"], "site", "Set columns.site in the plan."),
            (cols["split"], "split", "Set columns.split in the plan."),
            (cols["status"], "status", "Set columns.status in the plan."),
        ]
        + [(c, "cohort", "Fix the subgroup/cohort column list.") for c in cols["cohorts"]]
        + [
            (c, "cohort intersection", "Fix subgroups.intersections.")
            for group in plan.subgroups.intersections
            for c in group
        ],
        src,
    )


def read_inputs(table: PredictionTable, plan: AnalysisPlan) -> CaseInputs:
    """Check the table against the plan: columns present, unique case ids, known status
    values, labels and probabilities valid for the task."""
    frame, src = table.frame, table.source
    cols = resolve_columns(plan, frame)
    _require_plan_columns(frame, cols, plan, src)
    check_case_ids(frame[cols["case_id"]], src)
    status = (
        check_status(frame[cols["status"]], src)
        if cols["status"]
        else np.full(len(frame), "ok", dtype=object)
    )
    ok = status == "ok"
    classes: tuple[str, ...] | None = None
    if plan.task == "binary":
        y = label_column(frame[cols["label"]], plan, src)
        s = score_column(frame[cols["score"]], plan, ok, src)
    else:
        try:
            classes, y, s = class_inputs(
                frame,
                task=plan.task,
                label=cols["label"],
                score_pattern=plan.columns.score_pattern,
                label_pattern=plan.columns.label_pattern,
                classes=plan.classes,
                score_type=plan.score_type,
                ok=ok,
            )
        except InputDataError as exc:
            raise InputDataError(exc.message, source=src) from None
    return CaseInputs(frame, src, cols, status, ok, y, s, classes)
