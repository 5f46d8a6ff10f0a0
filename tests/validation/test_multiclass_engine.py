"""evaluate() on multi-class and multi-label predictions tables (one-vs-rest + macro)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    multilabel_confusion_matrix,
    roc_auc_score,
)

from medlens._errors import ConfigError, InputDataError
from medlens.validation import EVIDENCE_KEYS, EVIDENCE_METRICS, evaluate, parse_plan, to_evidence

pytestmark = pytest.mark.filterwarnings("ignore::medlens.validation._common.UndefinedMetricWarning")

CLASSES = ["normal", "benign", "malignant"]
GROUP_KEYS = {"n", "n_positive", "confusion", "threshold", "metrics"}


def mc_frame(n=300, seed=4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pat = rng.integers(0, 120, n)
    f = pd.DataFrame(
        {
            "case_id": [f"c{i:04d}" for i in range(n)],
            "patient_key": [f"p{k:03d}" for k in pat],
            "label": np.array(CLASSES)[y],
            **{f"prob_{c}": p[:, j] for j, c in enumerate(CLASSES)},
            "site": np.array(["A", "B"])[pat % 2],
            "sex": rng.choice(["F", "M"], n),
        }
    )
    return f, logits


def ml_frame(n=300, seed=5):
    rng = np.random.default_rng(seed)
    p = rng.random((n, 3))
    y = (rng.random((n, 3)) < p).astype(int)
    f = pd.DataFrame({"case_id": range(n), "sex": rng.choice(["F", "M"], n)})
    for j, c in enumerate(["edema", "effusion", "nodule"]):
        f[f"prob_{c}"] = p[:, j]
        f[f"label_{c}"] = y[:, j]
    return f, y, p


def sk_macro_auc(labels, probs):
    """sklearn's one-vs-rest macro AUC (it needs the classes in sorted order)."""
    order = np.argsort(CLASSES)
    return roc_auc_score(
        labels, probs[:, order], multi_class="ovr", average="macro", labels=sorted(CLASSES)
    )


def plan(**kw):
    raw = {"analysis": {"bootstrap": {"replicates": 200}}, **kw}
    return parse_plan(raw)


def test_multiclass_per_class_and_macro_match_sklearn():
    f, _ = mc_frame()
    ev = to_evidence(evaluate(f, plan(task="multiclass", classes=CLASSES)))
    assert sorted(ev) == list(EVIDENCE_KEYS)
    o = ev["overall"]
    assert o["task"] == "multiclass" and o["classes"] == CLASSES
    assert o["decision_rule"] == "argmax" and o["threshold"] is None
    p = f[[f"prob_{c}" for c in CLASSES]].to_numpy()
    y = f["label"].to_numpy()
    assert o["metrics"]["auc"]["estimate"] == pytest.approx(sk_macro_auc(y, p), abs=1e-11)
    pred = np.array(CLASSES)[p.argmax(axis=1)]
    mcm = multilabel_confusion_matrix(y, pred, labels=CLASSES)
    for j, c in enumerate(CLASSES):
        g = o["per_class"][c]
        assert GROUP_KEYS <= set(g) and set(g["metrics"]) == set(EVIDENCE_METRICS)
        (tn, fp), (fn, tp) = mcm[j]
        assert g["confusion"] == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
        assert g["metrics"]["auc"]["estimate"] == pytest.approx(
            roc_auc_score(y == c, p[:, j]), abs=1e-11
        )
        assert g["metrics"]["average_precision"]["estimate"] == pytest.approx(
            average_precision_score(y == c, p[:, j]), abs=1e-11
        )
        assert g["metrics"]["brier"]["estimate"] == pytest.approx(
            brier_score_loss(y == c, p[:, j]), abs=1e-11
        )
        assert g["metrics"]["auc"]["method"] == "obuchowski"  # patient-clustered
    # macro = unweighted mean of the per-class estimates, with an interval
    for key in ("sensitivity", "specificity", "f1", "auc", "brier"):
        m = o["metrics"][key]
        mean = np.mean([o["per_class"][c]["metrics"][key]["estimate"] for c in CLASSES])
        assert m["estimate"] == pytest.approx(mean, abs=1e-11)
        assert m["ci_low"] < m["estimate"] < m["ci_high"]
        assert m["method"].startswith("macro average over 3 classes")
    # summed one-vs-rest counts: multi-class accuracy = tp / n
    assert o["confusion"]["tp"] == int(np.sum(pred == y)) and o["n"] == len(f)
    # cohorts carry per-class groups too
    for col in ("site", "sex"):
        for g in ev["cohorts"][col].values():
            assert set(g["per_class"]) == set(CLASSES)
            assert "difference_to_overall" in g["per_class"]["benign"]
    sub = f[f["sex"] == "F"]
    ps = sub[[f"prob_{c}" for c in CLASSES]].to_numpy()
    assert ev["cohorts"]["sex"]["F"]["metrics"]["auc"]["estimate"] == pytest.approx(
        sk_macro_auc(sub["label"], ps), abs=1e-11
    )
    json.dumps(ev, allow_nan=False)


