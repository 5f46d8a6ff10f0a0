"""Multi-class evidence: the K x K confusion matrix and the note on the summed counts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix

from medlens._errors import InputDataError, MedlensError
from medlens.validation import EVIDENCE_KEYS, evaluate, parse_plan, to_evidence
from medlens.validation._class_analysis import NOT_ONE_HOT, class_confusion_matrix

pytestmark = pytest.mark.filterwarnings("ignore::medlens.validation._common.UndefinedMetricWarning")

CLASSES = ["normal", "benign", "malignant"]


def frame(n=180, seed=11):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.2 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return pd.DataFrame(
        {
            "case_id": [f"c{i:04d}" for i in range(n)],
            "label": np.array(CLASSES)[y],
            **{f"prob_{c}": p[:, j] for j, c in enumerate(CLASSES)},
            "site": rng.choice(["A", "B", "C"], n),
        }
    )


def plan(**kw):
    return parse_plan({"analysis": {"bootstrap": {"replicates": 50}}, **kw})


def sk_matrix(f):
    pred = np.array(CLASSES)[f[[f"prob_{c}" for c in CLASSES]].to_numpy().argmax(axis=1)]
    return confusion_matrix(f["label"], pred, labels=CLASSES).tolist()


@pytest.fixture(scope="module")
def mc():
    f = frame()
    return f, to_evidence(evaluate(f, plan(task="multiclass", classes=CLASSES)))


def test_overall_confusion_matrix_equals_sklearn(mc):
    f, ev = mc
    assert sorted(ev) == list(EVIDENCE_KEYS)  # the contract's top level is unchanged
    o = ev["overall"]
    cm = o["confusion_matrix"]
    assert cm == {
        "classes": CLASSES,
        "rows": "true",
        "columns": "predicted",
        "counts": sk_matrix(f),
    }
    counts = np.array(cm["counts"])
    assert counts.sum() == o["n"] == len(f)
    assert np.trace(counts) == o["confusion"]["tp"]
    for j, c in enumerate(CLASSES):
        pc = o["per_class"][c]
        assert counts[j].sum() == pc["n_positive"]  # rows: reference class
        assert counts[:, j].sum() == pc["confusion"]["tp"] + pc["confusion"]["fp"]
    json.dumps(ev, allow_nan=False)


def test_cohort_confusion_matrices_equal_sklearn_on_the_subset(mc):
    f, ev = mc
    for value, g in ev["cohorts"]["site"].items():
        sub = f[f["site"] == value]
        assert g["confusion_matrix"]["counts"] == sk_matrix(sub)
        assert g["n"] == len(sub)


def test_summed_counts_carry_a_note(mc):
    _, ev = mc
    o = ev["overall"]
    assert o["n_positive"] == o["n"]  # the misleading sum the note explains
    assert o["n_negative"] == (len(CLASSES) - 1) * o["n"]
    assert "summed over the 3 classes" in o["note"] and "n_positive equals n" in o["note"]
    assert "confusion_matrix" in o["note"]
    assert "note" not in o["per_class"]["benign"]  # a class's own counts are case counts
    for g in ev["cohorts"]["site"].values():
        assert "summed over the 3 classes" in g["note"]


def test_matrix_is_invariant_to_row_order():
    f = frame(n=90, seed=3)
    a = to_evidence(evaluate(f, plan(task="multiclass", classes=CLASSES)))
    b = to_evidence(
        evaluate(f.sample(frac=1, random_state=1), plan(task="multiclass", classes=CLASSES))
    )
    assert a["overall"]["confusion_matrix"] == b["overall"]["confusion_matrix"]


def test_multilabel_has_per_label_2x2_and_no_kxk_matrix():
    rng = np.random.default_rng(5)
    n = 120
    p = rng.random((n, 3))
    y = (rng.random((n, 3)) < p).astype(int)
    f = pd.DataFrame({"case_id": range(n)})
    labels = ["edema", "effusion", "nodule"]
    for j, c in enumerate(labels):
        f[f"prob_{c}"] = p[:, j]
        f[f"label_{c}"] = y[:, j]
    o = to_evidence(evaluate(f, plan(task="multilabel", threshold={"value": 0.5})))["overall"]
    assert "confusion_matrix" not in o
    assert "summed over the 3 labels" in o["note"] and "several labels" in o["note"]
    mcm = multilabel_confusion_matrix(y, (p >= 0.5).astype(int))
    for j, c in enumerate(labels):
        (tn, fp), (fn, tp) = mcm[j]
        assert o["per_class"][c]["confusion"] == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


def test_binary_evidence_has_no_matrix_and_no_note():
    f = frame(n=80)
    f["label"] = (f["label"] == "malignant").astype(int)
    f["score"] = f["prob_malignant"]
    o = to_evidence(evaluate(f, plan()))["overall"]
    assert "confusion_matrix" not in o and "note" not in o


def test_class_confusion_matrix_function_and_bad_input():
    y = np.eye(3, dtype=int)[[0, 1, 2, 2, 1]]
    p = np.eye(3, dtype=int)[[0, 2, 2, 1, 1]]
    got = [list(row) for row in class_confusion_matrix(y, p)]
    want = confusion_matrix([0, 1, 2, 2, 1], [0, 2, 2, 1, 1], labels=[0, 1, 2]).tolist()
    assert got == want == [[1, 0, 0], [0, 1, 1], [0, 1, 1]]
    with pytest.raises(InputDataError, match="one-hot rows"):
        class_confusion_matrix(y, p + np.eye(3, dtype=int)[[1, 0, 0, 0, 0]])
    assert NOT_ONE_HOT.startswith("class_confusion_matrix needs")
    with pytest.raises(MedlensError, match="'pred_mat' parameter of class_confusion_matrix"):
        class_confusion_matrix(y, p[:, :2])
