"""Shortcut audit: how much attribution lies outside the anatomy, per case and per cohort.

A model that looks at burned-in text, the image border or a scanner-specific corner marker
instead of the lungs (Zech et al. 2018) puts attribution mass outside the anatomy. This module
measures that share per case (:func:`attribution_shares`) and compares it across cohorts (site,
scanner, sex, age band; :func:`shortcut_audit`), flagging cohorts and example cases.

Attribution convention: shares are computed on the **positive** part of the map by default (the
evidence *for* the explained class, which is what a shortcut provides); ``attribution="absolute"``
counts ``|map|`` instead.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from medlens._errors import InputDataError, param_error

from ._similarity import _as_array, _as_maps, _transform, _warn_undefined

__all__ = [
    "CASE_SHARE_THRESHOLD",
    "COHORT_DIFFERENCE_THRESHOLD",
    "COHORT_P_THRESHOLD",
    "AttributionShares",
    "ShortcutAudit",
    "attribution_shares",
    "region_masks",
    "shortcut_audit",
]

#: A cohort is flagged when its Holm-adjusted Mann-Whitney p-value (cohort vs. rest) is below
#: this value ...
COHORT_P_THRESHOLD = 0.05
#: ... and its mean share exceeds the overall mean share by more than this (absolute share).
COHORT_DIFFERENCE_THRESHOLD = 0.10
#: A case is flagged when more than this share of its attribution lies in the audited region.
CASE_SHARE_THRESHOLD = 0.5

FALLBACK_NOTE = (
    "no anatomy mask was given: the audit uses the image border and corners as the region a "
    "model should not rely on; evidence outside the anatomy but away from the border is not seen"
)
ANATOMY_NOTE = "share of attribution outside the anatomy mask"
REGION_SHAPE = "region mask {name!r} has shape {got}; expected the spatial shape {expected}."
CASES_MISMATCH = (
    "cases has {got} rows but the shares describe {expected} cases; pass one row of case "
    "attributes per explained case, in the same order."
)
UNKNOWN_COLUMN = "cohort column {name!r} is not in the case table; available: {available}"
UNKNOWN_REGION = "region {name!r} was not measured; available: {available}"
ANATOMY_SHAPE = "anatomy_masks have shape {got}; expected {expected} (one mask per map)."


def region_masks(
    spatial_shape: Sequence[int],
    *,
    border: float = 0.1,
    corner: float = 0.15,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Named regions where shortcuts typically live.

    Parameters
    ----------
    spatial_shape : sequence of int
        (H, W) or (D, H, W); border and corners are defined on the last two axes (in-plane) and
        extend through all slices of a volume.
    border : float in (0, 0.5), default 0.1
        Width of the border frame as a fraction of each in-plane side (rounded up, >= 1 px).
    corner : float in (0, 0.5], default 0.15
        Side of each corner square as a fraction of each in-plane side (rounded up, >= 1 px).
    extra : mapping of str to bool array, optional
        User regions of the same spatial shape (e.g. where burned-in text is printed).

    Returns
    -------
    dict of str to bool ndarray
        ``"border"``, ``"corner_top_left"``, ``"corner_top_right"``, ``"corner_bottom_left"``,
        ``"corner_bottom_right"`` and the ``extra`` regions.
    """
    func = "region_masks"
    shape = tuple(int(s) for s in spatial_shape)
    if len(shape) not in (2, 3) or min(shape) < 2:
        raise param_error(
            "spatial_shape", func, "(H, W) or (D, H, W) with sides >= 2", spatial_shape
        )
    if isinstance(border, bool) or not isinstance(border, (int, float)) or not 0 < border < 0.5:
        raise param_error("border", func, "a float in (0, 0.5)", border)
    if isinstance(corner, bool) or not isinstance(corner, (int, float)) or not 0 < corner <= 0.5:
        raise param_error("corner", func, "a float in (0, 0.5]", corner)
    h, w = shape[-2:]
    bh, bw = max(1, math.ceil(border * h)), max(1, math.ceil(border * w))
    ch, cw = max(1, math.ceil(corner * h)), max(1, math.ceil(corner * w))
    plane = np.ones((h, w), dtype=bool)
    plane[bh : h - bh, bw : w - bw] = False
    out = {"border": plane}
    for name, rows, cols in (
        ("corner_top_left", slice(0, ch), slice(0, cw)),
        ("corner_top_right", slice(0, ch), slice(w - cw, w)),
        ("corner_bottom_left", slice(h - ch, h), slice(0, cw)),
        ("corner_bottom_right", slice(h - ch, h), slice(w - cw, w)),
    ):
        m = np.zeros((h, w), dtype=bool)
        m[rows, cols] = True
        out[name] = m
    out = {k: np.broadcast_to(v, shape).copy() for k, v in out.items()}
    for name, mask in (extra or {}).items():
        arr = np.asarray(mask)
        if arr.shape != shape:
            raise InputDataError(REGION_SHAPE.format(name=name, got=arr.shape, expected=shape))
        out[str(name)] = arr.astype(bool)
    return out


