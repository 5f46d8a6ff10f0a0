"""Explanation overlays: a windowed scan in grey with the attribution map on top.

One display rule, applied only when drawing (the stored maps are never rescaled):

* the colour scale runs to ``v = DISPLAY_PERCENTILE``-th percentile of ``|map|`` over the
  maps drawn together (pass ``vmax`` to share one scale across cases); signed maps use the
  symmetric range ``[-v, v]`` and a diverging colour map (blue = against the target, red =
  for it), unsigned maps ``[0, v]`` and a sequential one; values beyond are clipped;
* opacity grows with ``|map| / v`` up to ``alpha``, so the scan stays visible where the map
  is near zero;
* the contour outlines the top ``TOP_FRACTION`` of pixels by map value (the strongest
  evidence *for* the target; for unsigned maps the largest values).

PNG files carry no metadata, so the same inputs give byte-identical files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from medlens._errors import InputDataError, param_error  # noqa: E402

__all__ = [
    "DISPLAY_PERCENTILE",
    "DIVERGING_CMAP",
    "SEQUENTIAL_CMAP",
    "TOP_FRACTION",
    "display_limit",
    "method_panel",
    "overlay_figure",
    "pick_slice",
    "save_png",
    "top_region",
    "window_scan",
]

DISPLAY_PERCENTILE = 99.0
TOP_FRACTION = 0.05
SEQUENTIAL_CMAP = "inferno"
DIVERGING_CMAP = "coolwarm"
DPI = 200
#: Colour of an overlay's trust line by verdict (failed, passed, not checked).
TRUST_COLOURS = {False: "#c62828", True: "#2e7d32", None: "#555555"}

SHAPE_MISMATCH = (
    "the map has shape {map_shape} but the scan has shape {scan_shape}; draw maps on the grid "
    "they belong to (maps_original on the original scan, maps on the model input)."
)
NOT_2D = "{what} must be a 2D array (H, W) after slicing; got shape {shape}."
NONFINITE_MAP = "the map has {n} NaN or infinite values; it cannot be drawn."


def display_limit(
    maps: np.ndarray | Sequence[np.ndarray], *, percentile: float = DISPLAY_PERCENTILE
) -> float:
    """The colour-scale limit ``v``: the percentile of ``|map|`` over all maps given.

    Returns a positive number (the largest ``|map|`` if the percentile is 0, and 1.0 for an
    all-zero map so that an empty map draws as empty rather than as noise).
    """
    if not 0 < percentile <= 100:
        raise param_error("percentile", "display_limit", "a float in (0, 100]", percentile)
    arrays = (
        [np.asarray(maps, dtype=np.float64)]
        if isinstance(maps, np.ndarray)
        else [np.asarray(m, dtype=np.float64) for m in maps]
    )
    flat = np.abs(np.concatenate([a.ravel() for a in arrays]))
    v = float(np.percentile(flat, percentile))
    if v <= 0:
        v = float(flat.max())
    return v if v > 0 else 1.0


def top_region(amap: np.ndarray, *, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Boolean mask of the ``fraction`` of pixels with the largest map values."""
    if not 0 < fraction < 1:
        raise param_error("fraction", "top_region", "a float in (0, 1)", fraction)
    a = np.asarray(amap, dtype=np.float64)
    k = max(1, int(round(fraction * a.size)))
    thr = np.partition(a.ravel(), a.size - k)[a.size - k]
    return (a >= thr) & (a > 0) if np.any(a > 0) else np.zeros(a.shape, dtype=bool)


