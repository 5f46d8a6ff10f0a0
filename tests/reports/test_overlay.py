"""Overlay figures: display rule, top-5 % contour, byte-identical PNGs, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from medlens._errors import InputDataError, MedlensError
from medlens.reports._overlay import (
    DISPLAY_PERCENTILE,
    display_limit,
    method_panel,
    overlay_figure,
    pick_slice,
    save_png,
    top_region,
    window_scan,
)


def _scan_and_map(seed=0):
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[:64, :64]
    scan = 40 * np.exp(-((yy - 30) ** 2 + (xx - 20) ** 2) / 50) + rs.randn(64, 64)
    amap = np.exp(-((yy - 30) ** 2 + (xx - 20) ** 2) / 30) - 0.5 * np.exp(
        -((yy - 10) ** 2 + (xx - 50) ** 2) / 20
    )
    return scan, amap


def test_display_limit_is_the_99th_percentile_of_abs_map():
    a = np.linspace(-2, 1, 1001)
    assert DISPLAY_PERCENTILE == 99.0
    assert display_limit(a) == pytest.approx(np.percentile(np.abs(a), 99))
    # one scale across cases: pass both maps
    assert display_limit([a, 10 * a]) == pytest.approx(np.percentile(np.abs(np.r_[a, 10 * a]), 99))
    assert display_limit(np.zeros(10)) == 1.0
    with pytest.raises(MedlensError, match="'percentile' parameter"):
        display_limit(a, percentile=0)


def test_top_region_is_the_top_five_percent_of_values():
    a = np.arange(100.0).reshape(10, 10) - 20
    region = top_region(a)
    assert region.sum() == 5 and region[9, 5:].all()
    assert not top_region(-np.ones((4, 4))).any()  # no positive evidence, no contour


def test_window_scan():
    s = np.array([[-1000.0, 0.0], [40.0, 1000.0]])
    np.testing.assert_allclose(window_scan(s, (40, 400)), [[0, 0.4], [0.5, 1]])
    with pytest.raises(MedlensError, match="'window' parameter"):
        window_scan(s, (40, 0))


def test_pick_slice():
    v = np.zeros((5, 4, 4))
    v[3, 1, 1] = 2.0
    v[1] = -9.0
    assert pick_slice(v) == 3


@pytest.mark.parametrize("signed", [True, False])
def test_png_is_byte_identical_and_readable_size(tmp_path, signed):
    scan, amap = _scan_and_map()
    amap = amap if signed else np.clip(amap, 0, None)
    for name in ("a.png", "b.png"):
        save_png(
            overlay_figure(
                scan, amap, method="gradcam", score=0.91, signed=signed, target_name="nodule"
            ),
            tmp_path / name,
        )
    a, b = (tmp_path / "a.png").read_bytes(), (tmp_path / "b.png").read_bytes()
    assert a == b and a[:4] == b"\x89PNG"
    width = int.from_bytes(a[16:20], "big")
    height = int.from_bytes(a[20:24], "big")
    assert width >= 1000 and height >= 1000
    assert b"Software" not in a


def test_multi_method_panel(tmp_path):
    scan, amap = _scan_and_map()
    fig = method_panel(
        scan,
        {
            "gradcam": (np.clip(amap, 0, None), False, 0.9),
            "integrated_gradients": (amap, True, 0.9),
            "lime": (amap * 3, True, None),
            "shap": (amap, True, 0.9),
        },
        target_name="nodule",
    )
    path = save_png(fig, tmp_path / "panel.png")
    assert path.stat().st_size > 10_000
    assert len(fig.axes) == 8  # 4 images + 4 colour bars


def test_bad_input():
    scan, amap = _scan_and_map()
    with pytest.raises(
        InputDataError, match="the map has shape \\(32, 32\\) but the scan has shape \\(64, 64\\)"
    ):
        overlay_figure(scan, amap[:32, :32], method="x", signed=True)
    with pytest.raises(InputDataError, match="map must be a 2D array"):
        overlay_figure(scan, amap[None, None], method="x", signed=True)
    bad = amap.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputDataError, match="1 NaN or infinite"):
        overlay_figure(scan, bad, method="x", signed=True)
    with pytest.raises(MedlensError, match="'maps' parameter"):
        method_panel(scan, {})
    with pytest.raises(MedlensError, match="'fraction' parameter"):
        top_region(amap, fraction=1.5)