@dataclass(frozen=True)
class AttributionShares:
    """Per-case share of attribution mass outside the anatomy and inside named regions.

    Attributes
    ----------
    outside_anatomy : ndarray of shape (N,)
        Share outside the anatomy mask; all NaN when no anatomy mask was given.
    regions : dict of str to ndarray of shape (N,)
        Share inside each named region (border, corners, user regions).
    used_fallback : bool
        True when no anatomy mask was given and the audit relies on border/corner regions.
    note : str
        Plain-language statement of what was measured (:data:`FALLBACK_NOTE` in fallback).
    attribution : str
        ``"positive"`` or ``"absolute"``.
    params : dict
    """

    outside_anatomy: np.ndarray
    regions: dict[str, np.ndarray]
    used_fallback: bool
    note: str
    attribution: str
    params: dict = field(default_factory=dict)

    @property
    def primary(self) -> str:
        """Region the audit ranks cases by: ``"outside_anatomy"`` or, in fallback, ``"border"``."""
        return "border" if self.used_fallback else "outside_anatomy"

    def share(self, region: str) -> np.ndarray:
        """Shares of ``region`` (``"outside_anatomy"`` or a named region)."""
        if region == "outside_anatomy":
            return self.outside_anatomy
        if region not in self.regions:
            raise InputDataError(
                UNKNOWN_REGION.format(name=region, available=["outside_anatomy", *self.regions])
            )
        return self.regions[region]

    def to_frame(self):
        """Tidy table: one row per case, one column per region share."""
        import pandas as pd

        return pd.DataFrame(
            {
                "case": np.arange(len(self.outside_anatomy)),
                "outside_anatomy": self.outside_anatomy,
                **self.regions,
            }
        )


def attribution_shares(
    maps: Any,
    *,
    anatomy_masks: Any = None,
    regions: Mapping[str, Any] | None = None,
    attribution: str = "positive",
    border: float = 0.1,
    corner: float = 0.15,
) -> AttributionShares:
    """Share of each case's attribution mass outside the anatomy and inside named regions.

    Parameters
    ----------
    maps : array of shape (N, *spatial)
        Attribution maps.
    anatomy_masks : bool array of shape (N, *spatial) or spatial, optional
        Where the anatomy is (e.g. lung fields). Without it the audit falls back to border and
        corner regions and says so (``used_fallback``, ``note``).
    regions : mapping of str to bool array of shape spatial or (N, *spatial), optional
        Extra named regions (e.g. burned-in text), added to border and corners; one mask for
        every case or one per case (e.g. a pixel box mapped through each image's geometry).
    attribution : {"positive", "absolute"}, default "positive"
        Mass counted (see module docstring).
    border, corner : float
        See :func:`region_masks`.

    Returns
    -------
    AttributionShares
        Shares are NaN (+ warning) for cases with zero attribution mass.

    References
    ----------
    Zech J.R. et al. (2018). Variable generalization performance of a deep learning model to
    detect pneumonia in chest radiographs: a cross-sectional study. PLOS Medicine 15(11).
    DeGrave A.J., Janizek J.D., Lee S.-I. (2021). AI for radiographic COVID-19 detection selects
    shortcuts over signal. Nature Machine Intelligence 3.
    """
    func = "attribution_shares"
    if attribution not in ("positive", "absolute"):
        raise param_error("attribution", func, "'positive' or 'absolute'", attribution)
    m = _as_maps(maps, name="maps", func=func)
    n, spatial = m.shape[0], m.shape[1:]
    mass = _transform(m, attribution, func).reshape(n, -1)
    total = mass.sum(axis=1)
    zero = total == 0
    _warn_undefined("attribution share", zero, "the map has no attribution mass")

    def share(region: np.ndarray) -> np.ndarray:
        r = region.reshape(region.shape[0] if region.ndim > len(spatial) else 1, -1)
        with np.errstate(invalid="ignore", divide="ignore"):
            s = (mass * r).sum(axis=1) / total
        s[zero] = np.nan
        return s

    shared, per_case = {}, {}
    for name, mask in (regions or {}).items():
        arr = np.asarray(mask)
        if arr.shape == (n, *spatial):
            per_case[str(name)] = arr.astype(bool)
        elif arr.shape == spatial:
            shared[str(name)] = arr
        else:
            raise InputDataError(
                REGION_SHAPE.format(
                    name=name, got=arr.shape, expected=f"{spatial} or {(n, *spatial)}"
                )
            )
    named = region_masks(spatial, border=border, corner=corner, extra=shared)
    named.update(per_case)
    shares = {k: share(v) for k, v in named.items()}
    if anatomy_masks is None:
        outside = np.full(n, np.nan)
        used_fallback, note = True, FALLBACK_NOTE
    else:
        a = _as_array(
            anatomy_masks,
            name="anatomy_masks",
            func=func,
            expected="(N, *spatial)",
            min_ndim=len(spatial),
        )
        if a.shape == spatial:
            a = np.broadcast_to(a, m.shape)
        if a.shape != m.shape:
            raise InputDataError(ANATOMY_SHAPE.format(got=a.shape, expected=m.shape))
        outside = share(~a.astype(bool))
        used_fallback, note = False, ANATOMY_NOTE
    return AttributionShares(
        outside_anatomy=outside,
        regions=shares,
        used_fallback=used_fallback,
        note=note,
        attribution=attribution,
        params={
            "border": float(border),
            "corner": float(corner),
            "attribution": attribution,
            "user_regions": tuple(regions or ()),
        },
    )


