from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import balanced_accuracy_score, confusion_matrix
from sklearn.metrics import f1_score as sk_f1
from statsmodels.stats.proportion import proportion_confint

from medlens._errors import InputDataError, MedlensError
from medlens.validation import (
    ConfusionCounts,
    UndefinedMetricWarning,
    accuracy,
    balanced_accuracy,
    confusion_counts,
    f1_score,
    likelihood_ratio_negative,
    likelihood_ratio_positive,
    npv,
    ppv,
    predict_at_threshold,
    sensitivity,
    specificity,
    youden_j,
)


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.3).astype(int)
    p = np.where(rng.random(300) < 0.8, y, 1 - y)
    return y, p


def test_confusion_counts_matches_sklearn(data):
    y, p = data
    tn, fp, fn, tp = confusion_matrix(y, p, labels=[0, 1]).ravel()
    c = confusion_counts(y, p)
    assert (c.tp, c.fp, c.tn, c.fn) == (tp, fp, tn, fn)
    assert c.n == 300 and c.n_positive == int(y.sum())


def test_order_invariance(data):
    y, p = data
    perm = np.random.default_rng(1).permutation(y.size)
    assert confusion_counts(y, p) == confusion_counts(y[perm], p[perm])


def test_metrics_against_references(data):
    y, p = data
    c = confusion_counts(y, p)
    se = sensitivity(y, p)
    assert se.estimate == c.tp / (c.tp + c.fn)
    assert (se.ci_low, se.ci_high) == pytest.approx(
        proportion_confint(c.tp, c.tp + c.fn, method="wilson"), abs=1e-12
    )
    assert (se.numerator, se.denominator) == (c.tp, c.tp + c.fn)
    sp = specificity(c, ci="clopper-pearson")
    assert (sp.ci_low, sp.ci_high) == pytest.approx(
        proportion_confint(c.tn, c.tn + c.fp, method="beta"), abs=1e-12
    )
    assert ppv(c).estimate == c.tp / (c.tp + c.fp)
    assert npv(c, ci="jeffreys").estimate == c.tn / (c.tn + c.fn)
    assert accuracy(c).estimate == pytest.approx(np.mean(y == p))
    assert balanced_accuracy(c).estimate == pytest.approx(balanced_accuracy_score(y, p), abs=1e-15)
    assert f1_score(c).estimate == pytest.approx(sk_f1(y, p), abs=1e-15)
    assert youden_j(c).estimate == pytest.approx(se.estimate + sp.estimate - 1, abs=1e-15)


def test_likelihood_ratios_log_method(data):
    y, p = data
    c = confusion_counts(y, p)
    lr = likelihood_ratio_positive(c)
    se, sp = c.tp / c.n_positive, c.tn / c.n_negative
    assert lr.estimate == pytest.approx(se / (1 - sp))
    # Simel et al. (1991): SE(log LR+) = sqrt(1/a - 1/(a+c) + 1/b - 1/(b+d))
    sd = math.sqrt(1 / c.tp - 1 / c.n_positive + 1 / c.fp - 1 / c.n_negative)
    z = stats.norm.ppf(0.975)
    assert lr.ci_low == pytest.approx(math.exp(math.log(lr.estimate) - z * sd))
    assert lr.ci_high == pytest.approx(math.exp(math.log(lr.estimate) + z * sd))
    lrn = likelihood_ratio_negative(c)
    assert lrn.estimate == pytest.approx((1 - se) / sp)


def test_ppv_npv_at_prevalence():
    c = ConfusionCounts(tp=90, fp=20, tn=180, fn=10)
    se, sp, pi = 0.9, 0.9, 0.05
    got = ppv(c, prevalence=pi)
    assert got.estimate == pytest.approx(se * pi / (se * pi + (1 - sp) * (1 - pi)))
    assert got.ci_low < got.estimate < got.ci_high
    got_n = npv(c, prevalence=pi)
    assert got_n.estimate == pytest.approx(sp * (1 - pi) / (sp * (1 - pi) + (1 - se) * pi))
    with pytest.raises(MedlensError, match="'prevalence' parameter"):
        ppv(c, prevalence=1.5)


def test_undefined_metrics_warn_and_nan():
    y = np.zeros(5, int)
    p = np.zeros(5, int)
    with pytest.warns(
        UndefinedMetricWarning, match="sensitivity is undefined for site=B: no positive cases"
    ):
        r = sensitivity(y, p, cohort="site=B")
    assert math.isnan(r.estimate) and math.isnan(r.ci_low) and r.denominator == 0
    assert "no positive cases" in r.note
    with pytest.warns(UndefinedMetricWarning, match="ppv"):
        assert math.isnan(ppv(y, p).estimate)
    with pytest.warns(UndefinedMetricWarning, match="lr_positive"):
        assert math.isnan(likelihood_ratio_positive(y, p).estimate)


def test_predict_at_threshold_convention():
    assert predict_at_threshold(np.array([0.2, 0.5, 0.7]), 0.5).tolist() == [0, 1, 1]
    with pytest.raises(MedlensError, match="'threshold' parameter"):
        predict_at_threshold(np.array([0.1]), float("nan"))


@pytest.mark.parametrize(
    "y,p,match",
    [
        ([0, 2, 1], [0, 1, 1], "only 0 and 1"),
        ([0, 1], [0, 1, 1], "same length"),
        ([[0, 1]], [[0, 1]], "one-dimensional"),
        (["a", "b"], [0, 1], "only 0 and 1"),
    ],
)
def test_bad_input(y, p, match):
    with pytest.raises(InputDataError, match=match):
        confusion_counts(y, p)


def test_bad_ci_method(data):
    y, p = data
    with pytest.raises(MedlensError, match="'ci' parameter of sensitivity"):
        sensitivity(y, p, ci="wald")
