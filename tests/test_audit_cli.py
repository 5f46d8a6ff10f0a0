"""``medlens audit`` end to end on a small shortcut cohort."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml


@pytest.fixture(scope="module")
def cfg_path(tmp_path_factory):
    from medlens._demo import demo_config
    from medlens.testing import make_synthetic_cohort

    root = tmp_path_factory.mktemp("audit_cli")
    cohort = make_synthetic_cohort(root / "c", n_patients=60, image_size=64, seed=1)
    cfg = demo_config(shortcut=True, cohort=cohort)
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    return path


def test_audit_cli_writes_json_csv_png(cfg_path, tmp_path, capsys):
    from medlens.cli import main
    from medlens.commands.audit import flag_summary
    from medlens.xai._trust import FAITHFULNESS_MIN_GAP, TRUST_CRITERIA

    out = tmp_path / "out"
    code = main(
        [
            "audit",
            "--config",
            str(cfg_path),
            "--out",
            str(out),
            "--methods",
            "gradcam,saliency",
            "--max-cases",
            "12",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "flagged cohorts" in printed and "model evaluations" in printed
    assert "ROAD" not in printed  # not requested
    doc = json.loads((out / "explanation_audit.json").read_text())
    assert doc["n_cases"] == 12
    assert doc["user_regions"] == {}
    # every check states how many cases it ran on, in one uniform way
    for method, rec in doc["methods"].items():
        sanity_line = f"{method}: sanity " + ("passes" if rec["sanity"]["passed"] else "FAILS")
        assert f"{sanity_line} ({doc['params']['sanity_cases']} cases)" in printed
        checks = rec["checks"]
        assert set(checks) == {
            "sanity",
            "faithfulness",
            "road",
            "localisation",
            "max_sensitivity",
            "shortcut",
            "trust",
            "agreement",
        }
        assert checks["sanity"]["n_cases"] == doc["params"]["sanity_cases"] == 8
        assert checks["max_sensitivity"]["n_cases"] == doc["params"]["sensitivity_cases"]
        for name in ("faithfulness", "trust", "agreement"):
            assert checks[name] == {
                "n_cases": 12,
                "cases": "every audited case",
                "computed": True,
            }
        assert checks["road"] == {"n_cases": 0, "cases": "every audited case", "computed": False}
        for name, check in checks.items():
            if rec.get(name) is not None and name != "agreement":
                assert rec[name]["n_cases"] == check["n_cases"], name
                assert rec[name]["cases"] == check["cases"], name
        assert rec["shortcut"]["n_cases"] + rec["shortcut"]["n_undefined"] == 12
        flags = flag_summary(rec["shortcut"]["flagged_cohorts"])
        assert f"flagged cohorts: {flags}; model evaluations" in printed
    assert set(doc["methods"]) == {"gradcam", "saliency"}
    grad = doc["methods"]["gradcam"]
    assert grad["evaluations"]["total"] > grad["evaluations"]["explain"] > 0
    assert len(grad["trust"]["cards"]) == 12
    assert all(c["label"] for c in grad["trust"]["cards"])
    # the criteria the cards were judged by are quoted in the record
    assert doc["trust_criteria"] == json.loads(json.dumps(TRUST_CRITERIA))
    assert grad["trust"]["criteria"]["faithfulness"]["threshold"] == FAITHFULNESS_MIN_GAP
    assert doc["params"]["trust_criteria"]["anatomy"]["reference_region"]
    for c in grad["trust"]["cards"]:
        assert c["faithfulness"] == (
            "pass" if c["faithfulness_gap"] >= FAITHFULNESS_MIN_GAP else "fail"
        )
        assert c["anatomy_region"] in ("lesion", "anatomy")
    assert grad["road"] is None  # off by default
    # lesion masks of the cohort reach the localisation check (positive cases only)
    assert 0 < grad["localisation"]["n_cases"] <= 12
    assert isinstance(grad["shortcut"]["examples"], list)
    for name in (
        "shortcut_examples_gradcam.csv",
        "trust_gradcam.csv",
        "sanity_saliency.csv",
        "deletion_insertion.png",
        "sanity.png",
        "cohort_share_gradcam.png",
    ):
        assert (out / name).stat().st_size > 0
    png = (out / "sanity.png").read_bytes()
    assert b"tEXt" not in png and b"iTXt" not in png


def test_audit_cli_user_region_and_road(cfg_path, tmp_path, capsys):
    import pandas as pd

    from medlens.cli import main

    out = tmp_path / "out"
    code = main(
        [
            "audit",
            "--config",
            str(cfg_path),
            "--out",
            str(out),
            "--methods",
            "gradcam",
            "--max-cases",
            "4",
            "--region",
            "ruler=0,54,64,64",
            "--region",
            "text=0,0,16,8",
            "--road",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "explanation_audit.json").read_text())
    assert doc["params"]["user_regions"] == ["ruler", "text"]
    grid = "original image pixels: x = column, y = row, 0-based; x0, y0 inclusive, x1, y1 exclusive"
    assert doc["user_regions"] == {
        "ruler": {"box": [0, 54, 64, 64], "grid": grid},
        "text": {"box": [0, 0, 16, 8], "grid": grid},
    }
    road = doc["methods"]["gradcam"]["road"]
    assert road["n_cases"] == 4 and len(road["morf_mean"]) == len(road["percentages"]) == 9
    assert doc["methods"]["gradcam"]["checks"]["road"]["n_cases"] == 4
    # ROAD per (case, removal fraction) as a CSV, agreeing with the JSON means
    table = pd.read_csv(out / "road_gradcam.csv")
    assert list(table.columns) == [
        "case",
        "target",
        "percentage",
        "original",
        "morf",
        "lerf",
        "lerf_minus_morf",
    ]
    assert len(table) == 4 * 9 and table["case"].nunique() == 4
    assert set(table["case"]) == {c["case"] for c in doc["methods"]["gradcam"]["trust"]["cards"]}
    means = table.groupby("percentage", sort=True)[["morf", "lerf"]].mean()
    np.testing.assert_allclose(means["morf"], road["morf_mean"], rtol=1e-12)
    np.testing.assert_allclose(means["lerf"], road["lerf_mean"], rtol=1e-12)
    diff = table.groupby("case")["lerf_minus_morf"].mean().mean()
    np.testing.assert_allclose(diff, road["lerf_minus_morf_mean"], rtol=1e-12)
    line = f"gradcam: ROAD LeRF - MoRF {road['lerf_minus_morf_mean']:.3f} (mean over 4 cases"
    assert line in printed and "removal fractions 0.1-0.9" in printed
    assert road["params"]["imputation"] == "noisy_linear"
    assert doc["methods"]["gradcam"]["evaluations"]["road"] == 4 + 4 * 2 * 9
    shares = pd.read_csv(out / "shares_gradcam.csv")
    assert {"ruler", "text"} <= set(shares.columns)
    assert shares[["ruler", "text"]].to_numpy().max() <= 1.0
    rates = pd.read_csv(out / "shortcut_case_rates_gradcam.csv")
    assert {"ruler", "text"} <= set(rates["region"])


def test_region_masks_follow_the_geometry():
    from medlens.commands.audit import _region_masks
    from medlens.model._preprocess import Geometry

    # a 4x8 original letterboxed into 8x8 (rows 2..5 hold the image)
    g = Geometry((4, 8), (8, 8), (4, 8), (1.0, 1.0), (2, 0), (2, 0), "letterbox")
    m = _region_masks({"text": (0, 0, 2, 1)}, [g], ["c1"])["text"][0]
    want = np.zeros((8, 8), bool)
    want[2, 0:2] = True
    np.testing.assert_array_equal(m, want)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("text", "expected NAME=x0,y0,x1,y1"),
        ("text=1,2,3", "expected NAME=x0,y0,x1,y1"),
        ("text=a,0,1,1", "expected NAME=x0,y0,x1,y1"),
        ("border=0,0,4,4", "built-in regions"),
        ("my text=0,0,4,4", "letters, digits"),
        ("text=5,0,4,4", "the box is empty"),
        ("text=4,0,4,4", "the box is empty"),
        ("text=0,-1,4,4", r"y0=-1 is negative; coordinates are 0-based pixel indices"),
        ("port=-5,0,40,12", r"--region port=-5,0,40,12: x0=-5 is negative"),
        ("text=0,0,4,-4", r"y1=-4 is negative"),
    ],
)
def test_parse_regions_errors(value, match):
    from medlens._errors import ConfigError
    from medlens.commands.audit import parse_regions

    with pytest.raises(ConfigError, match=match):
        parse_regions([value])


def test_parse_regions_ok_and_duplicate_and_outside_image(cfg_path, tmp_path, capsys):
    from medlens._errors import ConfigError
    from medlens.cli import main
    from medlens.commands.audit import parse_regions

    assert parse_regions([" text = 0, 0, 120 , 40"]) == {"text": (0, 0, 120, 40)}
    assert parse_regions([]) == {}
    with pytest.raises(ConfigError, match="given twice"):
        parse_regions(["a=0,0,1,1", "a=0,0,2,2"])
    args = ["audit", "--config", str(cfg_path), "--out", str(tmp_path / "o"), "--max-cases", "2"]
    assert main([*args, "--region", "ruler=0,0,65,10"]) == 2
    err = capsys.readouterr().err
    assert "reaches beyond case" in err and "64 x 64 pixels" in err
    assert main([*args, "--region", "ruler"]) == 2
    assert "expected NAME=x0,y0,x1,y1" in capsys.readouterr().err


def test_flag_summary_names_the_regions():
    from medlens.commands.audit import flag_summary

    flags = [
        ("site", "site_b", "corner_top_left", "case_rate"),
        ("site", "site_b", "port", "mean"),
        ("site", "site_b", "corner_top_left", "mean"),
        ("manufacturer", "Corvel Imaging", "corner_top_left", "case_rate"),
    ]
    assert flag_summary(flags) == (
        "site=site_b (corner_top_left, port), manufacturer=Corvel Imaging (corner_top_left)"
    )
    records = [dict(zip(("cohort", "value", "region", "rule"), f, strict=True)) for f in flags]
    assert flag_summary(records) == flag_summary(flags)
    assert flag_summary([]) == "none"
