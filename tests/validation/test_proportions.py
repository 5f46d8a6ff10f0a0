from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from medlens._errors import InputDataError, MedlensError
from medlens.validation import proportion_ci

CASES = [(0, 10), (1, 10), (5, 10), (10, 10), (17, 23), (3, 250), (99, 100), (1, 1)]


@pytest.mark.parametrize("k,n", CASES)
@pytest.mark.parametrize(
    "ours,theirs", [("wilson", "wilson"), ("clopper-pearson", "beta"), ("jeffreys", "jeffreys")]
)
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_matches_statsmodels(k, n, ours, theirs, alpha):
    lo, hi = proportion_ci(k, n, method=ours, alpha=alpha)
    rlo, rhi = proportion_confint(k, n, alpha=alpha, method=theirs)
    assert lo == pytest.approx(max(0.0, rlo), abs=1e-12)
    assert hi == pytest.approx(min(1.0, rhi), abs=1e-12)


def test_empty_denominator_is_nan():
    lo, hi = proportion_ci(0, 0)
    assert math.isnan(lo) and math.isnan(hi)


@pytest.mark.parametrize("k,n", [(-1, 5), (6, 5), (1.5, 3), (1, -2)])
def test_bad_counts(k, n):
    with pytest.raises(InputDataError, match="numerator and denominator"):
        proportion_ci(k, n)


def test_bad_method_and_alpha():
    with pytest.raises(MedlensError, match="'method' parameter of proportion_ci"):
        proportion_ci(1, 2, method="wald")
    with pytest.raises(MedlensError, match="'alpha' parameter of proportion_ci"):
        proportion_ci(1, 2, alpha=1.5)


def test_interval_contains_estimate():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 500))
        k = int(rng.integers(0, n + 1))
        for m in ("wilson", "clopper-pearson", "jeffreys"):
            lo, hi = proportion_ci(k, n, method=m)
            assert 0 <= lo <= hi <= 1
            if m != "jeffreys":
                assert lo <= k / n <= hi
