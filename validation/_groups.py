"""Metric estimates of one group of cases (all cases, or one cohort value): point
estimates, analytic or bootstrap intervals, design effects and small-sample flags."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ._calibration import calibration_slope_intercept
from ._common import warn_undefined
from ._counts import (
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
from ._plan import EVIDENCE_METRICS, AnalysisPlan
from ._proportions import MetricEstimate
from ._results import GroupResult
from ._roc import average_precision, roc_auc

__all__ = [
    "BOOT_METHOD",
    "LOWER_IS_BETTER",
    "OVERALL",
    "ROW_BOOT_METHOD",
    "boot_method",
    "bootstrap_p",
    "design_effect",
    "group_result",
    "percentile_ci",
]

LOWER_IS_BETTER = frozenset({"brier", "ece", "lr_negative"})
OVERALL = ("overall", "all")  # key of the overall population in the bootstrap replicates
BOOT_METHOD = "cluster-bootstrap-percentile"
ROW_BOOT_METHOD = "bootstrap-percentile"
RANK_BOOT_OFF = (
    "no interval: bootstrap of rank metrics disabled in the plan (analysis.bootstrap.rank_metrics)"
)
SCORE_METRICS = (
    "auc",
    "average_precision",
    "brier",
    "ece",
    "calibration_slope",
    "calibration_intercept",
)
# metrics whose interval comes from the bootstrap: always (no analytic interval) ...
BOOTSTRAPPED = frozenset({"f1", "brier", "ece"})
# ... and under patient clustering (the analytic intervals assume independent cases; AUC
# and the logistic calibration parameters have clustered analytic variances instead)
BOOTSTRAPPED_CLUSTERED = frozenset(
    {
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "accuracy",
        "balanced_accuracy",
        "lr_positive",
        "lr_negative",
    }
)
NEEDS_POSITIVES = (
    "sensitivity",
    "auc",
    "average_precision",
    "lr_positive",
    "lr_negative",
    "balanced_accuracy",
    "f1",
)
NEEDS_NEGATIVES = ("specificity", "auc", "lr_positive", "lr_negative", "balanced_accuracy")


def boot_method(clustered: bool) -> str:
    """Name of the bootstrap interval: patient-cluster or case (row) resampling."""
    return BOOT_METHOD if clustered else ROW_BOOT_METHOD


def percentile_ci(reps: np.ndarray, alpha: float) -> tuple[float, float, str | None]:
    """Percentile interval of bootstrap replicates (undefined replicates left out, with a
    note; NaN when fewer than max(10, half) of them are defined)."""
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


def bootstrap_p(d: np.ndarray, est: float, lo: float) -> float:
    """Two-sided bootstrap p-value of a difference being 0 from its replicates ``d``."""
    dd = d[~np.isnan(d)]
    if math.isnan(est) or math.isnan(lo) or dd.size == 0:
        return math.nan
    return float(min(1.0, 2 * (min(np.sum(dd <= 0), np.sum(dd >= 0)) + 1) / (dd.size + 1)))


def design_effect(num: np.ndarray, den: np.ndarray, cl: np.ndarray) -> float:
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


def _score_metrics(
    yy: np.ndarray, ss: np.ndarray, cc: np.ndarray | None, plan: AnalysisPlan, label: str | None
) -> tuple[dict[str, MetricEstimate], float | None]:
    """AUC, average precision, Brier, ECE and logistic calibration; the AUC design effect."""
    alpha = plan.analysis.alpha
    if not yy.size:
        return {
            key: MetricEstimate(
                math.nan, math.nan, math.nan, "none", warn_undefined(key, "no cases", label)
            )
            for key in SCORE_METRICS
        }, None
    m: dict[str, MetricEstimate] = {}
    auc = roc_auc(yy, ss, clusters=cc, alpha=alpha, cohort=label, curve=False)
    m["auc"] = MetricEstimate(auc.estimate, auc.ci_low, auc.ci_high, auc.method, auc.note)
    m["average_precision"] = average_precision(yy, ss, cohort=label)
    m["brier"] = MetricEstimate(float(np.mean((ss - yy) ** 2)), math.nan, math.nan, "none")
    nb = plan.analysis.calibration.n_bins
    bins = np.minimum((ss * nb).astype(np.int64), nb - 1)
    ece = float(np.abs(np.bincount(bins, weights=ss - yy, minlength=nb)).sum() / yy.size)
    m["ece"] = MetricEstimate(ece, math.nan, math.nan, "none")
    m["calibration_slope"], m["calibration_intercept"] = calibration_slope_intercept(
        yy, ss, clusters=cc, alpha=alpha, cohort=label
    )
    return m, auc.design_effect


def _bootstrap_intervals(
    m: dict[str, MetricEstimate],
    reps: Mapping[str, np.ndarray] | None,
    *,
    clustered: bool,
    rank_boot: bool,
    alpha: float,
) -> None:
    """Replace the intervals of the bootstrapped metrics in ``m`` (in place)."""
    needs_boot = set(BOOTSTRAPPED) | ({"average_precision"} if rank_boot else set())
    if clustered:
        needs_boot |= BOOTSTRAPPED_CLUSTERED
    for key in list(m):
        est = m[key]
        if key == "average_precision" and not rank_boot and not math.isnan(est.estimate):
            m[key] = MetricEstimate(est.estimate, math.nan, math.nan, "none", RANK_BOOT_OFF)
            continue
        if key not in needs_boot or reps is None or math.isnan(est.estimate):
            continue
        lo, hi, note = percentile_ci(reps[key], alpha)
        m[key] = MetricEstimate(est.estimate, lo, hi, boot_method(clustered), note or est.note)


def _design_effects(
    yy: np.ndarray, pp: np.ndarray, cc: np.ndarray, auc_design_effect: float | None
) -> dict[str, float]:
    pos, neg = yy == 1, yy == 0
    deff = {
        "sensitivity": design_effect(pp, pos, cc),
        "specificity": design_effect(1 - pp, neg, cc),
        "ppv": design_effect(yy, pp == 1, cc),
        "npv": design_effect(1 - yy, pp == 0, cc),
        "accuracy": design_effect((yy == pp).astype(np.int8), np.ones_like(yy), cc),
    }
    if auc_design_effect is not None:
        deff["auc"] = auc_design_effect
    return deff


def _flags(npos: int, nneg: int, n: int, plan: AnalysisPlan) -> dict[str, str]:
    """Metrics a group is too small to estimate (plan.subgroups minimum sizes)."""
    sub = plan.subgroups
    flags: dict[str, str] = {}
    if npos < sub.min_positives:
        for key in NEEDS_POSITIVES:
            flags[key] = f"fewer than {sub.min_positives} positives ({npos})"
    if nneg < sub.min_negatives:
        for key in NEEDS_NEGATIVES:
            flags.setdefault(key, f"fewer than {sub.min_negatives} negatives ({nneg})")
    if n < sub.min_n:
        for key in EVIDENCE_METRICS:
            flags.setdefault(key, f"fewer than {sub.min_n} cases ({n})")
    return flags


def group_result(
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
) -> GroupResult:
    """Every evidence metric of the cases ``idx`` with its interval.

    ``reps`` are this group's bootstrap replicates (``cluster_bootstrap(...).values[key]``),
    used for metrics without an analytic interval and, under clustering, for all
    threshold metrics; None: analytic intervals only.
    """
    alpha = plan.analysis.alpha
    ci = plan.analysis.proportion_ci
    yy, ss, pp, cc = y[idx], s[idx], pred[idx], cl[idx]
    counts = confusion_counts(yy, pp)
    label = None if name == "overall" else name
    m: dict[str, MetricEstimate] = {
        "sensitivity": sensitivity(counts, ci=ci, alpha=alpha, cohort=label),
        "specificity": specificity(counts, ci=ci, alpha=alpha, cohort=label),
        "ppv": ppv(counts, ci=ci, alpha=alpha, cohort=label),
        "npv": npv(counts, ci=ci, alpha=alpha, cohort=label),
        "accuracy": accuracy(counts, ci=ci, alpha=alpha, cohort=label),
        "balanced_accuracy": balanced_accuracy(counts, alpha=alpha, cohort=label),
        "f1": f1_score(counts, cohort=label),
        "lr_positive": likelihood_ratio_positive(counts, alpha=alpha, cohort=label),
        "lr_negative": likelihood_ratio_negative(counts, alpha=alpha, cohort=label),
    }
    score_m, auc_deff = _score_metrics(yy, ss, cc if clustered else None, plan, label)
    m.update(score_m)
    _bootstrap_intervals(m, reps, clustered=clustered, rank_boot=rank_boot, alpha=alpha)
    deff = _design_effects(yy, pp, cc, auc_deff) if clustered else {}
    flags = _flags(counts.n_positive, counts.n_negative, counts.n, plan)
    n_pat = int(np.count_nonzero(np.bincount(cc))) if clustered and cc.size else counts.n
    at_prev = None
    if plan.analysis.prevalence is not None:
        pi = plan.analysis.prevalence
        at_prev = {
            "ppv": ppv(counts, ci=ci, alpha=alpha, cohort=label, prevalence=pi),
            "npv": npv(counts, ci=ci, alpha=alpha, cohort=label, prevalence=pi),
        }
    return GroupResult(
        name,
        counts.n,
        counts.n_positive,
        counts.n_negative,
        n_pat,
        counts,
        threshold,
        m,
        deff,
        flags,
        {},
        at_prev,
    )
