"""Figures of the explanation audit (PNG bytes without metadata, via :func:`figure_png`)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["cohort_share_figure", "deletion_insertion_figure", "sanity_figure"]


def _figure(width: float = 6.0, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _png(fig: Any) -> bytes:
    from ._pdf import figure_png

    return figure_png(fig)


def deletion_insertion_figure(audit: Any) -> bytes:
    """Mean deletion and insertion curves (most relevant first vs. random order) per method."""
    fig = _figure(7.0, 3.2)
    ax_d, ax_i = fig.subplots(1, 2, sharey=True)
    for name, a in audit.audits.items():
        f = a.faithfulness
        (line,) = ax_d.plot(f.fractions, np.nanmean(f.deletion, axis=0), label=name)
        ax_d.plot(f.fractions, np.nanmean(f.deletion_random, axis=0), ls="--", c=line.get_color())
        ax_i.plot(f.fractions, np.nanmean(f.insertion, axis=0), c=line.get_color(), label=name)
        ax_i.plot(f.fractions, np.nanmean(f.insertion_random, axis=0), ls="--", c=line.get_color())
    n = len(audit.cases)
    ax_d.set_title(f"Deletion (n={n}; dashed: random order)", fontsize=9)
    ax_i.set_title(f"Insertion (n={n}; dashed: random order)", fontsize=9)
    for ax in (ax_d, ax_i):
        ax.set_xlabel("fraction of pixels removed / inserted")
    ax_d.set_ylabel("mean target score")
    ax_d.legend(fontsize=7)
    return _png(fig)


def sanity_figure(audit: Any) -> bytes:
    """Median Spearman (original vs. randomised map) per cascading randomisation step."""
    fig = _figure()
    ax = fig.subplots()
    for name, a in audit.audits.items():
        s = a.sanity
        ax.plot(
            range(len(s.layers)),
            s.median_spearman,
            marker="o",
            label=f"{name} ({'passes' if s.passed else 'FAILS'})",
        )
        layers = s.layers
    ax.axhline(audit.audits[audit.methods[0]].sanity.threshold, c="grey", ls=":", lw=1)
    ax.set_xticks(range(len(layers)), layers, rotation=30, fontsize=7)
    ax.set_xlabel("layers randomised (cascading, from the top)")
    ax.set_ylabel("median Spearman |map|")
    ax.set_ylim(-1, 1)
    ax.legend(fontsize=7)
    return _png(fig)


def cohort_share_figure(audit: Any, method: str, region: str) -> bytes:
    """Mean attribution share in ``region`` per cohort with 95 % t intervals and n."""
    a = audit.audits[method]
    t = a.shortcut[region].table
    fig = _figure(6.0, 0.3 * len(t) + 1.2)
    ax = fig.subplots()
    y = np.arange(len(t))[::-1]
    mean = t["mean_share"].to_numpy(dtype=float)
    lo = mean - t["ci_low"].to_numpy(dtype=float)
    hi = t["ci_high"].to_numpy(dtype=float) - mean
    hit = {(c, v) for c, v, r, _rule in a.flagged_cohorts if r == region}
    flagged = [(r.cohort, r.value) in hit for r in t.itertuples()]
    colours = np.where(np.asarray(flagged, dtype=bool), "tab:red", "tab:blue")
    ax.errorbar(mean, y, xerr=[np.nan_to_num(lo), np.nan_to_num(hi)], fmt="none", ecolor="grey")
    ax.scatter(mean, y, c=list(colours), zorder=3)
    ax.axvline(a.shortcut[region].overall_mean, c="grey", ls=":", lw=1)
    labels = [f"{r.cohort}={r.value} (n={r.n})" for r in t.itertuples()]
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel(f"share of attribution: {region.replace('_', ' ')} ({method})")
    ax.set_title(
        "mean share, 95 % t interval; red: flagged (mean or case-rate rule); dotted: overall",
        fontsize=8,
    )
    return _png(fig)
