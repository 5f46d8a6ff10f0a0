"""LIME: same superpixel weights as the lime package for the same segmentation, seed and
sample count; seeded sampling; SLIC superpixels; bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lime import lime_image

from medlens._errors import ExplanationError, MedlensError
from medlens.config import HeadConfig
from medlens.xai import get_explainer, slic_segments

from .conftest import blob_images, tiny

HEAD = HeadConfig(type="binary_softmax", class_names=["normal", "lesion"])


def _classifier(model):
    def fn(imgs: np.ndarray) -> np.ndarray:  # lime passes (B, H, W, C)
        with torch.no_grad():
            x = (
                torch.from_numpy(np.ascontiguousarray(imgs))
                .permute(0, 3, 1, 2)
                .contiguous()
                .float()
            )
            return torch.softmax(model(x), 1).double().numpy()

    return fn


@pytest.mark.parametrize(("channels", "hide_color"), [(1, 0.0), (3, None), (3, -0.5)])
@pytest.mark.parametrize("seed", [0, 5])
def test_weights_equal_lime_package(channels, hide_color, seed):
    """Tolerance 1e-5 x max|w|. Both run lime_base's ridge on the same design matrix, the
    same distances and bit-identical perturbed images in batches of 10 (lime's default);
    the float32 model outputs still differ by up to 1 ulp (6e-8) between the two calls
    (memory alignment changes the SIMD path), which the regression amplifies to ~1e-6 of
    the largest weight."""
    m, x = tiny(in_channels=channels), blob_images(1, channels=channels)
    r = get_explainer(
        "lime", m, head=HEAD, num_samples=80, n_segments=12, hide_color=hide_color
    ).explain(x, target="lesion", seed=seed, batch_size=10)
    segments = r.diagnostics["segments"][0]
    exp = lime_image.LimeImageExplainer(random_state=seed).explain_instance(
        x[0].permute(1, 2, 0).numpy(),
        _classifier(m),
        labels=(1,),
        top_labels=None,
        hide_color=hide_color,
        num_samples=80,
        segmentation_fn=lambda _im: segments,
        random_seed=seed,
    )
    ref = dict(exp.local_exp[1])
    ours = {s: float(r.maps[0, 0][segments == s][0]) for s in np.unique(segments)}
    assert sorted(ours) == sorted(ref)
    scale = max(abs(v) for v in ref.values())
    for s, w in ref.items():
        assert ours[s] == pytest.approx(w, abs=1e-5 * scale), s
    assert r.diagnostics["r2"][0, 0] == pytest.approx(exp.score, abs=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
def test_filled_image_is_bit_identical_to_lime(channels):
    """Superpixel means as lime computes them (one boolean mask and np.mean per superpixel
    and channel), here in one pass over the pixels."""
    x = blob_images(1, channels=channels, size=48, seed=3)[0].numpy()
    e = get_explainer("lime", tiny(in_channels=channels), n_segments=40)
    segments = e.segment(x)
    image = np.moveaxis(x, 0, -1)
    expected = image.copy()
    for s in np.unique(segments):
        expected[segments == s] = tuple(
            np.mean(image[segments == s][:, c]) for c in range(channels)
        )
    got = e.fill_image(image, segments)
    assert got.dtype == image.dtype and got.shape == image.shape
    np.testing.assert_array_equal(got, expected)
    hidden = get_explainer("lime", tiny(), hide_color=-0.5).fill_image(image, segments)
    np.testing.assert_array_equal(hidden, np.full_like(image, -0.5))


def test_several_targets_share_one_set_of_samples():
    m = tiny(num_outputs=3)
    x = blob_images(1)
    both = get_explainer("lime", m, num_samples=50, n_segments=10).explain(x, target=[0, 2])
    assert both.evaluations == 1 + 50
    one = get_explainer("lime", m, num_samples=50, n_segments=10).explain(x, target=2)
    np.testing.assert_allclose(both.maps[0, 1], one.maps[0, 0], rtol=1e-6, atol=1e-9)


def test_segments_are_slic_on_intensity_with_the_requested_count():
    x = blob_images(1)[0].numpy()
    seg = slic_segments(x, n_segments=20)
    assert seg.shape == (32, 32)
    assert seg.min() == 0 and np.array_equal(np.unique(seg), np.arange(seg.max() + 1))
    assert 8 <= seg.max() + 1 <= 40
    rgb = np.repeat(x, 3, axis=0)
    np.testing.assert_array_equal(slic_segments(rgb, n_segments=20), seg)


def test_seed_covers_sampling_not_only_segmentation():
    m, x = tiny(), blob_images(1)
    a = get_explainer("lime", m, num_samples=40).explain(x, seed=1)
    b = get_explainer("lime", m, num_samples=40).explain(x, seed=2)
    np.testing.assert_array_equal(a.diagnostics["segments"][0], b.diagnostics["segments"][0])
    assert not np.array_equal(a.maps, b.maps)


def test_custom_segmentation_function():
    m, x = tiny(), blob_images(1)
    quadrants = np.zeros((32, 32), dtype=np.int64)
    quadrants[:16, 16:], quadrants[16:, :16], quadrants[16:, 16:] = 1, 2, 3
    r = get_explainer("lime", m, num_samples=30, segmentation_fn=lambda im: quadrants).explain(x)
    assert len(np.unique(r.maps[0, 0])) <= 4
    bad = get_explainer("lime", m, num_samples=30, segmentation_fn=lambda im: quadrants[:8])
    with pytest.raises(ExplanationError, match="segmentation_fn must return an int array"):
        bad.explain(x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 1}, "'num_samples' parameter"),
        ({"n_segments": 0}, "'n_segments' parameter"),
        ({"hide_color": "black"}, "'hide_color' parameter"),
        ({"kernel_width": 0}, "'kernel_width' parameter"),
        ({"feature_selection": "best"}, "'feature_selection' parameter"),
        ({"num_features": 0}, "'num_features' parameter"),
        ({"segmentation_fn": 3}, "'segmentation_fn' parameter"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(MedlensError, match=match):
        get_explainer("lime", tiny(), **kwargs)
