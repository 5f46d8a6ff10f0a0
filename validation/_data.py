"""Reading and checking a predictions table (CSV, parquet or DataFrame)."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medlens._errors import InputDataError, missing_extra

__all__ = ["PredictionTable", "STATUS_VALUES", "load_predictions", "sha256_file"]

STATUS_VALUES = ("ok", "failed", "indeterminate")
MISSING_COLUMN = "no column {name!r} ({role}); the table has columns: {have}. {hint}"
EMPTY_TABLE = "the predictions table has no rows."
DUPLICATE_IDS = (
    "case ids must be unique; {count} duplicated, e.g. {examples}. Each case must appear once."
)
BAD_STATUS = "status must be one of {allowed}; found {bad}."
MISSING_LABELS = (
    "{count} cases have no label in column {col!r}; every case needs a reference label."
)
UNREADABLE = "cannot read the predictions table ({why})."
SHORT_ROW = (
    "line {line} has {got} fields but the header has {want}{why}; the file looks "
    "truncated or damaged. Re-export the complete table (every row needs every column, "
    "empty values as empty fields between the delimiters)."
)
TRUNCATED_LAST_LINE = " (the last line does not end with a newline)"
UNTERMINATED = (
    "the last line (line {line}) does not end with a newline: the file looks truncated "
    "(e.g. an interrupted copy or download), and its last row may have lost part of a "
    "value. Re-export the complete table; if the file is complete, end it with a newline."
)
UNSUPPORTED_FORMAT = "unsupported file type {suffix!r}; give a .csv, .tsv or .parquet file."


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class PredictionTable:
    """A loaded predictions table and where it came from (``sha256`` of the file, if any)."""

    frame: pd.DataFrame
    source: str
    sha256: str | None


def load_predictions(
    data: str | Path | pd.DataFrame, *, source: str | None = None
) -> PredictionTable:
    """Read a predictions table from a CSV/TSV/parquet file or take a DataFrame.

    Raises
    ------
    InputDataError
        Unreadable file or empty table.
    MissingExtraError
        A parquet file without pyarrow installed (``pip install medlens[parquet]``).
    """
    if isinstance(data, pd.DataFrame):
        frame = data.copy()
        src, digest = source or "<DataFrame>", None
    else:
        path = Path(data)
        src = source or str(path)
        if not path.is_file():
            raise InputDataError("file not found.", source=src)
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise missing_extra(
                    "reading parquet predictions", "pyarrow", "medlens[parquet]"
                ) from None
            try:
                frame = pd.read_parquet(path)
            except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
                raise InputDataError(UNREADABLE.format(why=str(exc).strip()), source=src) from None
        elif suffix in (".csv", ".tsv", ".txt"):
            check_row_lengths(path, delimiter="\t" if suffix == ".tsv" else ",", source=src)
            try:
                frame = pd.read_csv(
                    path,
                    sep="\t" if suffix == ".tsv" else ",",
                    keep_default_na=True,
                    na_values=[""],
                )
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
                if isinstance(exc, pd.errors.EmptyDataError):
                    raise InputDataError(EMPTY_TABLE, source=src) from None
                raise InputDataError(UNREADABLE.format(why=str(exc).strip()), source=src) from None
        else:
            raise InputDataError(UNSUPPORTED_FORMAT.format(suffix=suffix), source=src)
        digest = sha256_file(path)
    if len(frame) == 0:
        raise InputDataError(EMPTY_TABLE, source=src)
    frame.columns = [str(c) for c in frame.columns]
    return PredictionTable(frame, src, digest)


def check_row_lengths(path: str | Path, *, delimiter: str = ",", source: str) -> None:
    """Raise naming the first row with fewer fields than the header.

    pandas fills missing trailing fields of a short row with NaN, so a truncated file
    (e.g. an interrupted copy) would otherwise load with a last case whose status,
    score or cohort silently went missing. Rows with more fields than the header are
    left to pandas (a parser error). Blank lines are skipped, as pandas does.

    A file whose last line does not end with a newline is an error too: a cut inside
    the last field leaves every field present but the value shortened (``0.368`` ->
    ``0.3``), which no field count can reveal; every CSV writer (pandas, R, Excel, the
    csv module) ends the last row with a newline.

    Raises
    ------
    InputDataError
        A short row, naming its line number (1-based, counting the header), or a last
        line without a newline.
    """
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        want = None
        row = None
        for row in reader:
            if not row:
                continue
            if want is None:
                want = len(row)
                continue
            if len(row) < want:
                line = reader.line_num
                why = TRUNCATED_LAST_LINE if _unterminated_last(reader, path) else ""
                raise InputDataError(
                    SHORT_ROW.format(line=line, got=len(row), want=want, why=why), source=source
                )
        if row is not None and _unterminated_last(reader, path):
            raise InputDataError(UNTERMINATED.format(line=reader.line_num), source=source)


def _unterminated_last(reader: Iterator[list[str]], path: str | Path) -> bool:
    """True when the row just read is the last one and the file ends without a newline."""
    if any(row for row in reader):
        return False
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() == 0:
            return False
        fh.seek(-1, 2)
        return fh.read(1) not in (b"\n", b"\r")


def require_columns(
    frame: pd.DataFrame, wanted: Sequence[tuple[str | None, str, str]], source: str
) -> None:
    """Raise naming the first missing column, the columns present and how to fix it."""
    have = ", ".join(repr(c) for c in frame.columns)
    for name, role, hint in wanted:
        if name is not None and name not in frame.columns:
            raise InputDataError(
                MISSING_COLUMN.format(name=name, role=role, have=have, hint=hint), source=source
            )


def check_case_ids(ids: pd.Series, source: str) -> None:
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        examples = sorted({str(v) for v in dup.tolist()})[:3]
        raise InputDataError(
            DUPLICATE_IDS.format(count=int(dup.nunique()), examples=examples),
            source=f"{source}:{ids.name}",
        )


def check_status(status: pd.Series, source: str) -> np.ndarray:
    text = status.astype("string").str.strip().str.lower().fillna("ok").to_numpy(dtype=object)
    bad = sorted(set(text.tolist()) - set(STATUS_VALUES))
    if bad:
        raise InputDataError(
            BAD_STATUS.format(allowed=list(STATUS_VALUES), bad=bad[:5]),
            source=f"{source}:{status.name}",
        )
    return text
