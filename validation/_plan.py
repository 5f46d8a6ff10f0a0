"""The analysis plan: a prespecified, hashed YAML document (``configs/plan.yaml``).

Schema (unknown keys are errors; every field below is optional unless marked required)
---------------------------------------------------------------------------------
``version`` : int, must be 1.
``intended_use`` : str
    Free text: target population, clinical setting, intended user.
``columns`` : mapping — where things are in the predictions table
    ``case_id`` (default "case_id"), ``label`` ("label"), ``score`` ("score"),
    ``patient``, ``site``, ``split``, ``status``: a column name, null (not used) or
    "auto" (default: use "patient_key", "site", "split", "status" when the table has
    them). Without a patient column every case is its own patient; the site stratifies
    the bootstrap; status values are ok / failed / indeterminate. ``cohorts`` (list;
    default: those of site, manufacturer, sex, age_band that exist).
    ``score_pattern`` ("prob_{class}") and ``label_pattern`` ("label_{class}"): the
    per-class score columns (multiclass, multilabel) and per-label 0/1 columns
    (multilabel only); ``{class}`` is replaced by each class name.
``task`` : "binary" (default) | "multiclass" | "multilabel"
    ``binary``: one 0/1 label column and one score column. ``multiclass``: the label
    column holds the class name and there is one probability column per class (rows
    must sum to 1 within 1e-3; ``score_type: logit`` applies a softmax); the predicted
    class is the argmax (ties: the first class in ``classes``). ``multilabel``: one 0/1
    column per label and one probability column per label, positive when
    score >= ``threshold.value`` (default 0.5). Non-binary tasks are analysed one-vs-rest
    per class with every metric and CI of the binary analysis (``overall.per_class`` and
    ``cohorts[column][value].per_class`` in the evidence); ``overall`` / cohort
    ``metrics`` then hold the unweighted (macro) means over classes, their CIs from the
    same bootstrap replicates, and endpoints are judged on these macro metrics.
    Non-binary tasks need ``threshold.rule: fixed``.
``score_type`` : "probability" (default; scores must lie in [0, 1]) or "logit"
    (converted with the logistic function; softmax over classes for multiclass).
``classes`` : list, optional
    binary: [negative, positive], the label values meaning 0 and 1 when the label column
    is not already 0/1. multiclass / multilabel: the class names (>= 2); default: every
    column matching ``columns.score_pattern``, in table order.
``analysis`` : mapping
    ``test_split`` ("test"; rows analysed when a split column exists; null = all rows),
    ``alpha`` (0.05: two-sided 95 % CIs), ``proportion_ci`` ("wilson" |
    "clopper-pearson" | "jeffreys"), ``prevalence`` (null; a number in (0, 1) adds PPV
    and NPV at that prevalence to every group, by Bayes' theorem), ``bootstrap`` {``replicates`` (2000), ``seed`` (0),
    ``stratify_by_site`` (true), ``rank_metrics`` (true: AUC/AP replicates for the
    AP interval and cohort differences)}, ``calibration`` {``n_bins`` (10),
    ``null_simulations`` (1000), ``recalibration`` (none | temperature | platt |
    isotonic), ``calibration_split`` ("calibration")}.
``threshold`` : mapping — the operating point
    ``rule``: "fixed" (default, with ``value`` in [0, 1] on the probability scale,
    also for ``score_type: logit``; default 0.5), "youden",
    "target_sensitivity" or "target_specificity" (with ``target``), chosen on
    ``tuning_split`` (default "tuning") and then locked for the test split.
``primary_endpoints`` / ``secondary_endpoints`` : list of
    {``metric`` (one of the evidence metric keys), ``operator`` (">=" or "<="),
    ``goal`` (number on the metric's scale: in [0, 1] for proportions, AUC, average
    precision, Brier and ECE, e.g. 0.80 not 80; > 0 for likelihood ratios; any real for
    the calibration slope and intercept), ``name`` (optional label), ``class`` (optional; multiclass /
    multilabel only: one class name)}. A ">=" goal passes when the lower
    bound of the two-sided (1 - alpha) CI is >= goal; a "<=" goal when the upper bound
    is <= goal. Without ``class`` a multiclass / multilabel endpoint is judged on the
    macro average; with ``class`` (e.g. ``{metric: sensitivity, class: pneumothorax,
    goal: 0.85}``) on that class one-vs-rest (``overall.per_class[<class>]``), exactly
    like a binary endpoint with that class as the positive one. An unknown class name is
    an error (checked against ``classes`` when declared, else against the classes
    found in the table). Primary endpoints are also judged in a worst-case analysis
    where failed and indeterminate cases count as errors (binary and class endpoints;
    not for macro averages, which is then recorded as a deviation).
``subgroups`` : mapping
    ``columns`` (default: ``columns.cohorts``), ``intersections`` (list of lists of
    columns, opt-in), ``min_positives`` (10), ``min_negatives`` (10), ``min_n`` (20),
    ``multiplicity`` ("holm" | "bh" | "none"; the family is all cohort values of all
    subgroup columns, per metric).
``secondary`` : mapping — secondary analyses (binary task), written under the
    top-level evidence key ``secondary``
    ``comparisons``: list of {``score_a``, ``score_b`` (score columns of two models or
    readers on the same cases), ``name`` (optional)}: AUC of each, the paired DeLong
    test of AUC_a - AUC_b (difference, CI, z, p-value) and, with a patient column whose
    patients have several cases, the patient-cluster bootstrap difference (CI and
    p-value), which is then the reported ``difference`` because DeLong assumes
    independent cases. ``operating_points``: list of {``metric``
    ("sensitivity_at_specificity" | "specificity_at_sensitivity"), ``target`` (in
    (0, 1]), ``score`` (default ``columns.score``), ``name`` (optional)}: the empirical
    value with a (cluster) bootstrap percentile CI and the threshold that achieves it.
``deviations`` : list of str
    Deviations from the plan known before analysis; the evidence adds those found
    during analysis (e.g. no site column to stratify by).

The plan is hashed (SHA-256 of the file bytes, and of its canonical JSON form) so the
evidence proves which plan was applied.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from medlens._errors import ConfigError

__all__ = [
    "AnalysisPlan",
    "Comparison",
    "EVIDENCE_METRICS",
    "Endpoint",
    "OperatingPoint",
    "check_endpoint_classes",
    "load_plan",
    "parse_plan",
]

EVIDENCE_METRICS = (
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "accuracy",
    "balanced_accuracy",
    "f1",
    "lr_positive",
    "lr_negative",
    "auc",
    "average_precision",
    "brier",
    "ece",
    "calibration_slope",
    "calibration_intercept",
)
DEFAULT_COHORTS = ("site", "manufacturer", "sex", "age_band")
AUTO = "auto"  # use the conventional column (patient_key, site, split, status) when present
UNKNOWN_ENDPOINT_CLASS = (
    "{where}: unknown class {cls!r}; the classes are {classes}{hint}. Fix the endpoint's "
    "'class' (class names are case-sensitive)."
)
UNIT_GOALS = frozenset(
    {
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "accuracy",
        "balanced_accuracy",
        "f1",
        "auc",
        "average_precision",
        "brier",
        "ece",
    }
)
POSITIVE_GOALS = frozenset({"lr_positive", "lr_negative"})
GOAL_OUT_OF_RANGE = (
    "goal {goal:g} is outside [0, 1]; {metric} is a proportion on the 0-1 scale{hint}"
)
GOAL_NOT_POSITIVE = "goal {goal:g} must be > 0 for the likelihood ratio {metric}"
THRESHOLD_OUT_OF_RANGE = (
    "threshold must be in [0, 1] for probability scores (logit scores are converted to "
    "probabilities first); got {value:g}"
)


def percent_hint(value: float) -> str:
    """ ", e.g. 0.8 instead of 80" when ``value`` looks like a percentage."""
    return f" (did you mean {value / 100:g} instead of {value:g}?)" if 1 < value <= 100 else ""


BINARY_ENDPOINT_CLASS = (
    "{where}: endpoint 'class' {cls!r} is for multiclass/multilabel tasks; the endpoints of a binary "
    "task are about its positive class already: drop 'class'"
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Columns(_Section):
    case_id: str = "case_id"
    label: str = "label"
    score: str = "score"
    patient: str | None = AUTO
    site: str | None = AUTO
    split: str | None = AUTO
    status: str | None = AUTO
    cohorts: list[str] | None = None
    score_pattern: str = "prob_{class}"
    label_pattern: str = "label_{class}"

    @model_validator(mode="after")
    def _patterns(self) -> Columns:
        for key in ("score_pattern", "label_pattern"):
            if getattr(self, key).count("{class}") != 1:
                raise ValueError(f"{key} must contain '{{class}}' exactly once")
        return self


class BootstrapSettings(_Section):
    replicates: int = Field(default=2000, ge=1)
    seed: int = 0
    stratify_by_site: bool = True
    rank_metrics: bool = True


class CalibrationSettings(_Section):
    n_bins: int = Field(default=10, ge=2)
    null_simulations: int = Field(default=1000, ge=1)
    recalibration: Literal["none", "temperature", "platt", "isotonic"] = "none"
    calibration_split: str = "calibration"


class AnalysisSettings(_Section):
    test_split: str | None = "test"
    alpha: float = Field(default=0.05, gt=0, lt=1)
    proportion_ci: Literal["wilson", "clopper-pearson", "jeffreys"] = "wilson"
    prevalence: float | None = Field(default=None, gt=0, lt=1)
    bootstrap: BootstrapSettings = BootstrapSettings()
    calibration: CalibrationSettings = CalibrationSettings()


class ThresholdRule(_Section):
    rule: Literal["fixed", "youden", "target_sensitivity", "target_specificity"] = "fixed"
    value: float | None = None
    target: float | None = Field(default=None, gt=0, le=1)
    tuning_split: str = "tuning"

    @field_validator("value")
    @classmethod
    def _probability_scale(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError(THRESHOLD_OUT_OF_RANGE.format(value=v))
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ThresholdRule:
        if self.rule.startswith("target") and self.target is None:
            raise ValueError(f"rule {self.rule!r} needs 'target' (e.g. 0.90)")
        if self.rule != "fixed" and self.value is not None:
            raise ValueError(f"'value' is only used with rule 'fixed', not {self.rule!r}")
        return self


class Endpoint(_Section):
    """One endpoint: ``metric operator goal``, optionally for one class (``class`` in the
    plan, ``class_`` in Python)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    metric: str
    operator: Literal[">=", "<="] = ">="
    goal: float
    name: str | None = None
    class_: str | None = Field(default=None, alias="class")

    @field_validator("class_", mode="before")
    @classmethod
    def _class_text(cls, value: Any) -> Any:
        # class names are compared as text (YAML may read a class named 1 as an int)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return value

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        # written as "class" and only when set, so plans without class endpoints keep
        # their canonical hash
        out = handler(self)
        target = out.pop("class_", None)
        target = out.pop("class", target)
        if target is not None:
            out["class"] = target
        return out

    @model_validator(mode="after")
    def _known_metric(self) -> Endpoint:
        if self.metric not in EVIDENCE_METRICS:
            raise ValueError(
                f"unknown metric {self.metric!r}; choose one of {', '.join(EVIDENCE_METRICS)}"
            )
        return self

    @field_validator("goal")
    @classmethod
    def _goal_on_scale(cls, g: float, info: ValidationInfo) -> float:
        metric = info.data.get("metric")
        if not math.isfinite(g):
            raise ValueError(f"goal must be a finite number; got {g}")
        if metric in UNIT_GOALS and not 0.0 <= g <= 1.0:
            raise ValueError(GOAL_OUT_OF_RANGE.format(goal=g, metric=metric, hint=percent_hint(g)))
        if metric in POSITIVE_GOALS and g <= 0:
            raise ValueError(GOAL_NOT_POSITIVE.format(goal=g, metric=metric))
        return g


