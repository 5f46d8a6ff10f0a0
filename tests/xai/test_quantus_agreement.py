"""Agreement with Quantus 0.6 where it implements the same metric (test-only dependency).

Definitions compared, and where they differ:

* Pointing game: same definition (hit if any pixel attaining the maximum is in the mask; Quantus
  first divides by the max, which does not move the maximum). Exact agreement. Difference: for an
  empty mask Quantus writes NaN into a boolean array, which becomes True (a hit); medlens returns
  NaN with a warning. Tested below.
* Relevance mass accuracy: Quantus uses the signed map (``abs=False``) and divides by the max
  (the ratio is scale-free). medlens' default counts only positive relevance (Arras et al.);
  with ``attribution="signed"`` it equals Quantus, with ``"absolute"`` it equals Quantus
  ``abs=True``, and the default equals Quantus on ``max(map, 0)``. Tolerance 1e-6 (Quantus
  computes in float32).
* Relevance rank accuracy: same definition; Quantus' ``np.argsort`` is not stable, so maps here
  have no ties (medlens breaks ties by the lower flat index). Exact agreement with
  ``attribution="signed"``.
* Max-sensitivity: same definition (Frobenius norm of the difference over the norm of the
  original map, uniform noise in an L-infinity ball, maximum over samples) when Quantus is given
  the same noise: its ``perturb_func`` draws from the same seeded generator in the same
  (sample-major) order. Tolerance rtol 1e-4 (Quantus adds float64 noise to float32 inputs).
* Model parameter randomisation (MPRT, cascading "top_down"): same layers (modules with
  ``reset_parameters``), same order and the same Spearman similarity. The only difference is
  the seed rule: Quantus re-seeds every layer with ``seed + 1``, medlens each layer with
  ``seed + position``; swapping medlens' ``_layer_seed`` for Quantus' rule gives the same
  values to 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlens.testing import TinyCNN
from medlens.xai import _randomisation
from medlens.xai._localisation import (
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)
from medlens.xai._randomisation import sanity_check
from medlens.xai._robustness import max_sensitivity

quantus = pytest.importorskip("quantus")

N, S = 6, 16


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = TinyCNN(1, 2, width=4, depth=3).eval()
    x = rng.normal(size=(N, 1, S, S)).astype(np.float32)
    y = np.array([0, 1] * (N // 2))
    a = rng.normal(size=(N, 1, S, S)).astype(np.float32)
    s = np.zeros((N, 1, S, S), dtype=np.float32)
    for i in range(N):
        r, c = rng.integers(0, 10, 2)
        s[i, :, r : r + 6, c : c + 5] = 1
    a[0][s[0] > 0] += 3  # at least one hit
    return model, x, y, a, s


def _q(metric, model, x, y, a, s):
    return np.asarray(metric(model=model, x_batch=x, y_batch=y, a_batch=a, s_batch=s), dtype=float)


def test_pointing_game_agrees(data):
    model, x, y, a, s = data
    q = _q(quantus.PointingGame(disable_warnings=True), model, x, y, a, s)
    ours = pointing_game(a[:, 0], s[:, 0])
    np.testing.assert_array_equal(ours, q)
    assert ours.sum() >= 1


def test_pointing_game_empty_mask_difference_is_exactly_nan_vs_true(data):
    model, x, y, a, s = data
    s = s.copy()
    s[1] = 0
    q = _q(quantus.PointingGame(disable_warnings=True), model, x, y, a, s)
    with pytest.warns(RuntimeWarning, match="pointing game is undefined"):
        ours = pointing_game(a[:, 0], s[:, 0])
    assert q[1] == 1.0 and np.isnan(ours[1])  # Quantus counts an empty mask as a hit
    keep = np.arange(N) != 1
    np.testing.assert_array_equal(ours[keep], q[keep])


def test_relevance_mass_accuracy_agrees_per_convention(data):
    model, x, y, a, s = data
    q_signed = _q(quantus.RelevanceMassAccuracy(disable_warnings=True), model, x, y, a, s)
    q_abs = _q(quantus.RelevanceMassAccuracy(abs=True, disable_warnings=True), model, x, y, a, s)
    q_pos = _q(
        quantus.RelevanceMassAccuracy(disable_warnings=True), model, x, y, np.clip(a, 0, None), s
    )
    np.testing.assert_allclose(
        relevance_mass_accuracy(a[:, 0], s[:, 0], attribution="signed"),
        q_signed,
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        relevance_mass_accuracy(a[:, 0], s[:, 0], attribution="absolute"),
        q_abs,
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        relevance_mass_accuracy(a[:, 0], s[:, 0]), q_pos, rtol=1e-5, atol=1e-6
    )


def test_relevance_rank_accuracy_agrees(data):
    model, x, y, a, s = data
    q = _q(quantus.RelevanceRankAccuracy(disable_warnings=True), model, x, y, a, s)
    np.testing.assert_allclose(
        relevance_rank_accuracy(a[:, 0], s[:, 0], attribution="signed"), q, atol=1e-12
    )


def _input_x_gradient(model, inputs, targets=None, **kwargs):
    t = torch.as_tensor(inputs, dtype=torch.float32).requires_grad_()
    tg = torch.ones(len(t), dtype=torch.long) if targets is None else torch.as_tensor(targets)
    model(t)[torch.arange(len(t)), tg].sum().backward()
    return (t.grad * t).detach().numpy()


def test_max_sensitivity_agrees_with_same_noise(data):
    model, x, y, _, _ = data
    radius, n_samples, seed = 0.1, 5, 3
    rng = np.random.default_rng(seed)

    def same_noise(arr, indices, indexed_axes=None, **kwargs):
        return arr + rng.uniform(-radius, radius, size=arr.shape)

    q = quantus.MaxSensitivity(
        nr_samples=n_samples, perturb_func=same_noise, disable_warnings=True
    )(model=model, x_batch=x, y_batch=y, a_batch=None, explain_func=_input_x_gradient)

    def explain(m, images):
        return _input_x_gradient(m, images, y)[:, 0]

    ours = max_sensitivity(
        explain,
        model,
        torch.as_tensor(x),
        radius=radius,
        n_samples=n_samples,
        seed=seed,
        batch_size=N,
    )
    np.testing.assert_allclose(ours.values, np.asarray(q, dtype=float), rtol=1e-4)


def _abs_gradient(model, inputs, targets=None, **kwargs):
    t = torch.as_tensor(inputs, dtype=torch.float32).requires_grad_()
    tg = torch.ones(len(t), dtype=torch.long) if targets is None else torch.as_tensor(targets)
    model(t)[torch.arange(len(t)), tg].sum().backward()
    return t.grad.abs().detach().numpy()


@pytest.fixture
def quantus_mprt(data):
    model, x, y, _, _ = data
    scores = quantus.MPRT(seed=5, abs=False, normalise=False, disable_warnings=True)(
        model=model, x_batch=x, y_batch=y, a_batch=None, explain_func=_abs_gradient
    )
    return {k: np.asarray(v, dtype=float) for k, v in scores.items()}


def test_mprt_agrees_under_quantus_seed_rule(data, quantus_mprt, monkeypatch):
    model, x, y, _, _ = data
    monkeypatch.setattr(_randomisation, "_layer_seed", lambda seed, position: seed + 1)
    res = sanity_check(
        lambda m, im: _abs_gradient(m, im, y)[:, 0],
        model,
        torch.as_tensor(x),
        mode="cascading",
        seed=5,
    )
    assert list(res.layers) == [k for k in quantus_mprt if k != "original"]
    for i, layer in enumerate(res.layers):
        np.testing.assert_allclose(res.spearman[i], quantus_mprt[layer], atol=1e-6)


def test_mprt_difference_is_only_the_seed_rule(data, quantus_mprt):
    model, x, y, _, _ = data
    res = sanity_check(
        lambda m, im: _abs_gradient(m, im, y)[:, 0],
        model,
        torch.as_tensor(x),
        mode="cascading",
        seed=5,
    )
    # with medlens' own rule only the top layer (position 3 -> seed 8, Quantus: 6) differs ...
    assert not np.allclose(res.spearman[0], quantus_mprt["classifier"], atol=1e-6)
    # ... and choosing medlens' seed so that the top layer gets Quantus' seed (5 + 1 = s + 3)
    # reproduces Quantus' first step exactly
    first = sanity_check(
        lambda m, im: _abs_gradient(m, im, y)[:, 0], model, torch.as_tensor(x), mode="cascading",
        seed=3, layers=["classifier"],
    )  # fmt: skip
    np.testing.assert_allclose(first.spearman[0], quantus_mprt["classifier"], atol=1e-6)
