"""Calibration: reliability curves, ECE/MCE against a null band, Brier score and its
decomposition, logistic recalibration slope/intercept, Spiegelhalter z, Hosmer–Lemeshow,
and recalibration maps (temperature, Platt, isotonic)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, special, stats

from medlens._errors import InputDataError, param_error

from ._common import (
    check_alpha,
    check_binary,
    check_probabilities,
    check_same_length,
    warn_undefined,
)
from ._proportions import MetricEstimate, proportion_ci
from ._roc import _dense_codes

__all__ = [
    "BrierDecomposition",
    "CalibrationResult",
    "EceResult",
    "IsotonicCalibration",
    "PlattScaling",
    "ReliabilityCurve",
    "TemperatureScaling",
    "brier_decomposition",
    "brier_score",
    "calibration",
    "calibration_slope_intercept",
    "expected_calibration_error",
    "hosmer_lemeshow",
    "reliability_curve",
    "spiegelhalter_z",
]

STRATEGIES = ("uniform", "quantile")
LOGIT_EPS = 1e-12
NOT_FITTED = "{cls} is not fitted; call fit(y_true, y_score) on the calibration split first."


def _yz(y_true: object, y_score: object) -> tuple[np.ndarray, np.ndarray]:
    y = check_binary(y_true)
    s = check_probabilities(y_score)
    check_same_length(y, s, "y_true", "y_score")
    return y, s


def _check_bins(n_bins: object, func: str) -> int:
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 2:
        raise param_error("n_bins", func, "an int >= 2", n_bins)
    return int(n_bins)


def _bin_index(s: np.ndarray, n_bins: int, strategy: str) -> tuple[np.ndarray, np.ndarray]:
    """Bin of each score and the bin edges; bins are [e_i, e_{i+1}), the last one closed."""
    if strategy not in STRATEGIES:
        raise param_error("strategy", "reliability_curve", f"one of {STRATEGIES}", strategy)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        idx = np.minimum((s * n_bins).astype(np.int64), n_bins - 1)
        return idx, edges
    edges = np.unique(np.quantile(s, np.linspace(0.0, 1.0, n_bins + 1)))
    idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, edges.size - 2)
    return idx, edges


@dataclass(frozen=True)
class ReliabilityCurve:
    """Observed frequency per bin of predicted probability, with a Wilson CI per bin.

    Arrays have one entry per non-empty bin.
    """

    strategy: str
    bin_edges: np.ndarray
    bin_low: np.ndarray
    bin_high: np.ndarray
    count: np.ndarray
    mean_predicted: np.ndarray
    observed: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray


def reliability_curve(
    y_true: object,
    y_score: object,
    *,
    n_bins: int = 10,
    strategy: str = "uniform",
    alpha: float = 0.05,
) -> ReliabilityCurve:
    """Reliability (calibration) curve with equal-width ("uniform") or equal-mass ("quantile") bins.

    Mean predicted probability and observed frequency agree with
    ``sklearn.calibration.calibration_curve`` for the same bins; each observed frequency
    gets a Wilson interval.
    """
    y, s = _yz(y_true, y_score)
    n_bins = _check_bins(n_bins, "reliability_curve")
    alpha = check_alpha(alpha, "reliability_curve")
    idx, edges = _bin_index(s, n_bins, strategy)
    nb = edges.size - 1
    cnt = np.bincount(idx, minlength=nb)
    pos = np.bincount(idx, weights=y, minlength=nb)
    tot = np.bincount(idx, weights=s, minlength=nb)
    keep = cnt > 0
    cis = np.array(
        [
            proportion_ci(int(k), int(m), alpha=alpha)
            for k, m in zip(pos[keep], cnt[keep], strict=True)
        ]
    )
    return ReliabilityCurve(
        strategy,
        edges,
        edges[:-1][keep],
        edges[1:][keep],
        cnt[keep],
        tot[keep] / cnt[keep],
        pos[keep] / cnt[keep],
        cis[:, 0],
        cis[:, 1],
    )


@dataclass(frozen=True)
class EceResult:
    """ECE and MCE with the band they would fall in under perfect calibration.

    ``null_low``/``null_high`` are the ``alpha/2`` and ``1 - alpha/2`` quantiles of the
    ECE when labels are drawn as Bernoulli(score) (same n, same scores); ``p_value`` is the
    fraction of such simulations with an ECE at least as large as the observed one.
    """

    ece: float
    mce: float
    n_bins: int
    strategy: str
    null_low: float
    null_high: float
    null_median: float
    p_value: float
    n_simulations: int
    null_method: str


def _ece_from_sums(cnt: np.ndarray, dsum: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    ece = np.abs(dsum).sum(axis=-1) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.where(cnt > 0, np.abs(dsum) / np.maximum(cnt, 1), 0.0)
    return ece, gap.max(axis=-1)


def expected_calibration_error(
    y_true: object,
    y_score: object,
    *,
    n_bins: int = 10,
    strategy: str = "uniform",
    n_simulations: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> EceResult:
    """Expected and maximum calibration error (Naeini et al. 2015) with a null band.

    ECE = sum_b (n_b / n) |mean(score)_b - mean(label)_b|; MCE = max_b of the gap. A bare
    ECE is biased upwards at small n, so the null band shows what a perfectly calibrated
    model would score at the same n and score distribution: labels are simulated as
    Bernoulli(score) exactly when n * n_simulations <= 5e7, otherwise each bin's label sum
    is drawn from its normal approximation (mean sum p, variance sum p(1-p)).
    """
    y, s = _yz(y_true, y_score)
    n_bins = _check_bins(n_bins, "expected_calibration_error")
    alpha = check_alpha(alpha, "expected_calibration_error")
    if not isinstance(n_simulations, (int, np.integer)) or n_simulations < 1:
        raise param_error(
            "n_simulations", "expected_calibration_error", "an int >= 1", n_simulations
        )
    idx, edges = _bin_index(s, n_bins, strategy)
    nb = edges.size - 1
    n = y.size
    cnt = np.bincount(idx, minlength=nb).astype(np.float64)
    ssum = np.bincount(idx, weights=s, minlength=nb)
    ece, mce = _ece_from_sums(cnt, ssum - np.bincount(idx, weights=y, minlength=nb), n)
    rng = np.random.default_rng(seed)
    # simulate on the sorted scores so the band does not depend on the row order
    order = np.argsort(s, kind="mergesort")
    s, idx = s[order], idx[order]
    if n * n_simulations <= 5e7:
        method = "exact Bernoulli(score) simulation"
        sims = []
        chunk = max(1, int(5e6 // n))
        for start in range(0, n_simulations, chunk):
            k = min(chunk, n_simulations - start)
            ysim = (rng.random((k, n)) < s).astype(np.float64)
            ysum = np.stack([np.bincount(idx, weights=row, minlength=nb) for row in ysim])
            sims.append(_ece_from_sums(cnt, ssum - ysum, n)[0])
        null = np.concatenate(sims)
    else:
        method = "per-bin normal approximation of Bernoulli(score) sums"
        var = np.bincount(idx, weights=s * (1 - s), minlength=nb)
        ysum = ssum + rng.standard_normal((n_simulations, nb)) * np.sqrt(var)
        null = _ece_from_sums(cnt, ssum - ysum, n)[0]
    lo, med, hi = np.quantile(null, [alpha / 2, 0.5, 1 - alpha / 2])
    p = float((np.sum(null >= ece - 1e-15) + 1) / (null.size + 1))
    return EceResult(
        float(ece),
        float(mce),
        nb,
        strategy,
        float(lo),
        float(hi),
        float(med),
        p,
        int(n_simulations),
        method,
    )


def brier_score(y_true: object, y_score: object) -> float:
    """Mean squared difference between probability and outcome (Brier 1950)."""
    y, s = _yz(y_true, y_score)
    return float(np.mean((s - y) ** 2))


@dataclass(frozen=True)
class BrierDecomposition:
    """Murphy (1973) decomposition: brier ~= reliability - resolution + uncertainty.

    With binned scores the identity is exact up to the within-bin variance of the scores,
    reported as ``within_bin``: brier = reliability - resolution + uncertainty + within_bin.
    """

    brier: float
    reliability: float
    resolution: float
    uncertainty: float
    within_bin: float
    n_bins: int


def brier_decomposition(y_true: object, y_score: object, *, n_bins: int = 10) -> BrierDecomposition:
    """Brier score and its Murphy decomposition over equal-width bins.

    References
    ----------
    Murphy (1973). A new vector partition of the probability score. J Appl Meteor 12:595–600.
    """
    y, s = _yz(y_true, y_score)
    n_bins = _check_bins(n_bins, "brier_decomposition")
    idx, _ = _bin_index(s, n_bins, "uniform")
    n = y.size
    cnt = np.bincount(idx, minlength=n_bins).astype(np.float64)
    keep = cnt > 0
    sbar = np.bincount(idx, weights=s, minlength=n_bins)[keep] / cnt[keep]
    obar = np.bincount(idx, weights=y, minlength=n_bins)[keep] / cnt[keep]
    w = cnt[keep] / n
    ybar = y.mean()
    rel = float(np.sum(w * (sbar - obar) ** 2))
    res = float(np.sum(w * (obar - ybar) ** 2))
    unc = float(ybar * (1 - ybar))
    brier = float(np.mean((s - y) ** 2))
    return BrierDecomposition(brier, rel, res, unc, brier - (rel - res + unc), n_bins)


def _logit(s: np.ndarray) -> np.ndarray:
    return special.logit(np.clip(s, LOGIT_EPS, 1 - LOGIT_EPS))


def _newton(
    lp: np.ndarray, y: np.ndarray, slope: bool, start: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Newton–Raphson for logit P(y) = a + b lp (``slope``) or a + lp; None if it fails."""
    beta = start.copy()
    for _ in range(50):
        eta = beta[0] + beta[1] * lp if slope else beta[0] + lp
        mu = special.expit(eta)
        w = mu * (1 - mu)
        r = y - mu
        if slope:
            wl = w * lp
            H = np.array([[w.sum(), wl.sum()], [wl.sum(), float(np.dot(wl, lp))]])
            g = np.array([r.sum(), float(np.dot(lp, r))])
        else:
            H = np.array([[w.sum()]])
            g = np.array([r.sum()])
        try:
            step = np.linalg.solve(H, g)
            bread = np.linalg.inv(H)
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(step)):
            return None
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10 * (1 + np.max(np.abs(beta))):
            # the information matrix is that of the previous iterate; with a step this
            # small the difference is far below the precision of the reported interval
            return beta, bread, special.expit(beta[0] + beta[1] * lp if slope else beta[0] + lp)
    return None


