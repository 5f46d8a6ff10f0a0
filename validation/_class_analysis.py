"""Multi-class / multi-label analysis: the binary analysis one-vs-rest per class, plus
unweighted (macro) averages over classes for every group, and the differences of the
cohorts' macro averages to the overall one."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from medlens._errors import InputDataError, param_error

from ._bootstrap import Partition
from ._cohort_analysis import (
    CohortAnalysis,
    adjust_family,
    analyse_binary,
    cohort_table,
    differences_to_overall,
)
from ._cohorts import CohortTable
from ._counts import ConfusionCounts
from ._groups import OVERALL, boot_method, percentile_ci, widen_interval
from ._plan import EVIDENCE_METRICS, AnalysisPlan
from ._proportions import MetricEstimate
from ._results import GroupResult

__all__ = ["ClassGroupResult", "analyse_classes", "class_confusion_matrix", "macro_group"]

NO_MACRO_INTERVAL = "no interval for the macro average: this metric has no bootstrap replicates"
MACRO_MOVER = "{method}, widened to MOVER over the classes"
MACRO_MOVER_NOTE = (
    "interval widened to the MOVER interval of the mean (Zou & Donner 2008) combining the "
    "{k} classes' own intervals as if independent; the bootstrap interval ({lo}, {hi}) was "
    "narrower"
)
NOT_ONE_HOT = (
    "class_confusion_matrix needs one reference class and one predicted class per case "
    "(one-hot rows); got {bad} case(s) with another number of classes"
)


@dataclass(frozen=True)
class ClassGroupResult(GroupResult):
    """A multi-class group: :class:`GroupResult` plus its K x K confusion matrix.

    ``confusion_matrix[i][j]`` counts the cases of reference class ``i`` predicted as
    class ``j`` (rows: reference, columns: predicted, in the order of the classes), as
    :func:`sklearn.metrics.confusion_matrix` with ``labels=classes``.
    """

    confusion_matrix: tuple[tuple[int, ...], ...] = ()


def class_confusion_matrix(y_mat: np.ndarray, pred_mat: np.ndarray) -> tuple[tuple[int, ...], ...]:
    """K x K counts of a multi-class task: rows reference class, columns predicted class.

    Parameters
    ----------
    y_mat, pred_mat : array of shape (N, K)
        One-hot reference and predicted classes (one 1 per row).

    Returns
    -------
    tuple of K tuples of K ints

    Raises
    ------
    InputDataError
        If a row of either matrix is not one-hot.
    """
    y = np.asarray(y_mat).astype(bool)
    p = np.asarray(pred_mat).astype(bool)
    if y.ndim != 2 or y.shape != p.shape:
        raise param_error(
            "pred_mat", "class_confusion_matrix", f"an array of shape {y.shape}", p.shape
        )
    bad = int(np.sum(y.sum(axis=1) != 1) + np.sum(p.sum(axis=1) != 1))
    if bad:
        raise InputDataError(NOT_ONE_HOT.format(bad=bad))
    counts = y.T.astype(np.int64) @ p.astype(np.int64)
    return tuple(tuple(int(v) for v in row) for row in counts)


def macro_group(
    name: str,
    per_class: dict[str, GroupResult],
    reps: dict[str, dict[str, np.ndarray]] | None,
    *,
    threshold: float,
    decision_rule: str,
    alpha: float,
    boot_method: str,
) -> GroupResult:
    """Unweighted mean over classes of every metric; CI from the mean of the per-class
    bootstrap replicates (all classes are resampled with the same patient weights),
    widened where narrower to the MOVER interval of the classes' own intervals."""
    groups = list(per_class.values())
    k = len(groups)
    metrics: dict[str, MetricEstimate] = {}
    for key in EVIDENCE_METRICS:
        ests = [g.metrics[key].estimate for g in groups]
        undefined = [c for c, e in zip(per_class, ests, strict=True) if math.isnan(e)]
        method = f"macro average over {k} classes (one-vs-rest)"
        if undefined:
            metrics[key] = MetricEstimate(
                math.nan,
                math.nan,
                math.nan,
                method,
                f"undefined: {key} is undefined for class(es) {undefined}",
            )
            continue
        est = float(np.mean(ests))
        if reps is not None and all(key in reps[c] for c in per_class):
            stacked = np.mean([reps[c][key] for c in per_class], axis=0)
            lo, hi, note = percentile_ci(stacked, alpha)
            metrics[key] = _mover_floor(
                MetricEstimate(est, lo, hi, f"{method}; {boot_method}", note),
                [g.metrics[key] for g in groups],
            )
        else:
            metrics[key] = MetricEstimate(est, math.nan, math.nan, method, NO_MACRO_INTERVAL)
    counts = ConfusionCounts(
        *(int(sum(getattr(g.confusion, f) for g in groups)) for f in ("tp", "fp", "tn", "fn"))
    )
    flags: dict[str, str] = {}
    for c, g in per_class.items():
        for key, why in g.flags.items():
            flags[key] = (flags[key] + "; " if key in flags else "") + f"class {c}: {why}"
    return GroupResult(
        name,
        groups[0].n,
        counts.n_positive,
        counts.n_negative,
        groups[0].n_patients,
        counts,
        threshold,
        metrics,
        {},
        flags,
        {},
        None,
        per_class,
        decision_rule,
    )


