"""`medlens explain`: files per case and method, in the scan's own grid; clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from medlens._demo import demo_config
from medlens._pipeline import load_cases
from medlens.cli import main
from medlens.io import read_image
from medlens.testing import make_synthetic_cohort


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    cohort = make_synthetic_cohort(root / "cohort", n_patients=12, image_size=96)
    cfg = demo_config(cohort=cohort)
    path = root / "cfg.yaml"
    dumped = cfg.model_dump(mode="json")
    dumped["output_dir"] = str(root / "out")
    path.write_text(yaml.safe_dump(dumped))
    table = load_cases(cfg).table
    return path, table, root


def test_explain_writes_overlay_map_and_sidecar_per_method(setup, capsys):
    cfg, table, root = setup
    case = table["case_id"].iloc[0]
    code = main(
        [
            "explain",
            "--config",
            str(cfg),
            "--case",
            case,
            "--methods",
            "gradcam,saliency",
            "--no-progress",
            "--seed",
            "3",
        ]
    )
    assert code == 0
    out = root / "out" / "explanations"
    scan = read_image(table["path"].iloc[0], window=(2048, 4096))
    for method in ("gradcam", "saliency"):
        amap = np.load(out / f"{case}_{method}.npy")
        assert amap.shape[-2:] == scan.pixels.shape  # back on the original 96x96 grid
        side = json.loads((out / f"{case}_{method}.json").read_text())
        assert side["method"] == method and side["seed"] == 3
        assert side["grid"] == "original" and side["target_names"] == ["lesion"]
        assert (out / f"{case}_{method}.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert sum(line.startswith(case) for line in printed.splitlines()) == 2
    assert "evaluations=" in printed


def test_unknown_case_and_method_are_clear_errors(setup, capsys):
    cfg, table, _ = setup
    assert (
        main(["explain", "--config", str(cfg), "--case", "case-nope", "--methods", "gradcam"]) == 2
    )
    err = capsys.readouterr().err
    assert "case id(s) not found: ['case-nope']" in err and "case_id column" in err
    case = table["case_id"].iloc[0]
    assert main(["explain", "--config", str(cfg), "--case", case, "--methods", "gradcm"]) == 2
    assert "did you mean 'gradcam'" in capsys.readouterr().err


def test_predictions_case_ids_are_the_ones_explain_accepts(setup, tmp_path):
    cfg, table, _ = setup
    assert (
        main(["predict", "--config", str(cfg), "--out", str(tmp_path / "p.csv"), "--no-progress"])
        == 0
    )
    ids = pd.read_csv(tmp_path / "p.csv")["case_id"]
    assert set(ids) == set(table["case_id"])
