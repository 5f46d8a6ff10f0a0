"""ROC analysis: AUC with DeLong and clustered (Obuchowski) intervals, the paired DeLong
test, average precision, operating points and threshold rules."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from medlens._errors import InputDataError, param_error

from ._common import (
    check_alpha,
    check_binary,
    check_probabilities,
    check_same_length,
    warn_undefined,
)
from ._proportions import MetricEstimate

__all__ = [
    "DelongTestResult",
    "RocResult",
    "average_precision",
    "choose_threshold",
    "delong_test",
    "midranks",
    "newcombe_auc_ci",
    "roc_auc",
    "roc_curve",
    "sensitivity_at_specificity",
    "specificity_at_sensitivity",
]

ONE_CLASS = "only one class present ({n_pos} positive, {n_neg} negative cases)"
BAD_CLUSTERS = "clusters must have one entry per case; got {got} for {n} cases."
THRESHOLD_RULES = ("youden", "target_sensitivity", "target_specificity")


def newcombe_auc_ci(
    auc: float, n_positive: float, n_negative: float, *, alpha: float = 0.05
) -> tuple[float, float]:
    """Score-type (Wilson-like) interval of the AUC, Newcombe's (2006) method 5.

    The set of ``theta`` with ``(auc - theta)**2 <= z**2 V(theta)``, where ``V`` is the
    Hanley & McNeil (1982) variance evaluated at ``theta`` with both ``n - 1`` terms
    replaced by ``N* = (n_positive + n_negative) / 2 - 1``::

        V(t) = [t(1 - t) + N* (t / (2 - t) - t**2) + N* (2 t**2 / (1 + t) - t**2)]
               / (n_positive * n_negative)

    Unlike DeLong's interval it keeps a width at AUC 0 or 1 (complete separation), where
    the empirical variance is 0. Sample sizes may be effective (non-integer) sizes.

    Parameters
    ----------
    auc : float in [0, 1]
    n_positive, n_negative : float
        (Effective) numbers of positive and negative cases, each >= 1.
    alpha : float
        1 - confidence level.

    Returns
    -------
    (low, high) : tuple of float

    References
    ----------
    Newcombe, R. G. (2006). Confidence intervals for an effect size measure based on the
    Mann-Whitney statistic. Part 2: asymptotic methods and evaluation. Statistics in
    Medicine 25(4):559-573.
    Hanley, J. A. & McNeil, B. J. (1982). The meaning and use of the area under a
    receiver operating characteristic (ROC) curve. Radiology 143:29-36.
    """
    from scipy import optimize

    alpha = check_alpha(alpha, "newcombe_auc_ci")
    if not (isinstance(auc, (int, float, np.floating)) and 0.0 <= auc <= 1.0):
        raise param_error("auc", "newcombe_auc_ci", "a float in [0, 1]", auc)
    for name, v in (("n_positive", n_positive), ("n_negative", n_negative)):
        if not (isinstance(v, (int, float, np.integer, np.floating)) and v >= 1):
            raise param_error(name, "newcombe_auc_ci", "a number >= 1", v)
    z2 = float(stats.norm.isf(alpha / 2)) ** 2
    m, n = float(n_positive), float(n_negative)
    nstar = (m + n) / 2 - 1

    def f(t: float) -> float:
        v = t * (1 - t) + nstar * (t / (2 - t) - t * t) + nstar * (2 * t * t / (1 + t) - t * t)
        return (auc - t) ** 2 - z2 * v / (m * n)

    eps = 1e-15
    low = 0.0 if auc == 0 else float(optimize.brentq(f, 0.0, min(auc, 1 - eps), xtol=1e-14))
    high = 1.0 if auc == 1 else float(optimize.brentq(f, max(auc, eps), 1.0, xtol=1e-14))
    return low, high


@dataclass(frozen=True)
class RocResult:
    """Area under the ROC curve with its variance and two-sided confidence interval.

    ``method`` is "delong" (Sun & Xu 2014 fast algorithm) or "obuchowski" (clustered
    data). ``n_clusters`` and ``design_effect`` (clustered variance / DeLong variance) are
    set for the clustered method.
    """

    estimate: float
    ci_low: float
    ci_high: float
    variance: float
    method: str
    n_positive: int
    n_negative: int
    n_clusters: int | None = None
    design_effect: float | None = None
    note: str | None = None
    fpr: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)
    tpr: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)
    thresholds: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)


@dataclass(frozen=True)
class DelongTestResult:
    """Paired DeLong test of two AUCs computed on the same cases."""

    auc1: float
    auc2: float
    difference: float
    ci_low: float
    ci_high: float
    z: float
    p_value: float
    covariance: float
    note: str | None = None


def midranks(x: np.ndarray) -> np.ndarray:
    """Midranks (1-based; ties get the mean of their ranks), O(n log n)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = x.size
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], n]
    mid = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks_sorted = np.repeat(mid, ends - starts)
    out = np.empty(n, dtype=np.float64)
    out[order] = ranks_sorted
    return out


