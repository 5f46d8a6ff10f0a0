"""Worst-case analysis of primary endpoints: the main analysis' method, and only the
failed cases of the endpoint's relevant class counted as errors."""

from __future__ import annotations

import numpy as np
import pytest

from medlens.validation import evaluate, parse_plan
from medlens.validation._cohorts import cohort_codes
from medlens.validation._failed_cases import N_ERRORS, RELEVANT_CLASS, worst_case_metrics
from medlens.validation._inputs import patient_codes

from .conftest import predictions_frame

pytestmark = pytest.mark.filterwarnings("ignore::medlens.validation._common.UndefinedMetricWarning")

ENDPOINTS = [
    {"metric": m, "goal": 0.1} for m in ("sensitivity", "specificity", "ppv", "npv", "accuracy")
]


def plan(**kw):
    raw = {
        "analysis": {"bootstrap": {"replicates": 200}, "calibration": {"null_simulations": 50}},
        "primary_endpoints": ENDPOINTS,
    }
    raw.update(kw)
    return parse_plan(raw)


def _main(c):
    return (c.estimate, c.ci_low, c.ci_high, c.method)


def _worst(c):
    w = c.worst_case
    return (w["estimate"], w["ci_low"], w["ci_high"], w["method"])


def test_nothing_failed_worst_case_equals_main_exactly():
    # clustered, stratified by site: the demo's set-up where the two used to differ
    rep = evaluate(predictions_frame(), plan())
    assert rep.plan_info["clustered"] and rep.plan_info["bootstrap"]["stratified_by"] == "site"
    for c in rep.criteria:
        assert c.worst_case["n_counted_as_errors"] == 0
        assert _worst(c) == _main(c), c.metric


def test_worst_case_recomputed_with_the_main_method():
    # without the main result to copy, the worst case of a metric with no failed case
    # counted reproduces it: same patients, strata, seed and interval method
    df = predictions_frame()
    rep = evaluate(df, plan())
    test = df[df.split == "test"]
    y = test.label.to_numpy()
    s = test.score.to_numpy()
    out = worst_case_metrics(
        y,
        s,
        np.zeros(y.size, bool),
        patient_codes(test.patient_key),
        clustered=True,
        threshold=0.5,
        plan=plan(),
        metrics={"sensitivity", "specificity", "accuracy"},
        strata=cohort_codes(test.site)[0],
    )
    for key in ("sensitivity", "specificity", "accuracy"):
        assert out[key] == rep.overall.metrics[key], key
    assert out[N_ERRORS] == {"sensitivity": 0, "specificity": 0, "accuracy": 0}


def test_only_failed_cases_of_the_relevant_class_count():
    df = predictions_frame()
    test = df.split == "test"
    neg = df.index[test & (df.label == 0)][:1]
    df["status"] = "ok"
    df.loc[neg, "status"] = "failed"
    df.loc[neg, "score"] = np.nan
    rep = evaluate(df, plan())
    crit = {c.metric: c for c in rep.criteria}
    # a failed negative cannot be a false negative: sensitivity and NPV are unchanged
    for key in ("sensitivity", "npv"):
        assert crit[key].worst_case["n_counted_as_errors"] == 0
        assert _worst(crit[key]) == _main(crit[key])
    # ... it is a false positive for specificity, PPV and accuracy
    for key in ("specificity", "ppv", "accuracy"):
        assert crit[key].worst_case["n_counted_as_errors"] == 1
    ok = df[test & (df.status == "ok")]
    tn = int(((ok.score < 0.5) & (ok.label == 0)).sum())
    tp = int(((ok.score >= 0.5) & (ok.label == 1)).sum())
    fp = int(((ok.score >= 0.5) & (ok.label == 0)).sum())
    n_neg = int((df[test].label == 0).sum())
    assert crit["specificity"].worst_case["estimate"] == pytest.approx(tn / n_neg)
    assert crit["ppv"].worst_case["estimate"] == pytest.approx(tp / (tp + fp + 1))
    assert crit["specificity"].worst_case["ci_low"] < crit["specificity"].ci_low


def test_failed_positive_counts_for_sensitivity_and_npv():
    df = predictions_frame()
    test = df.split == "test"
    pos = df.index[test & (df.label == 1)][:2]
    df["status"] = "ok"
    df.loc[pos, "status"] = "indeterminate"
    rep = evaluate(df, plan())
    crit = {c.metric: c for c in rep.criteria}
    assert {k: crit[k].worst_case["n_counted_as_errors"] for k in crit} == {
        "sensitivity": 2,
        "specificity": 0,
        "ppv": 0,
        "npv": 2,
        "accuracy": 2,
    }
    assert _worst(crit["specificity"]) == _main(crit["specificity"])
    ok = df[test & (df.status == "ok")]
    tn = int(((ok.score < 0.5) & (ok.label == 0)).sum())
    fn = int(((ok.score < 0.5) & (ok.label == 1)).sum())
    assert crit["npv"].worst_case["estimate"] == pytest.approx(tn / (tn + fn + 2))


def test_relevant_class_table():
    assert RELEVANT_CLASS == {"sensitivity": 1, "npv": 1, "specificity": 0, "ppv": 0}


def test_failed_case_without_patient_id_is_counted_not_rejected():
    df = predictions_frame()
    test = np.flatnonzero(df["split"].to_numpy() == "test")
    failed = test[[0, 1]]
    df["status"] = "ok"
    df.loc[failed, "status"] = "failed"
    df.loc[failed, "score"] = np.nan
    with_ids = evaluate(df, plan())
    df.loc[failed, "patient_key"] = np.nan
    without = evaluate(df, plan())
    # the main analysis is unchanged; each id-less failed case is its own patient
    for a, b in zip(with_ids.criteria, without.criteria, strict=True):
        assert _main(a) == _main(b)
        assert b.worst_case["n_counted_as_errors"] == a.worst_case["n_counted_as_errors"]
    assert (
        sum(c.worst_case["n_counted_as_errors"] for c in without.criteria if c.metric == "accuracy")
        == 2
    )
    # an analysed (ok) case without a patient id is still an error
    df.loc[test[2], "patient_key"] = np.nan
    with pytest.raises(Exception, match="no patient id"):
        evaluate(df, plan())
