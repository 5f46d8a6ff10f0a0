"""explain_cases and the writers behind `medlens explain`: .npy, JSON sidecar, PNG."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medlens._errors import InputDataError, MedlensError
from medlens.config import HeadConfig
from medlens.xai import explain_cases, get_explainer, result_to_json, save_result

from .conftest import blob_images, tiny

HEAD = HeadConfig(type="binary_softmax", class_names=["normal", "nodule"])


def _explainers(m):
    return {
        "gradcam": get_explainer("gradcam", m, head=HEAD),
        "lime": get_explainer("lime", m, head=HEAD, num_samples=30, n_segments=8),
    }


def test_writes_png_npy_and_json_per_case_and_method(tmp_path):
    m, x = tiny(), blob_images()
    res = explain_cases(_explainers(m), x, case_ids=["c01", "c02"], out_dir=tmp_path, seed=3)
    assert set(res) == {"c01", "c02"} and set(res["c01"]) == {"gradcam", "lime"}
    for case in ("c01", "c02"):
        for method in ("gradcam", "lime"):
            stem = tmp_path / f"{case}_{method}"
            arr = np.load(f"{stem}.npy")
            assert arr.shape == (1, 32, 32)
            side = json.loads(stem.with_suffix(".json").read_text())
            assert side["method"] == method and side["seed"] == 3
            assert side["target_names"] == [res[case][method].target_names[0][0]]
            assert side["grid"] == "model_input" and side["png_file"] == f"{case}_{method}.png"
            assert side["scores"] == pytest.approx(res[case][method].scores[0].tolist())
            assert side["evaluations_per_image"] >= 1
            assert (tmp_path / f"{case}_{method}.png").read_bytes()[:4] == b"\x89PNG"
    np.testing.assert_array_equal(
        np.load(tmp_path / "c02_gradcam.npy"), res["c02"]["gradcam"].maps[0]
    )


def test_outputs_are_byte_identical_across_runs(tmp_path):
    m, x = tiny(), blob_images(1)
    explain_cases(_explainers(m), x, case_ids=["c01"], out_dir=tmp_path / "a")
    explain_cases(_explainers(m), x, case_ids=["c01"], out_dir=tmp_path / "b")
    for name in ("c01_lime.png", "c01_lime.npy", "c01_gradcam.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_original_grid_maps_are_written_when_an_inverse_is_given(tmp_path):
    m, x = tiny(), blob_images(1)
    scan = np.kron(x[0, 0].numpy(), np.ones((2, 2)))  # the "original" 64x64 scan

    def inverse(mp):
        return np.kron(mp, np.ones((1, 2, 2)))

    explain_cases(
        {"gradcam": get_explainer("gradcam", m)},
        x,
        case_ids=["c9"],
        out_dir=tmp_path,
        inverse=inverse,
        scans=[scan],
    )
    assert np.load(tmp_path / "c9_gradcam.npy").shape == (1, 64, 64)
    assert json.loads((tmp_path / "c9_gradcam.json").read_text())["grid"] == "original"


def test_volume_overlay_shows_the_strongest_slice(tmp_path):
    import torch

    m = tiny(spatial_dims=3)
    x = torch.randn(1, 1, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    r = get_explainer("gradcam", m).explain(x)
    paths = save_result(r, tmp_path, stem="vol1", scan=x[0].numpy())
    assert paths["png"].exists()
    assert "slice" not in json.loads(paths["json"].read_text())  # note is in the figure only


def test_case_ids_are_checked():
    m, x = tiny(), blob_images()
    with pytest.raises(InputDataError, match="got 1 case ids for 2 images"):
        explain_cases(_explainers(m), x, case_ids=["a"])
    with pytest.raises(InputDataError, match="cannot be used in a file name"):
        explain_cases(_explainers(m), x, case_ids=["a", "../etc"])
    with pytest.raises(MedlensError, match="'explainers' parameter"):
        explain_cases({}, x, case_ids=["a", "b"])


def test_sidecar_json_has_no_nan_and_no_segments():
    m, x = tiny(), blob_images(1)
    r = get_explainer("lime", m, num_samples=20).explain(x)
    side = result_to_json(r)
    assert "segments" not in side["diagnostics"]
    json.dumps(side, allow_nan=False)
