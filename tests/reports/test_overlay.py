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
        trust={"gradcam": ("trust: FAILED (anatomy)", False), "lime": ("trust: passed", True)},
    )
    path = save_png(fig, tmp_path / "panel.png")
    assert path.stat().st_size > 10_000
    assert len(fig.axes) == 8  # 4 images + 4 colour bars
    lines = {t.get_text(): t.get_color() for ax in fig.axes for t in ax.texts}
    assert lines == {"trust: FAILED (anatomy)": "#c62828", "trust: passed": "#2e7d32"}
    assert tuple(fig.get_size_inches()) == pytest.approx((9.2, 9.8))  # four methods: 2 x 2


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


def _rgb(path):
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_trust_line_is_drawn_in_its_verdict_colour_and_absent_by_default(tmp_path):
    from medlens.reports._overlay import TRUST_COLOURS

    scan, amap = _scan_and_map()
    kw = {"method": "gradcam", "score": 0.91, "signed": True, "target_name": "nodule"}
    plain = save_png(overlay_figure(scan, amap, **kw), tmp_path / "plain.png").read_bytes()
    none = save_png(overlay_figure(scan, amap, **kw, trust=None), tmp_path / "none.png")
    assert none.read_bytes() == plain  # existing calls keep their bytes
    paths = {}
    for verdict, text in ((False, "trust: FAILED (anatomy)"), (True, "trust: passed")):
        paths[verdict] = save_png(
            overlay_figure(scan, amap, **kw, trust=text, trusted=verdict),
            tmp_path / f"{verdict}.png",
        )
        assert paths[verdict].read_bytes() != plain
    base = _rgb(tmp_path / "plain.png")
    for verdict, path in paths.items():
        img = _rgb(path)
        changed = np.argwhere(np.any(img != base, axis=2))
        h = img.shape[0]
        # the line sits between the title and the image (8-12 % from the top)
        assert changed[:, 0].min() >= 0.06 * h and changed[:, 0].max() <= 0.12 * h
        colour = np.array([int(TRUST_COLOURS[verdict][i : i + 2], 16) for i in (1, 3, 5)])
        assert np.any(np.all(np.abs(img - colour) <= 8, axis=2)), verdict
    assert (
        paths[False].read_bytes()
        == save_png(
            overlay_figure(scan, amap, **kw, trust="trust: FAILED (anatomy)", trusted=False),
            tmp_path / "again.png",
        ).read_bytes()
    )


def test_trust_bad_input():
    scan, amap = _scan_and_map()
    with pytest.raises(MedlensError, match="'trust' parameter of overlay_figure"):
        overlay_figure(scan, amap, method="x", signed=True, trust="  ")
    with pytest.raises(MedlensError, match="'trusted' parameter of overlay_figure"):
        overlay_figure(scan, amap, method="x", signed=True, trust="t", trusted="no")
