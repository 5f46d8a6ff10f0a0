"""Findings that qualify the verdict: each rule fires on its evidence and only then."""

from __future__ import annotations

import copy

from medlens.reports._findings import Finding, qualifying_findings

CALIBRATED = {
    "calibration_slope": {"estimate": 0.95, "ci_low": 0.8, "ci_high": 1.1},
    "ece": {"ece": 0.03, "null_low": 0.02, "null_high": 0.05},
    "spiegelhalter": {"p_value": 0.4},
    "hosmer_lemeshow": {"p_value": 0.3},
}
EVIDENCE = {
    "acceptance": {"confidence_level": 0.95, "verdict": "pass", "worst_case_verdict": "pass"},
    "calibration": CALIBRATED,
    "cohorts": {
        "site": {
            "a": {
                "flags": {},
                "difference_to_overall": {"sensitivity": {"estimate": -0.2, "p_adjusted": 0.2}},
            },
        }
    },
    "failed_cases": {"n_failed": 0, "n_indeterminate": 0, "n_population": 100},
}
AUDIT = {
    "methods": {
        "gradcam": {
            "shortcut": {"flagged_cohorts": []},
            "trust": {"n_cases": 10, "n_trusted": 9},
        }
    }
}


def topics(found: tuple[Finding, ...]) -> list[str]:
    return [f.topic for f in found]


def test_nothing_to_qualify():
    assert qualifying_findings(EVIDENCE, AUDIT) == ()
    assert qualifying_findings(EVIDENCE) == ()


def test_shortcut_names_cohort_and_region():
    audit = copy.deepcopy(AUDIT)
    audit["methods"]["gradcam"]["shortcut"]["flagged_cohorts"] = [
        {"cohort": "site", "value": "site_b", "region": "corner_top_left"},
        {"cohort": "site", "value": "site_b", "region": "port"},
    ]
    (f,) = qualifying_findings(EVIDENCE, audit)
    assert f.topic == "shortcut"
    assert "site=site_b (corner_top_left, port)" in f.text and f.text.startswith("gradcam")


def test_low_trust_rate():
    audit = copy.deepcopy(AUDIT)
    audit["methods"]["gradcam"]["trust"] = {"n_cases": 95, "n_trusted": 22}
    (f,) = qualifying_findings(EVIDENCE, audit)
    assert f.topic == "explanations" and "22 of 95 gradcam" in f.text
    audit["methods"]["gradcam"]["trust"] = {"n_cases": 10, "n_trusted": 5}  # half: not flagged
    assert qualifying_findings(EVIDENCE, audit) == ()


def test_each_calibration_rule():
    cases = {
        "calibration_slope": ({"estimate": 0.5, "ci_low": 0.35, "ci_high": 0.68}, "slope 0.500"),
        "ece": ({"ece": 0.068, "null_low": 0.022, "null_high": 0.053}, "ECE 0.068"),
        "spiegelhalter": ({"p_value": 0.003}, "Spiegelhalter p = 0.003"),
        "hosmer_lemeshow": ({"p_value": 0.01}, "Hosmer-Lemeshow p = 0.01"),
    }
    for key, (value, needle) in cases.items():
        ev = copy.deepcopy(EVIDENCE)
        ev["calibration"][key] = value
        (f,) = qualifying_findings(ev)
        assert f.topic == "calibration" and needle in f.text, key


def test_per_class_calibration():
    ev = copy.deepcopy(EVIDENCE)
    bad = copy.deepcopy(CALIBRATED)
    bad["spiegelhalter"] = {"p_value": 0.001}
    ev["calibration"] = {"per_class": {"effusion": bad, "normal": CALIBRATED, "rare": None}}
    (f,) = qualifying_findings(ev)
    assert f.text.startswith("class effusion:")


def test_subgroup_drop_only_when_significant_unflagged_and_worse():
    ev = copy.deepcopy(EVIDENCE)
    d = ev["cohorts"]["site"]["a"]["difference_to_overall"]["sensitivity"]
    d["p_adjusted"] = 0.01
    (f,) = qualifying_findings(ev)
    assert f.topic == "subgroups" and "sensitivity in site=a (-0.200, adjusted p 0.01)" in f.text
    d["estimate"] = 0.2  # better than overall: not a drop
    assert qualifying_findings(ev) == ()
    d["estimate"] = -0.2
    ev["cohorts"]["site"]["a"]["flags"] = {"sensitivity": "fewer than 10 positives (2)"}
    assert qualifying_findings(ev) == ()


def test_failed_cases_and_order():
    ev = copy.deepcopy(EVIDENCE)
    ev["failed_cases"] = {"n_failed": 3, "n_indeterminate": 1, "n_population": 100}
    ev["acceptance"]["worst_case_verdict"] = "fail"
    ev["calibration"]["spiegelhalter"] = {"p_value": 0.001}
    audit = copy.deepcopy(AUDIT)
    audit["methods"]["gradcam"]["shortcut"]["flagged_cohorts"] = [
        {"cohort": "site", "value": "b", "region": "border"}
    ]
    found = qualifying_findings(ev, audit)
    assert topics(found) == ["shortcut", "calibration", "failed cases"]
    assert "4 of 100 cases" in found[-1].text and "worst-case verdict: fail" in found[-1].text
