"""``medlens demo`` end to end, pseudonymisation of its outputs, the packaged demo models."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml
from sklearn.metrics import roc_auc_score

import medlens.testing
from medlens import MedlensError
from medlens._demo import (
    AUC_UNDEFINED,
    PREDICTION_COLUMNS,
    demo_config,
    demo_model_path,
    run_demo,
)
from medlens._pipeline import load_cases, read_images
from medlens._run import TRUST_FROM_AUDIT, TRUST_FROM_GALLERY
from medlens.cli import main
from medlens.config import load_config
from medlens.model import load_model
from medlens.testing import make_synthetic_cohort

ROOT = Path(__file__).resolve().parents[1]


def _identifiers(dicom_dir: Path) -> set[str]:
    """Every identifier planted in the headers, and the parts of the names."""
    found: set[str] = set()
    for path in sorted(dicom_dir.iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for kw in (
            "PatientID",
            "AccessionNumber",
            "PatientBirthDate",
            "StudyInstanceUID",
            "SOPInstanceUID",
            "SeriesInstanceUID",
            "InstitutionAddress",
        ):
            found.add(str(ds.get(kw)))
        birth = str(ds.PatientBirthDate)
        found.add(f"{birth[:4]}-{birth[4:6]}-{birth[6:]}")
        for name in (ds.PatientName, ds.ReferringPhysicianName):
            found.add(str(name))
            found.update(part for part in str(name).split("^") if len(part) > 1)
    return found


def _leaks(text: str, identifiers: set[str]) -> list[str]:
    tokens = set(re.split(r"[^0-9A-Za-z.\-]+", text)) | set(re.split(r"[^0-9A-Za-z]+", text))
    lowered = text.lower()
    return sorted(
        i
        for i in identifiers
        if i in tokens or (not i.isdigit() and len(i) > 3 and i.lower() in lowered)
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    capture = {}

    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["demo", "--out", str(out), "--n-patients", "40", "--image-size", "64"])
    capture.update(code=code, out=stdout.getvalue(), err=stderr.getvalue())
    return out, capture


def test_demo_writes_predictions_for_the_test_split(demo_run):
    out, cap = demo_run
    assert cap["code"] == 0, cap["err"]
    pred = pd.read_csv(out / "predictions.csv")
    gt = pd.read_csv(out / "cohort" / "ground_truth.csv")
    assert tuple(pred.columns) == PREDICTION_COLUMNS
    assert (pred["split"] == "test").all()
    assert sorted(pred["path"]) == sorted("cohort/" + gt.loc[gt["split"] == "test", "path"])
    merged = pred.merge(gt.assign(path="cohort/" + gt["path"]), on="path")
    assert (merged["label_x"] == merged["label_y"]).all()
    assert pred["score"].between(0, 1).all()
    assert pred["case_id"].is_unique
    assert set(pred["site"]) <= {"site_a", "site_b", "site_c", "site_d"}
    assert pred["patient_key"].str.fullmatch(r"p-[0-9a-f]{16}").all()
    manifest = pd.read_csv(out / "manifest.csv")
    assert len(manifest) == len(gt)
    assert pd.read_csv(out / "skipped.csv").empty
    # the printed summary says where everything is, with the model's SHA-256
    sha = hashlib.sha256(demo_model_path().read_bytes()).hexdigest()
    for needle in ("predictions.csv", "manifest.csv", str(out / "cohort"), sha, "test AUC"):
        assert needle in cap["out"]
    auc = roc_auc_score(pred["label"], pred["score"])
    assert f"test AUC     {auc:.3f}" in cap["out"]
    # the full job: explanation audit, validation against the packaged plan, PDF reports
    for produced in (
        "audit/explanation_audit.json",
        "run/bundle/evidence.json",
        "run/report.pdf",
        "run/case_reports.pdf",
    ):
        assert (out / produced).is_file(), produced
    assert f"report       {out / 'run' / 'report.pdf'}" in cap["out"]
    assert "verdict      " in cap["out"] and "shortcut flags:" in cap["out"]
    trust = json.loads((out / "audit" / "explanation_audit.json").read_text())["methods"]
    trust = trust["gradcam"]["trust"]
    assert f"trusted maps gradcam {trust['n_trusted']}/{trust['n_cases']} " in cap["out"]
    # gallery maps carry the trust card of the audit (which covers every test case with
    # Grad-CAM); methods the audit did not run get the gallery's own trust check
    gallery = json.loads((out / "run" / "bundle" / "cases.json").read_text())["gallery"]
    overlays = [o for case in gallery for o in case["overlays"]]
    assert overlays
    for o in overlays:
        assert o["trusted"] in (True, False)
        assert o["trust_label"].startswith(("passed", "FAILED"))
        assert o["trust_source"] == (
            TRUST_FROM_AUDIT if o["method"] == "gradcam" else TRUST_FROM_GALLERY
        )
    # provenance: the data set is hashed, and paths are relative to the demo folder
    prov = json.loads((out / "run" / "bundle" / "bundle.json").read_text())["provenance"]
    assert re.fullmatch(r"[0-9a-f]{64}", prov["sha256"]["dataset"])
    assert re.fullmatch(r"[0-9a-f]{64}", prov["sha256"]["labels"])
    assert not Path(prov["config"]["data"]["dicom_dir"]).is_absolute()
    assert prov["config"]["output_dir"] == "."
    assert str(out.resolve()) not in (out / "run" / "bundle" / "bundle.json").read_text()


def test_demo_scores_equal_a_direct_prediction(demo_run):
    """The CSV holds what the model gives for those files, in the same rows."""
    out, _ = demo_run
    pred = pd.read_csv(out / "predictions.csv")
    cfg = load_config(out / "config.yaml")
    model = load_model(cfg.model, preprocess=cfg.preprocess)
    images, failed = read_images([str(out / p) for p in pred["path"]], cfg)
    assert not failed
    assert (pred["status"] == "ok").all()
    np.testing.assert_allclose(model.predict(images).positive_score, pred["score"], rtol=1e-12)


def test_no_identifier_reaches_outputs_or_console(demo_run):
    out, cap = demo_run
    identifiers = _identifiers(out / "cohort" / "dicom")
    assert len(identifiers) > 100
    texts = {
        name: (out / name).read_text()
        for name in (
            "predictions.csv",
            "manifest.csv",
            "skipped.csv",
            "config.yaml",
            "audit/explanation_audit.json",
            "run/bundle/evidence.json",
            "run/bundle/cases.json",
            "run/bundle/bundle.json",
        )
    }
    texts["stdout"], texts["stderr"] = cap["out"], cap["err"]
    for name, text in texts.items():
        assert _leaks(text, identifiers) == [], name
    # the check itself finds an identifier when there is one
    planted = sorted(i for i in identifiers if i.startswith("MRN"))[0]
    assert _leaks(f"x,{planted},y", identifiers) == [planted]


def test_demo_without_shortcut_uses_the_clean_model(tmp_path, capsys):
    code = main(
        [
            "demo",
            "--out",
            str(tmp_path / "o"),
            "--n-patients",
            "20",
            "--image-size",
            "64",
            "--no-shortcut",
            "--no-progress",
            "--seed",
            "4",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "demo_model_noshortcut.pt" in out and "none (clean cohort)" in out
    gt = pd.read_csv(tmp_path / "o" / "cohort" / "ground_truth.csv")
    assert (gt["shortcut_present"] == 0).all()


def test_demo_runs_from_any_folder_with_a_relative_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert (
        main(["demo", "--out", "rel", "--n-patients", "10", "--image-size", "32", "--no-progress"])
        == 0
    )
    assert (tmp_path / "rel" / "predictions.csv").is_file()


def test_unreadable_files_are_listed_and_skipped(tmp_path, monkeypatch, capsys):
    original = medlens.testing.make_synthetic_cohort

    def damaged(out_dir, **kwargs):
        cohort = original(out_dir, **kwargs)
        gt = pd.read_csv(cohort.ground_truth)
        victim = cohort.root / gt.loc[gt["split"] == "test", "path"].iloc[0]
        victim.write_bytes(victim.read_bytes()[:-500])  # truncated pixel data
        (cohort.dicom_dir / "notes.txt").write_text("not an image")
        return cohort

    monkeypatch.setattr(medlens.testing, "make_synthetic_cohort", damaged)
    out = tmp_path / "o"
    assert (
        main(
            ["demo", "--out", str(out), "--n-patients", "20", "--image-size", "64", "--no-progress"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    # a stray non-image is skipped (it is not a case); the damaged test image stays a
    # case with status 'failed' and its reason, so validation can count it
    skipped = pd.read_csv(out / "skipped.csv")
    assert [Path(p).name for p in skipped["path"]] == ["notes.txt"]
    assert skipped["reason"].str.len().min() > 10
    assert "(1 file(s))" in printed and "notes.txt:" in printed
    gt = pd.read_csv(out / "cohort" / "ground_truth.csv")
    pred = pd.read_csv(out / "predictions.csv")
    assert len(pred) == (gt["split"] == "test").sum()
    failed = pred[pred["status"] == "failed"]
    assert len(failed) == 1 and failed["score"].isna().all()
    assert "truncat" in failed["failure_reason"].iloc[0].lower()
    assert "1 failed to read" in printed and "failed: " in printed


def test_demo_with_one_class_in_test_reports_an_undefined_auc(tmp_path):
    import io

    stream = io.StringIO()
    result = run_demo(tmp_path / "o", n_patients=30, image_size=32, progress=False, stream=stream)
    labels = pd.read_csv(result.predictions_csv)["label"]
    assert labels.nunique() == 1  # seed 0, 30 patients: a test split of one class
    assert np.isnan(result.test_auc)
    assert AUC_UNDEFINED.format(n=len(labels)) in stream.getvalue()


def test_demo_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "medlens demo: error:" in err and "not empty" in err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_patients": 0}, "'n_patients' parameter of run_demo must be an int >= 1"),
        ({"seed": -2}, "'seed' parameter of run_demo must be an int >= 0"),
        ({"image_size": 8}, "'image_size' parameter of run_demo must be an int >= 32"),
    ],
)
def test_run_demo_bad_parameters(tmp_path, kwargs, match):
    with pytest.raises(MedlensError, match=match):
        run_demo(tmp_path / "x", progress=False, **kwargs)


def test_example_config_matches_the_packaged_one():
    example = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    packaged = yaml.safe_load((ROOT / "medlens" / "data" / "demo.yaml").read_text())
    for section in (example, packaged):
        section["data"].pop("dicom_dir")
        section["model"].pop("path")
        section.pop("output_dir")
    assert example == packaged
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    assert cfg.model.path.resolve() == demo_model_path().resolve()


@pytest.mark.parametrize("shortcut", [True, False], ids=["shortcut", "noshortcut"])
def test_packaged_checkpoint_and_sidecar(shortcut):
    ckpt = demo_model_path(shortcut=shortcut)
    sidecar = json.loads(ckpt.with_suffix(".json").read_text())
    assert ckpt.stat().st_size < 100_000
    assert sidecar["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert sidecar["trained_with_shortcut"] is shortcut
    assert sidecar["command"].startswith("python scripts/train_demo_model.py")
    cfg = demo_config(shortcut=shortcut)
    assert sidecar["kwargs"] == cfg.model.kwargs
    assert sidecar["preprocess"] == cfg.preprocess.model_dump(mode="json")


@pytest.fixture(scope="module")
def training_cohorts(tmp_path_factory):
    """The cohorts the packaged models were trained on (same seed and size)."""
    meta = json.loads(demo_model_path().with_suffix(".json").read_text())["cohort"]
    root = tmp_path_factory.mktemp("train")
    out = {}
    for flag in (True, False):
        cohort = make_synthetic_cohort(
            root / str(flag),
            n_patients=meta["n_patients"],
            image_size=meta["image_size"],
            seed=meta["seed"],
            shortcut=flag,
        )
        cfg = demo_config(cohort=cohort)
        cases = load_cases(cfg)
        assert not cases.skipped
        assert (cases.table["status"] == "ok").all()
        table = cases.table
        test = table[table["split"] == "test"].reset_index(drop=True)
        images, failed = read_images(list(test["path"]), cfg)
        assert not failed
        out[flag] = (test, images)
    return out


@pytest.mark.parametrize("shortcut", [True, False], ids=["shortcut", "noshortcut"])
def test_packaged_models_reach_the_recorded_test_auc(training_cohorts, shortcut):
    cfg = demo_config(shortcut=shortcut)
    sidecar = json.loads(demo_model_path(shortcut=shortcut).with_suffix(".json").read_text())
    model = load_model(cfg.model, preprocess=cfg.preprocess)
    for flag, key in ((True, "on_shortcut_cohort"), (False, "on_clean_cohort")):
        test, images = training_cohorts[flag]
        score = model.predict(images).positive_score
        auc = roc_auc_score(test["label"], score)
        assert auc > 0.8
        assert auc == pytest.approx(sidecar["metrics"][key]["test_auc"], abs=2e-4)


def test_shortcut_model_relies_on_the_marker(training_cohorts):
    """At the shortcut site, removing the token costs the shortcut model more AUC."""
    drops = {}
    for shortcut in (True, False):
        cfg = demo_config(shortcut=shortcut)
        model = load_model(cfg.model, preprocess=cfg.preprocess)
        aucs = []
        for flag in (True, False):
            test, images = training_cohorts[flag]
            at_site = (test["site"] == "site_b").to_numpy()
            score = model.predict([im for im, s in zip(images, at_site, strict=True) if s])
            aucs.append(roc_auc_score(test.loc[at_site, "label"], score.positive_score))
        drops[shortcut] = aucs[0] - aucs[1]
    assert drops[True] > 0.1  # recorded: 0.173 (0.975 -> 0.802)
    assert abs(drops[False]) < 0.05  # recorded: 0.002
    assert drops[True] > drops[False] + 0.1