@dataclass(frozen=True)
class ShortcutAudit:
    """Cohort comparison of attribution shares, with flags and example cases.

    Attributes
    ----------
    region : str
        Share audited (``"outside_anatomy"`` or, in fallback, ``"border"``).
    table : pandas.DataFrame
        One row per (cohort column, value): ``cohort``, ``value``, ``n``, ``n_undefined``,
        ``mean_share``, ``ci_low``, ``ci_high`` (t interval), ``overall_mean``, ``difference``
        (cohort mean - overall mean), ``u_statistic``, ``p_value`` (two-sided Mann-Whitney U,
        cohort vs. the rest), ``p_adjusted`` (Holm over all rows), ``flagged``.
    flagged_cohorts : tuple of (str, object)
        (cohort column, value) pairs flagged by the rule.
    cases : pandas.DataFrame
        One row per case: ``case`` (the case table's index), ``share``, ``flagged`` (share >
        :data:`CASE_SHARE_THRESHOLD`) and the cohort columns.
    examples : pandas.DataFrame
        Up to ``n_examples`` highest-share cases per flagged cohort (cohort, value, case, share).
    overall_mean : float
    used_fallback : bool
    note : str
    params : dict
        Thresholds, confidence level and columns (the flag rule is reproducible from it).
    """

    region: str
    table: Any = field(repr=False)
    flagged_cohorts: tuple
    cases: Any = field(repr=False)
    examples: Any = field(repr=False)
    overall_mean: float
    used_fallback: bool
    note: str
    params: dict = field(default_factory=dict)


def _t_interval(x: np.ndarray, confidence: float) -> tuple[float, float]:
    if x.size < 2:
        return math.nan, math.nan
    sd = x.std(ddof=1)
    if sd == 0:
        return float(x.mean()), float(x.mean())
    half = stats.t.ppf(0.5 + confidence / 2, x.size - 1) * sd / math.sqrt(x.size)
    return float(x.mean() - half), float(x.mean() + half)


