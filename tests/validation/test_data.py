"""Reading predictions tables: parquet round trip and unreadable files."""

from __future__ import annotations

import pandas as pd
import pytest

from medlens.errors import InputDataError
from medlens.validation import load_predictions

from .conftest import predictions_frame

pytest.importorskip("pyarrow")


def test_parquet_equals_csv(tmp_path):
    frame = predictions_frame(n=60, n_patients=30)
    pq, csv = tmp_path / "pred.parquet", tmp_path / "pred.csv"
    frame.to_parquet(pq, index=False)
    frame.to_csv(csv, index=False)
    from_pq, from_csv = load_predictions(pq), load_predictions(csv)
    pd.testing.assert_frame_equal(from_pq.frame, from_csv.frame)
    assert from_pq.source == str(pq) and len(from_pq.sha256) == 64


def test_corrupt_parquet_is_a_clear_error(tmp_path):
    p = tmp_path / "pred.parquet"
    p.write_bytes(b"PAR1 this is not a parquet file PAR1")
    with pytest.raises(InputDataError, match=r"pred\.parquet.*cannot read the predictions table"):
        load_predictions(p)
