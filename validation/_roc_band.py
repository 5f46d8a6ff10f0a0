"""Pointwise confidence band of the ROC curve: sensitivity at a fixed false-positive-rate grid.

At each false-positive rate ``f`` of a grid, the empirical sensitivity is the highest
true-positive rate among the thresholds whose false-positive rate is at most ``f``
(vertical averaging, Fawcett 2006, section 8.1; Macskassy & Provost 2004). Its 95 %
interval is the percentile interval of the same quantity over patient-cluster bootstrap
replicates: patients (all their images together) are resampled with replacement, within
strata (sites) when given, with the replicate weights of
:func:`medlens.validation.replicate_weights`, so the band uses the same resampling
scheme as every other interval of the evidence. Replicates that lose all positives or
all negatives define no ROC curve and are dropped (their number is reported).

The band is pointwise: each vertical interval covers the true sensitivity at that
false-positive rate with about 95 % probability; the band as a whole is not a
simultaneous confidence region for the curve.

References
----------
T. Fawcett, "An introduction to ROC analysis", Pattern Recognition Letters 27 (2006)
861-874. S. A. Macskassy, F. Provost, "Confidence bands for ROC curves: methods and an
empirical study", ROCAI 2004.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medlens._errors import InputDataError, param_error

from ._bootstrap import replicate_weights

__all__ = ["DEFAULT_FPR_GRID", "RocBand", "roc_band"]

#: false-positive rates at which the band is evaluated (steps of 0.02)
DEFAULT_FPR_GRID = tuple(round(k / 50, 2) for k in range(51))
BAND_METHOD = "patient-cluster bootstrap, percentile, pointwise sensitivity at fixed FPR"
ONE_CLASS = "the ROC band needs both classes; got {n_pos} positive(s) and {n_neg} negative(s)"
LENGTHS = "y_true ({n}), y_score ({m}){extra} differ in length"
NONFINITE = "y_score holds {n} non-finite value(s); drop failed cases first"
NOT_BINARY = "y_true must hold only 0 and 1; got {values}"


@dataclass(frozen=True)
class RocBand:
    """Pointwise confidence band of an ROC curve at a fixed grid of false-positive rates.

    Attributes
    ----------
    fpr : tuple of float
        The grid of false-positive rates (increasing).
    tpr : tuple of float
        Empirical sensitivity at each grid rate (the step curve's value).
    tpr_low, tpr_high : tuple of float
        Percentile bootstrap interval at each grid rate.
    level : float
        Confidence level (0.95).
    method : str
    n_replicates : int
        Replicates drawn.
    n_valid : int
        Replicates with both classes (those the percentiles come from).
    n_clusters : int
        Patients resampled.
    seed : int
    stratified : bool
        Whether patients were resampled within strata.
    """

    fpr: tuple[float, ...]
    tpr: tuple[float, ...]
    tpr_low: tuple[float, ...]
    tpr_high: tuple[float, ...]
    level: float
    method: str
    n_replicates: int
    n_valid: int
    n_clusters: int
    seed: int
    stratified: bool

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON form, the ``roc_band`` record of the evidence."""
        return {
            "fpr": list(self.fpr),
            "tpr": list(self.tpr),
            "tpr_low": list(self.tpr_low),
            "tpr_high": list(self.tpr_high),
            "level": self.level,
            "method": self.method,
            "n_replicates": self.n_replicates,
            "n_valid": self.n_valid,
            "n_clusters": self.n_clusters,
            "seed": self.seed,
            "stratified": self.stratified,
        }


def _tpr_at_grid(
    y_sorted: np.ndarray,
    last: np.ndarray,
    weights: np.ndarray,
    grid: np.ndarray,
) -> np.ndarray:
    """Sensitivity at each grid FPR for each row of case weights (rows x grid).

    ``y_sorted`` is ordered by decreasing score and ``last`` marks the last case of each
    group of tied scores (the thresholds). NaN where a row has no positive or negative.
    """
    w = np.atleast_2d(weights)
    tp = np.cumsum(w * y_sorted, axis=1)[:, last]
    fp = np.cumsum(w * (1 - y_sorted), axis=1)[:, last]
    n_pos, n_neg = tp[:, -1:], fp[:, -1:]
    out = np.full((w.shape[0], grid.size), np.nan)
    ok = (n_pos[:, 0] > 0) & (n_neg[:, 0] > 0)
    if not ok.any():
        return out
    tpr = np.concatenate([np.zeros((w.shape[0], 1)), tp], axis=1)[ok] / n_pos[ok]
    fpr = np.concatenate([np.zeros((w.shape[0], 1)), fp], axis=1)[ok] / n_neg[ok]
    rows = np.empty((tpr.shape[0], grid.size))
    for r in range(tpr.shape[0]):
        # fpr and tpr are non-decreasing along the thresholds: the best sensitivity with
        # fpr <= f is the one at the last threshold whose fpr is <= f (a 1e-12 slack
        # keeps exact ratios such as 3/10 vs 0.3 on the same side)
        idx = np.searchsorted(fpr[r], grid + 1e-12, side="right") - 1
        rows[r] = tpr[r, idx]
    out[ok] = rows
    return out


def roc_band(
    y_true: object,
    y_score: object,
    *,
    clusters: object = None,
    strata: object = None,
    fpr_grid: object = DEFAULT_FPR_GRID,
    n_replicates: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> RocBand:
    """Pointwise patient-cluster bootstrap band of sensitivity at fixed false-positive rates.

    Parameters
    ----------
    y_true : array of shape (n,), 0/1
    y_score : array of shape (n,), finite
        A case is positive when ``score >= threshold``.
    clusters : array of shape (n,), optional
        Patient of each case (images of one patient are resampled together); default:
        every case is its own patient.
    strata : array of shape (n,), optional
        Stratum (e.g. site) of each case; patients are resampled within their stratum
        (a patient's stratum is that of its first case).
    fpr_grid : sequence of float in [0, 1]
        False-positive rates at which the band is evaluated (sorted and deduplicated).
    n_replicates : int
        Bootstrap replicates (>= 1).
    seed : int
        Seed of the replicate weights (same generator as the evidence's bootstrap).
    level : float
        Confidence level in (0, 1).

    Returns
    -------
    RocBand

    Raises
    ------
    InputDataError
        If lengths differ, a score is not finite, labels are not 0/1 or one class is
        missing.
    MedlensError
        For bad parameters.

    References
    ----------
    T. Fawcett, "An introduction to ROC analysis", Pattern Recognition Letters 27 (2006).
    """
    if isinstance(n_replicates, bool) or not isinstance(n_replicates, int) or n_replicates < 1:
        raise param_error("n_replicates", "roc_band", "an int >= 1", n_replicates)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise param_error("seed", "roc_band", "an int >= 0", seed)
    if (
        isinstance(level, bool)
        or not isinstance(level, (int, float))
        or not 0.0 < float(level) < 1.0
    ):
        raise param_error("level", "roc_band", "a float in (0, 1)", level)
    try:
        grid = np.unique(np.asarray(fpr_grid, dtype=float).ravel())
    except (TypeError, ValueError):
        raise param_error(
            "fpr_grid", "roc_band", "a sequence of floats in [0, 1]", fpr_grid
        ) from None
    if grid.size == 0 or not np.all(np.isfinite(grid)) or grid[0] < 0 or grid[-1] > 1:
        raise param_error(
            "fpr_grid", "roc_band", "a non-empty sequence of floats in [0, 1]", fpr_grid
        )
    y = np.asarray(y_true).ravel()
    s = np.asarray(y_score, dtype=float).ravel()
    n = y.size
    extra = ""
    cl = np.arange(n) if clusters is None else np.asarray(clusters).ravel()
    st = np.zeros(n, dtype=int) if strata is None else np.asarray(strata).ravel()
    if clusters is not None and cl.size != n:
        extra += f", clusters ({cl.size})"
    if strata is not None and st.size != n:
        extra += f", strata ({st.size})"
    if s.size != n or extra:
        raise InputDataError(LENGTHS.format(n=n, m=s.size, extra=extra))
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise InputDataError(NOT_BINARY.format(values=sorted(values, key=str)[:5]))
    y = y.astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise InputDataError(NONFINITE.format(n=int((~np.isfinite(s)).sum())))
    n_pos, n_neg = int(y.sum()), int(n - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise InputDataError(ONE_CLASS.format(n_pos=n_pos, n_neg=n_neg))

    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    last = np.r_[ss[1:] != ss[:-1], True]
    point = _tpr_at_grid(ys, last, np.ones(n), grid)[0]

    _, cluster_of_case = np.unique(cl, return_inverse=True)
    n_clusters = int(cluster_of_case.max()) + 1
    first = np.zeros(n_clusters, dtype=np.int64)
    first[cluster_of_case[::-1]] = np.arange(n)[::-1]  # first case of each cluster
    _, strata_codes = np.unique(st, return_inverse=True)
    cluster_strata = strata_codes[first]
    case_cluster_sorted = cluster_of_case[order]
    reps = []
    for block in replicate_weights(cluster_strata, n_replicates, seed):
        reps.append(_tpr_at_grid(ys, last, block[:, case_cluster_sorted], grid))
    values_b = np.concatenate(reps, axis=0)
    valid = ~np.isnan(values_b[:, 0])
    alpha = 1.0 - float(level)
    if valid.any():
        low = np.quantile(values_b[valid], alpha / 2, axis=0)
        high = np.quantile(values_b[valid], 1 - alpha / 2, axis=0)
    else:
        low = high = np.full(grid.size, math.nan)
    return RocBand(
        fpr=tuple(float(v) for v in grid),
        tpr=tuple(float(v) for v in point),
        tpr_low=tuple(float(v) for v in low),
        tpr_high=tuple(float(v) for v in high),
        level=float(level),
        method=BAND_METHOD,
        n_replicates=int(n_replicates),
        n_valid=int(valid.sum()),
        n_clusters=n_clusters,
        seed=int(seed),
        stratified=bool(np.unique(strata_codes).size > 1),
    )
