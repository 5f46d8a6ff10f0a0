"""Deterministic JSON, provenance, hashes and the evidence bundle layout."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import importlib.metadata
import json
import math
from pathlib import Path

import numpy as np
import pytest

from medlens import EvidenceError, MedlensError
from medlens.reports import (
    BUNDLE_FILE,
    BUNDLE_PARTS,
    SCHEMA_VERSION,
    VALIDATION_KEYS,
    EvidenceBundle,
    dumps_json,
    make_report_id,
    nonfinite_pointers,
    provenance,
    read_bundle,
    read_json,
    sha256_bytes,
    sha256_file,
    sha256_json,
    to_jsonable,
    utc_timestamp,
    write_bundle,
    write_json,
)


def _validation():
    metric = {"estimate": 0.9, "ci_low": 0.8, "ci_high": 0.95, "method": "wilson"}
    return {
        "overall": {
            "n": 10,
            "n_positive": 5,
            "metrics": {
                "sensitivity": metric,
                "auc": {
                    "estimate": float("nan"),
                    "ci_low": None,
                    "ci_high": None,
                    "method": "delong",
                },
            },
        },
        "cohorts": {"site": {"A": {"n": 5}}},
        "calibration": {},
        "acceptance": [{"endpoint": "sensitivity", "goal": 0.85, "passed": False}],
        "failed_cases": {"n_failed": 0},
        "plan": {"sha256": "0" * 64},
        "provenance": {},
    }


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass(frozen=True)
class Estimate:
    estimate: float
    ci: tuple[float, float]


class HasToDict:
    def to_dict(self):
        return {"b": 2, "a": np.int64(1)}


# ----------------------------------------------------------------------------- JSON


def test_dumps_sorts_keys_indents_and_ends_with_newline():
    text = dumps_json({"b": 1, "a": {"d": 2, "c": 3}})
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert list(json.loads(text)) == ["a", "b"]
    assert text.index('"c"') < text.index('"d"')
    assert dumps_json({"b": 1, "a": 2}) == dumps_json({"a": 2, "b": 1})


def test_nonfinite_become_null_with_pointers_and_notes():
    obj = {"auc": {"estimate": float("nan"), "ci_low": -math.inf}, "x": [1.0, math.inf]}
    data, pointers = to_jsonable(obj, notes={"/auc/estimate": "one class only in this cohort"})
    assert data == {
        "auc": {"estimate": None, "ci_low": None, "note": "one class only in this cohort"},
        "x": [1.0, None],
    }
    assert sorted(pointers) == ["/auc/ci_low", "/auc/estimate", "/x/1"]
    assert nonfinite_pointers(obj) == pointers
    assert "NaN" not in dumps_json(obj) and "Infinity" not in dumps_json(obj)


def test_note_must_explain_a_null_and_not_overwrite():
    with pytest.raises(EvidenceError, match="holds no NaN/inf"):
        to_jsonable({"a": 1.0}, notes={"/a": "why"})
    with pytest.raises(EvidenceError, match="overwrite the existing key 'note'"):
        to_jsonable({"m": {"estimate": math.nan, "note": "other"}}, notes={"/m/estimate": "why"})
    with pytest.raises(EvidenceError, match="expected a JSON object"):
        to_jsonable({"x": [math.nan]}, notes={"/x/0": "why"})


def test_numpy_dataclass_enum_path_set_and_to_dict():
    obj = {
        "i": np.int64(7),
        "f32": np.float32(0.1),
        "f64": np.float64(0.1),
        "b": np.bool_(True),
        "arr": np.array([[1.5, np.nan], [0.25, 2.0]], dtype=np.float32),
        "iarr": np.arange(3, dtype=np.uint8),
        "dc": Estimate(0.5, (0.25, 0.75)),
        "enum": Colour.RED,
        "path": Path("a") / "b.png",
        "set": {3, 1, 2},
        "date": dt.date(2024, 1, 2),
        "custom": HasToDict(),
        3: "int key",
    }
    data, pointers = to_jsonable(obj)
    assert data["i"] == 7 and type(data["i"]) is int
    assert data["f32"] == 0.1  # shortest float32 form, not 0.10000000149011612
    assert data["b"] is True
    assert data["arr"] == [[1.5, None], [0.25, 2.0]]
    assert data["iarr"] == [0, 1, 2]
    assert data["dc"] == {"estimate": 0.5, "ci": [0.25, 0.75]}
    assert data["enum"] == "red" and data["path"] == "a/b.png" and data["set"] == [1, 2, 3]
    assert data["date"] == "2024-01-02" and data["custom"] == {"a": 1, "b": 2}
    assert data["3"] == "int key"
    assert pointers == ["/arr/0/1"]
    # float32 values still round-trip to the same float32
    assert np.float32(json.loads(dumps_json(obj))["f32"]) == np.float32(0.1)


def test_floats_round_trip_exactly():
    rng = np.random.default_rng(0)
    values = list(rng.standard_normal(500) * 10.0 ** rng.integers(-300, 300, 500))
    values += [0.1, 1 / 3, 5e-324, 1.7976931348623157e308, -0.0, 1e16, 123456789.123456789]
    back = json.loads(dumps_json({"v": values}))["v"]
    assert all(a == b and str(a) == str(b) for a, b in zip(values, back, strict=True))


def test_unsupported_values_name_their_location():
    with pytest.raises(EvidenceError, match=r"type object .* at /a/1"):
        dumps_json({"a": [1, object()]})
    with pytest.raises(EvidenceError, match=r"keys must be str or int; got tuple at /"):
        dumps_json({(1, 2): 3})
    with pytest.raises(EvidenceError, match="two keys become '1'"):
        dumps_json({1: "a", "1": "b"})
    with pytest.raises(EvidenceError, match=r"ndarray\[complex128\]"):
        dumps_json({"c": np.array([1j])})
    with pytest.raises(EvidenceError, match="set of mixed types"):
        dumps_json({"s": {1, "a"}})


def test_write_json_is_atomic_deterministic_and_hash_matches(tmp_path):
    obj = {"z": np.float64(1 / 3), "a": [1, 2, math.nan]}
    digest = write_json(tmp_path / "e.json", obj, notes=None)
    first = (tmp_path / "e.json").read_bytes()
    assert write_json(tmp_path / "e.json", obj) == digest
    assert (tmp_path / "e.json").read_bytes() == first
    assert (
        digest
        == sha256_file(tmp_path / "e.json")
        == sha256_json(obj)
        == hashlib.sha256(first).hexdigest()
    )
    assert read_json(tmp_path / "e.json") == {"a": [1, 2, None], "z": 1 / 3}


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(EvidenceError, match=r"nope\.json: file not found"):
        read_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(EvidenceError, match=r"bad\.json: not valid JSON"):
        read_json(tmp_path / "bad.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(EvidenceError, match=r"bin\.json: not valid JSON \(not UTF-8"):
        read_json(tmp_path / "bin.json")


# ----------------------------------------------------------------------------- hashes, dates


def test_sha256_helpers_match_hashlib(tmp_path):
    data = bytes(range(256)) * 1000
    (tmp_path / "w.pt").write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(tmp_path / "w.pt", chunk_size=1000) == expected
    assert sha256_bytes(data) == expected
    with pytest.raises(EvidenceError, match="not an existing file"):
        sha256_file(tmp_path)
    with pytest.raises(MedlensError, match="'data' parameter of sha256_bytes"):
        sha256_bytes("text")  # type: ignore[arg-type]


def test_utc_timestamp_honours_source_date_epoch(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert utc_timestamp() == "2023-11-14T22:13:20Z"
    assert utc_timestamp(0) == "1970-01-01T00:00:00Z"
    tz = dt.timezone(dt.timedelta(hours=2))
    assert (
        utc_timestamp(dt.datetime(2024, 5, 1, 12, 0, 30, 999, tzinfo=tz)) == "2024-05-01T10:00:30Z"
    )
    assert utc_timestamp(dt.datetime(2024, 5, 1, 12, 0)) == "2024-05-01T12:00:00Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(MedlensError, match="SOURCE_DATE_EPOCH"):
        utc_timestamp()
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert utc_timestamp().endswith("Z")
    with pytest.raises(MedlensError, match="'when' parameter"):
        utc_timestamp("2024-01-01")  # type: ignore[arg-type]
    with pytest.raises(MedlensError, match="'when' parameter"):
        utc_timestamp(math.nan)


def test_provenance_records_versions_hardware_seeds_and_hashes(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    weights = tmp_path / "secret_folder" / "model.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"weights")
    prov = provenance(
        seeds={"run": 0},
        files={"model_weights": weights},
        hashes={"plan": "ab" * 32},
        config={"seed": 0, "model": {"name": "tiny"}},
        device="cpu",
    )
    assert prov["date_utc"] == "1970-01-02T00:00:00Z"
    assert prov["packages"]["numpy"] == importlib.metadata.version("numpy")
    assert prov["packages"]["reportlab"] == importlib.metadata.version("reportlab")
    assert set(prov["packages"]) >= {
        "torch",
        "scipy",
        "scikit-learn",
        "captum",
        "shap",
        "lime",
        "pydicom",
        "highdicom",
    }
    assert prov["seeds"] == {"run": 0}
    assert prov["sha256"]["model_weights"] == hashlib.sha256(b"weights").hexdigest()
    assert prov["sha256"]["plan"] == "ab" * 32
    assert prov["sha256"]["config"] == sha256_json({"seed": 0, "model": {"name": "tiny"}})
    assert prov["files"] == {"model_weights": "model.pt"}
    assert "secret_folder" not in dumps_json(prov)
    assert prov["torch"]["device"] == "cpu" and prov["platform"]["cpu_model"]
    assert prov["python"]["version"].count(".") == 2
    # same environment + fixed date -> same JSON
    assert dumps_json(prov) == dumps_json(
        provenance(
            seeds={"run": 0},
            files={"model_weights": weights},
            hashes={"plan": "ab" * 32},
            config={"seed": 0, "model": {"name": "tiny"}},
            device="cpu",
        )
    )
    assert provenance(packages=("surely-not-installed-pkg",))["packages"] == {
        "surely-not-installed-pkg": None
    }


def test_provenance_bad_input(tmp_path):
    with pytest.raises(EvidenceError, match="not an existing file"):
        provenance(files={"manifest": tmp_path / "missing.csv"})
    (tmp_path / "m.csv").write_text("x")
    with pytest.raises(EvidenceError, match="given twice"):
        provenance(files={"m": tmp_path / "m.csv"}, hashes={"m": "0" * 64})
    with pytest.raises(MedlensError, match="'packages' parameter"):
        provenance(packages="numpy")  # type: ignore[arg-type]


def test_make_report_id_is_content_derived():
    a = make_report_id({"x": 1})
    assert a == make_report_id({"x": 1}) and a != make_report_id({"x": 2})
    assert a.startswith("MLR-") and len(a) == 16


# ----------------------------------------------------------------------------- bundle


@pytest.fixture
def prov(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    return provenance(seeds={"run": 0}, packages=("numpy",))


def test_bundle_round_trip_and_deterministic_bytes(tmp_path, prov):
    audit = {"sanity": {"gradcam": {"verdict": "pass"}}}
    cases = {"case-0001": {"score": np.float32(0.75)}}
    b = write_bundle(
        tmp_path / "ev",
        provenance=prov,
        validation=_validation(),
        audit=audit,
        cases=cases,
        notes={"validation": {"/overall/metrics/auc/estimate": "one class"}},
    )
    assert isinstance(b, EvidenceBundle) and b.schema_version == SCHEMA_VERSION
    assert b.validation["overall"]["metrics"]["auc"] == {
        "estimate": None,
        "ci_low": None,
        "ci_high": None,
        "method": "delong",
        "note": "one class",
    }
    files = sorted(p.name for p in (tmp_path / "ev").iterdir())
    assert files == sorted([BUNDLE_FILE, *BUNDLE_PARTS.values()])
    back = read_bundle(tmp_path / "ev")
    assert back == b
    assert back.cases == {"case-0001": {"score": 0.75}}
    assert back.part("audit") == audit
    first = {p.name: p.read_bytes() for p in (tmp_path / "ev").iterdir()}
    b2 = write_bundle(
        tmp_path / "ev2",
        provenance=prov,
        validation=_validation(),
        audit=audit,
        cases=cases,
        notes={"validation": {"/overall/metrics/auc/estimate": "one class"}},
    )
    assert b2.report_id == b.report_id
    assert {p.name: p.read_bytes() for p in (tmp_path / "ev2").iterdir()} == first


def test_bundle_with_missing_parts(tmp_path, prov):
    b = write_bundle(
        tmp_path, provenance=prov, audit={"a": 1}, report_id="MLR-FIXED", title="Audit only"
    )
    back = read_bundle(tmp_path)
    assert back.report_id == "MLR-FIXED" and back.title == "Audit only"
    assert back.validation is None and back.cases is None and b == back
    with pytest.raises(
        EvidenceError, match=r"MLR-FIXED: this bundle has no 'validation' part \(evidence\.json\)"
    ):
        back.part("validation")
    with pytest.raises(MedlensError, match="'name' parameter of EvidenceBundle.part"):
        back.part("plan")


def test_bundle_errors_name_file_and_key(tmp_path, prov):
    with pytest.raises(EvidenceError, match=r"no bundle\.json in this folder"):
        read_bundle(tmp_path)
    with pytest.raises(EvidenceError, match="not a folder"):
        read_bundle(tmp_path / "missing")
    bad = _validation()
    del bad["acceptance"]
    with pytest.raises(EvidenceError, match=r"evidence\.json: missing key 'acceptance'"):
        write_bundle(tmp_path / "b", provenance=prov, validation=bad)
    with pytest.raises(EvidenceError, match=r"explanation_audit\.json: expected a JSON object"):
        write_bundle(tmp_path / "b", provenance=prov, audit=[1, 2])
    with pytest.raises(MedlensError, match="'title' parameter of write_bundle"):
        write_bundle(tmp_path / "b", provenance=prov, title=" ")
    with pytest.raises(MedlensError, match="'notes' parameter of write_bundle"):
        write_bundle(tmp_path / "b", provenance=prov, notes={"plan": {}})
    with pytest.raises(MedlensError, match="'provenance' parameter"):
        write_bundle(tmp_path / "b", provenance=None)  # type: ignore[arg-type]

    folder = tmp_path / "ok"
    write_bundle(folder, provenance=prov, validation=_validation(), audit={"a": 1})
    # a part edited after the bundle was written
    (folder / "explanation_audit.json").write_text('{"a": 2}\n')
    with pytest.raises(
        EvidenceError, match=r"explanation_audit\.json: SHA-256 is .* but bundle\.json records"
    ):
        read_bundle(folder)
    assert read_bundle(folder, verify=False).audit == {"a": 2}
    # a listed part removed
    (folder / "explanation_audit.json").unlink()
    with pytest.raises(
        EvidenceError, match=r"explanation_audit\.json: listed in bundle\.json as part 'audit'"
    ):
        read_bundle(folder)
    # validation part without a required key (hash check off to reach the key check)
    v = _validation()
    del v["plan"]
    write_json(folder / "evidence.json", v)
    write_bundle(folder, provenance=prov, audit={"a": 1})
    manifest = read_json(folder / BUNDLE_FILE)
    manifest["parts"]["validation"] = {
        "file": "evidence.json",
        "sha256": sha256_file(folder / "evidence.json"),
    }
    write_json(folder / BUNDLE_FILE, manifest)
    with pytest.raises(
        EvidenceError,
        match=r"evidence\.json: missing key 'plan'; expected keys: " + ", ".join(VALIDATION_KEYS),
    ):
        read_bundle(folder)
    # manifest problems
    for broken, message in [
        (
            {**manifest, "schema_version": "9.9"},
            r"bundle\.json: schema_version '9\.9' is not supported",
        ),
        (
            {k: v for k, v in manifest.items() if k != "report_id"},
            r"bundle\.json: missing key 'report_id'",
        ),
        ({**manifest, "parts": {"plan": {}}}, r"bundle\.json: unknown part 'plan'"),
        (
            {**manifest, "parts": {"audit": {"file": "../x.json", "sha256": "0"}}},
            "outside the bundle",
        ),
        (
            {**manifest, "parts": {"audit": {"file": "explanation_audit.json"}}},
            r"/parts/audit: missing key 'sha256'",
        ),
        ([1], r"bundle\.json: expected a JSON object"),
    ]:
        write_json(folder / BUNDLE_FILE, broken)
        with pytest.raises(EvidenceError, match=message):
            read_bundle(folder)
    (folder / BUNDLE_FILE).write_text("{")
    with pytest.raises(EvidenceError, match=r"bundle\.json: not valid JSON"):
        read_bundle(folder)
