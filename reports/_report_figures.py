"""Figures of the regulatory report: ROC, reliability diagram, forest plot, flow of cases.

Every function takes plain numbers (as read from the evidence bundle) and returns a
matplotlib :class:`~matplotlib.figure.Figure` built without pyplot (no global state), so
the same inputs always give the same PNG through :func:`medlens.reports.figure`.
Figures never compute a statistic that the evidence already holds: confidence intervals,
operating points and bins are drawn as given.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medlens._errors import InputDataError, param_error

__all__ = [
    "flow_figure",
    "forest_figure",
    "pr_figure",
    "reliability_figure",
    "reliability_grid_figure",
    "roc_figure",
]

ROC_ONE_CLASS = "the ROC curve needs both classes; got {n_pos} positive(s) and {n_neg} negative(s)"
ROC_LENGTHS = "labels ({n_labels}) and scores ({n_scores}) differ in length"
ROC_NONFINITE = "scores hold {n} non-finite value(s); drop failed cases before plotting"
FOREST_EMPTY = "no row to plot; give at least one (label, estimate, ci_low, ci_high) row"
GRID_EMPTY = "no class to plot; give at least one (class, curve, ece) panel"
CURVE_KEYS = ("mean_predicted", "observed", "ci_low", "ci_high", "count")

_BLUE = "#1f4e79"
_RED = "#b3261e"
_GREY = "#6b6b6b"


def _new(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _num(value: Any) -> float:
    """A JSON number or null as float (null -> NaN)."""
    return float("nan") if value is None else float(value)


def _operating_point(ax: Any, x: float, y: float, xerr: Any, yerr: Any, label: str) -> None:
    """The operating point with its 95 % CIs as error bars (undefined bounds drawn as 0)."""
    ax.errorbar(
        [x],
        [y],
        xerr=np.nan_to_num(xerr),
        yerr=np.nan_to_num(yerr),
        fmt="o",
        color=_RED,
        ms=5,
        capsize=3,
        lw=1.1,
        label=label,
    )


def roc_figure(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    *,
    threshold: float | None = None,
    sensitivity: Mapping[str, Any] | None = None,
    specificity: Mapping[str, Any] | None = None,
    auc: Mapping[str, Any] | None = None,
    band: Mapping[str, Sequence[float]] | None = None,
) -> Figure:
    """Empirical ROC curve with the operating point and its confidence intervals.

    Parameters
    ----------
    labels : array of shape (n,), 0/1
    scores : array of shape (n,), finite
    threshold : float, optional
        The operating threshold (shown in the legend).
    sensitivity, specificity : mapping, optional
        Evidence estimates (``estimate``, ``ci_low``, ``ci_high``) at the threshold; drawn
        as the operating point with horizontal and vertical CI bars.
    auc : mapping, optional
        Evidence AUC estimate with CI (legend text only; never recomputed here).
    band : mapping, optional
        A pointwise CI band ``{"fpr": [...], "tpr_low": [...], "tpr_high": [...]}`` when
        the evidence holds one.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    InputDataError
        If lengths differ, a score is not finite or only one class is present.
    """
    y, s, n_pos, n_neg = _check_binary(labels, scores)
    # empirical ROC: one step per distinct score, positive when score >= threshold
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]

    fig = _new(4.6, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], ls=":", color=_GREY, lw=0.8, label="chance")
    if band:
        ax.fill_between(
            np.asarray(band["fpr"], dtype=float),
            np.asarray(band["tpr_low"], dtype=float),
            np.asarray(band["tpr_high"], dtype=float),
            step="post",
            color=_BLUE,
            alpha=0.15,
            label="95 % CI band",
        )
    label = "ROC"
    if auc and auc.get("estimate") is not None:
        label = (
            f"ROC, AUC {_num(auc['estimate']):.3f} "
            f"({_num(auc.get('ci_low')):.3f}–{_num(auc.get('ci_high')):.3f})"
        )
    ax.step(fpr, tpr, where="post", color=_BLUE, lw=1.6, label=label)
    if sensitivity and specificity and sensitivity.get("estimate") is not None:
        se, sp = _num(sensitivity["estimate"]), _num(specificity["estimate"])
        x = 1 - sp
        xerr = [
            [x - (1 - _num(specificity.get("ci_high")))],
            [(1 - _num(specificity.get("ci_low"))) - x],
        ]
        yerr = [[se - _num(sensitivity.get("ci_low"))], [_num(sensitivity.get("ci_high")) - se]]
        op = "operating point" + (f" (threshold {threshold:.3f})" if threshold is not None else "")
        _operating_point(ax, x, se, xerr, yerr, op)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("1 − specificity (false-positive rate)")
    ax.set_ylabel("sensitivity (true-positive rate)")
    ax.set_title(f"ROC curve (n = {y.size}: {n_pos} positive, {n_neg} negative)", fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_aspect("equal")
    fig.tight_layout()
    return fig


def _check_binary(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, int, int]:
    y = np.asarray(labels).astype(int).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    if y.shape != s.shape:
        raise InputDataError(ROC_LENGTHS.format(n_labels=y.size, n_scores=s.size))
    if not np.all(np.isfinite(s)):
        raise InputDataError(ROC_NONFINITE.format(n=int((~np.isfinite(s)).sum())))
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise InputDataError(ROC_ONE_CLASS.format(n_pos=n_pos, n_neg=n_neg))
    return y, s, n_pos, n_neg


def pr_figure(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    *,
    ppv: Mapping[str, Any] | None = None,
    sensitivity: Mapping[str, Any] | None = None,
    average_precision: Mapping[str, Any] | None = None,
) -> Figure:
    """Empirical precision-recall curve with the operating point (PPV, sensitivity) and CIs.

    Parameters
    ----------
    labels : array of shape (n,), 0/1
    scores : array of shape (n,), finite
    ppv, sensitivity : mapping, optional
        Evidence estimates at the threshold (``estimate``, ``ci_low``, ``ci_high``).
    average_precision : mapping, optional
        Evidence AP with CI (legend text only).

    Returns
    -------
    matplotlib.figure.Figure
    """
    y, s, n_pos, n_neg = _check_binary(labels, scores)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[distinct]
    precision = tps / (distinct + 1)
    recall = tps / n_pos
    fig = _new(4.6, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    prevalence = n_pos / (n_pos + n_neg)
    ax.axhline(prevalence, ls=":", color=_GREY, lw=0.8, label=f"prevalence {prevalence:.3f}")
    label = "precision-recall"
    if average_precision and average_precision.get("estimate") is not None:
        label += (
            f", AP {_num(average_precision['estimate']):.3f} "
            f"({_num(average_precision.get('ci_low')):.3f}–"
            f"{_num(average_precision.get('ci_high')):.3f})"
        )
    ax.step(
        np.r_[0.0, recall], np.r_[1.0, precision], where="pre", color=_BLUE, lw=1.6, label=label
    )
    if (
        ppv
        and sensitivity
        and ppv.get("estimate") is not None
        and sensitivity.get("estimate") is not None
    ):
        se, pv = _num(sensitivity["estimate"]), _num(ppv["estimate"])
        xerr = [[se - _num(sensitivity.get("ci_low"))], [_num(sensitivity.get("ci_high")) - se]]
        yerr = [[pv - _num(ppv.get("ci_low"))], [_num(ppv.get("ci_high")) - pv]]
        _operating_point(ax, se, pv, xerr, yerr, "operating point")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.03)
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision (PPV)")
    ax.set_title(f"Precision-recall (n = {y.size}: {n_pos} positive)", fontsize=9)
    ax.legend(loc="lower left", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def reliability_figure(
    curve: Mapping[str, Sequence[Any]], *, ece: Mapping[str, Any] | None = None
) -> Figure:
    """Reliability diagram: observed frequency per bin with its CI, bin counts below.

    Parameters
    ----------
    curve : mapping
        One reliability curve of the evidence (``mean_predicted``, ``observed``,
        ``ci_low``, ``ci_high``, ``count``; optional ``strategy``).
    ece : mapping, optional
        The evidence's ECE record (``ece``, ``null_low``, ``null_high``) for the title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    mp, ob, lo, hi, count = _curve_arrays(curve, "reliability_figure")
    fig = _new(4.6, 4.8)
    ax = fig.add_axes((0.14, 0.33, 0.8, 0.6))
    axh = fig.add_axes((0.14, 0.1, 0.8, 0.14), sharex=ax)
    ax.plot([0, 1], [0, 1], ls=":", color=_GREY, lw=0.8, label="perfect calibration")
    _reliability_points(
        ax,
        axh,
        (mp, ob, lo, hi, count),
        ms=4,
        capsize=3,
        lw=1.1,
        label="observed (95 % CI per bin)",
    )
    ax.set_ylabel("observed frequency of positives")
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3)
    ax.tick_params(labelbottom=False)
    title = f"Reliability ({curve.get('strategy', 'binned')} bins)"
    if ece and ece.get("ece") is not None:
        title += (
            f", ECE {_num(ece['ece']):.3f} (null 95 % band "
            f"{_num(ece.get('null_low')):.3f}–{_num(ece.get('null_high')):.3f})"
        )
    ax.set_title(title, fontsize=9)
    axh.set_ylabel("n", fontsize=8)
    axh.set_xlabel("mean predicted probability")
    axh.tick_params(labelsize=7)
    return fig


