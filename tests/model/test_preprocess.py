"""Preprocessor: channels, resize/letterbox against Pillow/OpenCV, and exact inverses."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from medlens._errors import InputDataError, MedlensError
from medlens.config import PreprocessConfig
from medlens.model import LUMA_WEIGHTS, Geometry, Preprocessor
from medlens.model import _preprocess as P


def _img(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _pil_resize(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((hw[1], hw[0]), Image.BILINEAR))


def _centroid(a: np.ndarray) -> np.ndarray:
    grid = np.indices(a.shape).reshape(a.ndim, -1)
    w = a.reshape(-1).astype(np.float64)
    return grid @ w / w.sum()


def test_identity_without_size_is_exact_normalisation_and_exact_inverse():
    img = _img((20, 30))
    pre = Preprocessor(PreprocessConfig(mean=[0.25], std=[0.5]))
    x, geom = pre(img)
    assert x.shape == (1, 20, 30) and x.dtype == torch.float32
    assert torch.equal(x[0], (torch.from_numpy(img) - 0.25) / 0.5)
    assert geom == Geometry((20, 30), (20, 30), (20, 30), (1.0, 1.0), (0, 0), (0, 0), "none")
    back = pre.invert_map(img, geom)
    assert np.array_equal(back, img) and back is not img


@pytest.mark.parametrize("mode", ["resize", "letterbox"])
def test_size_equal_to_original_round_trip_is_exact(mode):
    img = _img((32, 32))
    pre = Preprocessor(PreprocessConfig(size=(32, 32), resize_mode=mode))
    x, geom = pre(img)
    assert torch.equal(x[0], torch.from_numpy(img))
    assert np.array_equal(pre.invert_map(x.numpy(), geom), x.numpy())


@pytest.mark.parametrize("size", [(24, 32), (120, 160), (30, 100)])
def test_resize_matches_pillow_bilinear(size):
    # torch's antialiased bilinear is designed to match PIL's BILINEAR filter
    img = _img((60, 80))
    x, geom = Preprocessor(PreprocessConfig(size=size, resize_mode="resize"))(img)
    np.testing.assert_allclose(x[0].numpy(), _pil_resize(img, size), atol=1e-5)
    assert geom.content_shape == size and geom.pad_before == (0, 0)
    assert geom.scale == (size[0] / 60, size[1] / 80)


def test_resize_round_trip_of_a_smooth_image_is_close():
    yy, xx = np.mgrid[0:48, 0:40].astype(np.float32)
    img = 0.5 + 0.4 * np.sin(yy / 9.0) * np.cos(xx / 7.0)
    pre = Preprocessor(PreprocessConfig(size=(64, 64), resize_mode="resize"))
    x, geom = pre(img)
    back = pre.invert_map(x[0].numpy(), geom)
    assert back.shape == img.shape
    np.testing.assert_allclose(back[2:-2, 2:-2], img[2:-2, 2:-2], atol=0.01)


def test_letterbox_geometry_padding_value_and_content():
    img = _img((40, 60))
    cfg = PreprocessConfig(size=(32, 32), resize_mode="letterbox", mean=[0.5], std=[0.25])
    pre = Preprocessor(cfg)
    x, geom = pre(img)
    # scale = min(32/40, 32/60) = 0.5333 -> content 21 x 32, 11 rows of padding: 5 above, 6 below
    assert geom.content_shape == (21, 32) and geom.input_shape == (32, 32)
    assert geom.pad_before == (5, 0) and geom.pad_after == (6, 0)
    assert geom.scale == (21 / 40, 32 / 60)
    black = (0.0 - 0.5) / 0.25
    assert torch.all(x[0, :5] == black) and torch.all(x[0, -6:] == black)
    content = x[0, 5:26].numpy() * 0.25 + 0.5
    np.testing.assert_allclose(content, _pil_resize(img, (21, 32)), atol=1e-6)
    back = pre.invert_map(x[0].numpy(), geom)
    assert back.shape == (40, 60)


@pytest.mark.parametrize("mode", ["resize", "letterbox"])
@pytest.mark.parametrize("point", [(10, 45), (30, 8)])
def test_a_point_maps_forward_and_back_to_its_place(mode, point):
    img = np.zeros((40, 60), np.float32)
    r, c = point
    img[r - 1 : r + 2, c - 1 : c + 2] = 1.0
    pre = Preprocessor(PreprocessConfig(size=(48, 48), resize_mode=mode))
    x, geom = pre(img)
    np.testing.assert_allclose(_centroid(x[0].numpy()), geom.to_input_coords(point), atol=0.1)
    np.testing.assert_allclose(geom.to_original_coords(geom.to_input_coords(point)), point)
    back = pre.invert_map(x[0].numpy(), geom)
    np.testing.assert_allclose(_centroid(back), point, atol=0.1)
    assert np.unravel_index(np.argmax(back), back.shape) == point


def test_invert_map_keeps_torch_and_handles_k_maps():
    pre = Preprocessor(PreprocessConfig(size=(16, 16)))
    _, geom = pre(_img((20, 10)))
    maps = torch.rand(3, 16, 16, dtype=torch.float64)
    back = pre.invert_map(maps, geom)
    assert isinstance(back, torch.Tensor) and back.shape == (3, 20, 10)
    assert back.dtype == torch.float64
    assert pre.invert_map(np.ones((16, 16), np.int64), geom).dtype == np.float32


def test_gray_to_three_channels_and_per_channel_stats():
    img = _img((8, 8))
    cfg = PreprocessConfig(channels=3, mean=[0.1, 0.2, 0.3], std=[1.0, 2.0, 4.0])
    x, _ = Preprocessor(cfg)(img)
    assert x.shape == (3, 8, 8)
    for c, (m, s) in enumerate(zip(cfg.mean, cfg.std, strict=True)):
        assert torch.equal(x[c], (torch.from_numpy(img) - m) / s)


def test_rgb_to_gray_matches_opencv_bt601():
    rgb = _img((10, 12, 3))
    x, _ = Preprocessor(PreprocessConfig(channels=1))(rgb)
    np.testing.assert_allclose(x[0].numpy(), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), atol=1e-6)
    assert LUMA_WEIGHTS == (0.299, 0.587, 0.114)


def test_rgb_kept_for_three_channel_model_and_trailing_one_is_gray():
    rgb = _img((6, 7, 3))
    x, _ = Preprocessor(PreprocessConfig(channels=3))(rgb)
    assert torch.equal(x, torch.from_numpy(rgb).permute(2, 0, 1))
    g = _img((6, 7, 1))
    x1, geom = Preprocessor(PreprocessConfig())(SimpleNamespace(pixels=g))
    assert torch.equal(x1[0], torch.from_numpy(g[..., 0])) and geom.original_shape == (6, 7)


def test_volume_3d_in_plane_and_full_trilinear():
    vol = _img((6, 20, 24))
    pre = Preprocessor(PreprocessConfig(size=(10, 12), resize_mode="resize"), spatial_dims=3)
    x, geom = pre(vol)
    assert x.shape == (1, 6, 10, 12) and geom.original_shape == (6, 20, 24)
    # depth unchanged: each slice equals a 2D bilinear resize without antialias
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(vol)[:, None], size=(10, 12), mode="bilinear", align_corners=False
    )[:, 0]
    torch.testing.assert_close(x[0], ref, atol=1e-6, rtol=0)
    pre3 = Preprocessor(PreprocessConfig(), spatial_dims=3, size=(3, 10, 12))
    x3, g3 = pre3(vol)
    assert x3.shape == (1, 3, 10, 12) and pre3.invert_map(x3[0], g3).shape == (6, 20, 24)
    same = Preprocessor(PreprocessConfig(), spatial_dims=3)
    xs, gs = same(vol)
    assert np.array_equal(same.invert_map(xs[0].numpy(), gs), vol)


def test_letterbox_3d_keeps_aspect_in_plane():
    vol = _img((4, 20, 40))
    pre = Preprocessor(PreprocessConfig(size=(16, 16)), spatial_dims=3)
    x, geom = pre(vol)
    assert x.shape == (1, 4, 16, 16) and geom.content_shape == (4, 8, 16)
    assert geom.pad_before == (0, 4, 0)


def test_batch_stacks_and_returns_geometries():
    pre = Preprocessor(PreprocessConfig(size=(16, 16)))
    imgs = [_img((20, 10), 1), _img((16, 16), 2), _img((9, 30, 3), 3)]
    x, geoms = pre.batch(imgs)
    assert x.shape == (3, 1, 16, 16) and len(geoms) == 3
    for i, img in enumerate(imgs):
        assert torch.equal(x[i], pre(img)[0])


def test_batch_bad_inputs():
    pre = Preprocessor(PreprocessConfig())
    with pytest.raises(InputDataError, match="different shapes"):
        pre.batch([_img((8, 8)), _img((8, 9))])
    with pytest.raises(InputDataError, match=P.EMPTY_BATCH):
        pre.batch([])
    with pytest.raises(InputDataError, match="wrap a single image in a list"):
        pre.batch(_img((8, 8)))
    with pytest.raises(InputDataError, match=r"^image 1: pixels have values outside"):
        pre.batch([_img((8, 8)), _img((8, 8)) + 2])


@pytest.mark.parametrize(
    ("pixels", "match"),
    [
        ([[0.1, 0.2]], "expected pixels as a NumPy array"),
        (np.zeros((4, 4), np.uint8), "expected floating-point pixels"),
        (np.full((4, 4), 255.0, np.float32), r"outside \[0, 1\] \(min=255, max=255\)"),
        (np.full((4, 4), np.nan, np.float32), "16 NaN or infinite values"),
        (np.zeros((4, 4, 4), np.float32), r"pick one frame"),
        (np.zeros((2, 4, 4, 3), np.float32), r"\(H, W\), \(H, W, 1\) or \(H, W, 3\)"),
        (np.zeros((0, 4), np.float32), "empty axis"),
        (np.zeros(4, np.float32), "got shape"),
    ],
)
def test_bad_pixels(pixels, match):
    with pytest.raises(InputDataError, match=match):
        Preprocessor(PreprocessConfig())(pixels)


def test_bad_volume_shape():
    with pytest.raises(InputDataError, match=r"\(D, H, W\)"):
        Preprocessor(PreprocessConfig(), spatial_dims=3)(_img((4, 4)))


def test_bad_constructor_arguments():
    with pytest.raises(MedlensError, match="'cfg' parameter of Preprocessor"):
        Preprocessor({"size": [8, 8]})
    with pytest.raises(MedlensError, match="'spatial_dims' parameter of Preprocessor"):
        Preprocessor(PreprocessConfig(), spatial_dims=4)
    with pytest.raises(MedlensError, match="'size' parameter of Preprocessor"):
        Preprocessor(PreprocessConfig(), size=(0, 8))
    with pytest.raises(MedlensError, match="'size' parameter of Preprocessor"):
        Preprocessor(PreprocessConfig(), size=(8, 8, 8))


def test_invert_map_bad_inputs():
    pre = Preprocessor(PreprocessConfig(size=(16, 16)))
    _, geom = pre(_img((20, 10)))
    with pytest.raises(InputDataError, match=r"expected a map of shape \(16, 16\)"):
        pre.invert_map(np.zeros((20, 10)), geom)
    with pytest.raises(InputDataError, match="got shape"):
        pre.invert_map(np.zeros((2, 2, 16, 16)), geom)
    with pytest.raises(MedlensError, match="'geometry' parameter of invert_map"):
        pre.invert_map(np.zeros((16, 16)), (20, 10))
