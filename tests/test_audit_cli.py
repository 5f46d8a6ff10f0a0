"""``medlens audit`` end to end on a small shortcut cohort."""

from __future__ import annotations

import json

import yaml


def test_audit_cli_writes_json_csv_png(tmp_path, capsys):
    from medlens._demo import demo_config
    from medlens.cli import main
    from medlens.testing import make_synthetic_cohort

    cohort = make_synthetic_cohort(tmp_path / "c", n_patients=60, image_size=64, seed=1)
    cfg = demo_config(shortcut=True, cohort=cohort)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
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
    doc = json.loads((out / "explanation_audit.json").read_text())
    assert doc["n_cases"] == 12
    assert set(doc["methods"]) == {"gradcam", "saliency"}
    grad = doc["methods"]["gradcam"]
    assert grad["evaluations"]["total"] > grad["evaluations"]["explain"] > 0
    assert len(grad["trust"]["cards"]) == 12
    assert all(c["label"] for c in grad["trust"]["cards"])
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
