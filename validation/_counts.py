"""The confusion-count primitive and every threshold metric built on it.

``confusion_counts`` is the only place where predictions are compared with labels;
sensitivity, specificity, PPV, NPV, accuracy, balanced accuracy, F1, the likelihood
ratios and Youden's J are all computed from its result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from medlens._errors import InputDataError, param_error

from ._common import check_alpha, check_binary, check_same_length, warn_undefined
from ._proportions import CI_METHODS, MetricEstimate, ProportionEstimate, proportion_ci

__all__ = [
    "ConfusionCounts",
    "accuracy",
    "balanced_accuracy",
    "confusion_counts",
    "f1_score",
    "likelihood_ratio_negative",
    "likelihood_ratio_positive",
    "npv",
    "ppv",
    "predict_at_threshold",
    "mover_ratio_ci",
    "sensitivity",
    "specificity",
    "youden_j",
]

BAD_PREVALENCE = "a float in (0, 1)"


@dataclass(frozen=True)
class ConfusionCounts:
    """True/false positives and negatives of binary predictions."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def n_positive(self) -> int:
        return self.tp + self.fn

    @property
    def n_negative(self) -> int:
        return self.tn + self.fp

    def as_dict(self) -> dict[str, int]:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}


def predict_at_threshold(y_score: np.ndarray, threshold: float) -> np.ndarray:
    """Binary predictions: positive when ``score >= threshold`` (the medlens convention)."""
    if not isinstance(threshold, (int, float, np.floating)) or math.isnan(threshold):
        raise param_error("threshold", "predict_at_threshold", "a number", threshold)
    return (np.asarray(y_score, dtype=np.float64) >= threshold).astype(np.int8)


def confusion_counts(y_true: object, y_pred: object) -> ConfusionCounts:
    """Count TP, FP, TN and FN.

    Parameters
    ----------
    y_true : array of shape (n,)
        Reference labels, 0 (negative) or 1 (positive).
    y_pred : array of shape (n,)
        Predicted labels, 0 or 1 (see :func:`predict_at_threshold`).

    Returns
    -------
    ConfusionCounts
        Agrees with ``sklearn.metrics.confusion_matrix(y_true, y_pred, labels=[0, 1])``.
    """
    t = check_binary(y_true, "y_true", allow_empty=True)
    p = check_binary(y_pred, "y_pred", allow_empty=True)
    check_same_length(t, p, "y_true", "y_pred")
    code = np.bincount(2 * t.astype(np.intp) + p, minlength=4)
    return ConfusionCounts(tp=int(code[3]), fp=int(code[1]), tn=int(code[0]), fn=int(code[2]))


def _counts(y_true: object, y_pred: object | None) -> ConfusionCounts:
    if isinstance(y_true, ConfusionCounts):
        if y_pred is not None:
            raise InputDataError("pass either ConfusionCounts or (y_true, y_pred), not both.")
        return y_true
    if y_pred is None:
        raise InputDataError("y_pred is required when y_true is an array.")
    return confusion_counts(y_true, y_pred)


def _proportion(
    metric: str, k: int, n: int, *, method: str, alpha: float, cohort: str | None, why: str
) -> ProportionEstimate:
    if method not in CI_METHODS:
        raise param_error("ci", metric, f"one of {CI_METHODS}", method)
    if n == 0:
        note = warn_undefined(metric, why, cohort)
        return ProportionEstimate(math.nan, math.nan, math.nan, method, k, n, note)
    lo, hi = proportion_ci(k, n, method=method, alpha=alpha)
    return ProportionEstimate(k / n, lo, hi, method, k, n)


