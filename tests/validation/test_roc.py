from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from medlens._errors import InputDataError, MedlensError
from medlens.validation import (
    UndefinedMetricWarning,
    average_precision,
    choose_threshold,
    delong_test,
    roc_auc,
    roc_curve,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
)
from medlens.validation._roc import midranks

from .conftest import proc_dataset

DATASETS = ["ties200", "coarse60", "cont300"]


@pytest.mark.parametrize("name", DATASETS)
def test_delong_ci_matches_proc(name, proc_reference):
    ref = proc_reference[name]
    d = proc_dataset(name)
    for col, key in (("score1", "1"), ("score2", "2")):
        r = roc_auc(d.label, d[col])
        assert r.estimate == pytest.approx(ref[f"auc{key}"], abs=1e-13)
        assert r.variance == pytest.approx(ref[f"var{key}"], rel=1e-10, abs=1e-15)
        assert (r.ci_low, r.ci_high) == pytest.approx(tuple(ref[f"ci{key}"]), abs=1e-12)
        assert r.method == "delong"
    r90 = roc_auc(d.label, d.score1, alpha=0.10)
    assert (r90.ci_low, r90.ci_high) == pytest.approx(tuple(ref["ci1_90"]), abs=1e-12)


@pytest.mark.parametrize("name", DATASETS)
def test_paired_delong_test_matches_proc(name, proc_reference):
    ref = proc_reference[name]
    d = proc_dataset(name)
    t = delong_test(d.label, d.score1, d.score2)
    assert t.z == pytest.approx(ref["test_z"], rel=1e-10)
    assert t.p_value == pytest.approx(ref["test_p"], rel=1e-9)
    assert t.covariance == pytest.approx(ref["cov12"], rel=1e-10)
    assert (t.ci_low, t.ci_high) == pytest.approx(tuple(ref["test_ci"]), abs=1e-12)


@pytest.mark.parametrize("name", DATASETS)
def test_auc_and_ap_match_sklearn(name):
    d = proc_dataset(name)
    assert roc_auc(d.label, d.score1).estimate == pytest.approx(
        roc_auc_score(d.label, d.score1), abs=1e-14
    )
    assert average_precision(d.label, d.score1).estimate == pytest.approx(
        average_precision_score(d.label, d.score1), abs=1e-14
    )


def test_roc_curve_matches_sklearn():
    d = proc_dataset("ties200")
    fpr, tpr, thr = roc_curve(d.label, d.score1)
    sf, st, sth = sk_roc_curve(d.label, d.score1, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sf, atol=1e-15)
    np.testing.assert_allclose(tpr, st, atol=1e-15)
    np.testing.assert_allclose(thr[1:], sth[1:])


def test_midranks():
    np.testing.assert_array_equal(midranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1, 3.5, 2])


def test_order_invariance():
    d = proc_dataset("cont300")
    perm = np.random.default_rng(0).permutation(len(d))
    a, b = roc_auc(d.label, d.score1), roc_auc(d.label.to_numpy()[perm], d.score1.to_numpy()[perm])
    assert (a.estimate, a.variance) == pytest.approx((b.estimate, b.variance), abs=1e-15)
    clusters = np.arange(len(d)) // 3
    c1 = roc_auc(d.label, d.score1, clusters=clusters)
    c2 = roc_auc(d.label.to_numpy()[perm], d.score1.to_numpy()[perm], clusters=clusters[perm])
    assert c1.variance == pytest.approx(c2.variance, rel=1e-12)


def test_obuchowski_singletons_equal_delong():
    d = proc_dataset("ties200")
    a = roc_auc(d.label, d.score1)
    b = roc_auc(d.label, d.score1, clusters=np.arange(len(d)))
    assert b.method == "obuchowski"
    assert b.variance == pytest.approx(a.variance, rel=1e-12)
    assert b.design_effect == pytest.approx(1.0, rel=1e-12)


def _obuchowski_by_definition(y, s, c):
    """Direct O(n^2) transcription of Obuchowski (1997), eqs. (2)-(5), written independently."""
    clusters = sorted(set(c))
    pos = [(ci, si) for ci, si, yi in zip(c, s, y, strict=True) if yi == 1]
    neg = [(ci, si) for ci, si, yi in zip(c, s, y, strict=True) if yi == 0]
    M, N = len(pos), len(neg)

    def psi(x, z):
        return 1.0 if x > z else (0.5 if x == z else 0.0)

    theta = sum(psi(x, z) for _, x in pos for _, z in neg) / (M * N)
    V10 = {k: 0.0 for k in clusters}
    V01 = {k: 0.0 for k in clusters}
    m = {k: 0 for k in clusters}
    n = {k: 0 for k in clusters}
    for ci, x in pos:
        V10[ci] += sum(psi(x, z) for _, z in neg) / N
        m[ci] += 1
    for ci, z in neg:
        V01[ci] += sum(psi(x, z) for _, x in pos) / M
        n[ci] += 1
    I10 = sum(1 for k in clusters if m[k] > 0)
    I01 = sum(1 for k in clusters if n[k] > 0)
    n_all = len(clusters)
    S10 = I10 / ((I10 - 1) * M) * sum((V10[k] - m[k] * theta) ** 2 for k in clusters)
    S01 = I01 / ((I01 - 1) * N) * sum((V01[k] - n[k] * theta) ** 2 for k in clusters)
    S11 = (
        n_all
        / (n_all - 1)
        * sum((V10[k] - m[k] * theta) * (V01[k] - n[k] * theta) for k in clusters)
    )
    return theta, S10 / M + S01 / N + 2 * S11 / (M * N)


