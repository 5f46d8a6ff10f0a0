"""Multi-class (one-vs-rest per class plus macro averages) and multi-label (per label)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from medlens._errors import InputDataError

from ._common import check_binary, check_probabilities
from ._proportions import MetricEstimate
from ._roc import RocResult, average_precision, roc_auc

__all__ = [
    "OneVsRestResult",
    "class_columns",
    "class_inputs",
    "one_vs_rest",
    "predict_classes",
]

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


# --- predictions tables of multi-class / multi-label heads (used by evaluate) ---------

MISSING_SCORE_COLUMN = (
    "no score column {col!r} for class {cls!r}; per-class score columns present: {have}. "
    "Set columns.score_pattern or classes in the plan."
)
NO_SCORE_COLUMNS = (
    "no per-class score columns matching {pattern!r}; the table has columns: {have}. "
    "Set columns.score_pattern (e.g. 'prob_{{class}}') or classes in the plan."
)
MISSING_LABEL_COLUMN = (
    "no label column {col!r} for label {cls!r}; the table has columns: {have}. "
    "Set columns.label_pattern in the plan."
)
UNKNOWN_CLASS = (
    "labels must be one of the declared classes {classes}; found {bad}. Fix the labels or "
    "list every class in the plan's classes."
)
BAD_ROW_SUMS = (
    "multi-class probabilities must sum to 1 per case (tolerance {tol:g}); {count} cases do "
    "not (sums from {lo:.6g} to {hi:.6g}), e.g. case {example!r}. Pass softmax outputs, or "
    "declare score_type: logit, or use task: multilabel for independent sigmoids."
)
TOO_FEW_CLASSES = "a {task} task needs at least 2 classes; found {classes}."
ROW_SUM_TOLERANCE = 1e-3


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    head, tail = pattern.split("{class}")
    return re.compile(re.escape(head) + "(.+)" + re.escape(tail) + r"\Z")


def class_columns(
    columns: Sequence[str], pattern: str, classes: Sequence[object] | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Class names and their score columns (``pattern`` with ``{class}`` replaced)."""
    rx = _pattern_regex(pattern)
    present = [c for c in columns if rx.match(c)]
    if classes is None:
        names = tuple(rx.match(c).group(1) for c in present)  # type: ignore[union-attr]
    else:
        names = tuple(str(c) for c in classes)
    have = ", ".join(repr(c) for c in present) or "none"
    if not names:
        raise InputDataError(
            NO_SCORE_COLUMNS.format(pattern=pattern, have=", ".join(repr(c) for c in columns))
        )
    cols = tuple(pattern.replace("{class}", n) for n in names)
    for n, c in zip(names, cols, strict=True):
        if c not in columns:
            raise InputDataError(MISSING_SCORE_COLUMN.format(col=c, cls=n, have=have))
    return names, cols


def class_inputs(
    frame: pd.DataFrame,
    *,
    task: str,
    label: str,
    score_pattern: str,
    label_pattern: str,
    classes: Sequence[object] | None,
    score_type: str,
    ok: np.ndarray,
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Check a multi-class / multi-label predictions table.

    Returns
    -------
    classes : tuple of str
    y : ndarray of int8, shape (n, K)
        One-vs-rest indicator of each class (multi-class) or the 0/1 labels (multi-label).
    s : ndarray of float64, shape (n, K)
        Probabilities (NaN in rows that are not ``ok``).

    Raises
    ------
    InputDataError
        Missing score or label columns (naming those present), unknown or missing labels,
        non-numeric, NaN or out-of-range probabilities, multi-class rows not summing to 1.
    """
    names, score_cols = class_columns(list(frame.columns), score_pattern, classes)
    if len(names) < 2:
        raise InputDataError(TOO_FEW_CLASSES.format(task=task, classes=list(names)))
    n = len(frame)
    raw = np.empty((n, len(names)))
    for j, c in enumerate(score_cols):
        col = pd.to_numeric(frame[c], errors="coerce")
        bad = col.isna() & frame[c].notna()
        if bad.any():
            ex = frame[c][bad].astype(str).unique()[:3].tolist()
            raise InputDataError(f"score column {c!r} has non-numeric values, e.g. {ex}.")
        raw[:, j] = col.to_numpy(dtype=np.float64)
    s = np.full_like(raw, np.nan)
    sub = raw[ok]
    if score_type == "logit":
        finite = np.isfinite(sub).all(axis=1)
        if task == "multiclass" and finite.all():
            sub = special.softmax(sub, axis=1)
        else:
            sub = special.expit(sub)
    for j, c in enumerate(score_cols):
        sub[:, j] = check_probabilities(sub[:, j], f"score column {c!r}", allow_empty=True)
    if task == "multiclass" and sub.size:
        sums = sub.sum(axis=1)
        off = np.abs(sums - 1.0) > ROW_SUM_TOLERANCE
        if off.any():
            example = frame.index[np.flatnonzero(ok)[np.flatnonzero(off)[0]]]
            raise InputDataError(
                BAD_ROW_SUMS.format(
                    tol=ROW_SUM_TOLERANCE,
                    count=int(off.sum()),
                    lo=float(sums[off].min()),
                    hi=float(sums[off].max()),
                    example=f"row {example}",
                )
            )
    s[ok] = sub
    if task == "multiclass":
        lab = frame[label]
        if lab.isna().any():
            raise InputDataError(
                f"{int(lab.isna().sum())} cases have no label in column {label!r}; every case "
                "needs a reference label."
            )
        text = lab.astype(str).to_numpy()
        unknown = sorted(set(text.tolist()) - set(names))
        if unknown:
            raise InputDataError(UNKNOWN_CLASS.format(classes=list(names), bad=unknown[:5]))
        y = np.stack([(text == c) for c in names], axis=1).astype(np.int8)
    else:
        label_cols = [label_pattern.replace("{class}", c) for c in names]
        have = ", ".join(repr(c) for c in frame.columns)
        y = np.empty((n, len(names)), dtype=np.int8)
        for j, (c, col) in enumerate(zip(names, label_cols, strict=True)):
            if col not in frame.columns:
                raise InputDataError(MISSING_LABEL_COLUMN.format(col=col, cls=c, have=have))
            if frame[col].isna().any():
                raise InputDataError(
                    f"{int(frame[col].isna().sum())} cases have no label in column {col!r}; "
                    "every case needs a reference label."
                )
            y[:, j] = check_binary(frame[col].to_numpy(), f"label column {col!r}")
    return names, y, s


def predict_classes(s: np.ndarray, *, task: str, threshold: float) -> np.ndarray:
    """0/1 predictions of shape (n, K): argmax (ties: first class) or ``s >= threshold``."""
    if task == "multiclass":
        out = np.zeros(s.shape, dtype=np.int8)
        if s.shape[0]:
            out[np.arange(s.shape[0]), np.argmax(s, axis=1)] = 1
        return out
    return (s >= threshold).astype(np.int8)
