"""Similarity between attribution maps: rank correlation, SSIM, top-k overlap, method agreement.

Every function takes two batches of maps of the same shape ``(N, *spatial)`` and returns one
value per case, shape ``(N,)``. Undefined values (a constant map, an all-zero map) are NaN plus a
``RuntimeWarning`` that names the metric and the cases; never 0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from medlens._errors import InputDataError, param_error

__all__ = [
    "MethodAgreement",
    "method_agreement",
    "rank_correlation",
    "ssim",
    "top_k_overlap",
]

MAPS_NOT_ARRAY = (
    "{name} of {func} must be a numeric array of shape {expected}; got {got}. "
    "Pass a NumPy array or a CPU tensor (call .detach().cpu())."
)
MAPS_SHAPE_MISMATCH = (
    "{name_a} and {name_b} of {func} must have the same shape; got {shape_a} and {shape_b}. "
    "Explain the same cases on the same pixel grid."
)
MAPS_NOT_FINITE = (
    "{name} of {func} contains NaN or infinite values in {n} case(s) (first: case {first}); "
    "recompute the maps or drop those cases."
)
UNDEFINED_METRIC = "{metric} is undefined for case(s) {cases} ({reason}); returning NaN."
SSIM_TOO_SMALL = (
    "ssim needs spatial sides of at least 3 pixels and 2 or 3 spatial dimensions; got spatial "
    "shape {shape}."
)
AGREEMENT_TOO_FEW = (
    "method_agreement needs maps of at least 2 methods; got {n}. Pass a mapping "
    "{{method name: maps}}."
)


# --------------------------------------------------------------------------- validation helpers


def _as_array(x: Any, *, name: str, func: str, expected: str, min_ndim: int = 2) -> np.ndarray:
    """Convert maps/masks (NumPy or torch) to a float64 array with at least ``min_ndim`` dims."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise InputDataError(
            MAPS_NOT_ARRAY.format(name=name, func=func, expected=expected, got=type(x).__name__)
        ) from exc
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise InputDataError(
            MAPS_NOT_ARRAY.format(name=name, func=func, expected=expected, got=f"dtype {arr.dtype}")
        )
    if arr.ndim < min_ndim or arr.shape[0] == 0 or arr.size == 0:
        raise InputDataError(
            MAPS_NOT_ARRAY.format(name=name, func=func, expected=expected, got=f"shape {arr.shape}")
        )
    return arr


def _as_maps(x: Any, *, name: str, func: str) -> np.ndarray:
    """Validate a batch of maps ``(N, *spatial)``: numeric, finite, at least one spatial axis."""
    arr = _as_array(x, name=name, func=func, expected="(N, *spatial)").astype(np.float64)
    bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
    if bad.any():
        raise InputDataError(
            MAPS_NOT_FINITE.format(
                name=name, func=func, n=int(bad.sum()), first=int(np.argmax(bad))
            )
        )
    return arr


def _check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str, func: str) -> None:
    if a.shape != b.shape:
        raise InputDataError(
            MAPS_SHAPE_MISMATCH.format(
                name_a=name_a, name_b=name_b, func=func, shape_a=a.shape, shape_b=b.shape
            )
        )


def _check_fraction(k: float, name: str, func: str) -> float:
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not (0.0 < float(k) <= 1.0):
        raise param_error(name, func, "a float in (0, 1]", k)
    return float(k)


def _warn_undefined(metric: str, cases: np.ndarray, reason: str) -> None:
    """Emit the standard NaN warning for the cases flagged in the boolean array ``cases``."""
    idx = np.flatnonzero(cases)
    if idx.size:
        shown = ", ".join(str(i) for i in idx[:10]) + (" ..." if idx.size > 10 else "")
        warnings.warn(
            UNDEFINED_METRIC.format(metric=metric, cases=shown, reason=reason),
            RuntimeWarning,
            stacklevel=3,
        )


