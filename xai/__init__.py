"""medlens.xai: explainers behind one API, and checks of whether their maps can be trusted.

>>> from medlens.xai import get_explainer
>>> result = get_explainer("gradcam", model, head=head).explain(images)
>>> result.maps.shape  # (N, T, H, W): one map per image and target

Every method is registered by name (:func:`list_explainers`); all return a frozen
:class:`ExplanationResult`.
"""

from __future__ import annotations

from ._audit import (
    CASE_RATE_DIFFERENCE,
    CASE_RATE_P_THRESHOLD,
    REGION_CASE_FACTOR,
    AuditResult,
    MethodAudit,
    case_outcomes,
    case_trust_cards,
    mask_to_input,
    run_audit,
    stratified_sample,
)
from ._base import (
    CostPlan,
    Explainer,
    ExplanationResult,
    explainer_class,
    get_explainer,
    list_explainers,
)
from ._baselines import BASELINES, make_baseline
from ._cam import (
    CamExplainer,
    GradCamExplainer,
    GradCamPlusPlusExplainer,
    ScoreCamExplainer,
    find_target_layer,
)
from ._faithfulness import (
    DeletionInsertionResult,
    RoadResult,
    deletion_insertion,
    morf_lerf_gap,
    noisy_linear_imputation,
    road,
)
from ._gradient import (
    DeepLiftExplainer,
    GradientExplainer,
    GradientShapExplainer,
    GuidedBackpropExplainer,
    InputXGradientExplainer,
    IntegratedGradientsExplainer,
    SaliencyExplainer,
)
from ._lime import LimeExplainer, slic_segments
from ._localisation import (
    LocalisationResult,
    energy_pointing_game,
    localisation_scores,
    map_mask_auc,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_k_iou,
)
from ._occlusion import OcclusionExplainer
from ._randomisation import (
    MAPS_INDEPENDENT_OF_WEIGHTS,
    SANITY_SPEARMAN_THRESHOLD,
    RandomisedModel,
    SanityCheckResult,
    randomisable_layers,
    randomised_models,
    sanity_check,
)
from ._robustness import (
    MaxSensitivityResult,
    max_sensitivity,
)
from ._run import explain_cases, result_to_json, save_result
from ._shap import ShapExplainer
from ._shortcut import (
    CASE_SHARE_THRESHOLD,
    COHORT_DIFFERENCE_THRESHOLD,
    COHORT_P_THRESHOLD,
    AttributionShares,
    ShortcutAudit,
    attribution_shares,
    region_masks,
    shortcut_audit,
)
from ._similarity import (
    MethodAgreement,
    method_agreement,
    rank_correlation,
    ssim,
    top_k_overlap,
)
from ._smoothgrad import SmoothGradExplainer
from ._trust import (
    ANATOMY_ENRICHMENT_MIN,
    ANATOMY_MARGIN,
    FAITHFULNESS_MIN_GAP,
    RANDOMISATION_SPEARMAN_MAX,
    SHORTCUT_REGION_FACTOR,
    STABILITY_SPEARMAN_MIN,
    STOCHASTIC_METHODS,
    TRUST_CRITERIA,
    TrustCard,
    reference_shares,
    region_lean,
    trust_cards,
    trust_label,
)

__all__ = [
    "ANATOMY_ENRICHMENT_MIN",
    "ANATOMY_MARGIN",
    "AttributionShares",
    "AuditResult",
    "BASELINES",
    "CASE_RATE_DIFFERENCE",
    "CASE_RATE_P_THRESHOLD",
    "CASE_SHARE_THRESHOLD",
    "COHORT_DIFFERENCE_THRESHOLD",
    "COHORT_P_THRESHOLD",
    "CamExplainer",
    "CostPlan",
    "DeepLiftExplainer",
    "DeletionInsertionResult",
    "Explainer",
    "ExplanationResult",
    "FAITHFULNESS_MIN_GAP",
    "GradCamExplainer",
    "GradCamPlusPlusExplainer",
    "GradientExplainer",
    "GradientShapExplainer",
    "GuidedBackpropExplainer",
    "InputXGradientExplainer",
    "IntegratedGradientsExplainer",
    "LimeExplainer",
    "LocalisationResult",
    "MAPS_INDEPENDENT_OF_WEIGHTS",
    "MaxSensitivityResult",
    "MethodAgreement",
    "MethodAudit",
    "OcclusionExplainer",
    "RANDOMISATION_SPEARMAN_MAX",
    "REGION_CASE_FACTOR",
    "RandomisedModel",
    "RoadResult",
    "SANITY_SPEARMAN_THRESHOLD",
    "SHORTCUT_REGION_FACTOR",
    "STABILITY_SPEARMAN_MIN",
    "STOCHASTIC_METHODS",
    "SaliencyExplainer",
    "SanityCheckResult",
    "ScoreCamExplainer",
    "ShapExplainer",
    "ShortcutAudit",
    "SmoothGradExplainer",
    "TRUST_CRITERIA",
    "TrustCard",
    "attribution_shares",
    "case_outcomes",
    "case_trust_cards",
    "deletion_insertion",
    "energy_pointing_game",
    "explain_cases",
    "explainer_class",
    "find_target_layer",
    "get_explainer",
    "list_explainers",
    "localisation_scores",
    "make_baseline",
    "map_mask_auc",
    "mask_to_input",
    "max_sensitivity",
    "method_agreement",
    "morf_lerf_gap",
    "noisy_linear_imputation",
    "pointing_game",
    "randomisable_layers",
    "randomised_models",
    "rank_correlation",
    "reference_shares",
    "region_lean",
    "region_masks",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "result_to_json",
    "road",
    "run_audit",
    "sanity_check",
    "save_result",
    "shortcut_audit",
    "slic_segments",
    "ssim",
    "stratified_sample",
    "top_k_iou",
    "top_k_overlap",
    "trust_cards",
    "trust_label",
]
