"""Explanation audit: the planted site shortcut is found, and only where the model uses it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from medlens._errors import InputDataError, MedlensError
from medlens.xai._audit import (
    case_outcomes,
    mask_to_input,
    run_audit,
    stratified_sample,
)
from medlens.xai._shortcut import region_masks
from medlens.xai._trust import SHORTCUT_REGION_FACTOR, region_lean, trust_label


@pytest.fixture(scope="module")
def shortcut_cohort(tmp_path_factory):
    from medlens.testing import make_synthetic_cohort

    # 128 px like the packaged models' training cohort (resized to the 64 px input)
    return make_synthetic_cohort(
        tmp_path_factory.mktemp("audit") / "cohort", n_patients=300, image_size=128, seed=0
    )


def _audit(cohort, *, shortcut: bool):
    from medlens._demo import demo_config
    from medlens._pipeline import load_cases, predict_cases, select_split
    from medlens.model import load_model

    cfg = demo_config(shortcut=shortcut, cohort=cohort)
    table = select_split(load_cases(cfg).table, cfg, "test")
    model = load_model(cfg.model, preprocess=cfg.preprocess)
    scored, images = predict_cases(table, cfg, model)
    x, geoms = model.preprocess.batch(images)
    anatomy = [
        mask_to_input(np.load(p), g) for p, g in zip(scored.anatomy_mask, geoms, strict=True)
    ]
    lesion = [mask_to_input(np.load(p), g) for p, g in zip(scored.lesion_mask, geoms, strict=True)]
    scored = scored.set_index("case_id")
    return run_audit(
        model,
        x,
        scored,
        methods=("gradcam",),
        anatomy_masks=anatomy,
        lesion_masks=lesion,
        cohort_columns=["site", "manufacturer", "sex", "age_band"],
        sanity_cases=2,
        sensitivity_cases=1,
        n_steps=10,
    )


def _trusted(result):
    cards = {c.case: c for c in result.audits["gradcam"].trust}
    t = result.cases
    trusted = np.array([cards[str(c)].trusted for c in t.index])
    return trusted, t["label"].to_numpy() == 1, t["shortcut_present"].to_numpy().astype(bool), cards


def test_shortcut_model_flags_site_b_and_clean_model_flags_nothing(shortcut_cohort):
    shortcut_result = _audit(shortcut_cohort, shortcut=True)
    flagged = shortcut_result.audits["gradcam"]
    assert ("site", "site_b") in flagged.flagged_values
    assert {v for c, v in flagged.flagged_values if c == "site"} == {"site_b"}
    # the evidence is the top-left corner, where the PORT token is burned in
    assert {r for c, v, r, _ in flagged.flagged_cohorts if c == "site"} == {"corner_top_left"}
    ex = flagged.examples[flagged.examples["value"] == "site_b"]
    assert 1 <= len(ex) <= 3 and (ex["share"] > 0.1).all()
    clean_result = _audit(shortcut_cohort, shortcut=False)
    clean = clean_result.audits["gradcam"]
    assert clean.flagged_values == ()
    # trust cards in both directions (demo cohort: 25 lesion cases, 3 of them with the token)
    trusted, pos, token, cards = _trusted(clean_result)
    assert trusted[pos & ~token].mean() >= 0.8  # clean model, lesion cases: mostly trusted
    trusted_s, pos_s, token_s, cards_s = _trusted(shortcut_result)
    assert trusted_s[pos_s & ~token_s].mean() >= 0.8
    assert (pos_s & token_s).sum() >= 2 and not trusted_s[pos_s & token_s].any()
    for case in np.asarray(shortcut_result.cases.index)[pos_s & token_s]:
        card = cards_s[str(case)]  # the shortcut model's map sits on the token, not the lesion
        assert card.anatomy == "fail" and card.anatomy_region == "lesion"
        assert card.shortcut_region == "corner_top_left"
        assert card.shortcut_region_ratio > SHORTCUT_REGION_FACTOR
    # every token case, false positives included, is labelled as a possible shortcut (not
    # only "failed: anatomy"): the demo's 7 token images, 4 of them lesion-free false positives
    outcome = shortcut_result.cases["outcome"].to_numpy()
    assert ((outcome == "FP") & token_s).sum() >= 2
    for case in np.asarray(shortcut_result.cases.index)[token_s]:
        card = cards_s[str(case)]
        assert card.shortcut_region == "corner_top_left", case
        assert card.shortcut_region_ratio > 2 * SHORTCUT_REGION_FACTOR, case  # demo: 7.2-8.4
        label = trust_label(card)
        assert "shortcut region corner_top_left: " in label and "possible shortcut" in label
        assert any(r.startswith("possible shortcut: ") for r in card.reasons)
    # the clean model's maps never lean on a corner
    assert all(c.shortcut_region_ratio <= SHORTCUT_REGION_FACTOR for c in cards.values())
    assert not any("possible shortcut" in trust_label(c) for c in cards.values())
    # why the image border is not a card shortcut region (like the corners): the border
    # frame covers ~39 % of the image, so its ratio cannot exceed 1 / 0.39 < the factor;
    # a bottom-edge strip would be exceeded by the clean model's lesion-free maps, which
    # lie on the bright diaphragm below the lungs (anatomy, not a shortcut)
    for result in (clean_result, shortcut_result):
        maps = result.audits["gradcam"].maps
        frame = region_masks(maps.shape[1:])["border"]
        assert 1 / frame.mean() < SHORTCUT_REGION_FACTOR
        bottom = np.zeros(maps.shape[1:], bool)
        bottom[-math.ceil(0.1 * maps.shape[1]) :] = True
        lean, _ = region_lean(maps, {"bottom": bottom})
        negatives = result.cases["label"].to_numpy() == 0
        assert (lean[negatives] > SHORTCUT_REGION_FACTOR).sum() >= 5
    assert all(c.faithfulness == "pass" for c in cards_s.values())  # no baseline-drift failures
    assert clean.evaluations["total"] == sum(
        v for k, v in clean.evaluations.items() if k != "total"
    )


def test_mask_to_input_nearest_and_letterbox():
    from medlens.model._preprocess import Geometry

    g = Geometry((4, 4), (2, 2), (2, 2), (0.5, 0.5), (0, 0), (0, 0), "resize")
    m = np.zeros((4, 4), bool)
    m[:2, :2] = True
    out = mask_to_input(m, g)
    assert out.tolist() == [[True, False], [False, False]]
    lb = Geometry((2, 4), (4, 4), (2, 4), (1.0, 1.0), (1, 0), (1, 0), "letterbox")
    out = mask_to_input(np.ones((2, 4), bool), lb)
    assert out[0].sum() == 0 and out[3].sum() == 0 and out[1:3].all()
    with pytest.raises(InputDataError, match="expected"):
        mask_to_input(np.ones((3, 3), bool), g)


def test_case_outcomes_and_stratified_sample():
    out = case_outcomes([1, 1, 0, 0], [0.9, 0.1, 0.7, 0.2])
    assert out.tolist() == ["TP", "FN", "FP", "TN"]
    strata = ["a"] * 80 + ["b"] * 15 + ["c"] * 5
    idx = stratified_sample(strata, max_cases=20, seed=0)
    assert len(idx) == 20 and len(set(idx)) == 20
    picked = np.asarray(strata)[idx]
    assert (picked == "a").sum() == 16 and (picked == "b").sum() == 3
    assert (picked == "c").sum() == 1
    np.testing.assert_array_equal(idx, stratified_sample(strata, max_cases=20, seed=0))
    assert len(stratified_sample(strata, max_cases=None)) == 100
    with pytest.raises(MedlensError, match="max_cases"):
        stratified_sample(strata, max_cases=0)


def test_run_audit_bad_inputs():
    from medlens.testing import TinyCNN

    torch.manual_seed(0)
    model = TinyCNN(in_channels=1, num_outputs=2, width=4, depth=2)
    x = torch.rand(4, 1, 16, 16)
    cases = pd.DataFrame({"site": ["a", "a", "b", "b"]})
    with pytest.raises(InputDataError, match="one row per image"):
        run_audit(model, x, cases.iloc[:3])
    with pytest.raises(InputDataError, match="not in the case table"):
        run_audit(model, x, cases, cohort_columns=["scanner"])
    with pytest.raises(MedlensError, match="did you mean"):
        run_audit(model, x, cases, methods=("gradcm",))
    with pytest.raises(InputDataError, match="masks for 4 images"):
        run_audit(model, x, cases, anatomy_masks=[np.ones((16, 16), bool)])


def test_run_audit_structure_and_determinism_on_a_tiny_model():
    from medlens.testing import TinyCNN

    torch.manual_seed(0)
    model = TinyCNN(in_channels=1, num_outputs=2, width=4, depth=2).eval()
    x = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    cases = pd.DataFrame(
        {"site": list("aabbaabb"), "label": [1, 0] * 4, "score": np.linspace(0.1, 0.9, 8)},
        index=[f"case{i}" for i in range(8)],
    )
    anatomy = [np.pad(np.ones((8, 8), bool), 4) for _ in range(8)]
    lesion = [np.pad(np.ones((2, 2), bool), 7) for _ in range(8)]
    kw = dict(
        methods=("saliency", "smoothgrad"),
        anatomy_masks=anatomy,
        lesion_masks=lesion,
        max_cases=6,
        sanity_cases=2,
        sensitivity_cases=2,
        n_steps=3,
        seed=3,
    )
    a = run_audit(model, x, cases, **kw)
    b = run_audit(model, x, cases, **{**kw, "methods": ("saliency",)})
    assert len(a.cases) == 6 and set(a.cases["outcome"]) <= {"TP", "FP", "FN", "TN"}
    assert a.agreement is not None and a.agreement.methods == ("saliency", "smoothgrad")
    for m in kw["methods"]:
        ev = a.evaluations[m]
        assert ev["total"] == sum(v for k, v in ev.items() if k != "total") > 0
        assert [c.case for c in a.audits[m].trust] == list(a.cases.index)
        if m not in b.audits:
            continue
        np.testing.assert_array_equal(
            a.audits[m].faithfulness.deletion_auc, b.audits[m].faithfulness.deletion_auc
        )
        assert a.audits[m].flagged_cohorts == b.audits[m].flagged_cohorts
    assert a.audits["saliency"].localisation_cases.size > 0
    for m in kw["methods"]:  # localisation only on positive cases with a lesion mask
        assert (a.cases["label"].to_numpy()[a.audits[m].localisation_cases] == 1).all()
    # the stochastic method gets a second-seed stability check, the deterministic one not
    assert "trust_stability" in a.evaluations["smoothgrad"]
    assert "trust_stability" not in a.evaluations["saliency"]
