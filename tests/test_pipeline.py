"""Cases from a config (folder + labels, or manifest) and `medlens predict`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medlens import InputDataError
from medlens._demo import demo_config
from medlens._pipeline import load_cases, predict_cases, select_split
from medlens.cli import main
from medlens.model import load_model
from medlens.testing import make_synthetic_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_synthetic_cohort(
        tmp_path_factory.mktemp("c") / "cohort", n_patients=20, image_size=64
    )


def _write_config(tmp_path: Path, cohort, **data) -> Path:
    cfg = demo_config(cohort=cohort).model_dump(mode="json")
    cfg["data"].update({k: str(v) if isinstance(v, Path) else v for k, v in data.items()})
    cfg["output_dir"] = str(tmp_path / "out")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_labels_are_joined_by_path_with_masks_resolved(cohort):
    cases = load_cases(demo_config(cohort=cohort))
    gt = pd.read_csv(cohort.ground_truth)
    assert len(cases.table) == len(gt)
    assert (cases.table["status"] == "ok").all()
    assert cases.table["failure_reason"].isna().all()
    row = cases.table.iloc[0]
    assert Path(row["lesion_mask"]).is_absolute() and Path(row["lesion_mask"]).is_file()
    by_path = gt.assign(path=[str((cohort.root / p).resolve()) for p in gt["path"]]).set_index(
        "path"
    )
    assert (cases.table.set_index("path")["label"] == by_path["label"]).all()
    assert set(cases.table["site"]) == {s.code for s in cohort.sites}


def test_a_labelled_file_that_is_missing_becomes_a_failed_case(cohort, tmp_path):
    gt = pd.read_csv(cohort.ground_truth)
    extra = pd.DataFrame([{**gt.iloc[0].to_dict(), "path": "dicom/not_there.dcm"}])
    labels = cohort.root / "labels_extra.csv"
    pd.concat([gt, extra]).to_csv(labels, index=False)
    cfg = demo_config(cohort=cohort)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"labels": labels})})
    table = load_cases(cfg).table
    failed = table[table["status"] == "failed"]
    assert len(failed) == 1 and failed["path"].iloc[0].endswith("not_there.dcm")
    assert "labels file" in failed["failure_reason"].iloc[0]
    labels.unlink()


def test_labels_errors_name_the_file_and_columns(cohort, tmp_path):
    bad = tmp_path / "labels.csv"
    pd.DataFrame({"file": ["a"], "label": [1]}).to_csv(bad, index=False)
    cfg = demo_config(cohort=cohort)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"labels": bad})})
    with pytest.raises(
        InputDataError,
        match=r"labels.csv: missing column\(s\) \['path'\]; the file has: \['file', 'label'\]",
    ):
        load_cases(cfg)


def test_select_split_errors(cohort):
    cfg = demo_config(cohort=cohort)
    table = load_cases(cfg).table
    with pytest.raises(
        InputDataError,
        match=r"no case in split 'validation'; the splits present are: \['test', 'train', 'tune'\]",
    ):
        select_split(table, cfg, "validation")
    assert len(select_split(table, cfg, None)) == len(table)


def test_predict_cases_keeps_unreadable_rows(cohort, tmp_path):
    cfg = demo_config(cohort=cohort)
    table = select_split(load_cases(cfg).table, cfg, "test")
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(Path(table["path"].iloc[0]).read_bytes()[:-300])
    table.loc[0, "path"] = str(broken)
    model = load_model(cfg.model, preprocess=cfg.preprocess)
    scored, images = predict_cases(table, cfg, model)
    assert scored.loc[0, "status"] == "failed" and np.isnan(scored.loc[0, "score"])
    assert images[0] is None and all(im is not None for im in images[1:])
    direct = model.predict(images[1:]).positive_score
    np.testing.assert_array_equal(scored["score"].to_numpy()[1:], direct)


def test_predict_command_writes_a_table_without_paths(cohort, tmp_path, capsys):
    cfg = _write_config(tmp_path, cohort)
    assert main(["predict", "--config", str(cfg), "--split", "test", "--no-progress"]) == 0
    pred = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(pred.columns[:6]) == [
        "case_id",
        "patient_key",
        "study_key",
        "split",
        "label",
        "score",
    ]
    assert list(pred.columns[-2:]) == ["status", "failure_reason"]
    assert not any(c == "path" or c.endswith("_mask") for c in pred.columns)
    assert (pred["split"] == "test").all() and pred["score"].between(0, 1).all()
    printed = capsys.readouterr().out
    assert "0 failed to read" in printed
    assert (
        main(
            [
                "predict",
                "--config",
                str(cfg),
                "--include-paths",
                "--out",
                str(tmp_path / "p.csv"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "path" in pd.read_csv(tmp_path / "p.csv").columns


def test_predict_command_bad_config_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("seed: 0\nmodel: {format: onnx}\n")
    assert main(["predict", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medlens predict: error: ") and "Traceback" not in err


def _copy_cohort(cohort, tmp_path: Path):
    import shutil

    root = tmp_path / "cohort"
    shutil.copytree(cohort.root, root)
    cfg = demo_config(cohort=cohort).model_dump(mode="json")
    cfg["data"]["dicom_dir"] = str(root / "dicom")
    cfg["data"]["labels"] = str(root / Path(cohort.ground_truth).name)
    cfg["output_dir"] = str(tmp_path / "out")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return root, path


def test_failed_cases_keep_their_keys_and_cohort(cohort, tmp_path):
    """A duplicate SOP Instance UID (header readable) keeps the header's keys and cohort
    with a case id of its own; an unreadable header gets a path key and an explicit
    unknown patient; `medlens validate` counts both instead of refusing the table."""
    from medlens._pipeline import UNKNOWN_KEY
    from medlens.config import load_config
    from medlens.io import pseudonymize

    root, cfg_path = _copy_cohort(cohort, tmp_path)
    gt = pd.read_csv(cohort.ground_truth)
    test_paths = sorted(gt.loc[gt["split"] == "test", "path"])
    dup_src, dup_dst, garbled = (root / p for p in test_paths[:3])
    reference = load_cases(load_config(cfg_path)).table.set_index("path")
    dup_dst.write_bytes(dup_src.read_bytes())
    garbled.write_bytes(b"not a DICOM file at all")
    cfg = load_config(cfg_path)
    table = load_cases(cfg).table.set_index("path")
    assert table["case_id"].is_unique

    dup = table.loc[str(dup_dst.resolve())]
    assert dup["status"] == "failed"
    assert dup["failure_reason"].startswith("duplicate SOP Instance UID")
    original = reference.loc[str(dup_src.resolve())]
    for col in ("patient_key", "study_key", "site", "manufacturer", "sex", "age_band"):
        assert dup[col] == original[col], col
    rel = dup_dst.resolve().relative_to((root / "dicom").resolve()).as_posix()
    assert dup["case_id"] == pseudonymize(rel, salt=cfg.data.pseudonym_salt, prefix="case-")

    bad = table.loc[str(garbled.resolve())]
    rel = garbled.resolve().relative_to((root / "dicom").resolve()).as_posix()
    key = pseudonymize(rel, salt=cfg.data.pseudonym_salt, prefix="case-")
    assert bad["status"] == "failed" and bad["case_id"] == key
    assert bad["patient_key"] == f"{UNKNOWN_KEY}-{key.removeprefix('case-')}"
    assert bad["site"] == "missing" and bad["split"] == "test"

    pred = tmp_path / "pj.csv"
    args = ["predict", "--config", str(cfg_path), "--split", "test", "--no-progress"]
    assert main([*args, "--out", str(pred)]) == 0
    out = pd.read_csv(pred)
    failed = out[out["status"] == "failed"]
    assert len(failed) == 2
    assert failed[["case_id", "patient_key", "study_key", "site"]].notna().all().all()
    assert out["case_id"].is_unique
    plan = Path(__file__).resolve().parents[1] / "configs" / "plan.yaml"
    code = main(["validate", str(pred), "--plan", str(plan), "--out", str(tmp_path / "v")])
    assert code == 0
    import json

    ev = json.loads((tmp_path / "v" / "evidence.json").read_text())
    assert ev["failed_cases"]["n_failed"] == 2


def test_scan_keeps_header_rows_of_skipped_files(tmp_path):
    from medlens.io import scan_dicom_folder

    cohort = make_synthetic_cohort(tmp_path / "c", n_patients=2, image_size=32)
    files = sorted((cohort.root / "dicom").rglob("*.dcm"))
    copy = files[0].with_name("zz_copy.dcm")
    copy.write_bytes(files[0].read_bytes())
    manifest = scan_dicom_folder(cohort.root / "dicom", salt="s" * 8)
    assert [Path(s.path).name for s in manifest.skipped] == ["zz_copy.dcm"]
    row = manifest.skipped_headers[str(copy.resolve())]
    kept = manifest.table.set_index("path").loc[str(files[0].resolve())]
    assert row["patient_key"] == kept["patient_key"] and row["case_id"] != kept["case_id"]
    assert row["case_id"].startswith("case-")


def test_case_masks_reads_each_case_or_says_which_file_is_wrong(cohort, tmp_path):
    from medlens._pipeline import case_mask, case_masks
    from medlens.io import read_image
    from medlens.xai import mask_to_input

    cfg = demo_config(cohort=cohort)
    table = load_cases(cfg).table.iloc[:3].reset_index(drop=True)
    model = load_model(cfg.model, preprocess=cfg.preprocess)
    _, geoms = model.preprocess.batch([read_image(p) for p in table["path"]])
    table.loc[1, "lesion_mask"] = np.nan  # a case without a mask
    got = case_masks(table, "lesion_mask", geoms)
    assert got[1] is None
    for i in (0, 2):
        want = mask_to_input(np.load(table.at[i, "lesion_mask"]), geoms[i])
        np.testing.assert_array_equal(got[i], want)
    assert case_masks(table.drop(columns="lesion_mask"), "lesion_mask", geoms) is None
    assert case_masks(table.assign(lesion_mask=np.nan), "lesion_mask", geoms) is None

    case = table.at[0, "case_id"]
    kw = {"case": case, "column": "lesion_mask"}
    missing = str(tmp_path / "nope.npy")
    with pytest.raises(InputDataError, match=r"nope\.npy.*does not exist") as err:
        case_mask(missing, geoms[0], **kw)
    assert case in str(err.value) and "'lesion_mask'" in str(err.value)
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not a numpy file")
    with pytest.raises(InputDataError, match=r"bad\.npy.*cannot be read"):
        case_mask(str(bad), geoms[0], **kw)
    small = tmp_path / "small.npy"
    np.save(small, np.zeros((3, 3), bool))
    with pytest.raises(InputDataError, match=r"has shape \(3, 3\); expected .* shape \(64, 64\)"):
        case_mask(str(small), geoms[0], **kw)
