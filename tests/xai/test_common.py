"""Registry-driven tests that every explainer must pass."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import medlens.xai as xai
from medlens._errors import ExplanationError, MedlensError
from medlens.xai import ExplanationResult, get_explainer, list_explainers

from .conftest import FAST, Normalising, blob_images, tiny

METHODS = list_explainers()


def make(name: str, model: nn.Module, **kw) -> xai.Explainer:
    return get_explainer(name, model, **{**FAST[name], **kw})


def no_hooks(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks
        and not m._forward_pre_hooks
        and not m._backward_hooks
        and not getattr(m, "_backward_pre_hooks", {})
        for m in model.modules()
    )


def test_every_method_has_fast_settings():
    assert sorted(FAST) == METHODS


def test_registry_lists_the_issue_methods():
    assert set(METHODS) >= {
        "saliency",
        "input_x_gradient",
        "integrated_gradients",
        "smoothgrad",
        "guided_backprop",
        "deeplift",
        "gradient_shap",
        "gradcam",
        "gradcam_pp",
        "scorecam",
        "occlusion",
        "lime",
        "shap",
    }


def test_bad_method_name_suggests_the_closest():
    with pytest.raises(ExplanationError, match=r"did you mean 'gradcam'\? available: .*saliency"):
        get_explainer("gradcm", tiny())


@pytest.mark.parametrize("name", METHODS)
def test_shape_types_and_result(name, model, images):
    r = make(name, model).explain(images)
    assert isinstance(r, ExplanationResult)
    assert r.method == name
    assert r.maps.shape == (2, 1, 32, 32) and r.maps.dtype == np.float32
    assert r.maps_abs.shape == r.maps.shape and (r.maps_abs >= 0).all()
    assert np.isfinite(r.maps).all()
    assert r.targets.shape == (2, 1) and r.scores.shape == (2, 1)
    assert r.evaluations >= 2 and r.seconds > 0
    assert r.params["seed"] == 0 and r.params["method"] == name
    assert np.abs(r.maps).sum() > 0
    if not r.signed:
        assert (r.maps >= 0).all()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.method = "x"  # type: ignore[misc]


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_same_maps(name, model, images):
    a = make(name, model).explain(images, seed=7)
    b = make(name, model).explain(images, seed=7)
    np.testing.assert_array_equal(a.maps, b.maps)


@pytest.mark.parametrize("name", ["smoothgrad", "gradient_shap", "lime"])
def test_other_seed_other_maps(name, model, images):
    a = make(name, model).explain(images, seed=1)
    b = make(name, model).explain(images, seed=2)
    assert not np.allclose(a.maps, b.maps)


@pytest.mark.parametrize("name", METHODS)
def test_batch_size_invariance(name, model, images):
    ref = make(name, model).explain(images, batch_size=None)
    for bs in (1, 2):
        r = make(name, model).explain(images, batch_size=bs)
        scale = float(np.abs(ref.maps).max())
        np.testing.assert_allclose(
            r.maps, ref.maps, rtol=1e-4, atol=1e-5 * scale + 1e-7, err_msg=f"bs={bs}"
        )


@pytest.mark.parametrize("name", METHODS)
def test_hooks_released_and_mode_restored(name, images):
    m = tiny()
    m.train()
    m.classifier.eval()  # a mixed state must come back exactly
    make(name, m).explain(images)
    assert no_hooks(m)
    assert m.training and m.features.training and not m.classifier.training


class Exploding(nn.Module):
    """Fails on the second forward call (after scoring) or on the first with gradients
    (saliency, input x gradient and Grad-CAM score in the pass that computes the gradient)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls >= 2 or torch.is_grad_enabled():
            raise RuntimeError("boom")
        return self.inner(x)


@pytest.mark.parametrize("name", METHODS)
def test_hooks_released_and_mode_restored_after_an_exception(name, images):
    m = Exploding()
    m.train()
    with pytest.raises(RuntimeError, match="boom"):
        make(name, m).explain(images)
    assert no_hooks(m)
    assert m.training and m.inner.training


@pytest.mark.parametrize("name", METHODS)
def test_three_channel_model(name):
    x = blob_images(2, channels=3)
    r = make(name, tiny(in_channels=3)).explain(x)
    assert r.maps.shape == (2, 1, 32, 32)


