"""Intervals that keep a width when the cluster bootstrap degenerates (estimate 0 or 1,
few patients), small-cohort flags on patients, and no difference test for flagged
cohorts. References: statsmodels (proportion_confint, cluster-robust variance of a mean)
and the MOVER formula of Zou & Donner (2008) written out; MOVER-R checked against the
roots of its defining equations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.stats.proportion import proportion_confint

from medlens._errors import MedlensError
from medlens.validation import evaluate, parse_plan
from medlens.validation._groups import (
    DEFF_LARGEST,
    UNRELIABLE_SHARE,
    effective_n,
    patients_per_metric,
)
from medlens.validation._proportions import effective_proportion_ci, proportion_ci

pytestmark = pytest.mark.filterwarnings("ignore::medlens.validation._common.UndefinedMetricWarning")

SM_METHOD = {"wilson": "wilson", "clopper-pearson": "beta", "jeffreys": "jeffreys"}


def plan(**kw):
    raw = {"analysis": {"bootstrap": {"replicates": 300}, "calibration": {"null_simulations": 50}}}
    raw.update(kw)
    return parse_plan(raw)


@pytest.mark.parametrize("method", ["wilson", "clopper-pearson", "jeffreys"])
@pytest.mark.parametrize(("k", "n"), [(0, 7), (3, 7), (7, 7), (2.5, 5.5), (1.0, 1.0)])
def test_effective_proportion_ci_matches_statsmodels(method, k, n):
    lo, hi = effective_proportion_ci(k / n, n, method=method, alpha=0.05)
    ref = proportion_confint(k, n, alpha=0.05, method=SM_METHOD[method])
    if method == "clopper-pearson":  # statsmodels gives NaN-free 0 / 1 at the edges too
        ref = (0.0 if k == 0 else ref[0], 1.0 if k == n else ref[1])
    assert (lo, hi) == pytest.approx(ref, abs=1e-12)
    if float(k).is_integer():
        assert (lo, hi) == pytest.approx(proportion_ci(int(k), int(n), method=method), abs=1e-15)


@pytest.mark.parametrize(
    ("args", "kw"),
    [((1.2, 5.0), {}), ((0.5, 0.0), {}), ((math.nan, 5.0), {}), ((0.5, 5.0), {"method": "wald"})],
)
def test_effective_proportion_ci_bad_input(args, kw):
    with pytest.raises(MedlensError, match="effective_proportion_ci"):
        effective_proportion_ci(*args, **kw)


def test_effective_n_is_n_over_kish_design_effect():
    rng = np.random.default_rng(3)
    cl = np.repeat(np.arange(12), rng.integers(1, 5, 12))
    x = (rng.random(12)[cl] + 0.3 * rng.random(cl.size) > 0.6).astype(np.int8)
    den = np.ones_like(x)
    neff, deff, estimated = effective_n(x, den, cl)
    # reference: cluster-robust variance of the mean (statsmodels, CR1 with K = 1 is
    # G/(G-1) * sum of squared cluster residual sums / n^2) over the binomial variance
    fit = sm.OLS(x.astype(float), np.ones((x.size, 1))).fit(
        cov_type="cluster", cov_kwds={"groups": cl}
    )
    p = x.mean()
    ref = fit.bse[0] ** 2 / (p * (1 - p) / x.size)
    assert estimated and deff == pytest.approx(max(1.0, ref), rel=1e-10)
    assert neff == pytest.approx(x.size / max(1.0, ref), rel=1e-10)


def test_effective_n_when_the_design_effect_is_not_estimable():
    cl = np.array([0, 0, 0, 1, 2, 2])  # cluster sizes 3, 1, 2
    ones = np.ones(6, dtype=np.int8)
    neff, deff, estimated = effective_n(ones, ones, cl)  # proportion 1: no variance
    assert not estimated
    assert deff == pytest.approx((9 + 1 + 4) / 6) and neff == pytest.approx(36 / 14)
    # singletons: n_eff = n; one patient: n_eff = 1
    assert effective_n(ones, ones, np.arange(6))[0] == pytest.approx(6)
    assert effective_n(np.array([1, 0]), np.ones(2), np.zeros(2, int))[0] == pytest.approx(1)


def test_patients_per_metric():
    y = np.array([1, 1, 1, 0, 0, 0])
    p = np.array([1, 0, 1, 0, 0, 1])
    cl = np.array([0, 0, 1, 2, 3, 3])
    k = patients_per_metric(y, p, cl)
    assert k["sensitivity"] == 2 and k["specificity"] == 2 and k["accuracy"] == 4
    assert k["ppv"] == 3 and k["npv"] == 3 and k["auc"] == 2


def _frame() -> pd.DataFrame:
    """Three cohorts of a clustered table:

    * ``perfect``: 10 positives from 5 patients (2 each), all detected, 13 negatives from 13
      patients, none flagged: sensitivity 10/10, specificity 13/13;
    * ``one_patient``: 2 positives from ONE patient (one detected), 13 negatives;
    * ``bulk``: 240 cases of 120 patients, some errors.
    """
    rows = []

    def add(group, patient, label, score):
        rows.append((group, patient, label, score))

    for i in range(5):
        for _ in range(2):
            add("perfect", f"pp{i}", 1, 0.9)
    for i in range(13):
        add("perfect", f"pn{i}", 0, 0.1)
    add("one_patient", "op0", 1, 0.9)
    add("one_patient", "op0", 1, 0.2)
    for i in range(13):
        add("one_patient", f"on{i}", 0, 0.1)
    rng = np.random.default_rng(0)
    for i in range(240):
        y = int(rng.random() < 0.4)
        add("bulk", f"b{i // 2}", y, float(np.clip(0.35 * y + 0.65 * rng.random(), 0, 1)))
    f = pd.DataFrame(rows, columns=["grp", "patient_key", "label", "score"])
    f["case_id"] = [f"c{i}" for i in range(len(f))]
    f["site"] = np.where(f.patient_key.str[-1].isin(list("02468")), "A", "B")
    return f


@pytest.fixture(scope="module")
def report():
    return evaluate(_frame(), plan(columns={"cohorts": ["grp"]}))


def _wilson(k, n):
    return proportion_confint(k, n, alpha=0.05, method="wilson")


def test_perfect_cohort_gets_the_wilson_interval_on_effective_n(report):
    g = report.cohorts["grp"]["perfect"]
    sens, spec = g.metrics["sensitivity"], g.metrics["specificity"]
    assert sens.estimate == 1.0 and spec.estimate == 1.0
    # bootstrap replicates are all 1 -> [1, 1]; widened to Wilson on n/DEFF: 10 positives
    # in 5 patients of 2 (DEFF not estimable at 1.0 -> sum m^2 / sum m = 2) -> 5/5
    assert (sens.ci_low, sens.ci_high) == pytest.approx(_wilson(5, 5), abs=1e-12)
    assert (spec.ci_low, spec.ci_high) == pytest.approx(_wilson(13, 13), abs=1e-12)
    assert sens.ci_high - sens.ci_low > 0.3
    assert "effective n" in sens.method and DEFF_LARGEST in sens.note
    assert "sensitivity" not in g.flags and "specificity" not in g.flags
    # balanced accuracy 1.0: MOVER from the two Wilson intervals, not [1, 1]
    ba = g.metrics["balanced_accuracy"]
    (l1, _), (l2, _) = _wilson(5, 5), _wilson(13, 13)
    assert ba.ci_low == pytest.approx(1 - 0.5 * math.hypot(1 - l1, 1 - l2), abs=1e-12)
    assert ba.ci_high == 1.0 and "MOVER" in ba.method


def test_positives_from_one_patient_flagged_untested_and_wide(report):
    g = report.cohorts["grp"]["one_patient"]
    sens = g.metrics["sensitivity"]
    assert sens.estimate == 0.5
    # two positives of one patient: DEFF = 2, n_eff = 1
    assert (sens.ci_low, sens.ci_high) == pytest.approx(
        proportion_confint(0.5, 1, alpha=0.05, method="wilson"), abs=1e-12
    )
    assert g.flags["sensitivity"] == (
        "fewer than 10 positives (2); fewer than 5 patients with positives (1)"
    )
    assert "interval unreliable" in sens.note
    d = g.difference["sensitivity"]
    assert math.isnan(d["p_value"]) and math.isnan(d["p_adjusted"]) and math.isnan(d["ci_low"])
    assert d["note"].startswith("not tested (cohort flagged: fewer than 10 positives (2); ")
    assert d["estimate"] == pytest.approx(0.5 - report.overall.metrics["sensitivity"].estimate)
    # unflagged cohorts keep their test
    assert not math.isnan(report.cohorts["grp"]["bulk"].difference["sensitivity"]["p_value"])


def test_min_patients_is_a_plan_field():
    assert parse_plan({}).subgroups.min_patients == 5
    rep = evaluate(_frame(), plan(columns={"cohorts": ["grp"]}, subgroups={"min_patients": 6}))
    assert rep.cohorts["grp"]["perfect"].flags["sensitivity"] == (
        "fewer than 6 patients with positives (5)"
    )
    with pytest.raises(MedlensError, match="subgroups.min_patients"):
        parse_plan({"subgroups": {"min_patients": -1}})


def test_many_undefined_replicates_flag_the_interval(report):
    # positives of one patient are missing from ~1/e of the replicates
    g = report.cohorts["grp"]["one_patient"]
    note = g.metrics["sensitivity"].note
    k = int(note.split("interval unreliable: ")[1].split(" of ")[0])
    assert k > UNRELIABLE_SHARE * 300


def test_primary_endpoint_at_one_does_not_pass_trivially():
    f = _frame()
    f = f[f.grp == "perfect"]
    rep = evaluate(
        f,
        plan(
            columns={"cohorts": []},
            subgroups={"min_n": 0},
            primary_endpoints=[{"metric": "sensitivity", "goal": 0.75}],
        ),
    )
    (c,) = rep.criteria
    assert c.estimate == 1.0
    assert c.ci_low == pytest.approx(_wilson(5, 5)[0], abs=1e-12) and c.outcome == "fail"
    # nothing failed: the worst case is the main result itself
    assert c.worst_case["n_counted_as_errors"] == 0
    assert (c.worst_case["ci_low"], c.worst_case["ci_high"], c.worst_case["method"]) == (
        c.ci_low,
        c.ci_high,
        c.method,
    )


def test_unclustered_intervals_unchanged():
    f = _frame().drop_duplicates("patient_key")
    rep = evaluate(f, plan(columns={"cohorts": ["grp"]}))
    g = rep.cohorts["grp"]["perfect"]
    assert not rep.plan_info["clustered"]
    assert g.metrics["sensitivity"].method == "wilson"
    assert (g.metrics["sensitivity"].ci_low, g.metrics["sensitivity"].ci_high) == pytest.approx(
        _wilson(5, 5), abs=1e-12
    )


def _hanley_mcneil_newcombe(t, m, n):
    """Newcombe (2006) method 5 variance: Hanley & McNeil with n - 1 -> (m + n)/2 - 1."""
    q1, q2 = t / (2 - t), 2 * t**2 / (1 + t)
    nstar = (m + n) / 2 - 1
    return (t * (1 - t) + nstar * (q1 - t**2) + nstar * (q2 - t**2)) / (m * n)


@pytest.mark.parametrize(
    ("auc", "m", "n"), [(1.0, 10, 13), (0.0, 5, 7), (0.8, 30, 40), (1.0, 2.5, 6)]
)
def test_newcombe_auc_interval_solves_its_score_equation(auc, m, n):
    from medlens.validation._roc import newcombe_auc_ci

    z2 = 1.959963984540054**2
    lo, hi = newcombe_auc_ci(auc, m, n, alpha=0.05)
    assert lo < hi and lo <= auc <= hi
    for b in (lo, hi):
        if b != auc:  # a bound at the estimate (AUC 0 or 1) is the boundary itself
            assert (auc - b) ** 2 == pytest.approx(z2 * _hanley_mcneil_newcombe(b, m, n), abs=1e-12)
    # the interval is exactly the set where the score statistic is within z (grid check)
    grid = np.linspace(0, 1, 20001)[1:-1]
    inside = (auc - grid) ** 2 <= z2 * _hanley_mcneil_newcombe(grid, m, n)
    assert grid[inside].min() == pytest.approx(lo, abs=1e-4)
    assert grid[inside].max() == pytest.approx(hi, abs=1e-4)


@pytest.mark.parametrize(
    ("args", "kw"), [((1.2, 5, 5), {}), ((0.5, 0.5, 5), {}), ((0.5, 5, 5), {"alpha": 2})]
)
def test_newcombe_auc_ci_bad_input(args, kw):
    from medlens.validation._roc import newcombe_auc_ci

    with pytest.raises(MedlensError, match="newcombe_auc_ci"):
        newcombe_auc_ci(*args, **kw)


def test_auc_of_one_has_a_width(report):
    from medlens.validation._roc import newcombe_auc_ci

    auc = report.cohorts["grp"]["perfect"].metrics["auc"]
    assert auc.estimate == 1.0
    # positives: 10 cases of 5 patients (n_eff 5); negatives: 13 patients of one case
    assert (auc.ci_low, auc.ci_high) == pytest.approx(newcombe_auc_ci(1.0, 5, 13), abs=1e-12)
    assert auc.ci_low < 0.9 and auc.method.endswith("widened to newcombe at the boundary")


def test_primary_auc_endpoint_at_one_does_not_pass_trivially():
    from medlens.validation._roc import newcombe_auc_ci

    f = _frame()
    rep = evaluate(
        f[f.grp == "perfect"],
        plan(
            columns={"cohorts": []},
            subgroups={"min_n": 0},
            primary_endpoints=[{"metric": "auc", "goal": 0.9}],
        ),
    )
    (c,) = rep.criteria
    assert c.estimate == 1.0 and c.outcome == "fail"
    assert c.ci_low == pytest.approx(newcombe_auc_ci(1.0, 5, 13)[0], abs=1e-12)


def test_unclustered_balanced_accuracy_at_one_uses_mover_on_n():
    f = _frame().drop_duplicates("patient_key")
    g = evaluate(f, plan(columns={"cohorts": ["grp"]})).cohorts["grp"]["perfect"]
    ba = g.metrics["balanced_accuracy"]
    (l1, _), (l2, _) = _wilson(5, 5), _wilson(13, 13)  # 5 positives, 13 negatives
    assert ba.estimate == 1.0 and ba.method == "wald, widened to MOVER-wilson on effective n"
    assert ba.ci_low == pytest.approx(1 - 0.5 * math.hypot(1 - l1, 1 - l2), abs=1e-12)


def _mover_root(p1, l1, u1, p2, l2, u2, upper):
    """The MOVER-R bound found numerically: the r where the MOVER limit of p1 - r p2
    (Zou & Donner's square-and-add) reaches 0 (Newcombe 2016, SMMR 25(5):1774)."""
    from scipy.optimize import brentq

    theta = p1 / p2
    if upper:
        g = lambda r: (p1 - r * p2) + math.hypot(u1 - p1, r * (p2 - l2))  # noqa: E731
        return brentq(g, theta, 1e6)
    g = lambda r: (p1 - r * p2) - math.hypot(p1 - l1, r * (u2 - p2))  # noqa: E731
    return 0.0 if g(0.0) <= 0 else brentq(g, 0.0, theta)


@pytest.mark.parametrize(
    ("k1", "n1", "k2", "n2"),
    [
        (0, 10, 2, 13),
        (3, 25, 20, 40),
        (1, 25, 40, 40),
        (25, 25, 1, 40),
        (9, 10, 1, 3),
        (0, 5, 7, 7),
    ],
)
def test_mover_ratio_ci_solves_its_defining_equations(k1, n1, k2, n2):
    from medlens.validation._counts import mover_ratio_ci

    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = _wilson(k1, n1), _wilson(k2, n2)
    lo, hi = mover_ratio_ci(p1, (l1, u1), p2, (l2, u2))
    assert lo <= p1 / p2 <= hi and hi < math.inf
    assert lo == pytest.approx(_mover_root(p1, l1, u1, p2, l2, u2, False), abs=1e-9)
    assert hi == pytest.approx(_mover_root(p1, l1, u1, p2, l2, u2, True), rel=1e-9)
    if k1 == 0:
        assert lo == 0.0 and hi > 0


def test_zero_likelihood_ratio_gets_a_mover_interval_not_nan():
    from medlens.validation._counts import likelihood_ratio_negative, mover_ratio_ci

    y = np.array([1] * 12 + [0] * 20)
    p = np.array([1] * 12 + [1] * 4 + [0] * 16)  # no false negative: LR- = 0
    lr = likelihood_ratio_negative(y, p)
    ref = mover_ratio_ci(0.0, _wilson(0, 12), 16 / 20, _wilson(16, 20))
    assert lr.estimate == 0.0 and lr.method == "mover-wilson"
    assert (lr.ci_low, lr.ci_high) == pytest.approx(ref, abs=1e-12)
    assert lr.ci_low == 0.0 and 0.1 < lr.ci_high < 1.0


def test_clustered_likelihood_ratio_at_zero_keeps_a_width(report):
    from medlens.validation._counts import mover_ratio_ci

    g = report.cohorts["grp"]["perfect"]
    lrn = g.metrics["lr_negative"]
    # no positive missed: every bootstrap replicate is 0; MOVER-R on effective n:
    # 5 positive patients-equivalent (10 cases in 5 patients), 13 negatives
    assert lrn.estimate == 0.0 and lrn.ci_low == 0.0
    ref = mover_ratio_ci(0.0, _wilson(0, 5), 1.0, _wilson(13, 13))
    assert lrn.ci_high == pytest.approx(ref[1], abs=1e-12) and lrn.ci_high > 0.2
    assert "MOVER-R" in lrn.method and "Donner & Zou" in lrn.note
    bulk = report.cohorts["grp"]["bulk"].metrics["lr_positive"]  # inside, never narrower
    assert bulk.ci_low <= bulk.estimate <= bulk.ci_high


@pytest.mark.parametrize("clustered", [True, False])
def test_perfect_f1_keeps_a_width_from_the_jaccard_index(clustered):
    f = _frame() if clustered else _frame().drop_duplicates("patient_key")
    g = evaluate(f, plan(columns={"cohorts": ["grp"]})).cohorts["grp"]["perfect"]
    f1 = g.metrics["f1"]
    # TP = all positives, FP = FN = 0: J = 1 on m = TP cases (clustered: 10 cases of 5
    # patients, n_eff 5; unclustered: 5); F1 = 2J/(1+J)
    lo_j = _wilson(5, 5)[0]
    assert f1.estimate == 1.0 and f1.ci_high == 1.0
    assert f1.ci_low == pytest.approx(2 * lo_j / (1 + lo_j), abs=1e-12)
    assert "Jaccard" in f1.method and "F1 = 2J/(1+J)" in f1.note


def test_f1_interval_contains_the_bootstrap_and_the_jaccard_interval(report):
    g = report.cohorts["grp"]["bulk"]
    f1 = g.metrics["f1"]
    c = g.confusion
    m = c.tp + c.fp + c.fn
    assert f1.ci_low <= f1.estimate <= f1.ci_high
    assert f1.estimate == pytest.approx(2 * c.tp / (2 * c.tp + c.fp + c.fn))
    lo_j, hi_j = _wilson(c.tp, m)  # DEFF >= 1 only widens it
    assert (
        f1.ci_low <= 2 * lo_j / (1 + lo_j) + 1e-12 and f1.ci_high >= 2 * hi_j / (1 + hi_j) - 1e-12
    )
