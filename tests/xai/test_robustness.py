"""Max-sensitivity against a closed form on a linear model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medlens._errors import ExplanationError, InputDataError, MedlensError
from medlens.xai._robustness import MaxSensitivityResult, max_sensitivity


@pytest.fixture
def linear():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 6, 6, generator=g)
    x = torch.randn(4, 1, 6, 6, generator=g)
    return w, x


def input_x_weight(w):
    """Input x gradient of the linear score sum(w * x): an explanation that moves with x."""

    def explain(model, images):
        return (w * images)[:, 0]

    return explain


def test_matches_closed_form(linear):
    w, x = linear
    res = max_sensitivity(input_x_weight(w), nn.Identity(), x, radius=0.1, n_samples=5, seed=3)
    rng = np.random.default_rng(3)
    wn, xn = w.numpy().astype(np.float64), x.numpy().astype(np.float64)
    ratios = np.empty((4, 5))
    for j in range(5):  # sample-major draws, one (N, C, H, W) block per sample
        d = rng.uniform(-0.1, 0.1, size=xn.shape)
        for i in range(4):
            ratios[i, j] = np.linalg.norm(wn * d[i]) / np.linalg.norm(wn * xn[i])
    np.testing.assert_allclose(res.per_sample, ratios, rtol=1e-5)
    np.testing.assert_allclose(res.values, ratios.max(axis=1), rtol=1e-5)
    assert isinstance(res, MaxSensitivityResult)
    assert res.n_explanations == 4 + 20


def test_constant_explanation_has_zero_sensitivity(linear):
    w, x = linear
    res = max_sensitivity(
        lambda m, im: w.expand(im.shape[0], 1, 6, 6), nn.Identity(), x, n_samples=3
    )
    np.testing.assert_array_equal(res.values, 0.0)


def test_batch_size_invariance_and_precomputed_maps(linear):
    w, x = linear
    fn = input_x_weight(w)
    a = max_sensitivity(fn, nn.Identity(), x, n_samples=6, batch_size=1)
    b = max_sensitivity(fn, nn.Identity(), x, n_samples=6, batch_size=5)
    c = max_sensitivity(fn, nn.Identity(), x, n_samples=6, maps=(w * x)[:, 0])
    np.testing.assert_allclose(a.values, b.values, rtol=1e-6)
    np.testing.assert_allclose(a.values, c.values, rtol=1e-6)
    assert c.n_explanations == 24


def test_larger_radius_is_more_sensitive(linear):
    w, x = linear
    small = max_sensitivity(input_x_weight(w), nn.Identity(), x, radius=0.01)
    large = max_sensitivity(input_x_weight(w), nn.Identity(), x, radius=0.1)
    assert (large.values > small.values).all()


def test_zero_explanation_is_nan_with_warning(linear):
    w, x = linear
    x = x.clone()
    x[1] = 0
    with pytest.warns(RuntimeWarning, match=r"max-sensitivity is undefined for case\(s\) 1"):
        res = max_sensitivity(input_x_weight(w), nn.Identity(), x)
    assert np.isnan(res.values[1]) and np.isfinite(res.values[[0, 2, 3]]).all()


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"radius": 0}, MedlensError, "'radius' parameter of max_sensitivity"),
        ({"n_samples": 0}, MedlensError, "'n_samples' parameter"),
        ({"batch_size": 0}, MedlensError, "'batch_size' parameter"),
        ({"maps": np.ones((2, 6, 6))}, ExplanationError, "expected"),
    ],
)
def test_bad_parameters(linear, kwargs, exc, match):
    w, x = linear
    with pytest.raises(exc, match=match):
        max_sensitivity(input_x_weight(w), nn.Identity(), x, **kwargs)


def test_bad_explainer_and_images(linear):
    w, x = linear
    with pytest.raises(ExplanationError, match=r"explain_fn returned maps of shape \(4, 36\)"):
        max_sensitivity(lambda m, im: im.reshape(im.shape[0], -1), nn.Identity(), x)
    with pytest.raises(MedlensError, match="'explain_fn' parameter"):
        max_sensitivity("saliency", nn.Identity(), x)
    with pytest.raises(InputDataError, match="images of max_sensitivity"):
        max_sensitivity(input_x_weight(w), nn.Identity(), x[0, 0])
