from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss
from statsmodels.stats.proportion import proportion_confint

from medlens._errors import InputDataError, MedlensError
from medlens.validation import (
    IsotonicCalibration,
    PlattScaling,
    TemperatureScaling,
    UndefinedMetricWarning,
    brier_decomposition,
    brier_score,
    calibration,
    calibration_slope_intercept,
    expected_calibration_error,
    hosmer_lemeshow,
    reliability_curve,
    spiegelhalter_z,
)

from .conftest import proc_dataset


@pytest.fixture
def miscal():
    rng = np.random.default_rng(11)
    n = 600
    p_true = rng.beta(2, 3, n)
    y = (rng.random(n) < p_true).astype(int)
    s = np.clip(p_true**0.6, 0, 1)  # overconfident/shifted predictions
    clusters = np.arange(n) // 3
    return y, s, clusters


@pytest.mark.parametrize("name", ["ties200", "cont300", "coarse60"])
def test_hosmer_lemeshow_matches_r(name, proc_reference):
    ref = proc_reference[name]["hl1"]
    d = proc_dataset(name)
    stat, df, p = hosmer_lemeshow(d.label, d.score1)
    assert df == ref["df"]
    if ref["statistic"] == "NaN":
        assert math.isnan(stat)
    else:
        assert stat == pytest.approx(ref["statistic"], rel=1e-10)
        assert p == pytest.approx(ref["p_value"], rel=1e-8)


def test_brier_matches_sklearn(miscal):
    y, s, _ = miscal
    assert brier_score(y, s) == pytest.approx(brier_score_loss(y, s), abs=1e-15)
    d = brier_decomposition(y, s)
    assert d.brier == pytest.approx(brier_score_loss(y, s), abs=1e-15)
    assert d.reliability - d.resolution + d.uncertainty + d.within_bin == pytest.approx(
        d.brier, abs=1e-15
    )
    # with scores constant within bins the Murphy identity is exact
    sb = (np.floor(s * 10) + 0.5) / 10
    d2 = brier_decomposition(y, sb)
    assert abs(d2.within_bin) < 1e-12


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_curve_matches_sklearn(miscal, strategy):
    y, s, _ = miscal
    c = reliability_curve(y, s, n_bins=8, strategy=strategy)
    obs, pred = calibration_curve(y, s, n_bins=8, strategy=strategy)
    np.testing.assert_allclose(c.observed, obs, atol=1e-12)
    np.testing.assert_allclose(c.mean_predicted, pred, atol=1e-12)
    k = np.round(c.observed * c.count).astype(int)
    lo, hi = proportion_confint(k, c.count, method="wilson")
    np.testing.assert_allclose(c.ci_low, np.maximum(lo, 0), atol=1e-12)
    np.testing.assert_allclose(c.ci_high, np.minimum(hi, 1), atol=1e-12)


def test_ece_definition_and_null_band(miscal):
    y, s, _ = miscal
    r = expected_calibration_error(y, s, n_bins=10, n_simulations=400, seed=1)
    b = np.minimum((s * 10).astype(int), 9)
    df = (
        pd.DataFrame({"b": b, "s": s, "y": y})
        .groupby("b")
        .agg(n=("s", "size"), s=("s", "mean"), y=("y", "mean"))
    )
    assert r.ece == pytest.approx(float((df.n / len(y) * (df.s - df.y).abs()).sum()), abs=1e-14)
    assert r.mce == pytest.approx(float((df.s - df.y).abs().max()), abs=1e-14)
    assert r.null_low <= r.null_median <= r.null_high
    assert r.ece > r.null_high and r.p_value < 0.01  # clearly miscalibrated
    rng = np.random.default_rng(2)
    s_ok = rng.random(2000)
    y_ok = (rng.random(2000) < s_ok).astype(int)
    ok = expected_calibration_error(y_ok, s_ok, n_simulations=400, seed=3)
    assert ok.p_value > 0.01
    approx = expected_calibration_error(y_ok, s_ok, n_simulations=30000, seed=3)
    assert approx.null_method.startswith("per-bin normal")
    assert approx.null_median == pytest.approx(ok.null_median, rel=0.15)


def test_slope_intercept_match_statsmodels(miscal):
    y, s, clusters = miscal
    slope, intercept = calibration_slope_intercept(y, s)
    lp = np.log(s / (1 - s))
    fit = sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial()).fit()
    assert slope.estimate == pytest.approx(fit.params[1], rel=1e-8)
    ci = fit.conf_int()
    assert (slope.ci_low, slope.ci_high) == pytest.approx(tuple(ci[1]), rel=1e-7)
    fit0 = sm.GLM(y, np.ones((len(y), 1)), family=sm.families.Binomial(), offset=lp).fit()
    assert intercept.estimate == pytest.approx(fit0.params[0], rel=1e-8)
    assert (intercept.ci_low, intercept.ci_high) == pytest.approx(
        tuple(fit0.conf_int()[0]), rel=1e-7
    )
    cs, ci_ = calibration_slope_intercept(y, s, clusters=clusters)
    fitc = sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial()).fit(
        cov_type="cluster", cov_kwds={"groups": clusters}
    )
    assert cs.method == "logistic-cluster-robust"
    assert (cs.ci_low, cs.ci_high) == pytest.approx(tuple(fitc.conf_int()[1]), rel=1e-7)


