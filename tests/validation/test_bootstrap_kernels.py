"""The compiled kernels of the cluster bootstrap: generator, multiplicities, ties, edge cases."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    roc_auc_score,
)

import medlens.validation._bootstrap as bootstrap_module
from medlens.validation import Partition, cluster_bootstrap, replicate_weights
from medlens.validation._kernels import _next

M64 = (1 << 64) - 1


def _xoshiro_reference(state, count):
    """xoshiro256** from the authors' C reference (prng.di.unimi.it), in Python ints."""
    s = [int(x) for x in state]

    def rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & M64

    out = []
    for _ in range(count):
        out.append(rotl((s[1] * 5) & M64, 7) * 9 & M64)
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
    return out


@pytest.mark.parametrize(
    "state", [[1, 2, 3, 4], [0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, M64]]
)
def test_generator_matches_reference(state):
    st = np.array(state, dtype=np.uint64)
    got = [int(_next(st)) for _ in range(200)]
    assert got == _xoshiro_reference(state, 200)
    assert got[:3] == [11520, 0, 1509978240] or state[0] != 1  # published first outputs


def test_multiplicities_follow_the_multinomial():
    """Within a stratum of k clusters, a cluster's multiplicity is Binomial(k, 1/k), every
    cluster is drawn equally often on average, and each replicate's total is k."""
    k = 997  # not a power of two: Lemire's rejection step matters
    strata = np.zeros(k, dtype=int)
    w = np.concatenate(list(replicate_weights(strata, 400, seed=11)))
    assert w.shape == (400, k)
    np.testing.assert_array_equal(w.sum(axis=1), k)
    counts = np.bincount(w.ravel().astype(int), minlength=6)[:6]
    expected = stats.binom.pmf(np.arange(6), k, 1 / k) * w.size
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < stats.chi2.ppf(0.999, df=5)
    per_cluster = w.mean(axis=0)  # mean 1, sd sqrt((1 - 1/k) / 400) ~ 0.05
    assert abs(per_cluster.mean() - 1) < 1e-12
    assert np.abs(per_cluster - 1).max() < 6 * np.sqrt((1 - 1 / k) / 400)


def test_stratum_with_one_patient_is_always_drawn_once():
    rng = np.random.default_rng(4)
    n = 120
    cl = np.repeat(np.arange(40), 3)
    site_of = np.r_[np.zeros(39, int), 1]  # patient 39 alone in site 1
    y = rng.integers(0, 2, n)
    s = np.round(rng.random(n), 1)
    p = (s >= 0.5).astype(int)
    weights = np.concatenate(list(replicate_weights(site_of, 30, seed=2)))
    np.testing.assert_array_equal(weights[:, 39], 1)
    parts = [Partition("site", site_of[cl], ("big", "single"))]
    r = cluster_bootstrap(y, s, p, parts, clusters=cl, strata=site_of[cl], n_replicates=30, seed=2)
    single = r.values[("site", "single")]
    m = cl == 39
    for metric in ("auc", "average_precision", "brier", "sensitivity"):
        assert np.unique(single[metric][~np.isnan(single[metric])]).size <= 1
    if 0 < y[m].sum() < 3:
        assert single["auc"][0] == pytest.approx(roc_auc_score(y[m], s[m]), abs=1e-15)
    big = r.values[("site", "big")]
    for i in range(30):
        ww = weights[i][cl][~m]
        assert big["auc"][i] == pytest.approx(
            roc_auc_score(y[~m], s[~m], sample_weight=ww), abs=1e-12
        )


