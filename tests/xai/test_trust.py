"""Per-case trust cards: each check against its documented threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medlens._errors import InputDataError, MedlensError
from medlens.xai._trust import (
    FAITHFULNESS_MIN_GAP,
    RANDOMISATION_SPEARMAN_MAX,
    STABILITY_SPEARMAN_MIN,
    trust_cards,
    trust_label,
)


def test_each_check_and_label():
    cards = trust_cards(
        ["c1", "c2", "c3", "c4"],
        "saliency",
        randomisation_spearman=[0.1, RANDOMISATION_SPEARMAN_MAX, 0.1, 0.1],
        deletion_auc=[0.2, 0.2, 0.5, 0.2],
        deletion_auc_random=[0.4, 0.4, 0.4, 0.4],
        inside_anatomy_share=[0.6, 0.6, 0.6, 0.2],
        anatomy_fraction=[0.3, 0.3, 0.3, 0.3],
    )
    assert [c.trusted for c in cards] == [True, False, False, False]
    assert trust_label(cards[0]) == "passed trust checks"
    assert cards[1].randomisation == "fail"
    assert trust_label(cards[1]).startswith("FAILED trust checks: not evidence")
    assert "randomisation" in trust_label(cards[1])
    assert cards[2].faithfulness == "fail" and "faithfulness" in trust_label(cards[2])
    assert cards[3].anatomy == "fail" and "anatomy" in trust_label(cards[3])
    assert cards[0].stability == "pass" and math.isnan(cards[0].stability_spearman)
    assert any("deterministic" in r for r in cards[0].reasons)
    # a gap below FAITHFULNESS_MIN_GAP (saturated score) is not a pass
    tiny = trust_cards(
        ["a", "b"],
        "saliency",
        randomisation_spearman=[0.0, 0.0],
        deletion_auc=[0.4 - FAITHFULNESS_MIN_GAP, 0.4 - FAITHFULNESS_MIN_GAP / 2],
        deletion_auc_random=[0.4, 0.4],
    )
    assert [c.faithfulness for c in tiny] == ["pass", "fail"]


def test_not_assessed_without_mask_and_stochastic_stability():
    cards = trust_cards(
        ["a", "b"],
        "smoothgrad",
        randomisation_spearman=[0.0, 0.0],
        deletion_auc=[0.1, 0.1],
        deletion_auc_random=[0.3, 0.3],
        stability_spearman=[STABILITY_SPEARMAN_MIN, STABILITY_SPEARMAN_MIN - 0.01],
    )
    assert cards[0].anatomy == "not assessed" and cards[0].trusted
    assert cards[1].stability == "fail" and not cards[1].trusted
    # an undefined randomisation test is a failure, never a silent pass
    nan_card = trust_cards(
        ["a"],
        "saliency",
        randomisation_spearman=[np.nan],
        deletion_auc=[0.1],
        deletion_auc_random=[0.3],
    )[0]
    assert not nan_card.trusted


def test_bad_inputs():
    with pytest.raises(InputDataError, match="expected 2"):
        trust_cards(
            ["a", "b"],
            "saliency",
            randomisation_spearman=[0.1],
            deletion_auc=[0.1, 0.1],
            deletion_auc_random=[0.2, 0.2],
        )
    with pytest.raises(MedlensError, match="stability_spearman"):
        trust_cards(
            ["a"],
            "lime",
            randomisation_spearman=[0.1],
            deletion_auc=[0.1],
            deletion_auc_random=[0.2],
        )
    with pytest.raises(MedlensError, match="card"):
        trust_label("trusted")
