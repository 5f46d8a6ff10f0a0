"""SHAP: the same Shapley values as shap's Partition explainer with an image masker at the
same max_evals, masker and round size; efficiency; bad settings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

with warnings.catch_warnings():
    # shap's plotting module, imported by `import shap`, calls a matplotlib API that
    # matplotlib 3.11 marks for deprecation; it is unrelated to the explainer under test.
    warnings.filterwarnings(
        "ignore", message="The set_(bad|over|under) function", category=PendingDeprecationWarning
    )
    import shap

from medlens._errors import MedlensError
from medlens.config import HeadConfig
from medlens.xai import get_explainer

from .conftest import blob_images, tiny

HEAD = HeadConfig(type="multiclass", class_names=["a", "b", "c"])


def _model_fn(model):
    def fn(imgs: np.ndarray) -> np.ndarray:  # shap passes (B, H, W, C)
        with torch.no_grad():
            x = (
                torch.from_numpy(np.ascontiguousarray(imgs))
                .permute(0, 3, 1, 2)
                .contiguous()
                .float()
            )
            return torch.softmax(model(x), 1).double().numpy()

    return fn


@pytest.mark.parametrize(
    ("channels", "masker", "targets", "max_evals"),
    [(1, "blur(4,4)", [2], 120), (3, "blur(5,3)", [0, 2], 200), (1, 0.0, [1], 90)],
)
@pytest.mark.parametrize("per_round", [10, 64])
def test_values_equal_shap_partition(channels, masker, targets, max_evals, per_round):
    """Tolerance 1e-6 of the largest value: the same tree, queue, tie-break stream and model
    outputs; only the order of float additions when spreading node credit to pixels differs.
    ``batch_size=per_round`` sends each round's masks through the model in one pass, as shap
    calls the model, so the float32 outputs are bit-identical (a different chunk changes the
    last bit of some outputs, which this tiny model's near-uniform probabilities amplify)."""
    m = tiny(in_channels=channels, num_outputs=3)
    x = blob_images(1, channels=channels, size=16)
    r = get_explainer(
        "shap", m, head=HEAD, max_evals=max_evals, masker=masker, masks_per_round=per_round
    ).explain(x, target=targets, seed=9, batch_size=per_round)
    img = x[0].permute(1, 2, 0).numpy()
    mask_value = masker if isinstance(masker, str) else np.full(img.shape, masker, dtype=img.dtype)
    explainer = shap.explainers.Partition(_model_fn(m), shap.maskers.Image(mask_value, img.shape))
    np.random.seed(9)
    ref = explainer(
        img[None], max_evals=max_evals, batch_size=per_round, outputs=targets, silent=True
    )
    ref_maps = np.moveaxis(ref.values[0].sum(axis=2), -1, 0)  # (T, H, W)
    scale = np.abs(ref_maps).max()
    assert scale > 0
    np.testing.assert_allclose(r.maps[0], ref_maps, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(r.diagnostics["base_value"][0], ref.base_values[0], rtol=1e-9)


def test_efficiency_values_add_up_to_score_minus_base():
    m = tiny(num_outputs=3)
    x = blob_images(2)
    r = get_explainer("shap", m, head=HEAD, max_evals=100).explain(x, target=[0, 1])
    total = r.maps.sum(axis=(2, 3))
    np.testing.assert_allclose(total, r.scores - r.diagnostics["base_value"], rtol=1e-4, atol=1e-6)


def test_images_in_one_batch_equal_images_alone():
    m = tiny()
    x = blob_images(3)
    together = get_explainer("shap", m, max_evals=80).explain(x, seed=4)
    for i in range(3):
        alone = get_explainer("shap", m, max_evals=80).explain(x[i : i + 1], seed=4 + i)
        np.testing.assert_allclose(together.maps[i], alone.maps[0], rtol=1e-5, atol=1e-8)


def test_evaluations_respect_max_evals():
    r = get_explainer("shap", tiny(), max_evals=60).explain(blob_images(1))
    assert r.evaluations <= 1 + 60


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_evals": 2}, "'max_evals' parameter"),
        ({"masker": "inpaint_ns"}, "'masker' parameter"),
        ({"masker": "blur(3)"}, "'masker' parameter"),
        ({"masks_per_round": 1}, "'masks_per_round' parameter"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(MedlensError, match=match):
        get_explainer("shap", tiny(), **kwargs)
