from __future__ import annotations

import hashlib
import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from medlens._errors import InputDataError, MissingExtraError
from medlens.validation import (
    EVIDENCE_KEYS,
    EVIDENCE_METRICS,
    UndefinedMetricWarning,
    choose_threshold,
    evaluate,
    parse_plan,
    to_evidence,
)

from .conftest import predictions_frame

# Small synthetic cohorts leave some metrics undefined in some cohorts (e.g. LR+ when a
# cohort has no false positives); those warnings are tested explicitly below.
pytestmark = pytest.mark.filterwarnings("ignore::medlens.validation._common.UndefinedMetricWarning")

GROUP_KEYS = {"n", "n_positive", "confusion", "threshold", "metrics"}


def plan(**kw):
    raw = {"analysis": {"bootstrap": {"replicates": 200}, "calibration": {"null_simulations": 100}}}
    for k, v in kw.items():
        raw[k] = v
    return parse_plan(raw)


def test_contract_keys():
    ev = to_evidence(evaluate(predictions_frame(), plan()))
    assert tuple(sorted(ev)) == EVIDENCE_KEYS
    groups = [ev["overall"]] + [g for col in ev["cohorts"].values() for g in col.values()]
    assert set(ev["cohorts"]) == {"site", "manufacturer", "sex", "age_band"}
    for g in groups:
        assert GROUP_KEYS <= set(g)
        assert set(g["confusion"]) == {"tp", "fp", "tn", "fn"}
        assert tuple(g["metrics"]) == EVIDENCE_METRICS or set(g["metrics"]) == set(EVIDENCE_METRICS)
        for m in g["metrics"].values():
            assert (
                {"estimate", "ci_low", "ci_high", "method"}
                <= set(m)
                <= {"estimate", "ci_low", "ci_high", "method", "note"}
            )
            if None in (m["estimate"], m["ci_low"], m["ci_high"]):
                assert m["note"]
    json.dumps(ev, allow_nan=False)


def test_overall_matches_references():
    df = predictions_frame()
    rep = evaluate(df, plan(columns={"patient": None}))
    t = df[df.split == "test"]
    y, s = t.label.to_numpy(), t.score.to_numpy()
    p = s >= 0.5
    m = rep.overall.metrics
    tp, fn = int(np.sum(p & (y == 1))), int(np.sum(~p & (y == 1)))
    assert m["sensitivity"].estimate == tp / (tp + fn)
    assert (m["sensitivity"].ci_low, m["sensitivity"].ci_high) == pytest.approx(
        proportion_confint(tp, tp + fn, method="wilson"), abs=1e-12
    )
    assert m["sensitivity"].method == "wilson" and m["auc"].method == "delong"
    assert m["auc"].estimate == pytest.approx(roc_auc_score(y, s), abs=1e-14)
    assert m["average_precision"].estimate == pytest.approx(
        average_precision_score(y, s), abs=1e-14
    )
    assert m["brier"].estimate == pytest.approx(brier_score_loss(y, s), abs=1e-15)
    assert m["brier"].ci_low < m["brier"].estimate < m["brier"].ci_high
    assert rep.overall.n == len(t) and rep.overall.n_patients == len(t)


def test_patient_clustering_reported():
    rep = evaluate(predictions_frame(), plan())
    assert rep.plan_info["clustered"] is True
    # the cluster bootstrap, widened where narrower than Wilson on n / DEFF
    assert rep.overall.metrics["sensitivity"].method in (
        "cluster-bootstrap-percentile",
        "cluster-bootstrap-percentile, widened to wilson on effective n",
    )
    assert rep.overall.metrics["auc"].method == "obuchowski"
    assert rep.overall.n_patients < rep.overall.n
    assert set(rep.overall.design_effect) >= {"sensitivity", "specificity", "auc"}


def _close(a, b, path=""):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), path
    else:
        assert a == b, path


def test_row_order_invariance():
    df = predictions_frame()
    shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    a = to_evidence(evaluate(df, plan()))
    b = to_evidence(evaluate(shuffled, plan()))
    _close(a, b)


def test_cohort_table_columns_constant():
    df = predictions_frame()
    other = predictions_frame(n=120, n_patients=60, seed=9)
    other.loc[other.site == "A", "label"] = 0  # one class in a cohort
    other.loc[:5, "manufacturer"] = None
    ta = evaluate(df, plan()).cohort_tables
    tb = evaluate(other, plan()).cohort_tables
    for col in ta:
        assert list(ta[col].frame.columns) == list(tb[col].frame.columns)


def test_missing_cohort_and_one_class_cohort():
    df = predictions_frame()
    df.loc[df.index[:30], "manufacturer"] = np.nan
    df.loc[df.site == "C", "label"] = 0
    with pytest.warns(UndefinedMetricWarning, match="auc is undefined for site=C"):
        rep = evaluate(df, plan())
    assert rep.cohorts["manufacturer"]["missing"].n == int(
        ((df.split == "test") & df.manufacturer.isna()).sum()
    )
    ev = to_evidence(rep)
    auc = ev["cohorts"]["site"]["C"]["metrics"]["auc"]
    assert auc["estimate"] is None and "only one class" in auc["note"]
    assert ev["cohorts"]["site"]["C"]["metrics"]["sensitivity"]["estimate"] is None
    assert (
        list(ev["cohorts"]["manufacturer"])[-1] == "missing"
        or "missing" in ev["cohorts"]["manufacturer"]
    )


