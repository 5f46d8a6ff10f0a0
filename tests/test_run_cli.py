"""`medlens run` end to end on a tiny synthetic cohort, and `medlens report` re-rendering it."""

from __future__ import annotations

import io
import json
import re
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
    for name in ("cache", "include_identifiers", "dicom_sc"):
        with pytest.raises(MedlensError, match=f"'{name}' parameter of run_pipeline"):
            run_pipeline(cfg, plan, tmp_path, **{name: "yes"})
    with pytest.raises(MedlensError, match="'audit_methods' parameter of run_pipeline"):
        run_pipeline(cfg, plan, tmp_path, audit_methods="gradcam")
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


OUTPUTS = (
    "report.pdf",
    "case_reports.pdf",
    "predictions.csv",
    "bundle/bundle.json",
    "bundle/evidence.json",
    "bundle/cases.json",
)
EPOCH = "1700000000"  # 2023-11-14T22:13:20Z


def _args(root: Path, plan: str, out: Path, *extra: str) -> list[str]:
    return [
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
        *extra,
    ]


@pytest.fixture(scope="module")
def primed(run_out) -> Path:  # noqa: ANN001
    """One run with a fixed date (SOURCE_DATE_EPOCH) whose folder and cache tests copy."""
    import os

    root, _, plan = run_out
    out = root / "primed"
    old = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = EPOCH
    try:
        assert main(_args(root, plan, out)) == 0
    finally:
        if old is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = old
    return out


@pytest.fixture
def counted(monkeypatch) -> dict[str, int]:  # noqa: ANN001
    """Count executions of the heavy steps of run_pipeline."""
    import medlens._run as run_mod

    counts = {"predict": 0, "validate": 0, "explain": 0}
    for name, fn in (
        ("predict", "predict_cases"),
        ("validate", "_validate"),
        ("explain", "_explain_maps"),
    ):
        original = getattr(run_mod, fn)

        def wrapper(*a, _name=name, _orig=original, **k):  # noqa: ANN002, ANN003, ANN202
            counts[_name] += 1
            return _orig(*a, **k)

        monkeypatch.setattr(run_mod, fn, wrapper)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    return counts