def window_scan(scan: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Grey values in [0, 1]: a VOI window (centre, width) or the 1st-99th percentiles."""
    s = np.asarray(scan, dtype=np.float64)
    if window is None:
        lo, hi = np.percentile(s, [1, 99])
    else:
        centre, width = window
        if not width > 0:
            raise param_error("window", "window_scan", "(centre, width) with width > 0", window)
        lo, hi = centre - width / 2, centre + width / 2
    if hi <= lo:
        return np.zeros_like(s)
    return np.clip((s - lo) / (hi - lo), 0, 1)


def pick_slice(volume_map: np.ndarray) -> int:
    """For a 3D map (D, H, W): the slice with the largest total positive evidence."""
    m = np.asarray(volume_map, dtype=np.float64)
    return int(np.argmax(np.clip(m, 0, None).reshape(m.shape[0], -1).sum(1)))


def _check_pair(scan: np.ndarray, amap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scan = np.asarray(scan)
    amap = np.asarray(amap, dtype=np.float64)
    if scan.ndim == 3 and scan.shape[0] in (1, 3):
        scan = scan.mean(axis=0)
    for what, a in (("scan", scan), ("map", amap)):
        if a.ndim != 2:
            raise InputDataError(NOT_2D.format(what=what, shape=a.shape))
    if scan.shape != amap.shape:
        raise InputDataError(SHAPE_MISMATCH.format(map_shape=amap.shape, scan_shape=scan.shape))
    bad = int((~np.isfinite(amap)).sum())
    if bad:
        raise InputDataError(NONFINITE_MAP.format(n=bad))
    return scan, amap


def _draw(
    ax: Any,
    scan: np.ndarray,
    amap: np.ndarray,
    *,
    signed: bool,
    vmax: float,
    window: tuple[float, float] | None,
    alpha: float,
) -> ScalarMappable:
    grey = window_scan(scan, window)
    ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if signed:
        norm = Normalize(-vmax, vmax)
        cmap = colormaps[DIVERGING_CMAP]
    else:
        norm = Normalize(0, vmax)
        cmap = colormaps[SEQUENTIAL_CMAP]
    rgba = cmap(norm(np.clip(amap, -vmax, vmax)))
    rgba[..., 3] = alpha * np.clip(np.abs(amap) / vmax, 0, 1)
    ax.imshow(rgba, interpolation="nearest")
    region = top_region(amap)
    if region.any() and not region.all():
        ax.contour(region.astype(float), levels=[0.5], colors=["#00ff66"], linewidths=1.2)
    ax.set_xticks([])
    ax.set_yticks([])
    return ScalarMappable(norm=norm, cmap=cmap)


def overlay_figure(
    scan: np.ndarray,
    amap: np.ndarray,
    *,
    method: str,
    score: float | None = None,
    signed: bool,
    target_name: str | None = None,
    vmax: float | None = None,
    window: tuple[float, float] | None = None,
    alpha: float = 0.6,
    note: str | None = None,
    trust: str | None = None,
    trusted: bool | None = None,
) -> Figure:
    """One case, one method: grey scan, heat map, colour bar, top-5 % contour, labels.

    Parameters
    ----------
    scan : ndarray of shape (H, W) or (C, H, W)
        The image the map belongs to (channels are averaged for display).
    amap : ndarray of shape (H, W)
        The attribution map (not rescaled; see the module's display rule).
    method : str
        Method name shown in the title.
    score : float, optional
        Model score of the target, shown in the title.
    signed : bool
        Draw with the symmetric diverging scale.
    target_name : str, optional
    vmax : float, optional
        Colour-scale limit; default :func:`display_limit` of this map.
    window : (centre, width), optional
        VOI window of the scan in its units; default the 1st-99th percentiles.
    alpha : float
        Largest opacity of the heat map.
    note : str, optional
        Extra line under the image (e.g. the slice of a volume).
    trust : str, optional
        The map's trust verdict (e.g. ``"trust: FAILED (anatomy)"``), drawn on its own line
        under the title so that a map that failed its trust card is never shown unmarked.
        None (default): no trust line, and the figure is exactly as without the argument.
    trusted : bool, optional
        Colour of the trust line: False red, True green, None grey (not checked).

    Returns
    -------
    matplotlib.figure.Figure
        An Agg figure (not registered with pyplot); save it with :func:`save_png`.
    """
    if trust is not None and (not isinstance(trust, str) or not trust.strip()):
        raise param_error("trust", "overlay_figure", "a non-empty str or None", trust)
    if trusted is not None and not isinstance(trusted, bool):
        raise param_error("trusted", "overlay_figure", "True, False or None", trusted)
    scan, amap = _check_pair(scan, amap)
    v = display_limit(amap) if vmax is None else float(vmax)
    fig = Figure(figsize=(6.4, 6.0), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.04, 0.1, 0.76, 0.78))
    sm = _draw(ax, scan, amap, signed=signed, vmax=v, window=window, alpha=alpha)
    cax = fig.add_axes((0.83, 0.1, 0.035, 0.78))
    cb = fig.colorbar(sm, cax=cax)
    cb.set_label(
        "attribution ("
        + ("signed, " if signed else "")
        + f"clipped at p{DISPLAY_PERCENTILE:g} |map|)",
        fontsize=9,
    )
    cb.ax.tick_params(labelsize=8)
    title = method
    if target_name is not None:
        title += f" \u2014 {target_name}"
    if score is not None:
        title += f"  (score {score:.3f})"
    fig.text(0.04, 0.94, title, fontsize=13, weight="bold")
    if trust is not None:
        fig.text(
            0.04,
            0.9,
            trust,
            fontsize=10,
            weight="bold",
            color=TRUST_COLOURS[trusted],
        )
    legend = f"green contour: top {TOP_FRACTION:.0%} of map values"
    if note:
        legend += f"; {note}"
    fig.text(0.04, 0.04, legend, fontsize=9)
    return fig


def method_panel(
    scan: np.ndarray,
    maps: Mapping[str, tuple[np.ndarray, bool, float | None]],
    *,
    target_name: str | None = None,
    window: tuple[float, float] | None = None,
    alpha: float = 0.6,
    note: str | None = None,
    trust: Mapping[str, tuple[str, bool | None]] | None = None,
) -> Figure:
    """One case, several methods side by side, each with its own colour bar.

    Parameters
    ----------
    scan : ndarray of shape (H, W) or (C, H, W)
    maps : mapping method name -> (map (H, W), signed, score or None)
        Methods have different units, so each panel uses its own display limit.
    trust : mapping method name -> (trust line, trusted), optional
        A line under the method's title, coloured as in :func:`overlay_figure` (green
        passed, red failed, grey not checked).
    """
    if not maps:
        raise param_error("maps", "method_panel", "at least one method", maps)
    trust = dict(trust or {})
    n = len(maps)
    cols = 2 if n == 4 else min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(4.6 * cols, 4.6 * rows + 0.6), dpi=DPI)
    FigureCanvasAgg(fig)
    for k, (name, (amap, signed, score)) in enumerate(maps.items()):
        s2, a2 = _check_pair(scan, amap)
        ax = fig.add_subplot(rows, cols, k + 1)
        sm = _draw(ax, s2, a2, signed=signed, vmax=display_limit(a2), window=window, alpha=alpha)
        cb = fig.colorbar(sm, ax=ax, fraction=0.046, pad=0.03)
        cb.ax.tick_params(labelsize=8)
        label = name if score is None else f"{name} (score {score:.3f})"
        if name in trust:
            line, trusted = trust[name]
            ax.set_title(label, fontsize=11, pad=16)
            ax.text(
                0.5,
                1.01,
                line,
                transform=ax.transAxes,
                ha="center",
                va="bottom",
                fontsize=9.5,
                fontweight="bold",
                color=TRUST_COLOURS[trusted],
            )
        else:
            ax.set_title(label, fontsize=11)
    head = "Explanations" + (f" \u2014 {target_name}" if target_name else "")
    head += f"   [green: top {TOP_FRACTION:.0%}; colour clipped at p{DISPLAY_PERCENTILE:g} |map|]"
    if note:
        head += f"   {note}"
    fig.suptitle(head, fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write the figure as a PNG without metadata (byte-identical across runs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path