LOGISTIC_NO_FIT = (
    "logistic recalibration failed to converge (the information matrix is singular: all "
    "scores equal or the scores separate the classes perfectly)."
)
SEPARATION = "the logistic fit does not converge (scores separate the classes perfectly?)"


def _logistic_fit(
    lp: np.ndarray, y: np.ndarray, *, slope: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum likelihood logistic recalibration; returns beta, bread (inverse information), mu.

    Starts at the perfectly calibrated solution (a = 0, b = 1), which is close for most
    models; falls back to a = b = 0 when Newton's method does not converge from there.
    """
    first = np.array([0.0, 1.0]) if slope else np.array([0.0])
    for start in (first, np.zeros_like(first)):
        out = _newton(lp, y, slope, start)
        if out is not None:
            return out
    raise InputDataError(LOGISTIC_NO_FIT)


def _robust_cov(
    X: np.ndarray, y: np.ndarray, mu: np.ndarray, bread: np.ndarray, clusters: np.ndarray
) -> np.ndarray:
    """Cluster-robust sandwich covariance with the small-sample factor of statsmodels
    (G / (G - 1) * (N - 1) / (N - K))."""
    g = _dense_codes(np.asarray(clusters))
    G = int(g.max()) + 1
    score = X * (y - mu)[:, None]
    sg = np.stack(
        [np.bincount(g, weights=score[:, j], minlength=G) for j in range(X.shape[1])], axis=1
    )
    meat = sg.T @ sg
    n, k = X.shape
    factor = G / (G - 1) * (n - 1) / (n - k)
    return factor * bread @ meat @ bread


def calibration_slope_intercept(
    y_true: object,
    y_score: object,
    *,
    clusters: object | None = None,
    alpha: float = 0.05,
    cohort: str | None = None,
) -> tuple[MetricEstimate, MetricEstimate]:
    """Calibration slope and intercept by logistic recalibration, with Wald CIs.

    slope: b in logit P(y=1) = a + b * logit(score) (ideal 1);
    intercept (calibration-in-the-large): a in logit P(y=1) = a + offset(logit(score))
    (ideal 0). Scores are clipped to [1e-12, 1 - 1e-12] before the logit. With
    ``clusters`` the covariance is the cluster-robust sandwich (patients).

    Returns
    -------
    (slope, intercept) : tuple of MetricEstimate

    References
    ----------
    Cox (1958). Two further applications of a model for binary regression. Biometrika 45.
    Van Calster et al. (2016). A calibration hierarchy for risk models. J Clin Epidemiol 74.
    """
    y, s = _yz(y_true, y_score)
    alpha = check_alpha(alpha, "calibration_slope_intercept")
    method = "logistic-wald" if clusters is None else "logistic-cluster-robust"
    if y.sum() == 0 or y.sum() == y.size:
        note = warn_undefined("calibration_slope", "only one class present", cohort)
        nan = MetricEstimate(math.nan, math.nan, math.nan, method, note)
        return nan, MetricEstimate(
            math.nan,
            math.nan,
            math.nan,
            method,
            note.replace("calibration_slope", "calibration_intercept"),
        )
    if np.ptp(s) == 0:
        note = warn_undefined("calibration_slope", "all scores are equal", cohort)
        slope = MetricEstimate(math.nan, math.nan, math.nan, method, note)
    else:
        slope = None
    z = stats.norm.isf(alpha / 2)
    lp = _logit(s)
    yf = y.astype(np.float64)
    out = []
    for slope_model, j in ((True, 1), (False, 0)):
        if slope_model and slope is not None:
            out.append(slope)
            continue
        try:
            beta, bread, mu = _logistic_fit(lp, yf, slope=slope_model)
        except InputDataError:
            key = "calibration_slope" if slope_model else "calibration_intercept"
            note = warn_undefined(key, SEPARATION, cohort)
            out.append(MetricEstimate(math.nan, math.nan, math.nan, method, note))
            continue
        if clusters is None:
            cov = bread
        else:
            X = np.column_stack([np.ones_like(lp), lp]) if slope_model else np.ones((lp.size, 1))
            cov = _robust_cov(X, yf, mu, bread, np.asarray(clusters))
        se = math.sqrt(cov[j, j])
        out.append(
            MetricEstimate(float(beta[j]), float(beta[j] - z * se), float(beta[j] + z * se), method)
        )
    return out[0], out[1]


def spiegelhalter_z(y_true: object, y_score: object) -> tuple[float, float]:
    """Spiegelhalter's z test of calibration; returns (z, two-sided p).

    z = sum (y - p)(1 - 2p) / sqrt(sum (1 - 2p)^2 p (1 - p)) (Spiegelhalter 1986,
    Statistics in Medicine 5:421–433).
    """
    y, s = _yz(y_true, y_score)
    num = np.sum((y - s) * (1 - 2 * s))
    den = math.sqrt(np.sum((1 - 2 * s) ** 2 * s * (1 - s)))
    if den == 0:
        return math.nan, math.nan
    z = float(num / den)
    return z, float(2 * stats.norm.sf(abs(z)))


def hosmer_lemeshow(
    y_true: object, y_score: object, *, n_groups: int = 10
) -> tuple[float, int, float]:
    """Hosmer–Lemeshow goodness-of-fit test over groups of predicted risk.

    Groups are cut at the quantiles of the scores (R ``quantile`` type 7, intervals closed
    on the right, the lowest closed on both sides; duplicate cut points merged), exactly
    as ``ResourceSelection::hoslem.test``; the statistic sums (O - E)^2 / E over both
    outcome columns and has ``n_groups - 2`` degrees of freedom.

    Returns
    -------
    (statistic, df, p_value)

    References
    ----------
    Hosmer & Lemeshow (1980). Goodness of fit tests for the multiple logistic regression
    model. Communications in Statistics A9:1043–1069.
    """
    y, s = _yz(y_true, y_score)
    if not isinstance(n_groups, (int, np.integer)) or n_groups < 3:
        raise param_error("n_groups", "hosmer_lemeshow", "an int >= 3", n_groups)
    cuts = np.unique(np.quantile(s, np.linspace(0, 1, n_groups + 1)))
    if cuts.size < 2:
        return math.nan, n_groups - 2, math.nan
    g = np.clip(np.searchsorted(cuts, s, side="left") - 1, 0, cuts.size - 2)
    k = cuts.size - 1
    o1 = np.bincount(g, weights=y, minlength=k)
    e1 = np.bincount(g, weights=s, minlength=k)
    n = np.bincount(g, minlength=k)
    o0, e0 = n - o1, n - e1
    with np.errstate(divide="ignore", invalid="ignore"):
        # like R, a group whose expected count is 0 makes the statistic undefined (NaN)
        chi = np.sum((o1 - e1) ** 2 / e1) + np.sum((o0 - e0) ** 2 / e0)
    df = n_groups - 2
    return float(chi), df, float(stats.chi2.sf(chi, df))


CITL_DEFINITION = (
    "mean(label) - mean(score): observed minus expected event rate; negative when risks "
    "are over-estimated on average (the sign of the calibration intercept; Van Calster "
    "et al. 2016)"
)


@dataclass(frozen=True)
class CalibrationResult:
    """Everything about calibration of one set of predictions.

    ``calibration_in_the_large`` is the observed event rate minus the mean predicted
    probability, ``mean(y) - mean(score)`` ("observed - expected"): negative when the
    model over-estimates risk on average, the same sign convention as the calibration
    intercept (``intercept``, a in logit P(y=1) = a + logit(score), which is negative
    for over-estimation; Van Calster et al. 2016, 2019; Steyerberg 2019, ch. 15).
    """

    n: int
    brier: BrierDecomposition
    ece: EceResult
    reliability_uniform: ReliabilityCurve
    reliability_quantile: ReliabilityCurve
    slope: MetricEstimate
    intercept: MetricEstimate
    calibration_in_the_large: float
    spiegelhalter_z: float
    spiegelhalter_p: float
    hosmer_lemeshow: float
    hosmer_lemeshow_df: int
    hosmer_lemeshow_p: float
    params: dict = field(default_factory=dict)


def calibration(
    y_true: object,
    y_score: object,
    *,
    n_bins: int = 10,
    clusters: object | None = None,
    alpha: float = 0.05,
    n_simulations: int = 1000,
    seed: int = 0,
    cohort: str | None = None,
) -> CalibrationResult:
    """All calibration statistics for one set of predictions (see the individual functions)."""
    y, s = _yz(y_true, y_score)
    slope, intercept = calibration_slope_intercept(
        y, s, clusters=clusters, alpha=alpha, cohort=cohort
    )
    z, zp = spiegelhalter_z(y, s)
    hl, df, hlp = hosmer_lemeshow(y, s)
    return CalibrationResult(
        n=int(y.size),
        brier=brier_decomposition(y, s, n_bins=n_bins),
        ece=expected_calibration_error(
            y, s, n_bins=n_bins, n_simulations=n_simulations, alpha=alpha, seed=seed
        ),
        reliability_uniform=reliability_curve(y, s, n_bins=n_bins, strategy="uniform", alpha=alpha),
        reliability_quantile=reliability_curve(
            y, s, n_bins=n_bins, strategy="quantile", alpha=alpha
        ),
        slope=slope,
        intercept=intercept,
        calibration_in_the_large=float(y.mean() - s.mean()),
        spiegelhalter_z=z,
        spiegelhalter_p=zp,
        hosmer_lemeshow=hl,
        hosmer_lemeshow_df=df,
        hosmer_lemeshow_p=hlp,
        params={
            "n_bins": n_bins,
            "alpha": alpha,
            "n_simulations": n_simulations,
            "seed": seed,
            "clustered": clusters is not None,
            "calibration_in_the_large": CITL_DEFINITION,
        },
    )


class _Recalibrator:
    name = "base"

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise InputDataError(NOT_FITTED.format(cls=type(self).__name__))

    def fit(self, y_true: object, y_score: object) -> _Recalibrator:  # pragma: no cover - abstract
        raise NotImplementedError

    def transform(self, y_score: object) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class TemperatureScaling(_Recalibrator):
    """sigmoid(logit(p) / T), T > 0 fitted by maximum likelihood (Guo et al. 2017)."""

    name = "temperature"

    def fit(self, y_true: object, y_score: object) -> TemperatureScaling:
        y, s = _yz(y_true, y_score)
        lp = _logit(s)

        def nll(log_t: float) -> float:
            eta = lp / math.exp(log_t)
            return float(np.sum(np.logaddexp(0, eta) - y * eta))

        res = optimize.minimize_scalar(
            nll, bounds=(-5, 5), method="bounded", options={"xatol": 1e-10}
        )
        self.temperature_ = float(math.exp(res.x))
        self.fitted_ = True
        return self

    def transform(self, y_score: object) -> np.ndarray:
        self._check_fitted()
        return special.expit(_logit(check_probabilities(y_score)) / self.temperature_)


class PlattScaling(_Recalibrator):
    """sigmoid(a + b logit(p)), fitted by maximum likelihood (Platt 1999, on the logit scale)."""

    name = "platt"

    def fit(self, y_true: object, y_score: object) -> PlattScaling:
        y, s = _yz(y_true, y_score)
        lp = _logit(s)
        beta, _, _ = _logistic_fit(lp, y.astype(np.float64), slope=True)
        self.intercept_, self.slope_ = float(beta[0]), float(beta[1])
        self.fitted_ = True
        return self

    def transform(self, y_score: object) -> np.ndarray:
        self._check_fitted()
        return special.expit(self.intercept_ + self.slope_ * _logit(check_probabilities(y_score)))


class IsotonicCalibration(_Recalibrator):
    """Monotone non-decreasing step map fitted by isotonic regression (Zadrozny & Elkan 2002)."""

    name = "isotonic"

    def fit(self, y_true: object, y_score: object) -> IsotonicCalibration:
        from sklearn.isotonic import IsotonicRegression

        y, s = _yz(y_true, y_score)
        self.model_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, y)
        self.fitted_ = True
        return self

    def transform(self, y_score: object) -> np.ndarray:
        self._check_fitted()
        return np.asarray(self.model_.predict(check_probabilities(y_score)), dtype=np.float64)


RECALIBRATORS = {c.name: c for c in (TemperatureScaling, PlattScaling, IsotonicCalibration)}
