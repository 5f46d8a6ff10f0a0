"""Result objects of :func:`medlens.validation.evaluate` (frozen dataclasses)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._calibration import CalibrationResult
from ._cohorts import CohortTable
from ._counts import ConfusionCounts
from ._plan import AnalysisPlan
from ._proportions import MetricEstimate

__all__ = ["CriterionResult", "GroupResult", "ValidationReport"]


@dataclass(frozen=True)
class GroupResult:
    """Results for one population (all cases or one cohort value)."""

    name: str
    n: int
    n_positive: int
    n_negative: int
    n_patients: int
    confusion: ConfusionCounts
    threshold: float
    metrics: Mapping[str, MetricEstimate]
    design_effect: Mapping[str, float]
    flags: Mapping[str, str]
    difference: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    at_prevalence: Mapping[str, MetricEstimate] | None = None
    per_class: Mapping[str, GroupResult] = field(default_factory=dict)
    decision_rule: str | None = None


@dataclass(frozen=True)
class CriterionResult:
    """Pass/fail of one endpoint, judged on the relevant confidence bound."""

    name: str
    metric: str
    operator: str
    goal: float
    primary: bool
    estimate: float
    ci_low: float
    ci_high: float
    method: str
    bound: float
    outcome: str  # "pass", "fail" or "not_evaluable"
    worst_case: Mapping[str, Any] | None = None
    target_class: str | None = None  # the class of a class endpoint (one-vs-rest)


@dataclass(frozen=True)
class ValidationReport:
    """Everything :func:`evaluate` found; :func:`medlens.validation.to_evidence` turns it
    into the JSON evidence contract."""

    overall: GroupResult
    cohorts: Mapping[str, Mapping[str, GroupResult]]
    cohort_tables: Mapping[str, CohortTable]
    calibration: CalibrationResult | None
    recalibration: Mapping[str, Any] | None
    acceptance: Mapping[str, Any]
    criteria: tuple[CriterionResult, ...]
    failed_cases: Mapping[str, Any]
    plan: AnalysisPlan
    plan_info: Mapping[str, Any]
    provenance: Mapping[str, Any]
    notes: tuple[str, ...] = ()
    secondary: Mapping[str, Any] | None = None
    task: str = "binary"
    classes: tuple[str, ...] | None = None
    calibration_per_class: Mapping[str, CalibrationResult | None] | None = None
    """Multi-class / multi-label: calibration of each class one-vs-rest (None for a class
    whose one-vs-rest labels have one value only)."""
