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
    "DATASET_DEFINITION",
    "STATUS_FAILED",
    "STATUS_OK",
    "UNKNOWN_KEY",
    "case_mask",
    "case_masks",
    "dataset_fingerprint",
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
#: Patient / study key of a failed case whose header could not be read (``unknown-<hex>``)
UNKNOWN_KEY = "unknown"
#: The cohort attributes a DICOM-folder scan derives (the case columns from ``site`` on)
_SCAN_COHORT_COLUMNS = CASE_COLUMNS[CASE_COLUMNS.index("site") :]
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
        _fill_failed_keys(table, unread.to_numpy(), manifest.skipped_headers, cfg)
        table = table.sort_values("path", kind="stable").reset_index(drop=True)
    return Cases(table, tuple(sorted(skipped.items())))


def _fill_failed_keys(
    table: pd.DataFrame,
    unread: np.ndarray,
    headers: Any,
    cfg: MedlensConfig,
) -> None:
    """Give labelled files that the scan could not use their keys and cohort (in place).

    Values the labels CSV gives are kept. When the header was readable (a duplicate SOP
    Instance UID, a non-image object) the row takes the pseudonymous keys and cohort
    attributes the scan derived from it;
    otherwise the case id is a salted key of the path relative to ``data.dicom_dir``,
    the patient and study are :data:`UNKNOWN_KEY` ``-<hex>`` (one patient per such
    case, as when no patient is known) and the cohort columns :data:`MISSING`.
    """
    from .io._cohort import MISSING
    from .io._manifest import path_key

    salt = cfg.data.pseudonym_salt
    keys = [c for c in table.columns if c not in ("path", "label", "status", "failure_reason")]
    keys = [c for c in keys if not c.endswith("_mask")]
    for i in np.flatnonzero(unread):
        path = str(table.at[i, "path"])
        row = headers.get(path) if headers else None
        if row is not None:
            for col in keys:
                if col in row and pd.isna(table.at[i, col]):
                    table.at[i, col] = row[col]
            continue
        case_id = path_key(path, cfg.data.dicom_dir, salt=salt)
        if pd.isna(table.at[i, "case_id"]):
            table.at[i, "case_id"] = case_id
        for col in ("patient_key", "study_key"):
            if col in table.columns and pd.isna(table.at[i, col]):
                table.at[i, col] = f"{UNKNOWN_KEY}-{case_id.removeprefix('case-')}"
        for col in _SCAN_COHORT_COLUMNS:
            if col in table.columns and pd.isna(table.at[i, col]):
                table.at[i, col] = MISSING


MASK_UNREADABLE = (
    "mask file {path!r} of case {case!r} (column {column!r}) {problem}; expected a .npy "
    "boolean array of the scan's shape {shape}. Fix the path in the labels file, or leave the "
    "cell empty when the case has no mask"
)


def case_mask(path: Any, geometry: Any, *, case: str, column: str) -> np.ndarray | None:
    """A case's mask file (.npy on the scan's original grid) on the model-input grid.

    None when the case has no mask (an empty cell); a path that cannot be read or a mask of
    the wrong shape raises :class:`InputDataError` naming the file, the case and the column
    (never an empty mask in its place: the trust checks would lose the lesion silently).
    """
    from .xai._audit import mask_to_input

    if not isinstance(path, str) or not path:
        return None
    shape = tuple(geometry.original_shape)
    try:
        mask = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        problem = "does not exist" if not Path(path).exists() else f"cannot be read ({exc})"
        raise InputDataError(
            MASK_UNREADABLE.format(
                path=path, case=case, column=column, problem=problem, shape=shape
            )
        ) from exc
    if mask.shape != shape:
        raise InputDataError(
            MASK_UNREADABLE.format(
                path=path, case=case, column=column, problem=f"has shape {mask.shape}", shape=shape
            )
        )
    return mask_to_input(mask, geometry)


def case_masks(table: pd.DataFrame, column: str, geometries: list[Any]) -> list | None:
    """:func:`case_mask` for every row of ``table`` (in order); None when the table has no
    such column or no case has a mask."""
    if column not in table.columns or table[column].isna().all():
        return None
    return [
        case_mask(p, g, case=str(c), column=column)
        for p, g, c in zip(table[column], geometries, table["case_id"], strict=True)
    ]


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


DATASET_DEFINITION = (
    "SHA-256 of the sorted list of (path relative to {root}, SHA-256 of the file) of the "
    "{n} image file(s) ({split}) this run read ('absent' for a listed file "
    "that does not exist); the labels file is hashed separately"
)


def dataset_fingerprint(
    table: pd.DataFrame,
    cfg: MedlensConfig,
    *,
    digests: list[str] | None = None,
    split: str = "all",
) -> dict[str, Any]:
    """SHA-256 of the image files a run used, independent of where the data set lies.

    The digest is the SHA-256 of the JSON list of ``[relative path, file SHA-256]``
    pairs, sorted by path, of every row of ``table``. Paths are taken relative to
    ``data.dicom_dir`` (a folder scan) or ``data.root`` / the manifest's folder, so the
    same files give the same digest on another machine; a renamed, added, removed or
    changed file changes it.

    Parameters
    ----------
    table : pandas.DataFrame
        Cases with a ``path`` column (e.g. the test split).
    cfg : MedlensConfig
    digests : list of str, optional
        The files' SHA-256 in row order when already computed (``"absent"`` for a file
        that does not exist).
    split : str
        Which cases ``table`` holds, for the recorded definition.

    Returns
    -------
    dict
        ``sha256``, ``n_files``, ``root`` (``"data.dicom_dir"``, ``"data.root"`` or
        ``"the manifest's folder"``), ``split`` and ``definition`` (how it is computed).
    """
    import hashlib
    import json
    import os

    from .reports import sha256_file

    data = cfg.data
    if data.dicom_dir is not None:
        base, root_name = Path(data.dicom_dir), "data.dicom_dir"
    elif data.root is not None:
        base, root_name = Path(data.root), "data.root"
    else:
        base, root_name = Path(data.manifest).parent, "the manifest's folder"
    base = base.resolve()
    paths = [str(p) for p in table["path"]] if "path" in table.columns else []
    if digests is None or len(digests) != len(paths):
        digests = [sha256_file(p) if Path(p).is_file() else "absent" for p in paths]
    pairs = []
    for path, digest in zip(paths, digests, strict=True):
        p = Path(path).resolve()
        try:
            rel = p.relative_to(base).as_posix()
        except ValueError:
            rel = Path(os.path.relpath(p, base)).as_posix()
        pairs.append([rel, digest])
    pairs.sort()
    text = json.dumps(pairs, separators=(",", ":"), ensure_ascii=True)
    return {
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "n_files": len(pairs),
        "root": root_name,
        "split": split,
        "definition": DATASET_DEFINITION.format(root=root_name, n=len(pairs), split=split),
    }


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