def _transform(maps: np.ndarray, attribution: str, func: str) -> np.ndarray:
    """Apply the attribution convention: 'absolute' |m|, 'positive' max(m, 0), 'signed' m."""
    if attribution == "absolute":
        return np.abs(maps)
    if attribution == "positive":
        return np.clip(maps, 0.0, None)
    if attribution == "signed":
        return maps
    raise param_error("attribution", func, "one of 'positive', 'absolute', 'signed'", attribution)


def _n_top(k: float, n: int) -> int:
    """Number of pixels in the top-k fraction: ceil(k * n), at least 1 (documented rule)."""
    return max(1, min(n, math.ceil(k * n - 1e-9)))


def _top_k_masks(values: np.ndarray, k: float) -> np.ndarray:
    """Boolean masks of the ``ceil(k * n)`` highest values per case (``values`` is (N, n)).

    Ties are broken deterministically: among equal values the pixel with the lower flat
    (C-order) index ranks higher (stable sort of the negated values).
    """
    n_cases, n = values.shape
    m = _n_top(k, n)
    order = np.argsort(-values, axis=1, kind="stable")[:, :m]
    masks = np.zeros((n_cases, n), dtype=bool)
    np.put_along_axis(masks, order, True, axis=1)
    return masks


def _rankdata_rows(x: np.ndarray) -> np.ndarray:
    """Average ranks per row (the ranks scipy.stats.spearmanr uses)."""
    return stats.rankdata(x, axis=1, method="average")


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise Pearson correlation; second output marks rows where it is undefined."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    undefined = den == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / den
    r = np.where(undefined, np.nan, np.clip(r, -1.0, 1.0))
    return r, undefined


# --------------------------------------------------------------------------- metrics


def rank_correlation(maps_a: Any, maps_b: Any, *, absolute: bool = True) -> np.ndarray:
    """Spearman rank correlation between two maps of each case.

    Parameters
    ----------
    maps_a, maps_b : array of shape (N, *spatial)
        Attribution maps of the same N cases on the same grid (NumPy or CPU tensor).
    absolute : bool, default True
        Correlate ``|map|`` (the sanity-check convention of Adebayo et al., which ignores the
        sign flips that randomised layers cause). ``False`` correlates the signed maps.

    Returns
    -------
    ndarray of shape (N,)
        Spearman's rho per case (average ranks for ties, as ``scipy.stats.spearmanr``); NaN
        with a ``RuntimeWarning`` where a map is constant.

    Raises
    ------
    InputDataError
        Non-numeric, non-finite or mismatched maps.

    References
    ----------
    Adebayo J. et al. (2018). Sanity Checks for Saliency Maps. NeurIPS.
    """
    func = "rank_correlation"
    a = _as_maps(maps_a, name="maps_a", func=func)
    b = _as_maps(maps_b, name="maps_b", func=func)
    _check_same_shape(a, b, "maps_a", "maps_b", func)
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    if absolute:
        a, b = np.abs(a), np.abs(b)
    r, undefined = _pearson_rows(_rankdata_rows(a), _rankdata_rows(b))
    _warn_undefined("Spearman rank correlation", undefined, "a map is constant")
    return r