class Subgroups(_Section):
    columns: list[str] | None = None
    intersections: list[list[str]] = []
    min_positives: int = Field(default=10, ge=0)
    min_negatives: int = Field(default=10, ge=0)
    min_n: int = Field(default=20, ge=0)
    min_patients: int = Field(default=5, ge=0)
    multiplicity: Literal["holm", "bh", "none"] = "holm"


class Comparison(_Section):
    score_a: str
    score_b: str
    name: str | None = None

    @model_validator(mode="after")
    def _different(self) -> Comparison:
        if self.score_a == self.score_b:
            raise ValueError(f"score_a and score_b are the same column {self.score_a!r}")
        return self


class OperatingPoint(_Section):
    metric: Literal["sensitivity_at_specificity", "specificity_at_sensitivity"]
    target: float = Field(gt=0, le=1)
    score: str | None = None
    name: str | None = None


class Secondary(_Section):
    comparisons: list[Comparison] = []
    operating_points: list[OperatingPoint] = []


class AnalysisPlan(_Section):
    """A validated analysis plan (see the module docstring for the schema)."""

    version: Literal[1] = 1
    intended_use: str = ""
    columns: Columns = Columns()
    task: Literal["binary", "multiclass", "multilabel"] = "binary"
    score_type: Literal["probability", "logit"] = "probability"
    classes: list[Any] | None = Field(default=None, min_length=2)
    analysis: AnalysisSettings = AnalysisSettings()
    threshold: ThresholdRule = ThresholdRule()
    primary_endpoints: list[Endpoint] = []
    secondary_endpoints: list[Endpoint] = []
    subgroups: Subgroups = Subgroups()
    secondary: Secondary = Secondary()
    deviations: list[str] = []

    @model_validator(mode="after")
    def _task(self) -> AnalysisPlan:
        if self.task == "binary":
            if self.classes is not None and len(self.classes) != 2:
                raise ValueError(
                    f"classes: a binary task has exactly 2 classes [negative, positive]; got {len(self.classes)}"
                )
            for where, ep in self.endpoints():
                if ep.class_ is not None:
                    raise ValueError(BINARY_ENDPOINT_CLASS.format(where=where, cls=ep.class_))
            return self
        if self.classes is not None:
            names = [str(c) for c in self.classes]
            if len(set(names)) != len(names):
                raise ValueError(f"classes must be distinct; got {names}")
            check_endpoint_classes(self, names, error=ValueError)
        if self.threshold.rule != "fixed":
            raise ValueError(
                f"threshold.rule {self.threshold.rule!r} is for binary tasks; task {self.task!r} needs rule 'fixed'"
            )
        if self.analysis.calibration.recalibration != "none":
            raise ValueError(f"recalibration is for binary tasks, not {self.task!r}")
        if self.secondary.comparisons or self.secondary.operating_points:
            raise ValueError(f"secondary analyses are for binary tasks, not {self.task!r}")
        return self

    def endpoints(self) -> list[tuple[str, Endpoint]]:
        """Every endpoint with its place in the plan, e.g. ("primary_endpoints.0", ep)."""
        return [
            (f"{kind}.{i}", ep)
            for kind in ("primary_endpoints", "secondary_endpoints")
            for i, ep in enumerate(getattr(self, kind))
        ]

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def sha256(self) -> str:
        """SHA-256 of the canonical JSON form (independent of YAML layout and comments)."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()


def check_endpoint_classes(
    plan: AnalysisPlan, classes: Sequence[str], *, error: type[Exception] = ConfigError
) -> None:
    """Raise ``error`` naming the first endpoint whose ``class`` is not one of ``classes``."""
    for where, ep in plan.endpoints():
        if ep.class_ is None or ep.class_ in classes:
            continue
        close = difflib.get_close_matches(ep.class_, list(classes), n=1)
        raise error(
            UNKNOWN_ENDPOINT_CLASS.format(
                where=f"{where}.class",
                cls=ep.class_,
                classes=list(classes),
                hint=f" (did you mean {close[0]!r}?)" if close else "",
            )
        )


def parse_plan(raw: Any, *, source: str = "<plan>") -> AnalysisPlan:
    """Validate a mapping into an :class:`AnalysisPlan`; errors name every bad field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"expected a mapping at the top level, got {type(raw).__name__}", source=source
        )
    try:
        return AnalysisPlan.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
            if e["type"] == "extra_forbidden":
                msg = "unknown key; check the spelling"
            elif e["type"] == "value_error" and "error" in e.get("ctx", {}):
                msg = str(e["ctx"]["error"])  # without pydantic's "Value error, " prefix
            else:
                msg = e["msg"]
            lines.append(f"{loc}: {msg}")
        raise ConfigError(
            "invalid analysis plan:\n  " + "\n  ".join(lines), source=source
        ) from None


def load_plan(path: str | Path) -> tuple[AnalysisPlan, str]:
    """Read a plan YAML file; returns the plan and the SHA-256 of the file bytes."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the plan ({exc.strerror})", source=str(path)) from None
    try:
        raw = yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=str(path)) from None
    return parse_plan(raw, source=str(path)), hashlib.sha256(data).hexdigest()