def test_multiplicity_adjustment_in_cohorts():
    from statsmodels.stats.multitest import multipletests

    rep = evaluate(predictions_frame(), plan())
    diffs = [
        (c, v, g.difference["sensitivity"])
        for c, vals in rep.cohorts.items()
        for v, g in vals.items()
    ]
    p = np.array([d["p_value"] for _, _, d in diffs])
    ok = ~np.isnan(p)
    np.testing.assert_allclose(
        np.array([d["p_holm"] for *_, d in diffs])[ok],
        multipletests(p[ok], method="holm")[1],
        atol=1e-12,
    )
    np.testing.assert_allclose(
        np.array([d["p_bh"] for *_, d in diffs])[ok],
        multipletests(p[ok], method="fdr_bh")[1],
        atol=1e-12,
    )
    worst = rep.acceptance["worst_cohort"]["site"]["sensitivity"]
    ests = {v: g.metrics["sensitivity"].estimate for v, g in rep.cohorts["site"].items()}
    assert worst == min(ests, key=ests.get)


def test_small_cohorts_flagged():
    df = predictions_frame()
    base = evaluate(df, plan())
    counts = sorted(g.n_positive for g in base.cohorts["sex"].values())
    assert not any("sensitivity" in g.flags for g in base.cohorts["sex"].values())
    limit = counts[-1]  # the cohort with most positives is not flagged, the others are
    rep = evaluate(df, plan(subgroups={"min_positives": limit}))
    for g in rep.cohorts["sex"].values():
        assert ("sensitivity" in g.flags) == (g.n_positive < limit)
        if g.n_positive < limit:
            assert g.flags["sensitivity"] == f"fewer than {limit} positives ({g.n_positive})"


def test_pass_fail_judged_on_lower_bound():
    df = predictions_frame()
    base = evaluate(df, plan())
    sens = base.overall.metrics["sensitivity"]
    between = (sens.ci_low + sens.estimate) / 2  # estimate above goal, lower bound below
    rep = evaluate(
        df,
        plan(
            primary_endpoints=[
                {"metric": "sensitivity", "goal": between},
                {"metric": "auc", "goal": base.overall.metrics["auc"].ci_low - 0.01},
            ],
            secondary_endpoints=[
                {
                    "metric": "brier",
                    "operator": "<=",
                    "goal": base.overall.metrics["brier"].ci_high + 0.01,
                }
            ],
        ),
    )
    crit = {c.metric: c for c in rep.criteria}
    assert crit["sensitivity"].estimate > between and crit["sensitivity"].outcome == "fail"
    assert crit["sensitivity"].bound == crit["sensitivity"].ci_low
    assert crit["auc"].outcome == "pass"
    assert crit["brier"].outcome == "pass" and crit["brier"].bound == crit["brier"].ci_high
    assert rep.acceptance["verdict"] == "fail"


def test_worst_case_counts_failed_as_errors():
    df = predictions_frame()
    test_pos = df.index[(df.split == "test") & (df.label == 1)][:6]
    test_neg = df.index[(df.split == "test") & (df.label == 0)][:4]
    df["status"] = "ok"
    df.loc[test_pos, "status"] = "failed"
    df.loc[test_neg, "status"] = "indeterminate"
    df.loc[test_pos[:3], "score"] = np.nan  # failed cases may have no score
    rep = evaluate(
        df,
        plan(
            columns={"patient": None},
            primary_endpoints=[
                {"metric": "sensitivity", "goal": 0.1},
                {"metric": "specificity", "goal": 0.1},
            ],
        ),
    )
    assert rep.failed_cases["n_failed"] == 6 and rep.failed_cases["n_indeterminate"] == 4
    ok = df[(df.split == "test") & (df.status == "ok")]
    tp = int(((ok.score >= 0.5) & (ok.label == 1)).sum())
    n_pos = int((df[df.split == "test"].label == 1).sum())
    crit = {c.metric: c for c in rep.criteria}
    assert crit["sensitivity"].worst_case["estimate"] == pytest.approx(tp / n_pos)
    # only failed positives can be false negatives
    assert crit["sensitivity"].worst_case["n_counted_as_errors"] == 6
    assert crit["specificity"].worst_case["n_counted_as_errors"] == 4
    tn = int(((ok.score < 0.5) & (ok.label == 0)).sum())
    assert crit["specificity"].worst_case["estimate"] == pytest.approx(
        tn / int((df[df.split == "test"].label == 0).sum())
    )
    assert rep.overall.n == len(ok)


def test_threshold_chosen_on_tuning_split_and_locked():
    df = predictions_frame()
    rep = evaluate(df, plan(threshold={"rule": "target_sensitivity", "target": 0.9}))
    tune = df[df.split == "tuning"]
    assert rep.overall.threshold == choose_threshold(
        tune.label, tune.score, rule="target_sensitivity", target=0.9
    )
    assert "tuning" in rep.plan_info["threshold"]["source"]


