"""Localisation scores against worked examples and sklearn's ROC AUC."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medlens._errors import InputDataError, MedlensError
from medlens.xai._localisation import (
    LocalisationResult,
    energy_pointing_game,
    localisation_scores,
    map_mask_auc,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_k_iou,
)


@pytest.fixture
def case():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(5, 16, 16))
    masks = np.zeros((5, 16, 16), dtype=bool)
    for i in range(5):
        r, c = rng.integers(0, 10, 2)
        masks[i, r : r + 5, c : c + 4] = True
    maps[0][masks[0]] += 3.0  # case 0: map concentrated in the lesion
    return maps, masks


def test_pointing_game_hits_misses_and_tolerance():
    maps = np.zeros((2, 20, 20))
    masks = np.zeros((2, 20, 20), dtype=bool)
    masks[:, 5:8, 5:8] = True
    maps[0, 6, 6] = 1.0  # inside
    maps[1, 6, 12] = 1.0  # 5 px to the right of the mask's edge (column 7)
    np.testing.assert_array_equal(pointing_game(maps, masks), [1.0, 0.0])
    np.testing.assert_array_equal(pointing_game(maps, masks, tolerance=5), [1.0, 1.0])
    np.testing.assert_array_equal(pointing_game(maps, masks, tolerance=4.9), [1.0, 0.0])


def test_pointing_game_ties_any_maximum_counts():
    maps = np.zeros((1, 4, 4))
    maps[0, 0, 0] = maps[0, 3, 3] = 2.0
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, 3, 3] = True
    assert pointing_game(maps, mask)[0] == 1.0


def test_empty_mask_gives_nan_and_warning_never_zero(case):
    maps, masks = case
    masks = masks.copy()
    masks[3] = False
    for fn in (
        pointing_game,
        relevance_mass_accuracy,
        relevance_rank_accuracy,
        top_k_iou,
        map_mask_auc,
    ):
        with pytest.warns(RuntimeWarning, match=r"undefined for case\(s\) 3 \(the mask is empty\)"):
            out = fn(maps, masks)
        assert np.isnan(out[3]) and np.isfinite(out[[0, 1, 2, 4]]).all()


def test_relevance_mass_accuracy_paper_definition(case):
    maps, masks = case
    pos = np.clip(maps, 0, None)
    ref = [(p * m).sum() / p.sum() for p, m in zip(pos, masks, strict=True)]
    np.testing.assert_allclose(relevance_mass_accuracy(maps, masks), ref)
    np.testing.assert_allclose(energy_pointing_game(maps, masks), ref)
    absref = [(np.abs(p) * m).sum() / np.abs(p).sum() for p, m in zip(maps, masks, strict=True)]
    np.testing.assert_allclose(relevance_mass_accuracy(maps, masks, attribution="absolute"), absref)
    rma = relevance_mass_accuracy(maps, masks)
    assert rma[0] > 2 * rma[1:].max()  # the lesion-focused map scores far higher


def test_relevance_mass_zero_total_is_nan():
    maps = -np.ones((1, 4, 4))
    mask = np.ones((1, 4, 4), dtype=bool)
    with pytest.warns(RuntimeWarning, match="total attribution mass is zero"):
        assert np.isnan(relevance_mass_accuracy(maps, mask)[0])


def test_relevance_rank_accuracy_worked_example():
    maps = np.arange(16, dtype=float).reshape(1, 4, 4)  # highest values in the last row
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, 3, :2] = True  # K = 2; top-2 pixels are (3,3),(3,2) -> 0 hits
    assert relevance_rank_accuracy(maps, mask)[0] == 0.0
    mask[0, 3, 3] = True  # K = 3; top-3 = (3,3),(3,2),(3,1) -> 2 hits
    assert relevance_rank_accuracy(maps, mask)[0] == pytest.approx(2 / 3)


def test_top_k_iou_worked_example():
    maps = np.arange(16, dtype=float).reshape(1, 4, 4)
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, 3, :] = True  # 4 pixels; top 25 % = last row exactly
    assert top_k_iou(maps, mask, k=0.25)[0] == 1.0
    assert top_k_iou(maps, mask, k=0.5)[0] == 0.5


def test_map_mask_auc_matches_sklearn(case):
    maps, masks = case
    ref = [roc_auc_score(m.ravel(), p.ravel()) for p, m in zip(maps, masks, strict=True)]
    np.testing.assert_allclose(map_mask_auc(maps, masks), ref, atol=1e-12)
    tied = np.round(maps)  # heavy ties: average ranks as sklearn
    ref_t = [roc_auc_score(m.ravel(), p.ravel()) for p, m in zip(tied, masks, strict=True)]
    np.testing.assert_allclose(map_mask_auc(tied, masks), ref_t, atol=1e-12)


def test_map_mask_auc_full_mask_is_nan():
    with pytest.warns(RuntimeWarning, match="covers the whole image"):
        assert np.isnan(
            map_mask_auc(np.random.default_rng(0).random((1, 3, 3)), np.ones((1, 3, 3)))[0]
        )


def test_localisation_scores_bundle(case):
    maps, masks = case
    res = localisation_scores(maps, masks, tolerance=1, k=0.1)
    assert isinstance(res, LocalisationResult)
    np.testing.assert_allclose(res.pointing_game, pointing_game(maps, masks, tolerance=1))
    np.testing.assert_allclose(res.top_k_iou, top_k_iou(maps, masks, k=0.1))
    np.testing.assert_allclose(res.map_mask_auc, map_mask_auc(maps, masks))
    assert res.n_empty_masks == 0
    frame = res.to_frame()
    assert len(frame) == 5 and "relevance_rank_accuracy" in frame.columns


def test_3d_maps_work():
    rng = np.random.default_rng(3)
    maps = rng.random((2, 4, 6, 6))
    masks = np.zeros_like(maps, dtype=bool)
    masks[:, 1:3, 2:4, 2:4] = True
    maps[masks] += 1
    np.testing.assert_array_equal(pointing_game(maps, masks), [1.0, 1.0])
    np.testing.assert_allclose(map_mask_auc(maps, masks), 1.0)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda m, k: pointing_game(m, k[:, :4]), InputDataError, "same shape"),
        (lambda m, k: pointing_game(m, k * 0.5), InputDataError, "boolean or 0/1"),
        (lambda m, k: pointing_game(m, k, tolerance=-1), MedlensError, "'tolerance' parameter"),
        (
            lambda m, k: relevance_mass_accuracy(m, k, attribution="pos"),
            MedlensError,
            "'attribution'",
        ),
        (lambda m, k: top_k_iou(m, k, k=2.0), MedlensError, "'k' parameter of top_k_iou"),
        (lambda m, k: map_mask_auc(m[0, 0], k[0, 0]), InputDataError, "shape"),
    ],
)
def test_bad_inputs(case, call, exc, match):
    maps, masks = case
    with pytest.raises(exc, match=match):
        call(maps, masks)
