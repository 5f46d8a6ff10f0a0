"""Failed and indeterminate cases: counted per cohort, and the worst-case analysis of
primary endpoints in which they count as errors."""

from __future__ import annotations

import warnings
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._bootstrap import Partition, cluster_bootstrap
from ._cohorts import cohort_codes
from ._common import UndefinedMetricWarning
from ._groups import BOOTSTRAPPED, BOOTSTRAPPED_CLUSTERED, OVERALL, group_result
from ._plan import AnalysisPlan
from ._proportions import MetricEstimate
from ._roc import average_precision, roc_auc

__all__ = ["N_ERRORS", "failed_case_summary", "worst_case_metrics"]

HANDLING = "excluded from the main analysis and counted; primary endpoints are re-judged in a worst-case analysis where they count as errors (positives as false negatives, negatives as false positives)"
WORST_AP_NOTE = "interval from scores set to 1 - label for failed cases"
N_ERRORS = "_n_counted_as_errors"  # key of the count in the worst_case_metrics mapping


def failed_case_summary(
    frame: pd.DataFrame, test_idx: np.ndarray, status: np.ndarray, cohorts: Sequence[str]
) -> dict[str, Any]:
    """Counts of failed and indeterminate cases in the test population, per cohort value."""
    st = status[test_idx]
    out: dict[str, Any] = {
        "n_population": int(test_idx.size),
        "n_analysed": int(np.sum(st == "ok")),
        "n_failed": int(np.sum(st == "failed")),
        "n_indeterminate": int(np.sum(st == "indeterminate")),
        "handling": HANDLING,
        "by_cohort": {},
    }
    any_bad = bool(np.any(st != "ok"))
    for c in cohorts:
        tab: dict[str, dict[str, int]] = {}
        if any_bad:
            codes, values = cohort_codes(frame[c].iloc[test_idx])
            for v, value in enumerate(values):
                mask = codes == v
                nf = int(np.sum(mask & (st == "failed")))
                ni = int(np.sum(mask & (st == "indeterminate")))
                if nf or ni:
                    tab[value] = {"failed": nf, "indeterminate": ni}
        out["by_cohort"][c] = tab
    return out


def worst_case_metrics(
    y: np.ndarray,
    s: np.ndarray,
    bad: np.ndarray,
    clusters: np.ndarray,
    *,
    clustered: bool,
    threshold: float,
    plan: AnalysisPlan,
    metrics: Collection[str],
    pred: np.ndarray | None = None,
) -> dict[str, Any]:
    """``metrics`` of the test population with failed/indeterminate cases (``bad``)
    counted as errors: positives as false negatives, negatives as false positives, their
    scores below / above every real score for rank metrics and at 1 - label (maximal
    error) for calibration metrics.

    Parameters
    ----------
    y, s : arrays of shape (n,)
        0/1 labels and probabilities of the test population (scores of ``bad`` cases may
        be NaN).
    pred : array of shape (n,), optional
        0/1 predictions of the ok cases (default: ``s >= threshold``).

    Returns
    -------
    dict
        MetricEstimate per metric, and the number of cases counted as errors under
        :data:`N_ERRORS`.
    """
    s = s.copy()
    if pred is None:
        pred = (np.nan_to_num(s, nan=0.0) >= threshold).astype(np.int8)
    else:
        pred = pred.astype(np.int8, copy=True)
    pred[bad] = 1 - y[bad]  # positives -> FN, negatives -> FP
    s_rank = s.copy()
    s_rank[bad] = np.where(y[bad] == 1, -1.0, 2.0)  # below / above every real score
    s_prob = s.copy()
    s_prob[bad] = 1.0 - y[bad]  # maximal calibration error
    metrics = set(metrics)
    alpha = plan.analysis.alpha
    out: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        need_boot = bool(metrics & (BOOTSTRAPPED | {"average_precision"})) or (
            clustered and bool(metrics & BOOTSTRAPPED_CLUSTERED)
        )
        reps = None
        if need_boot:
            reps = cluster_bootstrap(
                y,
                s_prob,
                pred,
                [Partition("overall", np.zeros(y.size, np.int64), ("all",))],
                clusters=clusters,
                n_replicates=plan.analysis.bootstrap.replicates,
                seed=plan.analysis.bootstrap.seed,
                n_bins=plan.analysis.calibration.n_bins,
                rank_metrics="average_precision" in metrics,
            ).values[OVERALL]
        g = group_result(
            "overall (worst case)",
            np.arange(y.size),
            y,
            s_prob,
            pred,
            clusters,
            clustered,
            threshold,
            reps,
            plan,
            "average_precision" in metrics,
        )
        out.update(g.metrics)
        if "auc" in metrics:
            r = roc_auc(
                y,
                s_rank,
                clusters=clusters if clustered else None,
                alpha=alpha,
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
                WORST_AP_NOTE,
            )
    out[N_ERRORS] = int(bad.sum())
    return out
