"""Vectorised (cluster-)bootstrap of every metric for the overall population and all cohorts.

Design
------
Each replicate resamples *patients* (clusters) with replacement, within each stratum
(site) when strata are given, so that a patient's images stay together. A replicate is
a vector of patient multiplicities ``w`` (obtained exactly with ``np.bincount`` of the
sampled patient indices), and every statistic is a function of weighted sums:

* threshold metrics, Brier score and ECE: per-patient sufficient statistics
  (tp, fp, tn, fn, squared error, per-bin sum of score - label) for each cohort value;
  a block of replicates is one dense matrix product ``W[:, patients] @ D``.
* AUC and average precision: rows are sorted once per cohort value; scores are
  compressed to "blocks" between consecutive distinct positive scores, so that each
  replicate needs one weighted ``bincount`` and two cumulative sums (no re-sorting).

Replicates are generated in fixed-size blocks, each from its own child of
``np.random.SeedSequence(seed)``, so the result depends only on the data and the seed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from medlens._errors import param_error

__all__ = ["BootstrapReplicates", "Partition", "cluster_bootstrap", "replicate_weights"]

ADDITIVE_METRICS = (
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "accuracy",
    "balanced_accuracy",
    "f1",
    "lr_positive",
    "lr_negative",
    "brier",
    "ece",
)
RANK_METRICS = ("auc", "average_precision")
_WEIGHT_BUDGET = 1 << 25  # floats per block of replicate weights (256 MB as float64)
_ROW_BUDGET = 1 << 24  # floats per block of row weights in the rank kernel
_NARROW = 45  # columns of D up to which W^T @ D is the faster product
_DENSE_BUDGET = 1 << 29  # bytes of one partition's per-cluster statistics (512 MB)


@dataclass(frozen=True)
class Partition:
    """A cohort column: integer code per row (0..len(values)-1) and the value names."""

    name: str
    codes: np.ndarray
    values: tuple[str, ...]


@dataclass(frozen=True)
class BootstrapReplicates:
    """Replicate values: ``values[(partition, value)][metric]`` is an array of shape (B,)."""

    n_replicates: int
    n_clusters: int
    n_strata: int
    seed: int
    values: dict[tuple[str, str], dict[str, np.ndarray]]


def _block_size(n_clusters: int) -> int:
    return int(max(1, min(64, _WEIGHT_BUDGET // max(n_clusters, 1))))


def replicate_weights(
    cluster_strata: np.ndarray, n_replicates: int, seed: int
) -> Iterator[np.ndarray]:
    """Yield blocks of replicate weights, arrays of shape (b, n_clusters), float64.

    Within each stratum, ``n_s`` clusters are drawn with replacement from the ``n_s``
    clusters of that stratum; the weight of a cluster is how often it was drawn.
    """
    for wt in _weight_blocks(np.asarray(cluster_strata), n_replicates, seed):
        yield wt.T


def _weight_blocks(strata: np.ndarray, n_replicates: int, seed: int) -> Iterator[np.ndarray]:
    """Replicate weights in cluster-major layout: C-contiguous (n_clusters, b) blocks."""
    n = strata.size
    order = np.argsort(strata, kind="mergesort")
    _, first, sizes = np.unique(strata[order], return_index=True, return_counts=True)
    contiguous = bool(np.all(order == np.arange(n)))
    b = _block_size(n)
    children = np.random.SeedSequence(seed).spawn((n_replicates + b - 1) // b)
    done = 0
    for child in children:
        rng = np.random.Generator(np.random.PCG64(child))
        bb = min(b, n_replicates - done)
        wt = np.empty((n, bb), dtype=np.float64)
        replicate = np.arange(bb, dtype=np.int64)[:, None]
        for start, k in zip(first.tolist(), sizes.tolist(), strict=True):
            # draw k clusters with replacement for each replicate; count them cluster-major
            draws = rng.integers(0, k, size=(bb, k), dtype=np.int64)
            draws *= bb
            draws += replicate
            wt[start : start + k] = np.bincount(draws.ravel(), minlength=k * bb).reshape(k, bb)
        if not contiguous:
            unsorted = np.empty_like(wt)
            unsorted[order] = wt
            wt = unsorted
        done += bb
        yield wt


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = a / b
    out[~np.isfinite(out)] = np.nan
    return out


def _additive_metrics(r: np.ndarray, nb: int) -> dict[str, np.ndarray]:
    tp, fp, tn, fn, sq = (r[:, i] for i in range(5))
    n = tp + fp + tn + fn
    sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    return {
        "sensitivity": sens,
        "specificity": spec,
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "accuracy": _ratio(tp + tn, n),
        "balanced_accuracy": (sens + spec) / 2,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "lr_positive": _ratio(sens, 1 - spec),
        "lr_negative": _ratio(1 - sens, spec),
        "brier": _ratio(sq, n),
        "ece": _ratio(np.abs(r[:, 5 : 5 + nb]).sum(axis=1), n),
    }


class _RankLayout:
    """Block ids per row for the AUC / AP kernel of one partition (see module doc)."""

    def __init__(self, y: np.ndarray, s: np.ndarray, codes: np.ndarray, n_values: int) -> None:
        n = y.size
        ids = np.empty(n, dtype=np.int64)
        starts, sizes = [], []
        offset = 0
        for v in range(n_values):
            rows = np.flatnonzero(codes == v)
            yv, sv = y[rows], s[rows]
            u = np.unique(sv[yv == 1])[::-1]  # distinct positive scores, descending
            k = u.size
            # number of positive levels strictly greater than s (u is descending)
            above = np.searchsorted(-u, -sv, side="left")
            tied = np.zeros(rows.size, dtype=bool)
            inside = above < k
            tied[inside] = u[above[inside]] == sv[inside]
            # layout per value: [pos 0..k] [negstrict 0..k] [negtie 0..k]  (3 (k+1) slots)
            size = k + 1
            local = np.where(yv == 1, above, np.where(tied, 2 * size + above, size + above))
            ids[rows] = offset + local
            starts.append(offset)
            sizes.append(size)
            offset += 3 * size
        self.ids = ids
        self.starts = np.asarray(starts, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.length = offset

    def metrics(self, wrows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """AUC and AP per replicate and value: two arrays of shape (b, n_values)."""
        b = wrows.shape[0]
        flat = (self.ids[None, :] + (np.arange(b, dtype=np.int64) * self.length)[:, None]).ravel()
        m = np.bincount(flat, weights=wrows.ravel(), minlength=b * self.length).reshape(
            b, self.length
        )
        nv = self.starts.size
        auc = np.empty((b, nv))
        ap = np.empty((b, nv))
        with np.errstate(divide="ignore", invalid="ignore"):
            for v in range(nv):
                o, k = self.starts[v], self.sizes[v]
                pos = m[:, o : o + k]
                neg_all = m[:, o + k : o + 2 * k] + m[:, o + 2 * k : o + 3 * k]
                tie = m[:, o + 2 * k : o + 3 * k]
                tpc = np.cumsum(pos, axis=1)
                fpge = np.cumsum(neg_all, axis=1)
                a = tpc[:, -1]
                nn = fpge[:, -1]
                auc[:, v] = np.sum(pos * ((nn[:, None] - fpge) + 0.5 * tie), axis=1) / (a * nn)
                prec = np.where(pos > 0, tpc / (tpc + fpge), 0.0)
                ap[:, v] = np.sum(pos * prec, axis=1) / a
        auc[~np.isfinite(auc)] = np.nan
        ap[~np.isfinite(ap)] = np.nan
        return auc, ap


def cluster_bootstrap(
    y_true: np.ndarray,
    y_score: np.ndarray,
    y_pred: np.ndarray,
    partitions: Sequence[Partition],
    *,
    clusters: np.ndarray | None = None,
    strata: np.ndarray | None = None,
    n_replicates: int = 2000,
    seed: int = 0,
    n_bins: int = 10,
    rank_metrics: bool = True,
) -> BootstrapReplicates:
    """Bootstrap replicates of every metric for every value of every partition.

    Parameters
    ----------
    y_true, y_score, y_pred : arrays of shape (n,)
        Labels (0/1), probabilities and locked-threshold predictions (0/1); already checked.
    partitions : sequence of Partition
        Cohort columns (include a one-value partition for the overall population).
    clusters : array of shape (n,), optional
        Integer patient code per row (0..P-1). Omitted: every row is its own cluster.
    strata : array of shape (n,), optional
        Integer stratum (site) code per row; must be constant within a patient.
    n_replicates : int
        Number of replicates B.
    seed : int
        Seed of ``np.random.SeedSequence``.
    n_bins : int
        Equal-width bins of the ECE.
    rank_metrics : bool
        Also bootstrap AUC and average precision (the most expensive part).

    Returns
    -------
    BootstrapReplicates
    """
    if not isinstance(n_replicates, (int, np.integer)) or n_replicates < 1:
        raise param_error("n_replicates", "cluster_bootstrap", "an int >= 1", n_replicates)
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.int64)
    n = y.size
    cl = np.arange(n) if clusters is None else np.asarray(clusters, dtype=np.int64)
    n_cl = int(cl.max()) + 1 if n else 0
    cstrata = np.zeros(n_cl, dtype=np.int64)
    if strata is not None:
        cstrata[cl] = np.asarray(strata, dtype=np.int64)
    # relabel clusters so that strata are contiguous (cheap weight generation)
    order = np.argsort(cstrata, kind="mergesort")
    relabel = np.empty(n_cl, dtype=np.int64)
    relabel[order] = np.arange(n_cl)
    cl = relabel[cl]
    cstrata = cstrata[order]
    # per-row additive statistics: one-hot confusion cell, squared error, (s - y) in its bin
    cell = (2 * (1 - y.astype(np.int64)) + (1 - p)).astype(np.int64)  # tp=0, fn=1, fp=2, tn=3
    cell_col = np.array([0, 3, 1, 2])[cell]  # -> column tp=0, fp=1, tn=2, fn=3
    bins = np.minimum((s * n_bins).astype(np.int64), n_bins - 1)
    ncols = 5 + n_bins
    # Per partition, the per-cluster statistics of all its values side by side, stored
    # so that a block of replicates is one product D^T (ncols * n_values, P) @ W (P, b)
    # reading the weights once (with D C-ordered; other memory layouts of the same product
    # hit much slower BLAS paths). When D would be too large: one product per value over
    # the clusters present in it.
    blocks = []  # (keys, clusters (None = all), D of shape (k, ncols * n_values))
    for part in partitions:
        nv = len(part.values)
        codes = part.codes.astype(np.int64)
        if n_cl * ncols * nv * 8 <= _DENSE_BUDGET:
            groups = [(None, np.arange(n), cl * nv + codes, n_cl, nv, range(nv))]
        else:
            groups = []
            for v in range(nv):
                rows = np.flatnonzero(codes == v)
                present = np.bincount(cl[rows], minlength=n_cl) > 0
                pats = np.flatnonzero(present)
                local = (np.cumsum(present) - 1)[cl[rows]]
                groups.append((pats, rows, local, pats.size, 1, range(v, v + 1)))
        for pats, rows, slot, k, width, values in groups:
            size = k * width * ncols
            base = slot * ncols
            d = np.bincount(base + cell_col[rows], minlength=size).astype(np.float64)
            d += np.bincount(base + 4, weights=(s[rows] - y[rows]) ** 2, minlength=size)
            d += np.bincount(base + 5 + bins[rows], weights=s[rows] - y[rows], minlength=size)
            keys = [(part.name, part.values[v]) for v in values]
            blocks.append(
                (
                    keys,
                    None if pats is not None and pats.size == n_cl else pats,
                    d.reshape(k, width * ncols),
                )
            )
    layouts = (
        [_RankLayout(y.astype(np.int8), s, part.codes, len(part.values)) for part in partitions]
        if rank_metrics
        else []
    )
    out: dict[tuple[str, str], dict[str, list[np.ndarray]]] = {
        (part.name, v): {} for part in partitions for v in part.values
    }
    for wt in _weight_blocks(cstrata, int(n_replicates), seed):
        for keys, pats, d in blocks:
            w = wt if pats is None else wt[pats]
            # measured on OpenBLAS: narrow D is fast as W^T @ D, wide D as (D^T @ W)^T
            r = w.T @ d if d.shape[1] <= _NARROW else (d.T @ w).T
            for j, key in enumerate(keys):
                for metric, arr in _additive_metrics(
                    r[:, j * ncols : (j + 1) * ncols], n_bins
                ).items():
                    out[key].setdefault(metric, []).append(arr)
        if rank_metrics:
            sub = int(max(1, _ROW_BUDGET // max(n, 1)))
            for start in range(0, wt.shape[1], sub):
                wrows = wt[cl, start : start + sub].T
                for part, lay in zip(partitions, layouts, strict=True):
                    auc, ap = lay.metrics(wrows)
                    for v, name in enumerate(part.values):
                        out[(part.name, name)].setdefault("auc", []).append(auc[:, v])
                        out[(part.name, name)].setdefault("average_precision", []).append(ap[:, v])
    values = {key: {m: np.concatenate(parts) for m, parts in d.items()} for key, d in out.items()}
    return BootstrapReplicates(
        int(n_replicates), n_cl, int(np.unique(cstrata).size), int(seed), values
    )
