"""Secondary analyses (binary task): paired AUC comparisons of two score columns and
sensitivity / specificity at fixed operating points, with (patient-cluster) bootstrap
intervals computed from weighted ROC curves of every replicate."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._bootstrap import replicate_weights
from ._common import warn_undefined
from ._data import require_columns
from ._groups import boot_method, bootstrap_p, percentile_ci
from ._inputs import CaseInputs, score_column
from ._plan import AnalysisPlan
from ._population import Population
from ._proportions import MetricEstimate
from ._roc import delong_test, roc_auc, sensitivity_at_specificity, specificity_at_sensitivity

__all__ = ["secondary_analyses"]

SECONDARY_CLUSTER_NOTE = (
    "the paired DeLong test assumes independent cases, but {k} patients contribute more "
    "than one case; the reported difference uses the patient-cluster bootstrap instead"
)


class _SortedScores:
    """Rows sorted once by descending score, for weighted ROC curves of many replicates."""

    def __init__(self, y: np.ndarray, s: np.ndarray) -> None:
        self.order = np.argsort(-s, kind="mergesort")
        ss = s[self.order]
        self.y = y[self.order].astype(np.float64)
        self.last = np.r_[ss[1:] != ss[:-1], True]
        self.thresholds = ss[self.last]

    def curve(self, wrows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted sensitivity and specificity, arrays of shape (b, T), at each distinct
        threshold (positive when score >= threshold), thresholds descending."""
        w = wrows[:, self.order]
        tp = np.cumsum(w * self.y, axis=1)[:, self.last]
        fp = np.cumsum(w * (1.0 - self.y), axis=1)[:, self.last]
        with np.errstate(divide="ignore", invalid="ignore"):
            sens = tp / tp[:, -1:]
            spec = 1.0 - fp / fp[:, -1:]
        return sens, spec


def _auc_from_curve(sens: np.ndarray, spec: np.ndarray) -> np.ndarray:
    fpr = np.concatenate([np.zeros((sens.shape[0], 1)), 1.0 - spec], axis=1)
    tpr = np.concatenate([np.zeros((sens.shape[0], 1)), sens], axis=1)
    return np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2.0, axis=1)


def _best_at(value: np.ndarray, constraint: np.ndarray, target: float) -> np.ndarray:
    ok = constraint >= target
    out = np.where(ok, value, -np.inf).max(axis=1)
    out[~np.isfinite(out)] = np.nan
    return out


StatKey = tuple[str, str, float]  # (score column, "auc" or operating-point metric, target)