def shortcut_audit(
    shares: AttributionShares,
    cases: Any,
    *,
    cohort_columns: Sequence[str] = ("site", "scanner", "sex", "age_band"),
    region: str | None = None,
    confidence: float = 0.95,
    p_threshold: float = COHORT_P_THRESHOLD,
    min_difference: float = COHORT_DIFFERENCE_THRESHOLD,
    case_threshold: float = CASE_SHARE_THRESHOLD,
    n_examples: int = 3,
) -> ShortcutAudit:
    """Compare attribution shares across cohorts and flag where the model leans on shortcuts.

    Flag rule (documented constants): a cohort is flagged when the Holm-adjusted two-sided
    Mann-Whitney U p-value of its shares against all other cases is below ``p_threshold``
    (0.05) **and** its mean share exceeds the overall mean by more than ``min_difference``
    (0.10). Cases with undefined (NaN) shares are left out of every statistic and counted in
    ``n_undefined``. Cohort columns missing from ``cases`` are an error; cohort values that are
    NaN are left out of that column's rows.

    Parameters
    ----------
    shares : AttributionShares
        From :func:`attribution_shares`.
    cases : pandas.DataFrame
        One row per case in the same order as the maps; its index is used as the case id
        (use pseudonymous ids, never patient identifiers).
    cohort_columns : sequence of str
        Columns to group by; every one must be in ``cases``.
    region : str, optional
        Share to audit; default ``shares.primary``.
    confidence : float, default 0.95
        Level of the t confidence interval of each cohort mean.
    p_threshold, min_difference, case_threshold : float
        Flag thresholds (see above and :data:`CASE_SHARE_THRESHOLD`).
    n_examples : int, default 3
        Example cases listed per flagged cohort.

    Returns
    -------
    ShortcutAudit

    Raises
    ------
    InputDataError
        Mismatched case table or unknown column/region.

    References
    ----------
    Holm S. (1979). A simple sequentially rejective multiple test procedure. Scand J Stat 6.
    Zech J.R. et al. (2018). PLOS Medicine 15(11).
    """
    import pandas as pd

    from ..validation import adjust_pvalues

    func = "shortcut_audit"
    if not isinstance(shares, AttributionShares):
        raise param_error("shares", func, "an AttributionShares", type(shares).__name__)
    if not isinstance(cases, pd.DataFrame):
        raise param_error("cases", func, "a pandas DataFrame", type(cases).__name__)
    region = region or shares.primary
    values = shares.share(region)
    if len(cases) != len(values):
        raise InputDataError(CASES_MISMATCH.format(got=len(cases), expected=len(values)))
    cols = [cohort_columns] if isinstance(cohort_columns, str) else list(cohort_columns)
    for c in cols:
        if c not in cases.columns:
            raise InputDataError(UNKNOWN_COLUMN.format(name=c, available=list(cases.columns)))
    if not 0 < confidence < 1:
        raise param_error("confidence", func, "a float in (0, 1)", confidence)
    if isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 0:
        raise param_error("n_examples", func, "an int >= 0", n_examples)
    defined = np.isfinite(values)
    if region == "outside_anatomy" and not defined.any():
        raise InputDataError(
            UNKNOWN_REGION.format(name=region, available=list(shares.regions))
            + " (no anatomy mask was given)"
        )
    overall = float(np.mean(values[defined])) if defined.any() else math.nan
    rows = []
    for c in cols:
        col = cases[c].to_numpy()
        for v in pd.unique(cases[c].dropna()):
            member = col == v
            inside = values[member & defined]
            rest = values[~member & defined]
            lo, hi = _t_interval(inside, confidence)
            if inside.size and rest.size:
                u, p = stats.mannwhitneyu(inside, rest, alternative="two-sided")
            else:
                u, p = math.nan, math.nan
            mean = float(inside.mean()) if inside.size else math.nan
            rows.append(
                {
                    "cohort": c,
                    "value": v,
                    "n": int(member.sum()),
                    "n_undefined": int((member & ~defined).sum()),
                    "mean_share": mean,
                    "ci_low": lo,
                    "ci_high": hi,
                    "overall_mean": overall,
                    "difference": mean - overall,
                    "u_statistic": float(u),
                    "p_value": float(p),
                }
            )
    table = pd.DataFrame(
        rows,
        columns=[
            "cohort",
            "value",
            "n",
            "n_undefined",
            "mean_share",
            "ci_low",
            "ci_high",
            "overall_mean",
            "difference",
            "u_statistic",
            "p_value",
        ],
    )
    table["p_adjusted"] = adjust_pvalues(table["p_value"].to_numpy(dtype=float), method="holm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        table["flagged"] = (table["p_adjusted"] < p_threshold) & (
            table["difference"] > min_difference
        )
    flagged = tuple((r.cohort, r.value) for r in table.itertuples() if r.flagged)

    case_table = pd.DataFrame(
        {
            "case": cases.index.to_numpy(),
            "share": values,
            "flagged": np.where(defined, values > case_threshold, False),
        }
    )
    for c in cols:
        case_table[c] = cases[c].to_numpy()
    ex_rows = []
    for c, v in flagged:
        sub = case_table[(case_table[c] == v) & np.isfinite(case_table["share"])]
        top = sub.sort_values("share", ascending=False, kind="stable").head(n_examples)
        for r in top.itertuples():
            ex_rows.append({"cohort": c, "value": v, "case": r.case, "share": r.share})
    examples = pd.DataFrame(ex_rows, columns=["cohort", "value", "case", "share"])
    return ShortcutAudit(
        region=region,
        table=table,
        flagged_cohorts=flagged,
        cases=case_table,
        examples=examples,
        overall_mean=overall,
        used_fallback=shares.used_fallback,
        note=shares.note,
        params={
            "cohort_columns": tuple(cols),
            "confidence": float(confidence),
            "p_threshold": float(p_threshold),
            "min_difference": float(min_difference),
            "case_threshold": float(case_threshold),
            "test": "two-sided Mann-Whitney U, cohort vs rest, Holm-adjusted",
            "ci": "t interval",
            "attribution": shares.attribution,
        },
    )