def test_multiclass_classes_inferred_logits_and_row_order():
    f, logits = mc_frame(n=200)
    a = to_evidence(evaluate(f, plan(task="multiclass")))
    assert a["overall"]["classes"] == CLASSES  # from the prob_ columns, in table order
    g = f.copy()
    for j, c in enumerate(CLASSES):
        g[f"prob_{c}"] = logits[:, j]
    b = to_evidence(evaluate(g, plan(task="multiclass", score_type="logit")))
    for c in CLASSES:
        for key in ("auc", "sensitivity", "brier"):
            assert b["overall"]["per_class"][c]["metrics"][key]["estimate"] == pytest.approx(
                a["overall"]["per_class"][c]["metrics"][key]["estimate"], abs=1e-9
            )
    shuffled = f.sample(frac=1.0, random_state=1)
    c = to_evidence(evaluate(shuffled, plan(task="multiclass")))
    assert c["overall"]["per_class"] == a["overall"]["per_class"]
    assert c["overall"]["metrics"]["auc"] == a["overall"]["metrics"]["auc"]


def test_multilabel_per_label_matches_sklearn():
    f, y, p = ml_frame()
    ev = to_evidence(evaluate(f, plan(task="multilabel", threshold={"value": 0.4})))
    o = ev["overall"]
    assert o["classes"] == ["edema", "effusion", "nodule"]
    assert o["threshold"] == 0.4 and o["decision_rule"] == "score >= 0.4 per label"
    assert o["metrics"]["auc"]["estimate"] == pytest.approx(
        roc_auc_score(y, p, average="macro"), abs=1e-11
    )
    mcm = multilabel_confusion_matrix(y, (p >= 0.4).astype(int))
    for j, c in enumerate(o["classes"]):
        (tn, fp), (fn, tp) = mcm[j]
        assert o["per_class"][c]["confusion"] == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
        assert o["per_class"][c]["n_positive"] == int(y[:, j].sum())
    assert o["n_positive"] == int(y.sum())


def test_endpoints_are_judged_on_macro_metrics():
    f, _ = mc_frame()
    r = evaluate(f, plan(task="multiclass", primary_endpoints=[{"metric": "auc", "goal": 0.6}]))
    (crit,) = r.criteria
    assert crit.estimate == r.overall.metrics["auc"].estimate
    assert crit.outcome == "pass" and r.acceptance["verdict"] == "pass"
    assert any("worst-case" in d for d in r.acceptance["deviations"])


def test_binary_evidence_has_no_per_class():
    f, _ = mc_frame(n=120)
    f["label"] = (f["label"] == "malignant").astype(int)
    f["score"] = f["prob_malignant"]
    ev = to_evidence(evaluate(f, plan()))
    assert "per_class" not in ev["overall"] and "task" not in ev["overall"]


