"""Binomial proportions with confidence intervals (Wilson, Clopper–Pearson, Jeffreys)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from medlens._errors import InputDataError, param_error

from ._common import check_alpha

__all__ = ["CI_METHODS", "MetricEstimate", "ProportionEstimate", "proportion_ci"]

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
    k, n = int(k), int(n)
    if n == 0:
        return math.nan, math.nan
    if method == "wilson":
        z = stats.norm.isf(alpha / 2.0)
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2.0 * n)) / denom
        half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
        # at k = 0 (k = n) the bound is exactly 0 (1); avoid rounding residue
        low = 0.0 if k == 0 else max(0.0, centre - half)
        high = 1.0 if k == n else min(1.0, centre + half)
        return low, high
    if method == "clopper-pearson":
        low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2.0, k, n - k + 1))
        high = 1.0 if k == n else float(stats.beta.isf(alpha / 2.0, k + 1, n - k))
        return low, high
    low, high = stats.beta.interval(1.0 - alpha, k + 0.5, n - k + 0.5)
    return float(low), float(high)