def test_intersections_and_recalibration():
    df = predictions_frame()
    df.loc[df.split == "tuning", "split"] = "calibration"
    rep = evaluate(
        df,
        plan(
            subgroups={"intersections": [["site", "sex"]]},
            analysis={
                "bootstrap": {"replicates": 50},
                "calibration": {"null_simulations": 50, "recalibration": "platt"},
            },
        ),
    )
    assert (
        "site*sex" in rep.cohorts
        and "A|F" in rep.cohorts["site*sex"]
        or "A|M" in rep.cohorts["site*sex"]
    )
    ev = to_evidence(rep)
    assert ev["calibration"]["recalibration"]["method"] == "platt"
    assert ev["calibration"]["recalibration"]["after"]["ece"]["ece"] is not None


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: d.assign(score=d.score.where(d.index != 3, np.nan)), "missing \\(NaN\\)"),
        (lambda d: d.assign(score=d.score.where(d.index != 3, 1.7)), r"outside \[0, 1\]"),
        (lambda d: d.assign(label=d.label.where(d.index != 3, 2)), "only 0 and 1"),
        (
            lambda d: d.assign(case_id=d.case_id.where(d.index != 3, d.case_id[4])),
            "case ids must be unique",
        ),
        (
            lambda d: d.drop(columns="score"),
            "no column 'score'.*the table has columns: 'case_id', 'patient_key'",
        ),
        (lambda d: d.assign(status="maybe"), "status must be one of"),
        (
            lambda d: d.assign(split="train"),
            "no rows with 'split' == 'test'; values present: \\['train'\\]",
        ),
        (lambda d: d.assign(label=d.label.astype(float).where(d.index != 3, np.nan)), "no label"),
        (
            lambda d: d.assign(score=d.score.astype(object).where(d.index != 3, "high")),
            "non-numeric",
        ),
        (lambda d: d.assign(patient_key=d.patient_key.where(d.index != 3, None)), "no patient id"),
    ],
)
def test_bad_input(mutate, match):
    df = mutate(predictions_frame())
    with pytest.raises(InputDataError, match=match):
        evaluate(df, plan())


def test_empty_table(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("case_id,label,score\n")
    with pytest.raises(InputDataError, match="no rows"):
        evaluate(p, plan())
    with pytest.raises(InputDataError, match="no rows"):
        evaluate(pd.DataFrame(columns=["case_id", "label", "score"]), plan())


def test_declared_classes_and_logits():
    df = predictions_frame()
    df["label"] = np.where(df.label == 1, "malignant", "benign")
    df["score"] = np.log(df.score.clip(1e-6, 1 - 1e-6) / (1 - df.score.clip(1e-6, 1 - 1e-6)))
    rep = evaluate(df, plan(classes=["benign", "malignant"], score_type="logit"))
    ref = evaluate(predictions_frame(), plan())
    assert rep.overall.n_positive == ref.overall.n_positive
    assert rep.overall.metrics["auc"].estimate == pytest.approx(
        ref.overall.metrics["auc"].estimate, abs=1e-12
    )
    df.loc[0, "label"] = "unknown"
    with pytest.raises(InputDataError, match="declared classes"):
        evaluate(df, plan(classes=["benign", "malignant"], score_type="logit"))


def test_parquet_without_pyarrow(tmp_path, monkeypatch):
    p = tmp_path / "pred.parquet"
    p.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingExtraError, match=r"pip install medlens\[parquet\]"):
        evaluate(p, plan())


def test_csv_provenance(tmp_path):
    p = tmp_path / "pred.csv"
    predictions_frame().to_csv(p, index=False)
    ev = to_evidence(evaluate(p, plan(), plan_sha256="abc"))
    prov = ev["provenance"]
    assert prov["input_sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert prov["plan_sha256"] == "abc" and len(prov["plan_canonical_sha256"]) == 64
    assert {"numpy", "scipy", "scikit-learn", "statsmodels", "medlens"} <= set(
        prov["package_versions"]
    )
    assert prov["n_rows_input"] == 400 and prov["seed"] == 0
    assert "generated_at" not in prov
    text = json.dumps(ev)
    assert "pk0001" not in text and "case0001" not in text  # no identifiers in the evidence
    assert not math.isnan(ev["overall"]["metrics"]["auc"]["estimate"])


def test_ppv_npv_at_stated_prevalence():
    from medlens.validation import npv as npv_fn
    from medlens.validation import ppv as ppv_fn

    rep = evaluate(
        predictions_frame(), plan(analysis={"prevalence": 0.02, "bootstrap": {"replicates": 20}})
    )
    got = rep.overall.at_prevalence
    assert got["ppv"].estimate == pytest.approx(
        ppv_fn(rep.overall.confusion, prevalence=0.02).estimate
    )
    assert got["npv"].estimate == pytest.approx(
        npv_fn(rep.overall.confusion, prevalence=0.02).estimate
    )
    ev = to_evidence(rep)
    assert set(ev["overall"]["at_prevalence"]) == {"ppv", "npv"}
