"""CAM methods against pytorch-grad-cam and against the papers' definitions.

pytorch-grad-cam (PyPI ``grad-cam``) imports torchvision for utilities that CAM does not
use (image transforms, box IoU for detection targets, SESS resizing); the PyPI torchvision
wheel does not match this CPU torch build, so the test puts an inert stand-in for those
three torchvision modules into ``sys.modules`` while it imports the reference, then
removes it. The CAM code paths compared here never call into the stand-in.
"""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medlens._errors import ExplanationError, MedlensError
from medlens.xai import find_target_layer, get_explainer
from medlens.xai._cam import NO_SPATIAL_LAYER

from .conftest import blob_images, tiny

CAMS = ["gradcam", "gradcam_pp", "scorecam"]


@pytest.fixture(scope="module")
def pgc():
    """pytorch_grad_cam, importable with a stand-in for the torchvision utilities it imports."""
    names = [
        "torchvision",
        "torchvision.transforms",
        "torchvision.transforms.functional",
        "torchvision.ops",
    ]
    saved = {n: sys.modules.get(n) for n in names}
    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    trf = types.ModuleType("torchvision.transforms.functional")
    ops = types.ModuleType("torchvision.ops")

    def unavailable(*_a, **_k):
        raise RuntimeError("torchvision stand-in: not available in this test")

    for attr in ("Compose", "Normalize", "ToTensor"):
        setattr(tr, attr, unavailable)
    trf.resize = unavailable
    ops.box_iou = unavailable
    tv.transforms, tr.functional, tv.ops = tr, trf, ops
    sys.modules.update(dict(zip(names, [tv, tr, trf, ops], strict=True)))
    try:
        mod = importlib.import_module("pytorch_grad_cam")
        targets = importlib.import_module("pytorch_grad_cam.utils.model_targets")
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    return mod, targets.ClassifierOutputTarget


