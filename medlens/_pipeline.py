"""The main job's first steps, shared by ``medlens predict``, ``demo`` and ``run``.

config -> cases (manifest, labels joined) -> images read with the model's window ->
predictions, with every case that could not be read kept as ``status = failed`` and
its reason (never dropped silently).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._errors import InputDataError, MedlensError
from .config import MedlensConfig

__all__ = [
    "CASE_COLUMNS",
    "Cases",
    "STATUS_FAILED",
    "STATUS_OK",
    "load_cases",
    "select_split",
    "predict_cases",
    "read_images",
]

# Pseudonymous case columns of a predictions table, in output order (no file paths).
CASE_COLUMNS = (
    "case_id",
    "patient_key",
    "study_key",
    "split",
    "label",
    "score",
    "site",
    "manufacturer",
    "model_name",
    "sex",
    "age_band",
    "modality",
    "view_position",
    "body_part",
)
STATUS_OK = "ok"
STATUS_FAILED = "failed"
LABELS_MISSING_COLUMNS = "missing column(s) {missing}; the file has: {present}"
LABELS_DUPLICATES = "{n} duplicate path(s), e.g. {example!r}; each image must appear once"
UNREAD_LABELLED = "listed in the labels file but not a readable DICOM image in data.dicom_dir"
NO_SPLIT_COLUMN = (
    "the split column {column!r} is not in the case table (columns: {present}); "
    "set data.split_column or predict all cases"
)
NO_CASES_IN_SPLIT = "no case in split {split!r}; the splits present are: {present}"


@dataclass(frozen=True)
class Cases:
    """The case table of a run and the files that were not cases.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per case: ``case_id``, ``path``, ``patient_key``, ``study_key``,
        ``label`` and cohort columns; ``status`` is ``failed`` (with
        ``failure_reason``) for a labelled case whose file could not be used.
    skipped : tuple of (path, reason)
        Files in the image folder that are not usable images and carry no label.
    """

    table: pd.DataFrame
    skipped: tuple[tuple[str, str], ...] = ()


def _read_labels(path: Path, label_column: str) -> pd.DataFrame:
    try:
        labels = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise InputDataError(f"cannot read the labels CSV ({exc})", source=str(path)) from None
    missing = [c for c in ("path", label_column) if c not in labels.columns]
    if missing:
        raise InputDataError(
            LABELS_MISSING_COLUMNS.format(missing=missing, present=list(labels.columns)),
            source=str(path),
        )
    base = path.resolve().parent
    for col in ["path", *[c for c in labels.columns if c.endswith("_mask")]]:
        labels[col] = [p if pd.isna(p) else str((base / str(p)).resolve()) for p in labels[col]]
    dup = labels["path"].duplicated()
    if dup.any():
        raise InputDataError(
            LABELS_DUPLICATES.format(n=int(dup.sum()), example=labels.loc[dup, "path"].iloc[0]),
            source=str(path),
        )
    return labels.rename(columns={label_column: "label"})


def load_cases(cfg: MedlensConfig) -> Cases:
    """Build the case table a config describes.

    ``data.manifest`` is read with :func:`medlens.io.read_manifest`; ``data.dicom_dir``
    is scanned with :func:`medlens.io.scan_dicom_folder` and ``data.labels`` joined on
    by path. A labelled file that the scan could not use stays in the table with
    ``status = failed`` and the reason.
    """
    from .io import read_manifest, scan_dicom_folder

    data = cfg.data
    if data.manifest is not None:
        manifest = read_manifest(
            data.manifest,
            salt=data.pseudonym_salt,
            root=data.root,
            age_band_edges=data.age_band_edges,
        )
        table = manifest.table.copy()
        table["status"] = STATUS_OK
        return Cases(table, tuple((s.path, s.reason) for s in manifest.skipped))

    manifest = scan_dicom_folder(
        data.dicom_dir,
        salt=data.pseudonym_salt,
        age_band_edges=data.age_band_edges,
        site_names=data.site_names or None,
    )
    table = manifest.table.copy()
    table["status"] = STATUS_OK
    skipped = {str(Path(s.path).resolve()): s.reason for s in manifest.skipped}
    if data.labels is not None:
        labels = _read_labels(Path(data.labels), data.label_column)
        table["path"] = [str(Path(p).resolve()) for p in table["path"]]
        table = table.drop(columns=["label"]).merge(labels, on="path", how="outer", indicator=True)
        unread = table["_merge"] == "right_only"
        table["failure_reason"] = pd.Series([None] * len(table), dtype=object)
        table.loc[unread, "status"] = STATUS_FAILED
        table.loc[unread, "failure_reason"] = [
            skipped.pop(p, UNREAD_LABELLED) for p in table.loc[unread, "path"]
        ]
        table = table.drop(columns="_merge")
        table = table.sort_values("path", kind="stable").reset_index(drop=True)
    return Cases(table, tuple(sorted(skipped.items())))


def read_images(
    paths: list[str], cfg: MedlensConfig, *, progress: bool = False
) -> tuple[list[Any], dict[int, str]]:
    """Read images with the config's window.

    Returns
    -------
    images : list
        A :class:`medlens.io.ScanImage` per path, ``None`` where reading failed.
    failures : dict
        Index -> reason for every path that could not be read.
    """
    from tqdm.auto import tqdm

    from .io import read_image

    images: list[Any] = []
    failures: dict[int, str] = {}
    for i, path in enumerate(
        tqdm(paths, desc="read", unit="img", disable=not progress, leave=False)
    ):
        try:
            images.append(
                read_image(
                    path,
                    window=cfg.preprocess.window,
                    use_file_window=cfg.preprocess.use_file_window,
                )
            )
        except MedlensError as exc:
            images.append(None)
            failures[i] = exc.message
    return images, failures


def select_split(table: pd.DataFrame, cfg: MedlensConfig, split: str | None) -> pd.DataFrame:
    """Rows of ``split`` (all rows when ``split`` is None)."""
    if split is None:
        return table.reset_index(drop=True)
    column = cfg.data.split_column
    if not column or column not in table.columns:
        raise InputDataError(NO_SPLIT_COLUMN.format(column=column, present=list(table.columns)))
    rows = table[table[column] == split]
    if rows.empty:
        present = sorted(str(v) for v in table[column].dropna().unique())
        raise InputDataError(NO_CASES_IN_SPLIT.format(split=split, present=present))
    return rows.reset_index(drop=True)


def predict_cases(
    table: pd.DataFrame, cfg: MedlensConfig, model: Any, *, progress: bool = False
) -> tuple[pd.DataFrame, list[Any]]:
    """Score every case of ``table`` that can be read; keep the others as failed.

    Binary heads add ``score`` (probability of the positive class); other heads add
    one ``prob_<class>`` column per class. Cases whose image cannot be read get
    ``status = failed``, the reason in ``failure_reason`` and an empty score.

    Returns
    -------
    table : pandas.DataFrame
        The input rows, in order, with scores and status.
    images : list
        The ScanImage of each row (``None`` for failed rows), for explanations.
    """
    out = table.reset_index(drop=True).copy()
    if "status" not in out.columns:
        out["status"] = STATUS_OK
    if "failure_reason" not in out.columns:
        out["failure_reason"] = None
    out["failure_reason"] = out["failure_reason"].astype(object)
    todo = [i for i in range(len(out)) if out.at[i, "status"] == STATUS_OK]
    images: list[Any] = [None] * len(out)
    read, failures = read_images([out.at[i, "path"] for i in todo], cfg, progress=progress)
    for j, i in enumerate(todo):
        images[i] = read[j]
        if j in failures:
            out.at[i, "status"] = STATUS_FAILED
            out.at[i, "failure_reason"] = failures[j]
    ok = [i for i in range(len(out)) if images[i] is not None]
    head = cfg.model.head
    columns = (
        ["score"] if head.type.startswith("binary") else [f"prob_{c}" for c in head.class_names]
    )
    for col in columns:
        out[col] = np.nan
    if ok:
        pred = model.predict([images[i] for i in ok], progress=progress)
        if head.type.startswith("binary"):
            out.loc[ok, "score"] = np.asarray(pred.positive_score, dtype=float)
        else:
            probs = np.asarray(pred.probabilities, dtype=float)
            for k, col in enumerate(columns):
                out.loc[ok, col] = probs[:, k]
    return out, images
