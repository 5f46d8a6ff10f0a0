"""`medlens explain` writes no patient identifier: PNG, JSON and .npy outputs and file names."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
import yaml

from medlens._demo import demo_config
from medlens._pipeline import load_cases
from medlens.cli import main
from medlens.reports import markers_from_dataset, scan_for_identifiers
from medlens.testing import make_synthetic_cohort


@pytest.fixture(scope="module")
def explained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[str]]:
    root = tmp_path_factory.mktemp("explain_ids")
    cohort = make_synthetic_cohort(root / "cohort", n_patients=8, image_size=48, seed=2)
    cfg = demo_config(cohort=cohort)
    dumped = cfg.model_dump(mode="json")
    dumped["output_dir"] = str(root / "out")
    config = root / "cfg.yaml"
    config.write_text(yaml.safe_dump(dumped), encoding="utf-8")
    table = load_cases(cfg).table
    cases = [str(c) for c in table["case_id"].iloc[:2]]
    args = ["explain", "--config", str(config), "--methods", "gradcam,saliency", "--no-progress"]
    for case in cases:
        args += ["--case", case]
    assert main(args) == 0
    markers: set[str] = set()
    for path in sorted(Path(cohort.dicom_dir).rglob("*.dcm")):
        markers.update(markers_from_dataset(pydicom.dcmread(path, stop_before_pixels=True)))
    markers.update(s.institution for s in cohort.sites)
    markers.add(cfg.data.pseudonym_salt)
    return root / "out", sorted(markers), cases


def test_explain_outputs_hold_no_identifier(explained) -> None:  # noqa: ANN001
    out, markers, cases = explained
    files = sorted(p for p in out.rglob("*") if p.is_file())
    suffixes = {p.suffix for p in files}
    assert {".png", ".json", ".npy"} <= suffixes, suffixes
    for case in cases:  # every requested case was written, under its pseudonymous key
        assert any(p.name.startswith(f"{case}_") for p in files), case
    assert len(markers) > 10  # names, IDs, birth dates, accession numbers, institutions
    assert scan_for_identifiers([out], markers) == []


def test_the_scan_would_catch_a_leak_in_each_output_kind(explained, tmp_path) -> None:  # noqa: ANN001
    """The check can fail: a marker planted in a copy of each kind of output is found."""
    import numpy as np

    out, markers, _ = explained
    marker = next(m for m in markers if "^" in m or m.isupper())
    sidecar = next(out.rglob("*.json"))
    data = json.loads(sidecar.read_text())
    data["leak"] = marker
    (tmp_path / "sidecar.json").write_text(json.dumps(data), encoding="utf-8")
    np.save(tmp_path / "map.npy", np.array([marker]))
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", marker)
    with Image.open(next(out.rglob("*.png"))) as im:
        im.save(tmp_path / "overlay.png", pnginfo=info)
    found = {Path(f.path).name for f in scan_for_identifiers([tmp_path], [marker])}
    assert found == {"sidecar.json", "map.npy", "overlay.png"}
