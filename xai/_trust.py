"""Per-case trust cards: cheap checks that decide whether one heatmap may be shown as evidence.

Each explained (case, method) gets four checks, each with a documented threshold. The
thresholds were set on the demo cohort (95 test images, Grad-CAM, both packaged models; the
numbers are in :data:`TRUST_CRITERIA` and the docstrings of the constants) so that genuine maps
pass and the controls a card must reject fail:

1. Randomisation: the map of the model with *every* layer re-initialised (one cascading
   randomisation) must differ from the original map: Spearman rank correlation of ``|map|``
   below :data:`RANDOMISATION_SPEARMAN_MAX` (Adebayo et al. 2018). An edge detector or any
   other model-independent map gives rho = 1 and fails.
2. Faithfulness: under one removal baseline, removing the most relevant pixels first (MoRF)
   must hurt the target's raw output (logit) clearly more than removing the least relevant
   first (LeRF): the normalised gap :func:`~medlens.xai.morf_lerf_gap` must be at least
   :data:`FAITHFULNESS_MIN_GAP`. Comparing the two orders under the *same* baseline (the
   ROAD paper's MoRF/LeRF design) cancels the drift the baseline itself causes: on the demo
   every removal baseline (blur, mean, zero) drives the demo model's lesion probability to
   about 1, so the former rule "deletion AUC below the random-order AUC" measured the drift,
   and positive cases, already at a probability of 1.000, had a probability range of 0.004
   along the whole curve. The raw output does not saturate (range about 20-45 logits).
3. Stability: for stochastic methods (:data:`STOCHASTIC_METHODS`), the maps of two seeds must
   agree: Spearman of ``|map|`` at least :data:`STABILITY_SPEARMAN_MIN`. Deterministic methods
   pass trivially and the card says so.
4. Anatomy: the positive attribution must not avoid the region where the decision should come
   from. The reference region is the case's lesion mask when it has a non-empty one (the
   finding itself), else its anatomy mask (e.g. the lung fields); it is widened by
   :data:`ANATOMY_MARGIN` of the image side so that coarse maps (Grad-CAM is upsampled from
   an 8x8 grid on the demo model: a lesion's evidence bleeds half a cell beyond it) are not
   penalised for their resolution. The share of positive attribution inside the widened
   region must be at least :data:`ANATOMY_ENRICHMENT_MIN` times the region's share of the
   image (at least as concentrated there as a uniform map); "not assessed" without a mask.
   The check also fails when the map leans on a shortcut region: more than
   :data:`SHORTCUT_REGION_FACTOR` times a uniform map's share in an image corner or a user
   region (burned-in text, a ruler) outside the widened anatomy (:func:`region_lean`). A map
   can be concentrated on the lesion *and* on a burned-in token (integrated gradients of the
   demo's shortcut model do this); it then shows a decision that uses the shortcut and is not
   evidence of the finding alone. The card's reason and its label name the region and the
   ratio ("shortcut region corner_top_left: 8.4x a uniform map's share - possible
   shortcut"), so a map on a burned-in token never reads as a mere "failed: anatomy".
   The image border is *not* a card shortcut region (it is one in the cohort-level
   :func:`~medlens.xai.shortcut_audit`): the border frame covers 39 % of the demo image, so
   its ratio cannot exceed 1 / 0.39 = 2.6 < :data:`SHORTCUT_REGION_FACTOR` (observed at most
   1.63); a single edge strip (10 % of the side) does not separate shortcuts from anatomy:
   the bottom strip, where the lesion-class Grad-CAM of lesion-free images sits on the bright
   diaphragm, exceeds the factor in 15 of 95 maps of the *clean* model (38 of 95 for the
   shortcut model, none of them token images), while the token images score at most 1.6
   there (demo cohort, 300 patients, seed 0, reference region excluded as for the corners).

A card whose checks do not all pass (an undefined check counts as failed, "not assessed"
does not) is not trusted; :func:`trust_label` gives the caption to print next to the map.

References
----------
Adebayo J. et al. (2018). Sanity Checks for Saliency Maps. NeurIPS.
Rong Y., Leemann T., Borisov V., Kasneci G., Kasneci E. (2022). A Consistent and Efficient
Evaluation Strategy for Attribution Methods. ICML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from medlens._errors import InputDataError, param_error

__all__ = [
    "ANATOMY_ENRICHMENT_MIN",
    "ANATOMY_MARGIN",
    "FAITHFULNESS_MIN_GAP",
    "RANDOMISATION_SPEARMAN_MAX",
    "STABILITY_SPEARMAN_MIN",
    "SHORTCUT_REGION_FACTOR",
    "STOCHASTIC_METHODS",
    "TRUST_CRITERIA",
    "TrustCard",
    "reference_shares",
    "region_lean",
    "trust_cards",
    "trust_label",
]

#: Most Spearman rho of ``|map|`` between the original and the fully randomised model. Demo:
#: Grad-CAM rho -0.21 on average (max 0.19, all 95 maps pass); a model-independent map gives 1.
RANDOMISATION_SPEARMAN_MAX = 0.5
#: Least normalised LeRF - MoRF gap (raw output, :func:`~medlens.xai.morf_lerf_gap`). Demo,
#: 95 maps per model, blur baseline, 10 steps: Grad-CAM 5th percentile 0.37 (shortcut model)
#: and 0.32 (clean model), median 0.48 and 0.51; controls, 95th percentile: random pixel order
#: 0.10, random 8x8-patch maps 0.31, Sobel edge map 0.23, Grad-CAM of the randomised model
#: 0.29. At 0.3: Grad-CAM passes 100 % / 97 %, controls pass at most 6 %.
FAITHFULNESS_MIN_GAP = 0.3
#: Least Spearman rho of ``|map|`` between two seeds of a stochastic method.
STABILITY_SPEARMAN_MIN = 0.8
#: Least ratio of the inside share of positive attribution to the region's area fraction
#: (1 = as concentrated as a uniform map). Demo, Grad-CAM, reference widened by 4 px: the 22
#: lesion cases without the burned-in token have ratios of at least 2.1 (median 4.3, shortcut
#: model) and 2.2 (median 3.5, clean model): all pass; the shortcut model's 3 token-carrying
#: lesion cases have 0.83, 0.11 and 0.03: all fail; a map on the token corner has 0.02. Lesion-
#: free cases are judged on the lung fields: median ratio 0.28 / 0.37, because the lesion-class
#: Grad-CAM of a lesion-free image lies on the bright shoulders and diaphragm above and below
#: the lungs (not evidence of a lesion, so those maps fail: 70 and 69 of 70).
ANATOMY_ENRICHMENT_MIN = 1.0
#: Most ratio of a map's positive share in a shortcut region (an image corner or a user region
#: such as burned-in text, minus the widened anatomy) to the region's share of the image. Demo
#: (corners of 10x10 px at 64 px): on the shortcut model the 7 images that carry the token have
#: ratios 7.2-8.4 (Grad-CAM) and 3.2-4.6 (integrated gradients) in the token corner; the 88
#: token-free images at most 3.1 and 2.1 (3 Grad-CAM maps of lesion-free images above 3.0: that
#: model looks at the corner even when it is empty); on the clean model every image (token or
#: not; Grad-CAM, integrated gradients, saliency) at most 2.1.
SHORTCUT_REGION_FACTOR = 3.0
#: Widening of the reference region, as a fraction of the smallest in-plane side (4 px at the
#: demo's 64 px input: half a cell of its 8x8 Grad-CAM grid).
ANATOMY_MARGIN = 1 / 16
STOCHASTIC_METHODS = frozenset({"gradient_shap", "lime", "shap", "smoothgrad"})

#: The card's rules, JSON-ready, for reports to quote.
TRUST_CRITERIA: dict[str, dict[str, Any]] = {
    "randomisation": {
        "statistic": "Spearman rho of |map|, original vs. fully (cascading) randomised model",
        "pass_if": f"rho < {RANDOMISATION_SPEARMAN_MAX}",
        "threshold": RANDOMISATION_SPEARMAN_MAX,
        "reference": "Adebayo et al. 2018, Sanity Checks for Saliency Maps",
    },
    "faithfulness": {
        "statistic": "normalised LeRF - MoRF gap: (AUC LeRF - AUC MoRF) / score range of both "
        "curves, on the target's raw output (logit), same removal baseline for both orders",
        "pass_if": f"gap >= {FAITHFULNESS_MIN_GAP}",
        "threshold": FAITHFULNESS_MIN_GAP,
        "reference": "Rong et al. 2022 (ROAD), MoRF vs. LeRF; Samek et al. 2017",
        "why": "the baseline's own drift of the score cancels between the two orders; a "
        "probability saturates (demo positives: range 0.004 along the whole curve)",
    },
    "stability": {
        "statistic": "Spearman rho of |map| between two seeds (stochastic methods only)",
        "pass_if": f"rho >= {STABILITY_SPEARMAN_MIN}",
        "threshold": STABILITY_SPEARMAN_MIN,
        "methods": sorted(STOCHASTIC_METHODS),
    },
    "anatomy": {
        "statistic": "share of positive attribution inside the reference region / the region's "
        "share of the image",
        "reference_region": "the case's lesion mask when non-empty, else its anatomy mask",
        "margin": f"region widened by {ANATOMY_MARGIN:g} of the smallest in-plane side "
        "(coarse maps are not penalised for their resolution)",
        "pass_if": f"ratio >= {ANATOMY_ENRICHMENT_MIN} and no shortcut-region ratio above "
        f"{SHORTCUT_REGION_FACTOR}",
        "threshold": ANATOMY_ENRICHMENT_MIN,
        "shortcut_regions": "image corners and user regions (e.g. burned-in text), minus the "
        "widened anatomy; ratio = share of positive attribution there / their share of the image",
        "shortcut_region_factor": SHORTCUT_REGION_FACTOR,
        "border": "not a card shortcut region: the frame is too large for the factor and an "
        "edge strip also holds anatomy (diaphragm, shoulders); the cohort shortcut audit "
        "covers the border",
        "not_assessed": "no mask for the case and no shortcut region above the factor",
    },
    "trusted_if": "no check fails ('not assessed' is not a failure; undefined is)",
}

TRUSTED_LABEL = "passed trust checks"
FAILED_LABEL = "FAILED trust checks: not evidence ({reasons})"
#: Named in the label whenever a map leans on a shortcut region (no ")" inside: reports
#: quote the label's parenthesis).
SHORTCUT_LABEL = "shortcut region {region}: {ratio:.1f}x a uniform map's share - possible shortcut"
SHORTCUT_REASON = (
    "possible shortcut: attribution leans on the shortcut region {region}, {ratio:.1f}x a "
    "uniform map's share there (more than {factor:g}x fails)"
)
LENGTH_MISMATCH = "{name} has {got} values; expected {expected} (one per case)."
MASKS_SHAPE = "{name} have shape {got}; expected {expected} (one mask per map)."

PASS, FAIL, NOT_ASSESSED = "pass", "fail", "not assessed"
REGION_LESION, REGION_ANATOMY = "lesion", "anatomy"


@dataclass(frozen=True)
class TrustCard:
    """Outcome of the cheap per-case checks of one map.

    Attributes
    ----------
    case : str
        Case id (pseudonymous).
    method : str
    randomisation_spearman : float
        Spearman of ``|map|`` between the original and the fully randomised model's map.
    randomisation : str
        ``"pass"``, ``"fail"``.
    faithfulness_gap : float
        Normalised LeRF - MoRF gap on the raw output (NaN: the output does not move).
    deletion_auc, deletion_auc_random : float
        Deletion AUC (probability), most relevant first and random order: shown for
        reference, not used by the check (NaN when not given).
    faithfulness : str
    stability_spearman : float
        NaN for deterministic methods.
    stability : str
        ``"pass"`` (deterministic methods: trivially), ``"fail"``.
    inside_anatomy_share, anatomy_fraction : float
        Share of positive attribution inside the (widened) reference region and the region's
        share of the image (NaN without a mask).
    anatomy_region : str
        ``"lesion"``, ``"anatomy"`` or ``""`` (not assessed).
    shortcut_region : str
        Shortcut region with the largest ratio (``""`` when none was measured).
    shortcut_region_ratio : float
        Its positive share / its share of the image (NaN when none was measured).
    anatomy : str
        ``"pass"``, ``"fail"`` or ``"not assessed"``.
    trusted : bool
    reasons : tuple of str
        Plain-language reason per check.
    """

    case: str
    method: str
    randomisation_spearman: float
    randomisation: str
    faithfulness_gap: float
    deletion_auc: float
    deletion_auc_random: float
    faithfulness: str
    stability_spearman: float
    stability: str
    inside_anatomy_share: float
    anatomy_fraction: float
    anatomy_region: str
    shortcut_region: str
    shortcut_region_ratio: float
    anatomy: str
    trusted: bool
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (reasons as a list)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["reasons"] = list(self.reasons)
        return d


def _vec(x: Any, n: int, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float).reshape(-1)
    if a.shape[0] != n:
        raise InputDataError(LENGTH_MISMATCH.format(name=name, got=a.shape[0], expected=n))
    return a


def _masks(masks: Any, shape: tuple[int, ...], name: str) -> np.ndarray | None:
    if masks is None:
        return None
    a = np.asarray(masks).astype(bool)
    if a.shape != shape:
        raise InputDataError(MASKS_SHAPE.format(name=name, got=a.shape, expected=shape))
    return a


def reference_shares(
    maps: Any,
    *,
    anatomy_masks: Any = None,
    lesion_masks: Any = None,
    margin: float = ANATOMY_MARGIN,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Positive-attribution share inside each case's widened reference region.

    The reference region of a case is its lesion mask when non-empty, else its anatomy mask
    when non-empty, else none (NaN, region ``""``). It is widened by
    ``ceil(margin * min(in-plane side))`` pixels (Euclidean distance, all spatial axes).

    Parameters
    ----------
    maps : array of shape (N, *spatial)
    anatomy_masks, lesion_masks : bool array of shape (N, *spatial), optional
    margin : float in [0, 0.5), default :data:`ANATOMY_MARGIN`

    Returns
    -------
    share : ndarray of shape (N,)
        Positive attribution inside the region / all positive attribution (NaN without a
        region or without positive attribution).
    fraction : ndarray of shape (N,)
        The widened region's share of the image.
    region : tuple of str
        ``"lesion"``, ``"anatomy"`` or ``""`` per case.
    """
    func = "reference_shares"
    m = np.asarray(maps, dtype=float)
    if m.ndim < 3 or m.shape[0] == 0 or not np.isfinite(m).all():
        raise param_error("maps", func, "a finite array of shape (N, *spatial)", m.shape)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 0.5:
        raise param_error("margin", func, "a float in [0, 0.5)", margin)
    n = m.shape[0]
    anat = _masks(anatomy_masks, m.shape, "anatomy_masks")
    lesion = _masks(lesion_masks, m.shape, "lesion_masks")
    px = math.ceil(margin * min(m.shape[-2:]))
    pos = np.clip(m, 0, None).reshape(n, -1)
    total = pos.sum(axis=1)
    share, frac = np.full(n, np.nan), np.full(n, np.nan)
    region: list[str] = []
    for i in range(n):
        ref, name = None, ""
        if lesion is not None and lesion[i].any():
            ref, name = lesion[i], REGION_LESION
        elif anat is not None and anat[i].any():
            ref, name = anat[i], REGION_ANATOMY
        region.append(name)
        if ref is None:
            continue
        if px > 0:
            ref = ndimage.distance_transform_edt(~ref) <= px
        frac[i] = ref.mean()
        if total[i] > 0:
            share[i] = pos[i][ref.ravel()].sum() / total[i]
    return share, frac, tuple(region)


