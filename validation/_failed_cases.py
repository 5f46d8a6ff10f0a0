"""Failed and indeterminate cases: counted per cohort, and the worst-case analysis of
primary endpoints in which they count as errors."""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping, Sequence
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

HANDLING = "excluded from the main analysis and counted; primary endpoints are re-judged in a worst-case analysis where they count as errors (positives as false negatives, negatives as false positives; only the cases that can be errors of the endpoint's metric: failed positives for sensitivity and NPV, failed negatives for specificity and PPV, all for other metrics)"
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


# which failed/indeterminate cases can count as errors in each metric: a failed positive
# imputed as a false negative changes sensitivity and NPV (TN / (TN + FN)) but not
# specificity or PPV (TP / (TP + FP)); a failed negative imputed as a false positive
# changes specificity and PPV but not sensitivity or NPV. Every other metric (accuracy,
# balanced accuracy, F1, likelihood ratios, AUC, AP, Brier, ECE, calibration) involves
# both classes, so every failed case counts.
RELEVANT_CLASS = {"sensitivity": 1, "npv": 1, "specificity": 0, "ppv": 0}


def _recode(codes: np.ndarray) -> np.ndarray:
    """Codes 0..k-1 in the order of the given codes (so a subset of sorted patient or site
    codes keeps their order, as the main analysis codes them)."""
    return np.unique(codes, return_inverse=True)[1].reshape(-1).astype(np.int64)


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
    strata: np.ndarray | None = None,
    main: Mapping[str, MetricEstimate] | None = None,
) -> dict[str, Any]:
    """``metrics`` of the test population with failed/indeterminate cases (``bad``)
    counted as errors: positives as false negatives, negatives as false positives, their
    scores below / above every real score for rank metrics and at 1 - label (maximal
    error) for calibration metrics.

    Only the failed cases that can be errors of a metric count (:data:`RELEVANT_CLASS`):
    failed positives for sensitivity and NPV, failed negatives for specificity and PPV,
    all failed cases for the other metrics; the others are left out of that metric's
    worst case. The intervals are those of the main analysis (:func:`group_result`: same
    bootstrap, patient clusters, site strata and seed), so a metric with no failed case
    counted equals the main result; with ``main`` (the main analysis' estimates) it is
    that result itself.

    Parameters
    ----------
    y, s : arrays of shape (n,)
        0/1 labels and probabilities of the test population (scores of ``bad`` cases may
        be NaN).
    bad : array of shape (n,) of bool
        Failed or indeterminate cases.
    clusters : array of shape (n,)
        Patient codes in sorted order of the patient ids (as the main analysis codes
        them); one per case without a patient column.
    pred : array of shape (n,), optional
        0/1 predictions of the ok cases (default: ``s >= threshold``).
    strata : array of shape (n,), optional
        Site codes (sorted order of the site names) when the main bootstrap is
        stratified by site.
    main : mapping, optional
        The main analysis' MetricEstimate per metric, returned for metrics with no
        failed case counted.

    Returns
    -------
    dict
        MetricEstimate per metric, and under :data:`N_ERRORS` a dict: the number of cases
        counted as errors per metric.
    """
    y = np.asarray(y)
    bad = np.asarray(bad, dtype=bool)
    if pred is None:
        pred = (np.nan_to_num(s, nan=0.0) >= threshold).astype(np.int8)
    metrics = set(metrics)
    out: dict[str, Any] = {}
    counts: dict[str, int] = {}
    by_class: dict[int | None, set[str]] = {}
    for key in metrics:
        by_class.setdefault(RELEVANT_CLASS.get(key), set()).add(key)
    for cls, keys in by_class.items():
        rel = bad if cls is None else bad & (y == cls)
        n_err = int(rel.sum())
        for key in keys:
            counts[key] = n_err
        if n_err == 0 and main is not None:
            out.update({key: main[key] for key in keys})
            continue
        keep = ~bad | rel
        out.update(
            _worst_case_group(
                y[keep],
                s[keep],
                pred[keep],
                rel[keep],
                _recode(np.asarray(clusters)[keep]),
                None if strata is None else _recode(np.asarray(strata)[keep]),
                clustered=clustered,
                threshold=threshold,
                plan=plan,
                metrics=keys,
            )
        )
    out[N_ERRORS] = counts
    return out


def _worst_case_group(
    y: np.ndarray,
    s: np.ndarray,
    pred: np.ndarray,
    bad: np.ndarray,
    clusters: np.ndarray,
    strata: np.ndarray | None,
    *,
    clustered: bool,
    threshold: float,
    plan: AnalysisPlan,
    metrics: set[str],
) -> dict[str, MetricEstimate]:
    """The worst case of ``metrics`` with every ``bad`` case counted as an error."""
    s = s.copy()
    pred = pred.astype(np.int8, copy=True)
    pred[bad] = 1 - y[bad]  # positives -> FN, negatives -> FP
    s_rank = s.copy()
    s_rank[bad] = np.where(y[bad] == 1, -1.0, 2.0)  # below / above every real score
    s_prob = s.copy()
    s_prob[bad] = 1.0 - y[bad]  # maximal calibration error
    alpha = plan.analysis.alpha
    out: dict[str, MetricEstimate] = {}
    rank_boot = "average_precision" in metrics and plan.analysis.bootstrap.rank_metrics
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
                strata=strata,
                n_replicates=plan.analysis.bootstrap.replicates,
                seed=plan.analysis.bootstrap.seed,
                n_bins=plan.analysis.calibration.n_bins,
                rank_metrics=rank_boot,
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
            rank_boot,
        )
        out.update({key: g.metrics[key] for key in metrics})
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
    return out