def test_bad_multiclass_input():
    f, _ = mc_frame(n=120)
    g = f.copy()
    g.loc[5, "label"] = "cyst"
    with pytest.raises(InputDataError, match=r"declared classes .*found \['cyst'\]"):
        evaluate(g, plan(task="multiclass"))
    with pytest.raises(
        InputDataError,
        match=r"no score column 'prob_cyst' for class 'cyst'; per-class score columns present: "
        r"'prob_normal', 'prob_benign', 'prob_malignant'",
    ):
        evaluate(f, plan(task="multiclass", classes=[*CLASSES, "cyst"]))
    g = f.copy()
    g.loc[7, "prob_benign"] += 0.2
    with pytest.raises(InputDataError, match=r"sum to 1 per case \(tolerance 0.001\); 1 cases"):
        evaluate(g, plan(task="multiclass"))
    with pytest.raises(InputDataError, match="no per-class score columns matching 'p_{class}'"):
        evaluate(f, plan(task="multiclass", columns={"score_pattern": "p_{class}"}))
    g = f.copy()
    g.loc[2, "label"] = None
    with pytest.raises(InputDataError, match="1 cases have no label"):
        evaluate(g, plan(task="multiclass"))
    g = f.copy()
    g.loc[3, "prob_normal"] = np.nan
    with pytest.raises(InputDataError, match="prob_normal"):
        evaluate(g, plan(task="multiclass"))


def test_bad_multilabel_input():
    f, _, _ = ml_frame(n=100)
    with pytest.raises(
        InputDataError, match=r"no label column 'label_nodule' for label 'nodule'.*'prob_edema'"
    ):
        evaluate(f.drop(columns="label_nodule"), plan(task="multilabel"))
    g = f.copy()
    g.loc[0, "label_edema"] = 2
    with pytest.raises(InputDataError, match="label_edema"):
        evaluate(g, plan(task="multilabel"))
    g = f.copy()
    g["prob_edema"] = g["prob_edema"] + 1
    with pytest.raises(InputDataError, match="outside"):
        evaluate(g, plan(task="multilabel"))


def test_bad_multiclass_plans():
    with pytest.raises(ConfigError, match="needs rule 'fixed'"):
        plan(task="multiclass", threshold={"rule": "youden"})
    with pytest.raises(ConfigError, match="exactly 2 classes"):
        plan(classes=["a", "b", "c"])
    with pytest.raises(ConfigError, match="distinct"):
        plan(task="multilabel", classes=["a", "a"])
    with pytest.raises(ConfigError, match="score_pattern must contain"):
        plan(task="multiclass", columns={"score_pattern": "prob_"})
    with pytest.raises(ConfigError, match="secondary analyses are for binary"):
        plan(
            task="multiclass",
            secondary={"comparisons": [{"score_a": "prob_a", "score_b": "prob_b"}]},
        )
    with pytest.raises(ConfigError, match="recalibration is for binary"):
        plan(task="multiclass", analysis={"calibration": {"recalibration": "platt"}})


def test_macro_interval_keeps_a_width_when_every_class_is_perfect():
    f, logits = mc_frame()
    y = np.array([CLASSES.index(v) for v in f["label"]])
    for j, c in enumerate(CLASSES):  # every case predicted right, confidently
        f[f"prob_{c}"] = np.where(y == j, 0.9, 0.05)
    ev = to_evidence(evaluate(f, plan(task="multiclass", classes=CLASSES)))
    o = ev["overall"]
    m = o["metrics"]["sensitivity"]
    parts = [o["per_class"][c]["metrics"]["sensitivity"] for c in CLASSES]
    assert m["estimate"] == 1.0 and all(p["estimate"] == 1.0 for p in parts)
    # every bootstrap replicate is 1: the MOVER interval of the mean of the classes' own
    # (effective-n Wilson) intervals, 1 - sqrt(sum (1 - l_k)^2) / 3
    lo = 1 - np.sqrt(sum((1 - p["ci_low"]) ** 2 for p in parts)) / 3
    assert m["ci_low"] == pytest.approx(lo, abs=1e-11) and m["ci_high"] == 1.0
    assert 0 < 1 - m["ci_low"] < max(1 - p["ci_low"] for p in parts)
    assert "MOVER over the classes" in m["method"]
