"""Class endpoints, per-class calibration, class worst cases and macro cohort differences
of multi-class / multi-label validation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score
from statsmodels.stats.multitest import multipletests

from medlens._errors import ConfigError
from medlens.validation import Endpoint, evaluate, parse_plan, to_evidence, write_evidence

pytestmark = pytest.mark.filterwarnings("ignore::medlens.validation._common.UndefinedMetricWarning")

CLASSES = ["normal", "effusion", "pneumothorax"]
ENDPOINTS = [
    {"metric": "sensitivity", "goal": 0.3},
    {"metric": "specificity", "goal": 0.5},
    {"metric": "auc", "goal": 0.6},
    {"metric": "brier", "operator": "<=", "goal": 0.4},
    {"metric": "f1", "goal": 0.2},
    {"metric": "average_precision", "goal": 0.3},
]


def plan(**kw):
    raw = {"analysis": {"bootstrap": {"replicates": 200}, "calibration": {"null_simulations": 100}}}
    return parse_plan({**raw, **kw})


def mc_frame(n=300, seed=11, k=3):
    rng = np.random.default_rng(seed)
    names = CLASSES[:k] if k == 3 else ["neg", "pos"]
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.2 * np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pat = rng.integers(0, 130, n)
    status = np.where(rng.random(n) < 0.07, "failed", "ok").astype(object)
    status[rng.random(n) < 0.03] = "indeterminate"
    f = pd.DataFrame(
        {
            "case_id": [f"c{i:04d}" for i in range(n)],
            "patient_key": [f"p{j:03d}" for j in pat],
            "label": np.array(names)[y],
            **{f"prob_{c}": p[:, j] for j, c in enumerate(names)},
            "site": np.array(["A", "B", "C"])[pat % 3],
            "sex": rng.choice(["F", "M"], n),
            "status": status,
        }
    )
    return f, names


def test_class_endpoint_on_two_classes_equals_binary_endpoint(tmp_path):
    f, names = mc_frame(k=2)
    f["score"] = f["prob_pos"]
    f["y"] = (f["label"] == "pos").astype(int)
    binary = evaluate(
        f, plan(columns={"label": "y"}, primary_endpoints=ENDPOINTS, secondary_endpoints=ENDPOINTS)
    )
    class_eps = [{**ep, "class": "pos"} for ep in ENDPOINTS]
    multi = evaluate(
        f,
        plan(
            task="multiclass",
            classes=names,
            primary_endpoints=class_eps,
            secondary_endpoints=class_eps,
        ),
    )
    assert len(binary.criteria) == len(multi.criteria) == 2 * len(ENDPOINTS)
    for b, m in zip(binary.criteria, multi.criteria, strict=True):
        assert m.target_class == "pos" and b.target_class is None
        assert m.name == b.name.replace(b.metric, f"{b.metric} (pos)", 1)
        for field in ("estimate", "ci_low", "ci_high", "bound", "goal"):
            assert getattr(m, field) == pytest.approx(getattr(b, field), rel=1e-12, abs=1e-14)
        assert (m.method, m.outcome, m.primary) == (b.method, b.outcome, b.primary)
        if b.primary:
            assert b.worst_case["n_counted_as_errors"] > 0
            assert m.worst_case.keys() == b.worst_case.keys()
            for key, value in b.worst_case.items():
                assert m.worst_case[key] == (
                    value if isinstance(value, str) else pytest.approx(value, abs=1e-14)
                )
        else:
            assert m.worst_case is None
    assert multi.acceptance["verdict"] == binary.acceptance["verdict"]
    assert multi.acceptance["worst_case_verdict"] == binary.acceptance["worst_case_verdict"]
    assert not any("worst-case" in d for d in multi.acceptance["deviations"])
    # per-class calibration of the positive class = the binary calibration
    ev_b, ev_m = to_evidence(binary), to_evidence(multi)
    assert ev_m["calibration"]["per_class"]["pos"] == ev_b["calibration"]
    assert ev_m["acceptance"]["criteria"][0]["class"] == "pos"
    assert "class" not in ev_b["acceptance"]["criteria"][0]
    paths = write_evidence(multi, tmp_path / "m")
    acc = pd.read_csv(paths["acceptance"])
    assert list(acc.columns[:3]) == ["name", "metric", "class"] and set(acc["class"]) == {"pos"}
    rel = pd.read_csv(tmp_path / "m" / "calibration_reliability_per_class.csv")
    assert list(rel.columns[:2]) == ["class", "strategy"] and set(rel["class"]) == set(names)
    paths_b = write_evidence(binary, tmp_path / "b")
    assert "class" not in pd.read_csv(paths_b["acceptance"]).columns
    assert not (tmp_path / "b" / "calibration_reliability_per_class.csv").exists()


def test_class_endpoints_and_calibration_match_sklearn():
    f, _ = mc_frame()
    eps = [{"metric": "auc", "goal": 0.6, "class": c} for c in CLASSES]
    rep = evaluate(f, plan(task="multiclass", classes=CLASSES, secondary_endpoints=eps))
    ok = f[f["status"] == "ok"]
    p = ok[[f"prob_{c}" for c in CLASSES]].to_numpy()
    ev = to_evidence(rep)
    assert ev["calibration"]["method"].startswith("one-vs-rest")
    for j, (c, crit) in enumerate(zip(CLASSES, rep.criteria, strict=True)):
        y = (ok["label"] == c).to_numpy().astype(int)
        assert crit.target_class == c and crit.name == f"auc ({c}) >= 0.6"
        assert crit.estimate == pytest.approx(roc_auc_score(y, p[:, j]), abs=1e-12)
        cal = ev["calibration"]["per_class"][c]
        assert cal["n"] == len(ok)
        assert cal["brier"]["brier"] == pytest.approx(brier_score_loss(y, p[:, j]), abs=1e-11)
        prob_true, prob_pred = calibration_curve(y, p[:, j], n_bins=10, strategy="uniform")
        uniform = cal["reliability"]["uniform"]
        np.testing.assert_allclose(uniform["observed"], prob_true, atol=1e-11)
        np.testing.assert_allclose(uniform["mean_predicted"], prob_pred, atol=1e-11)
        bins = np.minimum((p[:, j] * 10).astype(int), 9)
        gaps = np.bincount(bins, weights=p[:, j] - y, minlength=10)
        assert cal["ece"]["ece"] == pytest.approx(np.abs(gaps).sum() / len(y), abs=1e-11)
        # the per-class metric and the per-class calibration agree
        pc = ev["overall"]["per_class"][c]["metrics"]
        assert pc["brier"]["estimate"] == pytest.approx(cal["brier"]["brier"], abs=1e-11)
        assert pc["ece"]["estimate"] == pytest.approx(cal["ece"]["ece"], abs=1e-11)
    json.dumps(ev, allow_nan=False)


def test_worst_case_of_class_endpoints_counts_failed_cases_as_errors():
    f, _ = mc_frame()
    eps = [
        {"metric": "sensitivity", "goal": 0.3, "class": "pneumothorax"},
        {"metric": "specificity", "goal": 0.5, "class": "pneumothorax"},
        {"metric": "accuracy", "goal": 0.5, "class": "effusion"},
    ]
    rep = evaluate(f, plan(task="multiclass", classes=CLASSES, primary_endpoints=eps))
    bad = (f["status"] != "ok").to_numpy()
    pred = np.array(CLASSES)[f[[f"prob_{c}" for c in CLASSES]].to_numpy().argmax(axis=1)]
    lab = f["label"].to_numpy()
    pos = lab == "pneumothorax"
    tp = np.sum(~bad & pos & (pred == "pneumothorax"))
    tn = np.sum(~bad & ~pos & (pred != "pneumothorax"))
    sens, spec, acc = rep.criteria
    assert sens.worst_case["estimate"] == tp / pos.sum()  # failed positives are FN
    assert spec.worst_case["estimate"] == tn / (~pos).sum()  # failed negatives are FP
    eff = lab == "effusion"
    correct = np.sum(~bad & (eff == (pred == "effusion")))
    assert acc.worst_case["estimate"] == correct / len(f)
    # only the failed cases that can be errors of the metric are counted: failed positives
    # of the class for sensitivity, its failed negatives for specificity, all for accuracy
    assert sens.worst_case["n_counted_as_errors"] == np.sum(bad & pos)
    assert spec.worst_case["n_counted_as_errors"] == np.sum(bad & ~pos)
    assert acc.worst_case["n_counted_as_errors"] == bad.sum()
    for c in rep.criteria:
        assert c.worst_case["ci_low"] <= c.worst_case["estimate"] <= c.worst_case["ci_high"]
        assert c.worst_case["estimate"] <= c.estimate
        assert c.worst_case["method"].startswith("cluster-bootstrap-percentile")
    assert not any("worst-case" in d for d in rep.acceptance["deviations"])
    assert rep.acceptance["worst_case_verdict"] in ("pass", "fail")


def test_macro_endpoints_keep_the_deviation_and_verdict_is_not_evaluable():
    f, _ = mc_frame()
    rep = evaluate(
        f,
        plan(
            task="multiclass",
            primary_endpoints=[
                {"metric": "auc", "goal": 0.5},
                {"metric": "auc", "goal": 0.5, "class": "normal"},
            ],
        ),
    )
    macro, cls = rep.criteria
    assert macro.worst_case is None and cls.worst_case["outcome"] == "pass"
    assert macro.outcome == "pass" and rep.acceptance["verdict"] == "pass"
    (dev,) = rep.acceptance["deviations"]
    assert "macro-average endpoints ['auc >= 0.5']" in dev
    assert rep.acceptance["worst_case_verdict"] == "not_evaluable"


def test_multilabel_class_endpoint_and_absent_label_calibration():
    rng = np.random.default_rng(3)
    n = 200
    p = rng.random((n, 3))
    y = (rng.random((n, 3)) < p).astype(int)
    y[:, 2] = 0  # no case has the third label
    f = pd.DataFrame({"case_id": range(n)})
    for j, c in enumerate(["edema", "effusion", "nodule"]):
        f[f"prob_{c}"], f[f"label_{c}"] = p[:, j], y[:, j]
    rep = evaluate(
        f,
        plan(
            task="multilabel",
            threshold={"value": 0.4},
            primary_endpoints=[{"metric": "specificity", "goal": 0.2, "class": "effusion"}],
        ),
    )
    (crit,) = rep.criteria
    pred = p[:, 1] >= 0.4
    assert crit.estimate == np.sum(~pred & (y[:, 1] == 0)) / np.sum(y[:, 1] == 0)
    assert crit.worst_case["n_counted_as_errors"] == 0
    assert crit.worst_case["estimate"] == crit.estimate
    ev = to_evidence(rep)
    assert ev["calibration"]["per_class"]["nodule"] is None
    assert ev["calibration"]["per_class"]["edema"]["n"] == n
    json.dumps(ev, allow_nan=False)


def test_macro_cohort_differences_and_their_multiplicity():
    f, _ = mc_frame()
    rep = evaluate(f, plan(task="multiclass", subgroups={"multiplicity": "bh"}))
    ps, members = [], []
    for col in ("site", "sex"):
        for g in rep.cohorts[col].values():
            for key in ("sensitivity", "auc", "brier"):
                d = g.difference[key]
                assert d["estimate"] == pytest.approx(
                    g.metrics[key].estimate - rep.overall.metrics[key].estimate, abs=1e-14
                )
                assert d["ci_low"] <= d["ci_high"] and 0 < d["p_value"] <= 1
                assert d["p_adjusted"] == d["p_bh"]
            ps.append(g.difference["auc"]["p_value"])
            members.append(g.difference["auc"])
    holm = multipletests(ps, method="holm")[1]
    assert [m["p_holm"] for m in members] == pytest.approx(holm, abs=1e-12)
    # macro cohort tables next to the per-class ones
    table = rep.cohort_tables["site"].frame
    assert list(table["value"]) == ["A", "B", "C"]
    assert table["auc_estimate"].tolist() == pytest.approx(
        [rep.cohorts["site"][v].metrics["auc"].estimate for v in "ABC"], abs=1e-14
    )
    assert "site.normal" in rep.cohort_tables
    assert rep.acceptance["worst_cohort"]["site"] == rep.cohort_tables["site"].worst
    ev = to_evidence(rep)
    assert "difference_to_overall" in ev["cohorts"]["sex"]["F"]


def test_bad_class_endpoints():
    with pytest.raises(
        ConfigError,
        match=r"primary_endpoints\.0\.class: unknown class 'pneumothorx'; the classes are "
        r"\['normal', 'effusion', 'pneumothorax'\] \(did you mean 'pneumothorax'\?\)",
    ):
        plan(
            task="multiclass",
            classes=CLASSES,
            primary_endpoints=[{"metric": "auc", "goal": 0.5, "class": "pneumothorx"}],
        )
    with pytest.raises(ConfigError, match=r"secondary_endpoints\.0: endpoint 'class' 'x' is for"):
        plan(secondary_endpoints=[{"metric": "auc", "goal": 0.5, "class": "x"}])
    f, _ = mc_frame(n=120)
    inferred = plan(
        task="multiclass", secondary_endpoints=[{"metric": "auc", "goal": 0.5, "class": "Normal"}]
    )
    with pytest.raises(ConfigError, match=r"unknown class 'Normal'.*did you mean 'normal'"):
        evaluate(f, inferred)
    with pytest.raises(ConfigError, match=r"primary_endpoints\.0\.clas: unknown key"):
        plan(primary_endpoints=[{"metric": "auc", "goal": 0.5, "clas": "x"}])


def test_endpoint_class_in_the_plan_definition_and_hash():
    base = {"task": "multiclass", "classes": [0, 1, 2]}
    without = plan(**base, primary_endpoints=[{"metric": "auc", "goal": 0.5}])
    assert '"class":' not in without.canonical_json()
    with_class = plan(**base, primary_endpoints=[{"metric": "auc", "goal": 0.5, "class": 2}])
    assert with_class.primary_endpoints[0].class_ == "2"  # YAML numbers become names
    assert with_class.model_dump(mode="json")["primary_endpoints"][0]["class"] == "2"
    assert with_class.sha256() != without.sha256()
    again = parse_plan(json.loads(with_class.canonical_json()))
    assert again == with_class and again.sha256() == with_class.sha256()
    assert Endpoint(metric="auc", goal=0.5, class_="x") == Endpoint.model_validate(
        {"metric": "auc", "goal": 0.5, "class": "x"}
    )
