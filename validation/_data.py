"""Reading and checking a predictions table (CSV, parquet or DataFrame)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
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