def ssim(
    maps_a: Any, maps_b: Any, *, absolute: bool = True, win_size: int | None = None
) -> np.ndarray:
    """Structural similarity (SSIM) between two maps of each case.

    Each map is divided by its own maximum ``|value|`` first (scale-free, no shift), so
    absolute maps lie in [0, 1] and are compared with ``data_range=1``; signed maps lie in
    [-1, 1] and use ``data_range=2``. The computation is ``skimage.metrics.structural_similarity``
    (Gaussian-free 7-pixel uniform window, or the largest odd window that fits a smaller map).

    Parameters
    ----------
    maps_a, maps_b : array of shape (N, H, W) or (N, D, H, W)
        Attribution maps of the same cases.
    absolute : bool, default True
        Compare ``|map|`` (Adebayo et al.); ``False`` compares signed maps.
    win_size : int, optional
        Odd window side; default ``min(7, smallest odd side)``.

    Returns
    -------
    ndarray of shape (N,)
        Mean SSIM per case; NaN with a ``RuntimeWarning`` where a map is all zero.

    Raises
    ------
    InputDataError
        Mismatched or non-finite maps, or a spatial side shorter than 3 pixels.

    References
    ----------
    Wang Z. et al. (2004). Image quality assessment: from error visibility to structural
    similarity. IEEE TIP 13(4).
    Adebayo J. et al. (2018). Sanity Checks for Saliency Maps. NeurIPS.
    """
    from skimage.metrics import structural_similarity

    func = "ssim"
    a = _as_maps(maps_a, name="maps_a", func=func)
    b = _as_maps(maps_b, name="maps_b", func=func)
    _check_same_shape(a, b, "maps_a", "maps_b", func)
    spatial = a.shape[1:]
    if len(spatial) not in (2, 3) or min(spatial) < 3:
        raise InputDataError(SSIM_TOO_SMALL.format(shape=spatial))
    if win_size is None:
        smallest = min(spatial)
        win_size = min(7, smallest if smallest % 2 == 1 else smallest - 1)
    elif (
        isinstance(win_size, bool)
        or not isinstance(win_size, int)
        or win_size < 3
        or win_size % 2 == 0
        or win_size > min(spatial)
    ):
        raise param_error("win_size", func, f"an odd int in [3, {min(spatial)}]", win_size)
    if absolute:
        a, b = np.abs(a), np.abs(b)
    data_range = 1.0 if absolute else 2.0
    out = np.full(a.shape[0], np.nan)
    undefined = np.zeros(a.shape[0], dtype=bool)
    for i in range(a.shape[0]):
        sa, sb = np.abs(a[i]).max(), np.abs(b[i]).max()
        if sa == 0 or sb == 0:
            undefined[i] = True
            continue
        out[i] = structural_similarity(
            a[i] / sa, b[i] / sb, data_range=data_range, win_size=win_size
        )
    _warn_undefined("SSIM", undefined, "a map is all zero")
    return out


def top_k_overlap(maps_a: Any, maps_b: Any, *, k: float = 0.1, absolute: bool = True) -> np.ndarray:
    """Intersection over union of the top-k fraction of pixels of two maps of each case.

    Parameters
    ----------
    maps_a, maps_b : array of shape (N, *spatial)
        Attribution maps of the same cases.
    k : float in (0, 1], default 0.1
        Fraction of pixels in each top region: ``ceil(k * n_pixels)`` pixels (at least 1).
    absolute : bool, default True
        Rank ``|map|``; ``False`` ranks signed values (most positive first).

    Returns
    -------
    ndarray of shape (N,)
        IoU in [0, 1]. Ties are broken deterministically: among equal values the pixel with the
        lower flat (C-order) index is taken first, so the result never depends on sort internals.

    Raises
    ------
    InputDataError
        Mismatched or non-finite maps.
    MedlensError
        ``k`` outside (0, 1].

    References
    ----------
    Adebayo J. et al. (2018). Sanity Checks for Saliency Maps. NeurIPS (rank/overlap metrics).
    """
    func = "top_k_overlap"
    k = _check_fraction(k, "k", func)
    a = _as_maps(maps_a, name="maps_a", func=func)
    b = _as_maps(maps_b, name="maps_b", func=func)
    _check_same_shape(a, b, "maps_a", "maps_b", func)
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    if absolute:
        a, b = np.abs(a), np.abs(b)
    ma, mb = _top_k_masks(a, k), _top_k_masks(b, k)
    inter = (ma & mb).sum(axis=1)
    union = (ma | mb).sum(axis=1)
    return inter / union


# --------------------------------------------------------------------------- agreement