def region_lean(
    maps: Any, regions: Any, *, exclude: Any = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Largest ratio of positive share to area over shortcut regions, per case.

    For each region ``R`` (minus ``exclude``, e.g. the widened anatomy, so that anatomy that
    reaches a corner is never counted as a shortcut): ``ratio = (positive attribution in R /
    all positive attribution) / (|R| / image size)``; 1 = a uniform map. Regions left empty
    by the exclusion are skipped.

    Parameters
    ----------
    maps : array of shape (N, *spatial)
    regions : mapping of str to bool array of shape spatial or (N, *spatial)
    exclude : bool array of shape (N, *spatial), optional

    Returns
    -------
    ratio : ndarray of shape (N,)
        NaN where no region was measured or the map has no positive attribution.
    name : tuple of str
        Region with the largest ratio per case (``""`` where none).
    """
    m = np.asarray(maps, dtype=float)
    if m.ndim < 3 or m.shape[0] == 0 or not np.isfinite(m).all():
        raise param_error("maps", "region_lean", "a finite array of shape (N, *spatial)", m.shape)
    n, spatial = m.shape[0], m.shape[1:]
    ex = _masks(exclude, m.shape, "exclude")
    pos = np.clip(m, 0, None).reshape(n, -1)
    total = pos.sum(axis=1)
    best, names = np.full(n, np.nan), [""] * n
    for name, mask in dict(regions or {}).items():
        r = np.asarray(mask).astype(bool)
        if r.shape == spatial:
            r = np.broadcast_to(r, m.shape)
        if r.shape != m.shape:
            raise InputDataError(
                MASKS_SHAPE.format(name=f"region {name!r}", got=r.shape, expected=m.shape)
            )
        if ex is not None:
            r = r & ~ex
        r = r.reshape(n, -1)
        area = r.mean(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = (pos * r).sum(axis=1) / total / area
        for i in range(n):
            if area[i] > 0 and total[i] > 0 and not ratio[i] <= best[i]:
                best[i], names[i] = ratio[i], str(name)
    return best, tuple(names)


def trust_cards(
    cases: Any,
    method: str,
    *,
    randomisation_spearman: Any,
    faithfulness_gap: Any,
    deletion_auc: Any = None,
    deletion_auc_random: Any = None,
    stability_spearman: Any = None,
    inside_anatomy_share: Any = None,
    anatomy_fraction: Any = None,
    anatomy_region: Any = None,
    shortcut_region_ratio: Any = None,
    shortcut_region: Any = None,
) -> tuple[TrustCard, ...]:
    """Build one :class:`TrustCard` per case from per-case check values.

    Parameters
    ----------
    cases : sequence of str
        Case ids, one per map.
    method : str
        Explanation method.
    randomisation_spearman : array of shape (N,)
        Spearman of ``|map|``, original vs. fully randomised model.
    faithfulness_gap : array of shape (N,)
        Normalised LeRF - MoRF gap (:func:`~medlens.xai.morf_lerf_gap`, raw output).
    deletion_auc, deletion_auc_random : array of shape (N,), optional
        Reported on the card for reference only.
    stability_spearman : array of shape (N,), optional
        Spearman between two seeds; required for :data:`STOCHASTIC_METHODS`, ignored (and
        reported as NaN) for deterministic methods.
    inside_anatomy_share, anatomy_fraction : array of shape (N,), optional
        From :func:`reference_shares`; NaN or None = no mask ("not assessed").
    anatomy_region : sequence of str, optional
        Reference region per case (``"lesion"``/``"anatomy"``); default ``"anatomy"`` where a
        share is given.
    shortcut_region_ratio, shortcut_region : array of shape (N,) / sequence of str, optional
        From :func:`region_lean`; a ratio above :data:`SHORTCUT_REGION_FACTOR` fails the
        anatomy check (None or NaN: not measured).

    Returns
    -------
    tuple of TrustCard
    """
    func = "trust_cards"
    ids = [str(c) for c in cases]
    n = len(ids)
    if not isinstance(method, str) or not method:
        raise param_error("method", func, "a method name", method)
    nan = np.full(n, np.nan)
    rho = _vec(randomisation_spearman, n, "randomisation_spearman")
    gap = _vec(faithfulness_gap, n, "faithfulness_gap")
    dele = nan if deletion_auc is None else _vec(deletion_auc, n, "deletion_auc")
    rand = nan if deletion_auc_random is None else _vec(deletion_auc_random, n, "random")
    stochastic = method in STOCHASTIC_METHODS
    if stochastic and stability_spearman is None:
        raise param_error(
            "stability_spearman", func, f"per-case values for stochastic method {method!r}", None
        )
    stab = _vec(stability_spearman, n, "stability_spearman") if stochastic else nan
    inside = nan if inside_anatomy_share is None else _vec(inside_anatomy_share, n, "inside")
    frac = nan if anatomy_fraction is None else _vec(anatomy_fraction, n, "anatomy_fraction")
    if anatomy_region is None:
        regions = [REGION_ANATOMY] * n
    else:
        regions = [str(r) for r in anatomy_region]
        if len(regions) != n:
            raise InputDataError(
                LENGTH_MISMATCH.format(name="anatomy_region", got=len(regions), expected=n)
            )
    lean = nan if shortcut_region_ratio is None else _vec(shortcut_region_ratio, n, "lean")
    lean_names = [""] * n if shortcut_region is None else [str(r) for r in shortcut_region]
    if len(lean_names) != n:
        raise InputDataError(
            LENGTH_MISMATCH.format(name="shortcut_region", got=len(lean_names), expected=n)
        )
    cards = []
    for i in range(n):
        reasons = []
        if not math.isfinite(rho[i]):
            r_state = FAIL
            reasons.append("randomisation test undefined (empty map)")
        elif rho[i] < RANDOMISATION_SPEARMAN_MAX:
            r_state = PASS
            reasons.append(f"map changes when the model is randomised (rho={rho[i]:.2f})")
        else:
            r_state = FAIL
            reasons.append(
                f"map barely changes when the model's weights are randomised (rho={rho[i]:.2f})"
            )
        if not math.isfinite(gap[i]):
            f_state = FAIL
            reasons.append("faithfulness undefined: the output does not change under removal")
        elif gap[i] >= FAITHFULNESS_MIN_GAP:
            f_state = PASS
            reasons.append(
                f"removing the top pixels first lowers the score more than removing the "
                f"least relevant first (normalised gap {gap[i]:.2f})"
            )
        else:
            f_state = FAIL
            reasons.append(
                f"removing the top pixels first does not lower the score clearly more than "
                f"removing the least relevant first (normalised gap {gap[i]:.2f} < "
                f"{FAITHFULNESS_MIN_GAP})"
            )
        if not stochastic:
            s_state = PASS
            reasons.append("deterministic method: stable across seeds by construction")
        elif math.isfinite(stab[i]) and stab[i] >= STABILITY_SPEARMAN_MIN:
            s_state = PASS
            reasons.append(f"stable across seeds (rho={stab[i]:.2f})")
        else:
            s_state = FAIL
            reasons.append(f"unstable across seeds (rho={stab[i]:.2f})")
        where = "the lesion" if regions[i] == REGION_LESION else "the anatomy"
        if not math.isfinite(frac[i]):
            a_state, region = NOT_ASSESSED, ""
            reasons.append("anatomy share not assessed (no anatomy or lesion mask)")
        elif math.isfinite(inside[i]) and inside[i] >= ANATOMY_ENRICHMENT_MIN * frac[i]:
            a_state, region = PASS, regions[i]
            reasons.append(
                f"{inside[i]:.0%} of attribution on or near {where} ({frac[i]:.0%} of the image)"
            )
        else:
            a_state, region = FAIL, regions[i]
            reasons.append(
                f"only {inside[i]:.0%} of attribution on or near {where}, which covers "
                f"{frac[i]:.0%} of the image"
            )
        if math.isfinite(lean[i]) and lean[i] > SHORTCUT_REGION_FACTOR:
            a_state = FAIL
            reasons.append(
                SHORTCUT_REASON.format(
                    region=lean_names[i], ratio=lean[i], factor=SHORTCUT_REGION_FACTOR
                )
            )
        trusted = all(s != FAIL for s in (r_state, f_state, s_state, a_state))
        cards.append(
            TrustCard(
                case=ids[i],
                method=method,
                randomisation_spearman=float(rho[i]),
                randomisation=r_state,
                faithfulness_gap=float(gap[i]),
                deletion_auc=float(dele[i]),
                deletion_auc_random=float(rand[i]),
                faithfulness=f_state,
                stability_spearman=float(stab[i]),
                stability=s_state,
                inside_anatomy_share=float(inside[i]),
                anatomy_fraction=float(frac[i]),
                anatomy_region=region,
                shortcut_region=lean_names[i] if math.isfinite(lean[i]) else "",
                shortcut_region_ratio=float(lean[i]),
                anatomy=a_state,
                trusted=trusted,
                reasons=tuple(reasons),
            )
        )
    return tuple(cards)


def _leans_on_shortcut(card: TrustCard) -> bool:
    ratio = card.shortcut_region_ratio
    return bool(card.shortcut_region) and math.isfinite(ratio) and ratio > SHORTCUT_REGION_FACTOR


def trust_label(card: TrustCard) -> str:
    """Caption for a map: ``"passed trust checks"`` or ``"FAILED trust checks: not evidence
    (failed: ...)"`` naming the failed checks.

    A map that leans on a shortcut region says so explicitly, e.g. ``"FAILED trust checks:
    not evidence (failed: anatomy, shortcut region corner_top_left: 8.4x a uniform map's
    share - possible shortcut)"``; ``anatomy`` is listed only when the share on the anatomy
    (or lesion) is itself too low, so a map concentrated on the lesion *and* on a burned-in
    token reads ``"failed: shortcut region ..."``.
    """
    if not isinstance(card, TrustCard):
        raise param_error("card", "trust_label", "a TrustCard", type(card).__name__)
    if card.trusted:
        return TRUSTED_LABEL
    shortcut = card.anatomy == FAIL and _leans_on_shortcut(card)
    enriched = (
        math.isfinite(card.inside_anatomy_share)
        and math.isfinite(card.anatomy_fraction)
        and card.inside_anatomy_share >= ANATOMY_ENRICHMENT_MIN * card.anatomy_fraction
    )
    # anatomy failed only through the shortcut: name the shortcut, not the anatomy
    only_shortcut = shortcut and (enriched or not math.isfinite(card.anatomy_fraction))
    failed = [
        name
        for name, state in (
            ("randomisation", card.randomisation),
            ("faithfulness", card.faithfulness),
            ("stability", card.stability),
            ("anatomy", card.anatomy),
        )
        if state == FAIL and not (name == "anatomy" and only_shortcut)
    ]
    if shortcut:
        failed.append(
            SHORTCUT_LABEL.format(region=card.shortcut_region, ratio=card.shortcut_region_ratio)
        )
    return FAILED_LABEL.format(reasons="failed: " + ", ".join(failed))
