"""Secondary analyses of the engine: paired AUC comparisons and fixed operating points."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from medlens._errors import ConfigError, InputDataError
from medlens.validation import (
    EVIDENCE_KEYS,
    evaluate,
    parse_plan,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
    to_evidence,
)
from medlens.validation._secondary import _auc_from_curve, _best_at, _SortedScores

from .conftest import predictions_frame, proc_dataset

pytestmark = pytest.mark.filterwarnings("ignore::medlens.validation._common.UndefinedMetricWarning")


def _plan(secondary, replicates=200):
    return parse_plan(
        {
            "analysis": {"bootstrap": {"replicates": replicates}, "test_split": None},
            "secondary": secondary,
        }
    )


def _proc_frame(name):
    f = proc_dataset(name)
    f.insert(0, "case_id", [f"c{i}" for i in range(len(f))])
    return f.rename(columns={"score1": "score"})


@pytest.mark.parametrize("name", ["ties200", "coarse60", "cont300"])
def test_paired_delong_matches_proc(name, proc_reference):
    ref = proc_reference[name]
    plan = _plan({"comparisons": [{"score_a": "score", "score_b": "score2", "name": "m1 vs m2"}]})
    ev = to_evidence(evaluate(_proc_frame(name), plan))
    assert sorted(set(ev) - {"secondary"}) == list(EVIDENCE_KEYS)
    c = ev["secondary"]["comparisons"]["m1 vs m2"]
    # no patient column: every case is independent and DeLong is the reported difference
    assert c["difference"] == c["delong"] and c["limitations"] == []
    assert c["delong"]["method"] == "paired-delong"
    assert c["auc_a"]["estimate"] == pytest.approx(ref["auc1"], abs=1e-11)
    assert c["auc_b"]["estimate"] == pytest.approx(ref["auc2"], abs=1e-11)
    assert c["delong"]["estimate"] == pytest.approx(ref["auc1"] - ref["auc2"], abs=1e-11)
    assert c["delong"]["z"] == pytest.approx(ref["test_z"], rel=1e-9)
    assert c["delong"]["p_value"] == pytest.approx(ref["test_p"], rel=1e-8)
    assert [c["delong"]["ci_low"], c["delong"]["ci_high"]] == pytest.approx(
        ref["test_ci"], abs=1e-10
    )
    assert c["n"] == ref["n"] and c["n_positive"] == ref["n_positive"]
    # the bootstrap difference is reported alongside, centred on the same estimate
    b = c["bootstrap"]
    assert b["ci_low"] < b["estimate"] < b["ci_high"] and 0 < b["p_value"] <= 1


def _clustered_frame():
    f = predictions_frame(n=300, n_patients=90, seed=3)
    rng = np.random.default_rng(7)
    f["score2"] = np.clip(f["score"] + rng.normal(0, 0.15, len(f)), 0, 1).round(3)
    f["score_copy"] = f["score"]
    return f


def test_clustered_comparison_uses_patient_bootstrap_and_records_limitation():
    f = _clustered_frame()
    plan = _plan(
        {
            "comparisons": [
                {"score_a": "score", "score_b": "score2"},
                {"score_a": "score", "score_b": "score_copy"},
            ]
        }
    )
    ev = to_evidence(evaluate(f, plan))
    sec = ev["secondary"]
    assert sec["unit"] == "patient" and "independent cases" in sec["notes"][0]
    c = sec["comparisons"]["score vs score2"]
    assert c["difference"] == c["bootstrap"]
    assert c["difference"]["method"].startswith("paired cluster-bootstrap")
    assert "independent cases" in c["limitations"][0] and "independent" in c["delong"]["note"]
    assert c["auc_a"]["method"] == "obuchowski"
    assert c["auc_a"]["estimate"] == pytest.approx(roc_auc_score(f["label"], f["score"]), abs=1e-12)
    # the same patients are resampled for both scores: identical scores differ by exactly 0
    same = sec["comparisons"]["score vs score_copy"]["bootstrap"]
    assert same["estimate"] == same["ci_low"] == same["ci_high"] == 0.0
    json.dumps(ev, allow_nan=False)


def test_operating_points_match_reference_functions_and_sklearn():
    f = _clustered_frame()
    plan = _plan(
        {
            "operating_points": [
                {"metric": "sensitivity_at_specificity", "target": 0.8},
                {"metric": "specificity_at_sensitivity", "target": 0.9, "score": "score2"},
                {"metric": "sensitivity_at_specificity", "target": 0.95, "name": "rule-out"},
            ]
        }
    )
    ev = to_evidence(evaluate(f, plan))
    ops = ev["secondary"]["operating_points"]
    assert set(ops) == {
        "sensitivity_at_specificity_0.8",
        "specificity_at_sensitivity_0.9_score2",
        "rule-out",
    }
    y = f["label"].to_numpy()
    fpr, tpr, thr = roc_curve(y, f["score"])
    ok = 1 - fpr >= 0.8
    want = tpr[ok].max()
    op = ops["sensitivity_at_specificity_0.8"]
    assert op["estimate"] == pytest.approx(want, abs=1e-12)
    assert op["estimate"] == pytest.approx(
        sensitivity_at_specificity(y, f["score"], target=0.8)[0], abs=1e-12
    )
    assert op["ci_low"] < op["estimate"] < op["ci_high"]
    assert op["method"] == "cluster-bootstrap-percentile"
    sp = ops["specificity_at_sensitivity_0.9_score2"]
    est, at = specificity_at_sensitivity(y, f["score2"], target=0.9)
    assert sp["estimate"] == pytest.approx(est, abs=1e-12) and sp["threshold"] == at
    assert sp["score"] == "score2"


def test_replicate_kernel_with_unit_weights_equals_point_estimates():
    f = _clustered_frame()
    y, s = f["label"].to_numpy(), f["score"].to_numpy()
    # rows permuted: the kernel must not depend on row order
    perm = np.random.default_rng(0).permutation(y.size)
    k = _SortedScores(y[perm], s[perm])
    w = np.vstack(
        [np.ones(y.size), np.r_[np.full(y.size // 2, 2.0), np.zeros(y.size - y.size // 2)]]
    )
    sens, spec = k.curve(w)
    assert _auc_from_curve(sens, spec)[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    half = slice(0, y.size // 2)  # rows given weight 2 in the second replicate
    assert _auc_from_curve(sens, spec)[1] == pytest.approx(
        roc_auc_score(y[perm][half], s[perm][half]), abs=1e-12
    )
    for t in (0.5, 0.8, 0.99):
        assert _best_at(sens, spec, t)[0] == pytest.approx(
            sensitivity_at_specificity(y, s, target=t)[0], abs=1e-12
        )
        assert _best_at(spec, sens, t)[0] == pytest.approx(
            specificity_at_sensitivity(y, s, target=t)[0], abs=1e-12
        )


def test_unreachable_operating_point_is_null_with_note():
    f = _clustered_frame()
    f.loc[f["score"] == f["score"].max(), "label"] = 0  # the top score is a negative case
    ev = to_evidence(
        evaluate(
            f,
            _plan({"operating_points": [{"metric": "sensitivity_at_specificity", "target": 1.0}]}),
        )
    )
    op = ev["secondary"]["operating_points"]["sensitivity_at_specificity_1"]
    assert op["estimate"] is None and op["ci_low"] is None and op["threshold"] is None
    assert "no threshold reaches the target 1" in op["note"]


def test_binary_evidence_without_secondary_is_unchanged():
    ev = to_evidence(evaluate(_clustered_frame(), _plan({})))
    assert sorted(ev) == list(EVIDENCE_KEYS)


def test_bad_secondary_input():
    f = _clustered_frame()
    with pytest.raises(InputDataError, match=r"no column 'nope'.*the table has columns: 'case_id'"):
        evaluate(f, _plan({"comparisons": [{"score_a": "score", "score_b": "nope"}]}))
    g = f.copy()
    g.loc[3, "score2"] = np.nan
    with pytest.raises(InputDataError, match="score2"):
        evaluate(g, _plan({"comparisons": [{"score_a": "score", "score_b": "score2"}]}))
    g["score2"] = f["score2"] * 3
    with pytest.raises(InputDataError, match="outside"):
        evaluate(g, _plan({"comparisons": [{"score_a": "score", "score_b": "score2"}]}))
    with pytest.raises(ConfigError, match="same column"):
        _plan({"comparisons": [{"score_a": "score", "score_b": "score"}]})
    with pytest.raises(ConfigError, match="operating_points.0.target"):
        _plan({"operating_points": [{"metric": "sensitivity_at_specificity", "target": 0}]})
    with pytest.raises(ConfigError, match="operating_points.0.metric"):
        _plan({"operating_points": [{"metric": "ppv_at_npv", "target": 0.9}]})
