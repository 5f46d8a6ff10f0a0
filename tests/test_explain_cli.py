"""`medlens explain`: files per case and method, in the scan's own grid; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

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
        assert side["png_file"] == f"{case}_{method}.png"
        # without --trust the map is labelled, never silently presented as evidence
        assert side["trust"]["checked"] is False and side["trust"]["trusted"] is None
        assert side["trust"]["label"] == "trust not checked"
        assert side["trust"]["title"] == "trust: not checked"
        assert side["trust"]["failed_reasons"] == []
    printed = capsys.readouterr().out
    assert sum(line.startswith(case) for line in printed.splitlines()) == 3
    assert "evaluations=" in printed and "[trust: not checked]" in printed
    # two methods: one panel of both on the same scan, announced with its path
    panel = out / f"{case}_panel.png"
    assert f"{case}  panel" in printed and str(panel) in printed
    from PIL import Image

    with Image.open(panel) as im:
        w, h = im.size
    assert w > 1.5 * h  # two panels side by side


def test_panel_titles_carry_each_methods_trust_line(setup, monkeypatch, tmp_path):
    import medlens.reports._overlay as overlay

    seen, trust = {}, {}
    real = overlay.method_panel

    def spy(scan, maps, **kwargs):
        seen.update(maps)
        trust.update(kwargs["trust"])
        return real(scan, maps, **kwargs)

    monkeypatch.setattr(overlay, "method_panel", spy)
    cfg, table, _ = setup
    case = table["case_id"].iloc[0]
    args = ["explain", "--config", str(cfg), "--case", case, "--no-progress", "--trust"]
    assert main([*args, "--methods", "gradcam,saliency", "--out", str(tmp_path)]) == 0
    assert len(seen) == 2
    for method, (amap, signed, score) in seen.items():
        side = json.loads((tmp_path / f"{case}_{method}.json").read_text())
        assert trust[method] == (side["trust"]["title"], side["trust"]["trusted"])
        assert signed is side["signed"]
        assert score == pytest.approx(np.ravel(side["scores"])[0])
        np.testing.assert_allclose(amap, np.load(tmp_path / f"{case}_{method}.npy")[0])
    assert main([*args, "--methods", "gradcam", "--out", str(tmp_path / "one")]) == 0
    assert not list((tmp_path / "one").glob("*_panel.png"))  # one method: no panel


def test_explain_trust_puts_the_card_in_sidecar_and_title(setup, capsys, monkeypatch, tmp_path):
    import medlens.reports._overlay as overlay
    from medlens.reports import failed_trust_reasons
    from medlens.xai._trust import FAITHFULNESS_MIN_GAP

    titles = []
    real = overlay.overlay_figure

    def spy(*args, **kwargs):
        titles.append((kwargs["method"], kwargs["note"], kwargs["trust"], kwargs["trusted"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(overlay, "overlay_figure", spy)
    cfg, table, _ = setup
    positive = table[table["label"] == 1]["case_id"].iloc[0]
    negative = table[table["label"] == 0]["case_id"].iloc[0]
    args = ["explain", "--config", str(cfg), "--methods", "gradcam", "--no-progress"]
    code = main([*args, "--case", positive, "--case", negative, "--trust", "--out", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    for case in (positive, negative):
        side = json.loads((tmp_path / f"{case}_gradcam.json").read_text())
        trust = side["trust"]
        card = trust["card"]
        assert trust["checked"] is True and trust["trusted"] is card["trusted"]
        assert card["case"] == case and card["method"] == "gradcam"
        assert card["randomisation"] in ("pass", "fail")
        assert card["faithfulness"] == (
            "pass" if card["faithfulness_gap"] >= FAITHFULNESS_MIN_GAP else "fail"
        )
        # the cohort's masks reach the card: the lesion for the positive case
        assert card["anatomy_region"] == ("lesion" if case == positive else "anatomy")
        assert trust["criteria"]["faithfulness"]["threshold"] == FAITHFULNESS_MIN_GAP
        assert trust["evaluations"]["trust_randomisation"] > 0
        word = "passed" if card["trusted"] else "FAILED"
        assert trust["title"].startswith(f"trust: {word}")
        # the verdict is the overlay's own trust line, not folded into the method name
        assert (
            "gradcam",
            "not evidence: " + trust["title"].split("FAILED ", 1)[1]
            if not card["trusted"]
            else "map passed its trust checks",
            trust["title"],
            card["trusted"],
        ) in titles
        assert trust["failed_reasons"] == list(failed_trust_reasons(card))
        if not card["trusted"]:
            assert trust["failed_reasons"] and set(trust["failed_reasons"]) <= set(card["reasons"])
        assert f"[{trust['title']}]" in printed
    assert len(titles) == 2


def test_trust_title_names_failed_checks():
    from medlens.commands.explain import trust_title
    from medlens.xai._trust import trust_cards

    ok, bad = trust_cards(
        ["a", "b"],
        "gradcam",
        randomisation_spearman=[0.0, 0.9],
        faithfulness_gap=[0.5, 0.1],
    )
    assert trust_title(ok) == "trust: passed"
    assert trust_title(bad) == "trust: FAILED (randomisation, faithfulness)"
    assert trust_title(None) == "trust: not checked"
    low, lean, both = trust_cards(
        ["c", "d", "e"],
        "gradcam",
        randomisation_spearman=[0.0, 0.0, 0.0],
        faithfulness_gap=[0.5, 0.5, 0.5],
        inside_anatomy_share=[0.05, 0.9, 0.05],
        anatomy_fraction=[0.3, 0.3, 0.3],
        anatomy_region=["lesion"] * 3,
        shortcut_region_ratio=[1.0, 4.0, 5.0],
        shortcut_region=["corner_top_left"] * 3,
    )
    assert trust_title(low) == "trust: FAILED (anatomy)"
    # on the lesion and on a burned-in corner: the shortcut is named, not the anatomy
    assert trust_title(lean) == "trust: FAILED (shortcut region corner_top_left)"
    assert trust_title(both) == "trust: FAILED (anatomy, shortcut region corner_top_left)"


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


def test_batch_size_defaults_to_the_config_and_auto_is_recorded(setup, capsys, tmp_path):
    cfg, table, _ = setup
    case = table["case_id"].iloc[0]
    args = ["explain", "--config", str(cfg), "--case", case, "--methods", "occlusion"]
    configured = yaml.safe_load(cfg.read_text())["model"]["batch_size"]
    runs = {}
    for name, extra in (("default", []), ("auto", ["--batch-size", "auto"])):
        out = tmp_path / name
        assert main([*args, *extra, "--no-progress", "--out", str(out)]) == 0
        runs[name] = json.loads((out / f"{case}_occlusion.json").read_text())["params"]
    assert runs["default"]["batch_size_used"] == configured
    assert "channels_last" in runs["auto"] and runs["auto"]["batch_size_used"] >= 1
    with pytest.raises(SystemExit) as exc:
        main([*args, "--batch-size", "0"])
    assert exc.value.code == 2
    assert "expected an integer >= 1 or 'auto', got '0'" in capsys.readouterr().err


def test_a_missing_mask_file_is_a_clear_error_not_an_empty_mask(setup, tmp_path, capsys):
    cfg_path, table, root = setup
    cfg = yaml.safe_load(cfg_path.read_text())
    labels_path = Path(cfg["data"]["labels"])
    labels = pd.read_csv(labels_path)
    labels.loc[0, "lesion_mask"] = "masks/gone.npy"
    bad_labels = labels_path.with_name("labels_gone_mask.csv")  # relative paths still resolve
    labels.to_csv(bad_labels, index=False)
    cfg["data"]["labels"] = str(bad_labels)
    bad_cfg = tmp_path / "cfg.yaml"
    bad_cfg.write_text(yaml.safe_dump(cfg))
    cases = load_cases_from(bad_cfg)
    case = cases.loc[cases["lesion_mask"].str.endswith("gone.npy"), "case_id"].item()
    args = ["explain", "--config", str(bad_cfg), "--case", case, "--methods", "gradcam"]
    code = main([*args, "--no-progress", "--trust", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "gone.npy" in err and "does not exist" in err and case in err
    assert "Traceback" not in err
    # without --trust the masks are not needed and the overlay is written
    assert main([*args, "--no-progress", "--out", str(tmp_path / "o")]) == 0
    bad_labels.unlink()


def load_cases_from(path):
    from medlens.config import load_config

    return load_cases(load_config(path)).table
