"""Multi-class (one-vs-rest per class plus macro averages) and multi-label (per label)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medlens._errors import InputDataError

from ._common import check_probabilities
from ._proportions import MetricEstimate
from ._roc import RocResult, average_precision, roc_auc

__all__ = ["OneVsRestResult", "one_vs_rest"]

BAD_CLASSES = "labels must be one of the declared classes {classes}; found {bad}."


@dataclass(frozen=True)
class OneVsRestResult:
    """Per-class AUC (DeLong) and average precision, and their unweighted (macro) means.

    ``macro_auc`` / ``macro_average_precision`` are NaN when any class is undefined.
    """

    classes: tuple[str, ...]
    auc: dict[str, RocResult]
    average_precision: dict[str, MetricEstimate]
    macro_auc: float
    macro_average_precision: float
    multilabel: bool


def one_vs_rest(
    y_true: object,
    y_score: object,
    *,
    classes: Sequence[str],
    multilabel: bool = False,
    clusters: object | None = None,
    alpha: float = 0.05,
) -> OneVsRestResult:
    """One-vs-rest analysis of a multi-class or multi-label classifier.

    Parameters
    ----------
    y_true : array of shape (n,) (multi-class: class names) or (n, K) (multi-label: 0/1)
    y_score : array of shape (n, K)
        Per-class probabilities (columns in the order of ``classes``).
    classes : sequence of str
        Class names, K >= 2.
    multilabel : bool
        Treat ``y_true`` as an (n, K) indicator matrix.
    """
    s = np.asarray(y_score, dtype=np.float64)
    k = len(classes)
    if s.ndim != 2 or s.shape[1] != k:
        raise InputDataError(
            f"y_score must have shape (n, {k}) for classes {list(classes)}; got {s.shape}."
        )
    if multilabel:
        y = np.asarray(y_true)
        if y.shape != s.shape:
            raise InputDataError(f"multi-label y_true must have shape {s.shape}; got {y.shape}.")
        ind = y
    else:
        y = np.asarray(y_true).astype(str)
        bad = sorted(set(y.tolist()) - {str(c) for c in classes})
        if bad:
            raise InputDataError(BAD_CLASSES.format(classes=list(classes), bad=bad[:5]))
        ind = np.stack([(y == str(c)).astype(np.int8) for c in classes], axis=1)
    aucs, aps = {}, {}
    for j, c in enumerate(classes):
        col = check_probabilities(s[:, j], f"y_score[:, {j}]")
        aucs[str(c)] = roc_auc(ind[:, j], col, clusters=clusters, alpha=alpha, cohort=f"class {c}")
        aps[str(c)] = average_precision(ind[:, j], col, cohort=f"class {c}")
    macro_auc = float(np.mean([r.estimate for r in aucs.values()]))
    macro_ap = float(np.mean([r.estimate for r in aps.values()]))
    return OneVsRestResult(
        tuple(str(c) for c in classes),
        aucs,
        aps,
        macro_auc if not math.isnan(macro_auc) else math.nan,
        macro_ap,
        multilabel,
    )
