"""Per-case trust cards: each check against its documented threshold, in both directions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from medlens._errors import InputDataError, MedlensError
from medlens.xai._audit import case_trust_cards
from medlens.xai._base import _REGISTRY, Explainer
from medlens.xai._faithfulness import morf_lerf_gap
from medlens.xai._trust import (
    ANATOMY_ENRICHMENT_MIN,
    FAITHFULNESS_MIN_GAP,
    RANDOMISATION_SPEARMAN_MAX,
    SHORTCUT_REGION_FACTOR,
    STABILITY_SPEARMAN_MIN,
    TRUST_CRITERIA,
    reference_shares,
    region_lean,
    trust_cards,
    trust_label,
)


def test_each_check_and_label():
    cards = trust_cards(
        ["c1", "c2", "c3", "c4"],
        "saliency",
        randomisation_spearman=[0.1, RANDOMISATION_SPEARMAN_MAX, 0.1, 0.1],
        faithfulness_gap=[0.5, 0.5, FAITHFULNESS_MIN_GAP - 0.01, 0.5],
        inside_anatomy_share=[0.6, 0.6, 0.6, 0.2],
        anatomy_fraction=[0.3, 0.3, 0.3, 0.3],
        anatomy_region=["lesion", "anatomy", "anatomy", "anatomy"],
    )
    assert [c.trusted for c in cards] == [True, False, False, False]
    assert trust_label(cards[0]) == "passed trust checks"
    assert "near the lesion" in cards[0].reasons[-1] and cards[0].anatomy_region == "lesion"
    assert cards[1].randomisation == "fail"
    assert trust_label(cards[1]).startswith("FAILED trust checks: not evidence")
    assert "randomisation" in trust_label(cards[1])
    assert cards[2].faithfulness == "fail" and "faithfulness" in trust_label(cards[2])
    assert cards[3].anatomy == "fail" and "anatomy" in trust_label(cards[3])
    assert cards[0].stability == "pass" and math.isnan(cards[0].stability_spearman)
    assert any("deterministic" in r for r in cards[0].reasons)
    assert math.isnan(cards[0].deletion_auc)  # reference values are optional
    # exactly at the thresholds: the gap passes, the enrichment passes
    edge = trust_cards(
        ["a", "b"],
        "saliency",
        randomisation_spearman=[0.0, 0.0],
        faithfulness_gap=[FAITHFULNESS_MIN_GAP, np.nan],
        inside_anatomy_share=[ANATOMY_ENRICHMENT_MIN * 0.25, 0.5],
        anatomy_fraction=[0.25, 0.25],
    )
    assert [c.faithfulness for c in edge] == ["pass", "fail"]  # undefined gap is a failure
    assert edge[0].anatomy == "pass" and edge[0].trusted and not edge[1].trusted


def test_not_assessed_without_mask_and_stochastic_stability():
    cards = trust_cards(
        ["a", "b"],
        "smoothgrad",
        randomisation_spearman=[0.0, 0.0],
        faithfulness_gap=[0.6, 0.6],
        stability_spearman=[STABILITY_SPEARMAN_MIN, STABILITY_SPEARMAN_MIN - 0.01],
    )
    assert cards[0].anatomy == "not assessed" and cards[0].trusted
    assert cards[0].anatomy_region == ""
    assert cards[1].stability == "fail" and not cards[1].trusted
    # an undefined randomisation test is a failure, never a silent pass
    nan_card = trust_cards(
        ["a"], "saliency", randomisation_spearman=[np.nan], faithfulness_gap=[0.6]
    )[0]
    assert not nan_card.trusted


def test_criteria_record_the_thresholds():
    assert TRUST_CRITERIA["faithfulness"]["threshold"] == FAITHFULNESS_MIN_GAP
    assert TRUST_CRITERIA["randomisation"]["threshold"] == RANDOMISATION_SPEARMAN_MAX
    assert TRUST_CRITERIA["anatomy"]["threshold"] == ANATOMY_ENRICHMENT_MIN
    assert "LeRF" in TRUST_CRITERIA["faithfulness"]["statistic"]


def test_reference_shares_lesion_first_then_anatomy_with_margin():
    maps = np.zeros((3, 32, 32))
    maps[:, 10, 10] = 1.0  # all positive mass on one pixel
    maps[:, 0, 0] = -5.0  # negative attribution is not counted
    lesion = np.zeros((3, 32, 32), bool)
    lesion[0, 11:13, 11:13] = True  # 1 px diagonal from the mass: inside after widening
    anatomy = np.zeros((3, 32, 32), bool)
    anatomy[:, 20:30, 20:30] = True
    share, frac, region = reference_shares(maps, anatomy_masks=anatomy, lesion_masks=lesion)
    assert region == ("lesion", "anatomy", "anatomy")
    assert share[0] == 1.0 and share[1] == 0.0
    # margin = ceil(32 / 16) = 2 px, Euclidean: the 2x2 lesion gains 2x2 bands on its four
    # sides and one diagonal pixel per corner (distance sqrt(2)); (1, 2) offsets are sqrt(5) > 2
    grown = ndimage.distance_transform_edt(~lesion[0]) <= 2
    assert grown.sum() == 4 + 4 * 4 + 4 and frac[0] == pytest.approx(24 / 1024)
    share0, frac0, _ = reference_shares(maps, lesion_masks=lesion, margin=0.0)
    assert share0[0] == 0.0 and frac0[0] == pytest.approx(4 / 1024)
    assert np.isnan(share0[1]) and np.isnan(frac0[1])  # no mask of either kind
    with pytest.raises(InputDataError, match="expected"):
        reference_shares(maps, anatomy_masks=anatomy[:2])
    with pytest.raises(MedlensError, match="margin"):
        reference_shares(maps, anatomy_masks=anatomy, margin=0.5)


def test_region_lean_definition_exclusion_and_card():
    maps = np.zeros((2, 16, 16))
    maps[:, 0:2, 0:2] = 1.0  # 4 px of 8 with mass in the corner
    maps[:, 8:10, 8:10] = 1.0
    corner = np.zeros((16, 16), bool)
    corner[0:4, 0:4] = True  # 16 of 256 px
    ratio, name = region_lean(maps, {"corner_top_left": corner, "none": np.zeros_like(corner)})
    # share 0.5 over area 1/16 = 8; the empty region is skipped
    np.testing.assert_allclose(ratio, [8.0, 8.0])
    assert name == ("corner_top_left", "corner_top_left")
    exclude = np.zeros((2, 16, 16), bool)
    exclude[1, 0:4, 0:4] = True  # anatomy fills case 1's corner: not a shortcut there
    ratio, name = region_lean(maps, {"corner_top_left": corner}, exclude=exclude)
    assert ratio[0] == 8.0 and np.isnan(ratio[1]) and name == ("corner_top_left", "")
    cards = trust_cards(
        ["a", "b", "c"],
        "gradcam",
        randomisation_spearman=[0.0] * 3,
        faithfulness_gap=[0.5] * 3,
        inside_anatomy_share=[0.9, 0.9, np.nan],
        anatomy_fraction=[0.2, 0.2, np.nan],
        shortcut_region_ratio=[SHORTCUT_REGION_FACTOR, SHORTCUT_REGION_FACTOR + 0.1, 9.0],
        shortcut_region=["corner_top_left", "text", "corner_top_right"],
    )
    assert [c.anatomy for c in cards] == ["pass", "fail", "fail"]
    assert "shortcut region text" in cards[1].reasons[-1] and cards[1].shortcut_region == "text"
    assert not cards[2].trusted  # even without a mask, a map on a corner token fails
    with pytest.raises(InputDataError, match="region 'r'"):
        region_lean(maps, {"r": np.ones((3, 3), bool)})


def test_morf_lerf_gap_definition_and_drift_invariance():
    f = np.linspace(0, 1, 5)
    morf = np.array([[4.0, 0.0, 0.0, 0.0, 0.0]])
    lerf = np.array([[4.0, 4.0, 4.0, 4.0, 0.0]])
    # AUCs by hand: MoRF 0.5, LeRF 3.5, range 4 -> 0.75
    assert morf_lerf_gap(morf, lerf, f)[0] == pytest.approx(0.75)
    drift = 10 * f  # a baseline that pushes the score up moves both curves alike
    assert morf_lerf_gap(2 * morf + drift, 2 * lerf + drift, f)[0] == pytest.approx(
        (np.trapezoid(2 * lerf[0] - 2 * morf[0], f))
        / np.ptp(np.r_[2 * morf + drift, 2 * lerf + drift])
    )
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert np.isnan(morf_lerf_gap(np.ones((1, 5)), np.ones((1, 5)), f)[0])
    with pytest.raises(InputDataError, match="same shape"):
        morf_lerf_gap(morf, lerf[:, :4], f)


class _EdgeExplainer(Explainer):
    """A model-independent map: Sobel gradient magnitude of the image."""

    name = "test_edge"
    signed = False

    def _attribute(self, x, targets, *, batch_size, seeds):
        img = x.sum(1).detach().cpu().numpy()
        edges = np.stack([np.hypot(ndimage.sobel(a, 0), ndimage.sobel(a, 1)) for a in img])
        return torch.as_tensor(edges, dtype=x.dtype)[:, None]


class _CornerExplainer(Explainer):
    """A map that sits on a corner 'token', scaled by the model output (so it is model-bound)."""

    name = "test_corner"
    signed = False

    def _attribute(self, x, targets, *, batch_size, seeds):
        with torch.no_grad():
            s = self.model(x).reshape(x.shape[0], -1)[:, :1].abs() + 1
        m = torch.zeros(x.shape[0], 1, *x.shape[2:], dtype=x.dtype)
        m[..., :6, :6] = s.reshape(-1, 1, 1, 1) * torch.rand(x.shape[0], 1, 6, 6)
        return m


@pytest.fixture()
def test_explainers(monkeypatch):
    monkeypatch.setitem(_REGISTRY, "test_edge", _EdgeExplainer)
    monkeypatch.setitem(_REGISTRY, "test_corner", _CornerExplainer)


def test_edge_detector_and_corner_token_maps_are_not_trusted(test_explainers):
    from medlens.testing import TinyCNN

    torch.manual_seed(0)
    model = TinyCNN(in_channels=1, num_outputs=1, width=4, depth=2).eval()
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    anatomy = np.zeros((3, 32, 32), bool)
    anatomy[:, 8:24, 4:28] = True
    ids = ["a", "b", "c"]
    for method, failing in (("test_edge", "randomisation"), ("test_corner", "anatomy")):
        r = _REGISTRY[method](model).explain(x, seed=0)
        cards, ev = case_trust_cards(
            model,
            x,
            r.maps[:, 0],
            r.targets[:, 0],
            case_ids=ids,
            method=method,
            anatomy_masks=anatomy,
            n_steps=4,
        )
        assert [c.case for c in cards] == ids
        assert not any(c.trusted for c in cards), method
        assert all(getattr(c, failing) == "fail" for c in cards), method
        assert ev["trust_faithfulness"] > 0 and ev["trust_randomisation"] > 0
    edge = trust_cards(  # the edge map reproduces itself on the randomised model: rho = 1
        ["a"], "test_edge", randomisation_spearman=[1.0], faithfulness_gap=[0.9]
    )[0]
    assert "barely changes" in edge.reasons[0]


def test_result_trust_card_is_the_one_case_card():
    from medlens.testing import TinyCNN
    from medlens.xai import get_explainer
    from medlens.xai._audit import result_trust_card

    torch.manual_seed(0)
    model = TinyCNN(in_channels=1, num_outputs=2, width=4, depth=2).eval()
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    lesion = np.zeros((32, 32), bool)
    lesion[10:20, 10:20] = True
    r = get_explainer("saliency", model).explain(x, batch_size=8)
    card, ev = result_trust_card(model, x, r, case_id="a", seed=3, batch_size=8, lesion_mask=lesion)
    cards, ev_ref = case_trust_cards(
        model,
        x,
        r.maps[:, 0].astype(np.float64),
        r.targets[:, 0],
        case_ids=["a"],
        method="saliency",
        seed=3,
        batch_size=8,
        lesion_masks=lesion[None],
    )
    assert repr(card) == repr(cards[0]) and ev == ev_ref  # repr: NaN fields compare equal
    assert card.anatomy_region == "lesion"


def test_bad_inputs():
    with pytest.raises(InputDataError, match="expected 2"):
        trust_cards(["a", "b"], "saliency", randomisation_spearman=[0.1], faithfulness_gap=[1, 1])
    with pytest.raises(InputDataError, match="anatomy_region"):
        trust_cards(
            ["a"],
            "saliency",
            randomisation_spearman=[0.1],
            faithfulness_gap=[0.5],
            anatomy_region=["lesion", "anatomy"],
        )
    with pytest.raises(MedlensError, match="stability_spearman"):
        trust_cards(["a"], "lime", randomisation_spearman=[0.1], faithfulness_gap=[0.5])
    with pytest.raises(MedlensError, match="card"):
        trust_label("trusted")
    with pytest.raises(MedlensError, match="maps"):
        reference_shares(np.full((1, 4, 4), np.nan))


def test_label_and_reason_name_the_shortcut_region():
    cards = trust_cards(
        ["on_lesion_and_token", "off_anatomy_on_token", "no_mask_on_token", "off_anatomy", "at"],
        "gradcam",
        randomisation_spearman=[0.0, 0.0, 0.0, 0.0, 0.0],
        faithfulness_gap=[0.5, 0.1, 0.5, 0.5, 0.5],
        inside_anatomy_share=[0.9, 0.05, np.nan, 0.05, 0.9],
        anatomy_fraction=[0.2, 0.2, np.nan, 0.2, 0.2],
        anatomy_region=["lesion", "anatomy", "anatomy", "anatomy", "lesion"],
        shortcut_region_ratio=[4.04, 7.84, 9.0, 1.2, SHORTCUT_REGION_FACTOR],
        shortcut_region=["port", "corner_top_left", "corner_top_right", "border", "port"],
    )
    labels = [trust_label(c) for c in cards]
    # enriched on the lesion: only the shortcut failed, and the label says which region
    assert labels[0] == (
        "FAILED trust checks: not evidence (failed: shortcut region port: 4.0x a uniform "
        "map's share - possible shortcut)"
    )
    # both: the share on the anatomy is too low and the map leans on the token corner
    assert labels[1] == (
        "FAILED trust checks: not evidence (failed: faithfulness, anatomy, shortcut region "
        "corner_top_left: 7.8x a uniform map's share - possible shortcut)"
    )
    assert labels[2] == (
        "FAILED trust checks: not evidence (failed: shortcut region corner_top_right: 9.0x "
        "a uniform map's share - possible shortcut)"
    )
    assert labels[3] == "FAILED trust checks: not evidence (failed: anatomy)"  # no lean
    assert labels[4] == "passed trust checks"  # exactly at the factor: not a shortcut
    assert cards[1].reasons[-1] == (
        "possible shortcut: attribution leans on the shortcut region corner_top_left, 7.8x "
        f"a uniform map's share there (more than {SHORTCUT_REGION_FACTOR:g}x fails)"
    )
    assert not any("possible shortcut" in r for r in cards[3].reasons + cards[4].reasons)
    # reports quote the label's parenthesis: it must not contain a closing one
    for label in labels:
        assert label.count(")") <= 1 and label.endswith((")", "checks"))
