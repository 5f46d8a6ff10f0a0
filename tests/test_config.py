"""medlens.config: a demo-like YAML parses; typos, wrong types and bad files give ConfigError."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from medlens._errors import ConfigError, MedlensError
from medlens.config import (
    UNKNOWN_KEY,
    DataConfig,
    HeadConfig,
    MedlensConfig,
    ModelConfig,
    PreprocessConfig,
    WindowConfig,
    load_config,
    parse_config,
)

DEMO_YAML = """\
seed: 7
output_dir: out
data:
  manifest: cohort/manifest.csv
  root: cohort
  pseudonym_salt: demo-salt-0123
  cohort_columns: [site, manufacturer, sex, age_band]
preprocess:
  window: {center: 40, width: 400}
  size: [64, 64]
  resize_mode: letterbox
  channels: 1
  mean: [0.5]
  std: [0.25]
model:
  format: state_dict
  path: models/demo.pt
  factory: tiny_cnn
  kwargs: {in_channels: 1, num_outputs: 1, width: 8}
  head:
    type: binary_sigmoid
    class_names: [normal, lesion]
  device: cpu
  batch_size: 16
"""


def _raw() -> dict:
    return {
        "data": {"manifest": "m.csv", "pseudonym_salt": "saltsalt"},
        "model": {
            "format": "state_dict",
            "path": "w.pt",
            "factory": "tiny_cnn",
            "head": {"type": "binary_sigmoid", "class_names": ["neg", "pos"]},
        },
    }


def _write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="run.yaml")
    return str(info.value)


def test_demo_like_config_parses_with_paths_resolved(tmp_path):
    cfg = load_config(_write(tmp_path, DEMO_YAML))
    base = tmp_path.resolve()
    assert isinstance(cfg, MedlensConfig) and cfg.seed == 7
    assert cfg.output_dir == base / "out"
    assert cfg.data.manifest == base / "cohort/manifest.csv" and cfg.data.root == base / "cohort"
    assert cfg.data.dicom_dir is None
    assert cfg.model.path == base / "models/demo.pt"
    assert cfg.preprocess == PreprocessConfig(
        window=WindowConfig(center=40, width=400), size=(64, 64), mean=[0.5], std=[0.25]
    )
    assert cfg.model.head == HeadConfig(type="binary_sigmoid", class_names=["normal", "lesion"])
    assert cfg.model.kwargs == {"in_channels": 1, "num_outputs": 1, "width": 8}
    assert (cfg.model.batch_size, cfg.model.device, cfg.model.amp) == (16, "cpu", False)


def test_relative_paths_follow_the_yaml_folder_not_the_cwd(tmp_path, monkeypatch):
    sub = tmp_path / "configs"
    sub.mkdir()
    path = _write(sub, DEMO_YAML)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("configs") / "run.yaml")
    assert cfg.model.path == sub.resolve() / "models/demo.pt"
    absolute = DEMO_YAML.replace("path: models/demo.pt", f"path: {tmp_path / 'abs.pt'}")
    assert load_config(_write(sub, absolute, "abs.yaml")).model.path == tmp_path / "abs.pt"
    assert path.exists()


def test_defaults():
    cfg = parse_config(_raw())
    assert cfg.seed == 0 and cfg.output_dir == Path("medlens-out")
    assert cfg.preprocess == PreprocessConfig()
    assert cfg.preprocess.resize_mode == "letterbox" and cfg.preprocess.channels == 1
    assert cfg.model.batch_size == 32 and cfg.model.device == "auto"
    assert cfg.data.label_column == "label" and cfg.data.test_split == "test"


def test_sections_are_frozen():
    cfg = parse_config(_raw())
    with pytest.raises(ValueError, match="frozen"):
        cfg.model.batch_size = 3


@pytest.mark.parametrize(
    ("where", "key", "valid"),
    [
        ((), "sede", "data, model, output_dir, preprocess, seed"),
        (("model",), "batchsize", "amp, batch_size, device, factory, format, head, kwargs, path"),
        (("model", "head"), "typo", "class_names, type"),
        (("data",), "manfest", "age_band_edges, cohort_columns, dicom_dir, label_column"),
        (("preprocess",), "chanels", "channels, mean, resize_mode, size, std, use_file_window"),
        (("preprocess", "window"), "level", "center, width"),
    ],
)
def test_unknown_key_names_it_and_lists_valid_keys(where, key, valid):
    raw = _raw()
    raw["preprocess"] = {"window": {"center": 0, "width": 1}}
    sec = raw
    for part in where:
        sec = sec[part]
    sec[key] = 1
    msg = _error(raw)
    dotted = ".".join((*where, key))
    assert msg.startswith("run.yaml: invalid configuration")
    assert f"{dotted}: unknown key {key!r}; valid keys here: {valid}" in msg
    assert "Check the spelling" in msg and "{" not in UNKNOWN_KEY.format(key="k", valid="v")


def test_every_error_is_reported_at_once():
    raw = _raw()
    raw["model"]["head"]["typo"] = 1
    raw["data"]["typo"] = 2
    msg = _error(raw)
    assert "model.head.typo" in msg and "data.typo" in msg


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (("model", "batch_size"), "abc", r"model.batch_size: .*integer.*\(got 'abc'\)"),
        (("model", "batch_size"), True, r"model.batch_size: .*integer.*\(got True\)"),
        (("model", "batch_size"), 0, r"model.batch_size: .*greater than or equal to 1"),
        (("model", "format"), "onnx", r"model.format: .*'torchscript' or 'state_dict'"),
        (("model", "kwargs"), [1], r"model.kwargs: .*dictionary"),
        (("model", "head", "type"), "binary", r"model.head.type: .*'binary_sigmoid'"),
        (("model", "head", "class_names"), ["a"], "binary head needs 2 class_names"),
        (("model", "head", "class_names"), ["a", "a"], "class_names must be unique"),
        (("seed",), "1", r"seed: .*integer"),
        (("data", "pseudonym_salt"), "short", r"data.pseudonym_salt: .*at least 8"),
        (("preprocess",), {"std": [0.0]}, "every std must be > 0"),
        (("preprocess",), {"std": [float("nan")]}, "preprocess.std.0: .*finite"),
        (("preprocess",), {"mean": [float("inf")]}, "preprocess.mean.0: .*finite"),
        (("preprocess",), {"size": [0, 64]}, r"both sizes .* must be >= 1"),
        (("preprocess",), {"size": [64]}, r"preprocess.size"),
        (("preprocess",), {"channels": 2}, r"preprocess.channels: .*1 or 3"),
        (("preprocess",), {"channels": 3, "mean": [0, 0]}, "'mean' needs 1 or 3 values, got 2"),
        (("preprocess",), {"resize_mode": "crop"}, r"'resize' or 'letterbox'"),
        (("preprocess",), {"window": {"center": 40, "width": 0}}, "window.width"),
        (("model",), None, r"model: .*valid dictionary"),
    ],
)
def test_wrong_types_and_values(path, value, match):
    raw = _raw()
    sec = raw
    for part in path[:-1]:
        sec = sec[part]
    sec[path[-1]] = value
    assert __import__("re").search(match, _error(raw)), _error(raw)


def test_cross_field_rules():
    raw = _raw()
    del raw["model"]["factory"]
    assert "format 'state_dict' needs 'factory'" in _error(raw)
    raw = _raw()
    raw["data"]["dicom_dir"] = "dicoms"
    assert "give exactly one of 'manifest'" in _error(raw)
    raw = _raw()
    del raw["data"]["manifest"]
    assert "give exactly one of 'manifest'" in _error(raw)
    raw = copy.deepcopy(_raw())
    raw["model"]["head"] = {"type": "multiclass", "class_names": ["x"]}
    assert "a multiclass head needs at least 2 class_names" in _error(raw)


def test_missing_required_sections():
    msg = _error({"seed": 1})
    assert "data: Field required" in msg and "model: Field required" in msg


def test_top_level_must_be_a_mapping():
    with pytest.raises(ConfigError, match="expected a mapping at the top level, got list"):
        parse_config([1, 2], source="x.yaml")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read the config file \(No such file"):
        load_config(path)


def test_a_folder_is_not_a_config(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path)


def test_invalid_yaml(tmp_path):
    path = _write(tmp_path, "model: [unclosed\n  head: {")
    with pytest.raises(ConfigError, match=r"run.yaml: not valid YAML"):
        load_config(path)


def test_binary_file(tmp_path):
    path = tmp_path / "weights.yaml"
    path.write_bytes(b"\x80\x81\xff\x00binary")
    with pytest.raises(ConfigError, match="not a text file"):
        load_config(path)


def test_empty_file(tmp_path):
    with pytest.raises(ConfigError, match="expected a mapping at the top level, got NoneType"):
        load_config(_write(tmp_path, ""))


def test_config_error_is_a_medlens_error_and_names_the_file(tmp_path):
    path = _write(tmp_path, "seed: 1\n")
    with pytest.raises(MedlensError) as info:
        load_config(path)
    assert isinstance(info.value, ConfigError) and info.value.source == str(path)


def test_sections_can_be_built_directly():
    assert DataConfig(dicom_dir="d", pseudonym_salt="12345678").dicom_dir == Path("d")
    m = ModelConfig(
        format="torchscript", path="m.ts", head={"type": "multilabel", "class_names": ["a", "b"]}
    )
    assert m.factory is None and m.kwargs == {}


def test_salt_value_is_never_echoed():
    raw = _raw()
    raw["data"]["pseudonym_salt"] = "sekret7"
    msg = _error(raw)
    assert "data.pseudonym_salt" in msg
    assert "sekret7" not in msg