def _copy(primed: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(primed, out)
    return out


def _same_outputs(a: Path, b: Path) -> None:
    for part in OUTPUTS:
        assert (a / part).read_bytes() == (b / part).read_bytes(), part
    gallery = sorted(p.name for p in (a / "bundle" / "gallery").iterdir())
    assert gallery == sorted(p.name for p in (b / "bundle" / "gallery").iterdir())
    for name in gallery:
        assert (a / "bundle/gallery" / name).read_bytes() == (
            b / "bundle/gallery" / name
        ).read_bytes()


def test_gallery_chunks_do_not_depend_on_timing(run_out, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """The gallery runs in the config's batch size: no probe times the machine, so the maps
    (and the evidence) cannot change with the load on it."""
    from medlens.xai import _chunking

    timed = []
    monkeypatch.setattr(_chunking, "_seconds", lambda *a: timed.append(a) or 1.0)
    monkeypatch.setattr(_chunking, "_seconds_grad", lambda *a: timed.append(a) or 1.0)
    _chunking.clear_chunk_cache()
    root, _, plan = run_out
    args = _args(root, plan, tmp_path / "o")
    args[args.index("--methods") + 1] = "saliency,integrated_gradients"
    assert main([*args, "--no-cache"]) == 0
    assert timed == []


def test_two_runs_give_identical_bytes(run_out, primed, tmp_path, counted) -> None:  # noqa: ANN001
    """Same inputs, same bytes: JSON bundle and both PDFs (the date comes from
    SOURCE_DATE_EPOCH when it is set, as in reproducible builds)."""
    root, _, plan = run_out
    out = tmp_path / "fresh"
    assert main(_args(root, plan, out)) == 0
    assert counted == {"predict": 1, "validate": 1, "explain": 1}
    _same_outputs(primed, out)
    assert "2023-11-14T22:13:20Z" in (out / "bundle/bundle.json").read_text()


def test_rerun_skips_cached_steps_and_gives_identical_bytes(
    run_out, primed, tmp_path, counted, capsys
) -> None:  # noqa: ANN001
    root, _, plan = run_out
    out = _copy(primed, tmp_path)
    assert main(_args(root, plan, out)) == 0
    assert counted == {"predict": 0, "validate": 0, "explain": 0}
    err = capsys.readouterr().err
    for stage in ("predictions", "validation", "gallery"):
        m = re.search(
            rf"^{stage}: cached \(cache key ([0-9a-f]{{12}}), content SHA-256 ([0-9a-f]{{12}})\)$",
            err,
            re.M,
        )
        assert m, stage
        # the printed key names the cache entry; the content hash is that entry's bytes
        (entry,) = [p for p in (out / ".cache").glob(f"{stage}-{m[1]}*") if p.suffix != ".sha256"]
        assert (out / ".cache" / (entry.name + ".sha256")).read_text().startswith(m[2])
    _same_outputs(primed, out)


def test_no_cache_recomputes_everything(run_out, primed, tmp_path, counted, capsys) -> None:  # noqa: ANN001
    root, _, plan = run_out
    out = _copy(primed, tmp_path)
    assert main(_args(root, plan, out, "--no-cache")) == 0
    assert counted == {"predict": 1, "validate": 1, "explain": 1}
    assert "predictions: recomputed (--no-cache)" in capsys.readouterr().err
    _same_outputs(primed, out)


def test_changed_plan_recomputes_validation_only(run_out, primed, tmp_path, counted) -> None:  # noqa: ANN001
    root, _, _ = run_out
    plan2 = tmp_path / "plan2.yaml"
    changed = {
        **PLAN,
        "primary_endpoints": [{"metric": "sensitivity", "operator": ">=", "goal": 0.6}],
    }
    plan2.write_text(yaml.safe_dump(changed), encoding="utf-8")
    out = _copy(primed, tmp_path)
    assert main(_args(root, str(plan2), out)) == 0
    assert counted == {"predict": 0, "validate": 1, "explain": 0}
    ev = json.loads((out / "bundle/evidence.json").read_text())
    assert ev["acceptance"]["criteria"][0]["goal"] == 0.6
    assert (out / "predictions.csv").read_bytes() == (primed / "predictions.csv").read_bytes()


def test_damaged_cache_entries_are_recomputed_with_a_warning(
    run_out, primed, tmp_path, counted
) -> None:  # noqa: ANN001
    from medlens._run import CACHE_DIR, CacheWarning

    root, _, plan = run_out
    out = _copy(primed, tmp_path)
    cache = out / CACHE_DIR
    (pred,) = cache.glob("predictions-*.csv")
    data = bytearray(pred.read_bytes())
    data[-3] = ord("9") if data[-3] != ord("9") else ord("8")  # one byte changed
    pred.write_bytes(bytes(data))
    (gal,) = cache.glob("gallery-*.npz")
    gal.with_name(gal.name + ".sha256").unlink()  # as if interrupted between the two writes
    with pytest.warns(CacheWarning) as caught:
        assert main(_args(root, plan, out)) == 0
    texts = " | ".join(str(w.message) for w in caught)
    assert "is damaged" in texts and pred.name in texts
    assert "no readable checksum" in texts and gal.name in texts
    assert counted == {"predict": 1, "validate": 0, "explain": 1}
    _same_outputs(primed, out)
    # the damaged entries were replaced by good ones: the next run uses them silently
    counted.update(predict=0, validate=0, explain=0)
    assert main(_args(root, plan, out)) == 0
    assert counted == {"predict": 0, "validate": 0, "explain": 0}


def test_cache_key_depends_on_every_ingredient() -> None:
    from medlens._run import StageCache

    base = StageCache.key("predictions", weights="a", images=["x", "y"])
    assert base == StageCache.key("predictions", weights="a", images=["x", "y"])
    assert base != StageCache.key("predictions", weights="b", images=["x", "y"])
    assert base != StageCache.key("predictions", weights="a", images=["x", "z"])
    assert base != StageCache.key("validation", weights="a", images=["x", "y"])
    assert re.fullmatch(r"[0-9a-f]{64}", base)


def _markers(cohort) -> list[str]:  # noqa: ANN001
    import pydicom

    from medlens.reports import markers_from_dataset

    markers: set[str] = set()
    for path in sorted(Path(cohort.dicom_dir).rglob("*.dcm")):
        markers.update(markers_from_dataset(pydicom.dcmread(path, stop_before_pixels=True)))
    return sorted(markers)


def _gallery_identity(out: Path, cohort) -> dict[str, tuple[str, str]]:  # noqa: ANN001
    """case id -> (PatientID, PatientName) of the gallery cases, from the DICOM files."""
    import pydicom

    from medlens.io import pseudonymize

    wanted = {g["case_id"] for g in json.loads((out / "bundle/cases.json").read_text())["gallery"]}
    found = {}
    for path in sorted(Path(cohort.dicom_dir).rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        from medlens._demo import demo_config

        key = pseudonymize(
            ds.SOPInstanceUID, salt=demo_config().data.pseudonym_salt, prefix="case-"
        )
        if key in wanted:
            found[key] = (str(ds.PatientID), str(ds.PatientName))
    assert set(found) == wanted
    return found


def _pdf_text(path: Path) -> str:
    return "\n".join(p.extract_text() for p in PdfReader(str(path)).pages)


def test_include_identifiers_shows_them_only_when_asked(run_out, primed, tmp_path, counted) -> None:  # noqa: ANN001
    from medlens.reports import scan_for_identifiers
    from medlens.reports._regulatory import IDENTIFIERS_EXCLUDED

    root, cohort, plan = run_out
    identity = _gallery_identity(primed, cohort)
    # absent by default (the primed run): no marker anywhere, the cover says so
    assert scan_for_identifiers([primed], _markers(cohort)) == []
    assert IDENTIFIERS_EXCLUDED in " ".join(_pdf_text(primed / "report.pdf").split())
    # present with the flag, next to the pseudonymous key, in both PDFs and the bundle
    out = _copy(primed, tmp_path)
    assert main(_args(root, plan, out, "--include-identifiers", "--dicom-sc")) == 0
    assert counted == {"predict": 0, "validate": 0, "explain": 0}  # a display option only
    import pydicom

    for f in sorted((out / "dicom").glob("*.dcm")):  # identity copied for PACS filing
        sc = pydicom.dcmread(f, stop_before_pixels=True)
        assert (sc.PatientID, str(sc.PatientName)) == identity[f.name.split("_")[0]]
        assert "PatientIdentityRemoved" not in sc
    case_text = " ".join(_pdf_text(out / "case_reports.pdf").split())
    report_text = " ".join(_pdf_text(out / "report.pdf").split())
    assert (
        "CONTAINS PATIENT IDENTIFIERS"
        in PdfReader(str(out / "case_reports.pdf")).metadata["/Subject"]
    )
    assert "Patient identifiers INCLUDED" in report_text
    for key, (pid, name) in identity.items():
        assert f"Pseudonymous key {key}" in case_text
        assert f"Patient ID (DICOM) {pid}" in case_text
        assert f"Patient name (DICOM) {name}" in case_text
        assert f"case {key} [patient ID {pid}, name {name}]" in report_text
    found = {f.marker for f in scan_for_identifiers([out], _markers(cohort))}
    assert {pid for pid, _ in identity.values()} <= found
    # medlens report: pseudonymous unless asked again; asking needs a bundle that has them
    plain, named = tmp_path / "plain.pdf", tmp_path / "named.pdf"
    assert main(["report", "--evidence", str(out / "bundle"), "--out", str(plain)]) == 0
    assert scan_for_identifiers([plain], _markers(cohort)) == []
    args = ["report", "--evidence", str(out / "bundle"), "--out", str(named)]
    assert main([*args, "--include-identifiers"]) == 0
    assert named.read_bytes() == (out / "report.pdf").read_bytes()
    bad = ["report", "--evidence", str(primed / "bundle"), "--out", str(tmp_path / "x.pdf")]
    assert main([*bad, "--include-identifiers"]) == 2
    assert not (tmp_path / "x.pdf").exists()


def test_dicom_sc_overlays_reference_the_source_and_pass_dciodvfy(
    run_out, primed, tmp_path, counted
) -> None:  # noqa: ANN001
    import pydicom

    from medlens.reports import scan_for_identifiers

    root, cohort, plan = run_out
    out = _copy(primed, tmp_path)
    assert main(_args(root, plan, out, "--dicom-sc")) == 0
    assert counted == {"predict": 0, "validate": 0, "explain": 0}
    cases = json.loads((out / "bundle/cases.json").read_text())
    files = sorted((out / "dicom").glob("*.dcm"))
    expected = sorted(
        f"{g['case_id']}_{o['method']}.dcm" for g in cases["gallery"] for o in g["overlays"]
    )
    assert [f.name for f in files] == expected
    source_uids: set[str] = set()
    for path in sorted(Path(cohort.dicom_dir).rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        source_uids |= {ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID}
    studies: dict[str, set[str]] = {}
    for f in files:
        sc = pydicom.dcmread(f)
        case = f.name.split("_")[0]
        # de-identified (no --include-identifiers): no UID of the source is kept, the
        # source image is referenced by a remapped UID, one pseudonymous study per case
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID not in source_uids
        assert sc.StudyInstanceUID not in source_uids
        assert sc.SeriesInstanceUID not in source_uids
        studies.setdefault(case, set()).add(sc.StudyInstanceUID)
        assert sc.PatientID == case  # the pseudonymous key
        assert sc.pixel_array.shape[2] == 3
    assert all(len(v) == 1 for v in studies.values())
    assert scan_for_identifiers([out / "dicom"], _markers(cohort)) == []
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools)")
    for f in files:
        res = subprocess.run([exe, str(f)], capture_output=True, text=True)
        errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
        assert errors == [], f.name


def test_excluded_cases_are_counted_by_reference_class() -> None:
    import pandas as pd

    from medlens._run import _excluded_by_class

    table = pd.DataFrame(
        {
            "status": ["ok", "failed", "failed", "failed", "indeterminate", "failed", "ok"],
            "label": [1, 1, 0, np.nan, 1, 1, 0],
        }
    )
    assert _excluded_by_class(table) == {
        "failed": {"positive": 2, "negative": 1, "unknown": 1},
        "indeterminate": {"positive": 1, "negative": 0, "unknown": 0},
    }


AUDIT_FILES = {
    "explanation_audit.json": b'{"n_cases": 3}\n',
    "shares_gradcam.csv": b"anatomy,case\n0.5,c1\n",
    "sanity.png": bytes(range(256)),
    "sub/deep.csv": b"x\n1\n",
}


def _fake_audit(calls: list):  # noqa: ANN202
    """A stand-in for `medlens audit` that records its calls and writes AUDIT_FILES."""

    def fake_audit(cfg, out, *, methods, max_cases, seed, stream):  # noqa: ANN001, ANN202
        calls.append((methods, max_cases, seed))
        for name, content in AUDIT_FILES.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(content)
        return {"n_cases": 3, "methods": {}, "note": [1.5, "x"]}

    return fake_audit


def _audit_files(out: Path) -> dict[str, bytes]:
    folder = out / "audit"
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_audit_step_is_cached(run_out, primed, tmp_path, counted, monkeypatch, capsys) -> None:  # noqa: ANN001
    """--audit-methods runs `medlens audit` once; a rerun takes its record and its files
    (CSV, PNG, JSON in OUT/audit) from the cache, so both runs leave the same files.

    The audit itself is replaced by a stub (its own tests cover it): this checks the
    caching, the files and that the record reaches the bundle.
    """
    import medlens.commands.audit as audit_cmd

    calls: list = []
    monkeypatch.setattr(audit_cmd, "audit_to_folder", _fake_audit(calls))
    root, _, plan = run_out
    out = _copy(primed, tmp_path)
    assert main(_args(root, plan, out, "--audit-methods", "gradcam")) == 0
    assert _audit_files(out) == AUDIT_FILES
    assert not list(out.glob(".audit-*")), "the scratch folder of the audit is removed"
    fresh = {p: (out / p).read_bytes() for p in OUTPUTS}
    # a cached rerun rewrites the audit files: deleted or changed ones come back
    (out / "audit/sanity.png").unlink()
    (out / "audit/sub/deep.csv").write_bytes(b"tampered")
    assert main(_args(root, plan, out, "--audit-methods", "gradcam")) == 0
    assert calls == [(("gradcam",), None, 0)]
    err = capsys.readouterr().err
    assert "audit: computed (cache key" in err and "audit: cached (cache key" in err
    assert _audit_files(out) == AUDIT_FILES
    assert {p: (out / p).read_bytes() for p in OUTPUTS} == fresh
    assert json.loads((out / "bundle/explanation_audit.json").read_text())["n_cases"] == 3
    assert counted == {"predict": 0, "validate": 0, "explain": 0}
    # a fresh run in another folder (no cache) leaves the same audit files
    other = tmp_path / "other"
    assert main(_args(root, plan, other, "--audit-methods", "gradcam")) == 0
    assert len(calls) == 2 and _audit_files(other) == AUDIT_FILES


def test_audit_archive_round_trip_and_bad_members() -> None:
    import zipfile

    from medlens._run import _pack_audit, _unpack_audit

    data = _pack_audit(b'{"methods": {}}', AUDIT_FILES)
    assert data == _pack_audit(b'{"methods": {}}', dict(reversed(AUDIT_FILES.items())))
    assert _unpack_audit(data) == (b'{"methods": {}}', AUDIT_FILES)
    for bad in ("files/../escape.csv", "files//abs.csv", "files/", "other.txt"):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("record.json", b"{}")
            z.writestr(bad, b"x")
        with pytest.raises(ValueError, match="not a plain relative file path"):
            _unpack_audit(buf.getvalue())


def test_unusable_audit_archive_is_recomputed(run_out, primed, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """An audit entry with a valid checksum but a path-escaping member is not used."""
    import zipfile

    import medlens.commands.audit as audit_cmd
    from medlens._run import CACHE_DIR, CacheWarning
    from medlens.reports import sha256_bytes

    calls: list = []
    monkeypatch.setattr(audit_cmd, "audit_to_folder", _fake_audit(calls))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    root, _, plan = run_out
    out = _copy(primed, tmp_path)
    assert main(_args(root, plan, out, "--audit-methods", "gradcam")) == 0
    (entry,) = (out / CACHE_DIR).glob("audit-*.zip")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("record.json", b'{"methods": {}}')
        z.writestr("files/../../escaped.csv", b"x")
    entry.write_bytes(buf.getvalue())
    entry.with_name(entry.name + ".sha256").write_text(sha256_bytes(buf.getvalue()) + "\n")
    with pytest.warns(CacheWarning, match="cannot be used"):
        assert main(_args(root, plan, out, "--audit-methods", "gradcam")) == 0
    assert len(calls) == 2
    assert not (tmp_path / "escaped.csv").exists() and not (out / "escaped.csv").exists()
    assert _audit_files(out) == AUDIT_FILES


def test_old_cache_entries_of_the_steps_run_are_pruned(
    run_out, primed, tmp_path, counted, capsys
) -> None:  # noqa: ANN001
    """After a run, entries of the same steps with other keys are removed (and counted);
    the entries it used, entries of steps it did not run and other files stay."""
    from medlens._run import CACHE_DIR

    root, _, _ = run_out
    out = _copy(primed, tmp_path)
    cache = out / CACHE_DIR
    used = sorted(p.name for p in cache.iterdir())
    assert len(used) == 6  # predictions, validation, gallery: entry + checksum each
    stale_pred = cache / ("predictions-" + "0" * 64 + ".csv")
    stale_gal = cache / ("gallery-" + "1" * 64 + ".npz")
    other_step = cache / ("audit-" + "2" * 64 + ".zip")
    for p in (stale_pred, stale_gal, other_step):
        p.write_bytes(b"old")
        p.with_name(p.name + ".sha256").write_text("x\n")
    orphan_check = cache / ("validation-" + "3" * 64 + ".json.sha256")  # entry already gone
    orphan_check.write_text("x\n")
    stray = [cache / "notes.txt", cache / ("predictions-" + "4" * 64 + ".csv.tmp-123")]
    for p in stray:
        p.write_text("keep")
    # a changed plan: the validation step gets a new key, its old entry is pruned too
    plan2 = tmp_path / "plan2.yaml"
    plan2.write_text(
        yaml.safe_dump({**PLAN, "secondary_endpoints": [{"metric": "auc", "goal": 0.5}]}),
        encoding="utf-8",
    )
    assert main(_args(root, str(plan2), out)) == 0
    assert counted == {"predict": 0, "validate": 1, "explain": 0}
    assert "cache: pruned 4 old entries of the steps run" in capsys.readouterr().err
    left = sorted(p.name for p in cache.iterdir())
    new_val = [n for n in left if n.startswith("validation-") and n not in used]
    assert len(new_val) == 2  # the new entry and its checksum
    kept = [n for n in used if not n.startswith("validation-")]
    expected = [*kept, *new_val, other_step.name, other_step.name + ".sha256"]
    assert left == sorted(expected + [p.name for p in stray])
    # nothing left to prune: a rerun says nothing about pruning
    assert main(_args(root, str(plan2), out)) == 0
    assert "pruned" not in capsys.readouterr().err


def test_stage_cache_prune_counts_entries_once(tmp_path) -> None:  # noqa: ANN001
    from medlens._run import StageCache

    cache = StageCache(tmp_path / "c", say=lambda line: None)
    assert cache.prune() == 0  # nothing used, no folder
    key = StageCache.key("validation", plan="a")
    cache.store("validation", key, "json", b"{}")
    old = cache.path("validation", StageCache.key("validation", plan="b"), "json")
    old.write_bytes(b"{}")
    old.with_name(old.name + ".sha256").write_text("x\n")
    assert cache.prune() == 1
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        f"validation-{key}.json",
        f"validation-{key}.json.sha256",
    ]
    # an entry read (not written) in this run is kept as well
    reader = StageCache(tmp_path / "c", say=lambda line: None)
    assert reader.load("validation", key, "json") == b"{}"
    assert reader.prune() == 0
    assert reader.path("validation", key, "json").is_file()


def test_changed_image_or_seed_recomputes_only_what_depends_on_it(
    run_out, tmp_path, counted
) -> None:  # noqa: ANN001
    """Predictions are keyed by every test image's SHA-256; the gallery by its own cases'
    images and the seed: a changed non-gallery image re-predicts and re-validates but
    reuses the gallery maps; a changed seed recomputes the gallery only."""
    import pydicom

    from medlens._demo import demo_config
    from medlens._pipeline import load_cases, select_split

    root, cohort, plan = run_out
    shutil.copytree(Path(cohort.root), tmp_path / "cohort")
    cfg = demo_config(cohort=cohort)
    data = cfg.data.model_copy(
        update={
            "dicom_dir": tmp_path / "cohort" / Path(cohort.dicom_dir).relative_to(cohort.root),
            "labels": tmp_path / "cohort" / Path(cohort.ground_truth).relative_to(cohort.root),
        }
    )
    cfg = cfg.model_copy(update={"data": data})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
    out = tmp_path / "out"
    args = ["run", "--config", str(config), "--plan", plan, "--out", str(out), "--gallery", "1"]
    args += ["--methods", "gradcam", "--no-progress"]
    assert main(args) == 0
    assert counted == {"predict": 1, "validate": 1, "explain": 1}
    gallery = {g["case_id"] for g in json.loads((out / "bundle/cases.json").read_text())["gallery"]}
    test = select_split(load_cases(cfg).table, cfg, cfg.data.test_split)
    path = next(p for c, p in zip(test["case_id"], test["path"], strict=True) if c not in gallery)
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.copy()
    pixels[:8, :8] = pixels.max() - pixels[:8, :8]  # a visible change: the score moves
    ds.PixelData = pixels.tobytes()
    ds.save_as(path)
    counted.update(predict=0, validate=0, explain=0)
    assert main(args) == 0
    assert counted == {"predict": 1, "validate": 1, "explain": 0}
    dumped = cfg.model_dump(mode="json")
    dumped["seed"] = cfg.seed + 1
    config.write_text(yaml.safe_dump(dumped), encoding="utf-8")
    counted.update(predict=0, validate=0, explain=0)
    assert main(args) == 0
    assert counted == {"predict": 0, "validate": 0, "explain": 1}
    # only the entries of the last run are left (older keys of each step were pruned)
    for stage, ext in (("predictions", "csv"), ("validation", "json"), ("gallery", "npz")):
        assert len(list((out / ".cache").glob(f"{stage}-*.{ext}"))) == 1, stage


def test_provenance_hashes_the_dataset_and_withholds_absolute_paths(ran: Path, run_out) -> None:  # noqa: ANN001
    import hashlib

    from medlens._demo import demo_config
    from medlens._pipeline import dataset_fingerprint, load_cases, select_split
    from medlens.reports import sha256_file

    root, cohort, _ = run_out
    prov = json.loads((ran / "bundle" / "bundle.json").read_text())["provenance"]
    cfg = demo_config(cohort=cohort)
    test = select_split(load_cases(cfg).table, cfg, "test")
    # independent reference: sorted (relative path, file SHA-256) pairs as JSON
    base = Path(cfg.data.dicom_dir).resolve()
    pairs = sorted(
        [Path(p).resolve().relative_to(base).as_posix(), sha256_file(p)] for p in test["path"]
    )
    want = hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()
    assert prov["sha256"]["dataset"] == want == dataset_fingerprint(test, cfg)["sha256"]
    assert prov["dataset"]["n_files"] == len(test) and "relative" in prov["dataset"]["definition"]
    assert prov["sha256"]["labels"] == sha256_file(cfg.data.labels)
    # a changed image changes the digest; moving the folder does not
    moved = root / "moved"
    shutil.copytree(base, moved / "dicom")
    cfg2 = cfg.model_copy(
        update={"data": cfg.data.model_copy(update={"dicom_dir": moved / "dicom"})}
    )
    t2 = test.assign(
        path=[str(moved / "dicom" / Path(p).resolve().relative_to(base)) for p in test["path"]]
    )
    assert dataset_fingerprint(t2, cfg2)["sha256"] == want
    first = Path(t2["path"].iloc[0])
    first.write_bytes(first.read_bytes() + b"\0")
    assert dataset_fingerprint(t2, cfg2)["sha256"] != want
    shutil.rmtree(moved)

    recorded = prov["config"]
    assert recorded["data"]["dicom_dir"] == "cohort/dicom"
    assert recorded["data"]["labels"] == "cohort/" + Path(cfg.data.labels).name
    assert recorded["model"]["path"] == "<withheld>/" + Path(cfg.model.path).name
    text = (ran / "bundle" / "bundle.json").read_text()
    assert str(root) not in text and str(Path(cfg.model.path).parent) not in text
    pdf = " ".join(p.extract_text() for p in PdfReader(str(ran / "report.pdf")).pages)
    assert str(root) not in " ".join(pdf.split())


def test_recorded_paths_are_absolute_only_with_identifiers(tmp_path: Path) -> None:
    from medlens._run import recorded_path

    inside = tmp_path / "data" / "dicom"
    assert recorded_path(inside, config_dir=tmp_path) == "data/dicom"
    assert recorded_path("/srv/pacs/DOE_JOHN/dicom", config_dir=tmp_path) == "<withheld>/dicom"
    assert recorded_path(inside, config_dir=None) == "<withheld>/dicom"
    assert recorded_path(inside, config_dir=tmp_path, include_identifiers=True) == str(inside)


def test_gallery_maps_get_trust_cards_without_an_audit(ran: Path) -> None:
    from medlens._run import TRUST_FROM_GALLERY

    cases = json.loads((ran / "bundle" / "cases.json").read_text())
    for g in cases["gallery"]:
        for o in g["overlays"]:
            assert o["trusted"] in (True, False), o
            assert o["trust_source"] == TRUST_FROM_GALLERY
            assert "not checked" not in o["trust_label"]


def test_bad_arguments_fail_before_any_work(run_out, tmp_path, monkeypatch, capsys) -> None:  # noqa: ANN001
    import medlens._run as run_mod
    from medlens._demo import demo_config
    from medlens._errors import ExplanationError

    root, cohort, plan = run_out

    def boom(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("heavy work started")

    monkeypatch.setattr(run_mod, "load_cases", boom)
    out = tmp_path / "o"
    args = _args(root, plan, out)

    def last_error_line(argv: list[str]) -> str:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    err = last_error_line([*args[:-3], "--methods", "gradcm", "--no-progress"])
    assert err.startswith("medlens run: error: --methods: unknown name(s) 'gradcm' (did you mean")
    err = last_error_line([*args, "--audit-methods", "shapp"])
    assert err.startswith("medlens run: error: --audit-methods: unknown name(s) 'shapp'")
    err = last_error_line([*args, "--gallery", "-1"])
    assert err == "medlens run: error: --gallery: expected an integer >= 0, got -1"
    bad_plan = tmp_path / "bad.yaml"
    bad_plan.write_text("version: 1\nanalysis:\n  bootstrap: {replicates: 0\n")
    assert main(_args(root, str(bad_plan), out)) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"medlens run: error: {bad_plan}:4:1: not valid YAML: expected ',' or '}}', "
        "but got '<stream end>'"
    )
    with pytest.raises(ExplanationError, match="did you mean 'gradcam'"):
        run_pipeline(demo_config(cohort=cohort), plan, out, methods=["gradcm"])
    assert not out.exists() or not any(out.iterdir())


def test_fail_on_verdict_sets_the_exit_code(run_out, primed, tmp_path, counted, capsys) -> None:  # noqa: ANN001
    root, _, _ = run_out
    strict = tmp_path / "strict.yaml"
    impossible = {
        **PLAN,
        "primary_endpoints": [{"metric": "sensitivity", "operator": ">=", "goal": 0.9999}],
    }
    strict.write_text(yaml.safe_dump(impossible), encoding="utf-8")
    lenient = tmp_path / "lenient.yaml"
    trivial = {
        **PLAN,
        "primary_endpoints": [{"metric": "sensitivity", "operator": ">=", "goal": 0.0}],
    }
    lenient.write_text(yaml.safe_dump(trivial), encoding="utf-8")
    out = _copy(primed, tmp_path)
    assert main(_args(root, str(strict), out)) == 0
    assert "verdict fail" in capsys.readouterr().out
    assert main(_args(root, str(strict), out, "--fail-on-verdict")) == 1
    assert main(_args(root, str(lenient), out, "--fail-on-verdict")) == 0
    assert "verdict pass" in capsys.readouterr().out
    pred = str(out / "predictions.csv")
    v = ["validate", pred, "--out", str(tmp_path / "v")]
    assert main([*v, "--plan", str(strict)]) == 0
    assert main([*v, "--plan", str(strict), "--fail-on-verdict"]) == 1
    assert main([*v, "--plan", str(lenient), "--fail-on-verdict"]) == 0


def test_gallery_trust_cards_agree_with_the_audit(run_out, primed, tmp_path) -> None:  # noqa: ANN001
    """The audit's card wins where the audit covers a map; the gallery's own card (the
    one `medlens explain --trust` gives) is the same statement for the same seed."""
    from medlens._run import CACHE_DIR, TRUST_FROM_AUDIT, TRUST_FROM_GALLERY, _maps_from_bytes

    root, _, plan = run_out
    out = _copy(primed, tmp_path)
    assert main(_args(root, plan, out, "--audit-methods", "gradcam")) == 0
    cases = json.loads((out / "bundle" / "cases.json").read_text())
    audit = json.loads((out / "bundle" / "explanation_audit.json").read_text())
    audit_cards = {c["case"]: c for c in audit["methods"]["gradcam"]["trust"]["cards"]}
    (entry,) = [p for p in (out / CACHE_DIR).glob("gallery-*.npz")]
    _, meta = _maps_from_bytes(entry.read_bytes())
    compared = 0
    for g in cases["gallery"]:
        for o in g["overlays"]:
            own = meta[f"{g['case_id']}\t{o['method']}"]["trust"]
            if o["method"] == "gradcam":
                assert o["trust_source"] == TRUST_FROM_AUDIT
                theirs = audit_cards[g["case_id"]]
                for key in ("trusted", "label", "randomisation", "faithfulness", "anatomy"):
                    assert own[key] == theirs[key], (g["case_id"], key)
                # the audit explains its cases in one batch, the gallery one at a time:
                # float32 convolutions differ in the last digits, the statements do not
                for key in ("randomisation_spearman", "faithfulness_gap"):
                    np.testing.assert_allclose(own[key], theirs[key], rtol=0, atol=1e-4)
                compared += 1
            else:
                assert o["trust_source"] == TRUST_FROM_GALLERY
                assert o["trust_label"] == own["label"]
    assert compared >= 1
