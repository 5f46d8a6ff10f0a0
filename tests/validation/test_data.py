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


def test_truncated_last_row_is_an_error(tmp_path):
    full = tmp_path / "full.csv"
    predictions_frame(n=20, n_patients=10).to_csv(full, index=False)
    data = full.read_bytes()
    cut = tmp_path / "cut.csv"
    cut.write_bytes(data[:280])  # as `head -c 280`: the last line stops mid-row
    n_lines = data[:280].count(b"\n") + 1
    with pytest.raises(
        InputDataError,
        match=rf"cut.csv: line {n_lines} has \d+ fields but the header has 9 \(the last line does not end with a newline\)",
    ):
        load_predictions(cut)


def test_short_row_inside_the_file_is_an_error(tmp_path):
    p = tmp_path / "short.csv"
    p.write_text("case_id,label,score,status\na,1,0.9,ok\nb,0\nc,0,0.2,ok\n")
    with pytest.raises(InputDataError, match="line 3 has 2 fields but the header has 4; "):
        load_predictions(p)


def test_last_line_without_newline_is_an_error(tmp_path):
    # a cut inside the last field keeps every field: "age_band" 40-60 -> 40
    full = tmp_path / "full.csv"
    predictions_frame(n=20, n_patients=10).to_csv(full, index=False)
    cut = tmp_path / "cut.csv"
    cut.write_bytes(full.read_bytes()[:300])
    assert cut.read_bytes().endswith(b",40")
    with pytest.raises(InputDataError, match=r"cut.csv: the last line \(line 6\) does not end"):
        load_predictions(cut)


def test_quoted_fields_and_blank_lines_are_read(tmp_path):
    p = tmp_path / "ok.csv"
    p.write_text('case_id,label,score,status\na,1,0.9,ok\n\nb,0,0.1,\n"c,1",0,0.2,failed\n')
    frame = load_predictions(p).frame
    assert list(frame.case_id) == ["a", "b", "c,1"] and frame.status.isna().sum() == 1
