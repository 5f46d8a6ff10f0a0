from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from medlens._errors import MedlensError
from medlens.validation import Partition, cluster_bootstrap, replicate_weights


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    n = 400
    _, cl = np.unique(rng.integers(0, 130, n), return_inverse=True)
    y = (rng.random(n) < 0.3).astype(int)
    s = np.round(np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1), 2)  # many ties
    p = (s >= 0.5).astype(int)
    site_of_patient = rng.integers(0, 3, cl.max() + 1)
    sex = rng.integers(0, 2, n)
    return y, s, p, cl, site_of_patient, sex


@pytest.mark.parametrize("tile", [None, 3], ids=["default-tile", "tile-3"])
def test_replicates_equal_weighted_sklearn(data, tile, monkeypatch):
    """Each replicate equals the metric on the data weighted by patient multiplicities.

    The default tile (32 replicates per pass) splits the 40 replicates into a full and a
    partial tile; tiles of 3 give 14 passes with an odd number of lanes (the kernel's
    vector loops then also run their scalar remainder).
    """
    if tile is not None:
        import medlens.validation._bootstrap as bootstrap_module

        monkeypatch.setattr(bootstrap_module, "_TILE", tile)
    y, s, p, cl, site_of_patient, sex = data
    parts = [
        Partition("overall", np.zeros(y.size, int), ("all",)),
        Partition("sex", sex, ("F", "M")),
    ]
    r = cluster_bootstrap(
        y, s, p, parts, clusters=cl, strata=site_of_patient[cl], n_replicates=40, seed=3
    )
    weights = np.concatenate(list(replicate_weights(site_of_patient, 40, 3)))
    for i in range(40):
        w = weights[i][cl]
        for key, mask in ((("overall", "all"), np.ones(y.size, bool)), (("sex", "M"), sex == 1)):
            ww, yy, ss, pp = w[mask], y[mask], s[mask], p[mask]
            v = r.values[key]
            assert v["auc"][i] == pytest.approx(roc_auc_score(yy, ss, sample_weight=ww), abs=1e-12)
            assert v["average_precision"][i] == pytest.approx(
                average_precision_score(yy, ss, sample_weight=ww), abs=1e-12
            )
            assert v["brier"][i] == pytest.approx(
                brier_score_loss(yy, ss, sample_weight=ww), abs=1e-12
            )
            tp = np.sum(ww * yy * pp)
            assert v["sensitivity"][i] == pytest.approx(tp / np.sum(ww * yy), abs=1e-12)
            assert v["f1"][i] == pytest.approx(
                2 * tp / (2 * tp + np.sum(ww * (1 - yy) * pp) + np.sum(ww * yy * (1 - pp))),
                abs=1e-12,
            )


def test_weights_resample_within_strata(data):
    *_, cl, site_of_patient, _ = data
    for w in replicate_weights(site_of_patient, 20, 0):
        for site in range(3):
            members = site_of_patient == site
            np.testing.assert_array_equal(w[:, members].sum(axis=1), members.sum())
        assert np.all(w == np.round(w)) and w.min() >= 0


def test_deterministic_and_seed_dependent(data):
    y, s, p, cl, *_ = data
    parts = [Partition("overall", np.zeros(y.size, int), ("all",))]
    a = cluster_bootstrap(y, s, p, parts, clusters=cl, n_replicates=30, seed=1).values[
        ("overall", "all")
    ]
    b = cluster_bootstrap(y, s, p, parts, clusters=cl, n_replicates=30, seed=1).values[
        ("overall", "all")
    ]
    c = cluster_bootstrap(y, s, p, parts, clusters=cl, n_replicates=30, seed=2).values[
        ("overall", "all")
    ]
    np.testing.assert_array_equal(a["auc"], b["auc"])
    assert not np.array_equal(a["auc"], c["auc"])


def test_patient_resampling_keeps_images_together(data):
    """With duplicated rows per patient the cluster bootstrap is wider than a row bootstrap."""
    y, s, p, *_ = data
    y2, s2, p2 = np.repeat(y, 4), np.repeat(s, 4), np.repeat(p, 4)
    cl = np.repeat(np.arange(y.size), 4)
    parts = [Partition("overall", np.zeros(y2.size, int), ("all",))]
    clus = cluster_bootstrap(y2, s2, p2, parts, clusters=cl, n_replicates=300, seed=0).values[
        ("overall", "all")
    ]
    rows = cluster_bootstrap(y2, s2, p2, parts, n_replicates=300, seed=0).values[("overall", "all")]
    assert np.std(clus["sensitivity"]) > 1.5 * np.std(rows["sensitivity"])


def test_bad_replicates(data):
    y, s, p, *_ = data
    with pytest.raises(
        MedlensError, match="'n_replicates' parameter of cluster_bootstrap must be an int >= 1"
    ):
        cluster_bootstrap(y, s, p, [], n_replicates=0)


def test_cells_equal_per_partition_sums(data, monkeypatch):
    """Additive statistics summed from cells (combinations of cohort values) equal those
    accumulated per partition (a cell budget of 0 puts every partition in its own set)."""
    import medlens.validation._bootstrap as b

    y, s, p, cl, site_of_patient, sex = data
    parts = [
        Partition("overall", np.zeros(y.size, int), ("all",)),
        Partition("sex", sex, ("F", "M")),
        Partition("site", site_of_patient[cl], ("A", "B", "C")),
    ]
    for rank in (True, False):
        combined = cluster_bootstrap(
            y, s, p, parts, clusters=cl, n_replicates=20, seed=5, rank_metrics=rank
        )
        monkeypatch.setattr(b, "_CELL_BUDGET", 0)
        split = cluster_bootstrap(
            y, s, p, parts, clusters=cl, n_replicates=20, seed=5, rank_metrics=rank
        )
        monkeypatch.undo()
        assert split.values.keys() == combined.values.keys()
        for key, metrics in combined.values.items():
            assert set(metrics) == set(b.ADDITIVE_METRICS) | (
                set(b.RANK_METRICS) if rank else set()
            )
            for m, arr in metrics.items():
                np.testing.assert_allclose(
                    split.values[key][m], arr, rtol=1e-12, atol=1e-15, err_msg=f"{key} {m}"
                )


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10"])
def test_replicate_weights_bad_replicates(bad):
    with pytest.raises(
        MedlensError, match="'n_replicates' parameter of replicate_weights must be an int >= 1"
    ):
        replicate_weights(np.zeros(5, int), bad, 0)
