"""Helpers of one group's estimates: percentile intervals, bootstrap p-values, design effects."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medlens.validation._groups import bootstrap_p, design_effect, percentile_ci


def test_percentile_ci_leaves_out_undefined_replicates():
    rng = np.random.default_rng(0)
    reps = rng.normal(size=400)
    lo, hi, note = percentile_ci(reps, 0.05)
    assert (lo, hi) == tuple(np.quantile(reps, [0.025, 0.975])) and note is None
    reps[:50] = np.nan
    lo, hi, note = percentile_ci(reps, 0.1)
    assert (lo, hi) == tuple(np.quantile(reps[50:], [0.05, 0.95]))
    assert note == "50 of 400 bootstrap replicates undefined and left out"
    reps[:250] = np.nan
    lo, hi, note = percentile_ci(reps, 0.05)
    assert math.isnan(lo) and math.isnan(hi)
    assert note == "only 150 of 400 bootstrap replicates defined"


def test_bootstrap_p_two_sided():
    d = np.r_[np.full(90, 1.0), np.full(9, -1.0), np.nan]
    assert bootstrap_p(d, 0.5, 0.1) == pytest.approx(2 * (9 + 1) / (99 + 1))
    assert bootstrap_p(np.ones(50), 1.0, 1.0) == pytest.approx(2 / 51)
    assert bootstrap_p(np.r_[np.ones(50), -np.ones(50)], 0.0, -1.0) == 1.0
    assert math.isnan(bootstrap_p(d, math.nan, 0.1))
    assert math.isnan(bootstrap_p(d, 0.5, math.nan))


def test_design_effect_of_singletons_and_duplicated_patients():
    rng = np.random.default_rng(1)
    k = 80
    x = (rng.random(k) < 0.3).astype(np.int8)
    ones = np.ones(k, dtype=np.int8)
    # one case per patient: the ratio of the cluster and binomial variances is k / (k - 1)
    assert design_effect(x, ones, np.arange(k)) == pytest.approx(k / (k - 1), rel=1e-12)
    # every patient twice with the same outcome: twice the information counted -> 2k/(k-1)
    deff = design_effect(np.repeat(x, 2), np.repeat(ones, 2), np.repeat(np.arange(k), 2))
    assert deff == pytest.approx(2 * k / (k - 1), rel=1e-12)
    # undefined: fewer than 2 cases, a single cluster, or p in {0, 1}
    assert math.isnan(design_effect(x[:1], ones[:1], np.arange(1)))
    assert math.isnan(design_effect(x, ones, np.zeros(k, dtype=np.int64)))
    assert math.isnan(design_effect(np.zeros(k), ones, np.arange(k)))
