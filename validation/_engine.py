"""The validation engine: predictions table + analysis plan -> :class:`ValidationReport`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from medlens._errors import InputDataError

from ._bootstrap import Partition, cluster_bootstrap, replicate_weights
from ._calibration import RECALIBRATORS, CalibrationResult, calibration, calibration_slope_intercept
from ._cohorts import CohortTable, adjust_pvalues, cohort_codes, cohort_table_columns, worst_value
from ._common import UndefinedMetricWarning, check_binary, check_probabilities, warn_undefined
from ._counts import (
    ConfusionCounts,
    accuracy,
    balanced_accuracy,
    confusion_counts,
    f1_score,
    likelihood_ratio_negative,
    likelihood_ratio_positive,
    npv,
    ppv,
    sensitivity,
    specificity,
)
from ._data import PredictionTable, check_case_ids, check_status, load_predictions, require_columns
from ._multiclass import class_inputs, predict_classes
from ._plan import AUTO, DEFAULT_COHORTS, EVIDENCE_METRICS, AnalysisPlan, Endpoint
from ._proportions import MetricEstimate
from ._roc import (
    average_precision,
    choose_threshold,
    delong_test,
    roc_auc,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
)

__all__ = ["CriterionResult", "GroupResult", "ValidationReport", "evaluate"]

LOWER_IS_BETTER = frozenset({"brier", "ece", "lr_negative"})
PROPORTIONS = ("sensitivity", "specificity", "ppv", "npv", "accuracy")
NO_TEST_ROWS = "no rows with {col} == {want!r}; values present: {have}. Set analysis.test_split in the plan (null = all rows)."
NO_TUNING_ROWS = (
    "threshold rule {rule!r} needs tuning rows ({col} == {want!r}); values present: {have}."
)
MISSING_PATIENT = "{count} rows have no patient id in column {col!r}; every case needs one (or drop the patient column)."
OVERALL = ("overall", "all")
BOOT_METHOD = "cluster-bootstrap-percentile"
ROW_BOOT_METHOD = "bootstrap-percentile"


@dataclass(frozen=True)
class GroupResult:
    """Results for one population (all cases or one cohort value)."""

    name: str
    n: int
    n_positive: int
    n_negative: int
    n_patients: int
    confusion: ConfusionCounts
    threshold: float
    metrics: Mapping[str, MetricEstimate]
    design_effect: Mapping[str, float]
    flags: Mapping[str, str]
    difference: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    at_prevalence: Mapping[str, MetricEstimate] | None = None
    per_class: Mapping[str, GroupResult] = field(default_factory=dict)
    decision_rule: str | None = None


@dataclass(frozen=True)
class CriterionResult:
    """Pass/fail of one endpoint, judged on the relevant confidence bound."""

    name: str
    metric: str
    operator: str
    goal: float
    primary: bool
    estimate: float
    ci_low: float
    ci_high: float
    method: str
    bound: float
    outcome: str  # "pass", "fail" or "not_evaluable"
    worst_case: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ValidationReport:
    """Everything :func:`evaluate` found; :func:`medlens.validation.to_evidence` turns it
    into the JSON evidence contract."""

    overall: GroupResult
    cohorts: Mapping[str, Mapping[str, GroupResult]]
    cohort_tables: Mapping[str, CohortTable]
    calibration: CalibrationResult | None
    recalibration: Mapping[str, Any] | None
    acceptance: Mapping[str, Any]
    criteria: tuple[CriterionResult, ...]
    failed_cases: Mapping[str, Any]
    plan: AnalysisPlan
    plan_info: Mapping[str, Any]
    provenance: Mapping[str, Any]
    notes: tuple[str, ...] = ()
    secondary: Mapping[str, Any] | None = None
    task: str = "binary"
    classes: tuple[str, ...] | None = None


def _resolve_columns(plan: AnalysisPlan, frame: pd.DataFrame) -> dict[str, Any]:
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


def _labels(series: pd.Series, plan: AnalysisPlan, source: str) -> np.ndarray:
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


def _scores(series: pd.Series, plan: AnalysisPlan, ok: np.ndarray, source: str) -> np.ndarray:
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


def _patient_codes(ids: pd.Series) -> np.ndarray:
    """Codes 0..P-1 of patient ids in sorted order of their text (independent of row order)."""
    codes, _ = pd.factorize(ids.astype(str).to_numpy(dtype=object), sort=True)
    return codes.astype(np.int64)


def _percentile_ci(reps: np.ndarray, alpha: float) -> tuple[float, float, str | None]:
    ok = reps[~np.isnan(reps)]
    if ok.size < max(10, 0.5 * reps.size):
        return math.nan, math.nan, f"only {ok.size} of {reps.size} bootstrap replicates defined"
    lo, hi = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
    note = (
        None
        if ok.size == reps.size
        else f"{reps.size - ok.size} of {reps.size} bootstrap replicates undefined and left out"
    )
    return float(lo), float(hi), note


def _design_effect(num: np.ndarray, den: np.ndarray, cl: np.ndarray) -> float:
    """Ratio of the cluster (ratio-estimator) variance of a proportion to the binomial one."""
    d = den.astype(bool)
    if d.sum() < 2:
        return math.nan
    x = np.bincount(cl[d], weights=num[d].astype(np.float64))
    m = np.bincount(cl[d]).astype(np.float64)
    keep = m > 0
    x, m = x[keep], m[keep]
    k, n = x.size, m.sum()
    p = x.sum() / n
    if k < 2 or p in (0.0, 1.0):
        return math.nan
    var_c = k / (k - 1) * np.sum((x - p * m) ** 2) / n**2
    return float(var_c / (p * (1 - p) / n))


def _group(
    name: str,
    idx: np.ndarray,
    y: np.ndarray,
    s: np.ndarray,
    pred: np.ndarray,
    cl: np.ndarray,
    clustered: bool,
    threshold: float,
    reps: Mapping[str, np.ndarray] | None,
    plan: AnalysisPlan,
    rank_boot: bool,
) -> tuple[GroupResult, list[str]]:
    alpha = plan.analysis.alpha
    ci = plan.analysis.proportion_ci
    sub = plan.subgroups
    yy, ss, pp, cc = y[idx], s[idx], pred[idx], cl[idx]
    counts = confusion_counts(yy, pp)
    label = None if name == "overall" else name
    m: dict[str, MetricEstimate] = {}
    auc_design_effect: float | None = None
    m["sensitivity"] = sensitivity(counts, ci=ci, alpha=alpha, cohort=label)
    m["specificity"] = specificity(counts, ci=ci, alpha=alpha, cohort=label)
    m["ppv"] = ppv(counts, ci=ci, alpha=alpha, cohort=label)
    m["npv"] = npv(counts, ci=ci, alpha=alpha, cohort=label)
    m["accuracy"] = accuracy(counts, ci=ci, alpha=alpha, cohort=label)
    m["balanced_accuracy"] = balanced_accuracy(counts, alpha=alpha, cohort=label)
    m["f1"] = f1_score(counts, cohort=label)
    m["lr_positive"] = likelihood_ratio_positive(counts, alpha=alpha, cohort=label)
    m["lr_negative"] = likelihood_ratio_negative(counts, alpha=alpha, cohort=label)
    if yy.size:
        auc = roc_auc(
            yy, ss, clusters=cc if clustered else None, alpha=alpha, cohort=label, curve=False
        )
        m["auc"] = MetricEstimate(auc.estimate, auc.ci_low, auc.ci_high, auc.method, auc.note)
        auc_design_effect = auc.design_effect
        m["average_precision"] = average_precision(yy, ss, cohort=label)
        m["brier"] = MetricEstimate(float(np.mean((ss - yy) ** 2)), math.nan, math.nan, "none")
        nb = plan.analysis.calibration.n_bins
        bins = np.minimum((ss * nb).astype(np.int64), nb - 1)
        ece = float(np.abs(np.bincount(bins, weights=ss - yy, minlength=nb)).sum() / yy.size)
        m["ece"] = MetricEstimate(ece, math.nan, math.nan, "none")
        slope, intercept = calibration_slope_intercept(
            yy, ss, clusters=cc if clustered else None, alpha=alpha, cohort=label
        )
        m["calibration_slope"], m["calibration_intercept"] = slope, intercept
    else:
        for key in (
            "auc",
            "average_precision",
            "brier",
            "ece",
            "calibration_slope",
            "calibration_intercept",
        ):
            m[key] = MetricEstimate(
                math.nan, math.nan, math.nan, "none", warn_undefined(key, "no cases", label)
            )
    # bootstrap intervals: every interval under clustering (except AUC and the logistic
    # calibration parameters, which have clustered analytic variances); otherwise only
    # where no analytic interval exists.
    boot_method = BOOT_METHOD if clustered else ROW_BOOT_METHOD
    needs_boot = {"f1", "brier", "ece"} | ({"average_precision"} if rank_boot else set())
    if clustered:
        needs_boot |= {
            "sensitivity",
            "specificity",
            "ppv",
            "npv",
            "accuracy",
            "balanced_accuracy",
            "lr_positive",
            "lr_negative",
        }
    for key in list(m):
        est = m[key]
        if key == "average_precision" and not rank_boot and not math.isnan(est.estimate):
            m[key] = MetricEstimate(
                est.estimate,
                math.nan,
                math.nan,
                "none",
                "no interval: bootstrap of rank metrics disabled in the plan (analysis.bootstrap.rank_metrics)",
            )
            continue
        if key not in needs_boot or reps is None or math.isnan(est.estimate):
            continue
        lo, hi, note = _percentile_ci(reps[key], alpha)
        m[key] = MetricEstimate(est.estimate, lo, hi, boot_method, note or est.note)
    deff = {}
    if clustered:
        pos, neg = yy == 1, yy == 0
        deff = {
            "sensitivity": _design_effect(pp, pos, cc),
            "specificity": _design_effect(1 - pp, neg, cc),
            "ppv": _design_effect(yy, pp == 1, cc),
            "npv": _design_effect(1 - yy, pp == 0, cc),
            "accuracy": _design_effect((yy == pp).astype(np.int8), np.ones_like(yy), cc),
        }
        if auc_design_effect is not None:
            deff["auc"] = auc_design_effect
    flags: dict[str, str] = {}
    npos, nneg = counts.n_positive, counts.n_negative
    if npos < sub.min_positives:
        for key in (
            "sensitivity",
            "auc",
            "average_precision",
            "lr_positive",
            "lr_negative",
            "balanced_accuracy",
            "f1",
        ):
            flags[key] = f"fewer than {sub.min_positives} positives ({npos})"
    if nneg < sub.min_negatives:
        for key in ("specificity", "auc", "lr_positive", "lr_negative", "balanced_accuracy"):
            flags.setdefault(key, f"fewer than {sub.min_negatives} negatives ({nneg})")
    if counts.n < sub.min_n:
        for key in EVIDENCE_METRICS:
            flags.setdefault(key, f"fewer than {sub.min_n} cases ({counts.n})")
    n_pat = int(np.count_nonzero(np.bincount(cc))) if clustered and cc.size else counts.n
    at_prev = None
    if plan.analysis.prevalence is not None:
        pi = plan.analysis.prevalence
        at_prev = {
            "ppv": ppv(counts, ci=ci, alpha=alpha, cohort=label, prevalence=pi),
            "npv": npv(counts, ci=ci, alpha=alpha, cohort=label, prevalence=pi),
        }
    return GroupResult(
        name, counts.n, npos, nneg, n_pat, counts, threshold, m, deff, flags, {}, at_prev
    ), []


def _select_rows(frame: pd.DataFrame, col: str | None, want: str | None) -> np.ndarray:
    if col is None or want is None:
        return np.ones(len(frame), dtype=bool)
    return (frame[col].astype("string") == str(want)).fillna(False).to_numpy(dtype=bool)


def _criterion(ep: Endpoint, est: MetricEstimate, primary: bool) -> CriterionResult:
    bound = est.ci_low if ep.operator == ">=" else est.ci_high
    if bound is None or math.isnan(bound):
        outcome = "not_evaluable"
    elif ep.operator == ">=":
        outcome = "pass" if bound >= ep.goal else "fail"
    else:
        outcome = "pass" if bound <= ep.goal else "fail"
    name = ep.name or f"{ep.metric} {ep.operator} {ep.goal:g}"
    return CriterionResult(
        name,
        ep.metric,
        ep.operator,
        float(ep.goal),
        primary,
        est.estimate,
        est.ci_low,
        est.ci_high,
        est.method,
        bound,
        outcome,
    )


def evaluate(
    data: str | Path | pd.DataFrame | PredictionTable,
    plan: AnalysisPlan | None = None,
    *,
    plan_sha256: str | None = None,
    source: str | None = None,
    threshold: float | None = None,
) -> ValidationReport:
    """Validate predictions against an analysis plan.

    Parameters
    ----------
    data : path to CSV/parquet, DataFrame or PredictionTable
        One row per case: case id, label, score, optional patient/site/split/status and
        cohort columns (see :mod:`medlens.validation._plan` for the defaults).
    plan : AnalysisPlan, optional
        The prespecified plan; omitted: defaults (quick analysis, no endpoints).
    plan_sha256 : str, optional
        SHA-256 of the plan file, recorded in the provenance.
    threshold : float, optional
        Overrides a fixed threshold (quick mode).

    Returns
    -------
    ValidationReport

    Raises
    ------
    InputDataError
        Missing columns (naming those present), duplicate case ids, missing labels,
        labels outside {0, 1} or the declared classes, NaN scores in ok cases, scores
        outside [0, 1] for probabilities, unknown status values, empty tables or splits.
    """
    table = data if isinstance(data, PredictionTable) else load_predictions(data, source=source)
    plan = plan or AnalysisPlan()
    frame, src = table.frame, table.source
    cols = _resolve_columns(plan, frame)
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
    check_case_ids(frame[cols["case_id"]], src)
    deviations = list(plan.deviations)
    notes: list[str] = []
    status = (
        check_status(frame[cols["status"]], src)
        if cols["status"]
        else np.full(len(frame), "ok", dtype=object)
    )
    ok_all = status == "ok"
    classes: tuple[str, ...] | None = None
    if plan.task == "binary":
        y_all = _labels(frame[cols["label"]], plan, src)
        s_all = _scores(frame[cols["score"]], plan, ok_all, src)
    else:
        try:
            classes, y_mat_all, s_mat_all = class_inputs(
                frame,
                task=plan.task,
                label=cols["label"],
                score_pattern=plan.columns.score_pattern,
                label_pattern=plan.columns.label_pattern,
                classes=plan.classes,
                score_type=plan.score_type,
                ok=ok_all,
            )
        except InputDataError as exc:
            raise InputDataError(exc.message, source=src) from None
        y_all = s_all = None
    # analysis population
    test_mask = _select_rows(frame, cols["split"], plan.analysis.test_split)
    if cols["split"] and plan.analysis.test_split is not None and not test_mask.any():
        have = sorted(frame[cols["split"]].astype(str).unique().tolist())[:10]
        raise InputDataError(
            NO_TEST_ROWS.format(col=repr(cols["split"]), want=plan.analysis.test_split, have=have),
            source=src,
        )
    # threshold: fixed or chosen on the tuning split, then locked
    rule = plan.threshold
    if plan.task == "multiclass":
        thr, thr_info = (
            math.nan,
            {
                "rule": "argmax",
                "value": None,
                "source": "multi-class: the predicted class is the one with the highest probability (ties: first in classes)",
            },
        )
    elif rule.rule == "fixed":
        thr = float(
            threshold if threshold is not None else (rule.value if rule.value is not None else 0.5)
        )
        thr_info: dict[str, Any] = {
            "rule": "fixed",
            "value": thr,
            "source": "command line"
            if threshold is not None
            else ("plan" if rule.value is not None else "default 0.5"),
        }
    else:
        tune = (
            _select_rows(frame, cols["split"], rule.tuning_split) & ok_all
            if cols["split"]
            else np.zeros(len(frame), bool)
        )
        if not tune.any():
            have = (
                sorted(frame[cols["split"]].astype(str).unique().tolist())[:10]
                if cols["split"]
                else []
            )
            raise InputDataError(
                NO_TUNING_ROWS.format(
                    rule=rule.rule, col=repr(cols["split"]), want=rule.tuning_split, have=have
                ),
                source=src,
            )
        thr = choose_threshold(
            y_all[tune],
            s_all[tune],
            rule=rule.rule if rule.rule != "fixed" else "youden",
            target=rule.target,
        )
        thr_info = {
            "rule": rule.rule,
            "target": rule.target,
            "value": thr,
            "source": f"chosen on split {rule.tuning_split!r} ({int(tune.sum())} cases), then locked",
        }
    analysed = test_mask & ok_all
    if not analysed.any():
        raise InputDataError(
            "no analysable cases: every case in the test population has status failed/indeterminate.",
            source=src,
        )
    idx_all = np.flatnonzero(analysed)
    if plan.task == "binary":
        y, s = y_all[idx_all], s_all[idx_all]
        pred = (s >= thr).astype(np.int8)
    else:
        y_mat, s_mat = y_mat_all[idx_all], s_mat_all[idx_all]
        pred_mat = predict_classes(s_mat, task=plan.task, threshold=thr)
    sub = frame.iloc[idx_all]
    # patients and strata
    clustered = False
    if cols["patient"]:
        pid = frame[cols["patient"]]
        if pid.isna().any():
            raise InputDataError(
                MISSING_PATIENT.format(count=int(pid.isna().sum()), col=cols["patient"]), source=src
            )
        cl = _patient_codes(sub[cols["patient"]])
        clustered = bool(np.bincount(cl).max() > 1)
    else:
        cl = np.arange(idx_all.size)
    strata = None
    if plan.analysis.bootstrap.stratify_by_site:
        if cols["site"]:
            site_codes, _ = cohort_codes(sub[cols["site"]])
            per_patient = pd.Series(site_codes).groupby(cl).nunique()
            if (per_patient > 1).any():
                deviations.append(
                    f"bootstrap not stratified by site: {int((per_patient > 1).sum())} patients appear at more than one site"
                )
            else:
                strata = site_codes
        else:
            notes.append("no site column: the bootstrap is not stratified")
    # partitions: overall, cohort columns, intersections
    partitions = [Partition("overall", np.zeros(idx_all.size, dtype=np.int64), ("all",))]
    for c in cols["cohorts"]:
        codes, values = cohort_codes(sub[c])
        partitions.append(Partition(c, codes, values))
    for group in plan.subgroups.intersections:
        combined = sub[group].astype("string").fillna("missing").agg("|".join, axis=1)
        codes, values = cohort_codes(combined)
        partitions.append(Partition("*".join(group), codes, values))
    boot = plan.analysis.bootstrap
    if plan.task == "binary":
        overall, cohorts, tables, worst_all = _analyse(
            y, s, pred, partitions, cl, clustered, strata, thr, plan
        )
    else:
        overall, cohorts, tables, worst_all = _analyse_classes(
            y_mat, s_mat, pred_mat, classes, partitions, cl, clustered, strata, thr, plan
        )
    # calibration of the overall population (+ recalibration on the calibration split)
    cal_set = plan.analysis.calibration
    cal = (
        None
        if plan.task != "binary"
        else calibration(
            y,
            s,
            n_bins=cal_set.n_bins,
            clusters=cl if clustered else None,
            alpha=plan.analysis.alpha,
            n_simulations=cal_set.null_simulations,
            seed=boot.seed,
        )
        if np.unique(y).size == 2
        else None
    )
    if plan.task != "binary":
        notes.append(
            "multi-class/multi-label: calibration is reported per class as metrics (brier, ece, "
            "calibration_slope, calibration_intercept); no reliability curves"
        )
    recal = None
    if cal_set.recalibration != "none":
        cmask = (
            _select_rows(frame, cols["split"], cal_set.calibration_split) & ok_all
            if cols["split"]
            else np.zeros(len(frame), bool)
        )
        if not cmask.any():
            raise InputDataError(
                f"recalibration {cal_set.recalibration!r} needs a calibration split ({cols['split']!r} == {cal_set.calibration_split!r}); none found.",
                source=src,
            )
        model = RECALIBRATORS[cal_set.recalibration]().fit(y_all[cmask], s_all[cmask])
        s_new = model.transform(s)
        params = {k: v for k, v in vars(model).items() if k.endswith("_") and isinstance(v, float)}
        after = calibration(
            y,
            s_new,
            n_bins=cal_set.n_bins,
            clusters=cl if clustered else None,
            alpha=plan.analysis.alpha,
            n_simulations=cal_set.null_simulations,
            seed=boot.seed,
        )
        recal = {
            "method": cal_set.recalibration,
            "fitted_on": f"split {cal_set.calibration_split!r} ({int(cmask.sum())} cases)",
            "params": params,
            "before": cal,
            "after": after,
        }
    # failed / indeterminate cases and the worst-case analysis
    test_idx = np.flatnonzero(test_mask)
    st = status[test_idx]
    secondary = (
        _secondary(frame, idx_all, y, s, cl, clustered, strata, plan, cols, src)
        if plan.task == "binary" and (plan.secondary.comparisons or plan.secondary.operating_points)
        else None
    )
    failed_cases: dict[str, Any] = {
        "n_population": int(test_idx.size),
        "n_analysed": int(idx_all.size),
        "n_failed": int(np.sum(st == "failed")),
        "n_indeterminate": int(np.sum(st == "indeterminate")),
        "handling": "excluded from the main analysis and counted; primary endpoints are re-judged in a worst-case analysis where they count as errors (positives as false negatives, negatives as false positives)",
        "by_cohort": {},
    }
    bad_idx = test_idx[st != "ok"]
    for c in cols["cohorts"]:
        if bad_idx.size:
            codes, values = cohort_codes(frame[c].iloc[test_idx])
            tab = {}
            for v, value in enumerate(values):
                mask = codes == v
                nf, ni = (
                    int(np.sum(mask & (st == "failed"))),
                    int(np.sum(mask & (st == "indeterminate"))),
                )
                if nf or ni:
                    tab[value] = {"failed": nf, "indeterminate": ni}
            failed_cases["by_cohort"][c] = tab
        else:
            failed_cases["by_cohort"][c] = {}
    criteria = [_criterion(ep, overall.metrics[ep.metric], True) for ep in plan.primary_endpoints]
    criteria += [
        _criterion(ep, overall.metrics[ep.metric], False) for ep in plan.secondary_endpoints
    ]
    if plan.primary_endpoints and plan.task != "binary":
        deviations.append(
            "worst-case analysis of failed/indeterminate cases not available for "
            f"{plan.task} tasks; they are counted in failed_cases"
        )
    elif plan.primary_endpoints:
        worst = _worst_case(frame, test_idx, status, y_all, s_all, thr, plan, cols, clustered)
        criteria = [
            CriterionResult(**{**c.__dict__, "worst_case": _worst_entry(c, worst)})
            if c.primary
            else c
            for c in criteria
        ]
    primaries = [c for c in criteria if c.primary]
    if not primaries:
        verdict = "no_primary_endpoints"
    elif all(c.outcome == "pass" for c in primaries):
        verdict = "pass"
    else:
        verdict = "fail"
    acceptance = {
        "verdict": verdict,
        "rule": "an endpoint 'metric >= goal' passes when the lower bound of the two-sided CI is >= goal ('<=': upper bound <= goal); the verdict passes when every primary endpoint passes in the main analysis",
        "confidence_level": 1 - plan.analysis.alpha,
        "worst_case_verdict": None
        if not primaries
        else (
            "pass"
            if all((c.worst_case or {}).get("outcome") == "pass" for c in primaries)
            else "fail"
        ),
        "deviations": deviations,
        "worst_cohort": worst_all,
    }
    plan_info = {
        "columns": cols,
        "threshold": thr_info,
        "clustered": clustered,
        "n_patients": overall.n_patients,
        "bootstrap": {
            "replicates": boot.replicates,
            "seed": boot.seed,
            "stratified_by": cols["site"] if strata is not None else None,
            "unit": "patient" if clustered else "case",
            "rank_metrics": boot.rank_metrics,
        },
        "plan_sha256": plan_sha256,
        "plan_canonical_sha256": plan.sha256(),
    }
    provenance = {
        "source": Path(src).name if not isinstance(data, pd.DataFrame) else src,
        "input_sha256": table.sha256,
        "n_rows_input": int(len(frame)),
        "n_rows_population": int(test_idx.size),
        "n_rows_analysed": int(idx_all.size),
        "split_filter": None
        if not cols["split"] or plan.analysis.test_split is None
        else {"column": cols["split"], "value": plan.analysis.test_split},
        "notes": notes,
    }
    return ValidationReport(
        overall,
        cohorts,
        tables,
        cal,
        recal,
        acceptance,
        tuple(criteria),
        failed_cases,
        plan,
        plan_info,
        provenance,
        tuple(notes),
        secondary,
        plan.task,
        classes,
    )


def _analyse(
    y: np.ndarray,
    s: np.ndarray,
    pred: np.ndarray,
    partitions: list[Partition],
    cl: np.ndarray,
    clustered: bool,
    strata: np.ndarray | None,
    thr: float,
    plan: AnalysisPlan,
    *,
    keep_reps: dict | None = None,
) -> tuple[GroupResult, dict[str, dict[str, GroupResult]], dict[str, CohortTable], dict]:
    """Binary analysis of the overall population and every cohort (bootstrap included)."""
    idx_all = np.arange(y.size)
    boot = plan.analysis.bootstrap
    rank_boot = boot.rank_metrics
    reps = cluster_bootstrap(
        y,
        s,
        pred,
        partitions,
        clusters=cl,
        strata=strata,
        n_replicates=boot.replicates,
        seed=boot.seed,
        n_bins=plan.analysis.calibration.n_bins,
        rank_metrics=rank_boot,
    )
    overall, _ = _group(
        "overall",
        idx_all,
        y,
        s,
        pred,
        cl,
        clustered,
        thr,
        reps.values[OVERALL],
        plan,
        rank_boot,
    )
    cohorts: dict[str, dict[str, GroupResult]] = {}
    tables: dict[str, CohortTable] = {}
    diff_metrics = [k for k in EVIDENCE_METRICS if k in reps.values[OVERALL]]
    family: list[tuple[str, str, str, float]] = []
    for part in partitions[1:]:
        cohorts[part.name] = {}
        for v, value in enumerate(part.values):
            rows = np.flatnonzero(part.codes == v)
            g, _ = _group(
                f"{part.name}={value}",
                rows,
                y,
                s,
                pred,
                cl,
                clustered,
                thr,
                reps.values[(part.name, value)],
                plan,
                rank_boot,
            )
            diffs = {}
            for key in diff_metrics:
                est = g.metrics[key].estimate - overall.metrics[key].estimate
                d = reps.values[(part.name, value)][key] - reps.values[OVERALL][key]
                lo, hi, note = _percentile_ci(d, plan.analysis.alpha)
                dd = d[~np.isnan(d)]
                p = (
                    math.nan
                    if math.isnan(est) or math.isnan(lo)
                    else float(
                        min(1.0, 2 * (min(np.sum(dd <= 0), np.sum(dd >= 0)) + 1) / (dd.size + 1))
                    )
                )
                diffs[key] = {
                    "estimate": est,
                    "ci_low": lo,
                    "ci_high": hi,
                    "p_value": p,
                    "method": f"paired {BOOT_METHOD if clustered else ROW_BOOT_METHOD} of cohort minus overall",
                    "note": note,
                }
                family.append((part.name, value, key, p))
            cohorts[part.name][value] = GroupResult(**{**g.__dict__, "difference": diffs})
    # multiplicity across the subgroup family, per metric
    for key in diff_metrics:
        members = [(c, v, p) for c, v, k, p in family if k == key]
        ps = [p for _, _, p in members]
        holm, bh = adjust_pvalues(ps, method="holm"), adjust_pvalues(ps, method="bh")
        for (c, v, _), ph, pb in zip(members, holm, bh, strict=True):
            d = cohorts[c][v].difference[key]
            d["p_holm"], d["p_bh"] = float(ph), float(pb)
            chosen = {"holm": ph, "bh": pb, "none": d["p_value"]}[plan.subgroups.multiplicity]
            d["p_adjusted"] = float(chosen)
    worst_all: dict[str, dict[str, str | None]] = {}
    for part in partitions[1:]:
        rows_out = []
        for value in part.values:
            g = cohorts[part.name][value]
            row: dict[str, Any] = {
                "cohort_column": part.name,
                "value": value,
                "n": g.n,
                "n_positive": g.n_positive,
                "n_negative": g.n_negative,
                "n_patients": g.n_patients,
            }
            for key in EVIDENCE_METRICS:
                est = g.metrics[key]
                d = g.difference.get(key, {})
                row.update(
                    {
                        f"{key}_estimate": est.estimate,
                        f"{key}_ci_low": est.ci_low,
                        f"{key}_ci_high": est.ci_high,
                        f"{key}_method": est.method,
                        f"{key}_diff": d.get("estimate", math.nan),
                        f"{key}_diff_ci_low": d.get("ci_low", math.nan),
                        f"{key}_diff_ci_high": d.get("ci_high", math.nan),
                        f"{key}_p_value": d.get("p_value", math.nan),
                        f"{key}_p_holm": d.get("p_holm", math.nan),
                        f"{key}_p_bh": d.get("p_bh", math.nan),
                        f"{key}_flag": g.flags.get(key, ""),
                    }
                )
            rows_out.append(row)
        frame_out = pd.DataFrame(rows_out, columns=cohort_table_columns(EVIDENCE_METRICS))
        worst = {
            key: worst_value(
                {v: cohorts[part.name][v].metrics[key].estimate for v in part.values},
                {v: cohorts[part.name][v].flags.get(key) for v in part.values},
                lower_is_better=key in LOWER_IS_BETTER,
            )
            for key in EVIDENCE_METRICS
            if key not in ("calibration_slope", "calibration_intercept")
        }
        tables[part.name] = CohortTable(part.name, frame_out, worst)
        worst_all[part.name] = worst
    if keep_reps is not None:
        keep_reps.update(reps.values)
    return overall, cohorts, tables, worst_all


def _worst_case(
    frame, test_idx, status, y_all, s_all, thr, plan, cols, clustered
) -> dict[str, MetricEstimate]:
    """Primary metrics with failed/indeterminate cases counted as errors."""
    y = y_all[test_idx]
    bad = status[test_idx] != "ok"
    s = s_all[test_idx].copy()
    pred = (np.nan_to_num(s, nan=0.0) >= thr).astype(np.int8)
    pred[bad] = 1 - y[bad]  # positives -> FN, negatives -> FP
    s_rank = s.copy()
    s_rank[bad] = np.where(y[bad] == 1, -1.0, 2.0)  # below / above every real score
    s_prob = s.copy()
    s_prob[bad] = 1.0 - y[bad]  # maximal calibration error
    if cols["patient"]:
        cl = _patient_codes(frame[cols["patient"]].iloc[test_idx])
    else:
        cl = np.arange(test_idx.size)
    metrics = {ep.metric for ep in plan.primary_endpoints}
    out: dict[str, MetricEstimate] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        need_boot = bool(metrics & {"f1", "brier", "ece", "average_precision"}) or (
            clustered
            and bool(
                metrics & (set(PROPORTIONS) | {"balanced_accuracy", "lr_positive", "lr_negative"})
            )
        )
        reps = None
        if need_boot:
            reps = cluster_bootstrap(
                y,
                s_prob,
                pred,
                [Partition("overall", np.zeros(y.size, np.int64), ("all",))],
                clusters=cl,
                n_replicates=plan.analysis.bootstrap.replicates,
                seed=plan.analysis.bootstrap.seed,
                n_bins=plan.analysis.calibration.n_bins,
                rank_metrics="average_precision" in metrics,
            ).values[OVERALL]
        g, _ = _group(
            "overall (worst case)",
            np.arange(y.size),
            y,
            s_prob,
            pred,
            cl,
            clustered,
            thr,
            reps,
            plan,
            "average_precision" in metrics,
        )
        out.update(g.metrics)
        if "auc" in metrics:
            r = roc_auc(
                y,
                s_rank,
                clusters=cl if clustered else None,
                alpha=plan.analysis.alpha,
                probabilities=False,
            )
            out["auc"] = MetricEstimate(r.estimate, r.ci_low, r.ci_high, r.method, r.note)
        if "average_precision" in metrics:
            ap = average_precision(y, s_rank, probabilities=False)
            out["average_precision"] = MetricEstimate(
                ap.estimate,
                out["average_precision"].ci_low,
                out["average_precision"].ci_high,
                out["average_precision"].method,
                "interval from scores set to 1 - label for failed cases",
            )
    out["_n_counted_as_errors"] = int(bad.sum())  # type: ignore[assignment]
    return out


def _worst_entry(c: CriterionResult, worst: dict[str, Any]) -> dict[str, Any]:
    est = worst[c.metric]
    crit = _criterion(Endpoint(metric=c.metric, operator=c.operator, goal=c.goal), est, True)
    return {
        "estimate": est.estimate,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "method": est.method,
        "bound": crit.bound,
        "outcome": crit.outcome,
        "n_counted_as_errors": worst["_n_counted_as_errors"],
    }


# --- multi-class / multi-label: one-vs-rest per class plus macro averages --------------


def _macro_group(
    name: str,
    per_class: dict[str, GroupResult],
    reps: dict[str, dict[str, np.ndarray]] | None,
    *,
    threshold: float,
    decision_rule: str,
    alpha: float,
    boot_method: str,
) -> GroupResult:
    """Unweighted mean over classes of every metric; CI from the mean of the per-class
    bootstrap replicates (all classes are resampled with the same patient weights)."""
    groups = list(per_class.values())
    k = len(groups)
    metrics: dict[str, MetricEstimate] = {}
    for key in EVIDENCE_METRICS:
        ests = [g.metrics[key].estimate for g in groups]
        undefined = [c for c, e in zip(per_class, ests, strict=True) if math.isnan(e)]
        method = f"macro average over {k} classes (one-vs-rest)"
        if undefined:
            metrics[key] = MetricEstimate(
                math.nan,
                math.nan,
                math.nan,
                method,
                f"undefined: {key} is undefined for class(es) {undefined}",
            )
            continue
        est = float(np.mean(ests))
        if reps is not None and all(key in reps[c] for c in per_class):
            stacked = np.mean([reps[c][key] for c in per_class], axis=0)
            lo, hi, note = _percentile_ci(stacked, alpha)
            metrics[key] = MetricEstimate(est, lo, hi, f"{method}; {boot_method}", note)
        else:
            metrics[key] = MetricEstimate(
                est,
                math.nan,
                math.nan,
                method,
                "no interval for the macro average: this metric has no bootstrap replicates",
            )
    counts = ConfusionCounts(
        *(int(sum(getattr(g.confusion, f) for g in groups)) for f in ("tp", "fp", "tn", "fn"))
    )
    flags: dict[str, str] = {}
    for c, g in per_class.items():
        for key, why in g.flags.items():
            flags[key] = (flags[key] + "; " if key in flags else "") + f"class {c}: {why}"
    return GroupResult(
        name,
        groups[0].n,
        counts.n_positive,
        counts.n_negative,
        groups[0].n_patients,
        counts,
        threshold,
        metrics,
        {},
        flags,
        {},
        None,
        per_class,
        decision_rule,
    )


def _analyse_classes(
    y_mat: np.ndarray,
    s_mat: np.ndarray,
    pred_mat: np.ndarray,
    classes: tuple[str, ...],
    partitions: list[Partition],
    cl: np.ndarray,
    clustered: bool,
    strata: np.ndarray | None,
    thr: float,
    plan: AnalysisPlan,
) -> tuple[GroupResult, dict[str, dict[str, GroupResult]], dict[str, CohortTable], dict]:
    """Binary analysis per class (one-vs-rest) plus macro averages for every group."""
    per: dict[str, tuple] = {}
    reps: dict[str, dict] = {}
    for j, c in enumerate(classes):
        keep: dict = {}
        per[c] = _analyse(
            y_mat[:, j],
            s_mat[:, j],
            pred_mat[:, j],
            partitions,
            cl,
            clustered,
            strata,
            thr,
            plan,
            keep_reps=keep,
        )
        reps[c] = keep
    rule = "argmax" if plan.task == "multiclass" else f"score >= {thr:g} per label"
    kw = {
        "threshold": thr,
        "decision_rule": rule,
        "alpha": plan.analysis.alpha,
        "boot_method": BOOT_METHOD if clustered else ROW_BOOT_METHOD,
    }
    overall = _macro_group(
        "overall",
        {c: per[c][0] for c in classes},
        {c: reps[c][OVERALL] for c in classes},
        **kw,
    )
    cohorts: dict[str, dict[str, GroupResult]] = {}
    tables: dict[str, CohortTable] = {}
    worst_all: dict[str, dict[str, str | None]] = {}
    for part in partitions[1:]:
        cohorts[part.name] = {
            v: _macro_group(
                f"{part.name}={v}",
                {c: per[c][1][part.name][v] for c in classes},
                {c: reps[c][(part.name, v)] for c in classes},
                **kw,
            )
            for v in part.values
        }
        for c in classes:
            tables[f"{part.name}.{c}"] = per[c][2][part.name]
        worst_all[part.name] = {
            key: worst_value(
                {v: g.metrics[key].estimate for v, g in cohorts[part.name].items()},
                {v: g.flags.get(key) for v, g in cohorts[part.name].items()},
                lower_is_better=key in LOWER_IS_BETTER,
            )
            for key in EVIDENCE_METRICS
            if key not in ("calibration_slope", "calibration_intercept")
        }
    return overall, cohorts, tables, worst_all


# --- secondary analyses: paired AUC comparisons and fixed operating points -------------

SECONDARY_CLUSTER_NOTE = (
    "the paired DeLong test assumes independent cases, but {k} patients contribute more "
    "than one case; the reported difference uses the patient-cluster bootstrap instead"
)


class _SortedScores:
    """Rows sorted once by descending score, for weighted ROC curves of many replicates."""

    def __init__(self, y: np.ndarray, s: np.ndarray) -> None:
        self.order = np.argsort(-s, kind="mergesort")
        ss = s[self.order]
        self.y = y[self.order].astype(np.float64)
        self.last = np.r_[ss[1:] != ss[:-1], True]
        self.thresholds = ss[self.last]

    def curve(self, wrows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted sensitivity and specificity, arrays of shape (b, T), at each distinct
        threshold (positive when score >= threshold), thresholds descending."""
        w = wrows[:, self.order]
        tp = np.cumsum(w * self.y, axis=1)[:, self.last]
        fp = np.cumsum(w * (1.0 - self.y), axis=1)[:, self.last]
        with np.errstate(divide="ignore", invalid="ignore"):
            sens = tp / tp[:, -1:]
            spec = 1.0 - fp / fp[:, -1:]
        return sens, spec


