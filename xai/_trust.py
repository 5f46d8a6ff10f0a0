"""Per-case trust cards: cheap checks that decide whether one heatmap may be shown as evidence.

Each explained (case, method) gets four checks, each with a documented threshold:

1. Randomisation: the map of the model with *every* layer re-initialised (one cascading
   randomisation) must differ from the original map: Spearman rank correlation of ``|map|``
   below :data:`RANDOMISATION_SPEARMAN_MAX`.
2. Faithfulness: removing the most relevant pixels first must hurt the target score more than
   removing pixels in random order: deletion AUC below the random-order deletion AUC by at
   least :data:`FAITHFULNESS_MIN_GAP` (scores are probabilities; a saturated score whose
   curves differ in the sixth decimal is not evidence of faithfulness).
3. Stability: for stochastic methods (:data:`STOCHASTIC_METHODS`), the maps of two seeds must
   agree: Spearman of ``|map|`` at least :data:`STABILITY_SPEARMAN_MIN`. Deterministic methods
   pass trivially and the card says so.
4. Anatomy: when an anatomy mask exists, the share of positive attribution inside it must be at
   least :data:`ANATOMY_ENRICHMENT_MIN` times the mask's share of the image (the map is not
   less concentrated on the anatomy than a uniform map); "not assessed" without a mask.

A card whose checks do not all pass (an undefined check counts as failed, "not assessed"
does not) is not trusted; :func:`trust_label` gives the caption to print next to the map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from medlens._errors import InputDataError, param_error

__all__ = [
    "ANATOMY_ENRICHMENT_MIN",
    "FAITHFULNESS_MIN_GAP",
    "RANDOMISATION_SPEARMAN_MAX",
    "STABILITY_SPEARMAN_MIN",
    "STOCHASTIC_METHODS",
    "TrustCard",
    "trust_cards",
    "trust_label",
]

RANDOMISATION_SPEARMAN_MAX = 0.5
STABILITY_SPEARMAN_MIN = 0.8
ANATOMY_ENRICHMENT_MIN = 1.0
FAITHFULNESS_MIN_GAP = 0.01
STOCHASTIC_METHODS = frozenset({"gradient_shap", "lime", "shap", "smoothgrad"})

TRUSTED_LABEL = "passed trust checks"
FAILED_LABEL = "FAILED trust checks: not evidence ({reasons})"
LENGTH_MISMATCH = "{name} has {got} values; expected {expected} (one per case)."

PASS, FAIL, NOT_ASSESSED = "pass", "fail", "not assessed"


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
    deletion_auc, deletion_auc_random : float
    faithfulness : str
    stability_spearman : float
        NaN for deterministic methods.
    stability : str
        ``"pass"`` (deterministic methods: trivially), ``"fail"``.
    inside_anatomy_share, anatomy_fraction : float
        Share of positive attribution inside the anatomy mask and the mask's share of the
        image (NaN without a mask).
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
    deletion_auc: float
    deletion_auc_random: float
    faithfulness: str
    stability_spearman: float
    stability: str
    inside_anatomy_share: float
    anatomy_fraction: float
    anatomy: str
    trusted: bool
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (reasons joined by '; ')."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["reasons"] = list(self.reasons)
        return d


def _vec(x: Any, n: int, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float).reshape(-1)
    if a.shape[0] != n:
        raise InputDataError(LENGTH_MISMATCH.format(name=name, got=a.shape[0], expected=n))
    return a


def trust_cards(
    cases: Any,
    method: str,
    *,
    randomisation_spearman: Any,
    deletion_auc: Any,
    deletion_auc_random: Any,
    stability_spearman: Any = None,
    inside_anatomy_share: Any = None,
    anatomy_fraction: Any = None,
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
    deletion_auc, deletion_auc_random : array of shape (N,)
        Deletion AUC, most relevant first and random order.
    stability_spearman : array of shape (N,), optional
        Spearman between two seeds; required for :data:`STOCHASTIC_METHODS`, ignored (and
        reported as NaN) for deterministic methods.
    inside_anatomy_share, anatomy_fraction : array of shape (N,), optional
        Positive-attribution share inside the anatomy mask and the mask's area fraction; NaN or
        None = no mask ("not assessed").

    Returns
    -------
    tuple of TrustCard
    """
    func = "trust_cards"
    ids = [str(c) for c in cases]
    n = len(ids)
    if not isinstance(method, str) or not method:
        raise param_error("method", func, "a method name", method)
    rho = _vec(randomisation_spearman, n, "randomisation_spearman")
    dele = _vec(deletion_auc, n, "deletion_auc")
    rand = _vec(deletion_auc_random, n, "deletion_auc_random")
    stochastic = method in STOCHASTIC_METHODS
    if stochastic and stability_spearman is None:
        raise param_error(
            "stability_spearman", func, f"per-case values for stochastic method {method!r}", None
        )
    stab = _vec(stability_spearman, n, "stability_spearman") if stochastic else np.full(n, np.nan)
    nan = np.full(n, np.nan)
    inside = nan if inside_anatomy_share is None else _vec(inside_anatomy_share, n, "inside")
    frac = nan if anatomy_fraction is None else _vec(anatomy_fraction, n, "anatomy_fraction")
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
        if (
            math.isfinite(dele[i])
            and math.isfinite(rand[i])
            and dele[i] <= rand[i] - FAITHFULNESS_MIN_GAP
        ):
            f_state = PASS
            reasons.append(
                f"deleting top pixels lowers the score faster than random "
                f"(AUC {dele[i]:.3f} < {rand[i]:.3f})"
            )
        else:
            f_state = FAIL
            reasons.append(
                f"deleting top pixels does not lower the score clearly faster than random "
                f"(AUC {dele[i]:.3f} vs {rand[i]:.3f})"
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
        if not (math.isfinite(inside[i]) and math.isfinite(frac[i])):
            a_state = NOT_ASSESSED
            reasons.append("anatomy share not assessed (no anatomy mask)")
        elif inside[i] >= ANATOMY_ENRICHMENT_MIN * frac[i]:
            a_state = PASS
            reasons.append(
                f"{inside[i]:.0%} of attribution inside the anatomy ({frac[i]:.0%} of the image)"
            )
        else:
            a_state = FAIL
            reasons.append(
                f"only {inside[i]:.0%} of attribution inside the anatomy, which covers "
                f"{frac[i]:.0%} of the image"
            )
        trusted = all(s != FAIL for s in (r_state, f_state, s_state, a_state))
        cards.append(
            TrustCard(
                case=ids[i],
                method=method,
                randomisation_spearman=float(rho[i]),
                randomisation=r_state,
                deletion_auc=float(dele[i]),
                deletion_auc_random=float(rand[i]),
                faithfulness=f_state,
                stability_spearman=float(stab[i]),
                stability=s_state,
                inside_anatomy_share=float(inside[i]),
                anatomy_fraction=float(frac[i]),
                anatomy=a_state,
                trusted=trusted,
                reasons=tuple(reasons),
            )
        )
    return tuple(cards)


def trust_label(card: TrustCard) -> str:
    """Caption for a map: ``"passed trust checks"`` or ``"FAILED trust checks: not evidence
    (failed: ...)"`` naming the failed checks."""
    if not isinstance(card, TrustCard):
        raise param_error("card", "trust_label", "a TrustCard", type(card).__name__)
    if card.trusted:
        return TRUSTED_LABEL
    failed = [
        name
        for name, state in (
            ("randomisation", card.randomisation),
            ("faithfulness", card.faithfulness),
            ("stability", card.stability),
            ("anatomy", card.anatomy),
        )
        if state == FAIL
    ]
    return FAILED_LABEL.format(reasons="failed: " + ", ".join(failed))
