"""Targets by index or class name, default targets per head, multi-label batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlens._errors import ExplanationError, InputDataError
from medlens.config import HeadConfig
from medlens.xai import get_explainer

from .conftest import blob_images, tiny

SIGMOID = HeadConfig(type="binary_sigmoid", class_names=["normal", "nodule"])
SOFTMAX = HeadConfig(type="binary_softmax", class_names=["normal", "nodule"])
MULTICLASS = HeadConfig(type="multiclass", class_names=["a", "b", "c"])
FINDINGS = ["atelectasis", "effusion", "nodule", "pneumothorax"]
MULTILABEL = HeadConfig(type="multilabel", class_names=FINDINGS)


def multilabel_model(bias=(6.0, -6.0, 6.0, -6.0)):
    m = tiny(num_outputs=4)
    with torch.no_grad():
        m.classifier.bias.copy_(torch.tensor(bias))
    return m


def test_single_logit_default_is_the_positive_class():
    m, x = tiny(num_outputs=1), blob_images()
    r = get_explainer("saliency", m, head=SIGMOID).explain(x)
    assert r.targets.tolist() == [[0], [0]]
    assert r.target_names == (("nodule",), ("nodule",))
    with torch.no_grad():
        np.testing.assert_allclose(r.scores[:, 0], torch.sigmoid(m(x))[:, 0].numpy(), rtol=1e-6)
    assert r.params["score"] == "probability"
    by_name = get_explainer("saliency", m, head=SIGMOID).explain(x, target="nodule")
    np.testing.assert_array_equal(by_name.maps, r.maps)


def test_single_logit_negative_class_is_explained_clearly():
    with pytest.raises(
        ExplanationError, match="negative class of a single-logit binary_sigmoid head"
    ):
        get_explainer("saliency", tiny(num_outputs=1), head=SIGMOID).explain(
            blob_images(), target="normal"
        )


def test_default_is_the_predicted_class_and_names_work():
    m, x = tiny(num_outputs=3), blob_images()
    with torch.no_grad():
        logits = m(x)
    r = get_explainer("gradcam", m, head=MULTICLASS).explain(x)
    assert r.targets[:, 0].tolist() == logits.argmax(1).tolist()
    np.testing.assert_allclose(
        r.scores[:, 0], torch.softmax(logits, 1).max(1).values.numpy(), rtol=1e-6
    )
    named = get_explainer("gradcam", m, head=MULTICLASS).explain(x, target="c")
    index = get_explainer("gradcam", m, head=MULTICLASS).explain(x, target=2)
    np.testing.assert_array_equal(named.maps, index.maps)
    assert named.target_names == (("c",), ("c",))


def test_no_head_scores_are_logits_and_names_are_indices():
    m, x = tiny(num_outputs=3), blob_images()
    r = get_explainer("saliency", m).explain(x, target=1)
    with torch.no_grad():
        np.testing.assert_allclose(r.scores[:, 0], m(x)[:, 1].numpy(), rtol=1e-6)
    assert r.target_names == (("1",), ("1",)) and r.params["score"] == "logit"


def test_per_image_targets_array():
    m, x = tiny(num_outputs=3), blob_images()
    r = get_explainer("saliency", m, head=MULTICLASS).explain(x, target=np.array([[0], [2]]))
    assert r.targets.tolist() == [[0], [2]]
    r2 = get_explainer("saliency", m, head=MULTICLASS).explain(x, target=np.array([["a"], ["c"]]))
    np.testing.assert_array_equal(r.maps, r2.maps)


@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients", "lime", "shap", "occlusion"])
def test_multilabel_explains_every_positive_finding_in_one_call(method):
    m, x = multilabel_model(), blob_images()
    kw = {
        "lime": {"num_samples": 30},
        "shap": {"max_evals": 40},
        "integrated_gradients": {"n_steps": 4},
    }.get(method, {})
    r = get_explainer(method, m, head=MULTILABEL, **kw).explain(x)
    assert r.targets.tolist() == [[0, 2], [0, 2]]
    assert r.target_names[0] == ("atelectasis", "nodule")
    assert r.maps.shape == (2, 2, 32, 32)
    assert (r.scores > 0.5).all()
    for j, t in enumerate((0, 2)):
        single = get_explainer(method, m, head=MULTILABEL, **kw).explain(x, target=t)
        scale = np.abs(single.maps).max()
        if method == "shap":  # the queue is ordered by the largest change over all targets
            continue
        np.testing.assert_allclose(r.maps[:, j], single.maps[:, 0], rtol=1e-5, atol=1e-6 * scale)


def test_multilabel_gradient_methods_batch_targets_into_one_pass():
    m, x = multilabel_model(), blob_images()
    r = get_explainer("gradcam", m, head=MULTILABEL).explain(x)
    # 2 scoring rows + 1 layer probe + 2 images x 2 findings in one forward/backward
    assert r.evaluations == 2 + 1 + 4


def test_multilabel_perturbation_methods_share_evaluations_across_findings():
    m, x = multilabel_model(), blob_images()
    r = get_explainer("lime", m, head=MULTILABEL, num_samples=30).explain(x)
    assert r.evaluations == 2 + 2 * 30


def test_multilabel_without_positive_finding_explains_the_top_one():
    m, x = multilabel_model(bias=(-9.0, -8.0, -9.5, -9.0)), blob_images()
    r = get_explainer("saliency", m, head=MULTILABEL).explain(x)
    assert r.targets.tolist() == [[1], [1]]


def test_head_that_does_not_match_the_model():
    with pytest.raises(
        ExplanationError, match="returns 2 outputs per image but the head 'multiclass' expects 3"
    ):
        get_explainer("saliency", tiny(num_outputs=2), head=MULTICLASS).explain(blob_images())


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("d", "target 'd' is not an output of this model"),
        (3, "target 3 is not an output"),
        (-1, "target -1 is not an output"),
        (1.5, "target 1.5 is not an output"),
        (True, "target True is not an output"),
        ([], "target \\[\\] is not an output"),
        (np.zeros((3, 1), dtype=int), "must have shape \\(N, T\\) = \\(2, T\\)"),
        (np.zeros(2, dtype=int), "must have shape"),
    ],
)
def test_bad_targets(target, match):
    with pytest.raises((InputDataError, ExplanationError), match=match):
        get_explainer("saliency", tiny(num_outputs=3), head=MULTICLASS).explain(
            blob_images(), target=target
        )


def test_class_name_without_head():
    with pytest.raises(InputDataError, match="target 'a' is not an output of this model"):
        get_explainer("saliency", tiny()).explain(blob_images(), target="a")