def test_spiegelhalter_definition(miscal):
    y, s, _ = miscal
    z, p = spiegelhalter_z(y, s)
    num = sum((yi - si) * (1 - 2 * si) for yi, si in zip(y, s, strict=True))
    den = math.sqrt(sum((1 - 2 * si) ** 2 * si * (1 - si) for si in s))
    assert z == pytest.approx(num / den, rel=1e-12)
    assert 0 <= p <= 1


def test_recalibration_improves_calibration(miscal):
    y, s, _ = miscal
    half = len(y) // 2
    before = expected_calibration_error(y[half:], s[half:], n_simulations=10).ece
    for cls in (TemperatureScaling, PlattScaling, IsotonicCalibration):
        model = cls().fit(y[:half], s[:half])
        after = expected_calibration_error(
            y[half:], model.transform(s[half:]), n_simulations=10
        ).ece
        assert after < before, cls.__name__
    with pytest.raises(InputDataError, match="not fitted"):
        PlattScaling().transform(s)


def test_platt_matches_statsmodels(miscal):
    y, s, _ = miscal
    m = PlattScaling().fit(y, s)
    fit = sm.GLM(y, sm.add_constant(np.log(s / (1 - s))), family=sm.families.Binomial()).fit()
    assert (m.intercept_, m.slope_) == pytest.approx(tuple(fit.params), rel=1e-8)


def test_calibration_bundle_order_invariant(miscal):
    y, s, _ = miscal
    perm = np.random.default_rng(0).permutation(len(y))
    a = calibration(y, s, n_simulations=50)
    b = calibration(y[perm], s[perm], n_simulations=50)
    assert a.slope == b.slope or a.slope.estimate == pytest.approx(b.slope.estimate, rel=1e-12)
    assert a.hosmer_lemeshow == pytest.approx(b.hosmer_lemeshow, rel=1e-12)
    assert a.ece.ece == pytest.approx(b.ece.ece, abs=1e-15)


def test_one_class_slope_nan():
    with pytest.warns(UndefinedMetricWarning, match="calibration_slope"):
        slope, intercept = calibration_slope_intercept(np.ones(10, int), np.linspace(0.1, 0.9, 10))
    assert math.isnan(slope.estimate) and math.isnan(intercept.estimate)


def test_bad_parameters(miscal):
    y, s, _ = miscal
    with pytest.raises(
        MedlensError, match="'n_bins' parameter of reliability_curve must be an int >= 2. Got 1"
    ):
        reliability_curve(y, s, n_bins=1)
    with pytest.raises(MedlensError, match="'strategy' parameter"):
        reliability_curve(y, s, strategy="kmeans")
    with pytest.raises(MedlensError, match="'n_groups' parameter"):
        hosmer_lemeshow(y, s, n_groups=2)
    with pytest.raises(InputDataError, match=r"outside \[0, 1\]"):
        brier_score([0, 1], [0.2, 1.2])


def test_slope_intercept_undefined_under_perfect_separation_is_nan_with_note():
    """A cohort the model separates perfectly has no finite MLE: NaN + note, not a crash."""
    from medlens.validation import UndefinedMetricWarning, calibration_slope_intercept

    y = np.array([0] * 20 + [1] * 10)
    s = np.r_[np.linspace(0.001, 0.2, 20), np.linspace(0.8, 0.999, 10)]
    with pytest.warns(UndefinedMetricWarning, match="calibration_slope"):
        slope, intercept = calibration_slope_intercept(y, s, cohort="site=a")
    assert math.isnan(slope.estimate) and "separate" in slope.note
    assert math.isfinite(intercept.estimate) or "separate" in intercept.note


@pytest.mark.parametrize("shift", [-1.0, 1.0])
def test_calibration_in_the_large_is_observed_minus_expected(shift):
    # Van Calster et al. (2016, 2019): calibration-in-the-large compares the observed
    # event rate with the mean predicted risk; its logistic form, the intercept a of
    # logit P(y=1) = a + offset(logit(score)), is negative when risks are over-estimated.
    # medlens reports mean(y) - mean(score), with the same sign as that intercept.
    rng = np.random.default_rng(5)
    lp = rng.normal(-0.5, 1.2, 400)
    y = (rng.random(400) < 1 / (1 + np.exp(-lp))).astype(int)
    s = 1 / (1 + np.exp(-(lp + shift)))  # shift > 0: over-estimated risks
    r = calibration(y, s, n_simulations=20)
    assert r.calibration_in_the_large == pytest.approx(y.mean() - s.mean(), abs=1e-15)
    assert r.params["calibration_in_the_large"].startswith("mean(label) - mean(score)")
    a = (
        sm.GLM(y, np.ones((400, 1)), family=sm.families.Binomial(), offset=np.log(s / (1 - s)))
        .fit()
        .params[0]
    )
    assert np.sign(r.calibration_in_the_large) == np.sign(a) == -np.sign(shift)
    assert np.sign(r.intercept.estimate) == np.sign(a)