def _mover_floor(est: MetricEstimate, parts: list[MetricEstimate]) -> MetricEstimate:
    """The macro interval, at least as wide as the MOVER interval of the mean of the
    classes' estimates from their own (already widened) intervals:
    ``mean -/+ sqrt(sum((p_k - l_k)^2)) / K`` and ``sqrt(sum((u_k - p_k)^2)) / K``.

    The bootstrap interval of the mean collapses where every class is at a bound (e.g.
    macro sensitivity 1.0 gives [1, 1]); the classes' own intervals keep a width there.
    """
    bounds = [(m.estimate, m.ci_low, m.ci_high) for m in parts]
    if not all(math.isfinite(v) for b in bounds for v in b):
        return est
    k = len(bounds)
    lo = est.estimate - math.sqrt(sum((p - low) ** 2 for p, low, _ in bounds)) / k
    hi = est.estimate + math.sqrt(sum((high - p) ** 2 for p, _, high in bounds)) / k
    note = MACRO_MOVER_NOTE.format(k=k, lo="{lo}", hi="{hi}")
    return widen_interval(est, lo, hi, MACRO_MOVER.format(method=est.method), note)


def _with_matrix(g: GroupResult, matrix: tuple[tuple[int, ...], ...]) -> ClassGroupResult:
    fields = {f: getattr(g, f) for f in GroupResult.__dataclass_fields__}
    return ClassGroupResult(**fields, confusion_matrix=matrix)


def _macro_replicates(
    reps: dict[str, dict], key: tuple[str, str], metrics: list[str]
) -> dict[str, np.ndarray]:
    """Replicates of the macro average: the mean over classes of each replicate."""
    return {m: np.mean([r[key][m] for r in reps.values()], axis=0) for m in metrics}


def analyse_classes(
    y_mat: np.ndarray,
    s_mat: np.ndarray,
    pred_mat: np.ndarray,
    classes: tuple[str, ...],
    partitions: list[Partition],
    cl: np.ndarray,
    clustered: bool,
    strata: np.ndarray | None,
    thr: float,
    plan: AnalysisPlan,
) -> CohortAnalysis:
    """Binary analysis per class (one-vs-rest) plus macro averages for every group.

    Cohort tables: ``<column>`` for the macro averages and ``<column>.<class>`` per class.
    Differences of a cohort's macro average to the overall one get the paired bootstrap
    CI and p-value of the binary analysis (replicates: the mean over classes of each
    class's replicate, all from the same patient weights) and the same multiplicity
    adjustment.
    """
    per: dict[str, CohortAnalysis] = {}
    reps: dict[str, dict] = {}
    for j, c in enumerate(classes):
        keep: dict = {}
        per[c] = analyse_binary(
            y_mat[:, j],
            s_mat[:, j],
            pred_mat[:, j],
            partitions,
            cl,
            clustered,
            strata,
            thr,
            plan,
            keep_reps=keep,
        )
        reps[c] = keep
    rule = "argmax" if plan.task == "multiclass" else f"score >= {thr:g} per label"
    kw = {
        "threshold": thr,
        "decision_rule": rule,
        "alpha": plan.analysis.alpha,
        "boot_method": boot_method(clustered),
    }
    overall = macro_group(
        "overall",
        {c: per[c][0] for c in classes},
        {c: reps[c][OVERALL] for c in classes},
        **kw,
    )
    multiclass = plan.task == "multiclass"
    if multiclass:
        overall = _with_matrix(overall, class_confusion_matrix(y_mat, pred_mat))
    diff_metrics = [k for k in EVIDENCE_METRICS if all(k in reps[c][OVERALL] for c in classes)]
    reps_overall = _macro_replicates(reps, OVERALL, diff_metrics)
    cohorts: dict[str, dict[str, GroupResult]] = {}
    for part in partitions[1:]:
        cohorts[part.name] = {}
        for code, v in enumerate(part.values):
            g = macro_group(
                f"{part.name}={v}",
                {c: per[c][1][part.name][v] for c in classes},
                {c: reps[c][(part.name, v)] for c in classes},
                **kw,
            )
            diffs = differences_to_overall(
                g,
                overall,
                _macro_replicates(reps, (part.name, v), diff_metrics),
                reps_overall,
                diff_metrics,
                clustered=clustered,
                alpha=plan.analysis.alpha,
            )
            g = replace(g, difference=diffs)
            if multiclass:
                rows = part.codes == code
                g = _with_matrix(g, class_confusion_matrix(y_mat[rows], pred_mat[rows]))
            cohorts[part.name][v] = g
    adjust_family(cohorts, diff_metrics, plan.subgroups.multiplicity)
    tables: dict[str, CohortTable] = {}
    for name, groups in cohorts.items():
        tables[name] = cohort_table(name, groups)
        for c in classes:
            tables[f"{name}.{c}"] = per[c][2][name]
    worst_all = {name: tables[name].worst for name in cohorts}
    return overall, cohorts, tables, worst_all
