"""Cohort tables (metrics by group with fixed columns), multiplicity adjustment and
the worst cohort per metric."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medlens._errors import param_error

__all__ = [
    "COHORT_TABLE_BASE_COLUMNS",
    "COHORT_TABLE_METRIC_FIELDS",
    "CohortTable",
    "MISSING",
    "adjust_pvalues",
    "cohort_codes",
    "cohort_table_columns",
]

MISSING = "missing"
MULTIPLICITY = ("holm", "bh", "none")
COHORT_TABLE_BASE_COLUMNS = (
    "cohort_column",
    "value",
    "n",
    "n_positive",
    "n_negative",
    "n_patients",
)
COHORT_TABLE_METRIC_FIELDS = (
    "estimate",
    "ci_low",
    "ci_high",
    "method",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "p_value",
    "p_holm",
    "p_bh",
    "flag",
)


def adjust_pvalues(p_values: Sequence[float], *, method: str = "holm") -> np.ndarray:
    """Adjust a family of p-values: Holm (1979) step-down FWER or Benjamini–Hochberg (1995) FDR.

    NaN p-values are left NaN and excluded from the family. Agrees with
    ``statsmodels.stats.multitest.multipletests(p, method="holm" | "fdr_bh")[1]``.
    """
    if method not in MULTIPLICITY:
        raise param_error("method", "adjust_pvalues", f"one of {MULTIPLICITY}", method)
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    if m == 0 or method == "none":
        out[ok] = q
        return out
    order = np.argsort(q, kind="mergesort")
    qs = q[order]
    if method == "holm":
        adj = np.maximum.accumulate((m - np.arange(m)) * qs)
    else:
        adj = np.minimum.accumulate((m / np.arange(1, m + 1) * qs)[::-1])[::-1]
    adj = np.minimum(adj, 1.0)
    res = np.empty(m)
    res[order] = adj
    out[ok] = res
    return out


def cohort_codes(values: pd.Series) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer codes and sorted value names of a cohort column; missing values form the
    cohort ``"missing"`` (never dropped)."""
    missing = values.isna().to_numpy()
    text = values.astype(str).to_numpy(dtype=object)
    text[missing] = MISSING
    codes, uniques = pd.factorize(text, sort=False)
    uniques = [str(u) for u in uniques]
    names = sorted(set(uniques) - {MISSING})
    if MISSING in uniques:
        names.append(MISSING)
    index = np.array([names.index(u) for u in uniques], dtype=np.int64)
    return index[codes], tuple(names)


def cohort_table_columns(metrics: Sequence[str]) -> list[str]:
    """The fixed column list of a cohort table for these metrics."""
    cols = list(COHORT_TABLE_BASE_COLUMNS)
    for m in metrics:
        cols.extend(f"{m}_{f}" for f in COHORT_TABLE_METRIC_FIELDS)
    return cols


@dataclass(frozen=True)
class CohortTable:
    """Metrics by cohort value for one cohort column (or an intersection of columns).

    ``frame`` always has the columns of :func:`cohort_table_columns` in that order,
    whatever the input (one row per cohort value, "missing" last). ``worst`` maps each
    metric to the value with the worst estimate among cohorts that are not flagged as
    too small (or among all when every cohort is flagged).
    """

    column: str
    frame: pd.DataFrame
    worst: Mapping[str, str | None]

    def to_csv(self, path: str) -> None:
        self.frame.to_csv(path, index=False, float_format="%.12g", lineterminator="\n")


def worst_value(
    estimates: Mapping[str, float], flags: Mapping[str, str | None], *, lower_is_better: bool
) -> str | None:
    """Value name with the worst finite estimate, preferring unflagged cohorts."""
    finite = {k: v for k, v in estimates.items() if v is not None and not math.isnan(v)}
    unflagged = {k: v for k, v in finite.items() if not flags.get(k)}
    pool = unflagged or finite
    if not pool:
        return None
    key = (lambda k: (-pool[k], k)) if lower_is_better else (lambda k: (pool[k], k))
    return min(pool, key=key)
