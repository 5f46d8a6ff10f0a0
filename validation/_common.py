"""Shared helpers of medlens.validation: the undefined-metric warning and input checks."""

from __future__ import annotations

import math
import warnings

import numpy as np

from medlens._errors import InputDataError, param_error

__all__ = [
    "UndefinedMetricWarning",
    "check_alpha",
    "check_binary",
    "check_probabilities",
    "check_same_length",
    "warn_undefined",
]

NOT_ONE_D = "{name} must be one-dimensional; got an array of shape {shape}."
EMPTY = "{name} is empty; at least one case is needed."
LENGTH_MISMATCH = "{a} and {b} must have the same length; got {na} and {nb}."
LABELS_NOT_BINARY = (
    "{name} must contain only 0 and 1 (negative, positive); found {bad}. "
    "Map the classes to 0/1 or declare them in the plan."
)
NAN_SCORES = (
    "{name} has {count} missing (NaN) values; every evaluated case needs a score. "
    "Mark cases the model could not process with status 'failed' instead."
)
OUT_OF_RANGE = (
    "{name} has values outside [0, 1] (min={lo:.6g}, max={hi:.6g}); pass probabilities, "
    "e.g. torch.sigmoid(logits), or declare the scores as logits."
)
NOT_FINITE = "{name} has {count} infinite values; scores must be finite."
UNDEFINED = "{metric} is undefined for {cohort}: {reason}."


class UndefinedMetricWarning(UserWarning):
    """A metric has no value for this data (e.g. sensitivity with no positive cases).

    The metric is returned as NaN (null in JSON, with a ``note``); the warning names the
    metric and the cohort so that the gap is never silent.
    """


def warn_undefined(metric: str, reason: str, cohort: str | None = None) -> str:
    """Emit :class:`UndefinedMetricWarning` and return the note text used in the evidence."""
    note = UNDEFINED.format(metric=metric, cohort=cohort or "all cases", reason=reason)
    warnings.warn(note, UndefinedMetricWarning, stacklevel=3)
    return note


def check_same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise InputDataError(
            LENGTH_MISMATCH.format(a=name_a, b=name_b, na=a.shape[0], nb=b.shape[0])
        )


def _as_1d(x: object, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise InputDataError(NOT_ONE_D.format(name=name, shape=arr.shape))
    return arr


def check_binary(y: object, name: str = "y_true", *, allow_empty: bool = False) -> np.ndarray:
    """Return ``y`` as an int8 array of 0/1, or raise :class:`InputDataError`."""
    arr = _as_1d(y, name)
    if arr.size == 0:
        if allow_empty:
            return arr.astype(np.int8)
        raise InputDataError(EMPTY.format(name=name))
    if arr.dtype == bool:
        return arr.astype(np.int8)
    if arr.dtype.kind not in "iuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            bad = sorted({str(v) for v in arr.tolist()} - {"0", "1"})[:5]
            raise InputDataError(LABELS_NOT_BINARY.format(name=name, bad=bad)) from None
    ok = (arr == 0) | (arr == 1)
    if not np.all(ok):
        bad = np.unique(arr[~ok])[:5].tolist()
        raise InputDataError(LABELS_NOT_BINARY.format(name=name, bad=bad))
    return arr.astype(np.int8)


def check_probabilities(
    s: object, name: str = "y_score", *, probabilities: bool = True, allow_empty: bool = False
) -> np.ndarray:
    """Return scores as float64; NaN, inf and (for probabilities) values outside [0, 1] raise."""
    arr = _as_1d(s, name)
    if arr.size == 0 and not allow_empty:
        raise InputDataError(EMPTY.format(name=name))
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise InputDataError(f"{name} must be numeric; got values of type {arr.dtype}.") from None
    nan = np.isnan(arr)
    if nan.any():
        raise InputDataError(NAN_SCORES.format(name=name, count=int(nan.sum())))
    inf = np.isinf(arr)
    if inf.any():
        raise InputDataError(NOT_FINITE.format(name=name, count=int(inf.sum())))
    if probabilities and arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise InputDataError(OUT_OF_RANGE.format(name=name, lo=arr.min(), hi=arr.max()))
    return arr


def check_alpha(alpha: float, func: str) -> float:
    if (
        not isinstance(alpha, (int, float))
        or isinstance(alpha, bool)
        or not (0.0 < alpha < 1.0)
        or math.isnan(alpha)
    ):
        raise param_error("alpha", func, "a float in (0, 1)", alpha)
    return float(alpha)
