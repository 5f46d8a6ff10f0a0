"""Pointwise ROC band: point estimate and bootstrap percentiles against independent code."""

from __future__ import annotations

import re

import numpy as np
import pytest

from medlens._errors import InputDataError, MedlensError
from medlens.validation import replicate_weights, sensitivity_at_specificity
from medlens.validation._roc_band import DEFAULT_FPR_GRID, ONE_CLASS, RocBand, roc_band


def _data(n: int = 80, seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    patient = rng.integers(0, n // 2, n)
    y = (rng.random(n) < 0.4).astype(int)
    s = np.round(np.clip(0.4 * y + rng.normal(0.3, 0.2, n), 0, 1), 2)  # ties on purpose
    site = np.array(["a", "b"])[patient % 2]
    return y, s, patient, site


def _sklearn_tpr_at(y: np.ndarray, s: np.ndarray, w: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Best sensitivity with FPR <= f of the weighted empirical ROC, via sklearn."""
    from sklearn.metrics import roc_curve

    if w[y == 1].sum() == 0 or w[y == 0].sum() == 0:
        return np.full(grid.size, np.nan)
    fpr, tpr, _ = roc_curve(y, s, sample_weight=w, drop_intermediate=False)
    return np.array([tpr[fpr <= f + 1e-12].max() for f in grid])


def test_point_estimate_is_sensitivity_at_specificity() -> None:
    y, s, _, _ = _data()
    band = roc_band(y, s, n_replicates=5)
    assert isinstance(band, RocBand)
    assert band.fpr == DEFAULT_FPR_GRID
    for f, t in zip(band.fpr, band.tpr, strict=True):
        expected, _ = sensitivity_at_specificity(y, s, target=min(1.0, 1 - f + 1e-12))
        assert t == pytest.approx(expected, abs=1e-12), f
    assert band.tpr[0] <= band.tpr[-1] == 1.0


def test_percentiles_equal_an_independent_weighted_bootstrap() -> None:
    """Same replicate weights, ROC per replicate by sklearn with sample weights."""
    y, s, patient, site = _data()
    grid = np.array([0.0, 0.05, 0.1, 0.25, 0.5, 0.9, 1.0])
    band = roc_band(y, s, clusters=patient, strata=site, fpr_grid=grid, n_replicates=150, seed=11)
    codes, cluster = np.unique(patient, return_inverse=True)
    first = np.array([np.flatnonzero(cluster == k)[0] for k in range(codes.size)])
    _, site_codes = np.unique(site, return_inverse=True)
    weights = np.concatenate(list(replicate_weights(site_codes[first], 150, 11)), axis=0)
    reps = np.array([_sklearn_tpr_at(y, s, w[cluster], grid) for w in weights])
    ok = ~np.isnan(reps[:, 0])
    np.testing.assert_allclose(band.tpr_low, np.quantile(reps[ok], 0.025, axis=0), atol=1e-12)
    np.testing.assert_allclose(band.tpr_high, np.quantile(reps[ok], 0.975, axis=0), atol=1e-12)
    assert band.n_valid == int(ok.sum()) and band.n_clusters == codes.size
    assert band.stratified and band.seed == 11
    assert np.all(np.array(band.tpr_low) <= np.array(band.tpr_high))


def test_invariant_to_case_order_and_deterministic() -> None:
    y, s, patient, site = _data()
    a = roc_band(y, s, clusters=patient, n_replicates=60, seed=3)
    assert a == roc_band(y, s, clusters=patient, n_replicates=60, seed=3)
    perm = np.random.default_rng(0).permutation(y.size)
    b = roc_band(y[perm], s[perm], clusters=patient[perm], n_replicates=60, seed=3)
    assert a.tpr == b.tpr
    d = a.to_dict()
    assert d["fpr"] == list(a.fpr) and d["method"] == a.method


def test_bad_input() -> None:
    y, s, _, _ = _data(20)
    with pytest.raises(InputDataError, match=re.escape(ONE_CLASS.format(n_pos=0, n_neg=3))):
        roc_band([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(InputDataError, match="differ in length"):
        roc_band([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(InputDataError, match="clusters"):
        roc_band(y, s, clusters=[1, 2])
    with pytest.raises(InputDataError, match="non-finite"):
        roc_band([0, 1], [0.1, np.nan])
    with pytest.raises(InputDataError, match="only 0 and 1"):
        roc_band([0, 2], [0.1, 0.2])
    with pytest.raises(MedlensError, match="'n_replicates' parameter of roc_band"):
        roc_band(y, s, n_replicates=0)
    with pytest.raises(MedlensError, match="'level' parameter of roc_band"):
        roc_band(y, s, level=1.5)
    with pytest.raises(MedlensError, match="'fpr_grid' parameter of roc_band"):
        roc_band(y, s, fpr_grid=[0.5, 1.2])
    with pytest.raises(MedlensError, match="'seed' parameter of roc_band"):
        roc_band(y, s, seed=-1)
