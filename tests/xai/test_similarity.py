"""Map similarity: Spearman, SSIM, top-k overlap and method agreement against references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from medlens._errors import InputDataError, MedlensError
from medlens.xai._similarity import (
    AGREEMENT_TOO_FEW,
    MethodAgreement,
    method_agreement,
    rank_correlation,
    ssim,
    top_k_overlap,
)


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 12, 10))
    b = a + rng.normal(scale=0.7, size=a.shape)
    return a, b


def test_rank_correlation_matches_scipy(pair):
    a, b = pair
    got = rank_correlation(a, b)
    ref = [
        spearmanr(np.abs(x).ravel(), np.abs(y).ravel()).statistic for x, y in zip(a, b, strict=True)
    ]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    signed = rank_correlation(a, b, absolute=False)
    ref_s = [spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(signed, ref_s, atol=1e-12)


def test_rank_correlation_with_ties_matches_scipy():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 3, size=(3, 8, 8)).astype(float)
    b = rng.integers(0, 3, size=(3, 8, 8)).astype(float)
    ref = [spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(rank_correlation(a, b), ref, atol=1e-12)


def test_rank_correlation_accepts_tensors_and_sign_flip(pair):
    a, _ = pair
    got = rank_correlation(torch.as_tensor(a), torch.as_tensor(-a))
    np.testing.assert_allclose(got, 1.0)
    np.testing.assert_allclose(rank_correlation(a, -a, absolute=False), -1.0)


def test_rank_correlation_constant_map_is_nan_with_warning(pair):
    a, b = pair
    a = a.copy()
    a[2] = 3.0
    with pytest.warns(
        RuntimeWarning, match=r"Spearman rank correlation is undefined for case\(s\) 2"
    ):
        got = rank_correlation(a, b)
    assert np.isnan(got[2]) and np.isfinite(got[[0, 1, 3]]).all()


def test_ssim_matches_skimage_with_documented_scaling(pair):
    a, b = pair
    got = ssim(a, b)
    ref = []
    for x, y in zip(np.abs(a), np.abs(b), strict=True):
        ref.append(structural_similarity(x / x.max(), y / y.max(), data_range=1.0, win_size=7))
    np.testing.assert_allclose(got, ref, atol=1e-12)
    got_s = ssim(a, b, absolute=False)
    ref_s = [
        structural_similarity(x / np.abs(x).max(), y / np.abs(y).max(), data_range=2.0)
        for x, y in zip(a, b, strict=True)
    ]
    np.testing.assert_allclose(got_s, ref_s, atol=1e-12)
    np.testing.assert_allclose(ssim(a, 5 * a), 1.0)  # scale-free


def test_ssim_small_maps_use_smaller_window_and_3d():
    rng = np.random.default_rng(2)
    a = rng.random((2, 5, 6))
    ref = [
        structural_similarity(x / x.max(), x**2 / (x**2).max(), data_range=1, win_size=5) for x in a
    ]
    np.testing.assert_allclose(ssim(a, a**2), ref, atol=1e-12)
    v = rng.random((1, 7, 8, 9))
    assert ssim(v, v)[0] == pytest.approx(1.0)


def test_ssim_zero_map_is_nan_and_bad_shapes_raise(pair):
    a, b = pair
    a = a.copy()
    a[0] = 0
    with pytest.warns(RuntimeWarning, match="SSIM is undefined"):
        assert np.isnan(ssim(a, b)[0])
    with pytest.raises(InputDataError, match="ssim needs spatial sides of at least 3"):
        ssim(np.ones((1, 2, 9)), np.ones((1, 2, 9)))
    with pytest.raises(MedlensError, match="'win_size' parameter of ssim"):
        ssim(b, b, win_size=4)


def _topk_reference(x: np.ndarray, y: np.ndarray, k: float) -> float:
    """Independent reference: sort (value desc, index asc) with Python's sorted()."""
    n = x.size
    m = int(np.ceil(k * n - 1e-9))
    top = lambda v: {i for _, i in sorted((-val, i) for i, val in enumerate(v.ravel()))[:m]}  # noqa: E731
    sa, sb = top(np.abs(x)), top(np.abs(y))
    return len(sa & sb) / len(sa | sb)


@pytest.mark.parametrize("k", [0.01, 0.1, 0.25, 1.0])
def test_top_k_overlap_matches_reference(pair, k):
    a, b = pair
    got = top_k_overlap(a, b, k=k)
    ref = [_topk_reference(x, y, k) for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(got, ref)


def test_top_k_overlap_ties_are_deterministic():
    a = np.zeros((1, 4, 4))  # all tied: the first ceil(k*n) flat indices are taken
    b = np.zeros((1, 4, 4))
    b[0, 0, 0] = 1.0  # b's top-2: index 0 (largest), then index 1 (first of the ties)
    assert top_k_overlap(a, b, k=2 / 16)[0] == pytest.approx(1.0)
    b2 = np.zeros((1, 4, 4))
    b2[0, 3, 3] = 1.0  # b2's top-2: index 15, then 0 -> overlap {0} of union {0, 1, 15}
    assert top_k_overlap(a, b2, k=2 / 16)[0] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: rank_correlation(np.ones((2, 3, 3)), np.ones((2, 3, 4))), "same shape"),
        (lambda: rank_correlation(np.ones(3), np.ones(3)), r"shape \(N, \*spatial\)"),
        (lambda: rank_correlation(np.array([["a"]]), np.array([["b"]])), "numeric array"),
        (lambda: rank_correlation(np.full((1, 3), np.nan), np.ones((1, 3))), "NaN or infinite"),
        (lambda: top_k_overlap(np.ones((1, 3)), np.ones((1, 3)), k=0), "'k' parameter"),
        (lambda: top_k_overlap(np.ones((1, 3)), np.ones((1, 3)), k=1.5), "'k' parameter"),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises(MedlensError, match=match):
        call()


def test_method_agreement_matrix_and_frame(pair):
    a, b = pair
    res = method_agreement({"saliency": a, "gradcam": b, "copy": a.copy()}, k=0.2)
    assert isinstance(res, MethodAgreement)
    assert res.methods == ("saliency", "gradcam", "copy")
    np.testing.assert_allclose(np.diag(res.rank_correlation), 1.0)
    np.testing.assert_allclose(res.rank_correlation, res.rank_correlation.T)
    assert res.rank_correlation[0, 1] == pytest.approx(rank_correlation(a, b).mean())
    assert res.top_k_overlap[0, 1] == pytest.approx(top_k_overlap(a, b, k=0.2).mean())
    assert res.rank_correlation[0, 2] == pytest.approx(1.0)
    frame = res.to_frame()
    assert list(frame.columns) == [
        "method_a",
        "method_b",
        "n",
        "rank_correlation",
        "top_k_overlap",
        "k",
    ]
    assert len(frame) == 3 and (frame["n"] == 4).all()
    with pytest.raises(InputDataError, match=AGREEMENT_TOO_FEW.format(n=1)[:30]):
        method_agreement({"only": a})
    with pytest.raises(InputDataError, match="same shape"):
        method_agreement({"x": a, "y": b[:, :5]})


def test_sample_order_invariance(pair):
    a, b = pair
    perm = np.array([2, 0, 3, 1])
    np.testing.assert_allclose(rank_correlation(a[perm], b[perm]), rank_correlation(a, b)[perm])
    np.testing.assert_allclose(top_k_overlap(a[perm], b[perm]), top_k_overlap(a, b)[perm])
