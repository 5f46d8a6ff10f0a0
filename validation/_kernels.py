"""Compiled (numba) kernels of the patient-cluster bootstrap (used by ``_bootstrap``).

Random numbers
--------------
Replicate ``r`` has its own xoshiro256** generator (Blackman & Vigna 2018), seeded with
four 64-bit words of ``np.random.SeedSequence(seed).spawn(B)[r]``, so a replicate's
patient multiplicities depend only on the seed and on ``r``: never on the thread that
draws them, on the number of threads or on how replicates are grouped into tiles. Within
a stratum of ``k`` clusters, ``k`` draws uniform on ``0..k-1`` (Lemire's unbiased
multiply-and-reject method on 32-bit halves of the outputs) are counted into
multiplicities: the same distribution as ``np.bincount(rng.integers(0, k, size=k))``.

Statistics
----------
Rows are sorted once by descending score. A *tile* of replicates (lanes) is processed in
one pass over the rows: the tile's multiplicities are stored cluster-major (the weights
of one cluster for all lanes are adjacent, so one row reads them with one cache line),
and every update is a short loop over the lanes, which the compiler vectorises. Lanes
never mix, and each lane performs the same floating-point operations in the same order
whatever the tile size, so results are identical for any tiling and thread count.

* Additive statistics (weighted true/false positives at the locked threshold, squared
  error, per-bin sum of ``score - label`` for the ECE) are accumulated once per row in
  *cells*: combinations of cohort values of several partitions (see ``_bootstrap``),
  and summed into the groups (cohort values) of those partitions after the pass.
* Rank statistics need running sums in score order per group. For every group: the
  positive weight ``P`` and negative weight ``F`` seen so far, ``H``, the sum over
  positive rows of ``2 w F_above`` (plus ``dp * dn`` for each tie block, see below), and
  the average-precision sum ``sum w P / (P + F)`` over positive rows. At the end, twice
  the Mann-Whitney statistic is ``2 A N - H`` (``A``/``N`` the group's positive/negative
  weight; ties count one half), an exact integer in float64 while ``2 A N < 2**53``, and
  AP is the AP sum over ``A``: scikit-learn's step definition, precision at each
  distinct positive score.

Ties: rows with equal scores form a tie block (contiguous after sorting). Rows inside a
block collect the block's positive weight ``dp`` and negative weight ``dn`` per group; at
the block's last row each touched group adds ``dp (2 F + dn)`` to ``H`` (``F`` before the
block) and, when ``dp > 0``, ``dp P' / (P' + F')`` to the AP sum (``P'``/``F'`` after it).

Memory: a tile's multiplicities take one byte per patient and replicate (a tile is
redone with 32-bit weights in the practically impossible case that a patient is drawn
more than 255 times); the rows' weights are prefetched a few rows ahead, as the rows
visit patients in random order.

Compilation is lazy (first call, a few seconds) and cached on disk (``cache=True``):
in ``__pycache__`` next to this module, or numba's user-wide cache directory when that
is not writable, or ``NUMBA_CACHE_DIR``; without any usable cache directory the kernels
are compiled once per process.

References
----------
D. Blackman, S. Vigna, "Scrambled linear pseudorandom number generators", ACM
Transactions on Mathematical Software 47(4), 2021 (xoshiro256**).
D. Lemire, "Fast random integer generation in an interval", ACM Transactions on
Modeling and Computer Simulation 29(1), 2019.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["N_STATS", "draw_weights", "tile_statistics"]

# output columns of ``tile_statistics`` per replicate and group; then ECE bins
POS, NEG, TP, FP, TWICE_U, AP_SUM, SQ = range(7)
N_STATS = 7

# per-cell accumulators (lane-minor): squared error, TP, FP, positives, negatives, ECE bins
_C_SQ, _C_TP, _C_FP, _C_POS, _C_NEG, _C_ECE = range(6)
# per-group rank accumulators
_G_POS, _G_NEG, _G_H, _G_AP, _G_DP, _G_DN = range(6)
_N_G = 6

# flags per row: bit 0 label, bit 1 prediction, bits 2-3 tie state
TIE_NONE, TIE_INSIDE, TIE_LAST = 0, 1, 2

_U = np.uint64  # unsigned offsets: no negative-index wraparound, so loops vectorise
_M32 = np.uint64(0xFFFFFFFF)
_TRANSPOSE_BLOCK = 256  # clusters per block of the lane-major -> cluster-major copy
_PREFETCH = 24  # rows ahead whose weights are prefetched


@intrinsic
def _prefetch(typingctx, arr, idx):
    """Hint the CPU to load ``arr[idx]`` into cache (``llvm.prefetch``: read, high
    locality, data cache); no effect on results."""
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


def _jit(**kwargs):
    """``numba.njit`` with an on-disk cache when a cache directory can be used."""

    def wrap(fn):
        try:
            return njit(cache=True, **kwargs)(fn)
        except RuntimeError:  # no usable cache location: compile once per process
            return njit(cache=False, **kwargs)(fn)

    return wrap


@_jit(inline="always")
def _rotl(x, k):
    return (x << _U(k)) | (x >> _U(64 - k))


@_jit(inline="always")
def _next(s):
    """xoshiro256**: next 64-bit output; the state ``s`` (4 x uint64) is updated."""
    result = _rotl(s[1] * _U(5), 7) * _U(9)
    t = s[1] << _U(17)
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = _rotl(s[3], 45)
    return result


@_jit(nogil=True)
def _draw(w, starts, sizes, state, cap):
    """Patient multiplicities of one replicate into ``w`` (zeroed here).

    Stratum ``j`` holds clusters ``starts[j] .. starts[j] + sizes[j] - 1``; each gets
    ``sizes[j]`` draws with replacement. Each 64-bit output gives two 32-bit numbers
    ``x`` (upper half first); Lemire (2019): with ``m = x * k``, ``m >> 32`` is uniform
    on ``0..k-1`` once the ``x`` with ``(m mod 2**32) < 2**32 mod k`` are rejected.
    Returns False (``w`` incomplete) as soon as a multiplicity would exceed ``cap``.
    """
    w[:] = 0
    spare = _U(0)
    have_spare = False
    for j in range(starts.size):
        k = _U(sizes[j])
        base = starts[j]
        threshold = (_U(4294967296) - k) % k
        for _ in range(sizes[j]):
            while True:
                if have_spare:
                    x = spare
                    have_spare = False
                else:
                    v = _next(state)
                    x = v >> _U(32)
                    spare = v & _M32
                    have_spare = True
                m = x * k
                if (m & _M32) >= threshold:
                    break
            c = base + np.int64(m >> _U(32))
            if w[c] >= cap:
                return False
            w[c] += 1
    return True


@_jit(nogil=True)
def draw_weights(states, starts, sizes, order):
    """Multiplicities of the replicates with generator states ``states`` (b, 4).

    Clusters are numbered in stratum order (``starts``/``sizes``); ``order[i]`` is the
    caller's number of the i-th. Returns float64 (b, n_clusters) in the caller's order.
    """
    n_clusters = order.size
    out = np.empty((states.shape[0], n_clusters), dtype=np.float64)
    w = np.empty(n_clusters, dtype=np.int64)
    for r in range(states.shape[0]):
        state = states[r].copy()
        _draw(w, starts, sizes, state, np.iinfo(np.int64).max)
        for i in range(n_clusters):
            out[r, order[i]] = w[i]
    return out


@_jit(nogil=True)
def _tile_weights(proto, cap, states, starts, sizes, n_clusters):
    """Cluster-major weights of a tile, dtype of ``proto``: ``tile[c * L + lane]``.

    ``ok`` is False when a multiplicity exceeds ``cap`` (the caller retries with a wider
    dtype).
    """
    lanes = states.shape[0]
    tile = np.empty(n_clusters * lanes, dtype=proto.dtype)
    rows = np.empty((lanes, n_clusters), dtype=proto.dtype)
    for j in range(lanes):
        state = states[j].copy()
        if not _draw(rows[j], starts, sizes, state, cap):
            return tile, False
    for c0 in range(0, n_clusters, _TRANSPOSE_BLOCK):
        c1 = min(c0 + _TRANSPOSE_BLOCK, n_clusters)
        for j in range(lanes):
            for c in range(c0, c1):
                tile[c * lanes + j] = rows[j, c]
    return tile, True


@_jit(nogil=True)
def tile_statistics(
    proto,
    cap,
    states,
    starts,
    sizes,
    n_clusters,
    cl,
    flags,
    err,
    bins,
    cells,
    n_cells,
    cell_groups,
    gid,
    n_groups,
    n_bins,
    rank,
):
    """Statistics of one tile of replicates, float64 (lanes, n_groups, N_STATS + n_bins).

    Parameters
    ----------
    proto, cap
        Empty array whose dtype stores the multiplicities, and the largest value it holds.
    states : uint64 (lanes, 4)
        Generator state of each replicate of the tile.
    starts, sizes : int64 (n_strata,)
        Strata as runs of clusters.
    n_clusters : int
    cl, flags, err, bins : (n,)
        Per row, in descending score order: cluster, flags (label, prediction, tie
        state), score - label, ECE bin.
    cells : int32 (n, C)
        Per row, its cell in each of C cell sets (global cell numbers).
    n_cells : int
    cell_groups : int32 (n_cells, K')
        Groups each cell belongs to, padded with -1.
    gid : int32 (n, K)
        Per row, its group in each of K partitions (used when ``rank``).
    n_groups, n_bins : int
    rank : bool
        Also accumulate the AUC / average-precision statistics.

    Returns
    -------
    out : float64 (lanes, n_groups, N_STATS + n_bins)
        Columns POS, NEG, TP, FP, TWICE_U, AP_SUM, SQ, then the ECE bins (TWICE_U and
        AP_SUM only with ``rank``).
    ok : bool
        False (and ``out`` unfilled) when a multiplicity exceeded ``cap``.
    """
    lanes = states.shape[0]
    n = cl.size
    n_sets = cells.shape[1]
    kp = gid.shape[1] if rank else 0
    nc = _C_ECE + n_bins
    out = np.zeros((lanes, n_groups, N_STATS + n_bins), dtype=np.float64)
    tile, ok = _tile_weights(proto, cap, states, starts, sizes, n_clusters)
    if not ok:
        return out, False
    ul = _U(lanes)
    unc = _U(nc)
    cacc = np.zeros(n_cells * nc * lanes, dtype=np.float64)
    gacc = np.zeros(n_groups * _N_G * lanes, dtype=np.float64)
    touched = np.empty(n_groups, dtype=np.int64)
    is_touched = np.zeros(n_groups, dtype=np.bool_)
    n_touched = 0
    for i in range(n):
        if i + _PREFETCH < n:  # the weights of a row a few rows ahead (random access)
            _prefetch(tile, _U(cl[i + _PREFETCH]) * ul)
        w0 = _U(cl[i]) * ul
        f = flags[i]
        yi = f & 1
        tie = f >> 2
        e = err[i]
        e2 = e * e
        for q in range(n_sets):
            a0 = _U(cells[i, q]) * unc * ul
            a_bin = a0 + _U(_C_ECE + bins[i]) * ul
            for r in range(lanes):
                u = _U(r)
                wr = np.float64(tile[w0 + u])
                cacc[a0 + u] += wr * e2  # _C_SQ == 0
                cacc[a_bin + u] += wr * e
            if (f >> 1) & 1:
                a1 = a0 + (_U(_C_TP) if yi else _U(_C_FP)) * ul
                for r in range(lanes):
                    u = _U(r)
                    cacc[a1 + u] += np.float64(tile[w0 + u])
            if not rank:
                a1 = a0 + (_U(_C_POS) if yi else _U(_C_NEG)) * ul
                for r in range(lanes):
                    u = _U(r)
                    cacc[a1 + u] += np.float64(tile[w0 + u])
        for k in range(kp):
            g = gid[i, k]
            g0 = _U(g) * _U(_N_G) * ul  # _G_POS == 0
            if tie == TIE_NONE:
                if yi:
                    g_neg = g0 + _U(_G_NEG) * ul
                    g_h = g0 + _U(_G_H) * ul
                    g_ap = g0 + _U(_G_AP) * ul
                    for r in range(lanes):
                        u = _U(r)
                        wr = np.float64(tile[w0 + u])
                        fneg = gacc[g_neg + u]
                        p = gacc[g0 + u] + wr
                        gacc[g0 + u] = p
                        gacc[g_h + u] += 2.0 * wr * fneg
                        gacc[g_ap + u] += wr * (p / max(p + fneg, 1.0))
                else:
                    g_neg = g0 + _U(_G_NEG) * ul
                    for r in range(lanes):
                        u = _U(r)
                        gacc[g_neg + u] += np.float64(tile[w0 + u])
            else:
                if not is_touched[g]:
                    is_touched[g] = True
                    touched[n_touched] = g
                    n_touched += 1
                g1 = g0 + (_U(_G_DP) if yi else _U(_G_DN)) * ul
                for r in range(lanes):
                    u = _U(r)
                    gacc[g1 + u] += np.float64(tile[w0 + u])
        if tie == TIE_LAST and rank:
            for j in range(n_touched):
                g = touched[j]
                g0 = _U(g) * _U(_N_G) * ul
                g_neg = g0 + _U(_G_NEG) * ul
                g_h = g0 + _U(_G_H) * ul
                g_ap = g0 + _U(_G_AP) * ul
                g_dp = g0 + _U(_G_DP) * ul
                g_dn = g0 + _U(_G_DN) * ul
                for r in range(lanes):
                    u = _U(r)
                    dp = gacc[g_dp + u]
                    dn = gacc[g_dn + u]
                    fneg = gacc[g_neg + u]
                    gacc[g_h + u] += dp * (2.0 * fneg + dn)
                    p = gacc[g0 + u] + dp
                    fneg += dn
                    gacc[g0 + u] = p
                    gacc[g_neg + u] = fneg
                    if dp > 0.0:
                        gacc[g_ap + u] += dp * (p / (p + fneg))
                    gacc[g_dp + u] = 0.0
                    gacc[g_dn + u] = 0.0
                is_touched[g] = False
            n_touched = 0
    for j in range(lanes):
        for c in range(n_cells):
            a = c * nc * lanes + j
            for k in range(cell_groups.shape[1]):
                g = cell_groups[c, k]
                if g < 0:
                    continue
                out[j, g, TP] += cacc[a + _C_TP * lanes]
                out[j, g, FP] += cacc[a + _C_FP * lanes]
                out[j, g, SQ] += cacc[a + _C_SQ * lanes]
                if not rank:
                    out[j, g, POS] += cacc[a + _C_POS * lanes]
                    out[j, g, NEG] += cacc[a + _C_NEG * lanes]
                for q in range(n_bins):
                    out[j, g, N_STATS + q] += cacc[a + (_C_ECE + q) * lanes]
        if rank:
            for g in range(n_groups):
                a = g * _N_G * lanes + j
                p = gacc[a + _G_POS * lanes]
                fneg = gacc[a + _G_NEG * lanes]
                out[j, g, POS] = p
                out[j, g, NEG] = fneg
                out[j, g, TWICE_U] = 2.0 * p * fneg - gacc[a + _G_H * lanes]
                out[j, g, AP_SUM] = gacc[a + _G_AP * lanes]
    return out, True
