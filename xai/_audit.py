"""Explanation-quality audit of a test set: every check of medlens.xai, per method, in one run.

:func:`run_audit` explains a (stratified, seeded) sample of cases with each method and runs:
cascading sanity check on a few cases, deletion/insertion with a random-order baseline,
localisation against lesion masks (positive cases with a non-empty mask), max-sensitivity on a
few cases, a shortcut audit per cohort (border, corners and user regions such as burned-in
text), agreement between methods and a per-case trust card (:func:`case_trust_cards`, rules
in :mod:`medlens.xai._trust` and quoted in ``params["trust_criteria"]``). Every check reports
the model evaluations it spent.

Masks are used in model-input space: :func:`mask_to_input` samples each original-grid mask
at the input pixel centres mapped back through the preprocessor's
:class:`~medlens.model.Geometry` (nearest neighbour; letterbox padding is outside every mask).

Shortcut flags (regions: ``outside_anatomy``, ``border`` and the four corners):

* mean rule: :func:`~medlens.xai._shortcut.shortcut_audit` (Holm-adjusted Mann-Whitney U,
  cohort vs. rest, p < 0.05) with a minimum excess of the cohort mean share over the overall
  mean of 0.10 for ``outside_anatomy`` and, for a named region, the region's area fraction
  (the share a uniform map would put there);
* case-rate rule (named regions only): a case leans on a region when its share there exceeds
  :data:`REGION_CASE_FACTOR` times the region's area fraction; a cohort is flagged when its
  rate of such cases exceeds the rate of the other cases by more than
  :data:`CASE_RATE_DIFFERENCE` with a Holm-adjusted two-sided Fisher exact p-value below
  :data:`CASE_RATE_P_THRESHOLD`. Shortcuts such as burned-in markers appear on a subset of a
  site's images; this rule finds them where a mean over the whole site is diluted. It is not
  applied to ``outside_anatomy``: diffuse methods (saliency) put about half their mass
  outside the anatomy, so a fixed per-case cut-off there splits cohorts by image contrast,
  not by shortcuts (it flagged a clean model's site_c in 3 of 5 synthetic cohorts).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from medlens._errors import InputDataError, param_error

from ..validation import adjust_pvalues
from ._base import get_explainer
from ._faithfulness import DeletionInsertionResult, deletion_insertion, road
from ._localisation import LocalisationResult, localisation_scores
from ._randomisation import SanityCheckResult, randomised_models, sanity_check
from ._robustness import MaxSensitivityResult, max_sensitivity
from ._shortcut import (
    COHORT_DIFFERENCE_THRESHOLD,
    AttributionShares,
    ShortcutAudit,
    attribution_shares,
    region_masks,
    shortcut_audit,
)
from ._similarity import MethodAgreement, method_agreement, rank_correlation
from ._trust import (
    ANATOMY_MARGIN,
    STOCHASTIC_METHODS,
    TRUST_CRITERIA,
    TrustCard,
    reference_shares,
    region_lean,
    trust_cards,
)

__all__ = [
    "AuditResult",
    "CASE_RATE_DIFFERENCE",
    "CASE_RATE_P_THRESHOLD",
    "MethodAudit",
    "REGION_CASE_FACTOR",
    "case_outcomes",
    "case_trust_cards",
    "mask_to_input",
    "result_trust_card",
    "run_audit",
    "stratified_sample",
]

REGION_CASE_FACTOR = 4.0
N_EXAMPLES = 3
CASE_RATE_DIFFERENCE = 0.10
CASE_RATE_P_THRESHOLD = 0.05
DEFAULT_METHODS = ("gradcam", "integrated_gradients", "saliency")

IMAGES_CASES_MISMATCH = "got {n_images} images for {n_cases} case rows; give one row per image."
MASKS_MISMATCH = "{name} has {got} masks for {n} images; give one mask (or None) per image."
MASK_SHAPE = "{name}[{i}] has shape {got}; expected {expected} (the model-input grid)."
MISSING_COLUMN = "column {name!r} is not in the case table; available: {available}"


# --------------------------------------------------------------------------- helpers
def mask_to_input(mask: Any, geometry: Any) -> np.ndarray:
    """Resample an original-grid mask onto the model-input grid (nearest neighbour).

    Each input pixel centre is mapped to original coordinates with
    ``geometry.to_original_coords``; the nearest original pixel's value is taken. Pixels outside
    the original image (letterbox padding) are False.

    Parameters
    ----------
    mask : bool array of shape ``geometry.original_shape``
    geometry : medlens.model.Geometry

    Returns
    -------
    bool ndarray of shape ``geometry.input_shape``
    """
    m = np.asarray(mask).astype(bool)
    if m.shape != tuple(geometry.original_shape):
        raise InputDataError(
            MASK_SHAPE.format(name="mask", i=0, got=m.shape, expected=geometry.original_shape)
        )
    grids = np.meshgrid(*[np.arange(s) for s in geometry.input_shape], indexing="ij")
    pts = np.stack([g.ravel() for g in grids], axis=1)
    orig = np.rint(geometry.to_original_coords(pts)).astype(np.int64)
    inside = np.all((orig >= 0) & (orig < np.asarray(m.shape)), axis=1)
    out = np.zeros(pts.shape[0], dtype=bool)
    idx = tuple(orig[inside].T)
    out[inside] = m[idx]
    return out.reshape(geometry.input_shape)


def case_outcomes(labels: Any, scores: Any, *, threshold: float = 0.5) -> np.ndarray:
    """``"TP"``, ``"FP"``, ``"FN"``, ``"TN"`` per case (positive when score >= threshold)."""
    y = np.asarray(labels).astype(float)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape:
        raise InputDataError(f"labels {y.shape} and scores {s.shape} differ in shape")
    pred = s >= threshold
    pos = y == 1
    out = np.where(pos, np.where(pred, "TP", "FN"), np.where(pred, "FP", "TN"))
    return out.astype(object)


def stratified_sample(strata: Any, *, max_cases: int | None, seed: int = 0) -> np.ndarray:
    """Seeded sample of row positions, stratified (proportional, >= 1 per stratum if possible).

    Parameters
    ----------
    strata : sequence of hashable, length N
        Stratum of each row (e.g. ``"site_b|TP"``).
    max_cases : int or None
        Most rows; None or >= N keeps every row.
    seed : int

    Returns
    -------
    ndarray of int
        Sorted row positions.
    """
    keys = np.asarray([str(s) for s in strata], dtype=object)
    n = len(keys)
    if max_cases is not None and (
        isinstance(max_cases, bool) or not isinstance(max_cases, int) or max_cases < 1
    ):
        raise param_error("max_cases", "stratified_sample", "an int >= 1 or None", max_cases)
    if max_cases is None or max_cases >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    groups = {k: np.flatnonzero(keys == k) for k in sorted(set(keys))}
    # largest-remainder proportional allocation with at least one row per stratum
    quota = {k: max(1, math.floor(max_cases * len(v) / n)) for k, v in groups.items()}
    while sum(quota.values()) > max_cases:
        k = max(quota, key=lambda g: (quota[g], g))
        quota[k] -= 1
    rest = max_cases - sum(quota.values())
    order = sorted(groups, key=lambda g: -(max_cases * len(groups[g]) / n - quota[g]))
    for k in order:
        if rest == 0:
            break
        if quota[k] < len(groups[k]):
            quota[k] += 1
            rest -= 1
    chosen = [rng.choice(v, size=min(quota[k], len(v)), replace=False) for k, v in groups.items()]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _case_rate_table(
    flags: np.ndarray, defined: np.ndarray, cases: Any, cols: Sequence[str], region: str
) -> Any:
    import pandas as pd
    from scipy.stats import fisher_exact

    rows = []
    for c in cols:
        col = cases[c].to_numpy()
        for v in pd.unique(cases[c].dropna()):
            member = (col == v) & defined
            rest = (col != v) & defined
            a, b = int(flags[member].sum()), int(member.sum())
            c2, d = int(flags[rest].sum()), int(rest.sum())
            if b and d:
                p = float(fisher_exact([[a, b - a], [c2, d - c2]])[1])
            else:
                p = math.nan
            rows.append(
                {
                    "region": region,
                    "cohort": c,
                    "value": v,
                    "n": b,
                    "n_flagged": a,
                    "rate": a / b if b else math.nan,
                    "rate_rest": c2 / d if d else math.nan,
                    "p_value": p,
                }
            )
    t = pd.DataFrame(
        rows,
        columns=["region", "cohort", "value", "n", "n_flagged", "rate", "rate_rest", "p_value"],
    )
    adj = adjust_pvalues(t["p_value"].to_numpy(dtype=float), method="holm")
    t["p_adjusted"] = adj
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t["flagged"] = (adj < CASE_RATE_P_THRESHOLD) & (
            (t["rate"] - t["rate_rest"]).to_numpy(dtype=float) > CASE_RATE_DIFFERENCE
        )
    return t


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class MethodAudit:
    """Every check of one explanation method.

    Attributes
    ----------
    method : str
    maps : ndarray of shape (N, *spatial)
        The audited maps (first target), model-input space.
    targets : ndarray of shape (N,)
    sanity : SanityCheckResult
        Cascading randomisation on the first ``sanity_cases`` sampled cases.
    faithfulness : DeletionInsertionResult
    road : RoadResult or None
    localisation : LocalisationResult or None
        On ``localisation_cases`` (positive cases with a non-empty lesion mask).
    localisation_cases : ndarray of int
    sensitivity : MaxSensitivityResult
        On the first ``sensitivity_cases`` sampled cases.
    shares : AttributionShares
    shortcut : dict of str to ShortcutAudit
        Mean-rule audit per region.
    case_rates : pandas.DataFrame
        Case-rate rule table over every region.
    flagged_cohorts : tuple of (column, value, region, rule)
    examples : pandas.DataFrame
        Up to :data:`N_EXAMPLES` highest-share cases per flag (cohort, value, region, rule,
        case, share).
    trust : tuple of TrustCard
    evaluations : dict of str to int
        Model evaluations (image rows through forward) spent by each check.
    """

    method: str
    maps: np.ndarray = field(repr=False)
    targets: np.ndarray = field(repr=False)
    sanity: SanityCheckResult
    faithfulness: DeletionInsertionResult
    road: Any
    localisation: LocalisationResult | None
    localisation_cases: np.ndarray
    sensitivity: MaxSensitivityResult
    shares: AttributionShares
    shortcut: dict[str, ShortcutAudit] = field(repr=False)
    case_rates: Any = field(repr=False)
    flagged_cohorts: tuple
    examples: Any = field(repr=False)
    trust: tuple[TrustCard, ...] = field(repr=False)
    evaluations: dict[str, int] = field(default_factory=dict)

    @property
    def flagged_values(self) -> tuple[tuple[str, Any], ...]:
        """Distinct (cohort column, value) pairs flagged by any region and rule."""
        seen: list[tuple[str, Any]] = []
        for c, v, _r, _rule in self.flagged_cohorts:
            if (c, v) not in seen:
                seen.append((c, v))
        return tuple(seen)


@dataclass(frozen=True)
class AuditResult:
    """Explanation-quality audit of a sample of cases.

    Attributes
    ----------
    cases : pandas.DataFrame
        The audited cases (index = case id) with ``outcome`` when labels/scores were given.
    methods : tuple of str
    audits : dict of str to MethodAudit
    agreement : MethodAgreement or None
        Between methods on the same cases (None with a single method).
    evaluations : dict of str to dict of str to int
        Per method, per check; ``total`` per method.
    params : dict
    seconds : float
    """

    cases: Any = field(repr=False)
    methods: tuple[str, ...]
    audits: dict[str, MethodAudit] = field(repr=False)
    agreement: MethodAgreement | None
    evaluations: dict[str, dict[str, int]]
    params: dict
    seconds: float

    @property
    def flagged_cohorts(self) -> dict[str, tuple[tuple[str, Any], ...]]:
        """Per method, the distinct flagged (cohort column, value) pairs."""
        return {m: a.flagged_values for m, a in self.audits.items()}


# --------------------------------------------------------------------------- the audit
def _stack_masks(masks: Any, n: int, spatial: tuple[int, ...], name: str) -> np.ndarray | None:
    if masks is None:
        return None
    seq = list(masks) if not isinstance(masks, np.ndarray) else list(masks)
    if len(seq) != n:
        raise InputDataError(MASKS_MISMATCH.format(name=name, got=len(seq), n=n))
    out = np.zeros((n, *spatial), dtype=bool)
    present = np.zeros(n, dtype=bool)
    for i, m in enumerate(seq):
        if m is None:
            continue
        a = np.asarray(m).astype(bool)
        if a.shape != spatial:
            raise InputDataError(MASK_SHAPE.format(name=name, i=i, got=a.shape, expected=spatial))
        out[i] = a
        present[i] = True
    return out if present.all() else np.where(present.reshape(-1, *[1] * len(spatial)), out, False)


class _Explain:
    """explain_fn for the checks: first-target maps, counting model evaluations."""

    def __init__(self, method: str, head: Any, seed: int, batch_size: int | None, targets=None):
        self.method, self.head, self.seed, self.batch_size = method, head, seed, batch_size
        self.targets = targets
        self.evaluations = 0

    def __call__(self, model: nn.Module, x: torch.Tensor) -> np.ndarray:
        target = None
        if self.targets is not None and x.shape[0] == len(self.targets):
            target = np.asarray(self.targets, dtype=np.int64).reshape(-1, 1)
        r = get_explainer(self.method, model, head=self.head).explain(
            x, target=target, seed=self.seed, batch_size=self.batch_size
        )
        self.evaluations += int(r.evaluations)
        return r.maps[:, 0]


def result_trust_card(
    model: nn.Module,
    image: torch.Tensor,
    result: Any,
    *,
    case_id: str,
    head: Any = None,
    seed: int = 0,
    batch_size: int | None = 64,
    anatomy_mask: np.ndarray | None = None,
    lesion_mask: np.ndarray | None = None,
) -> tuple[TrustCard, dict[str, int]]:
    """The trust card of a one-image :class:`ExplanationResult` (its first target), as
    ``medlens explain --trust`` and ``medlens run``'s gallery judge each map: one case at a
    time, so a card does not depend on which other cases are explained with it.

    ``image`` is the model input of shape (1, C, *spatial); the masks are on the model
    grid, of shape ``spatial`` (None: the case has no such mask). See
    :func:`case_trust_cards` for the checks and the evaluations returned.
    """
    cards, ev = case_trust_cards(
        model,
        image,
        result.maps[:, 0].astype(np.float64),
        result.targets[:, 0],
        case_ids=[case_id],
        method=result.method,
        head=head,
        seed=seed,
        batch_size=batch_size,
        anatomy_masks=None if anatomy_mask is None else anatomy_mask[None],
        lesion_masks=None if lesion_mask is None else lesion_mask[None],
    )
    return cards[0], ev


def case_trust_cards(
    model: nn.Module,
    images: torch.Tensor,
    maps: np.ndarray,
    targets: np.ndarray,
    *,
    case_ids: Sequence[str],
    method: str,
    head: Any = None,
    seed: int = 0,
    batch_size: int | None = 64,
    faithfulness: DeletionInsertionResult | None = None,
    anatomy_masks: np.ndarray | None = None,
    lesion_masks: np.ndarray | None = None,
    regions: Any = None,
    n_steps: int = 10,
) -> tuple[tuple[TrustCard, ...], dict[str, int]]:
    """Trust card of each map (:mod:`medlens.xai._trust`) and the model evaluations spent.

    One full cascading randomisation of ``model`` (seeded), the method re-run on it; the
    normalised LeRF - MoRF gap of ``faithfulness`` (computed here with ``n_steps`` and the blur
    baseline when not given); for stochastic methods a second run with ``seed + 1``; the share
    of positive attribution in the widened lesion / anatomy region.

    Parameters
    ----------
    model : torch.nn.Module
    images : Tensor of shape (N, C, *spatial)
        Model inputs.
    maps : ndarray of shape (N, *spatial)
        The maps to judge (first target).
    targets : ndarray of shape (N,)
        Class explained by each map.
    case_ids : sequence of str
    method : str
        Registered explainer that made ``maps``.
    head, seed, batch_size
        As for the explainer.
    faithfulness : DeletionInsertionResult, optional
        Of these maps (reused, no extra evaluation).
    anatomy_masks, lesion_masks : bool ndarray of shape (N, *spatial), optional
        Model-input grid.
    regions : mapping of str to bool array of shape spatial or (N, *spatial), optional
        User shortcut regions, checked with the four image corners by
        :func:`~medlens.xai._trust.region_lean` (minus the widened anatomy and lesion).
    n_steps : int
        Deletion/insertion steps when ``faithfulness`` is not given.

    Returns
    -------
    cards : tuple of TrustCard
    evaluations : dict of str to int
        ``trust_randomisation``, ``trust_faithfulness`` (0 when reused) and, for stochastic
        methods, ``trust_stability``.
    """
    ev: dict[str, int] = {}
    if faithfulness is None:
        faithfulness = deletion_insertion(
            model,
            images,
            maps,
            target=targets,
            n_steps=n_steps,
            seed=seed,
            batch_size=batch_size or 64,
        )
        ev["trust_faithfulness"] = int(faithfulness.n_model_evaluations)
    steps = list(randomised_models(model, mode="cascading", seed=seed, example_inputs=images[:1]))
    fn_r = _Explain(method, head, seed, batch_size, targets)
    rand_maps = fn_r(steps[-1].model, images)
    ev["trust_randomisation"] = fn_r.evaluations
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rho_rand = rank_correlation(maps, rand_maps)
        gap = faithfulness.morf_lerf_gap
    stab = None
    if method in STOCHASTIC_METHODS:
        fn_2 = _Explain(method, head, seed + 1, batch_size, targets)
        maps2 = fn_2(model, images)
        ev["trust_stability"] = fn_2.evaluations
        stab = rank_correlation(maps, maps2)
    inside = frac = region = None
    if anatomy_masks is not None or lesion_masks is not None:
        inside, frac, region = reference_shares(
            maps, anatomy_masks=anatomy_masks, lesion_masks=lesion_masks
        )
    spatial = tuple(maps.shape[1:])
    shortcut = {k: v for k, v in region_masks(spatial).items() if k.startswith("corner_")}
    shortcut.update(dict(regions or {}))
    known = [m for m in (anatomy_masks, lesion_masks) if m is not None]
    exclude = None
    if known:
        px = math.ceil(ANATOMY_MARGIN * min(spatial[-2:]))
        union = np.logical_or.reduce([np.asarray(m, dtype=bool) for m in known])
        exclude = np.stack([ndimage.distance_transform_edt(~u) <= px for u in union])
    lean, lean_region = region_lean(maps, shortcut, exclude=exclude)
    cards = trust_cards(
        case_ids,
        method,
        randomisation_spearman=rho_rand,
        faithfulness_gap=gap,
        deletion_auc=faithfulness.deletion_auc,
        deletion_auc_random=faithfulness.deletion_auc_random,
        stability_spearman=stab,
        inside_anatomy_share=inside,
        anatomy_fraction=frac,
        anatomy_region=region,
        shortcut_region_ratio=lean,
        shortcut_region=lean_region,
    )
    return cards, ev


def run_audit(
    model: Any,
    images: Any,
    cases: Any,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    head: Any = None,
    anatomy_masks: Any = None,
    lesion_masks: Any = None,
    cohort_columns: Sequence[str] = ("site",),
    label_column: str | None = "label",
    score_column: str | None = "score",
    threshold: float = 0.5,
    max_cases: int | None = None,
    seed: int = 0,
    batch_size: int | None = 64,
    sanity_cases: int = 8,
    sensitivity_cases: int = 4,
    n_steps: int = 10,
    with_road: bool = False,
    regions: Any = None,
    stream: Any = None,
) -> AuditResult:
    """Audit explanation methods on a set of cases.

    Parameters
    ----------
    model : ModelWrapper or torch.nn.Module
        A :class:`medlens.model.ModelWrapper` (its ``module`` and head are used) or a module.
    images : Tensor of shape (N, C, *spatial)
        Preprocessed model inputs, one per row of ``cases``.
    cases : pandas.DataFrame
        One row per image; index = case id (pseudonymous). Needs ``cohort_columns`` and, for
        outcome stratification, ``label_column`` and ``score_column``.
    methods : sequence of str
        Registered explainers.
    head : HeadConfig, optional
        Default: the wrapper's head.
    anatomy_masks, lesion_masks : sequence of bool arrays of shape spatial (or None), optional
        In the model-input grid (see :func:`mask_to_input`), one per image.
    cohort_columns : sequence of str
    label_column, score_column : str or None
        Outcome (TP/FP/FN/TN at ``threshold``) is added when both are columns of ``cases``.
    max_cases : int, optional
        Sample at most this many cases, stratified by the first cohort column and outcome.
    seed : int
    batch_size : int or None
        Most rows per forward pass in every check.
    sanity_cases, sensitivity_cases : int
        Cases (first of the sample) used by the costly sanity check and max-sensitivity.
    n_steps : int
        Deletion/insertion steps.
    with_road : bool
        Also compute ROAD (off by default: slow): :func:`~medlens.xai.road` with its
        defaults (9 removal fractions 0.1-0.9, noisy linear imputation, noise 0.01, seed).
    regions : mapping of str to bool array of shape spatial or (N, *spatial), optional
        User regions (e.g. burned-in text, a ruler) audited like the border and corners, in
        the model-input grid (one mask per image, or one for all).
    stream : text stream, optional
        Where a progress line per check is printed (None: silent).

    Returns
    -------
    AuditResult
    """
    import pandas as pd

    func = "run_audit"
    start = time.perf_counter()
    module = getattr(model, "module", model)
    if not isinstance(module, nn.Module):
        raise param_error("model", func, "a ModelWrapper or torch.nn.Module", type(model).__name__)
    if head is None:
        head = getattr(getattr(model, "config", None), "head", None) or getattr(model, "head", None)
    if not isinstance(cases, pd.DataFrame):
        raise param_error("cases", func, "a pandas DataFrame", type(cases).__name__)
    if isinstance(images, np.ndarray):
        images = torch.as_tensor(images, dtype=torch.float32)
    if not isinstance(images, torch.Tensor) or images.ndim not in (4, 5):
        got = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise InputDataError(f"images must be a Tensor (N, C, *spatial); got {got}")
    if len(cases) != images.shape[0]:
        raise InputDataError(
            IMAGES_CASES_MISMATCH.format(n_images=images.shape[0], n_cases=len(cases))
        )
    methods = tuple(methods)
    if not methods:
        raise param_error("methods", func, "at least one method name", methods)
    for m in methods:
        get_explainer(m, module)  # unknown names fail before any work
    cols = [cohort_columns] if isinstance(cohort_columns, str) else list(cohort_columns)
    for c in cols:
        if c not in cases.columns:
            raise InputDataError(MISSING_COLUMN.format(name=c, available=list(cases.columns)))
    for name, value in (("sanity_cases", sanity_cases), ("sensitivity_cases", sensitivity_cases)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise param_error(name, func, "an int >= 1", value)
    n_all = len(cases)
    spatial = tuple(images.shape[2:])
    anat_all = _stack_masks(anatomy_masks, n_all, spatial, "anatomy_masks")
    lesion_all = _stack_masks(lesion_masks, n_all, spatial, "lesion_masks")
    user_all: dict[str, np.ndarray] = {}
    for name, mask in dict(regions or {}).items():
        arr = np.asarray(mask).astype(bool)
        if arr.shape == spatial:
            arr = np.broadcast_to(arr, (n_all, *spatial))
        if arr.shape != (n_all, *spatial):
            raise InputDataError(
                MASK_SHAPE.format(name=f"regions[{name!r}]", i=0, got=arr.shape, expected=spatial)
            )
        user_all[str(name)] = arr

    table = cases.copy()
    has_outcome = bool(
        label_column and score_column and {label_column, score_column} <= set(table.columns)
    )
    if has_outcome:
        table["outcome"] = case_outcomes(
            table[label_column].to_numpy(), table[score_column].to_numpy(), threshold=threshold
        )
    strata = (
        [
            "|".join(str(x) for x in parts)
            for parts in zip(
                *([table[cols[0]]] if cols else []),
                *([table["outcome"]] if has_outcome else []),
                strict=True,
            )
        ]
        if (cols or has_outcome)
        else ["all"] * n_all
    )
    idx = stratified_sample(strata, max_cases=max_cases, seed=seed)
    table = table.iloc[idx]
    x = images[idx].detach().float()
    anat = None if anat_all is None else anat_all[idx]
    lesion = None if lesion_all is None else lesion_all[idx]
    user = {k: v[idx] for k, v in user_all.items()}
    n = len(idx)
    say = (lambda msg: print(msg, file=stream)) if stream is not None else (lambda msg: None)
    ids = [str(i) for i in table.index]

    audits: dict[str, MethodAudit] = {}
    all_maps: dict[str, np.ndarray] = {}
    rm = region_masks(spatial)
    area: dict[str, Any] = {k: float(v.mean()) for k, v in rm.items()}
    area.update({k: v.reshape(n, -1).mean(axis=1) for k, v in user.items()})
    k_sanity = min(sanity_cases, n)
    k_sens = min(sensitivity_cases, n)
    for method in methods:
        ev: dict[str, int] = {}
        r = get_explainer(method, module, head=head).explain(x, seed=seed, batch_size=batch_size)
        ev["explain"] = int(r.evaluations)
        maps = r.maps[:, 0].astype(np.float64)
        targets = r.targets[:, 0]
        all_maps[method] = maps

        fn = _Explain(method, head, seed, batch_size, targets[:k_sanity])
        sanity = sanity_check(fn, module, x[:k_sanity], mode="cascading", seed=seed, method=method)
        ev["sanity"] = fn.evaluations

        fa = deletion_insertion(
            module,
            x,
            maps,
            target=targets,
            n_steps=n_steps,
            seed=seed,
            batch_size=batch_size or 64,
        )
        ev["deletion_insertion"] = int(fa.n_model_evaluations)
        road_res = None
        if with_road:
            road_res = road(module, x, maps, target=targets, seed=seed)
            ev["road"] = int(getattr(road_res, "n_model_evaluations", 0))

        loc, loc_idx = None, np.zeros(0, dtype=np.int64)
        if lesion is not None:
            pos = (
                table[label_column].to_numpy() == 1
                if label_column in table.columns
                else np.ones(n, dtype=bool)
            )
            loc_idx = np.flatnonzero(pos & lesion.reshape(n, -1).any(axis=1))
            if loc_idx.size:
                loc = localisation_scores(maps[loc_idx], lesion[loc_idx])

        fn_s = _Explain(method, head, seed, batch_size)
        sens = max_sensitivity(
            fn_s,
            module,
            x[:k_sens],
            n_samples=4,
            seed=seed,
            batch_size=batch_size,
            maps=maps[:k_sens],
        )
        ev["max_sensitivity"] = fn_s.evaluations

        shares = attribution_shares(maps, anatomy_masks=anat, regions=user or None)
        regions = ([] if shares.used_fallback else ["outside_anatomy"]) + list(shares.regions)
        audits_by_region: dict[str, ShortcutAudit] = {}
        rate_tables = []
        flagged: list[tuple[str, Any, str, str]] = []
        for reg in regions:
            md = (
                COHORT_DIFFERENCE_THRESHOLD
                if reg == "outside_anatomy"
                else float(np.mean(area[reg]))
            )
            sa = shortcut_audit(shares, table, cohort_columns=cols, region=reg, min_difference=md)
            audits_by_region[reg] = sa
            flagged += [(c, v, reg, "mean") for c, v in sa.flagged_cohorts]
            if reg == "outside_anatomy":
                continue  # case-rate rule on named regions only (see module docstring)
            vals = shares.share(reg)
            defined = np.isfinite(vals)
            case_flags = np.where(defined, vals > REGION_CASE_FACTOR * area[reg], False)
            rt = _case_rate_table(case_flags, defined, table, cols, reg)
            rate_tables.append(rt)
            flagged += [
                (r_.cohort, r_.value, reg, "case_rate") for r_ in rt.itertuples() if r_.flagged
            ]
        case_rates = pd.concat(rate_tables, ignore_index=True)
        ex_rows = []
        for c, v, reg, rule in flagged:
            vals = shares.share(reg)
            member = np.flatnonzero((table[c].to_numpy() == v) & np.isfinite(vals))
            top = member[np.argsort(-vals[member], kind="stable")][:N_EXAMPLES]
            ex_rows += [
                {
                    "cohort": c,
                    "value": v,
                    "region": reg,
                    "rule": rule,
                    "case": ids[j],
                    "share": float(vals[j]),
                }
                for j in top
            ]
        examples = pd.DataFrame(
            ex_rows, columns=["cohort", "value", "region", "rule", "case", "share"]
        )

        cards, ev_trust = case_trust_cards(
            module,
            x,
            maps,
            targets,
            case_ids=ids,
            method=method,
            head=head,
            seed=seed,
            batch_size=batch_size,
            faithfulness=fa,
            anatomy_masks=anat,
            lesion_masks=lesion,
            regions=user or None,
        )
        ev.update(ev_trust)
        ev["total"] = int(sum(ev.values()))
        say(f"{method}: " + ", ".join(f"{k}={v}" for k, v in ev.items()) + " model evaluations")
        audits[method] = MethodAudit(
            method=method,
            maps=maps,
            targets=targets,
            sanity=sanity,
            faithfulness=fa,
            road=road_res,
            localisation=loc,
            localisation_cases=loc_idx,
            sensitivity=sens,
            shares=shares,
            shortcut=audits_by_region,
            case_rates=case_rates,
            flagged_cohorts=tuple(flagged),
            examples=examples,
            trust=cards,
            evaluations=ev,
        )
    agreement = method_agreement(all_maps) if len(methods) > 1 else None
    return AuditResult(
        cases=table,
        methods=methods,
        audits=audits,
        agreement=agreement,
        evaluations={m: dict(a.evaluations) for m, a in audits.items()},
        params={
            "methods": list(methods),
            "cohort_columns": cols,
            "threshold": float(threshold),
            "max_cases": max_cases,
            "n_cases": int(n),
            "n_available": int(n_all),
            "seed": int(seed),
            "batch_size": batch_size,
            "sanity_cases": int(k_sanity),
            "sensitivity_cases": int(k_sens),
            "n_steps": int(n_steps),
            "with_road": bool(with_road),
            "user_regions": sorted(user),
            "region_case_factor": REGION_CASE_FACTOR,
            "case_rate_difference": CASE_RATE_DIFFERENCE,
            "case_rate_p_threshold": CASE_RATE_P_THRESHOLD,
            "masks": "original-grid masks resampled to the model-input grid (nearest)",
            "trust_criteria": TRUST_CRITERIA,
        },
        seconds=time.perf_counter() - start,
    )
