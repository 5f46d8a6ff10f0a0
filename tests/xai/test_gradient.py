"""The captum-backed methods return exactly what captum returns for the same settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import (
    DeepLift,
    GradientShap,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    NoiseTunnel,
    Occlusion,
    Saliency,
)

from medlens._errors import MedlensError
from medlens.xai import get_explainer, make_baseline

from .conftest import blob_images, tiny

pytestmark = pytest.mark.filterwarnings(
    "ignore:Setting forward, backward hooks:UserWarning",
    "ignore:Setting backward hooks on ReLU:UserWarning",
    "ignore:Input Tensor 0 did not already require gradients:UserWarning",
)

EXACT = {"rtol": 1e-6, "atol": 1e-9}


def _ref(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def _ours(result):
    return torch.from_numpy(result.maps[:, 0])


@pytest.mark.parametrize(
    ("name", "algo", "kwargs"),
    [
        ("saliency", Saliency, {"abs": True}),
        ("input_x_gradient", InputXGradient, {}),
        ("guided_backprop", GuidedBackprop, {}),
    ],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_simple_gradients_equal_captum(name, algo, kwargs, channels):
    m, x = tiny(in_channels=channels), blob_images(2, channels=channels)
    r = get_explainer(name, m).explain(x)
    ref = algo(m).attribute(x.clone().requires_grad_(), target=_ref(m, x), **kwargs).sum(1)
    torch.testing.assert_close(_ours(r), ref, **EXACT)


def test_signed_saliency_equals_captum_abs_false():
    m, x = tiny(), blob_images()
    r = get_explainer("saliency", m, abs=False).explain(x)
    assert r.signed and (r.maps < 0).any()
    ref = Saliency(m).attribute(x.clone().requires_grad_(), target=_ref(m, x), abs=False).sum(1)
    torch.testing.assert_close(_ours(r), ref, **EXACT)


@pytest.mark.parametrize("baseline", ["zeros", "black", -0.5])
def test_deeplift_equals_captum(baseline):
    m, x = tiny(), blob_images()
    r = get_explainer("deeplift", m, baseline=baseline).explain(x)
    ref = (
        DeepLift(m)
        .attribute(
            x.clone().requires_grad_(), baselines=make_baseline(baseline, x), target=_ref(m, x)
        )
        .sum(1)
    )
    torch.testing.assert_close(_ours(r), ref, **EXACT)


@pytest.mark.parametrize("baseline", ["zeros", "blur", "mean"])
def test_integrated_gradients_equals_captum_with_delta(baseline):
    m, x = tiny(), blob_images()
    r = get_explainer("integrated_gradients", m, baseline=baseline, n_steps=16).explain(x)
    ref, delta = IntegratedGradients(m).attribute(
        x.clone().requires_grad_(),
        baselines=make_baseline(baseline, x),
        target=_ref(m, x),
        n_steps=16,
        return_convergence_delta=True,
    )
    torch.testing.assert_close(_ours(r), ref.sum(1), **EXACT)
    np.testing.assert_allclose(
        r.diagnostics["convergence_delta"][:, 0], delta.numpy(), rtol=1e-5, atol=1e-7
    )
    assert r.params["n_steps"] == 16 and r.params["baseline"] == baseline


def test_integrated_gradients_internal_batching_equals_captum():
    m, x = tiny(), blob_images()
    r = get_explainer("integrated_gradients", m, n_steps=16).explain(x, batch_size=5)
    ref = IntegratedGradients(m).attribute(x, target=_ref(m, x), n_steps=16, internal_batch_size=5)
    torch.testing.assert_close(_ours(r), ref.sum(1), rtol=1e-5, atol=1e-7)


def test_smoothgrad_equals_captum_noise_tunnel_seeded_per_image():
    m, x = tiny(), blob_images()
    r = get_explainer("smoothgrad", m, nt_samples=6, noise_level=0.2).explain(x, seed=11)
    t = _ref(m, x)
    for i in range(2):
        xi = x[i : i + 1]
        torch.manual_seed(11 + i)
        np.random.seed(11 + i)
        ref = NoiseTunnel(Saliency(m)).attribute(
            xi.clone().requires_grad_(),
            nt_type="smoothgrad",
            nt_samples=6,
            stdevs=float(0.2 * (xi.max() - xi.min())),
            target=t[i : i + 1],
        )
        torch.testing.assert_close(_ours(r)[i : i + 1], ref.sum(1), **EXACT)


def test_smoothgrad_wraps_any_gradient_method():
    m, x = tiny(), blob_images()
    r = get_explainer(
        "smoothgrad", m, base="integrated_gradients", n_steps=4, nt_samples=3
    ).explain(x)
    assert r.params["base"] == "integrated_gradients" and r.params["base_params"]["n_steps"] == 4
    assert r.evaluations == 2 + 2 * 3 * 4
    with pytest.raises(MedlensError, match="'base' parameter of SmoothGradExplainer"):
        get_explainer("smoothgrad", m, base="lime")


def test_smoothgrad_does_not_leak_global_rng_state():
    m, x = tiny(), blob_images()
    torch.manual_seed(123)
    np.random.seed(123)
    get_explainer("smoothgrad", m, nt_samples=3).explain(x)
    a, b = torch.rand(1).item(), np.random.rand()
    torch.manual_seed(123)
    np.random.seed(123)
    assert (a, b) == (torch.rand(1).item(), np.random.rand())


def test_gradient_shap_equals_captum_seeded_per_image():
    m, x = tiny(), blob_images()
    r = get_explainer("gradient_shap", m, n_samples=5, stdevs=0.1, baseline="black").explain(
        x, seed=3
    )
    t = _ref(m, x)
    for i in range(2):
        xi = x[i : i + 1]
        torch.manual_seed(3 + i)
        np.random.seed(3 + i)
        ref = GradientShap(m).attribute(
            xi.clone().requires_grad_(),
            baselines=make_baseline("black", xi),
            n_samples=5,
            stdevs=0.1,
            target=t[i : i + 1],
        )
        torch.testing.assert_close(_ours(r)[i : i + 1], ref.sum(1), **EXACT)


@pytest.mark.parametrize("batch_size", [None, 3])
def test_occlusion_equals_captum(batch_size):
    m, x = tiny(), blob_images()
    r = get_explainer("occlusion", m, window=8, stride=4).explain(x, batch_size=batch_size)
    ref = (
        Occlusion(m)
        .attribute(
            x, sliding_window_shapes=(1, 8, 8), strides=(1, 4, 4), baselines=0.0, target=_ref(m, x)
        )
        .sum(1)
    )
    torch.testing.assert_close(_ours(r), ref, rtol=1e-5, atol=1e-7)
    assert r.evaluations == 2 + 2 * (1 + 7 * 7)


def test_occlusion_3d_equals_captum():
    m = tiny(spatial_dims=3)
    torch.manual_seed(1)
    x = torch.randn(1, 1, 8, 8, 8)
    r = get_explainer("occlusion", m, window=4).explain(x)
    ref = (
        Occlusion(m)
        .attribute(x, sliding_window_shapes=(1, 4, 4, 4), strides=(1, 2, 2, 2), target=_ref(m, x))
        .sum(1)
    )
    torch.testing.assert_close(_ours(r), ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("integrated_gradients", {"n_steps": 0}, "'n_steps' parameter"),
        ("integrated_gradients", {"baseline": "white"}, "'baseline' parameter"),
        ("deeplift", {"baseline": None}, "'baseline' parameter"),
        ("gradient_shap", {"stdevs": -1.0}, "'stdevs' parameter"),
        ("gradient_shap", {"n_samples": 1.5}, "'n_samples' parameter"),
        ("smoothgrad", {"noise_level": -0.1}, "'noise_level' parameter"),
        ("smoothgrad", {"nt_type": "mean"}, "'nt_type' parameter"),
        ("saliency", {"abs": "yes"}, "'abs' parameter"),
        ("occlusion", {"window": 0}, "'window' parameter"),
        ("occlusion", {"stride": (2, "a")}, "'stride' parameter"),
    ],
)
def test_bad_settings(name, kwargs, match):
    with pytest.raises(MedlensError, match=match):
        get_explainer(name, tiny(), **kwargs)


def test_occlusion_window_larger_than_image():
    with pytest.raises(MedlensError, match="'window' parameter"):
        get_explainer("occlusion", tiny(), window=64).explain(blob_images())


def test_baseline_values():
    x = blob_images(1)
    assert torch.equal(make_baseline("black", x), torch.full_like(x, float(x.min())))
    assert torch.allclose(make_baseline("mean", x), torch.full_like(x, float(x.mean())))
    assert torch.equal(make_baseline(-1000.0, x), torch.full_like(x, -1000.0))
    blurred = make_baseline("blur", x, blur_sigma=2.0)
    assert blurred.shape == x.shape and blurred.std() < x.std()
    assert torch.allclose(
        make_baseline("blur", torch.ones(1, 1, 8, 8, 8)), torch.ones(1, 1, 8, 8, 8)
    )
    with pytest.raises(MedlensError, match="broadcastable"):
        make_baseline(torch.zeros(2, 2, 3), x)


@pytest.mark.parametrize(
    ("name", "algo"), [("saliency", Saliency), ("input_x_gradient", InputXGradient)]
)
@pytest.mark.parametrize("batch_size", [None, 2])
def test_one_pass_scores_and_explains_each_image(name, algo, batch_size):
    m, x = tiny(num_outputs=3), blob_images(5)
    r = get_explainer(name, m).explain(x, batch_size=batch_size)
    assert r.evaluations == 5  # the forward that computes the gradient also scores
    with torch.no_grad():
        logits = m(x)
    np.testing.assert_array_equal(r.targets[:, 0], logits.argmax(1).numpy())
    np.testing.assert_allclose(r.scores[:, 0], logits.max(1).values.numpy(), rtol=1e-6)
    ref = algo(m).attribute(x.clone().requires_grad_(), target=logits.argmax(1)).sum(1)
    torch.testing.assert_close(_ours(r), ref, **EXACT)


def test_one_pass_with_per_image_targets_and_several_targets():
    m, x = tiny(num_outputs=3), blob_images(4)
    per_image = np.array([[0], [2], [1], [2]])
    r = get_explainer("saliency", m).explain(x, target=per_image, batch_size=3)
    assert r.evaluations == 4
    np.testing.assert_array_equal(r.targets, per_image)
    ref = Saliency(m).attribute(x.clone().requires_grad_(), target=torch.tensor([0, 2, 1, 2]))
    torch.testing.assert_close(_ours(r), ref.sum(1), **EXACT)
    two = get_explainer("saliency", m).explain(x, target=[0, 2])
    assert two.evaluations == 4 + 4 * 2  # a scoring forward, then one pass per target
    np.testing.assert_allclose(two.maps[1, 1], r.maps[1, 0], rtol=1e-6, atol=1e-9)
    with pytest.raises(MedlensError, match=r"shape \(N, T\) = \(4, T\)"):
        get_explainer("saliency", m).explain(x, target=np.zeros((3, 1), dtype=int))


def test_guided_backprop_equals_captum_with_inplace_relus_and_several_targets():
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(inplace=True),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(inplace=True),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 3),
    ).eval()
    x = blob_images(3, channels=3)
    e = get_explainer("guided_backprop", m)
    r = e.explain(x)  # one target per image: the folded pass
    ref = GuidedBackprop(m).attribute(x.clone().requires_grad_(), target=_ref(m, x)).sum(1)
    torch.testing.assert_close(_ours(r), ref, **EXACT)
    assert r.evaluations == 3
    both = e.explain(x, target=[0, 2])  # two targets: captum's GuidedBackprop per target
    for j, k in enumerate((0, 2)):
        ref = GuidedBackprop(m).attribute(x.clone().requires_grad_(), target=k).sum(1)
        torch.testing.assert_close(torch.from_numpy(both.maps[:, j]), ref, **EXACT)
    assert not any(mod._forward_hooks for mod in m.modules())  # hooks removed


@pytest.mark.parametrize("batch_size", [None, 2])
def test_gradient_shap_with_a_baseline_distribution_equals_captum(batch_size):
    m, x = tiny(), blob_images(1)
    dist = torch.stack([torch.zeros_like(x[0]), torch.full_like(x[0], -0.5), x[0] * 0.3])
    r = get_explainer("gradient_shap", m, n_samples=7, stdevs=0.05, baseline=dist).explain(
        x, seed=5, batch_size=batch_size
    )
    torch.manual_seed(5)
    np.random.seed(5)
    ref = GradientShap(m).attribute(
        x.clone().requires_grad_(), baselines=dist, n_samples=7, stdevs=0.05, target=_ref(m, x)
    )
    tol = EXACT if batch_size is None else {"rtol": 1e-5, "atol": 1e-8}
    torch.testing.assert_close(_ours(r), ref.sum(1), **tol)
    assert r.evaluations == 7 + 1  # the samples, plus the scoring forward
