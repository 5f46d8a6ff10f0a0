"""`medlens run` end to end on a tiny synthetic cohort, and `medlens report` re-rendering it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from pypdf import PdfReader

from medlens._errors import MedlensError
from medlens._run import run_pipeline, select_gallery
from medlens.cli import main

PLAN = {
    "version": 1,
    "intended_use": "Tiny end-to-end test cohort; not a clinical claim.",
    "analysis": {
        "bootstrap": {"replicates": 200, "seed": 0},
        "calibration": {"null_simulations": 100},
    },
    "primary_endpoints": [{"metric": "sensitivity", "operator": ">=", "goal": 0.5}],
}


@pytest.fixture(scope="module")
def run_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, str]:
    from medlens._demo import demo_config
    from medlens.testing import make_synthetic_cohort

    root = tmp_path_factory.mktemp("run")
    cohort = make_synthetic_cohort(root / "cohort", n_patients=90, image_size=64, seed=0)
    cfg = demo_config(cohort=cohort)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
    plan = root / "plan.yaml"
    plan.write_text(yaml.safe_dump(PLAN), encoding="utf-8")
    return root, cohort, str(plan)


@pytest.fixture(scope="module")
def ran(run_out) -> Path:  # noqa: ANN001
    root, cohort, plan = run_out
    out = root / "out"
    code = main(
        [
            "run",
            "--config",
            str(root / "config.yaml"),
            "--plan",
            plan,
            "--out",
            str(out),
            "--gallery",
            "1",
            "--methods",
            "gradcam,saliency",
            "--no-progress",
        ]
    )
    assert code == 0
    return out


def test_run_writes_bundle_and_reports(ran: Path) -> None:
    for name in (
        "predictions.csv",
        "report.pdf",
        "bundle/bundle.json",
        "bundle/evidence.json",
        "bundle/cases.json",
    ):
        assert (ran / name).is_file(), name
    cases = json.loads((ran / "bundle" / "cases.json").read_text())
    assert cases["gallery"], "the tiny cohort should still give a gallery"
    kinds = {g["kind"] for g in cases["gallery"]}
    assert kinds <= {"true positive", "false positive", "false negative"}
    for g in cases["gallery"]:
        assert [o["method"] for o in g["overlays"]] == ["gradcam", "saliency"]
        assert g["agreement"] is None or -1.0 <= g["agreement"] <= 1.0
        for o in g["overlays"]:
            assert (ran / "bundle" / o["file"]).is_file()
    assert (ran / "case_reports.pdf").is_file()
    ev = json.loads((ran / "bundle" / "evidence.json").read_text())
    pages = [p.extract_text() for p in PdfReader(str(ran / "report.pdf")).pages]
    assert len(pages) >= 8
    crit = ev["acceptance"]["criteria"][0]
    assert crit["name"] in pages[0]
    from medlens.reports._regulatory import fmt, fmt_ci

    assert fmt(crit["estimate"]) in pages[0]
    assert fmt_ci(crit["ci_low"], crit["ci_high"]) in pages[0]
    assert PLAN["intended_use"] in " ".join(pages[0].split())
    if shutil.which("qpdf"):
        for pdf in ("report.pdf", "case_reports.pdf"):
            done = subprocess.run(["qpdf", "--check", str(ran / pdf)], capture_output=True)
            assert done.returncode == 0, pdf


def test_report_rerenders_identical_bytes(ran: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "again.pdf"
    assert main(["report", "--evidence", str(ran / "bundle"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes() == (ran / "report.pdf").read_bytes()


def test_no_identifier_in_any_output(ran: Path, run_out) -> None:  # noqa: ANN001
    import pydicom

    from medlens.reports import markers_from_dataset, scan_for_identifiers

    _, cohort, _ = run_out
    markers: set[str] = set()
    for path in sorted(Path(cohort.dicom_dir).rglob("*.dcm"))[:40]:
        markers.update(markers_from_dataset(pydicom.dcmread(path, stop_before_pixels=True)))
    markers.update(s.institution for s in cohort.sites)
    # the pseudonymisation salt is a secret: with it the keys can be re-linked to patients
    from medlens._demo import demo_config

    markers.add(demo_config().data.pseudonym_salt)
    # PDFs compress their text: check the extracted text as well as the raw bytes
    text_dump = ran.parent / "pdf_text"
    text_dump.mkdir(exist_ok=True)
    for pdf in ("report.pdf", "case_reports.pdf"):
        text = "\n".join(p.extract_text() for p in PdfReader(str(ran / pdf)).pages)
        (text_dump / f"{pdf}.txt").write_text(text, encoding="utf-8")
    findings = scan_for_identifiers([ran, text_dump], sorted(markers))
    assert findings == []


def test_run_pipeline_bad_input(run_out, tmp_path: Path) -> None:  # noqa: ANN001
    from medlens._demo import demo_config

    root, cohort, plan = run_out
    cfg = demo_config(cohort=cohort)
    with pytest.raises(MedlensError, match="'cfg' parameter of run_pipeline"):
        run_pipeline({"model": {}}, plan, tmp_path)
    with pytest.raises(MedlensError, match="'gallery' parameter of run_pipeline"):
        run_pipeline(cfg, plan, tmp_path, gallery=-1)
    with pytest.raises(MedlensError, match="analysis plan not found"):
        run_pipeline(cfg, tmp_path / "missing.yaml", tmp_path)
    assert main(["report", "--evidence", str(tmp_path), "--out", str(tmp_path / "r.pdf")]) == 2


def test_select_gallery_picks_extremes() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    s = np.array([0.9, 0.95, 0.2, 0.8, 0.1, 0.99, 0.05, np.nan])
    picks = select_gallery(y, s, threshold=0.5, per_kind=2)
    assert picks == [
        (1, "true positive"),
        (0, "true positive"),
        (5, "false positive"),
        (3, "false positive"),
        (6, "false negative"),
        (2, "false negative"),
    ]
    assert select_gallery(y, s, threshold=0.5, per_kind=0) == []
    with pytest.raises(MedlensError, match="'per_kind' parameter of select_gallery"):
        select_gallery(y, s, threshold=0.5, per_kind=-1)


def test_two_runs_give_identical_bytes(run_out, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """Same inputs, same bytes: JSON bundle and both PDFs (the date comes from
    SOURCE_DATE_EPOCH when it is set, as in reproducible builds)."""
    root, _, plan = run_out
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # 2023-11-14T22:13:20Z
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        args = ["run", "--config", str(root / "config.yaml"), "--plan", plan, "--out", str(out)]
        assert main([*args, "--gallery", "1", "--methods", "gradcam", "--no-progress"]) == 0
        outs.append(out)
    for part in (
        "report.pdf",
        "case_reports.pdf",
        "predictions.csv",
        "bundle/bundle.json",
        "bundle/evidence.json",
        "bundle/cases.json",
    ):
        assert (outs[0] / part).read_bytes() == (outs[1] / part).read_bytes(), part
    assert "2023-11-14T22:13:20Z" in (outs[0] / "bundle/bundle.json").read_text()