def _placements(y: np.ndarray, s: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong structural components (V10 per positive, V01 per negative), both in
    the original order of the cases, with one O(n log n) sort (Sun & Xu 2014).

    V10 of a positive = (negatives below it + half the tied negatives) / n; V01 of a
    negative = (positives above it + half the tied positives) / m. These equal the
    midrank expressions (Tz - Tx) / n and 1 - (Tz - Ty) / m exactly.
    """
    order = np.argsort(s, kind="mergesort")
    ss, yo = s[order], y[order].astype(np.int64)
    size = s.size
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    ends = np.r_[starts[1:], size]
    group = np.repeat(np.arange(starts.size), ends - starts)
    pos_in = np.add.reduceat(yo, starts)
    neg_in = (ends - starts) - pos_in
    neg_below = np.cumsum(neg_in) - neg_in
    pos_below = np.cumsum(pos_in) - pos_in
    m = int(pos_in.sum())
    n = size - m
    pos_above = m - pos_below - pos_in
    num10 = (neg_below + 0.5 * neg_in)[group]  # per sorted case, used for positives
    num01 = (pos_above + 0.5 * pos_in)[group]  # per sorted case, used for negatives
    place = np.empty(size)
    place[order] = np.where(yo == 1, num10, num01)
    is_pos = y == 1
    v10 = place[is_pos] / n
    v01 = place[~is_pos] / m
    auc = float(place[is_pos].sum() / (m * n))
    return auc, v10, v01


def _dense_codes(c: np.ndarray) -> np.ndarray:
    """Codes 0..K-1 of the distinct values of ``c`` (O(n) for non-negative integers)."""
    if c.dtype.kind in "iu" and c.size and c.min() >= 0 and c.max() < 4 * c.size + 1024:
        present = np.bincount(c)
        remap = np.cumsum(present > 0) - 1
        return remap[c]
    return np.unique(c, return_inverse=True)[1].reshape(-1)


def _ci(est: float, var: float, alpha: float) -> tuple[float, float]:
    if math.isnan(var):
        return math.nan, math.nan
    z = stats.norm.isf(alpha / 2)
    sd = math.sqrt(max(var, 0.0))
    return max(0.0, est - z * sd), min(1.0, est + z * sd)


def roc_curve(y_true: object, y_score: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empirical ROC curve: (fpr, tpr, thresholds), thresholds decreasing, starting at +inf.

    A case is positive when ``score >= threshold``. Every distinct score is a threshold
    (no points are dropped, unlike ``sklearn.metrics.roc_curve(drop_intermediate=True)``).
    """
    y = check_binary(y_true)
    s = check_probabilities(y_score, probabilities=False)
    check_same_length(y, s, "y_true", "y_score")
    order = np.argsort(-s, kind="mergesort")
    ss, ys = s[order], y[order]
    last = np.r_[ss[1:] != ss[:-1], True]
    tps = np.cumsum(ys)[last]
    fps = np.cumsum(1 - ys)[last]
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    tpr = np.r_[0.0, tps / n_pos] if n_pos else np.full(tps.size + 1, np.nan)
    fpr = np.r_[0.0, fps / n_neg] if n_neg else np.full(fps.size + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, ss[last]]


def roc_auc(
    y_true: object,
    y_score: object,
    *,
    clusters: object | None = None,
    alpha: float = 0.05,
    cohort: str | None = None,
    probabilities: bool = True,
    curve: bool = True,
) -> RocResult:
    """ROC AUC with the DeLong confidence interval, or Obuchowski's for clustered data.

    Parameters
    ----------
    y_true : array of shape (n,)
        Labels 0/1.
    y_score : array of shape (n,)
        Scores; higher means more likely positive.
    clusters : array of shape (n,), optional
        Cluster (patient) identifier per case. When given, the variance is Obuchowski's
        clustered estimator; with one case per cluster it equals DeLong's exactly.
    alpha : float
        1 - confidence level. The normal-theory interval is clipped to [0, 1] as in pROC.
    cohort : str, optional
        Named in the warning when the AUC is undefined.
    probabilities : bool
        When True (default) scores must lie in [0, 1].
    curve : bool
        Also return the ROC curve points (``fpr``, ``tpr``, ``thresholds``).

    Returns
    -------
    RocResult
        NaN (with a note and an :class:`UndefinedMetricWarning`) when only one class is present.

    References
    ----------
    DeLong, DeLong & Clarke-Pearson (1988). Biometrics 44:837–845.
    Sun & Xu (2014). Fast implementation of DeLong's algorithm. IEEE SPL 21(11):1389–1393.
    Obuchowski (1997). Nonparametric analysis of clustered ROC curve data.
    Biometrics 53:567–578.
    """
    y = check_binary(y_true)
    s = check_probabilities(y_score, probabilities=probabilities)
    check_same_length(y, s, "y_true", "y_score")
    alpha = check_alpha(alpha, "roc_auc")
    m = int(y.sum())
    n = int(y.size - m)
    method = "delong" if clusters is None else "obuchowski"
    if m == 0 or n == 0:
        note = warn_undefined("auc", ONE_CLASS.format(n_pos=m, n_neg=n), cohort)
        return RocResult(math.nan, math.nan, math.nan, math.nan, method, m, n, note=note)
    auc, v10, v01 = _placements(y, s)
    note = None
    if m < 2 or n < 2:
        # like pROC: the variance needs at least two cases of each class
        var_delong = math.nan
        note = f"no confidence interval: the variance needs at least 2 positive and 2 negative cases ({m} and {n})"
    else:
        var_delong = float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)
    fpr, tpr, thr = roc_curve(y, s) if curve else (np.empty(0), np.empty(0), np.empty(0))
    if clusters is None:
        lo, hi = _ci(auc, var_delong, alpha)
        return RocResult(
            auc, lo, hi, var_delong, method, m, n, note=note, fpr=fpr, tpr=tpr, thresholds=thr
        )
    c = np.asarray(clusters)
    if c.ndim != 1 or c.shape[0] != y.size:
        raise InputDataError(BAD_CLUSTERS.format(got=getattr(c, "shape", None), n=y.size))
    cid = _dense_codes(c)
    var, n_clusters = _obuchowski_variance(auc, y, cid, v10, v01)
    if math.isnan(var) and note is None:
        note = "no confidence interval: the clustered variance needs positives and negatives in at least 2 clusters each"
    lo, hi = _ci(auc, var, alpha)
    deff = float(var / var_delong) if var_delong > 0 else math.nan
    return RocResult(
        auc,
        lo,
        hi,
        float(var),
        method,
        m,
        n,
        n_clusters,
        deff,
        note=note,
        fpr=fpr,
        tpr=tpr,
        thresholds=thr,
    )


