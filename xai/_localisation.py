"""Localisation of attribution maps against lesion masks (when masks exist).

All functions take maps ``(N, *spatial)`` and boolean masks of the same shape and return one
value per case, shape ``(N,)``. A case with an empty mask (no lesion annotated) gets NaN and a
``RuntimeWarning``: a localisation score is undefined there, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage, stats

from medlens._errors import InputDataError, param_error

from ._similarity import (
    _as_array,
    _as_maps,
    _check_fraction,
    _check_same_shape,
    _n_top,
    _top_k_masks,
    _transform,
    _warn_undefined,
)

__all__ = [
    "LocalisationResult",
    "energy_pointing_game",
    "localisation_scores",
    "map_mask_auc",
    "pointing_game",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "top_k_iou",
]

MASK_NOT_BINARY = (
    "masks of {func} must be boolean or 0/1 arrays of shape (N, *spatial); got values other "
    "than 0 and 1 (e.g. {value!r}). Threshold probabilistic masks first."
)
EMPTY_MASK = "the mask is empty"
FULL_MASK = "the mask covers the whole image"
NO_POSITIVE = "the map has no positive attribution"


def _inputs(maps: Any, masks: Any, func: str) -> tuple[np.ndarray, np.ndarray]:
    m = _as_maps(maps, name="maps", func=func)
    raw = _as_array(masks, name="masks", func=func, expected="(N, *spatial)")
    if raw.dtype != bool:
        bad = (raw != 0) & (raw != 1)
        if bad.any():
            raise InputDataError(MASK_NOT_BINARY.format(func=func, value=raw[bad].flat[0]))
    k = raw.astype(bool)
    _check_same_shape(m, k, "maps", "masks", func)
    return m.reshape(m.shape[0], -1), k


def pointing_game(maps: Any, masks: Any, *, tolerance: float = 0.0) -> np.ndarray:
    """Pointing game: is the map's maximum inside the (tolerance-dilated) mask?

    Parameters
    ----------
    maps : array of shape (N, *spatial)
        Attribution maps (signed values; the maximum is the most positive pixel).
    masks : bool array of shape (N, *spatial)
        Lesion masks or boxes.
    tolerance : float, default 0
        A hit also counts when the maximum lies within this Euclidean distance in pixels of
        the mask (Zhang et al. used 15 px at 224 px).

    Returns
    -------
    ndarray of shape (N,)
        1.0 for a hit, 0.0 for a miss, NaN (+ warning) for an empty mask. When several pixels
        share the maximum, it is a hit if any of them is in the region (as Quantus).

    References
    ----------
    Zhang J. et al. (2018). Top-down Neural Attention by Excitation Backprop. IJCV 126.
    """
    func = "pointing_game"
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise param_error("tolerance", func, "a float >= 0 (pixels)", tolerance)
    flat, masks_b = _inputs(maps, masks, func)
    n = flat.shape[0]
    empty = ~masks_b.reshape(n, -1).any(axis=1)
    out = np.full(n, np.nan)
    for i in range(n):
        if empty[i]:
            continue
        region = masks_b[i]
        if tolerance > 0:
            region = ndimage.distance_transform_edt(~region) <= tolerance
        at_max = flat[i] == flat[i].max()
        out[i] = float(np.any(region.ravel() & at_max))
    _warn_undefined("pointing game", empty, EMPTY_MASK)
    return out


def relevance_mass_accuracy(maps: Any, masks: Any, *, attribution: str = "positive") -> np.ndarray:
    """Share of the attribution mass that lies inside the mask.

    Parameters
    ----------
    maps : array of shape (N, *spatial)
    masks : bool array of shape (N, *spatial)
    attribution : {"positive", "absolute", "signed"}, default "positive"
        Mass counted: positive part (Arras et al. use positive relevance only, evidence *for*
        the class), ``|map|``, or the signed map (as Quantus with ``abs=False``).

    Returns
    -------
    ndarray of shape (N,)
        ``R_within / R_total``; NaN (+ warning) for an empty mask or zero total mass.

    References
    ----------
    Arras L., Osman A., Samek W. (2022). CLEVR-XAI: A benchmark dataset for the ground truth
    evaluation of neural network explanations. Information Fusion 81.
    """
    func = "relevance_mass_accuracy"
    flat, masks_b = _inputs(maps, masks, func)
    flat = _transform(flat, attribution, func)
    n = flat.shape[0]
    mflat = masks_b.reshape(n, -1)
    total = flat.sum(axis=1)
    inside = (flat * mflat).sum(axis=1)
    empty = ~mflat.any(axis=1)
    zero = (total == 0) & ~empty
    with np.errstate(invalid="ignore", divide="ignore"):
        out = inside / total
    out[empty | zero] = np.nan
    _warn_undefined("relevance mass accuracy", empty, EMPTY_MASK)
    _warn_undefined("relevance mass accuracy", zero, "the total attribution mass is zero")
    return out


def energy_pointing_game(maps: Any, masks: Any) -> np.ndarray:
    """Energy-based pointing game: share of positive attribution energy inside the mask/box.

    Identical to :func:`relevance_mass_accuracy` with ``attribution="positive"``; kept under
    the name used by the CAM literature.

    References
    ----------
    Wang H. et al. (2020). Score-CAM: Score-Weighted Visual Explanations for Convolutional
    Neural Networks. CVPR Workshops.
    """
    return relevance_mass_accuracy(maps, masks, attribution="positive")


def relevance_rank_accuracy(maps: Any, masks: Any, *, attribution: str = "positive") -> np.ndarray:
    """Share of the K highest-ranked pixels that lie inside the mask, K = mask size.

    Parameters
    ----------
    maps : array of shape (N, *spatial)
    masks : bool array of shape (N, *spatial)
    attribution : {"positive", "absolute", "signed"}, default "positive"
        Values ranked (positive part, ``|map|`` or signed). Ties go to the lower flat index.

    Returns
    -------
    ndarray of shape (N,)
        NaN (+ warning) for an empty mask.

    References
    ----------
    Arras L., Osman A., Samek W. (2022). CLEVR-XAI. Information Fusion 81.
    """
    func = "relevance_rank_accuracy"
    flat, masks_b = _inputs(maps, masks, func)
    flat = _transform(flat, attribution, func)
    n = flat.shape[0]
    mflat = masks_b.reshape(n, -1)
    sizes = mflat.sum(axis=1)
    out = np.full(n, np.nan)
    order = np.argsort(-flat, axis=1, kind="stable")
    for i in range(n):
        if sizes[i]:
            out[i] = mflat[i, order[i, : sizes[i]]].sum() / sizes[i]
    _warn_undefined("relevance rank accuracy", sizes == 0, EMPTY_MASK)
    return out


def top_k_iou(
    maps: Any, masks: Any, *, k: float = 0.05, attribution: str = "positive"
) -> np.ndarray:
    """Intersection over union of the top-k fraction of the map with the mask.

    Parameters
    ----------
    maps, masks : arrays of shape (N, *spatial)
    k : float in (0, 1], default 0.05
        Top region = the ``ceil(k * n_pixels)`` highest pixels (ties to the lower flat index).
    attribution : {"positive", "absolute", "signed"}, default "positive"

    Returns
    -------
    ndarray of shape (N,)
        NaN (+ warning) for an empty mask.
    """
    func = "top_k_iou"
    k = _check_fraction(k, "k", func)
    flat, masks_b = _inputs(maps, masks, func)
    flat = _transform(flat, attribution, func)
    n = flat.shape[0]
    mflat = masks_b.reshape(n, -1)
    top = _top_k_masks(flat, k)
    out = (top & mflat).sum(axis=1) / (top | mflat).sum(axis=1)
    empty = ~mflat.any(axis=1)
    out[empty] = np.nan
    _warn_undefined("top-k IoU", empty, EMPTY_MASK)
    return out


def map_mask_auc(maps: Any, masks: Any, *, attribution: str = "signed") -> np.ndarray:
    """ROC AUC of the map as a pixel-wise score for the mask.

    Computed as the Mann-Whitney statistic with average ranks for ties, which equals
    ``sklearn.metrics.roc_auc_score(mask.ravel(), map.ravel())``.

    Parameters
    ----------
    maps, masks : arrays of shape (N, *spatial)
    attribution : {"signed", "absolute", "positive"}, default "signed"

    Returns
    -------
    ndarray of shape (N,)
        NaN (+ warning) for an empty mask or a mask covering the whole image.

    References
    ----------
    Hanley J.A., McNeil B.J. (1982). The meaning and use of the area under a ROC curve.
    Radiology 143(1).
    """
    func = "map_mask_auc"
    flat, masks_b = _inputs(maps, masks, func)
    flat = _transform(flat, attribution, func)
    n = flat.shape[0]
    mflat = masks_b.reshape(n, -1)
    n_pos = mflat.sum(axis=1)
    n_neg = mflat.shape[1] - n_pos
    ranks = stats.rankdata(flat, axis=1, method="average")
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * mflat).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc[n_pos == 0] = np.nan
    auc[n_neg == 0] = np.nan
    _warn_undefined("map-vs-mask ROC AUC", n_pos == 0, EMPTY_MASK)
    _warn_undefined("map-vs-mask ROC AUC", n_neg == 0, FULL_MASK)
    return auc


@dataclass(frozen=True)
class LocalisationResult:
    """All localisation scores of a batch of maps against lesion masks (arrays of shape (N,)).

    ``params`` records tolerance, k and attribution conventions; ``n_empty_masks`` counts the
    cases whose scores are NaN because no lesion was annotated.
    """

    pointing_game: np.ndarray
    energy_pointing_game: np.ndarray
    relevance_mass_accuracy: np.ndarray
    relevance_rank_accuracy: np.ndarray
    top_k_iou: np.ndarray
    map_mask_auc: np.ndarray
    n_empty_masks: int
    params: dict = field(default_factory=dict)

    def to_frame(self):
        """Tidy table: one row per case, one column per score."""
        import pandas as pd

        cols = (
            "pointing_game",
            "energy_pointing_game",
            "relevance_mass_accuracy",
            "relevance_rank_accuracy",
            "top_k_iou",
            "map_mask_auc",
        )
        data = {c: getattr(self, c) for c in cols}
        return pd.DataFrame({"case": np.arange(len(self.pointing_game)), **data})


def localisation_scores(
    maps: Any,
    masks: Any,
    *,
    tolerance: float = 0.0,
    k: float = 0.05,
    attribution: str = "positive",
) -> LocalisationResult:
    """Every localisation score at once (one warning per metric for empty masks).

    Parameters
    ----------
    maps, masks : arrays of shape (N, *spatial)
    tolerance : float
        Pointing-game tolerance in pixels.
    k : float
        Top-k fraction for :func:`top_k_iou`.
    attribution : {"positive", "absolute", "signed"}
        Convention for the mass, rank and IoU scores; the ROC AUC always ranks the signed map.

    Returns
    -------
    LocalisationResult
    """
    flat, masks_b = _inputs(maps, masks, "localisation_scores")
    m = flat.reshape(masks_b.shape)
    n_empty = int((~masks_b.reshape(len(m), -1).any(axis=1)).sum())
    return LocalisationResult(
        pointing_game=pointing_game(m, masks_b, tolerance=tolerance),
        energy_pointing_game=energy_pointing_game(m, masks_b),
        relevance_mass_accuracy=relevance_mass_accuracy(m, masks_b, attribution=attribution),
        relevance_rank_accuracy=relevance_rank_accuracy(m, masks_b, attribution=attribution),
        top_k_iou=top_k_iou(m, masks_b, k=k, attribution=attribution),
        map_mask_auc=map_mask_auc(m, masks_b),
        n_empty_masks=n_empty,
        params={
            "tolerance": float(tolerance),
            "k": float(k),
            "attribution": attribution,
            "top_k_pixels": _n_top(k, flat.shape[1]),
        },
    )
