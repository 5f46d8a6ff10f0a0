"""Metric estimates of one group of cases (all cases, or one cohort value): point
estimates, analytic or bootstrap intervals (widened where the percentile bootstrap
degenerates: see :func:`group_result`), design effects and small-sample flags."""

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
    mover_ratio_ci,
    npv,
    ppv,
    sensitivity,
    specificity,
)
from ._plan import EVIDENCE_METRICS, AnalysisPlan
from ._proportions import MetricEstimate, effective_proportion_ci
from ._results import GroupResult
from ._roc import average_precision, newcombe_auc_ci, roc_auc

__all__ = [
    "BOOT_METHOD",
    "LOWER_IS_BETTER",
    "OVERALL",
    "ROW_BOOT_METHOD",
    "boot_method",
    "bootstrap_p",
    "design_effect",
    "effective_n",
    "group_result",
    "widen_interval",
    "patients_per_metric",
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
# proportions whose cluster-bootstrap interval is never narrower than the proportion
# interval on the effective sample size n / DEFF
PROPORTION_METRICS = ("sensitivity", "specificity", "ppv", "npv", "accuracy")
# an interval from replicates of which more than this share were undefined is unreliable
UNRELIABLE_SHARE = 0.05
# the cases whose patients make a metric's denominator (see patients_per_metric)
DENOMINATOR = {
    "sensitivity": ("positives",),
    "specificity": ("negatives",),
    "ppv": ("positive predictions",),
    "npv": ("negative predictions",),
    "accuracy": ("cases",),
    "balanced_accuracy": ("positives", "negatives"),
    "f1": ("positives or positive predictions",),
    "lr_positive": ("positives", "negatives"),
    "lr_negative": ("positives", "negatives"),
    "auc": ("positives", "negatives"),
    "average_precision": ("positives",),
    "brier": ("cases",),
    "ece": ("cases",),
    "calibration_slope": ("cases",),
    "calibration_intercept": ("cases",),
}
FEW_PATIENTS = "fewer than {min} patients with {what} ({k})"
UNRELIABLE_NOTE = (
    "interval unreliable: {k} of {b} bootstrap replicates undefined and left out "
    "(more than {share:.0%}; the metric's denominator comes from few patients)"
)
EFFECTIVE_N_METHOD = "{boot}, widened to {ci} on effective n"
EFFECTIVE_N_NOTE = (
    "interval widened to the {ci} interval on the effective sample size n/DEFF = "
    "{n}/{deff:.4g} = {neff:.4g} patients-equivalent ({why}); the percentile bootstrap "
    "interval ({lo}, {hi}) was narrower"
)
MOVER_METHOD = "{method}, widened to MOVER-{ci} on effective n"
MOVER_NOTE = (
    "interval widened to the MOVER interval (Zou & Donner 2008) combining the {ci} "
    "intervals of sensitivity and specificity on their effective sample sizes n/DEFF; "
    "the {method} interval ({lo}, {hi}) was narrower"
)
AUC_BOUNDARY_NOTE = (
    "AUC {auc:g} (complete separation): the {method} variance is 0, so the interval is "
    "Newcombe's (2006) score interval on {m:.4g} positive and {n:.4g} negative "
    "effective cases"
)
LR_MOVER_METHOD = "{method}, widened to MOVER-R-{ci} on effective n"
LR_MOVER_NOTE = (
    "interval widened to the MOVER-R interval of the ratio (Donner & Zou 2012) of the {ci} "
    "intervals of its two proportions on their effective sample sizes n/DEFF ({p:.4g} "
    "positive and {q:.4g} negative patients-equivalent); the {method} interval ({lo}, {hi}) "
    "was narrower"
)
F1_METHOD = "{method}, widened to {ci} on the Jaccard index"
F1_NOTE = (
    "interval widened to the {ci} interval of the Jaccard index J = TP/(TP+FP+FN) on "
    "{m:.4g} effective cases, as F1 = 2J/(1+J) (given TP+FP+FN, TP is binomial); the "
    "{method} interval ({lo}, {hi}) was narrower"
)
DEFF_ESTIMATED = "DEFF: Kish design effect of the patient clusters, at least 1"
DEFF_LARGEST = (
    "DEFF not estimable (estimate 0 or 1, or one patient): the largest for these cluster "
    "sizes, sum(m_i^2)/sum(m_i), i.e. every patient's cases counted as one"
)


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


def effective_n(
    num: np.ndarray, den: np.ndarray, cl: np.ndarray, *, deff: float | None = None
) -> tuple[float, float, bool]:
    """Effective sample size of a clustered proportion: ``(n / DEFF, DEFF, estimated)``.

    ``DEFF`` is the design effect of :func:`design_effect` (Kish 1965), at least 1. Where
    it cannot be estimated (the proportion is 0 or 1, or the denominator comes from one
    patient) the largest design effect these cluster sizes allow is used,
    ``sum(m_i**2) / sum(m_i)`` (intra-cluster correlation 1: Kish's ``1 + (m_w - 1) rho``
    with ``rho = 1`` and the size-weighted mean cluster size ``m_w``), so that the
    interval is that of one observation per patient (``estimated`` False).

    Parameters
    ----------
    num, den : arrays of shape (n,)
        Per case: 1 when a success, 1 when in the denominator.
    cl : array of shape (n,)
        Patient codes (non-negative ints).
    deff : float, optional
        ``design_effect(num, den, cl)`` when already computed.
    """
    d = np.asarray(den).astype(bool)
    n = int(d.sum())
    if n == 0:
        return math.nan, math.nan, False
    if deff is None:
        deff = design_effect(num, den, cl)
    estimated = not math.isnan(deff)
    if not estimated:
        m = np.bincount(cl[d]).astype(np.float64)
        deff = float(np.sum(m * m) / n)
    deff = max(1.0, deff)
    return n / deff, deff, estimated


def _proportion_parts(yy: np.ndarray, pp: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(success, in denominator) per case of each proportion metric."""
    pos, neg = yy == 1, yy == 0
    return {
        "sensitivity": (pp, pos),
        "specificity": (1 - pp, neg),
        "ppv": (yy, pp == 1),
        "npv": (1 - yy, pp == 0),
        "accuracy": ((yy == pp).astype(np.int8), np.ones_like(yy)),
    }


def _widen_to_effective_n(
    m: dict[str, MetricEstimate],
    yy: np.ndarray,
    pp: np.ndarray,
    cc: np.ndarray,
    *,
    ci: str,
    alpha: float,
    deffs: Mapping[str, float],
) -> None:
    """Under patient clustering, make every proportion's interval at least as wide as
    the ``ci`` interval on the effective sample size n / DEFF (in place).

    The percentile cluster bootstrap collapses to a point when the estimate is 0 or 1
    (every replicate is 0 or 1 too) and is too narrow when few patients make the
    denominator; the effective-sample-size interval (Korn & Graubard 1998) does not.
    The interval reported is the union of the two.
    """
    for key, (num, den) in _proportion_parts(yy, pp).items():
        est = m[key]
        if math.isnan(est.estimate):
            continue
        neff, deff, estimated = effective_n(num, den, cc, deff=deffs.get(key))
        lo, hi = effective_proportion_ci(est.estimate, neff, method=ci, alpha=alpha)
        note = EFFECTIVE_N_NOTE.format(
            ci=ci,
            n=int(np.count_nonzero(den)),
            deff=deff,
            neff=neff,
            why=DEFF_ESTIMATED if estimated else DEFF_LARGEST,
            lo="{lo}",
            hi="{hi}",
        )
        m[key] = widen_interval(
            est, lo, hi, EFFECTIVE_N_METHOD.format(boot=est.method, ci=ci), note
        )


def _widen_balanced_accuracy(
    m: dict[str, MetricEstimate],
    yy: np.ndarray,
    pp: np.ndarray,
    cc: np.ndarray,
    *,
    ci: str,
    alpha: float,
    deffs: Mapping[str, float],
) -> None:
    """Make the balanced-accuracy interval at least as wide as the MOVER interval of
    (sensitivity + specificity) / 2 from the ``ci`` intervals of sensitivity and
    specificity on their effective sample sizes (in place).

    MOVER (method of variance estimates recovery; Zou & Donner 2008, Newcombe 2011):
    ``L = B - sqrt((se - l_se)**2 + (sp - l_sp)**2) / 2`` and
    ``U = B + sqrt((u_se - se)**2 + (u_sp - sp)**2) / 2``. Unlike the Wald interval and
    the percentile bootstrap it keeps a width when sensitivity or specificity is 0 or 1.
    """
    est = m["balanced_accuracy"]
    if math.isnan(est.estimate):
        return
    parts = _proportion_parts(yy, pp)
    bounds = []
    for key in ("sensitivity", "specificity"):
        num, den = parts[key]
        neff, _, _ = effective_n(num, den, cc, deff=deffs.get(key))
        p = float(np.sum(num[den.astype(bool)]) / np.count_nonzero(den))
        bounds.append((p, *effective_proportion_ci(p, neff, method=ci, alpha=alpha)))
    (se, l1, u1), (sp, l2, u2) = bounds
    lo = max(0.0, est.estimate - 0.5 * math.hypot(se - l1, sp - l2))
    hi = min(1.0, est.estimate + 0.5 * math.hypot(u1 - se, u2 - sp))
    note = MOVER_NOTE.format(ci=ci, method=est.method, lo="{lo}", hi="{hi}")
    m["balanced_accuracy"] = widen_interval(
        est, lo, hi, MOVER_METHOD.format(method=est.method, ci=ci), note
    )


def widen_interval(
    est: MetricEstimate, lo: float, hi: float, method: str, note: str
) -> MetricEstimate:
    """``est`` with its interval widened to contain (lo, hi) and ``method`` and ``note``
    (formatted with the old bounds ``lo``, ``hi``) saying so; ``est`` itself when its
    interval already contains (lo, hi)."""
    blo, bhi = est.ci_low, est.ci_high
    if not (math.isnan(blo) or math.isnan(bhi)) and lo >= blo and hi <= bhi:
        return est
    new_lo = lo if math.isnan(blo) else min(lo, blo)
    new_hi = hi if math.isnan(bhi) else max(hi, bhi)
    note = note.format(lo=f"{blo:.4g}", hi=f"{bhi:.4g}")
    return MetricEstimate(
        est.estimate,
        float(new_lo),
        float(new_hi),
        method,
        note if not est.note else f"{est.note}; {note}",
    )


def _widen_likelihood_ratios(
    m: dict[str, MetricEstimate],
    yy: np.ndarray,
    pp: np.ndarray,
    cc: np.ndarray,
    *,
    ci: str,
    alpha: float,
    deffs: Mapping[str, float],
) -> None:
    """Under patient clustering, make the LR+ and LR- intervals at least as wide as the
    MOVER-R interval (:func:`~medlens.validation._counts.mover_ratio_ci`) of the ``ci``
    intervals of their two proportions on the effective sample sizes of sensitivity
    (positives) and specificity (negatives) (in place).

    The percentile cluster bootstrap collapses to [0, 0] when no positive is missed (LR-)
    and is too narrow when few patients make a class; MOVER-R does not.
    """
    parts = _proportion_parts(yy, pp)
    pos, neg = yy == 1, yy == 0
    if not pos.any() or not neg.any():
        return
    p_eff = effective_n(*parts["sensitivity"], cc, deff=deffs.get("sensitivity"))[0]
    q_eff = effective_n(*parts["specificity"], cc, deff=deffs.get("specificity"))[0]
    se, fpr = float(pp[pos].mean()), float(pp[neg].mean())
    for key, p1, p2 in (("lr_positive", se, fpr), ("lr_negative", 1 - se, 1 - fpr)):
        est = m[key]
        if math.isnan(est.estimate) or p2 == 0:
            continue
        lo, hi = mover_ratio_ci(
            p1,
            effective_proportion_ci(p1, p_eff, method=ci, alpha=alpha),
            p2,
            effective_proportion_ci(p2, q_eff, method=ci, alpha=alpha),
        )
        note = LR_MOVER_NOTE.format(
            ci=ci, p=p_eff, q=q_eff, method=est.method, lo="{lo}", hi="{hi}"
        )
        m[key] = widen_interval(est, lo, hi, LR_MOVER_METHOD.format(method=est.method, ci=ci), note)


def _widen_f1(
    m: dict[str, MetricEstimate],
    yy: np.ndarray,
    pp: np.ndarray,
    cc: np.ndarray,
    *,
    ci: str,
    alpha: float,
) -> None:
    """Make the F1 interval at least as wide as the ``ci`` interval of the Jaccard index
    J = TP / (TP + FP + FN) on its effective number of cases, mapped through the monotone
    F1 = 2J / (1 + J) (in place).

    Given m = TP + FP + FN, TP is binomial (m, J) under multinomial sampling, so the
    interval is valid; on patient clusters m is divided by the design effect of J. It keeps
    a width at F1 = 1, where every bootstrap replicate is 1.
    """
    est = m["f1"]
    if math.isnan(est.estimate):
        return
    den = (yy == 1) | (pp == 1)
    num = ((yy == 1) & (pp == 1)).astype(np.int8)
    m_eff, _, _ = effective_n(num, den, cc)
    j = float(num[den].mean())
    jl, jh = effective_proportion_ci(j, m_eff, method=ci, alpha=alpha)
    lo, hi = 2 * jl / (1 + jl), 2 * jh / (1 + jh)
    note = F1_NOTE.format(ci=ci, m=m_eff, method=est.method, lo="{lo}", hi="{hi}")
    m["f1"] = widen_interval(est, lo, hi, F1_METHOD.format(method=est.method, ci=ci), note)


def patients_per_metric(yy: np.ndarray, pp: np.ndarray, cc: np.ndarray) -> dict[str, int]:
    """Number of patients whose cases make each metric's denominator (for metrics that
    need two classes, the smaller of the two numbers); see :data:`DENOMINATOR`."""

    def patients(mask: np.ndarray) -> int:
        sel = cc[mask]
        return int(np.count_nonzero(np.bincount(sel))) if sel.size else 0

    pos, neg = yy == 1, yy == 0
    k = {
        "positives": patients(pos),
        "negatives": patients(neg),
        "positive predictions": patients(pp == 1),
        "negative predictions": patients(pp == 0),
        "cases": patients(np.ones_like(pos)),
        "positives or positive predictions": patients(pos | (pp == 1)),
    }
    return {key: min(k[w] for w in what) for key, what in DENOMINATOR.items()}


def _auc_at_boundary(
    est: MetricEstimate, yy: np.ndarray, cc: np.ndarray | None, *, alpha: float
) -> MetricEstimate:
    """At AUC 0 or 1 (complete separation) DeLong's and Obuchowski's variances are 0:
    widen the interval to Newcombe's score interval on the effective numbers of positive
    and negative cases (under clustering n / DEFF with the largest design effect of
    :func:`effective_n`, i.e. one observation per patient when all of a patient's cases
    agree)."""
    if est.estimate not in (0.0, 1.0):
        return est
    pos = yy == 1
    ones = np.ones(yy.size, dtype=np.int8)
    cl = np.arange(yy.size) if cc is None else cc
    m_eff = effective_n(ones, pos, cl)[0]
    n_eff = effective_n(ones, ~pos, cl)[0]
    lo, hi = newcombe_auc_ci(est.estimate, max(1.0, m_eff), max(1.0, n_eff), alpha=alpha)
    if not (math.isnan(est.ci_low) or math.isnan(est.ci_high)):
        lo, hi = min(lo, est.ci_low), max(hi, est.ci_high)
    note = AUC_BOUNDARY_NOTE.format(method=est.method, auc=est.estimate, m=m_eff, n=n_eff)
    return MetricEstimate(
        est.estimate,
        float(lo),
        float(hi),
        f"{est.method}, widened to newcombe at the boundary",
        note if not est.note else f"{est.note}; {note}",
    )


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
    m["auc"] = _auc_at_boundary(
        MetricEstimate(auc.estimate, auc.ci_low, auc.ci_high, auc.method, auc.note),
        yy,
        cc,
        alpha=alpha,
    )
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
) -> dict[str, str]:
    """Replace the intervals of the bootstrapped metrics in ``m`` (in place); returns
    the metrics whose interval is unreliable (more than :data:`UNRELIABLE_SHARE` of the
    replicates undefined) with the reason, which is also added to the metric's note."""
    unreliable: dict[str, str] = {}
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
        r = reps[key]
        lo, hi, note = percentile_ci(r, alpha)
        k = int(np.count_nonzero(np.isnan(r)))
        if k > UNRELIABLE_SHARE * r.size:
            why = UNRELIABLE_NOTE.format(k=k, b=r.size, share=UNRELIABLE_SHARE)
            unreliable[key] = why
            note = f"{note}; {why}" if math.isnan(lo) else why
        m[key] = MetricEstimate(est.estimate, lo, hi, boot_method(clustered), note or est.note)
    return unreliable


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


def _flags(
    npos: int, nneg: int, n: int, plan: AnalysisPlan, patients: Mapping[str, int]
) -> dict[str, str]:
    """Metrics a group is too small to estimate (plan.subgroups minimum sizes: cases,
    positives, negatives, and patients making the metric's denominator)."""
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
    for key, k in patients.items():
        if k < sub.min_patients:
            what = " and with ".join(DENOMINATOR[key])
            few = FEW_PATIENTS.format(min=sub.min_patients, what=what, k=k)
            flags[key] = f"{flags[key]}; {few}" if key in flags else few
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

    Intervals never collapse where the data cannot support it:

    * under clustering, the percentile interval of sensitivity, specificity, PPV, NPV and
      accuracy is widened to the ``analysis.proportion_ci`` interval on the effective
      sample size n / DEFF (:func:`effective_n`) wherever it is narrower (always at an
      estimate of 0 or 1, where every replicate equals the estimate); ``method`` then
      ends in ", widened to <ci> on effective n" and the ``note`` gives n, DEFF and the
      bootstrap interval;
    * balanced accuracy: widened to the MOVER interval of the two proportions;
    * under clustering, LR+ and LR-: widened to the MOVER-R interval of their two
      proportions on effective n (:func:`_widen_likelihood_ratios`);
    * F1: widened to the interval of the Jaccard index on its effective cases, mapped to
      F1 (:func:`_widen_f1`);
    * AUC 0 or 1: Newcombe's score interval on the effective class sizes;
    * more than :data:`UNRELIABLE_SHARE` of a metric's replicates undefined: the
      interval is flagged unreliable (``flags`` and ``note``).

    ``flags`` also name metrics whose denominator comes from fewer than
    ``subgroups.min_patients`` patients (:func:`patients_per_metric`).
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
    unreliable = _bootstrap_intervals(
        m, reps, clustered=clustered, rank_boot=rank_boot, alpha=alpha
    )
    deff = _design_effects(yy, pp, cc, auc_deff) if clustered else {}
    if clustered:
        _widen_to_effective_n(m, yy, pp, cc, ci=ci, alpha=alpha, deffs=deff)
    # unclustered: every case its own patient, DEFF = 1 and n_eff = n
    ba_deffs = deff if clustered else {"sensitivity": 1.0, "specificity": 1.0}
    cl_ba = cc if clustered else np.arange(yy.size)
    _widen_balanced_accuracy(m, yy, pp, cl_ba, ci=ci, alpha=alpha, deffs=ba_deffs)
    if clustered:
        _widen_likelihood_ratios(m, yy, pp, cc, ci=ci, alpha=alpha, deffs=deff)
    _widen_f1(m, yy, pp, cl_ba, ci=ci, alpha=alpha)
    flags = _flags(
        counts.n_positive, counts.n_negative, counts.n, plan, patients_per_metric(yy, pp, cc)
    )
    for key, why in unreliable.items():
        flags.setdefault(key, why)
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
