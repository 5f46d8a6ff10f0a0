"""The analysed population: test split, operating threshold (locked on the tuning split),
predictions, patients (bootstrap clusters), site strata and cohort partitions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medlens._errors import ConfigError, InputDataError

from ._bootstrap import Partition
from ._cohorts import cohort_codes
from ._inputs import CaseInputs, patient_codes, select_rows
from ._multiclass import predict_classes
from ._plan import THRESHOLD_OUT_OF_RANGE, AnalysisPlan
from ._roc import choose_threshold

__all__ = ["Population", "analysis_population", "lock_threshold"]

NO_TEST_ROWS = "no rows with {col} == {want!r}; values present: {have}. Set analysis.test_split in the plan (null = all rows)."
NO_TUNING_ROWS = (
    "threshold rule {rule!r} needs tuning rows ({col} == {want!r}); values present: {have}."
)
MISSING_PATIENT = "{count} rows have no patient id in column {col!r}; every case needs one (or drop the patient column)."
NO_ANALYSABLE = (
    "no analysable cases: every case in the test population has status failed/indeterminate."
)
ARGMAX_SOURCE = "multi-class: the predicted class is the one with the highest probability (ties: first in classes)"


@dataclass(frozen=True)
class Population:
    """Cases analysed: rows ``idx`` of the table (test split, status ok) out of the test
    population ``test_idx``; ``y``, ``s`` and ``pred`` are (n,) for a binary task and
    (n, K) otherwise; ``clusters`` are patient codes 0..P-1 (one per case without a
    patient column); ``strata`` site codes per case, or None."""

    test_idx: np.ndarray
    idx: np.ndarray
    y: np.ndarray
    s: np.ndarray
    pred: np.ndarray
    clusters: np.ndarray
    clustered: bool
    strata: np.ndarray | None
    partitions: list[Partition]
    threshold: float
    threshold_info: dict[str, Any]


def _values_present(frame: pd.DataFrame, col: str | None) -> list[str]:
    return sorted(frame[col].astype(str).unique().tolist())[:10] if col else []


def _test_mask(inputs: CaseInputs, plan: AnalysisPlan) -> np.ndarray:
    split = inputs.cols["split"]
    mask = select_rows(inputs.frame, split, plan.analysis.test_split)
    if split and plan.analysis.test_split is not None and not mask.any():
        raise InputDataError(
            NO_TEST_ROWS.format(
                col=repr(split),
                want=plan.analysis.test_split,
                have=_values_present(inputs.frame, split),
            ),
            source=inputs.source,
        )
    return mask


def lock_threshold(
    inputs: CaseInputs, plan: AnalysisPlan, threshold: float | None
) -> tuple[float, dict[str, Any]]:
    """The operating threshold and where it came from: argmax (multi-class), fixed (command
    line, plan or 0.5), or chosen on the tuning split and then locked.

    Raises
    ------
    ConfigError
        ``threshold`` outside [0, 1] (scores are probabilities, logits converted first).
    """
    rule = plan.threshold
    if threshold is not None and not 0.0 <= threshold <= 1.0:  # NaN fails too
        raise ConfigError(THRESHOLD_OUT_OF_RANGE.format(value=threshold), source="threshold")
    if plan.task == "multiclass":
        return math.nan, {"rule": "argmax", "value": None, "source": ARGMAX_SOURCE}
    if rule.rule == "fixed":
        thr = float(
            threshold if threshold is not None else (rule.value if rule.value is not None else 0.5)
        )
        return thr, {
            "rule": "fixed",
            "value": thr,
            "source": "command line"
            if threshold is not None
            else ("plan" if rule.value is not None else "default 0.5"),
        }
    split = inputs.cols["split"]
    tune = (
        select_rows(inputs.frame, split, rule.tuning_split) & inputs.ok
        if split
        else np.zeros(len(inputs.frame), bool)
    )
    if not tune.any():
        raise InputDataError(
            NO_TUNING_ROWS.format(
                rule=rule.rule,
                col=repr(split),
                want=rule.tuning_split,
                have=_values_present(inputs.frame, split),
            ),
            source=inputs.source,
        )
    thr = choose_threshold(inputs.y[tune], inputs.s[tune], rule=rule.rule, target=rule.target)
    return thr, {
        "rule": rule.rule,
        "target": rule.target,
        "value": thr,
        "source": f"chosen on split {rule.tuning_split!r} ({int(tune.sum())} cases), then locked",
    }


def _clusters(inputs: CaseInputs, sub: pd.DataFrame, n: int) -> tuple[np.ndarray, bool]:
    col = inputs.cols["patient"]
    if not col:
        return np.arange(n), False
    pid = inputs.frame[col][inputs.ok]  # a failed case without a patient id is still counted
    if pid.isna().any():
        raise InputDataError(
            MISSING_PATIENT.format(count=int(pid.isna().sum()), col=col), source=inputs.source
        )
    cl = patient_codes(sub[col])
    return cl, bool(np.bincount(cl).max() > 1)


def _strata(
    inputs: CaseInputs,
    plan: AnalysisPlan,
    sub: pd.DataFrame,
    cl: np.ndarray,
    deviations: list[str],
    notes: list[str],
) -> np.ndarray | None:
    if not plan.analysis.bootstrap.stratify_by_site:
        return None
    if not inputs.cols["site"]:
        notes.append("no site column: the bootstrap is not stratified")
        return None
    site_codes, _ = cohort_codes(sub[inputs.cols["site"]])
    per_patient = pd.Series(site_codes).groupby(cl).nunique()
    if (per_patient > 1).any():
        deviations.append(
            f"bootstrap not stratified by site: {int((per_patient > 1).sum())} patients appear at more than one site"
        )
        return None
    return site_codes


def _partitions(inputs: CaseInputs, plan: AnalysisPlan, sub: pd.DataFrame) -> list[Partition]:
    """Overall, then every cohort column, then the opt-in intersections."""
    parts = [Partition("overall", np.zeros(len(sub), dtype=np.int64), ("all",))]
    for c in inputs.cols["cohorts"]:
        codes, values = cohort_codes(sub[c])
        parts.append(Partition(c, codes, values))
    for group in plan.subgroups.intersections:
        combined = sub[group].astype("string").fillna("missing").agg("|".join, axis=1)
        codes, values = cohort_codes(combined)
        parts.append(Partition("*".join(group), codes, values))
    return parts


def analysis_population(
    inputs: CaseInputs,
    plan: AnalysisPlan,
    *,
    threshold: float | None,
    deviations: list[str],
    notes: list[str],
) -> Population:
    """Select and describe the analysed cases; appends to ``deviations`` / ``notes``."""
    test_mask = _test_mask(inputs, plan)
    thr, thr_info = lock_threshold(inputs, plan, threshold)
    analysed = test_mask & inputs.ok
    if not analysed.any():
        raise InputDataError(NO_ANALYSABLE, source=inputs.source)
    idx = np.flatnonzero(analysed)
    y, s = inputs.y[idx], inputs.s[idx]
    if plan.task == "binary":
        pred = (s >= thr).astype(np.int8)
    else:
        pred = predict_classes(s, task=plan.task, threshold=thr)
    sub = inputs.frame.iloc[idx]
    cl, clustered = _clusters(inputs, sub, idx.size)
    strata = _strata(inputs, plan, sub, cl, deviations, notes)
    return Population(
        np.flatnonzero(test_mask),
        idx,
        y,
        s,
        pred,
        cl,
        clustered,
        strata,
        _partitions(inputs, plan, sub),
        thr,
        thr_info,
    )
