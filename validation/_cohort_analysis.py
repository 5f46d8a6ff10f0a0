"""Binary analysis of the overall population and every cohort: one bootstrap for all
groups, differences to overall with CIs and p-values, multiplicity adjustment across
the subgroup family, cohort tables and the worst cohort per metric."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from ._bootstrap import Partition, cluster_bootstrap
from ._cohorts import CohortTable, adjust_pvalues, cohort_table_columns, worst_value
from ._groups import (
    LOWER_IS_BETTER,
    OVERALL,
    boot_method,
    bootstrap_p,
    group_result,
    percentile_ci,
)
from ._plan import EVIDENCE_METRICS, AnalysisPlan
from ._results import GroupResult

__all__ = [
    "CohortAnalysis",
    "adjust_family",
    "analyse_binary",
    "cohort_table",
    "differences_to_overall",
    "worst_cohorts",
]

# the logistic calibration parameters have an ideal value, not a direction
WORST_METRICS = tuple(
    k for k in EVIDENCE_METRICS if k not in ("calibration_slope", "calibration_intercept")
)

NOT_TESTED = "not tested (cohort flagged: {why}); no CI, p-value or adjusted p-value"

CohortAnalysis = tuple[
    GroupResult,
    dict[str, dict[str, GroupResult]],
    dict[str, CohortTable],
    dict[str, dict[str, str | None]],
]
"""(overall, cohorts[column][value], cohort tables by name, worst cohort[column][metric])"""


def worst_cohorts(groups: Mapping[str, GroupResult]) -> dict[str, str | None]:
    """The worst cohort value per metric (flagged cohorts left out)."""
    return {
        key: worst_value(
            {v: g.metrics[key].estimate for v, g in groups.items()},
            {v: g.flags.get(key) for v, g in groups.items()},
            lower_is_better=key in LOWER_IS_BETTER,
        )
        for key in WORST_METRICS
    }


def differences_to_overall(
    g: GroupResult,
    overall: GroupResult,
    reps: Mapping[str, np.ndarray],
    reps_overall: Mapping[str, np.ndarray],
    metrics: list[str],
    *,
    clustered: bool,
    alpha: float,
) -> dict[str, dict[str, Any]]:
    """Cohort minus overall per metric, with a paired bootstrap CI and p-value.

    A metric the cohort is flagged for (``g.flags``: too few cases, positives, negatives
    or patients, or an unreliable interval) gets the difference estimate only: no CI,
    no p-value (so it is left out of the multiplicity family) and a note saying why.
    """
    diffs = {}
    for key in metrics:
        est = g.metrics[key].estimate - overall.metrics[key].estimate
        if key in g.flags:
            diffs[key] = {
                "estimate": est,
                "ci_low": math.nan,
                "ci_high": math.nan,
                "p_value": math.nan,
                "method": f"paired {boot_method(clustered)} of cohort minus overall",
                "note": NOT_TESTED.format(why=g.flags[key]),
            }
            continue
        d = reps[key] - reps_overall[key]
        lo, hi, note = percentile_ci(d, alpha)
        diffs[key] = {
            "estimate": est,
            "ci_low": lo,
            "ci_high": hi,
            "p_value": bootstrap_p(d, est, lo),
            "method": f"paired {boot_method(clustered)} of cohort minus overall",
            "note": note,
        }
    return diffs


def adjust_family(
    cohorts: dict[str, dict[str, GroupResult]], metrics: list[str], multiplicity: str
) -> None:
    """Holm and Benjamini–Hochberg p-values across all cohort values of all subgroup
    columns, per metric; ``p_adjusted`` is the one the plan chose (in place)."""
    for key in metrics:
        members = [
            (c, v, g.difference[key]["p_value"])
            for c, groups in cohorts.items()
            for v, g in groups.items()
        ]
        ps = [p for _, _, p in members]
        holm, bh = adjust_pvalues(ps, method="holm"), adjust_pvalues(ps, method="bh")
        for (c, v, _), ph, pb in zip(members, holm, bh, strict=True):
            d = cohorts[c][v].difference[key]
            d["p_holm"], d["p_bh"] = float(ph), float(pb)
            chosen = {"holm": ph, "bh": pb, "none": d["p_value"]}[multiplicity]
            d["p_adjusted"] = float(chosen)


def _table_row(column: str, value: str, g: GroupResult) -> dict[str, Any]:
    row: dict[str, Any] = {
        "cohort_column": column,
        "value": value,
        "n": g.n,
        "n_positive": g.n_positive,
        "n_negative": g.n_negative,
        "n_patients": g.n_patients,
    }
    for key in EVIDENCE_METRICS:
        est = g.metrics[key]
        d = g.difference.get(key, {})
        row.update(
            {
                f"{key}_estimate": est.estimate,
                f"{key}_ci_low": est.ci_low,
                f"{key}_ci_high": est.ci_high,
                f"{key}_method": est.method,
                f"{key}_diff": d.get("estimate", math.nan),
                f"{key}_diff_ci_low": d.get("ci_low", math.nan),
                f"{key}_diff_ci_high": d.get("ci_high", math.nan),
                f"{key}_p_value": d.get("p_value", math.nan),
                f"{key}_p_holm": d.get("p_holm", math.nan),
                f"{key}_p_bh": d.get("p_bh", math.nan),
                f"{key}_flag": g.flags.get(key, ""),
            }
        )
    return row


def cohort_table(column: str, groups: Mapping[str, GroupResult]) -> CohortTable:
    """The cohort table of one cohort column (the same columns whatever the input)."""
    frame = pd.DataFrame(
        [_table_row(column, v, g) for v, g in groups.items()],
        columns=cohort_table_columns(EVIDENCE_METRICS),
    )
    return CohortTable(column, frame, worst_cohorts(groups))


def analyse_binary(
    y: np.ndarray,
    s: np.ndarray,
    pred: np.ndarray,
    partitions: list[Partition],
    cl: np.ndarray,
    clustered: bool,
    strata: np.ndarray | None,
    thr: float,
    plan: AnalysisPlan,
    *,
    keep_reps: dict | None = None,
) -> CohortAnalysis:
    """Binary analysis of the overall population and every cohort (bootstrap included);
    ``keep_reps``, when given, receives the bootstrap replicates of every group."""
    boot = plan.analysis.bootstrap
    rank_boot = boot.rank_metrics
    alpha = plan.analysis.alpha
    reps = cluster_bootstrap(
        y,
        s,
        pred,
        partitions,
        clusters=cl,
        strata=strata,
        n_replicates=boot.replicates,
        seed=boot.seed,
        n_bins=plan.analysis.calibration.n_bins,
        rank_metrics=rank_boot,
    ).values

    def group(name: str, rows: np.ndarray, key: tuple[str, str]) -> GroupResult:
        return group_result(name, rows, y, s, pred, cl, clustered, thr, reps[key], plan, rank_boot)

    overall = group("overall", np.arange(y.size), OVERALL)
    diff_metrics = [k for k in EVIDENCE_METRICS if k in reps[OVERALL]]
    cohorts: dict[str, dict[str, GroupResult]] = {}
    for part in partitions[1:]:
        cohorts[part.name] = {}
        for v, value in enumerate(part.values):
            g = group(f"{part.name}={value}", np.flatnonzero(part.codes == v), (part.name, value))
            diffs = differences_to_overall(
                g,
                overall,
                reps[(part.name, value)],
                reps[OVERALL],
                diff_metrics,
                clustered=clustered,
                alpha=alpha,
            )
            cohorts[part.name][value] = replace(g, difference=diffs)
    adjust_family(cohorts, diff_metrics, plan.subgroups.multiplicity)
    tables = {name: cohort_table(name, groups) for name, groups in cohorts.items()}
    worst_all = {name: t.worst for name, t in tables.items()}
    if keep_reps is not None:
        keep_reps.update(reps)
    return overall, cohorts, tables, worst_all
