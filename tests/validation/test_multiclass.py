from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from medlens._errors import InputDataError
from medlens.validation import one_vs_rest


@pytest.fixture
def mc():
    rng = np.random.default_rng(4)
    n = 240
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return np.array(["a", "b", "c"])[y], p


def test_multiclass_matches_sklearn(mc):
    y, p = mc
    r = one_vs_rest(y, p, classes=["a", "b", "c"])
    assert r.macro_auc == pytest.approx(
        roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-14
    )
    for j, c in enumerate("abc"):
        assert r.auc[c].estimate == pytest.approx(roc_auc_score(y == c, p[:, j]), abs=1e-14)
        assert r.average_precision[c].estimate == pytest.approx(
            average_precision_score(y == c, p[:, j]), abs=1e-14
        )
        assert r.auc[c].ci_low < r.auc[c].estimate < r.auc[c].ci_high


def test_multilabel(mc):
    _, p = mc
    rng = np.random.default_rng(0)
    y = (rng.random(p.shape) < p).astype(int)
    r = one_vs_rest(y, p, classes=["x", "y", "z"], multilabel=True)
    assert r.macro_auc == pytest.approx(roc_auc_score(y, p, average="macro"), abs=1e-14)


def test_bad_input(mc):
    y, p = mc
    with pytest.raises(InputDataError, match="declared classes"):
        one_vs_rest(np.concatenate([y[:-1], ["d"]]), p, classes=["a", "b", "c"])
    with pytest.raises(InputDataError, match=r"shape \(n, 2\)"):
        one_vs_rest(y, p, classes=["a", "b"])
