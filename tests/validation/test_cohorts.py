from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from medlens._errors import MedlensError
from medlens.validation import MISSING, adjust_pvalues, cohort_table_columns
from medlens.validation._cohorts import cohort_codes, worst_value


@pytest.mark.parametrize("method,sm_method", [("holm", "holm"), ("bh", "fdr_bh")])
def test_adjust_matches_statsmodels(method, sm_method):
    rng = np.random.default_rng(0)
    for size in (1, 2, 7, 30):
        p = rng.random(size) ** 3
        p[0] = p[-1]  # a tie
        np.testing.assert_allclose(
            adjust_pvalues(p, method=method), multipletests(p, method=sm_method)[1], atol=1e-15
        )


def test_adjust_nan_excluded():
    p = np.array([0.01, np.nan, 0.04])
    out = adjust_pvalues(p, method="holm")
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], multipletests([0.01, 0.04], method="holm")[1])
    with pytest.raises(MedlensError, match="'method' parameter of adjust_pvalues"):
        adjust_pvalues(p, method="bonferroni-ish")


def test_missing_values_form_their_own_cohort():
    codes, values = cohort_codes(pd.Series(["b", None, "a", np.nan, "b"]))
    assert values == ("a", "b", MISSING)
    assert codes.tolist() == [1, 2, 0, 2, 1]


def test_table_columns_fixed():
    cols = cohort_table_columns(["sensitivity", "auc"])
    assert cols[:6] == ["cohort_column", "value", "n", "n_positive", "n_negative", "n_patients"]
    assert "auc_p_holm" in cols and len(cols) == 6 + 2 * 11


def test_worst_value_prefers_unflagged():
    est = {"A": 0.9, "B": 0.5, "C": 0.7}
    assert worst_value(est, {}, lower_is_better=False) == "B"
    assert worst_value(est, {"B": "fewer than 10 positives"}, lower_is_better=False) == "C"
    assert worst_value(est, {}, lower_is_better=True) == "A"
    assert worst_value({"A": float("nan")}, {}, lower_is_better=False) is None
