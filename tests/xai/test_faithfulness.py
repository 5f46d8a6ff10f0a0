"""Deletion/insertion curves and ROAD against closed forms and a reference implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.sparse import csc_matrix, lil_matrix
from scipy.sparse.linalg import spsolve
from torch import nn

from medlens._errors import InputDataError, MedlensError
from medlens.xai._faithfulness import (
    DeletionInsertionResult,
    RoadResult,
    deletion_insertion,
    morf_lerf_gap,
    noisy_linear_imputation,
    road,
)

H = W = 8


def linear_model(c: int = 1, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """Two logits; logit 1 = sum(w * x). Its exact explanation is w * x."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(c * H * W, 2, bias=False)
    w = torch.randn(c * H * W, generator=g)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.zeros_like(w), w]))
    return nn.Sequential(nn.Flatten(), lin).eval(), w.reshape(c, H, W)


@pytest.fixture
def setup():
    model, w = linear_model()
    x = torch.randn(3, 1, H, W, generator=torch.Generator().manual_seed(1))
    maps = (w * x)[:, 0].numpy().astype(np.float64)
    return model, w, x, maps


def _reference_deletion(w, x, maps, n_steps):
    """Loop implementation of the zero-baseline deletion curve of logit 1 (paper definition)."""
    n_pix = H * W
    out = []
    for i in range(x.shape[0]):
        order = sorted(range(n_pix), key=lambda p: (-maps[i].ravel()[p], p))
        contrib = (w * x[i]).ravel().numpy().astype(np.float64)
        curve = []
        for j in range(n_steps + 1):
            removed = set(order[: round(j / n_steps * n_pix)])
            curve.append(sum(contrib[p] for p in range(n_pix) if p not in removed))
        out.append(curve)
    return np.array(out)


def test_deletion_matches_closed_form_for_linear_model(setup):
    model, w, x, maps = setup
    res = deletion_insertion(model, x, maps, target=1, score="logit", baseline="zero", n_steps=8)
    ref = _reference_deletion(w, x, maps, 8)
    np.testing.assert_allclose(res.deletion, ref, atol=1e-4)
    # insertion from a zero baseline is the complement of deletion for a linear model
    np.testing.assert_allclose(res.insertion, ref[:, -1:] + ref[:, :1] - ref, atol=1e-4)
    np.testing.assert_allclose(res.fractions, np.linspace(0, 1, 9))
    np.testing.assert_allclose(
        res.deletion_auc, np.trapezoid(ref, np.linspace(0, 1, 9), axis=1), atol=1e-4
    )


def test_faithful_map_beats_random_order(setup):
    model, _, x, maps = setup
    res = deletion_insertion(model, x, maps, target=1, score="logit", baseline="zero", n_random=3)
    assert (res.deletion_auc < res.deletion_auc_random).all()
    assert (res.insertion_auc > res.insertion_auc_random).all()
    anti = deletion_insertion(model, x, -maps, target=1, score="logit", baseline="zero")
    assert (anti.deletion_auc > anti.deletion_auc_random).all()


def test_batch_size_invariance_and_evaluation_count(setup):
    model, _, x, maps = setup
    results = [
        deletion_insertion(model, x, maps, n_steps=5, n_random=2, batch_size=b, seed=3)
        for b in (1, 2, 1000)
    ]
    for r in results[1:]:
        for name in ("deletion", "insertion", "deletion_random", "insertion_random"):
            np.testing.assert_allclose(getattr(r, name), getattr(results[0], name), atol=1e-6)
    n, s, r = 3, 5, 2
    assert all(res.n_model_evaluations == n * (2 + 2 * (s - 1) * (1 + r)) for res in results)
    assert isinstance(results[0], DeletionInsertionResult)
    assert list(results[0].to_frame().columns)[:3] == ["case", "target", "deletion_auc"]


def test_random_baseline_is_seeded(setup):
    model, _, x, maps = setup
    a = deletion_insertion(model, x, maps, seed=5, n_steps=4)
    b = deletion_insertion(model, x, maps, seed=5, n_steps=4)
    c = deletion_insertion(model, x, maps, seed=6, n_steps=4)
    np.testing.assert_array_equal(a.deletion_random, b.deletion_random)
    assert not np.allclose(a.deletion_random, c.deletion_random)