@pytest.mark.parametrize("name", METHODS)
def test_model_that_normalises_inside_forward(name, images):
    r = make(name, Normalising(tiny())).explain(images)
    assert r.maps.shape == (2, 1, 32, 32) and np.isfinite(r.maps).all()


VOLUME_METHODS = [n for n in METHODS if 3 in xai.explainer_class(n).spatial_dims]


def test_volume_methods_cover_gradient_cam_and_occlusion():
    assert {
        "saliency",
        "integrated_gradients",
        "gradcam",
        "gradcam_pp",
        "scorecam",
        "occlusion",
    } <= set(VOLUME_METHODS)


@pytest.mark.parametrize("name", VOLUME_METHODS)
def test_tiny_3d_cnn(name):
    torch.manual_seed(0)
    x = torch.randn(1, 1, 8, 16, 16)
    kw = {"window": 4} if name == "occlusion" else {}
    r = make(name, tiny(spatial_dims=3), **kw).explain(x)
    assert r.maps.shape == (1, 1, 8, 16, 16)
    assert np.isfinite(r.maps).all()


@pytest.mark.parametrize("name", sorted(set(METHODS) - set(VOLUME_METHODS)))
def test_2d_only_methods_reject_volumes(name):
    with pytest.raises(ExplanationError, match="explains 2D images; got a 3D input"):
        make(name, tiny(spatial_dims=3)).explain(torch.zeros(1, 1, 8, 16, 16))


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (torch.zeros(32, 32), "must be a batch of shape"),
        (torch.zeros(1, 1, 32, 32, dtype=torch.int64), "floating-point"),
        (np.zeros((1, 1, 32, 32), dtype=np.uint8), "floating-point"),
        (torch.full((1, 1, 32, 32), float("nan")), "1024 NaN or infinite"),
        (torch.zeros(0, 1, 32, 32), "empty batch"),
        ([[1.0]], "must be a Tensor or ndarray"),
    ],
)
def test_bad_images(images, match, model):
    with pytest.raises(MedlensError, match=match):
        get_explainer("saliency", model).explain(images)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_batch_size(bad, model, images):
    with pytest.raises(MedlensError, match="'batch_size' parameter of explain must be an int >= 1"):
        get_explainer("saliency", model).explain(images, batch_size=bad)


def test_bad_seed(model, images):
    with pytest.raises(MedlensError, match="'seed' parameter"):
        get_explainer("saliency", model).explain(images, seed="1")


def test_model_must_be_a_module():
    with pytest.raises(MedlensError, match="'model' parameter"):
        get_explainer("saliency", lambda x: x)


def test_model_must_return_logits(images):
    class Flat(nn.Module):
        def forward(self, x):
            return x.sum()

    with pytest.raises(ExplanationError, match="logits of shape \\(N, K\\)"):
        get_explainer("saliency", Flat()).explain(images)


def test_numpy_input_accepted(model, images):
    a = get_explainer("saliency", model).explain(images.numpy())
    b = get_explainer("saliency", model).explain(images)
    np.testing.assert_array_equal(a.maps, b.maps)


def test_inverse_maps_to_original_grid(model, images):
    def inverse(m):  # (T, 32, 32) -> (T, 64, 48): an upscale standing in for undo-resize
        return np.repeat(np.repeat(m, 2, axis=1), 3, axis=2)[:, :, :48]

    r = get_explainer("gradcam", model).explain(images, inverse=inverse)
    assert len(r.maps_original) == 2 and r.maps_original[0].shape == (1, 64, 48)
    np.testing.assert_array_equal(r.maps_original[1][:, ::2, ::3][:, :, :16], r.maps[1][:, :, :16])
    per_image = get_explainer("gradcam", model).explain(images, inverse=[inverse, inverse])
    assert per_image.maps_original[0].shape == (1, 64, 48)


def test_inverse_failure_is_reported(model, images):
    def broken(m):
        raise KeyError("geometry")

    with pytest.raises(ExplanationError, match="inverse map function failed on map 0"):
        get_explainer("saliency", model).explain(images, inverse=broken)