@dataclass(frozen=True)
class MethodAgreement:
    """Pairwise agreement between explanation methods on the same cases.

    Attributes
    ----------
    methods : tuple of str
        Method names, in the order of the matrix rows/columns.
    rank_correlation : ndarray of shape (M, M)
        Mean over cases of Spearman's rho of ``|map|`` (NaN cases ignored; NaN if all are).
    top_k_overlap : ndarray of shape (M, M)
        Mean over cases of the top-k IoU.
    per_case_rank_correlation, per_case_top_k_overlap : ndarray of shape (M, M, N)
        The per-case values behind the means.
    k : float
        Top-k fraction used.
    n_cases : int
        Number of cases N.
    """

    methods: tuple[str, ...]
    rank_correlation: np.ndarray
    top_k_overlap: np.ndarray
    per_case_rank_correlation: np.ndarray = field(repr=False)
    per_case_top_k_overlap: np.ndarray = field(repr=False)
    k: float
    n_cases: int

    def to_frame(self):
        """Tidy table: one row per unordered method pair (method_a, method_b, n, metrics)."""
        import pandas as pd

        rows = []
        m = len(self.methods)
        for i in range(m):
            for j in range(i + 1, m):
                rows.append(
                    {
                        "method_a": self.methods[i],
                        "method_b": self.methods[j],
                        "n": self.n_cases,
                        "rank_correlation": float(self.rank_correlation[i, j]),
                        "top_k_overlap": float(self.top_k_overlap[i, j]),
                        "k": self.k,
                    }
                )
        return pd.DataFrame(rows)


def method_agreement(
    maps: Mapping[str, Any], *, k: float = 0.1, absolute: bool = True
) -> MethodAgreement:
    """Rank correlation and top-k overlap between every pair of methods on the same cases.

    Parameters
    ----------
    maps : mapping of str to array of shape (N, *spatial)
        Maps of each method for the same N cases (same grid). At least 2 methods.
    k : float in (0, 1], default 0.1
        Top-k fraction for :func:`top_k_overlap`.
    absolute : bool, default True
        Compare ``|map|`` (methods disagree on sign conventions).

    Returns
    -------
    MethodAgreement

    Raises
    ------
    InputDataError
        Fewer than 2 methods, or maps of different shapes.

    References
    ----------
    Krishna S. et al. (2022). The Disagreement Problem in Explainable Machine Learning.
    arXiv:2202.01602.
    """
    func = "method_agreement"
    if not isinstance(maps, Mapping) or len(maps) < 2:
        raise InputDataError(
            AGREEMENT_TOO_FEW.format(n=len(maps) if isinstance(maps, Mapping) else type(maps))
        )
    k = _check_fraction(k, "k", func)
    names = tuple(str(n) for n in maps)
    arrays = [_as_maps(v, name=f"maps[{n!r}]", func=func) for n, v in maps.items()]
    for n, arr in zip(names[1:], arrays[1:], strict=True):
        _check_same_shape(arrays[0], arr, f"maps[{names[0]!r}]", f"maps[{n!r}]", func)
    m, n_cases = len(names), arrays[0].shape[0]
    rho = np.full((m, m, n_cases), np.nan)
    iou = np.full((m, m, n_cases), np.nan)
    for i in range(m):
        rho[i, i] = 1.0
        iou[i, i] = 1.0
        for j in range(i + 1, m):
            rho[i, j] = rho[j, i] = rank_correlation(arrays[i], arrays[j], absolute=absolute)
            iou[i, j] = iou[j, i] = top_k_overlap(arrays[i], arrays[j], k=k, absolute=absolute)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pairs: already warned above
        rho_mean = np.nanmean(rho, axis=2)
        iou_mean = np.nanmean(iou, axis=2)
    return MethodAgreement(
        methods=names,
        rank_correlation=rho_mean,
        top_k_overlap=iou_mean,
        per_case_rank_correlation=rho,
        per_case_top_k_overlap=iou,
        k=k,
        n_cases=n_cases,
    )
