"""Faithfulness of attribution maps: deletion/insertion curves and ROAD.

A faithful map ranks pixels by how much the model's score depends on them. Deleting the most
relevant pixels first should make the score fall fast (low deletion AUC); inserting them first
into a blank image should make it rise fast (high insertion AUC). A random pixel order is the
baseline every map must beat. ROAD replaces removed pixels by a noisy linear imputation from their
neighbours instead of a constant, which limits the out-of-distribution artefacts of removal.

Every perturbed image of every step is sent through the model in chunks of ``batch_size``; the
results report how many images the model evaluated.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
import torch
from scipy import ndimage, sparse
from scipy.sparse import linalg as splinalg

from medlens._errors import InputDataError, param_error

from ._similarity import _as_maps

__all__ = [
    "DeletionInsertionResult",
    "RoadResult",
    "deletion_insertion",
    "morf_lerf_gap",
    "noisy_linear_imputation",
    "road",
]

IMAGES_BAD = (
    "images of {func} must be a float tensor or array of shape (N, C, *spatial) with N >= 1; "
    "got {got}."
)
MAPS_IMAGES_MISMATCH = (
    "maps of {func} must have shape (N, *spatial) = {expected} to match the images; got {got}. "
    "Reduce the channel axis of the maps (e.g. sum over channels) first."
)
TARGET_BAD = (
    "target of {func} must be None, an int class index or one index per image (length {n}) "
    "within [0, {k}); got {got!r}."
)
SCORE_OUTPUT_BAD = (
    "score of {func} must map model outputs (B, K) to scores (B, K); got shape {got} from "
    "outputs of shape {outputs}."
)

GAP_SHAPES = (
    "morf_lerf_gap needs morf and lerf curves of the same shape (N, S + 1) and fractions of "
    "shape (S + 1,) with S >= 1; got {morf}, {lerf} and {fractions}."
)

IMPUTE_SHAPE = (
    "noisy_linear_imputation needs image (C, *spatial) and keep (*spatial); got {image} and {keep}."
)
IMPUTE_NOTHING_KEPT = (
    "noisy_linear_imputation needs at least one kept pixel to impute from; lower the removal "
    "percentage."
)

_BASELINES = ("blur", "mean", "zero")


# --------------------------------------------------------------------------- shared helpers


def _check_images(images: Any, func: str) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.as_tensor(images)
    if (
        not isinstance(images, torch.Tensor)
        or images.ndim < 3
        or images.shape[0] == 0
        or not torch.is_floating_point(images)
    ):
        got = (
            f"shape {tuple(images.shape)}, dtype {images.dtype}"
            if hasattr(images, "shape")
            else type(images).__name__
        )
        raise InputDataError(IMAGES_BAD.format(func=func, got=got))
    if not torch.isfinite(images).all():
        raise InputDataError(IMAGES_BAD.format(func=func, got="non-finite values"))
    return images


def _check_maps(maps: Any, images: torch.Tensor, func: str) -> np.ndarray:
    arr = _as_maps(maps, name="maps", func=func)
    expected = (images.shape[0], *images.shape[2:])
    if arr.shape != expected:
        raise InputDataError(
            MAPS_IMAGES_MISMATCH.format(func=func, expected=expected, got=arr.shape)
        )
    return arr


def _check_int(value: Any, name: str, func: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise param_error(name, func, f"an int >= {minimum}", value)
    return int(value)


def _model_device(model: torch.nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


class _Scorer:
    """Runs the model in chunks and returns the target score per image (counts evaluations)."""

    def __init__(
        self,
        model: torch.nn.Module,
        score: str | Callable[[torch.Tensor], torch.Tensor],
        batch_size: int,
        func: str,
    ) -> None:
        if not (callable(score) or score in ("probability", "logit")):
            raise param_error("score", func, "'probability', 'logit' or a callable", score)
        self.model, self.score, self.batch_size, self.func = model, score, batch_size, func
        self.device = _model_device(model)
        self.n_evaluations = 0
        self.last_raw: torch.Tensor | None = None

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """All class scores (B, K) for a chunk already on the device.

        The raw outputs (B, K) of the same forward pass are kept in ``last_raw``.
        """
        out = self.model(x)
        if out.ndim == 1:
            out = out[:, None]
        out = out.reshape(out.shape[0], -1)
        self.last_raw = out
        self.n_evaluations += x.shape[0]
        if callable(self.score):
            s = self.score(out)
            if not isinstance(s, torch.Tensor) or s.shape != out.shape:
                raise InputDataError(
                    SCORE_OUTPUT_BAD.format(
                        func=self.func, got=getattr(s, "shape", type(s)), outputs=tuple(out.shape)
                    )
                )
            return s
        if self.score == "logit":
            return out
        return torch.sigmoid(out) if out.shape[1] == 1 else torch.softmax(out, dim=1)


def _resolve_targets(target: Any, all_scores: torch.Tensor, func: str) -> np.ndarray:
    n, k = all_scores.shape
    if target is None:
        return all_scores.argmax(dim=1).cpu().numpy()
    t = np.asarray(target)
    if t.ndim == 0:
        t = np.full(n, t)
    if t.shape != (n,) or not np.issubdtype(t.dtype, np.integer) or (t < 0).any() or (t >= k).any():
        raise InputDataError(TARGET_BAD.format(func=func, n=n, k=k, got=target))
    return t.astype(np.int64)


def _unit_ids(spatial: tuple[int, ...], patch_size: int) -> tuple[np.ndarray, int]:
    """Id of the patch (unit) of each pixel (flat), and the number of units."""
    grids = np.meshgrid(*[np.arange(s) // patch_size for s in spatial], indexing="ij")
    counts = [math.ceil(s / patch_size) for s in spatial]
    ids = np.ravel_multi_index([g.ravel() for g in grids], counts)
    return ids, int(np.prod(counts))


def _unit_rank(values: np.ndarray, unit_ids: np.ndarray, n_units: int) -> np.ndarray:
    """Rank (0 = first removed) of each pixel's unit; ``values`` is (N, n_pixels).

    Unit relevance is the sum of its pixels; ties go to the lower unit index (stable sort).
    """
    n = values.shape[0]
    unit_vals = np.zeros((n, n_units))
    for i in range(n):
        unit_vals[i] = np.bincount(unit_ids, weights=values[i], minlength=n_units)
    order = np.argsort(-unit_vals, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n_units)[None, :].repeat(n, 0), axis=1)
    return rank[:, unit_ids]


def _baseline_images(images: torch.Tensor, baseline: str, sigma: float | None) -> torch.Tensor:
    if baseline == "zero":
        return torch.zeros_like(images)
    spatial_axes = tuple(range(2, images.ndim))
    if baseline == "mean":
        return images.mean(dim=spatial_axes, keepdim=True).expand_as(images).clone()
    x = images.detach().cpu().numpy()
    sig = [0.0, 0.0] + [float(sigma)] * (images.ndim - 2)
    return torch.as_tensor(
        ndimage.gaussian_filter(x, sigma=sig, mode="reflect"), dtype=images.dtype
    )


# --------------------------------------------------------------------------- deletion / insertion


@dataclass(frozen=True)
class DeletionInsertionResult:
    """Deletion and insertion curves of a batch of maps, with random-order baselines.

    Attributes
    ----------
    fractions : ndarray of shape (S + 1,)
        Fraction of units (pixels, or patches when ``patch_size > 1``) removed (deletion) or
        inserted (insertion) at each step, from 0 to 1: ``round(j / S * U) / U``.
    deletion, insertion : ndarray of shape (N, S + 1)
        Target score per case and step, most relevant pixels first.
    deletion_random, insertion_random : ndarray of shape (N, S + 1)
        The same with a seeded random pixel order (mean over ``n_random`` orders).
    deletion_auc, insertion_auc, deletion_auc_random, insertion_auc_random : ndarray (N,)
        Trapezoid areas under the curves over ``fractions`` in [0, 1]. A faithful map has
        ``deletion_auc < deletion_auc_random`` and ``insertion_auc > insertion_auc_random``.
    targets : ndarray of shape (N,)
        Class index explained per case.
    n_model_evaluations : int
        Images the model evaluated (endpoints are shared between curves and evaluated once).
    params : dict
        Exact settings.
    deletion_raw, insertion_raw : ndarray of shape (N, S + 1)
        The raw model output (logit) of the target along ``deletion`` and ``insertion``,
        recorded in the same forward passes (no extra evaluation). Unlike a probability it
        does not saturate, so :attr:`morf_lerf_gap` uses it.
    """

    fractions: np.ndarray
    deletion: np.ndarray = field(repr=False)
    insertion: np.ndarray = field(repr=False)
    deletion_random: np.ndarray = field(repr=False)
    insertion_random: np.ndarray = field(repr=False)
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    deletion_auc_random: np.ndarray
    insertion_auc_random: np.ndarray
    targets: np.ndarray
    n_model_evaluations: int
    params: dict = field(default_factory=dict)
    deletion_raw: np.ndarray | None = field(default=None, repr=False)
    insertion_raw: np.ndarray | None = field(default=None, repr=False)

    @property
    def morf_lerf_gap(self) -> np.ndarray:
        """Normalised LeRF - MoRF gap per case on the raw outputs (see :func:`morf_lerf_gap`).

        Removing the *least* relevant fraction ``f`` keeps the ``1 - f`` most relevant units,
        which is the insertion image at ``1 - f``: the insertion curve read backwards is the
        LeRF deletion curve under the same baseline (equal up to rounding of unit counts and
        the order of tied map values), so no extra model evaluation is needed.
        """
        morf = self.deletion if self.deletion_raw is None else self.deletion_raw
        ins = self.insertion if self.insertion_raw is None else self.insertion_raw
        return morf_lerf_gap(morf, ins[:, ::-1], self.fractions)

    def to_frame(self):
        """Tidy table: one row per case with the four AUCs and the target."""
        import pandas as pd

        return pd.DataFrame(
            {
                "case": np.arange(self.targets.shape[0]),
                "target": self.targets,
                "deletion_auc": self.deletion_auc,
                "insertion_auc": self.insertion_auc,
                "deletion_auc_random": self.deletion_auc_random,
                "insertion_auc_random": self.insertion_auc_random,
            }
        )


def deletion_insertion(
    model: torch.nn.Module,
    images: Any,
    maps: Any,
    *,
    target: int | Sequence[int] | None = None,
    score: str | Callable[[torch.Tensor], torch.Tensor] = "probability",
    n_steps: int = 20,
    baseline: str = "blur",
    blur_sigma: float | None = None,
    patch_size: int = 1,
    absolute: bool = False,
    n_random: int = 1,
    seed: int = 0,
    batch_size: int = 64,
) -> DeletionInsertionResult:
    """Deletion and insertion curves (most relevant first) and their AUCs.

    Step ``j`` of ``n_steps`` removes (deletion) or inserts (insertion) the ``round(j/S * U)``
    most relevant units (pixels, or ``patch_size`` patches ranked by the sum of the map inside),
    across all channels. Removed pixels take the value of the baseline image; insertion starts
    from the baseline image and puts original pixels back.

    Parameters
    ----------
    model : torch.nn.Module
        Model in the state to evaluate (call ``.eval()`` first); not modified.
    images : Tensor or array of shape (N, C, *spatial)
        Images the maps explain (in model-input space).
    maps : array of shape (N, *spatial)
        Attribution maps. Signed maps are ranked by value (most positive = most evidence for the
        target first) unless ``absolute=True`` ranks ``|map|``.
    target : int, sequence of int or None
        Class index per case; None = the class with the highest score on the original image.
    score : {"probability", "logit"} or callable
        ``"probability"`` = softmax (sigmoid for a single output), ``"logit"`` = raw output; a
        callable maps outputs (B, K) to scores (B, K).
    n_steps : int, default 20
        Steps S between 0 % and 100 %.
    baseline : {"blur", "mean", "zero"}
        Removal value: Gaussian-blurred image (Petsiuk et al. insertion), per-image per-channel
        mean, or 0.
    blur_sigma : float, optional
        Gaussian sigma in pixels for ``"blur"``; default ``max(1, min(spatial) / 8)``.
    patch_size : int, default 1
        Side of the square/cubic units removed together.
    absolute : bool, default False
        Rank ``|map|`` instead of the signed map.
    n_random : int, default 1
        Random orders averaged for the baseline curves.
    seed : int
        Seed of the random orders (``numpy.random.default_rng(seed)``).
    batch_size : int, default 64
        Most images per forward pass.

    Returns
    -------
    DeletionInsertionResult

    Raises
    ------
    InputDataError
        Bad images, maps or targets.
    MedlensError
        Bad parameter values.

    References
    ----------
    Petsiuk V., Das A., Saenko K. (2018). RISE: Randomized Input Sampling for Explanation of
    Black-box Models. BMVC.
    Samek W. et al. (2017). Evaluating the visualization of what a deep neural network has
    learned. IEEE TNNLS 28(11).
    """
    func = "deletion_insertion"
    images = _check_images(images, func)
    arr = _check_maps(maps, images, func)
    n_steps = _check_int(n_steps, "n_steps", func, 1)
    patch_size = _check_int(patch_size, "patch_size", func, 1)
    n_random = _check_int(n_random, "n_random", func, 1)
    batch_size = _check_int(batch_size, "batch_size", func, 1)
    seed = _check_int(seed, "seed", func, 0)
    if baseline not in _BASELINES:
        raise param_error("baseline", func, "one of 'blur', 'mean', 'zero'", baseline)
    spatial = tuple(images.shape[2:])
    if blur_sigma is None:
        blur_sigma = max(1.0, min(spatial) / 8)
    elif (
        isinstance(blur_sigma, bool) or not isinstance(blur_sigma, (int, float)) or blur_sigma <= 0
    ):
        raise param_error("blur_sigma", func, "a float > 0", blur_sigma)
    scorer = _Scorer(model, score, batch_size, func)
    n = images.shape[0]
    device = scorer.device
    x = images.to(device)
    base = _baseline_images(images, baseline, blur_sigma).to(device)

    unit_ids, n_units = _unit_ids(spatial, patch_size)
    values = np.abs(arr) if absolute else arr
    values = values.reshape(n, -1)
    rng = np.random.default_rng(seed)
    ranks = [_unit_rank(values, unit_ids, n_units)]
    for _ in range(n_random):
        perm = np.argsort(rng.random((n, n_units)), axis=1)
        rank = np.empty_like(perm)
        np.put_along_axis(rank, perm, np.arange(n_units)[None, :].repeat(n, 0), axis=1)
        ranks.append(rank[:, unit_ids])
    rank_t = torch.as_tensor(np.stack(ranks).astype(np.int32), device=device)  # (1+R, N, P)
    k_units = [round(j / n_steps * n_units) for j in range(n_steps + 1)]
    fractions = np.array(k_units, dtype=float) / n_units

    with torch.no_grad():
        # endpoints: original (deletion step 0, insertion step S) and baseline, evaluated once
        s_orig, scorer_raw_orig = _scores_and_raw(scorer, x, batch_size)
        targets = _resolve_targets(target, s_orig, func)
        t_idx = torch.as_tensor(targets, device=device)
        s_base, scorer_raw_base = _scores_and_raw(scorer, base, batch_size)
        orig_score = s_orig.gather(1, t_idx[:, None])[:, 0].cpu().numpy()
        base_score = s_base.gather(1, t_idx[:, None])[:, 0].cpu().numpy()

        orig_raw = scorer_raw_orig.gather(1, t_idx[:, None])[:, 0].cpu().numpy()
        base_raw = scorer_raw_base.gather(1, t_idx[:, None])[:, 0].cpu().numpy()

        n_orders = rank_t.shape[0]
        curves = np.full((2, n_orders, n, n_steps + 1), np.nan)  # (deletion/insertion, order)
        curves[0, :, :, 0] = orig_score
        curves[0, :, :, -1] = base_score
        curves[1, :, :, 0] = base_score
        curves[1, :, :, -1] = orig_score
        raw = np.full((2, n, n_steps + 1), np.nan)  # most-relevant-first order only
        raw[0, :, 0], raw[0, :, -1], raw[1, :, 0], raw[1, :, -1] = (
            orig_raw,
            base_raw,
            base_raw,
            orig_raw,
        )
        jobs = [
            (kind, o, i, j)
            for kind, o, j, i in product(range(2), range(n_orders), range(1, n_steps), range(n))
        ]
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            kind = torch.as_tensor([c[0] for c in chunk], device=device)
            o = torch.as_tensor([c[1] for c in chunk], device=device)
            i = torch.as_tensor([c[2] for c in chunk], device=device)
            kk = torch.as_tensor([k_units[c[3]] for c in chunk], device=device)
            removed = rank_t[o, i] < kk[:, None]  # (B, n_pixels): pixels taken out at this step
            removed = removed.reshape(len(chunk), 1, *spatial)
            # deletion: removed pixels -> baseline; insertion: only the inserted pixels original
            use_base = torch.where(kind.reshape(-1, *[1] * (x.ndim - 1)) == 0, removed, ~removed)
            batch = torch.where(use_base, base[i], x[i])
            t_col = torch.as_tensor(targets, device=device)[i][:, None]
            s = scorer.scores(batch).gather(1, t_col)[:, 0].cpu().numpy()
            r = scorer.last_raw.gather(1, t_col)[:, 0].cpu().numpy()
            for (kd, oo, ii, jj), v, rv in zip(chunk, s, r, strict=True):
                curves[kd, oo, ii, jj] = v
                if oo == 0:
                    raw[kd, ii, jj] = rv

    auc = np.trapezoid(curves, fractions, axis=-1)  # (2, orders, N)
    return DeletionInsertionResult(
        fractions=fractions,
        deletion=curves[0, 0],
        insertion=curves[1, 0],
        deletion_random=curves[0, 1:].mean(axis=0),
        insertion_random=curves[1, 1:].mean(axis=0),
        deletion_auc=auc[0, 0],
        insertion_auc=auc[1, 0],
        deletion_auc_random=auc[0, 1:].mean(axis=0),
        insertion_auc_random=auc[1, 1:].mean(axis=0),
        targets=targets,
        n_model_evaluations=scorer.n_evaluations,
        params={
            "n_steps": n_steps,
            "baseline": baseline,
            "blur_sigma": float(blur_sigma) if baseline == "blur" else None,
            "patch_size": patch_size,
            "absolute": bool(absolute),
            "n_random": n_random,
            "seed": seed,
            "score": score if isinstance(score, str) else getattr(score, "__name__", "callable"),
            "batch_size": batch_size,
        },
        deletion_raw=raw[0],
        insertion_raw=raw[1],
    )


def _scores_and_raw(
    scorer: _Scorer, x: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    scores, raws = [], []
    for i in range(0, x.shape[0], batch_size):
        scores.append(scorer.scores(x[i : i + batch_size]))
        raws.append(scorer.last_raw)
    return torch.cat(scores), torch.cat(raws)


def morf_lerf_gap(morf: Any, lerf: Any, fractions: Any) -> np.ndarray:
    """Normalised area between the LeRF and MoRF removal curves of each case.

    ``gap = (AUC(lerf) - AUC(morf)) / (max - min of both curves)`` with trapezoid areas over
    ``fractions`` in [0, 1]. Both curves remove pixels under the *same* baseline, so a drift of
    the score caused by the baseline itself (a blurred or flat image that the model scores
    high or low whatever was removed) moves both curves alike and cancels in the difference;
    dividing by the curves' score range makes the gap free of the score's scale (logit or
    probability, saturated or not). The gap lies in [-1, 1]: near 1 when removing the most
    relevant pixels first destroys the score at once while removing the least relevant ones
    leaves it intact, about 0 for a map that ranks pixels no better than chance, negative for a
    map that ranks them backwards. NaN (with a RuntimeWarning) where both curves are flat.

    Parameters
    ----------
    morf, lerf : array of shape (N, S + 1)
        Target score after removing the fraction ``fractions[j]`` of units, most relevant
        first (MoRF) and least relevant first (LeRF).
    fractions : array of shape (S + 1,)
        Removed fractions, increasing from 0 to 1.

    Returns
    -------
    ndarray of shape (N,)

    References
    ----------
    Rong Y. et al. (2022). A Consistent and Efficient Evaluation Strategy for Attribution
    Methods. ICML (MoRF vs. LeRF under one imputation).
    Samek W. et al. (2017). Evaluating the visualization of what a deep neural network has
    learned. IEEE TNNLS 28(11) (area over the MoRF perturbation curve).
    """
    m = np.asarray(morf, dtype=float)
    le = np.asarray(lerf, dtype=float)
    f = np.asarray(fractions, dtype=float)
    if m.ndim != 2 or m.shape != le.shape or f.shape != (m.shape[1],) or f.size < 2:
        raise InputDataError(GAP_SHAPES.format(morf=m.shape, lerf=le.shape, fractions=f.shape))
    both = np.concatenate([m, le], axis=1)
    span = both.max(axis=1) - both.min(axis=1)
    flat = ~(span > 0)
    if flat.any():
        warnings.warn(
            f"morf_lerf_gap undefined for {int(flat.sum())} case(s): the score does not change "
            "under removal; returning NaN",
            RuntimeWarning,
            stacklevel=2,
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = (np.trapezoid(le, f, axis=1) - np.trapezoid(m, f, axis=1)) / span
    gap[flat] = np.nan
    return gap


# --------------------------------------------------------------------------- ROAD


def _neighbour_offsets(ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """All offsets in {-1, 0, 1}^d minus 0, weighted 1/L1 and normalised to sum 1.

    In 2D this is ROAD's weighting: 1/6 for the 4 direct neighbours, 1/12 for the diagonals.
    """
    offs = np.array([o for o in product((-1, 0, 1), repeat=ndim) if any(o)])
    w = 1.0 / np.abs(offs).sum(axis=1)
    return offs, w / w.sum()


def noisy_linear_imputation(
    image: np.ndarray, keep: np.ndarray, *, noise: float, rng: np.random.Generator | None
) -> np.ndarray:
    """Fill the pixels where ``keep`` is False by ROAD's noisy linear imputation.

    Each missing pixel equals the weighted mean of its in-bounds neighbours (known or missing),
    which gives one sparse linear system over all missing pixels, solved exactly
    (``scipy.sparse.linalg.spsolve``, all channels at once); then ``noise * N(0, 1)`` is added.

    Parameters
    ----------
    image : ndarray of shape (C, *spatial)
    keep : bool ndarray of shape spatial
        True where the pixel is kept. At least one pixel must be kept.
    noise : float
        Standard deviation of the added Gaussian noise (ROAD: 0.01 on normalised inputs).
    rng : numpy.random.Generator or None
        Source of the noise (may be None when ``noise == 0``).

    Returns
    -------
    ndarray of shape (C, *spatial)
    """
    keep = np.asarray(keep, dtype=bool)
    if image.ndim != keep.ndim + 1 or image.shape[1:] != keep.shape:
        raise InputDataError(IMPUTE_SHAPE.format(image=image.shape, keep=keep.shape))
    if not keep.any():
        raise InputDataError(IMPUTE_NOTHING_KEPT)
    spatial = keep.shape
    flat_keep = keep.ravel()
    missing = np.flatnonzero(~flat_keep)
    if missing.size == 0:
        return image.copy()
    channels = image.reshape(image.shape[0], -1)
    var_of = np.full(flat_keep.size, -1, dtype=np.int64)
    var_of[missing] = np.arange(missing.size)
    coords = np.array(np.unravel_index(missing, spatial))  # (d, M)
    offs, weights = _neighbour_offsets(len(spatial))
    rows, cols, vals = [], [], []
    diag = np.zeros(missing.size)
    rhs = np.zeros((missing.size, channels.shape[0]))
    shape_arr = np.array(spatial)[:, None]
    for off, w in zip(offs, weights, strict=True):
        nb = coords + off[:, None]
        inside = np.all((nb >= 0) & (nb < shape_arr), axis=0)
        eq = np.flatnonzero(inside)
        nb_flat = np.ravel_multi_index(tuple(nb[:, inside]), spatial)
        diag[eq] += w
        known = flat_keep[nb_flat]
        rhs[eq[known]] += w * channels[:, nb_flat[known]].T
        rows.append(eq[~known])
        cols.append(var_of[nb_flat[~known]])
        vals.append(np.full((~known).sum(), -w))
    a = sparse.csr_matrix(
        (
            np.concatenate([diag, *vals]),
            (
                np.concatenate([np.arange(missing.size), *rows]),
                np.concatenate([np.arange(missing.size), *cols]),
            ),
        ),
        shape=(missing.size, missing.size),
    )
    sol = splinalg.spsolve(a.tocsc(), rhs)
    sol = np.asarray(sol).reshape(missing.size, -1)
    out = channels.copy().astype(np.float64)
    out[:, missing] = sol.T
    if noise > 0:
        out[:, missing] += noise * rng.standard_normal(sol.T.shape)
    return out.reshape(image.shape)


@dataclass(frozen=True)
class RoadResult:
    """ROAD scores (remove and debias) at several removal percentages.

    Attributes
    ----------
    percentages : ndarray of shape (P,)
        Fractions of pixels removed.
    morf : ndarray of shape (N, P)
        Target score after removing the Most Relevant pixels First (lower = more faithful).
    lerf : ndarray of shape (N, P)
        Target score after removing the Least Relevant pixels First (higher = more faithful).
    original : ndarray of shape (N,)
        Target score on the unmodified images.
    targets : ndarray of shape (N,)
    n_model_evaluations : int
    params : dict
    """

    percentages: np.ndarray
    morf: np.ndarray = field(repr=False)
    lerf: np.ndarray = field(repr=False)
    original: np.ndarray
    targets: np.ndarray
    n_model_evaluations: int
    params: dict = field(default_factory=dict)

    @property
    def lerf_minus_morf(self) -> np.ndarray:
        """Mean over percentages of LeRF - MoRF per case (higher = more faithful)."""
        return (self.lerf - self.morf).mean(axis=1)

    def to_frame(self):
        """Tidy table: one row per (case, percentage) with MoRF and LeRF scores."""
        import pandas as pd

        n, p = self.morf.shape
        return pd.DataFrame(
            {
                "case": np.repeat(np.arange(n), p),
                "target": np.repeat(self.targets, p),
                "percentage": np.tile(self.percentages, n),
                "morf": self.morf.ravel(),
                "lerf": self.lerf.ravel(),
            }
        )


def road(
    model: torch.nn.Module,
    images: Any,
    maps: Any,
    *,
    percentages: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    target: int | Sequence[int] | None = None,
    score: str | Callable[[torch.Tensor], torch.Tensor] = "probability",
    noise: float = 0.01,
    absolute: bool = False,
    seed: int = 0,
    batch_size: int = 64,
) -> RoadResult:
    """ROAD: RemOve And Debias with noisy linear imputation, MoRF and LeRF orders.

    For each percentage p, the ``round(p * n_pixels)`` most (MoRF) or least (LeRF) relevant
    pixels are removed and re-imputed by :func:`noisy_linear_imputation` (all channels), then
    the model scores the imputed image. Ties in the map go to the lower flat index.

    Parameters
    ----------
    model : torch.nn.Module
        Model to evaluate (in eval mode); not modified.
    images : Tensor or array of shape (N, C, *spatial)
    maps : array of shape (N, *spatial)
        Signed maps are ranked by value unless ``absolute=True``.
    percentages : sequence of float in [0, 1)
        Removal fractions (100 % leaves nothing to impute from).
    target, score, batch_size
        As in :func:`deletion_insertion`.
    noise : float, default 0.01
        Standard deviation of the imputation noise, in input units (ROAD's default on
        normalised images).
    absolute : bool, default False
    seed : int
        Seed of the imputation noise (``numpy.random.default_rng(seed)``).

    Returns
    -------
    RoadResult

    Raises
    ------
    InputDataError, MedlensError
        Bad inputs or parameters.

    References
    ----------
    Rong Y., Leemann T., Borisov V., Kasneci G., Kasneci E. (2022). A Consistent and Efficient
    Evaluation Strategy for Attribution Methods. ICML.
    """
    func = "road"
    images = _check_images(images, func)
    arr = _check_maps(maps, images, func)
    batch_size = _check_int(batch_size, "batch_size", func, 1)
    seed = _check_int(seed, "seed", func, 0)
    try:
        pcts = np.asarray(percentages, dtype=float).ravel()
    except (TypeError, ValueError):
        pcts = np.array([np.nan])
    if pcts.size == 0 or not np.all((pcts >= 0) & (pcts < 1)):
        raise param_error(
            "percentages", func, "a non-empty sequence of floats in [0, 1)", percentages
        )
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise param_error("noise", func, "a float >= 0", noise)
    scorer = _Scorer(model, score, batch_size, func)
    n = images.shape[0]
    spatial = tuple(images.shape[2:])
    values = (np.abs(arr) if absolute else arr).reshape(n, -1)
    order = np.argsort(-values, axis=1, kind="stable")  # most relevant first
    n_pix = values.shape[1]
    rng = np.random.default_rng(seed)
    x_np = images.detach().cpu().numpy().astype(np.float64)
    # jobs in a fixed order (case, order, percentage): the noise stream, hence the result, does
    # not depend on batch_size; images are imputed chunk by chunk to bound memory
    jobs = [(oi, i, pi) for i in range(n) for oi in range(2) for pi in range(pcts.size)]

    def impute(job: tuple[int, int, int]) -> np.ndarray:
        oi, i, pi = job
        ranked = order[i] if oi == 0 else order[i][::-1]
        keep = np.ones(n_pix, dtype=bool)
        keep[ranked[: round(pcts[pi] * n_pix)]] = False
        return noisy_linear_imputation(x_np[i], keep.reshape(spatial), noise=noise, rng=rng)

    device = scorer.device
    x = images.to(device)
    out = np.full((2, n, pcts.size), np.nan)
    with torch.no_grad():
        s_orig = torch.cat([scorer.scores(x[i : i + batch_size]) for i in range(0, n, batch_size)])
        targets = _resolve_targets(target, s_orig, func)
        t_all = torch.as_tensor(targets, device=device)
        original = s_orig.gather(1, t_all[:, None])[:, 0].cpu().numpy()
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            batch = torch.as_tensor(
                np.stack([impute(job) for job in chunk]), dtype=images.dtype, device=device
            )
            idx = torch.as_tensor([c[1] for c in chunk], device=device)
            s = scorer.scores(batch).gather(1, t_all[idx][:, None])[:, 0].cpu().numpy()
            for (oi, i, pi), v in zip(chunk, s, strict=True):
                out[oi, i, pi] = v
    return RoadResult(
        percentages=pcts,
        morf=out[0],
        lerf=out[1],
        original=original,
        targets=targets,
        n_model_evaluations=scorer.n_evaluations,
        params={
            "percentages": tuple(float(p) for p in pcts),
            "noise": float(noise),
            "absolute": bool(absolute),
            "seed": seed,
            "score": score if isinstance(score, str) else getattr(score, "__name__", "callable"),
            "batch_size": batch_size,
            "imputation": "noisy_linear",
        },
    )
