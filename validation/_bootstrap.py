"""(Cluster-)bootstrap of every metric for the overall population and all cohorts.

Design
------
Each replicate resamples *patients* (clusters) with replacement, within each stratum
(site) when strata are given, so that a patient's images stay together. A replicate is
a vector of patient multiplicities ``w``; every metric is the metric of the rows weighted
by their patient's multiplicity (equal to scikit-learn with ``sample_weight=w[patient]``).

Replicate ``r`` draws from its own generator seeded by ``SeedSequence(seed)``'s
``r``-th child (see ``_kernels``), so the replicates depend only on the data and the
seed: not on the number of threads, nor on how replicates are grouped.
:func:`replicate_weights` yields exactly the multiplicities that
:func:`cluster_bootstrap` uses, for callers that compute further statistics.

The statistics come from compiled kernels (``_kernels``, numba): rows are sorted once
by descending score, and each *tile* of ``_TILE`` replicates is one pass over the rows
that accumulates, in exact integer counts (float64 below 2**53) and float64 sums, the
confusion counts at the locked threshold, squared error and per-bin calibration error
(per *cell*, see below) and the running sums of the AUC (Mann-Whitney with ties counted
one half) and average precision (scikit-learn's definition) for every group. Tiles are
handed out to a pool of ``numba.get_num_threads()`` threads (at most the CPUs this
process may use; the kernels release the GIL), a free thread taking the next tile. No dense
replicates-by-patients matrix is formed: a tile's multiplicities take one byte per
patient and replicate.

Cells: additive statistics are not accumulated per partition but per combination of
values of several partitions (e.g. site x scanner x sex x age band: 400 cells), and
summed into the groups of each partition after the pass; partitions are combined while
the number of combinations stays small (``_CELL_BUDGET``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
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
_WEIGHT_BUDGET = 1 << 25  # floats per block yielded by replicate_weights (256 MB)
_TILE = 32  # replicates per pass over the rows (lanes of the kernel)
_CELL_BUDGET = 1 << 19  # floats of per-cell accumulators of one tile (4 MB)
_NARROW = np.uint8  # multiplicities of a tile ...
_NARROW_MAX = 255  # ... up to this value; a tile with a larger one is redone with _WIDE
_WIDE = np.uint32


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
    """Threads for the tiles: numba's thread count, at most the CPUs this process may use."""
    import numba

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(numba.get_num_threads(), cpus))