def sensitivity(
    y_true: object,
    y_pred: object | None = None,
    *,
    ci: str = "wilson",
    alpha: float = 0.05,
    cohort: str | None = None,
) -> ProportionEstimate:
    """Sensitivity (recall, true-positive rate) TP / (TP + FN) with a proportion CI.

    Parameters
    ----------
    y_true : array of shape (n,) or ConfusionCounts
        Labels (0/1), or counts already computed by :func:`confusion_counts`.
    y_pred : array of shape (n,), optional
        Predicted labels (0/1); omit when ``y_true`` is a ConfusionCounts.
    ci : {"wilson", "clopper-pearson", "jeffreys"}
    alpha : float
        1 - confidence level.
    cohort : str, optional
        Named in the warning when the metric is undefined.

    Returns
    -------
    ProportionEstimate
        NaN with a note (and an :class:`UndefinedMetricWarning`) when there are no positives.
    """
    c = _counts(y_true, y_pred)
    return _proportion(
        "sensitivity",
        c.tp,
        c.tp + c.fn,
        method=ci,
        alpha=alpha,
        cohort=cohort,
        why="no positive cases",
    )


def specificity(
    y_true: object,
    y_pred: object | None = None,
    *,
    ci: str = "wilson",
    alpha: float = 0.05,
    cohort: str | None = None,
) -> ProportionEstimate:
    """Specificity TN / (TN + FP) with a proportion CI (see :func:`sensitivity`)."""
    c = _counts(y_true, y_pred)
    return _proportion(
        "specificity",
        c.tn,
        c.tn + c.fp,
        method=ci,
        alpha=alpha,
        cohort=cohort,
        why="no negative cases",
    )


def _at_prevalence(
    metric: str,
    sens: ProportionEstimate,
    spec: ProportionEstimate,
    prevalence: float,
    positive: bool,
    cohort: str | None,
) -> MetricEstimate:
    """PPV/NPV at a stated prevalence by Bayes' theorem; CI from the sens/spec CI bounds."""
    if not isinstance(prevalence, (int, float)) or not 0.0 < prevalence < 1.0:
        raise param_error("prevalence", metric, BAD_PREVALENCE, prevalence)
    if math.isnan(sens.estimate) or math.isnan(spec.estimate):
        note = warn_undefined(metric, "sensitivity or specificity undefined", cohort)
        return MetricEstimate(math.nan, math.nan, math.nan, "bayes-prevalence", note)
    pi = float(prevalence)

    def ppv_(se: float, sp: float) -> float:
        d = se * pi + (1 - sp) * (1 - pi)
        return se * pi / d if d > 0 else math.nan

    def npv_(se: float, sp: float) -> float:
        d = sp * (1 - pi) + (1 - se) * pi
        return sp * (1 - pi) / d if d > 0 else math.nan

    f = ppv_ if positive else npv_
    est = f(sens.estimate, spec.estimate)
    # PPV increases with se and sp; NPV too: the bounds combine the CI bounds (conservative).
    lo, hi = f(sens.ci_low, spec.ci_low), f(sens.ci_high, spec.ci_high)
    return MetricEstimate(est, lo, hi, f"bayes-prevalence({sens.method} bounds)")


def ppv(
    y_true: object,
    y_pred: object | None = None,
    *,
    ci: str = "wilson",
    alpha: float = 0.05,
    cohort: str | None = None,
    prevalence: float | None = None,
) -> ProportionEstimate | MetricEstimate:
    """Positive predictive value TP / (TP + FP) with a proportion CI.

    With ``prevalence`` the PPV is recomputed for that prevalence by Bayes' theorem from
    sensitivity and specificity, and the interval combines their interval bounds (a
    conservative interval; Mercaldo, Lau & Zhou 2007 discuss alternatives).
    """
    c = _counts(y_true, y_pred)
    if prevalence is not None:
        return _at_prevalence(
            "ppv",
            sensitivity(c, ci=ci, alpha=alpha, cohort=cohort),
            specificity(c, ci=ci, alpha=alpha, cohort=cohort),
            prevalence,
            True,
            cohort,
        )
    return _proportion(
        "ppv",
        c.tp,
        c.tp + c.fp,
        method=ci,
        alpha=alpha,
        cohort=cohort,
        why="no positive predictions",
    )


