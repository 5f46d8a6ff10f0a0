from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from medlens._errors import ConfigError
from medlens.validation import AnalysisPlan, load_plan, parse_plan

REPO = Path(__file__).resolve().parents[2]


def test_shipped_plan_is_valid():
    path = REPO / "configs" / "plan.yaml"
    plan, digest = load_plan(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert plan.primary_endpoints and plan.analysis.bootstrap.replicates == 2000
    assert plan.threshold.rule == "fixed"


def test_canonical_hash_ignores_layout():
    a = parse_plan({"analysis": {"alpha": 0.05}})
    b = parse_plan({})
    assert a.sha256() == b.sha256() == AnalysisPlan().sha256()
    assert parse_plan({"analysis": {"alpha": 0.1}}).sha256() != a.sha256()


@pytest.mark.parametrize(
    "raw,match",
    [
        ({"primary_endpoint": []}, "primary_endpoint: unknown key"),
        (
            {"primary_endpoints": [{"metric": "sensitivty", "goal": 0.8}]},
            "unknown metric 'sensitivty'",
        ),
        ({"primary_endpoints": [{"metric": "auc", "goal": 0.8, "operator": ">"}]}, "operator"),
        ({"threshold": {"rule": "target_sensitivity"}}, "needs 'target'"),
        ({"threshold": {"rule": "youden", "value": 0.3}}, "only used with rule 'fixed'"),
        ({"analysis": {"alpha": 1.2}}, "analysis.alpha"),
        ({"subgroups": {"multiplicity": "bonferroni"}}, "subgroups.multiplicity"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_bad_plans(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_plan(raw)


def test_unreadable_plan(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the plan"):
        load_plan(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_plan(bad)


def test_example_plan_documents_the_new_sections():
    plan, _ = load_plan(REPO / "configs" / "plan.yaml")
    assert plan.task == "binary" and plan.columns.score_pattern == "prob_{class}"
    assert plan.secondary.comparisons == [] and plan.secondary.operating_points == []


def test_endpoint_without_class_keeps_its_canonical_form():
    # plans written before endpoints had a 'class' keep their canonical hash
    plan = parse_plan({"primary_endpoints": [{"metric": "auc", "goal": 0.8}]})
    (ep,) = plan.model_dump(mode="json")["primary_endpoints"]
    assert ep == {"metric": "auc", "operator": ">=", "goal": 0.8, "name": None}
    assert '"class"' not in plan.canonical_json()


@pytest.mark.parametrize(
    ("endpoint", "field", "hint"),
    [
        ({"metric": "sensitivity", "goal": 80}, "primary_endpoints.0.goal", "did you mean 0.8"),
        ({"metric": "auc", "goal": -0.1}, "primary_endpoints.0.goal", "outside [0, 1]"),
        ({"metric": "ece", "goal": 5, "operator": "<="}, "primary_endpoints.0.goal", "0.05"),
        ({"metric": "lr_positive", "goal": 0}, "primary_endpoints.0.goal", "must be > 0"),
        ({"metric": "brier", "goal": float("nan")}, "primary_endpoints.0.goal", "finite"),
    ],
)
def test_goal_outside_the_metric_scale_is_an_error(endpoint, field, hint):
    with pytest.raises(ConfigError, match=rf"{field}: .*{hint}".replace("[", r"\[")):
        parse_plan({"primary_endpoints": [endpoint]})


def test_goals_on_the_metric_scale_are_accepted():
    eps = [
        {"metric": "sensitivity", "goal": 0.8},
        {"metric": "specificity", "goal": 1},
        {"metric": "lr_positive", "goal": 5.0},
        {"metric": "lr_negative", "goal": 0.2, "operator": "<="},
        {"metric": "calibration_slope", "goal": -3},
        {"metric": "calibration_intercept", "goal": 2.5, "operator": "<="},
    ]
    assert len(parse_plan({"secondary_endpoints": eps}).secondary_endpoints) == 6


@pytest.mark.parametrize("value", [1.5, -0.1, 50])
def test_fixed_threshold_outside_unit_interval_is_an_error(value):
    with pytest.raises(ConfigError, match=r"threshold.value: threshold must be in \[0, 1\]"):
        parse_plan({"threshold": {"rule": "fixed", "value": value}})
    assert parse_plan({"threshold": {"value": 1.0}}).threshold.value == 1.0