def _auc_from_curve(sens: np.ndarray, spec: np.ndarray) -> np.ndarray:
    fpr = np.concatenate([np.zeros((sens.shape[0], 1)), 1.0 - spec], axis=1)
    tpr = np.concatenate([np.zeros((sens.shape[0], 1)), sens], axis=1)
    return np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2.0, axis=1)


def _best_at(value: np.ndarray, constraint: np.ndarray, target: float) -> np.ndarray:
    ok = constraint >= target
    out = np.where(ok, value, -np.inf).max(axis=1)
    out[~np.isfinite(out)] = np.nan
    return out


def _boot_p(d: np.ndarray, est: float, lo: float) -> float:
    dd = d[~np.isnan(d)]
    if math.isnan(est) or math.isnan(lo) or dd.size == 0:
        return math.nan
    return float(min(1.0, 2 * (min(np.sum(dd <= 0), np.sum(dd >= 0)) + 1) / (dd.size + 1)))


def _secondary(
    frame: pd.DataFrame,
    idx_all: np.ndarray,
    y: np.ndarray,
    s: np.ndarray,
    cl: np.ndarray,
    clustered: bool,
    strata: np.ndarray | None,
    plan: AnalysisPlan,
    cols: Mapping[str, Any],
    src: str,
) -> dict[str, Any]:
    """Paired AUC comparisons and sensitivity/specificity at fixed operating points."""
    sec = plan.secondary
    alpha = plan.analysis.alpha
    boot = plan.analysis.bootstrap
    status_ok = np.zeros(len(frame), dtype=bool)
    status_ok[idx_all] = True
    wanted = [c for cmp in sec.comparisons for c in (cmp.score_a, cmp.score_b)]
    wanted += [op.score for op in sec.operating_points if op.score]
    require_columns(
        frame,
        [(c, "secondary score", "Fix secondary.comparisons / operating_points.") for c in wanted],
        src,
    )
    scores: dict[str, np.ndarray] = {cols["score"]: s}
    for c in dict.fromkeys(wanted):
        if c not in scores:
            scores[c] = _scores(frame[c], plan, status_ok, src)[idx_all]
    sorted_scores = {c: _SortedScores(y, v) for c, v in scores.items()}
    n_cl = int(cl.max()) + 1
    cstrata = np.zeros(n_cl, dtype=np.int64)
    if strata is not None:
        cstrata[cl] = strata
    # replicate statistics: AUC per compared column, value per operating point
    stats_needed: list[tuple[str, str, float]] = []  # (column, kind, target)
    for cmp in sec.comparisons:
        stats_needed += [(cmp.score_a, "auc", 0.0), (cmp.score_b, "auc", 0.0)]
    for op in sec.operating_points:
        stats_needed.append((op.score or cols["score"], op.metric, float(op.target)))
    stats_needed = list(dict.fromkeys(stats_needed))
    reps: dict[tuple[str, str, float], list[np.ndarray]] = {k: [] for k in stats_needed}
    rows_per_block = max(1, (1 << 22) // max(y.size, 1))
    for wblock in replicate_weights(cstrata, boot.replicates, boot.seed):
        for start in range(0, wblock.shape[0], rows_per_block):
            wrows = wblock[start : start + rows_per_block][:, cl]
            curves = {c: sorted_scores[c].curve(wrows) for c in {k[0] for k in stats_needed}}
            for key in stats_needed:
                sens, spec = curves[key[0]]
                if key[1] == "auc":
                    reps[key].append(_auc_from_curve(sens, spec))
                elif key[1] == "sensitivity_at_specificity":
                    reps[key].append(_best_at(sens, spec, key[2]))
                else:
                    reps[key].append(_best_at(spec, sens, key[2]))
    r = {k: np.concatenate(v) for k, v in reps.items()}
    boot_method = BOOT_METHOD if clustered else ROW_BOOT_METHOD
    n_multi = int(np.sum(np.bincount(cl) > 1)) if clustered else 0
    notes: list[str] = []
    comparisons: dict[str, Any] = {}
    for cmp in sec.comparisons:
        name = cmp.name or f"{cmp.score_a} vs {cmp.score_b}"
        a, b = scores[cmp.score_a], scores[cmp.score_b]
        dl = delong_test(y, a, b, alpha=alpha)
        aucs = {}
        for tag, v in (("auc_a", a), ("auc_b", b)):
            ra = roc_auc(y, v, clusters=cl if clustered else None, alpha=alpha, curve=False)
            aucs[tag] = MetricEstimate(ra.estimate, ra.ci_low, ra.ci_high, ra.method, ra.note)
        d = r[(cmp.score_a, "auc", 0.0)] - r[(cmp.score_b, "auc", 0.0)]
        lo, hi, bnote = _percentile_ci(d, alpha)
        boot_diff = {
            "estimate": dl.difference,
            "ci_low": lo,
            "ci_high": hi,
            "p_value": _boot_p(d, dl.difference, lo),
            "method": f"paired {boot_method} of AUC_a - AUC_b",
            "note": bnote,
        }
        delong = {
            "estimate": dl.difference,
            "ci_low": dl.ci_low,
            "ci_high": dl.ci_high,
            "z": dl.z,
            "p_value": dl.p_value,
            "covariance": dl.covariance,
            "method": "paired-delong",
            "note": dl.note,
        }
        limitations = []
        if clustered:
            limitations.append(SECONDARY_CLUSTER_NOTE.format(k=n_multi))
            delong["note"] = (dl.note + "; " if dl.note else "") + (
                "assumes independent cases (not valid with several cases per patient)"
            )
        comparisons[name] = {
            "score_a": cmp.score_a,
            "score_b": cmp.score_b,
            "n": int(y.size),
            "n_positive": int(y.sum()),
            "auc_a": aucs["auc_a"],
            "auc_b": aucs["auc_b"],
            "difference": boot_diff if clustered else delong,
            "delong": delong,
            "bootstrap": boot_diff,
            "limitations": limitations,
        }
    if clustered and sec.comparisons:
        notes.append(SECONDARY_CLUSTER_NOTE.format(k=n_multi))
    points: dict[str, Any] = {}
    for op in sec.operating_points:
        col = op.score or cols["score"]
        fn = (
            sensitivity_at_specificity
            if op.metric == "sensitivity_at_specificity"
            else specificity_at_sensitivity
        )
        est, at = fn(y, scores[col], target=float(op.target))
        key = (col, op.metric, float(op.target))
        if math.isnan(est):
            note = warn_undefined(op.metric, f"no threshold reaches the target {op.target:g}")
            lo = hi = math.nan
        else:
            lo, hi, note = _percentile_ci(r[key], alpha)
        points[
            op.name or f"{op.metric}_{op.target:g}" + ("" if op.score is None else f"_{col}")
        ] = {
            "metric": op.metric,
            "target": float(op.target),
            "score": col,
            "threshold": at,
            "value": MetricEstimate(est, lo, hi, boot_method, note),
        }
    return {
        "comparisons": comparisons,
        "operating_points": points,
        "unit": "patient" if clustered else "case",
        "replicates": boot.replicates,
        "seed": boot.seed,
        "notes": notes,
    }