def _minmax(m: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] as pytorch-grad-cam displays CAMs (its 1e-7 guard is left out: our
    maps keep the layer's units, which can be ~1e-5 for a tiny model, where the guard
    would shift the scale by 1e-2 relative; after its own scaling the reference's max is
    ~1, where the guard is negligible)."""
    m = m - m.min()
    return m / m.max()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(
    ("ours", "theirs"),
    [("gradcam", "GradCAM"), ("gradcam_pp", "GradCAMPlusPlus"), ("scorecam", "ScoreCAM")],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_matches_pytorch_grad_cam(pgc, ours, theirs, channels):
    mod, Target = pgc
    m, x = tiny(in_channels=channels), blob_images(2, channels=channels)
    with torch.no_grad():
        t = m(x).argmax(1).tolist()
    r = get_explainer(ours, m).explain(x)
    assert r.params["target_layer"] == "features"
    cam = getattr(mod, theirs)(model=m, target_layers=[m.features])
    ref = cam(input_tensor=x, targets=[Target(k) for k in t])
    cam.activations_and_grads.release()
    for i in range(2):
        np.testing.assert_allclose(_minmax(r.maps[i, 0]), ref[i], atol=1e-4)


def _paper_gradcam(model, x, t, layer_out):
    """Selvaraju et al. eq. 1-2: alpha_k = mean_ij dy^c/dA^k_ij; L = ReLU(sum_k alpha_k A^k)."""
    a = layer_out(x)
    a.retain_grad()
    y = model.classifier(torch.flatten(model.pool(a), 1))
    y[torch.arange(len(t)), t].sum().backward()
    alpha = a.grad.mean(dim=tuple(range(2, a.ndim)), keepdim=True)
    cam = torch.relu((alpha * a).sum(1, keepdim=True)).detach()
    mode = "bilinear" if x.ndim == 4 else "trilinear"
    return F.interpolate(cam, size=x.shape[2:], mode=mode, align_corners=False)[:, 0]


@pytest.mark.parametrize("dims", [2, 3])
def test_gradcam_equals_paper_definition_unscaled(dims):
    m = tiny(spatial_dims=dims)
    x = (
        blob_images(2)
        if dims == 2
        else torch.randn(2, 1, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    )
    with torch.no_grad():
        t = m(x).argmax(1)
    ref = _paper_gradcam(m, x, t, m.features)
    r = get_explainer("gradcam", m).explain(x)
    torch.testing.assert_close(torch.from_numpy(r.maps[:, 0]), ref, rtol=1e-5, atol=1e-8)


def test_scorecam_3d_runs_and_shares_targets():
    m = tiny(spatial_dims=3, num_outputs=3)
    x = torch.randn(1, 1, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    one = get_explainer("scorecam", m).explain(x, target=[0, 1, 2])
    assert one.maps.shape == (1, 3, 8, 16, 16)
    # 1 scoring forward + 1 probe + 1 for the activations + K=16 masked inputs, shared
    assert one.evaluations == 1 + 1 + 1 + 16
    for k in range(3):
        single = get_explainer("scorecam", m).explain(x, target=k)
        np.testing.assert_allclose(one.maps[0, k], single.maps[0, 0], rtol=1e-5, atol=1e-7)


def test_target_layer_detection_and_override():
    m, x = tiny(), blob_images()
    assert find_target_layer(m, x[:1]) == "features"
    r = get_explainer("gradcam", m, target_layer="features.3").explain(x)
    assert r.params["target_layer"] == "features.3"
    ref = _paper_gradcam_at(m, x, "features.3")
    torch.testing.assert_close(torch.from_numpy(r.maps[:, 0]), ref, rtol=1e-5, atol=1e-8)


def _paper_gradcam_at(m, x, name):
    idx = int(name.split(".")[1])
    head, tail = m.features[: idx + 1], m.features[idx + 1 :]
    with torch.no_grad():
        t = m(x).argmax(1)
    a = head(x)
    a.retain_grad()
    y = m.classifier(torch.flatten(m.pool(tail(a)), 1))
    y[torch.arange(len(t)), t].sum().backward()
    cam = torch.relu((a.grad.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True)).detach()
    return F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]


def test_bad_target_layer_name():
    with pytest.raises(
        ExplanationError, match="no module named 'featurs'; did you mean 'features'"
    ):
        get_explainer("gradcam", tiny(), target_layer="featurs")
    with pytest.raises(MedlensError, match="'target_layer' parameter"):
        get_explainer("gradcam", tiny(), target_layer=3)


def test_target_layer_that_is_not_spatial():
    with pytest.raises(
        ExplanationError, match="target layer 'classifier' returns shape \\(1, 2\\)"
    ):
        get_explainer("gradcam", tiny(), target_layer="classifier").explain(blob_images())


@pytest.mark.parametrize("name", CAMS)
def test_model_without_spatial_layer_gives_a_clear_error(name):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ExplanationError, match="no layer with a spatial output") as info:
        get_explainer(name, mlp).explain(blob_images())
    assert str(info.value) == NO_SPATIAL_LAYER


@pytest.mark.parametrize("name", CAMS)
def test_cam_maps_are_not_rescaled_per_image(name):
    m, x = tiny(), blob_images()
    r = get_explainer(name, m).explain(torch.cat([x[:1], 3 * x[:1]]))
    assert r.maps[0].max() != pytest.approx(r.maps[1].max())


@pytest.mark.parametrize("name", ["gradcam", "gradcam_pp"])
def test_gradient_cams_score_in_the_pass_that_computes_the_gradient(name):
    m, x = tiny(num_outputs=3), blob_images(3)
    e = get_explainer(name, m)
    first = e.explain(x)
    assert first.evaluations == 1 + 3  # layer probe + one forward/backward per image
    with torch.no_grad():
        logits = m(x)
    np.testing.assert_array_equal(first.targets[:, 0], logits.argmax(1).numpy())
    np.testing.assert_allclose(first.scores[:, 0], logits.max(1).values.numpy(), rtol=1e-6)
    again = e.explain(x, target=1)
    assert again.evaluations == 3
    two = e.explain(x, target=[0, 1])  # several targets: a scoring forward, then the jobs
    assert two.evaluations == 3 + 3 * 2
    np.testing.assert_allclose(two.maps[:, 1], again.maps[:, 0], rtol=1e-5, atol=1e-7)