def npv(
    y_true: object,
    y_pred: object | None = None,
    *,
    ci: str = "wilson",
    alpha: float = 0.05,
    cohort: str | None = None,
    prevalence: float | None = None,
) -> ProportionEstimate | MetricEstimate:
    """Negative predictive value TN / (TN + FN); see :func:`ppv` for ``prevalence``."""
    c = _counts(y_true, y_pred)
    if prevalence is not None:
        return _at_prevalence(
            "npv",
            sensitivity(c, ci=ci, alpha=alpha, cohort=cohort),
            specificity(c, ci=ci, alpha=alpha, cohort=cohort),
            prevalence,
            False,
            cohort,
        )
    return _proportion(
        "npv",
        c.tn,
        c.tn + c.fn,
        method=ci,
        alpha=alpha,
        cohort=cohort,
        why="no negative predictions",
    )


def accuracy(
    y_true: object,
    y_pred: object | None = None,
    *,
    ci: str = "wilson",
    alpha: float = 0.05,
    cohort: str | None = None,
) -> ProportionEstimate:
    """Accuracy (TP + TN) / n with a proportion CI."""
    c = _counts(y_true, y_pred)
    return _proportion(
        "accuracy", c.tp + c.tn, c.n, method=ci, alpha=alpha, cohort=cohort, why="no cases"
    )


def _nan(metric: str, method: str, cohort: str | None, why: str) -> MetricEstimate:
    note = warn_undefined(metric, why, cohort)
    return MetricEstimate(math.nan, math.nan, math.nan, method, note)


def balanced_accuracy(
    y_true: object, y_pred: object | None = None, *, alpha: float = 0.05, cohort: str | None = None
) -> MetricEstimate:
    """(sensitivity + specificity) / 2, with a Wald CI from the two independent binomials."""
    c = _counts(y_true, y_pred)
    alpha = check_alpha(alpha, "balanced_accuracy")
    if c.n_positive == 0 or c.n_negative == 0:
        return _nan("balanced_accuracy", "wald", cohort, "needs both positive and negative cases")
    se, sp = c.tp / c.n_positive, c.tn / c.n_negative
    est = (se + sp) / 2
    sd = 0.5 * math.sqrt(se * (1 - se) / c.n_positive + sp * (1 - sp) / c.n_negative)
    z = stats.norm.isf(alpha / 2)
    return MetricEstimate(est, max(0.0, est - z * sd), min(1.0, est + z * sd), "wald")


def youden_j(
    y_true: object, y_pred: object | None = None, *, alpha: float = 0.05, cohort: str | None = None
) -> MetricEstimate:
    """Youden's J = sensitivity + specificity - 1, with a Wald CI (Youden 1950)."""
    b = balanced_accuracy(y_true, y_pred, alpha=alpha, cohort=cohort)
    if math.isnan(b.estimate):
        return MetricEstimate(math.nan, math.nan, math.nan, "wald", b.note)
    return MetricEstimate(2 * b.estimate - 1, 2 * b.ci_low - 1, 2 * b.ci_high - 1, "wald")


def f1_score(
    y_true: object, y_pred: object | None = None, *, cohort: str | None = None
) -> MetricEstimate:
    """F1 = 2 TP / (2 TP + FP + FN); point estimate only (the engine adds a bootstrap CI)."""
    c = _counts(y_true, y_pred)
    d = 2 * c.tp + c.fp + c.fn
    if d == 0:
        return _nan("f1", "none", cohort, "no positive cases and no positive predictions")
    return MetricEstimate(2 * c.tp / d, math.nan, math.nan, "none")


