from __future__ import annotations

import json

import pytest

from medlens.cli import main

from .conftest import predictions_frame

pytestmark = pytest.mark.filterwarnings("ignore::medlens.validation._common.UndefinedMetricWarning")


@pytest.fixture
def pred_csv(tmp_path):
    p = tmp_path / "pred.csv"
    predictions_frame().to_csv(p, index=False)
    return p


def test_validate_with_plan_is_byte_identical(tmp_path, pred_csv):
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "version: 1\nanalysis:\n  bootstrap: {replicates: 100}\n  calibration: {null_simulations: 50}\n"
        "primary_endpoints:\n  - {metric: specificity, goal: 0.5}\n"
    )
    for out in ("a", "b"):
        assert (
            main(["validate", str(pred_csv), "--plan", str(plan), "--out", str(tmp_path / out)])
            == 0
        )
    a = (tmp_path / "a" / "evidence.json").read_bytes()
    assert a == (tmp_path / "b" / "evidence.json").read_bytes()
    ev = json.loads(a)
    assert sorted(ev) == [
        "acceptance",
        "calibration",
        "cohorts",
        "failed_cases",
        "overall",
        "plan",
        "provenance",
    ]
    assert ev["acceptance"]["criteria"][0]["metric"] == "specificity"
    for name in (
        "overall.csv",
        "cohorts_site.csv",
        "cohorts_sex.csv",
        "acceptance.csv",
        "calibration_reliability.csv",
    ):
        assert (tmp_path / "a" / name).is_file()


def test_quick_mode(tmp_path, pred_csv):
    out = tmp_path / "q"
    rc = main(
        [
            "validate",
            str(pred_csv),
            "--out",
            str(out),
            "--label-col",
            "label",
            "--score-col",
            "score",
            "--patient-col",
            "patient_key",
            "--cohort-col",
            "site",
            "--cohort-col",
            "sex",
            "--threshold",
            "0.4",
            "--replicates",
            "50",
            "--timestamp",
        ]
    )
    assert rc == 0
    ev = json.loads((out / "evidence.json").read_text())
    assert set(ev["cohorts"]) == {"site", "sex"}
    assert ev["overall"]["threshold"] == 0.4
    assert ev["plan"]["bootstrap"]["replicates"] == 50
    assert "generated_at" in ev["provenance"]
    assert ev["acceptance"]["verdict"] == "no_primary_endpoints"


def test_bad_input_is_one_line_error(tmp_path, pred_csv, capsys):
    rc = main(["validate", str(pred_csv), "--out", str(tmp_path / "x"), "--score-col", "prob"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no column 'prob'" in err and "'case_id'" in err and len(err.strip().splitlines()) == 1


def test_validate_multiclass_quick_mode(tmp_path):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 90)
    p = rng.dirichlet(np.ones(3), 90) * 0.5 + 0.5 * np.eye(3)[y]
    frame = pd.DataFrame({"case_id": range(90), "label": np.array(["x", "y", "z"])[y]})
    for j, c in enumerate("xyz"):
        frame[f"prob_{c}"] = p[:, j]
    path = tmp_path / "mc.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "out"
    args = ["validate", str(path), "--task", "multiclass", "--replicates", "50", "--out", str(out)]
    assert main(args) == 0
    ev = json.loads((out / "evidence.json").read_text())
    assert ev["overall"]["task"] == "multiclass" and set(ev["overall"]["per_class"]) == set("xyz")
    assert ev["plan"]["definition"]["task"] == "multiclass"


def test_validate_secondary_from_plan(tmp_path, pred_csv):
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "version: 1\nanalysis:\n  bootstrap: {replicates: 50}\n  calibration: {null_simulations: 20}\n"
        "secondary:\n  operating_points:\n    - {metric: sensitivity_at_specificity, target: 0.8}\n"
    )
    out = tmp_path / "o"
    assert main(["validate", str(pred_csv), "--plan", str(plan), "--out", str(out)]) == 0
    ev = json.loads((out / "evidence.json").read_text())
    op = ev["secondary"]["operating_points"]["sensitivity_at_specificity_0.8"]
    assert op["ci_low"] <= op["estimate"] <= op["ci_high"]


def test_threshold_outside_unit_interval_exits_2(tmp_path, pred_csv, capsys):
    args = ["validate", str(pred_csv), "--out", str(tmp_path / "x"), "--threshold", "1.5"]
    try:  # refused by the option parser (SystemExit 2) or by the plan (exit code 2)
        rc = main(args)
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err
    assert "threshold" in err and "1.5" in err
    assert not (tmp_path / "x" / "evidence.json").exists()


def test_evaluate_threshold_outside_unit_interval_is_an_error():
    from medlens._errors import ConfigError
    from medlens.validation import evaluate

    for bad in (1.5, -0.2, float("nan")):
        with pytest.raises(
            ConfigError, match=r"threshold: threshold must be in \[0, 1\] for probability scores"
        ):
            evaluate(predictions_frame(n=40, n_patients=20), threshold=bad)


def test_percent_goal_in_plan_exits_2(tmp_path, pred_csv, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text("primary_endpoints:\n  - metric: sensitivity\n    goal: 80\n")
    rc = main(["validate", str(pred_csv), "--plan", str(plan), "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "plan.yaml:3:5: invalid analysis plan: primary_endpoints.0.goal: goal 80" in err
    assert "did you mean 0.8 instead of 80?" in err