def _obuchowski_variance(
    auc: float, y: np.ndarray, cid: np.ndarray, v10: np.ndarray, v01: np.ndarray
) -> tuple[float, int]:
    """Obuchowski (1997) eq. (3)-(5): variance of the AUC for clustered data."""
    k = int(cid.max()) + 1
    pos, neg = y == 1, y == 0
    M, N = int(pos.sum()), int(neg.sum())
    m_i = np.bincount(cid[pos], minlength=k).astype(np.float64)
    n_i = np.bincount(cid[neg], minlength=k).astype(np.float64)
    v10_i = np.bincount(cid[pos], weights=v10, minlength=k)
    v01_i = np.bincount(cid[neg], weights=v01, minlength=k)
    i10, i01 = int((m_i > 0).sum()), int((n_i > 0).sum())
    d10 = v10_i - m_i * auc
    d01 = v01_i - n_i * auc
    if i10 < 2 or i01 < 2:
        return math.nan, k
    s10 = i10 / ((i10 - 1) * M) * np.sum(d10**2)
    s01 = i01 / ((i01 - 1) * N) * np.sum(d01**2)
    s11 = k / (k - 1) * np.sum(d10 * d01)
    return float(s10 / M + s01 / N + 2.0 * s11 / (M * N)), k


def delong_test(
    y_true: object,
    y_score1: object,
    y_score2: object,
    *,
    alpha: float = 0.05,
    probabilities: bool = True,
) -> DelongTestResult:
    """Paired DeLong test of AUC(score1) = AUC(score2) on the same cases (two-sided).

    Agrees with R ``pROC::roc.test(r1, r2, method="delong", paired=TRUE)``.

    Returns
    -------
    DelongTestResult
        ``difference`` = AUC1 - AUC2 with its ``1 - alpha`` normal CI, z and p-value.
    """
    y = check_binary(y_true)
    s1 = check_probabilities(y_score1, "y_score1", probabilities=probabilities)
    s2 = check_probabilities(y_score2, "y_score2", probabilities=probabilities)
    check_same_length(y, s1, "y_true", "y_score1")
    check_same_length(y, s2, "y_true", "y_score2")
    alpha = check_alpha(alpha, "delong_test")
    m = int(y.sum())
    n = int(y.size - m)
    if m < 2 or n < 2:
        note = warn_undefined("auc difference", "needs at least 2 positive and 2 negative cases")
        nan = math.nan
        return DelongTestResult(nan, nan, nan, nan, nan, nan, nan, nan, note)
    a1, x1, y1 = _placements(y, s1)
    a2, x2, y2 = _placements(y, s2)
    s10 = np.cov(np.vstack([x1, x2]), ddof=1)
    s01 = np.cov(np.vstack([y1, y2]), ddof=1)
    cov = s10 / m + s01 / n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    d = a1 - a2
    if var <= 0:
        note = "the two scores rank the cases identically; the difference has zero variance"
        return DelongTestResult(a1, a2, d, d, d, math.nan, math.nan, float(cov[0, 1]), note)
    sd = math.sqrt(var)
    z = d / sd
    p = float(2 * stats.norm.sf(abs(z)))
    q = stats.norm.isf(alpha / 2)
    return DelongTestResult(a1, a2, d, d - q * sd, d + q * sd, float(z), p, float(cov[0, 1]))