def _block_size(n_clusters: int) -> int:
    return int(max(1, min(64, _WEIGHT_BUDGET // max(n_clusters, 1))))


def _strata_runs(strata: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clusters in stratum order (stable) and the runs (start, size) of each stratum."""
    order = np.argsort(strata, kind="stable")
    _, starts, sizes = np.unique(strata[order], return_index=True, return_counts=True)
    if sizes.size and int(sizes.max()) >= 1 << 32:
        raise param_error(
            "clusters", "cluster_bootstrap", "at most 2**32 - 1 clusters per stratum", sizes.max()
        )
    return order.astype(np.int64), starts.astype(np.int64), sizes.astype(np.int64)


def _states(seed: int, first: int, count: int) -> np.ndarray:
    """Generator states (count, 4) of replicates ``first .. first + count - 1``."""
    states = np.empty((count, 4), dtype=np.uint64)
    for i in range(count):
        ss = np.random.SeedSequence(seed, spawn_key=(first + i,))
        states[i] = ss.generate_state(4, dtype=np.uint64)
    states[~states.any(axis=1), 0] = 1  # xoshiro's one forbidden state (p = 2**-256)
    return states


def replicate_weights(
    cluster_strata: np.ndarray, n_replicates: int, seed: int
) -> Iterator[np.ndarray]:
    """Yield blocks of replicate weights, arrays of shape (b, n_clusters), float64.

    Within each stratum, ``n_s`` clusters are drawn with replacement from the ``n_s``
    clusters of that stratum; the weight of a cluster is how often it was drawn. These
    are the replicates of :func:`cluster_bootstrap` with the same strata and seed.

    Raises
    ------
    MedlensError
        When ``n_replicates`` is not an int >= 1 (raised at the call, not at iteration).
    """
    if not isinstance(n_replicates, (int, np.integer)) or n_replicates < 1:
        raise param_error("n_replicates", "replicate_weights", "an int >= 1", n_replicates)
    order, starts, sizes = _strata_runs(np.asarray(cluster_strata))
    return _weight_blocks(order, starts, sizes, int(n_replicates), seed)


def _weight_blocks(
    order: np.ndarray, starts: np.ndarray, sizes: np.ndarray, n_replicates: int, seed: int
) -> Iterator[np.ndarray]:
    from . import _kernels  # numba: imported when first needed

    b = _block_size(order.size)
    for first in range(0, n_replicates, b):
        count = min(b, n_replicates - first)
        yield _kernels.draw_weights(_states(seed, first, count), starts, sizes, order)


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


def _cells(
    gid: np.ndarray, offsets: np.ndarray, sizes: Sequence[int], limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cells of the rows: partitions are combined greedily (in order) while the product
    of their numbers of values stays <= ``limit``; each combination present is a cell.

    Returns the cell of each row in each set of partitions (n, C) and the groups of each
    cell (n_cells, K') padded with -1, both int32.
    """
    sets: list[list[int]] = []
    product = math.inf
    for k, size in enumerate(sizes):
        if product * size <= limit:
            sets[-1].append(k)
            product *= size
        else:
            sets.append([k])
            product = size
    width = max((len(s) for s in sets), default=0)
    cells = np.empty((gid.shape[0], len(sets)), dtype=np.int32)
    groups = []
    offset = 0
    for q, ks in enumerate(sets):
        code = np.zeros(gid.shape[0], dtype=np.int64)
        for k in ks:  # mixed radix over the values of the set's partitions
            code = code * sizes[k] + (gid[:, k] - offsets[k])
        _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
        cells[:, q] = offset + inverse.ravel()
        g = np.full((first.size, width), -1, dtype=np.int32)
        g[:, : len(ks)] = gid[first][:, ks]
        groups.append(g)
        offset += first.size
    cell_groups = np.concatenate(groups) if groups else np.zeros((0, width), dtype=np.int32)
    return cells, cell_groups


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
        Also bootstrap AUC and average precision.

    Returns
    -------
    BootstrapReplicates
        Per (partition, value): the additive metrics (sensitivity ... ece) and, with
        ``rank_metrics``, ``auc`` and ``average_precision``; NaN where a replicate leaves
        a metric undefined (e.g. no positive weight).
    """
    if not isinstance(n_replicates, (int, np.integer)) or n_replicates < 1:
        raise param_error("n_replicates", "cluster_bootstrap", "an int >= 1", n_replicates)
    from . import _kernels  # numba: imported when first needed

    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.int64)
    n = y.size
    cl = np.arange(n) if clusters is None else np.asarray(clusters, dtype=np.int64)
    n_cl = int(cl.max()) + 1 if n else 0
    cstrata = np.zeros(n_cl, dtype=np.int64)
    if strata is not None:
        cstrata[cl] = np.asarray(strata, dtype=np.int64)
    # clusters renumbered in stratum order (strata are runs), as in replicate_weights
    order, starts, sizes = _strata_runs(cstrata)
    relabel = np.empty(n_cl, dtype=np.int64)
    relabel[order] = np.arange(n_cl)
    # rows by descending score; tie blocks of equal scores (see _kernels)
    rows = np.argsort(-s, kind="stable")
    ss = s[rows]
    same_next = np.zeros(n, dtype=bool)
    same_next[:-1] = ss[1:] == ss[:-1]
    last = np.zeros(n, dtype=bool)
    last[1:] = same_next[:-1] & ~same_next[1:]
    tie = np.where(same_next, _kernels.TIE_INSIDE, np.where(last, _kernels.TIE_LAST, 0))
    yr, pr = y[rows].astype(np.uint8), p[rows].astype(np.uint8)
    flags = (yr | (pr << 1) | (tie.astype(np.uint8) << 2)).astype(np.uint8)
    err = ss - y[rows]
    bins = np.minimum((ss * n_bins).astype(np.int64), n_bins - 1).astype(np.int32)
    cl_rows = relabel[cl[rows]].astype(np.int32 if n_cl < 1 << 31 else np.int64)
    # groups: one per value of each partition
    n_values = [len(part.values) for part in partitions]
    offsets = np.concatenate([[0], np.cumsum(n_values)]).astype(np.int64)
    gid = np.empty((n, len(partitions)), dtype=np.int32)
    for k, part in enumerate(partitions):
        gid[:, k] = np.asarray(part.codes, dtype=np.int64)[rows] + offsets[k]
    n_groups = int(offsets[-1])
    limit = max(1, _CELL_BUDGET // ((5 + n_bins) * _TILE))
    cells, cell_groups = _cells(gid, offsets, n_values, limit)
    data = (
        starts,
        sizes,
        n_cl,
        cl_rows,
        flags,
        err,
        bins,
        cells,
        int(cell_groups.shape[0]),
        cell_groups,
        gid,
        n_groups,
        int(n_bins),
        bool(rank_metrics),
    )
    states = _states(seed, 0, int(n_replicates))

    def tile(first: int) -> np.ndarray:
        st = states[first : first + _TILE]
        out, ok = _kernels.tile_statistics(np.empty(0, _NARROW), _NARROW_MAX, st, *data)
        if not ok:  # a patient drawn more than 255 times: same kernel, wider weights
            out, ok = _kernels.tile_statistics(np.empty(0, _WIDE), np.iinfo(_WIDE).max, st, *data)
        return out

    firsts = range(0, int(n_replicates), _TILE)
    threads = min(_n_threads(), len(firsts))
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(tile, firsts))
    else:
        parts = [tile(first) for first in firsts]
    st = np.concatenate(parts)  # (B, n_groups, N_STATS + n_bins)
    pos, neg, tp, fp = (st[:, :, c] for c in (_kernels.POS, _kernels.NEG, _kernels.TP, _kernels.FP))
    additive = np.concatenate(
        [
            np.stack([tp, fp, neg - fp, pos - tp, st[:, :, _kernels.SQ]], axis=2),
            st[:, :, _kernels.N_STATS :],
        ],
        axis=2,
    )
    values: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for k, part in enumerate(partitions):
        for v, name in enumerate(part.values):
            g = int(offsets[k]) + v
            metrics = _additive_metrics(additive[:, g, :], int(n_bins))
            if rank_metrics:
                metrics["auc"] = _ratio(st[:, g, _kernels.TWICE_U], 2 * pos[:, g] * neg[:, g])
                metrics["average_precision"] = _ratio(st[:, g, _kernels.AP_SUM], pos[:, g])
            values[(part.name, name)] = metrics
    return BootstrapReplicates(
        int(n_replicates), n_cl, int(np.unique(cstrata).size), int(seed), values
    )
