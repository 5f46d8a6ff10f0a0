"""Binomial proportions with confidence intervals (Wilson, Clopper–Pearson, Jeffreys)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from medlens._errors import InputDataError, param_error

from ._common import check_alpha

__all__ = [
    "CI_METHODS",
    "MetricEstimate",
    "ProportionEstimate",
    "effective_proportion_ci",
    "proportion_ci",
]

CI_METHODS = ("wilson", "clopper-pearson", "jeffreys")
BAD_COUNTS = "numerator and denominator must be integers with 0 <= numerator <= denominator; got {k} and {n}."


@dataclass(frozen=True)
class ProportionEstimate:
    """A proportion k/n with a two-sided confidence interval.

    ``estimate``, ``ci_low`` and ``ci_high`` are NaN when ``denominator`` is 0; ``note``
    then says why.
    """

    estimate: float
    ci_low: float
    ci_high: float
    method: str
    numerator: int
    denominator: int
    note: str | None = None


@dataclass(frozen=True)
class MetricEstimate:
    """Any metric with a two-sided confidence interval and how it was obtained."""

    estimate: float
    ci_low: float
    ci_high: float
    method: str
    note: str | None = None


def proportion_ci(
    numerator: int, denominator: int, *, method: str = "wilson", alpha: float = 0.05
) -> tuple[float, float]:
    """Two-sided ``1 - alpha`` confidence interval of a binomial proportion.

    Parameters
    ----------
    numerator, denominator : int
        Successes and trials, ``0 <= numerator <= denominator``.
    method : {"wilson", "clopper-pearson", "jeffreys"}
        Wilson score interval (default; Wilson 1927), exact Clopper–Pearson interval, or
        equal-tailed Jeffreys interval (Beta(k + 1/2, n - k + 1/2) quantiles, as
        ``statsmodels.stats.proportion.proportion_confint(method="jeffreys")``).
    alpha : float
        1 - confidence level.

    Returns
    -------
    (low, high) : tuple of float
        NaN, NaN when ``denominator`` is 0.

    References
    ----------
    Brown, Cai & DasGupta (2001). Interval estimation for a binomial proportion.
    Statistical Science 16(2):101–133.
    """
    if method not in CI_METHODS:
        raise param_error("method", "proportion_ci", f"one of {CI_METHODS}", method)
    alpha = check_alpha(alpha, "proportion_ci")
    k, n = numerator, denominator
    if (
        not isinstance(k, (int, np.integer))
        or not isinstance(n, (int, np.integer))
        or k < 0
        or n < 0
        or k > n
    ):
        raise InputDataError(BAD_COUNTS.format(k=k, n=n))
    return _interval(int(k), int(n), method, alpha)


def effective_proportion_ci(
    estimate: float, n_effective: float, *, method: str = "wilson", alpha: float = 0.05
) -> tuple[float, float]:
    """Proportion interval on an effective (non-integer) sample size.

    The interval of :func:`proportion_ci` evaluated at ``numerator = estimate *
    n_effective`` successes out of ``n_effective`` trials, e.g. ``n_effective = n / DEFF``
    for clustered data (Kish 1965): the binomial interval of the independent sample that
    carries as much information as the clustered one. At integer counts it equals
    :func:`proportion_ci` (and statsmodels' ``proportion_confint``).

    Parameters
    ----------
    estimate : float
        The proportion, in [0, 1].
    n_effective : float
        Effective number of trials, > 0.
    method, alpha
        As in :func:`proportion_ci`.

    Returns
    -------
    (low, high) : tuple of float

    References
    ----------
    Kish, L. (1965). Survey Sampling. Wiley (design effect, effective sample size).
    Korn, E. L. & Graubard, B. I. (1998). Confidence intervals for proportions with small
    expected number of positive counts estimated from survey data. Survey Methodology
    24(2):193–201.
    """
    if method not in CI_METHODS:
        raise param_error("method", "effective_proportion_ci", f"one of {CI_METHODS}", method)
    alpha = check_alpha(alpha, "effective_proportion_ci")
    if not (isinstance(estimate, (int, float, np.floating)) and 0.0 <= estimate <= 1.0):
        raise param_error("estimate", "effective_proportion_ci", "a float in [0, 1]", estimate)
    if not (isinstance(n_effective, (int, float, np.floating)) and n_effective > 0):
        raise param_error("n_effective", "effective_proportion_ci", "a float > 0", n_effective)
    n = float(n_effective)
    return _interval(float(estimate) * n, n, method, alpha)


def _interval(k: float, n: float, method: str, alpha: float) -> tuple[float, float]:
    """The interval of ``k`` successes in ``n`` trials (both may be non-integer)."""
    if n == 0:
        return math.nan, math.nan
    if method == "wilson":
        z = stats.norm.isf(alpha / 2.0)
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2.0 * n)) / denom
        half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
        # at k = 0 (k = n) the bound is exactly 0 (1); avoid rounding residue
        low = 0.0 if k <= 0 else max(0.0, centre - half)
        high = 1.0 if k >= n else min(1.0, centre + half)
        return float(low), float(high)
    if method == "clopper-pearson":
        low = 0.0 if k <= 0 else float(stats.beta.ppf(alpha / 2.0, k, n - k + 1))
        high = 1.0 if k >= n else float(stats.beta.isf(alpha / 2.0, k + 1, n - k))
        return low, high
    low, high = stats.beta.interval(1.0 - alpha, k + 0.5, n - k + 0.5)
    return float(low), float(high)