@pytest.mark.parametrize("baseline", ["blur", "mean", "zero"])
def test_endpoints_use_documented_baseline(setup, baseline):
    model, w, x, maps = setup
    res = deletion_insertion(
        model, x, maps, target=1, score="logit", baseline=baseline, blur_sigma=1.5
    )
    xs = x.numpy().astype(np.float64)
    if baseline == "blur":
        base = ndimage.gaussian_filter(xs, sigma=[0, 0, 1.5, 1.5], mode="reflect")
    elif baseline == "mean":
        base = xs.mean(axis=(2, 3), keepdims=True) * np.ones_like(xs)
    else:
        base = np.zeros_like(xs)
    expected_end = (base * w.numpy()).reshape(3, -1).sum(1)
    np.testing.assert_allclose(res.deletion[:, -1], expected_end, atol=1e-4)
    np.testing.assert_allclose(res.insertion[:, 0], expected_end, atol=1e-4)
    np.testing.assert_allclose(
        res.deletion[:, 0], (xs * w.numpy()).reshape(3, -1).sum(1), atol=1e-4
    )


def test_patches_and_probability_and_callable_score():
    model, w = linear_model(c=2)
    x = torch.randn(2, 2, H, W, generator=torch.Generator().manual_seed(4))
    maps = (w * x).sum(1).numpy()
    res = deletion_insertion(
        model, x, maps, patch_size=3, n_steps=9, baseline="zero", target=[1, 1]
    )
    assert res.fractions[-1] == 1.0 and len(res.fractions) == 10  # 9 patches of a 8x8 grid
    logits = model(x).detach()
    np.testing.assert_allclose(
        res.deletion[:, 0], torch.softmax(logits, 1)[:, 1].numpy(), atol=1e-6
    )
    np.testing.assert_array_equal(res.targets, [1, 1])
    double = deletion_insertion(model, x, maps, score=lambda o: 2 * o, target=1, n_steps=3)
    np.testing.assert_allclose(double.deletion[:, 0], 2 * logits[:, 1].numpy(), atol=1e-5)
    assert double.params["score"] == "<lambda>"


def test_default_target_is_predicted_class(setup):
    model, _, x, maps = setup
    res = deletion_insertion(model, x, maps, n_steps=2)
    np.testing.assert_array_equal(res.targets, model(x).argmax(1).numpy())


# --------------------------------------------------------------------------- ROAD