def _replicates(
    y: np.ndarray,
    columns: Mapping[str, np.ndarray],
    wanted: list[StatKey],
    cl: np.ndarray,
    strata: np.ndarray | None,
    plan: AnalysisPlan,
) -> dict[StatKey, np.ndarray]:
    """Bootstrap replicates of every wanted statistic, all from the same patient weights."""
    boot = plan.analysis.bootstrap
    sorted_scores = {c: _SortedScores(y, v) for c, v in columns.items()}
    cstrata = np.zeros(int(cl.max()) + 1, dtype=np.int64)
    if strata is not None:
        cstrata[cl] = strata
    reps: dict[StatKey, list[np.ndarray]] = {k: [] for k in wanted}
    rows_per_block = max(1, (1 << 22) // max(y.size, 1))
    for wblock in replicate_weights(cstrata, boot.replicates, boot.seed):
        for start in range(0, wblock.shape[0], rows_per_block):
            wrows = wblock[start : start + rows_per_block][:, cl]
            curves = {c: sorted_scores[c].curve(wrows) for c in {k[0] for k in wanted}}
            for key in wanted:
                sens, spec = curves[key[0]]
                if key[1] == "auc":
                    reps[key].append(_auc_from_curve(sens, spec))
                elif key[1] == "sensitivity_at_specificity":
                    reps[key].append(_best_at(sens, spec, key[2]))
                else:
                    reps[key].append(_best_at(spec, sens, key[2]))
    return {k: np.concatenate(v) for k, v in reps.items()}


def _comparison(
    y: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    d: np.ndarray,
    cl: np.ndarray,
    *,
    clustered: bool,
    n_multi: int,
    alpha: float,
) -> dict[str, Any]:
    """AUC of two scores on the same cases and their paired difference (DeLong and the
    bootstrap replicates ``d`` of AUC_a - AUC_b)."""
    dl = delong_test(y, a, b, alpha=alpha)
    aucs = {}
    for tag, v in (("auc_a", a), ("auc_b", b)):
        ra = roc_auc(y, v, clusters=cl if clustered else None, alpha=alpha, curve=False)
        aucs[tag] = MetricEstimate(ra.estimate, ra.ci_low, ra.ci_high, ra.method, ra.note)
    lo, hi, bnote = percentile_ci(d, alpha)
    boot_diff = {
        "estimate": dl.difference,
        "ci_low": lo,
        "ci_high": hi,
        "p_value": bootstrap_p(d, dl.difference, lo),
        "method": f"paired {boot_method(clustered)} of AUC_a - AUC_b",
        "note": bnote,
    }
    delong = {
        "estimate": dl.difference,
        "ci_low": dl.ci_low,
        "ci_high": dl.ci_high,
        "z": dl.z,
        "p_value": dl.p_value,
        "covariance": dl.covariance,
        "method": "paired-delong",
        "note": dl.note,
    }
    limitations = []
    if clustered:
        limitations.append(SECONDARY_CLUSTER_NOTE.format(k=n_multi))
        delong["note"] = (dl.note + "; " if dl.note else "") + (
            "assumes independent cases (not valid with several cases per patient)"
        )
    return {
        "n": int(y.size),
        "n_positive": int(y.sum()),
        "auc_a": aucs["auc_a"],
        "auc_b": aucs["auc_b"],
        "difference": boot_diff if clustered else delong,
        "delong": delong,
        "bootstrap": boot_diff,
        "limitations": limitations,
    }


def _operating_point(
    y: np.ndarray,
    s: np.ndarray,
    metric: str,
    target: float,
    reps: np.ndarray,
    *,
    clustered: bool,
    alpha: float,
) -> dict[str, Any]:
    """Empirical sensitivity at a fixed specificity (or the reverse) with its threshold."""
    fn = (
        sensitivity_at_specificity
        if metric == "sensitivity_at_specificity"
        else specificity_at_sensitivity
    )
    est, at = fn(y, s, target=target)
    if math.isnan(est):
        note = warn_undefined(metric, f"no threshold reaches the target {target:g}")
        lo = hi = math.nan
    else:
        lo, hi, note = percentile_ci(reps, alpha)
    return {"threshold": at, "value": MetricEstimate(est, lo, hi, boot_method(clustered), note)}


def secondary_analyses(
    inputs: CaseInputs, pop: Population, plan: AnalysisPlan
) -> dict[str, Any] | None:
    """Paired AUC comparisons and sensitivity/specificity at fixed operating points of a
    binary task (None when the plan asks for neither)."""
    if plan.task != "binary" or not (plan.secondary.comparisons or plan.secondary.operating_points):
        return None
    frame, src, cols = inputs.frame, inputs.source, inputs.cols
    idx_all, y, s = pop.idx, pop.y, pop.s
    cl, clustered, strata = pop.clusters, pop.clustered, pop.strata
    sec = plan.secondary
    alpha = plan.analysis.alpha
    boot = plan.analysis.bootstrap
    status_ok = np.zeros(len(frame), dtype=bool)
    status_ok[idx_all] = True
    wanted = [c for cmp in sec.comparisons for c in (cmp.score_a, cmp.score_b)]
    wanted += [op.score for op in sec.operating_points if op.score]
    require_columns(
        frame,
        [(c, "secondary score", "Fix secondary.comparisons / operating_points.") for c in wanted],
        src,
    )
    columns: dict[str, np.ndarray] = {cols["score"]: s}
    for c in dict.fromkeys(wanted):
        if c not in columns:
            columns[c] = score_column(frame[c], plan, status_ok, src)[idx_all]
    stats: list[StatKey] = []
    for cmp in sec.comparisons:
        stats += [(cmp.score_a, "auc", 0.0), (cmp.score_b, "auc", 0.0)]
    for op in sec.operating_points:
        stats.append((op.score or cols["score"], op.metric, float(op.target)))
    r = _replicates(y, columns, list(dict.fromkeys(stats)), cl, strata, plan)
    n_multi = int(np.sum(np.bincount(cl) > 1)) if clustered else 0
    comparisons: dict[str, Any] = {}
    for cmp in sec.comparisons:
        d = r[(cmp.score_a, "auc", 0.0)] - r[(cmp.score_b, "auc", 0.0)]
        comparisons[cmp.name or f"{cmp.score_a} vs {cmp.score_b}"] = {
            "score_a": cmp.score_a,
            "score_b": cmp.score_b,
            **_comparison(
                y,
                columns[cmp.score_a],
                columns[cmp.score_b],
                d,
                cl,
                clustered=clustered,
                n_multi=n_multi,
                alpha=alpha,
            ),
        }
    points: dict[str, Any] = {}
    for op in sec.operating_points:
        col = op.score or cols["score"]
        target = float(op.target)
        name = op.name or f"{op.metric}_{op.target:g}" + ("" if op.score is None else f"_{col}")
        points[name] = {
            "metric": op.metric,
            "target": target,
            "score": col,
            **_operating_point(
                y,
                columns[col],
                op.metric,
                target,
                r[(col, op.metric, target)],
                clustered=clustered,
                alpha=alpha,
            ),
        }
    notes = [SECONDARY_CLUSTER_NOTE.format(k=n_multi)] if clustered and sec.comparisons else []
    return {
        "comparisons": comparisons,
        "operating_points": points,
        "unit": "patient" if clustered else "case",
        "replicates": boot.replicates,
        "seed": boot.seed,
        "notes": notes,
    }