def _reliability_points(
    ax: Any,
    axh: Any,
    arrays: tuple[np.ndarray, ...],
    *,
    ms: float,
    capsize: float,
    lw: float,
    label: str | None = None,
) -> None:
    """Observed frequency per bin with its CI on ``ax``, the bin counts on ``axh``, and the
    unit square's limits (``arrays`` from :func:`_curve_arrays`)."""
    mp, ob, lo, hi, count = arrays
    ax.errorbar(
        mp,
        ob,
        yerr=np.nan_to_num([ob - lo, hi - ob]),
        fmt="o-",
        color=_BLUE,
        ms=ms,
        capsize=capsize,
        lw=lw,
        label=label,
    )
    axh.bar(mp, count, width=0.03, color=_GREY)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.02, 1.02)


def _curve_arrays(curve: Any, func: str) -> tuple[np.ndarray, ...]:
    """(mean_predicted, observed, ci_low, ci_high, count) of an evidence reliability curve."""
    if not isinstance(curve, Mapping):
        raise param_error("curve", func, "a reliability curve mapping", type(curve).__name__)
    for key in CURVE_KEYS:
        if key not in curve:
            raise param_error("curve", func, f"a reliability curve with {key!r}", sorted(curve))
    return (
        np.array([_num(v) for v in curve["mean_predicted"]]),
        np.array([_num(v) for v in curve["observed"]]),
        np.array([_num(v) for v in curve["ci_low"]]),
        np.array([_num(v) for v in curve["ci_high"]]),
        np.array([int(v) for v in curve["count"]]),
    )