def test_obuchowski_matches_definition():
    rng = np.random.default_rng(5)
    n = 120
    c = rng.integers(0, 40, n)
    y = (rng.random(n) < 0.4).astype(int)
    s = np.round(np.clip(0.3 * y + 0.7 * rng.random(n) + 0.05 * (c % 4), 0, 1), 2)
    theta, var = _obuchowski_by_definition(y.tolist(), s.tolist(), c.tolist())
    r = roc_auc(y, s, clusters=c)
    assert r.estimate == pytest.approx(theta, abs=1e-14)
    assert r.variance == pytest.approx(var, rel=1e-10)
    assert r.n_clusters == len(set(c.tolist()))


def test_one_class_gives_nan_and_warning():
    with pytest.warns(UndefinedMetricWarning, match="auc is undefined for sex=F: only one class"):
        r = roc_auc(np.ones(5, int), np.linspace(0, 1, 5), cohort="sex=F")
    assert math.isnan(r.estimate) and r.note


@pytest.mark.parametrize(
    "y,s,match",
    [
        ([0, 1, 1], [0.1, float("nan"), 0.3], "missing"),
        ([0, 1, 1], [0.1, 1.3, 0.3], r"outside \[0, 1\]"),
        ([0, 3, 1], [0.1, 0.2, 0.3], "only 0 and 1"),
        ([], [], "empty"),
        ([0, 1], [0.1], "same length"),
        ([0, 1], [0.1, float("inf")], "infinite"),
    ],
)
def test_bad_input(y, s, match):
    with pytest.raises(InputDataError, match=match):
        roc_auc(y, s)


def test_bad_clusters():
    with pytest.raises(InputDataError, match="clusters must have one entry per case"):
        roc_auc([0, 1, 1], [0.1, 0.2, 0.3], clusters=[1, 2])


def test_logits_allowed_when_declared():
    r = roc_auc([0, 1, 1, 0], [-2.0, 3.0, 1.0, 0.5], probabilities=False)
    assert r.estimate == 1.0


def test_operating_points():
    d = proc_dataset("cont300")
    y, s = d.label.to_numpy(), d.score1.to_numpy()
    sens, thr = sensitivity_at_specificity(y, s, target=0.9)
    pred = s >= thr
    assert np.mean(~pred[y == 0]) >= 0.9
    assert sens == pytest.approx(np.mean(pred[y == 1]))
    # no threshold with higher sensitivity reaches the target
    for t in np.unique(s):
        if np.mean(s[y == 0] < t) >= 0.9:
            assert np.mean(s[y == 1] >= t) <= sens + 1e-15
    spec, thr2 = specificity_at_sensitivity(y, s, target=0.8)
    assert np.mean(s[y == 1] >= thr2) >= 0.8 and spec == pytest.approx(np.mean(s[y == 0] < thr2))
    with pytest.raises(MedlensError, match="'target' parameter"):
        sensitivity_at_specificity(y, s, target=2)


def test_choose_threshold_rules():
    d = proc_dataset("cont300")
    y, s = d.label.to_numpy(), d.score1.to_numpy()
    t = choose_threshold(y, s, rule="youden")
    j = np.mean(s[y == 1] >= t) + np.mean(s[y == 0] < t) - 1
    best = max(np.mean(s[y == 1] >= u) + np.mean(s[y == 0] < u) - 1 for u in np.unique(s))
    assert j == pytest.approx(best, abs=1e-15)
    t90 = choose_threshold(y, s, rule="target_sensitivity", target=0.9)
    assert np.mean(s[y == 1] >= t90) >= 0.9
    higher = np.unique(s)[np.unique(s) > t90]
    assert all(np.mean(s[y == 1] >= u) < 0.9 for u in higher)
    with pytest.raises(MedlensError, match="'rule' parameter"):
        choose_threshold(y, s, rule="magic")
    with pytest.raises(InputDataError, match="both positive and negative"):
        choose_threshold(np.ones(4, int), np.linspace(0, 1, 4))


def test_single_positive_has_no_interval():
    r = roc_auc([1, 0, 0, 0], [0.9, 0.1, 0.5, 0.3])
    assert r.estimate == 1.0 and math.isnan(r.ci_low) and "at least 2 positive" in r.note
    c = roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.5, 0.3], clusters=[1, 1, 2, 2])
    assert math.isnan(c.ci_low) and "at least 2 clusters" in c.note