def average_precision(
    y_true: object,
    y_score: object,
    *,
    cohort: str | None = None,
    probabilities: bool = True,
    sample_weight: object | None = None,
) -> MetricEstimate:
    """Average precision AP = sum_k (R_k - R_{k-1}) P_k over distinct score thresholds.

    Same definition as ``sklearn.metrics.average_precision_score`` (no interpolation).
    Point estimate only; :func:`medlens.validation.evaluate` adds a (cluster) bootstrap CI.
    """
    y = check_binary(y_true)
    s = check_probabilities(y_score, probabilities=probabilities)
    check_same_length(y, s, "y_true", "y_score")
    w = np.ones(y.size) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if (w[y == 1]).sum() == 0:
        note = warn_undefined("average_precision", "no positive cases", cohort)
        return MetricEstimate(math.nan, math.nan, math.nan, "none", note)
    order = np.argsort(-s, kind="mergesort")
    ss, ys, ws = s[order], y[order], w[order]
    last = np.r_[ss[1:] != ss[:-1], True]
    tp = np.cumsum(ws * ys)[last]
    fp = np.cumsum(ws * (1 - ys))[last]
    dtp = np.diff(np.r_[0.0, tp])
    keep = dtp > 0
    ap = float(np.sum(dtp[keep] * tp[keep] / (tp[keep] + fp[keep])) / tp[-1])
    return MetricEstimate(ap, math.nan, math.nan, "none")