def test_one_class_replicate_gives_nan():
    """A replicate that draws no positive patient of a group has NaN AUC, AP and
    sensitivity for that group (and defined values where both classes are present)."""
    # stratum 0: patient 0 (the only positives) and patient 1 (negatives)
    cl = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    y = np.array([1, 1, 0, 0, 1, 0, 0, 1])
    s = np.array([0.9, 0.4, 0.3, 0.8, 0.6, 0.6, 0.2, 0.7])
    p = (s >= 0.5).astype(int)
    site_of = np.array([0, 0, 1, 1])
    group = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    parts = [Partition("g", group, ("a", "b"))]
    r = cluster_bootstrap(y, s, p, parts, clusters=cl, strata=site_of[cl], n_replicates=64, seed=0)
    w = np.concatenate(list(replicate_weights(site_of, 64, seed=0)))
    no_pos = w[:, 0] == 0
    assert 0 < no_pos.sum() < 64  # both cases occur with this seed
    a = r.values[("g", "a")]
    for metric in ("auc", "average_precision", "sensitivity"):
        assert np.all(np.isnan(a[metric][no_pos]))
        assert not np.any(np.isnan(a[metric][~no_pos & (w[:, 1] > 0)]))
    assert np.all(np.isnan(a["specificity"][w[:, 1] == 0]))
    for i in np.flatnonzero(~no_pos & (w[:, 1] > 0)):
        ww = w[i][cl][group == 0]
        assert a["auc"][i] == pytest.approx(
            roc_auc_score(y[group == 0], s[group == 0], sample_weight=ww), abs=1e-15
        )


def test_all_scores_tied():
    """One tie block: AUC is exactly 0.5 and AP the weighted prevalence."""
    rng = np.random.default_rng(0)
    n = 200
    cl = rng.integers(0, 60, n)
    y = rng.integers(0, 2, n)
    s = np.full(n, 0.3)
    p = np.zeros(n, int)
    parts = [Partition("overall", np.zeros(n, int), ("all",))]
    r = cluster_bootstrap(y, s, p, parts, clusters=cl, n_replicates=10, seed=1).values[
        ("overall", "all")
    ]
    w = np.concatenate(list(replicate_weights(np.zeros(60, int), 10, seed=1)))
    np.testing.assert_array_equal(r["auc"], 0.5)
    for i in range(10):
        ww = w[i][cl]
        assert r["average_precision"][i] == pytest.approx(
            average_precision_score(y, s, sample_weight=ww), abs=1e-15
        )


def _heavy_tie_data(n=300, seed=7):
    rng = np.random.default_rng(seed)
    _, cl = np.unique(rng.integers(0, 90, n), return_inverse=True)
    y = (rng.random(n) < 0.4).astype(int)
    s = rng.integers(0, 6, n) / 5  # six distinct scores: every row is in a tie block
    p = (s >= 0.6).astype(int)
    site_of = rng.integers(0, 2, cl.max() + 1)
    band = rng.integers(0, 3, n)  # varies within patient
    return y, s, p, cl, site_of, band


def test_every_metric_equals_weighted_reference_with_heavy_ties():
    y, s, p, cl, site_of, band = _heavy_tie_data()
    parts = [
        Partition("overall", np.zeros(y.size, int), ("all",)),
        Partition("band", band, ("0", "1", "2")),
    ]
    B = 12
    r = cluster_bootstrap(
        y, s, p, parts, clusters=cl, strata=site_of[cl], n_replicates=B, seed=9, n_bins=4
    )
    w = np.concatenate(list(replicate_weights(site_of, B, seed=9)))
    for key, mask in ((("overall", "all"), np.ones(y.size, bool)), (("band", "2"), band == 2)):
        v = r.values[key]
        for i in range(B):
            ww, yy, ss, pp = w[i][cl][mask], y[mask], s[mask], p[mask]
            tn, fp, fn, tp = confusion_matrix(yy, pp, labels=[0, 1], sample_weight=ww).ravel()
            bins = np.minimum((ss * 4).astype(int), 3)
            ece = np.abs(np.bincount(bins, weights=ww * (ss - yy), minlength=4)).sum() / ww.sum()
            ref = {
                "sensitivity": tp / (tp + fn),
                "specificity": tn / (tn + fp),
                "ppv": tp / (tp + fp),
                "npv": tn / (tn + fn),
                "accuracy": (tp + tn) / ww.sum(),
                "f1": 2 * tp / (2 * tp + fp + fn),
                "brier": brier_score_loss(yy, ss, sample_weight=ww),
                "ece": ece,
                "auc": roc_auc_score(yy, ss, sample_weight=ww),
                "average_precision": average_precision_score(yy, ss, sample_weight=ww),
            }
            for metric, value in ref.items():
                assert v[metric][i] == pytest.approx(value, abs=1e-12), (key, i, metric)