def _rong_reference(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Re-typed from Rong et al.'s NoisyLinearImputer (road/imputations.py), noise = 0.

    mask: 1 = keep, 0 = impute. Written with lil_matrix and explicit loops, independently of
    medlens' vectorised construction.
    """
    weights = [((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
               ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6)]  # fmt: skip
    c, h, w = img.shape
    flat = img.reshape(c, -1)
    mflat = mask.ravel()
    idx = np.argwhere(mflat == 0).ravel()
    vidx = {p: k for k, p in enumerate(idx)}
    a = lil_matrix((len(idx), len(idx)))
    b = np.zeros((len(idx), c))
    for k, p in enumerate(idx):
        r, q = divmod(p, w)
        total = 0.0
        for (dr, dq), wt in weights:
            rr, qq = r + dr, q + dq
            if 0 <= rr < h and 0 <= qq < w:
                total += wt
                n = rr * w + qq
                if mflat[n] > 0.5:
                    b[k] -= wt * flat[:, n]
                else:
                    a[k, vidx[n]] = wt
        a[k, k] = -total
    res = spsolve(csc_matrix(a), b).reshape(len(idx), c)
    out = flat.copy()
    out[:, idx] = res.T
    return out.reshape(img.shape)


def test_imputation_matches_rong_reference():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(3, 9, 7))
    keep = rng.random((9, 7)) > 0.6
    got = noisy_linear_imputation(img, keep, noise=0.0, rng=rng)
    np.testing.assert_allclose(got, _rong_reference(img, keep.astype(float)), atol=1e-10)
    np.testing.assert_array_equal(got[:, keep], img[:, keep])


def test_imputation_reproduces_linear_ramp_and_noise_is_seeded():
    yy, xx = np.mgrid[:10, :10]
    img = (0.3 * yy + 0.7 * xx)[None].astype(float)
    keep = np.ones((10, 10), dtype=bool)
    keep[3:7, 2:8] = False  # interior hole: symmetric weights reproduce a linear function
    np.testing.assert_allclose(
        noisy_linear_imputation(img, keep, noise=0.0, rng=None), img, atol=1e-10
    )
    a = noisy_linear_imputation(img, keep, noise=0.5, rng=np.random.default_rng(1))
    b = noisy_linear_imputation(img, keep, noise=0.5, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert 0.2 < np.std(a[0][~keep] - img[0][~keep]) < 0.8


def test_road_morf_below_lerf_for_faithful_map(setup):
    model, _, x, maps = setup
    res = road(model, x, maps, target=1, score="logit", percentages=(0.2, 0.5, 0.8), batch_size=4)
    assert isinstance(res, RoadResult)
    assert (res.morf < res.lerf).all()
    assert (res.lerf_minus_morf > 0).all()
    assert res.n_model_evaluations == 3 + 3 * 2 * 3
    again = road(
        model, x, maps, target=1, score="logit", percentages=(0.2, 0.5, 0.8), batch_size=64
    )
    np.testing.assert_allclose(again.morf, res.morf, atol=1e-5)
    assert len(res.to_frame()) == 9
    np.testing.assert_allclose(res.original, model(x)[:, 1].detach().numpy(), atol=1e-6)


def test_road_scores_equal_model_on_imputed_images(setup):
    model, _, x, maps = setup
    res = road(model, x[:1], maps[:1], target=1, score="logit", percentages=(0.25,), noise=0.0)
    order = np.argsort(-maps[0].ravel(), kind="stable")
    keep = np.ones(H * W, dtype=bool)
    keep[order[:16]] = False
    imputed = _rong_reference(x[0].numpy().astype(np.float64), keep.reshape(H, W).astype(float))
    expected = model(torch.as_tensor(imputed[None], dtype=torch.float32))[0, 1].item()
    assert res.morf[0, 0] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n_steps": 0}, MedlensError, "'n_steps' parameter of deletion_insertion"),
        ({"baseline": "noise"}, MedlensError, "'baseline' parameter"),
        ({"batch_size": 0}, MedlensError, "'batch_size' parameter"),
        ({"score": "softmax"}, MedlensError, "'score' parameter"),
        ({"target": 5}, InputDataError, r"target of deletion_insertion must be"),
        ({"target": [0, 1]}, InputDataError, "one index per image"),
        ({"blur_sigma": -1.0}, MedlensError, "'blur_sigma'"),
        ({"score": lambda o: o[:, :1]}, InputDataError, "must map model outputs"),
    ],
)
def test_deletion_bad_parameters(setup, kwargs, exc, match):
    model, _, x, maps = setup
    with pytest.raises(exc, match=match):
        deletion_insertion(model, x, maps, n_steps=kwargs.pop("n_steps", 2), **kwargs)


def test_bad_images_and_maps(setup):
    model, _, x, maps = setup
    with pytest.raises(InputDataError, match="images of deletion_insertion must be"):
        deletion_insertion(model, x[0, 0], maps)
    with pytest.raises(InputDataError, match="images of road must be"):
        road(model, x.long(), maps)
    with pytest.raises(InputDataError, match=r"maps of road must have shape \(N, \*spatial\)"):
        road(model, x, maps[:, None])
    with pytest.raises(MedlensError, match="'percentages' parameter of road"):
        road(model, x, maps, percentages=(0.5, 1.0))
    with pytest.raises(InputDataError, match="at least one kept pixel"):
        road(model, x, maps, percentages=(0.999,))
    with pytest.raises(InputDataError, match="needs image"):
        noisy_linear_imputation(np.ones((1, 4, 4)), np.ones((4, 5), bool), noise=0, rng=None)
    with pytest.raises(MedlensError, match="'noise' parameter of road"):
        road(model, x, maps, noise=-0.1)


def test_volumes_work_for_deletion_and_road():
    from medlens.testing import TinyCNN

    torch.manual_seed(0)
    model = TinyCNN(1, 2, width=2, depth=2, spatial_dims=3).eval()
    x = torch.randn(2, 1, 6, 6, 6, generator=torch.Generator().manual_seed(2))
    maps = np.random.default_rng(0).normal(size=(2, 6, 6, 6))
    res = deletion_insertion(model, x, maps, n_steps=3, patch_size=2, baseline="blur")
    assert res.deletion.shape == (2, 4) and np.isfinite(res.deletion).all()
    r = road(model, x, maps, percentages=(0.3,))
    assert r.morf.shape == (2, 1) and np.isfinite(r.lerf).all()
    # an interior hole in a linear 3D ramp is reproduced exactly (N-D neighbour weights)
    zz, yy, xx = np.mgrid[:6, :6, :6]
    ramp = (0.2 * zz + 0.3 * yy - 0.5 * xx)[None].astype(float)
    keep = np.ones((6, 6, 6), dtype=bool)
    keep[2:4, 2:4, 1:5] = False
    np.testing.assert_allclose(
        noisy_linear_imputation(ramp, keep, noise=0, rng=None), ramp, atol=1e-10
    )


# --------------------------------------------------------------------------- LeRF vs MoRF


def test_raw_curves_are_the_logit_curves_and_gap_matches_explicit_lerf(setup):
    model, _, x, maps = setup
    prob = deletion_insertion(model, x, maps, n_steps=4, score="probability")
    logit = deletion_insertion(model, x, maps, n_steps=4, score="logit")
    assert prob.n_model_evaluations == logit.n_model_evaluations  # raw curves cost nothing
    np.testing.assert_allclose(prob.deletion_raw, logit.deletion, rtol=1e-6)
    np.testing.assert_allclose(prob.insertion_raw, logit.insertion, rtol=1e-6)
    # LeRF = deleting the least relevant first = deletion of the negated map
    lerf = deletion_insertion(model, x, -maps, n_steps=4, score="logit")
    explicit = morf_lerf_gap(logit.deletion, lerf.deletion, logit.fractions)
    np.testing.assert_allclose(prob.morf_lerf_gap, explicit, atol=1e-6)


@pytest.mark.filterwarnings("ignore:.*constant.*:RuntimeWarning")
def test_audit_road_matches_the_rong_definition():
    """run_audit(with_road=True) gives, for every case and fraction, the model's score on the
    image whose top (MoRF) / bottom (LeRF) pixels were replaced by Rong et al.'s noisy linear
    imputation, with the documented noise stream (case, order, fraction)."""
    import pandas as pd

    from medlens.testing import TinyCNN
    from medlens.xai._audit import run_audit

    torch.manual_seed(0)
    model = TinyCNN(in_channels=1, num_outputs=2, width=4, depth=2).eval()
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    cases = pd.DataFrame({"site": ["a", "b", "a"]}, index=["c0", "c1", "c2"])
    res = run_audit(
        model,
        x,
        cases,
        methods=("saliency",),
        with_road=True,
        seed=5,
        sanity_cases=1,
        sensitivity_cases=1,
        n_steps=2,
        label_column=None,
    )
    a = res.audits["saliency"]
    rd = a.road
    assert rd is not None and a.evaluations["road"] == rd.n_model_evaluations
    assert rd.n_model_evaluations == 3 + 3 * 2 * len(rd.percentages)
    rng = np.random.default_rng(5)
    x_np = x.numpy().astype(np.float64)
    n_pix = 144
    for i in range(3):
        order = np.argsort(-a.maps[i].ravel(), kind="stable")
        for oi, ranked in enumerate((order, order[::-1])):
            for pi, p in enumerate(rd.percentages):
                keep = np.ones(n_pix)
                keep[ranked[: round(p * n_pix)]] = 0
                img = _rong_reference(x_np[i], keep.reshape(12, 12))
                miss = np.flatnonzero(keep == 0)
                img.reshape(1, -1)[:, miss] += 0.01 * rng.standard_normal((1, miss.size))
                with torch.no_grad():
                    out = model(torch.as_tensor(img[None], dtype=torch.float32))
                want = torch.softmax(out, 1)[0, int(a.targets[i])].item()
                got = (rd.morf if oi == 0 else rd.lerf)[i, pi]
                assert got == pytest.approx(want, abs=1e-5)
    np.testing.assert_array_equal(rd.targets, a.targets)