def _operating_point(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fpr, tpr, thr = roc_curve(y, s)
    return 1 - fpr[1:], tpr[1:], thr[1:]


def sensitivity_at_specificity(
    y_true: object, y_score: object, *, target: float
) -> tuple[float, float]:
    """Highest empirical sensitivity among thresholds with specificity >= ``target``.

    Returns
    -------
    (sensitivity, threshold) : tuple of float
        NaN, NaN when no threshold reaches the target.
    """
    if not isinstance(target, (int, float)) or not 0.0 <= target <= 1.0:
        raise param_error("target", "sensitivity_at_specificity", "a float in [0, 1]", target)
    y = check_binary(y_true)
    spec, sens, thr = _operating_point(y, check_probabilities(y_score, probabilities=False))
    ok = spec >= target
    if not ok.any():
        return math.nan, math.nan
    i = np.flatnonzero(ok)[np.argmax(sens[ok])]
    return float(sens[i]), float(thr[i])


def specificity_at_sensitivity(
    y_true: object, y_score: object, *, target: float
) -> tuple[float, float]:
    """Highest empirical specificity among thresholds with sensitivity >= ``target``."""
    if not isinstance(target, (int, float)) or not 0.0 <= target <= 1.0:
        raise param_error("target", "specificity_at_sensitivity", "a float in [0, 1]", target)
    y = check_binary(y_true)
    spec, sens, thr = _operating_point(y, check_probabilities(y_score, probabilities=False))
    ok = sens >= target
    if not ok.any():
        return math.nan, math.nan
    i = np.flatnonzero(ok)[np.argmax(spec[ok])]
    return float(spec[i]), float(thr[i])


def choose_threshold(
    y_true: object, y_score: object, *, rule: str = "youden", target: float | None = None
) -> float:
    """Choose an operating threshold on tuning data (then lock it for the test split).

    Parameters
    ----------
    rule : {"youden", "target_sensitivity", "target_specificity"}
        Maximise Youden's J (ties: the highest threshold); or the highest threshold whose
        sensitivity is >= ``target``; or the lowest threshold whose specificity is >= ``target``.
    target : float, optional
        Required by the target rules.

    Returns
    -------
    float
        A case is positive when ``score >= threshold``.
    """
    if rule not in THRESHOLD_RULES:
        raise param_error("rule", "choose_threshold", f"one of {THRESHOLD_RULES}", rule)
    y = check_binary(y_true)
    s = check_probabilities(y_score, probabilities=False)
    check_same_length(y, s, "y_true", "y_score")
    if y.sum() == 0 or y.sum() == y.size:
        raise InputDataError(
            "choose_threshold needs both positive and negative tuning cases; got "
            + ONE_CLASS.format(n_pos=int(y.sum()), n_neg=int(y.size - y.sum()))
            + "."
        )
    spec, sens, thr = _operating_point(y, s)
    if rule == "youden":
        return float(thr[int(np.argmax(sens + spec - 1))])
    if target is None or not isinstance(target, (int, float)) or not 0.0 < target <= 1.0:
        raise param_error("target", "choose_threshold", "a float in (0, 1]", target)
    if rule == "target_sensitivity":
        return float(thr[int(np.flatnonzero(sens >= target)[0])])
    ok = np.flatnonzero(spec >= target)
    if ok.size == 0:
        raise InputDataError(f"no threshold reaches specificity >= {target} on the tuning data.")
    return float(thr[int(ok[-1])])
