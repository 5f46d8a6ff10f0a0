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
* AUC and average precision: rows are sorted once per cohort value into "levels" (one
  per distinct positive score) and counted per level and patient in sparse matrices; a
  block of replicates is two sparse products with the integer weights, cumulative sums
  over levels and dot products, exact in integers up to the final divisions (no
  re-sorting, no per-row work per replicate; see ``_RankLayout``).

Replicates are generated in fixed-size blocks, each from its own child of
``np.random.SeedSequence(seed)``, so the result depends only on the data and the seed.
The next block is drawn in a background thread while the current one is used, and the
rank kernel runs on one thread per available CPU (scipy's sparse products and NumPy's
large array operations release the GIL); results do not depend on the threading.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import sparse

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
_RANK_BLOCK = 16  # replicates per sparse product in the rank kernel
_LEVEL_CHUNK = 1 << 12  # levels per chunk of the rank kernel (working set in cache)
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


def _n_threads() -> int:
    """CPUs this process may use (threads of the rank-metric kernel)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


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
        for start, k in zip(first.tolist(), sizes.tolist(), strict=True):
            # draw k clusters with replacement for each replicate and count them in one
            # bincount, replicate-major (each replicate's counts stay in cache), then
            # store them cluster-major
            draws = rng.integers(0, k, size=(bb, k), dtype=np.int64)
            draws += np.arange(0, bb * k, k, dtype=np.int64)[:, None]
            wt[start : start + k] = np.bincount(draws.ravel(), minlength=k * bb).reshape(bb, k).T
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
    """Sparse layout of the AUC / AP kernel for one partition (see module doc).

    Rows of each cohort value are placed in "levels": the distinct positive scores of
    that value in descending order, ``u_0 > u_1 > ... > u_{k-1}``, plus one level ``k``
    for scores below all of them. A positive at ``u_a`` goes to level ``a``; a negative
    with ``u_a <= s < u_{a-1}`` goes to level ``a`` too (and when ``s == u_a`` it is also
    a tie of level ``a``). Two sparse (levels x clusters) matrices count the positive and
    the negative rows of each cluster per level, so that their products with a block of
    integer replicate weights (clusters x b) give the weighted counts ``p_a`` and
    ``n_a`` of every level, exactly, and cumulative sums give ``TP(a)`` and ``FP(a)``,
    the positive and negative weight with score ``>= u_a``. Per value and replicate, with
    ``A`` the positive and ``N`` the negative weight:

    * ``2 A N AUC = 2 A N - 2 sum_a p_a FP(a) + sum_a p_a tie_a``, an integer (``tie_a``
      is the negative weight tied at ``u_a``), so the final division is the only
      rounding and the result equals the Mann-Whitney statistic of the weighted rows;
    * ``A AP = sum_a p_a TP(a) / (TP(a) + FP(a))``, the precision at each distinct
      positive score, as in ``sklearn.metrics.average_precision_score``.

    Levels are processed in chunks of ``_LEVEL_CHUNK`` that do not cross values (so that
    the working set stays in cache), carrying the running sums from chunk to chunk.
    """

    def __init__(
        self,
        y: np.ndarray,
        s: np.ndarray,
        codes: np.ndarray,
        n_values: int,
        clusters: np.ndarray,
        n_clusters: int,
        dtype: type[np.signedinteger],
    ) -> None:
        n = y.size
        level = np.empty(n, dtype=np.int64)  # global level of each row
        offsets = np.zeros(n_values + 1, dtype=np.int64)
        empty = np.zeros(0, dtype=np.int64)
        tie_pos_rows, tie_neg_rows, tie_pos_lev, tie_neg_lev = [empty], [empty], [empty], [empty]
        for v in range(n_values):
            rows = np.flatnonzero(codes == v)
            yv, sv = y[rows], s[rows]
            u = np.unique(sv[yv == 1])[::-1]  # distinct positive scores, descending
            k = u.size
            above = np.searchsorted(-u, -sv, side="left")  # positive levels > s
            level[rows] = offsets[v] + above
            offsets[v + 1] = offsets[v] + k + 1
            inside = above < k
            tied = np.zeros(rows.size, dtype=bool)
            tied[inside] = (u[above[inside]] == sv[inside]) & (yv[inside] == 0)
            tie_levels = np.unique(above[tied])
            pos_at = (yv == 1) & np.isin(above, tie_levels)
            tie_neg_rows.append(rows[tied])
            tie_neg_lev.append(offsets[v] + above[tied])
            tie_pos_rows.append(rows[pos_at])
            tie_pos_lev.append(offsets[v] + above[pos_at])
        self.offsets = offsets
        self.n_values = n_values
        shape = (int(offsets[-1]), n_clusters)
        isp = y == 1
        positives = sparse.csr_matrix(
            (np.ones(int(isp.sum()), dtype), (level[isp], clusters[isp])), shape=shape
        )
        negatives = sparse.csr_matrix(
            (np.ones(n - int(isp.sum()), dtype), (level[~isp], clusters[~isp])), shape=shape
        )
        positives.sum_duplicates()
        negatives.sum_duplicates()
        # chunks of levels that do not cross values: (positives, negatives, value, first)
        self.chunks = []
        for v in range(n_values):
            for lo in range(int(offsets[v]), int(offsets[v + 1]), _LEVEL_CHUNK):
                hi = min(lo + _LEVEL_CHUNK, int(offsets[v + 1]))
                self.chunks.append((positives[lo:hi], negatives[lo:hi], v, lo == offsets[v]))
        self.dtype = dtype
        # ties: weighted positives and tied negatives of each tie level
        t_neg = np.concatenate(tie_neg_lev)
        self.tie_levels, t_neg_idx = np.unique(t_neg, return_inverse=True)
        t_pos = np.searchsorted(self.tie_levels, np.concatenate(tie_pos_lev))
        nt = self.tie_levels.size
        self.tie_pos = sparse.csr_matrix(
            (np.ones(t_pos.size, dtype), (t_pos, clusters[np.concatenate(tie_pos_rows)])),
            shape=(nt, n_clusters),
        )
        self.tie_neg = sparse.csr_matrix(
            (np.ones(t_neg.size, dtype), (t_neg_idx, clusters[np.concatenate(tie_neg_rows)])),
            shape=(nt, n_clusters),
        )
        tie_value = np.searchsorted(offsets, self.tie_levels, side="right") - 1
        self.tie_values, self.tie_starts = np.unique(tie_value, return_index=True)

    def metrics(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """AUC and AP from integer cluster weights ``w`` (n_clusters, b): arrays (b, n_values).

        ``w`` has the layout's dtype; every count below is an exact integer (sums of
        products are accumulated in float64, exact below 2**53).
        """
        nv, b, dt = self.n_values, w.shape[1], self.dtype
        p_fp = np.zeros((nv, b))  # sum_a p_a FP(a)
        ap_sum = np.zeros((nv, b))  # sum_a p_a TP(a) / (TP(a) + FP(a))
        a = np.zeros((nv, b), dtype=dt)  # running TP, at the end A
        f = np.zeros((nv, b), dtype=dt)  # running FP, at the end N
        for pmat, nmat, v, first in self.chunks:
            pos = pmat @ w  # (levels, b) positive weight per level
            tp = np.cumsum(pos, axis=0, dtype=dt)
            fp = np.cumsum(nmat @ w, axis=0, dtype=dt)
            if not first:
                tp += a[v]
                fp += f[v]
            a[v], f[v] = tp[-1], fp[-1]
            p_fp[v] += np.einsum("ij,ij->j", pos, fp, dtype=np.float64)
            fp += tp
            np.maximum(fp, 1, out=fp)  # TP + FP = 0 only where p_a = 0 (leading levels)
            ap_sum[v] += np.einsum("ij,ij->j", pos, np.divide(tp, fp))
        nn = f.astype(np.float64)
        a = a.astype(np.float64)
        twice = 2 * a * nn - 2 * p_fp
        if self.tie_levels.size:
            pt = (self.tie_pos @ w).astype(np.float64) * (self.tie_neg @ w)
            twice[self.tie_values] += np.add.reduceat(pt, self.tie_starts, axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = (twice / 2) / (a * nn)
            ap = ap_sum / a
        auc[~np.isfinite(auc)] = np.nan
        ap[~np.isfinite(ap)] = np.nan
        return auc.T, ap.T


def _rank_job(job: tuple[Partition, _RankLayout, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return job[1].metrics(job[2])


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
    if rank_metrics:
        # exact integer weights: int32 unless a replicate's total weight could exceed it
        per_cluster = np.bincount(cl, minlength=n_cl)
        bound = int(per_cluster.max(initial=0)) * n_cl
        wdtype = np.int32 if bound < np.iinfo(np.int32).max else np.int64
        layouts = [
            _RankLayout(y, s, part.codes.astype(np.int64), len(part.values), cl, n_cl, wdtype)
            for part in partitions
        ]
    out: dict[tuple[str, str], dict[str, list[np.ndarray]]] = {
        (part.name, v): {} for part in partitions for v in part.values
    }
    n_threads = _n_threads()
    with ThreadPoolExecutor(n_threads + 1) as pool:
        # the next block of weights is drawn in the background while this one is used;
        # rank-metric work is spread over threads (scipy's sparse products and NumPy's
        # large array operations release the GIL). Results do not depend on threading.
        weights = _weight_blocks(cstrata, int(n_replicates), seed)
        pending = pool.submit(next, weights, None)
        while (wt := pending.result()) is not None:
            pending = pool.submit(next, weights, None)
            for keys, pats, d in blocks:
                w = wt if pats is None else wt[pats]
                # measured on OpenBLAS: narrow D is fast as W^T @ D, wide D as (D^T @ W)^T
                r = w.T @ d if d.shape[1] <= _NARROW else (d.T @ w).T
                for j, key in enumerate(keys):
                    for metric, arr in _additive_metrics(
                        r[:, j * ncols : (j + 1) * ncols], n_bins
                    ).items():
                        out[key].setdefault(metric, []).append(arr)
            if not rank_metrics:
                continue
            subs = [
                wt[:, start : start + _RANK_BLOCK].astype(wdtype)
                for start in range(0, wt.shape[1], _RANK_BLOCK)
            ]
            jobs = [
                (part, lay, w) for w in subs for part, lay in zip(partitions, layouts, strict=True)
            ]
            done = pool.map(_rank_job, jobs) if n_threads > 1 else map(_rank_job, jobs)
            for (part, _, _), (auc, ap) in zip(jobs, done, strict=True):
                for v, name in enumerate(part.values):
                    out[(part.name, name)].setdefault("auc", []).append(auc[:, v])
                    out[(part.name, name)].setdefault("average_precision", []).append(ap[:, v])
    values = {key: {m: np.concatenate(parts) for m, parts in d.items()} for key, d in out.items()}
    return BootstrapReplicates(
        int(n_replicates), n_cl, int(np.unique(cstrata).size), int(seed), values
    )