def mover_ratio_ci(
    p1: float, ci1: tuple[float, float], p2: float, ci2: tuple[float, float]
) -> tuple[float, float]:
    """MOVER-R interval of the ratio ``p1 / p2`` of two independent estimates from their
    own intervals (Donner & Zou 2012, method of variance estimates recovery).

    ``L = (p1 p2 - sqrt((p1 p2)^2 - l1 u2 (2 p1 - l1)(2 p2 - u2))) / (u2 (2 p2 - u2))`` and
    ``U = (p1 p2 + sqrt((p1 p2)^2 - u1 l2 (2 p1 - u1)(2 p2 - l2))) / (l2 (2 p2 - l2))``:
    the roots of ``(p1 - t p2)^2 = (p1 - l1)^2 + t^2 (u2 - p2)^2`` (and its upper twin).
    With Wilson component intervals it keeps a width at ``p1 = 0`` (lower bound 0) and at
    ``p2 = 1``, where the log method and statsmodels' score interval of the ratio
    degenerate; ``U`` is infinite when ``l2 = 0``.

    References
    ----------
    Donner, A. & Zou, G. Y. (2012). Closed-form confidence intervals for functions of the
    normal mean and standard deviation. Stat Methods Med Res 21(4):347-359.
    """
    (l1, u1), (l2, u2) = ci1, ci2
    r = p1 * p2
    a, c = u2 * (2 * p2 - u2), l1 * (2 * p1 - l1)
    if a == 0:  # the quadratic is linear: -2 r t + c = 0
        lo = c / (2 * r) if r > 0 else 0.0
    else:  # a < 0 (wide u2): the roots straddle 0 and this is the non-negative one
        lo = (r - math.sqrt(max(0.0, r * r - a * c))) / a
    a, c = l2 * (2 * p2 - l2), u1 * (2 * p1 - u1)
    if a <= 0:
        return max(0.0, lo), math.inf
    hi = (r + math.sqrt(max(0.0, r * r - a * c))) / a
    return max(0.0, lo), hi


def _lr(
    metric: str, c: ConfusionCounts, positive: bool, alpha: float, cohort: str | None
) -> MetricEstimate:
    alpha = check_alpha(alpha, metric)
    if c.n_positive == 0 or c.n_negative == 0:
        return _nan(metric, "log", cohort, "needs both positive and negative cases")
    a, b = (c.tp, c.fp) if positive else (c.fn, c.tn)
    n1, n0 = c.n_positive, c.n_negative
    if b == 0:
        return _nan(
            metric,
            "log",
            cohort,
            "division by zero (specificity is 1)"
            if positive
            else "division by zero (specificity is 0)",
        )
    if a == 0:
        # The log method needs a > 0: MOVER-R of the two Wilson intervals keeps an upper bound
        lo, hi = mover_ratio_ci(
            0.0,
            proportion_ci(0, n1, method="wilson", alpha=alpha),
            b / n0,
            proportion_ci(b, n0, method="wilson", alpha=alpha),
        )
        return MetricEstimate(
            0.0,
            lo,
            hi,
            "mover-wilson",
            f"{metric} is 0 (zero count): the log-method interval is undefined, so the "
            "interval is MOVER-R (Donner & Zou 2012) of the two proportions' Wilson intervals",
        )
    est = (a / n1) / (b / n0)
    se = math.sqrt(1 / a - 1 / n1 + 1 / b - 1 / n0)
    z = stats.norm.isf(alpha / 2)
    return MetricEstimate(est, est * math.exp(-z * se), est * math.exp(z * se), "log")


def likelihood_ratio_positive(
    y_true: object, y_pred: object | None = None, *, alpha: float = 0.05, cohort: str | None = None
) -> MetricEstimate:
    """LR+ = sensitivity / (1 - specificity) with the log-method CI; at LR+ = 0 (no true
    positive) the MOVER-R interval of :func:`mover_ratio_ci`.

    References
    ----------
    Simel, Samsa & Matchar (1991). Likelihood ratios with confidence: sample size
    estimation for diagnostic test studies. J Clin Epidemiol 44(8):763–770.
    """
    return _lr("lr_positive", _counts(y_true, y_pred), True, alpha, cohort)


def likelihood_ratio_negative(
    y_true: object, y_pred: object | None = None, *, alpha: float = 0.05, cohort: str | None = None
) -> MetricEstimate:
    """LR- = (1 - sensitivity) / specificity with the log-method CI (Simel et al. 1991);
    at LR- = 0 (no false negative) the MOVER-R interval of :func:`mover_ratio_ci`."""
    return _lr("lr_negative", _counts(y_true, y_pred), False, alpha, cohort)