def _all_replicates(r):
    return {(k, m): a for k, d in r.values.items() for m, a in d.items()}


def test_results_do_not_depend_on_threads_or_tiles(monkeypatch):
    """Bit-identical replicates with 1, 2 or 3 threads and with any tile size."""
    y, s, p, cl, site_of, band = _heavy_tie_data(n=600, seed=3)
    parts = [
        Partition("overall", np.zeros(y.size, int), ("all",)),
        Partition("band", band, ("0", "1", "2")),
    ]

    def run():
        return _all_replicates(
            cluster_bootstrap(
                y, s, p, parts, clusters=cl, strata=site_of[cl], n_replicates=70, seed=4
            )
        )

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = run()
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = run()
    finally:
        numba.set_num_threads(before)
    monkeypatch.setattr(bootstrap_module, "_n_threads", lambda: 3)  # whatever the CPUs
    three = run()
    monkeypatch.setattr(bootstrap_module, "_TILE", 5)
    tiled = run()
    for key, arr in one.items():
        np.testing.assert_array_equal(two[key], arr, err_msg=str(key))
        np.testing.assert_array_equal(three[key], arr, err_msg=str(key))
        np.testing.assert_array_equal(tiled[key], arr, err_msg=str(key))


def test_wide_weights_fallback_gives_the_same_replicates(monkeypatch):
    """When a multiplicity exceeds what a byte holds the tile is redone with 32-bit
    weights; forcing that path (cap 1) changes nothing."""
    y, s, p, cl, site_of, band = _heavy_tie_data(n=200, seed=5)
    parts = [Partition("band", band, ("0", "1", "2"))]
    args = dict(clusters=cl, strata=site_of[cl], n_replicates=40, seed=8)
    narrow = _all_replicates(cluster_bootstrap(y, s, p, parts, **args))
    monkeypatch.setattr(bootstrap_module, "_NARROW_MAX", 1)
    wide = _all_replicates(cluster_bootstrap(y, s, p, parts, **args))
    for key, arr in narrow.items():
        np.testing.assert_array_equal(wide[key], arr, err_msg=str(key))


def test_row_bootstrap_and_order_invariance():
    """Without clusters every row is resampled alone; shuffling rows (with their
    clusters) does not change any replicate."""
    y, s, p, cl, site_of, band = _heavy_tie_data(n=150, seed=1)
    parts = [Partition("band", band, ("0", "1", "2"))]
    r = cluster_bootstrap(y, s, p, parts, n_replicates=8, seed=3)
    w = np.concatenate(list(replicate_weights(np.zeros(y.size, int), 8, seed=3)))
    m = band == 1
    for i in range(8):
        assert r.values[("band", "1")]["auc"][i] == pytest.approx(
            roc_auc_score(y[m], s[m], sample_weight=w[i][m]), abs=1e-12
        )
    perm = np.random.default_rng(0).permutation(y.size)
    a = cluster_bootstrap(y, s, p, parts, clusters=cl, n_replicates=8, seed=3)
    b = cluster_bootstrap(
        y[perm],
        s[perm],
        p[perm],
        [Partition("band", band[perm], ("0", "1", "2"))],
        clusters=cl[perm],
        n_replicates=8,
        seed=3,
    )
    for key, arr in _all_replicates(a).items():
        np.testing.assert_allclose(_all_replicates(b)[key], arr, rtol=1e-13, atol=1e-15)