def _ece_outside(ece: Mapping[str, Any] | None) -> bool:
    """True when the ECE lies above the upper end of its null band (miscalibration)."""
    if not ece or ece.get("ece") is None or ece.get("null_high") is None:
        return False
    return _num(ece["ece"]) > _num(ece["null_high"])


def reliability_grid_figure(
    panels: Sequence[tuple[str, Mapping[str, Sequence[Any]], Mapping[str, Any] | None]],
    *,
    ncols: int = 3,
) -> Figure:
    """Small multiples of reliability diagrams, one per class (one-vs-rest).

    Parameters
    ----------
    panels : sequence of (class name, curve, ece)
        ``curve`` is one reliability curve of the evidence's ``calibration.per_class[c]``
        (``mean_predicted``, ``observed``, ``ci_low``, ``ci_high``, ``count``) and ``ece``
        its ECE record (``ece``, ``null_low``, ``null_high``) or None. A class whose curve
        is None (undefined, e.g. the class is absent) gets an empty panel saying so.
    ncols : int, default 3
        Panels per row.

    Returns
    -------
    matplotlib.figure.Figure
        Each panel: observed frequency per bin with its 95 % CI against the diagonal, the
        bin counts below, and the ECE with its null band in the title (red when the ECE
        lies above the band).

    Raises
    ------
    InputDataError
        If ``panels`` is empty.
    """
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise param_error("ncols", "reliability_grid_figure", "an int >= 1", ncols)
    panels = list(panels)
    if not panels:
        raise InputDataError(GRID_EMPTY)
    arrays = [
        None if curve is None else _curve_arrays(curve, "reliability_grid_figure")
        for _, curve, _ in panels
    ]
    ncols = min(ncols, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = _new(2.45 * ncols + 0.3, 2.75 * nrows + 0.2)
    height = 2.75 * nrows + 0.2
    outer = fig.add_gridspec(nrows, ncols, hspace=0.55, wspace=0.32)
    for k, ((name, _, ece), arr) in enumerate(zip(panels, arrays, strict=True)):
        r, c = divmod(k, ncols)
        cell = outer[r, c].subgridspec(2, 1, height_ratios=[3.2, 1.0], hspace=0.08)
        ax = fig.add_subplot(cell[0])
        axh = fig.add_subplot(cell[1], sharex=ax)
        ax.plot([0, 1], [0, 1], ls=":", color=_GREY, lw=0.8)
        title = str(name)
        if ece and ece.get("ece") is not None:
            title += (
                f"\nECE {_num(ece['ece']):.3f} (null {_num(ece.get('null_low')):.3f}–"
                f"{_num(ece.get('null_high')):.3f})"
            )
        else:
            title += "\nECE undefined"
        ax.set_title(title, fontsize=7.5, color=_RED if _ece_outside(ece) else "black")
        if arr is None:
            ax.text(0.5, 0.5, "undefined", fontsize=7, color=_GREY, ha="center", va="center")
        else:
            _reliability_points(ax, axh, arr, ms=2.5, capsize=2, lw=0.9)
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(labelbottom=False, labelsize=6)
        axh.tick_params(labelsize=6)
        if c == 0:
            ax.set_ylabel("observed frequency", fontsize=7)
            axh.set_ylabel("n", fontsize=7)
        if r == nrows - 1 or k + ncols >= len(panels):
            axh.set_xlabel("mean predicted probability", fontsize=7)
    fig.subplots_adjust(
        left=0.55 / fig.get_figwidth(), right=0.98, top=1 - 0.4 / height, bottom=0.45 / height
    )
    return fig


def forest_figure(
    panels: Mapping[str, Sequence[tuple[str, Any, Any, Any, bool]]],
    *,
    overall: Mapping[str, Any] | None = None,
    goals: Mapping[str, float] | None = None,
) -> Figure:
    """Forest plot: one panel per metric, one row per cohort value with its CI.

    Parameters
    ----------
    panels : mapping metric -> list of (label, estimate, ci_low, ci_high, flagged)
        Rows top to bottom; ``None`` estimates are shown as "undefined"; flagged rows
        (small cohorts) are drawn in grey with a ``*``.
    overall : mapping metric -> float, optional
        Overall estimate (dashed vertical line).
    goals : mapping metric -> float, optional
        Acceptance goal (red dotted line).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not panels or not any(panels.values()):
        raise InputDataError(FOREST_EMPTY)
    n_rows = max(len(rows) for rows in panels.values())
    fig = _new(7.2, 0.8 + 0.24 * n_rows)
    for k, (metric, rows) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), k + 1)
        ys = np.arange(len(rows))[::-1]
        labels = []
        for y, (label, est, lo, hi, flagged) in zip(ys, rows, strict=True):
            colour = _GREY if flagged else _BLUE
            labels.append(f"{label}{' *' if flagged else ''}")
            if est is None:
                ax.text(0.5, y, "undefined", fontsize=6, color=_GREY, ha="center", va="center")
                continue
            e = _num(est)
            lo_, hi_ = _num(lo), _num(hi)
            ax.plot([lo_, hi_], [y, y], color=colour, lw=1.2)
            ax.plot([e], [y], "s", color=colour, ms=4)
        if overall and overall.get(metric) is not None:
            ax.axvline(_num(overall[metric]), color="black", ls="--", lw=0.7, label="overall")
        if goals and goals.get(metric) is not None:
            ax.axvline(float(goals[metric]), color=_RED, ls=":", lw=0.9, label="goal")
        ax.set_yticks(ys)
        ax.set_yticklabels(labels if k == 0 else [""] * len(labels), fontsize=7)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_title(metric, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def flow_figure(
    *,
    received: int,
    failed: int,
    indeterminate: int,
    analysed: int,
    positives: int | None = None,
    negatives: int | None = None,
    failed_reasons: Sequence[tuple[str, int]] = (),
    excluded_by_class: Mapping[str, Mapping[str, int]] | None = None,
    class_counts: Sequence[tuple[str, int]] | None = None,
    class_title: str = "reference class",
) -> Figure:
    """STARD-style flow diagram: received -> excluded (failed / indeterminate) -> analysed.

    Parameters
    ----------
    received, failed, indeterminate, analysed : int
        Case counts from the evidence (``failed_cases``).
    positives, negatives : int, optional
        Reference-standard classes among the analysed cases.
    failed_reasons : sequence of (reason, count)
        Shown in the exclusion box (at most 4).
    excluded_by_class : mapping, optional
        ``{"failed": {"positive": n, "negative": n, "unknown": n}, "indeterminate": {...}}``:
        the excluded cases by reference class (unknown = no reference label), shown under
        each exclusion line (STARD 2015 item 19).
    class_counts : sequence of (class, n), optional
        Multi-class / multi-label: the analysed cases per reference class (or positives
        per label), shown in one box under the analysed cases instead of
        ``positives`` / ``negatives`` (at most 8 lines; the rest summed as "other").
    class_title : str
        Title of that box (e.g. "reference class" or "positive per label").

    Returns
    -------
    matplotlib.figure.Figure
    """
    for name, value in (
        ("received", received),
        ("failed", failed),
        ("indeterminate", indeterminate),
        ("analysed", analysed),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise param_error(name, "flow_figure", "a non-negative int", value)
    class_lines: list[str] = []
    if class_counts is not None:
        counts = [(str(c), v) for c, v in class_counts]
        for _, v in counts:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise param_error(
                    "class_counts", "flow_figure", "(class, non-negative int) pairs", counts
                )
        shown = counts if len(counts) <= 8 else counts[:7]
        class_lines = [f"{c[:28]}: n = {int(v)}" for c, v in shown]
        if len(counts) > len(shown):
            rest = counts[len(shown) :]
            class_lines.append(f"{len(rest)} other classes: n = {sum(int(v) for _, v in rest)}")
    # extra room below (in axis units, 0.6 inch each) for a tall class box
    below = max(0.0, 0.27 * (len(class_lines) + 1) - 0.8)
    fig = _new(6.4, 3.6 + 0.6 * below)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 10)
    ax.set_ylim(-below, 6)
    ax.axis("off")
    box = {"boxstyle": "round,pad=0.4", "fc": "#eef2f7", "ec": _BLUE, "lw": 1}
    ex = {"boxstyle": "round,pad=0.4", "fc": "#fbe3e1", "ec": _RED, "lw": 1}
    ax.text(
        3.2, 5.3, f"Cases received\nn = {received}", ha="center", va="center", fontsize=9, bbox=box
    )

    def split(status: str) -> list[str]:
        if excluded_by_class is None:
            return []
        c = excluded_by_class.get(status) or {}
        for key in ("positive", "negative", "unknown"):
            v = c.get(key, 0)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise param_error(
                    "excluded_by_class", "flow_figure", "non-negative int counts", dict(c)
                )
        return [
            f"(by class: positive {int(c.get('positive', 0))}, "
            f"negative {int(c.get('negative', 0))}, unknown {int(c.get('unknown', 0))})"
        ]

    lines = [
        f"Excluded from the main analysis\nn = {failed + indeterminate}",
        f"failed (unreadable / no score): {failed}",
        *split("failed"),
    ]
    for reason, count in list(failed_reasons)[:4]:
        # whole words only: a reason cut mid-word ("27768 bytes where : 1") misleads
        lines.append(f"  {textwrap.shorten(reason, width=46, placeholder=' …')}: {count}")
    lines += [f"indeterminate: {indeterminate}", *split("indeterminate")]
    ax.text(7.4, 3.6, "\n".join(lines), ha="center", va="center", fontsize=7.5, bbox=ex)
    ax.text(
        3.2, 2.0, f"Cases analysed\nn = {analysed}", ha="center", va="center", fontsize=9, bbox=box
    )
    arrow = {"arrowstyle": "->", "color": "black", "lw": 1}
    ax.annotate("", xy=(3.2, 2.55), xytext=(3.2, 4.75), arrowprops=arrow)
    ax.annotate("", xy=(5.35, 3.6), xytext=(3.2, 3.6), arrowprops=arrow)
    if class_counts is not None:
        ax.text(
            3.2,
            1.0,
            "\n".join([class_title, *class_lines]),
            ha="center",
            va="top",
            fontsize=8,
            bbox=box,
        )
        ax.annotate("", xy=(3.2, 1.12), xytext=(3.2, 1.5), arrowprops=arrow)
    elif positives is not None and negatives is not None:
        ax.text(
            1.6,
            0.55,
            f"reference positive\nn = {positives}",
            ha="center",
            va="center",
            fontsize=8.5,
            bbox=box,
        )
        ax.text(
            4.8,
            0.55,
            f"reference negative\nn = {negatives}",
            ha="center",
            va="center",
            fontsize=8.5,
            bbox=box,
        )
        ax.annotate("", xy=(1.6, 1.0), xytext=(2.7, 1.5), arrowprops=arrow)
        ax.annotate("", xy=(4.8, 1.0), xytext=(3.7, 1.5), arrowprops=arrow)
    return fig
