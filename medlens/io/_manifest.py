"""Manifests: the table of cases (path, label, pseudonymous keys, cohort columns).

Built from a CSV (:func:`read_manifest`) or from the headers of a DICOM folder
(:func:`scan_dicom_folder`). Raw patient and study identifiers are replaced by
salted keys inside the reader and never leave it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from .._errors import InputDataError, MedlensError, UnreadableImageError
from ._cohort import MISSING, _check_edges, age_band, cohort_attributes, pseudonymize

__all__ = ["Manifest", "SkippedFile", "path_key", "read_manifest", "scan_dicom_folder"]

REQUIRED_COLUMNS = ("path", "label", "patient_id", "study_id")
MISSING_COLUMNS = "missing required column(s) {missing}; the file has: {present}"
DUPLICATE_PATHS = "{n} duplicate path(s), e.g. {example!r}; each image must appear once"
EMPTY_PATHS = "{n} row(s) have an empty 'path' (first at row {row})"
UNREADABLE_CSV = "cannot read the manifest CSV ({reason})"
NOTHING_READABLE = (
    "no readable DICOM image in the folder ({n} file(s) skipped{example}); see Manifest.skipped"
)
NOT_A_FOLDER = "not a folder"
DUPLICATE_SOP = "duplicate SOP Instance UID (the same image is stored twice)"
RESERVED = "column {name!r} is produced by medlens; rename it in the CSV"
_DIRECT_IDS = ("patient_id", "study_id", "patient_name", "birth_date", "accession_number")
_SCAN_ORDER = (
    "case_id",
    "path",
    "patient_key",
    "study_key",
    "label",
    "site",
    "manufacturer",
    "model_name",
    "sex",
    "age_band",
    "modality",
    "view_position",
    "body_part",
)


class SkippedFile(NamedTuple):
    """A file left out of a manifest and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Manifest:
    """A table of cases with pseudonymous keys and cohort columns.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per image: ``case_id``, ``path`` (absolute), ``patient_key``,
        ``study_key``, ``label`` (NA for folder scans) and cohort columns.
    skipped : tuple of SkippedFile
        Files that could not be used, with the reason.
    source : str
        The CSV file or folder the manifest came from.
    skipped_headers : mapping of str to mapping
        For skipped files whose header could be read (a non-image object, no pixel
        data, a duplicate SOP Instance UID): path -> the pseudonymous row the file would
        have had (``case_id``, ``patient_key``, ``study_key``, cohort columns), so that a
        labelled file that fails keeps its keys and cohort. A duplicate gets a
        ``case_id`` from its path relative to the folder, since its SOP Instance UID key
        is taken by the copy kept.
    """

    table: pd.DataFrame = field(repr=False)
    skipped: tuple[SkippedFile, ...] = ()
    source: str = ""
    skipped_headers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return (
            f"Manifest(source={self.source!r}, rows={len(self.table)}, "
            f"columns={list(self.table.columns)}, skipped={len(self.skipped)})"
        )

    def write_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the table as CSV (UTF-8, no index); return the path written."""
        out = Path(path)
        try:
            self.table.to_csv(out, index=False)
        except OSError as exc:
            raise MedlensError(
                f"cannot write the manifest ({exc.strerror})", source=str(out)
            ) from None
        return out

    def write_skipped_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the skipped files (path, reason) as CSV for the run record."""
        out = Path(path)
        pd.DataFrame(list(self.skipped), columns=["path", "reason"]).to_csv(out, index=False)
        return out


def _age_years_from_column(value: Any) -> float | None:
    try:
        age = float(value)
    except (TypeError, ValueError):
        return None
    return None if pd.isna(age) else age


def read_manifest(
    csv_path: str | os.PathLike[str],
    *,
    salt: str,
    root: str | os.PathLike[str] | None = None,
    age_band_edges: Sequence[int] = (0, 40, 60, 80),
) -> Manifest:
    """Read a CSV manifest and pseudonymise its patient and study columns.

    Parameters
    ----------
    csv_path : path
        CSV with columns ``path``, ``label``, ``patient_id``, ``study_id`` and
        any cohort columns (e.g. site, sex, age or age_band, manufacturer).
    salt : str
        Pseudonymisation salt (config ``data.pseudonym_salt``).
    root : path, optional
        Folder that relative paths are resolved against; default the CSV's folder.
    age_band_edges : sequence of int, default (0, 40, 60, 80)
        Used to derive ``age_band`` from an ``age`` column (years) when the CSV
        has no ``age_band`` column; the raw age column is then dropped.

    Returns
    -------
    Manifest
        ``patient_id``/``study_id`` replaced by ``patient_key``/``study_key``;
        ``case_id`` kept if the CSV has one, else a salted key of the path.

    Raises
    ------
    InputDataError
        Unreadable CSV, missing columns (naming those present), empty or
        duplicate paths.
    """
    edges = _check_edges(age_band_edges, "read_manifest")
    pseudonymize("", salt=salt)  # validates the salt before reading anything
    csv_path = Path(csv_path)
    src = str(csv_path)
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = getattr(exc, "strerror", None) or " ".join(str(exc).split()) or type(exc).__name__
        raise InputDataError(UNREADABLE_CSV.format(reason=reason), source=src) from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputDataError(
            MISSING_COLUMNS.format(
                missing=", ".join(missing), present=", ".join(df.columns) or "(none)"
            ),
            source=src,
        )
    for name in ("patient_key", "study_key"):
        if name in df.columns:
            raise InputDataError(RESERVED.format(name=name), source=src)
    empty = df["path"].isna() | (df["path"].fillna("").str.strip() == "")
    if empty.any():
        raise InputDataError(
            EMPTY_PATHS.format(n=int(empty.sum()), row=int(empty.idxmax()) + 2), source=src
        )
    base = Path(root) if root is not None else csv_path.resolve().parent
    paths = [
        str((base / p.strip()).resolve())
        if not Path(p.strip()).is_absolute()
        else str(Path(p.strip()))
        for p in df["path"]
    ]
    dup = pd.Series(paths).duplicated(keep=False)
    if dup.any():
        first = df["path"][dup.values].iloc[0]
        raise InputDataError(DUPLICATE_PATHS.format(n=int(dup.sum()), example=first), source=src)

    out = pd.DataFrame(index=df.index)
    if "case_id" in df.columns:
        out["case_id"] = df["case_id"]
    else:
        out["case_id"] = [
            pseudonymize(p, salt=salt, prefix="case-") for p in df["path"].str.strip()
        ]
    out["path"] = paths
    out["patient_key"] = [pseudonymize(v, salt=salt) for v in df["patient_id"]]
    out["study_key"] = [pseudonymize(v, salt=salt) for v in df["study_id"]]
    label = pd.to_numeric(df["label"], errors="coerce")
    out["label"] = label if label.notna().sum() == df["label"].notna().sum() else df["label"]
    cohort = [
        c for c in df.columns if c not in (*REQUIRED_COLUMNS, "case_id") and c not in _DIRECT_IDS
    ]
    for name in cohort:
        if name == "age" and "age_band" not in df.columns:
            out["age_band"] = [age_band(_age_years_from_column(v), edges) for v in df["age"]]
            continue
        out[name] = df[name].fillna(MISSING)
    return Manifest(table=out.reset_index(drop=True), skipped=(), source=src)


class _HeaderSkip(MedlensError):
    """A file whose header was read but that is not a usable image (carries its row)."""

    def __init__(self, message: str, *, source: str, row: dict[str, Any]) -> None:
        super().__init__(message, source=source)
        self.row = row


def path_key(path: str | os.PathLike[str], root: str | os.PathLike[str], *, salt: str) -> str:
    """Salted case key of a file from its path relative to ``root`` (posix form).

    Stable across machines and mount points (the folder the data lie in does not enter
    the key); used for files whose header gives no SOP Instance UID.
    """
    p, r = Path(path).resolve(), Path(root).resolve()
    try:
        rel = p.relative_to(r).as_posix()
    except ValueError:
        rel = Path(os.path.relpath(p, r)).as_posix()
    return str(pseudonymize(rel, salt=salt, prefix="case-"))


def _scan_one(
    path: Path,
    salt: str,
    edges: tuple[int, ...],
    site_names: Mapping[str, str] | None,
    root: Path,
) -> dict[str, Any]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    from ._dicom import _NON_IMAGE_PIXELS, NO_PIXEL_DATA, NOT_AN_IMAGE, NOT_DICOM, sop_class_name

    src = str(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        raise UnreadableImageError(NOT_DICOM.format(detail=""), source=src) from None
    except MemoryError:
        raise
    except Exception as exc:
        raise UnreadableImageError(
            f"cannot parse the DICOM header ({type(exc).__name__})", source=src
        ) from None
    row: dict[str, Any] | None = None
    bad_header: Exception | None = None
    try:
        attrs = cohort_attributes(ds, salt=salt, age_band_edges=edges, site_names=site_names)
        row = {
            "case_id": pseudonymize(ds.get("SOPInstanceUID"), salt=salt, prefix="case-")
            or path_key(path, root, salt=salt),
            "path": str(path.resolve()),
            "patient_key": pseudonymize(ds.get("PatientID"), salt=salt),
            "study_key": pseudonymize(ds.get("StudyInstanceUID"), salt=salt),
            "label": pd.NA,
            **attrs,
        }
    except MedlensError:
        raise
    except Exception as exc:  # a malformed header value
        bad_header = exc
    sop = str(ds.get("SOPClassUID", "") or "")
    reason = None
    if sop in _NON_IMAGE_PIXELS:
        reason = NOT_AN_IMAGE.format(sop_class=sop_class_name(ds), what=_NON_IMAGE_PIXELS[sop])
    elif not ds.get("Rows") or not ds.get("Columns"):
        reason = NO_PIXEL_DATA.format(sop_class=sop_class_name(ds))
    if reason is not None:
        if row is None:
            raise UnreadableImageError(reason, source=src)
        raise _HeaderSkip(reason, source=src, row=row)
    if row is None:
        raise UnreadableImageError(
            f"invalid header value ({type(bad_header).__name__})", source=src
        ) from None
    return row


def scan_dicom_folder(
    folder: str | os.PathLike[str],
    *,
    salt: str,
    age_band_edges: Sequence[int] = (0, 40, 60, 80),
    site_names: Mapping[str, str] | None = None,
) -> Manifest:
    """Build a manifest from the DICOM headers of every file under ``folder``.

    Only headers are read (``stop_before_pixels``). Identifiers become keys:
    ``patient_key`` from PatientID, ``study_key`` from StudyInstanceUID,
    ``case_id`` from SOPInstanceUID and ``site`` from InstitutionName (or
    ``site_names[InstitutionName]`` when given). PatientAge (else BirthDate
    and StudyDate) becomes ``age_band``.

    Parameters
    ----------
    folder : path
        Folder walked recursively (sorted, so the row order is stable).
    salt : str
        Pseudonymisation salt.
    age_band_edges : sequence of int, default (0, 40, 60, 80)
        Band edges in years.
    site_names : mapping, optional
        Institution name -> site label to use instead of a salted key.

    Returns
    -------
    Manifest
        ``label`` is NA; unreadable and non-image files are in ``skipped``.

    Raises
    ------
    InputDataError
        If ``folder`` is not a folder or no file in it is a readable image.
    """
    edges = _check_edges(age_band_edges, "scan_dicom_folder")
    pseudonymize("", salt=salt)
    root = Path(folder)
    if not root.is_dir():
        raise InputDataError(NOT_A_FOLDER, source=str(root))
    rows: list[dict[str, Any]] = []
    skipped: list[SkippedFile] = []
    headers: dict[str, dict[str, Any]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            try:
                rows.append(_scan_one(path, salt, edges, site_names, root))
            except _HeaderSkip as exc:
                skipped.append(SkippedFile(str(path), exc.message))
                headers[str(path.resolve())] = exc.row
            except MedlensError as exc:
                skipped.append(SkippedFile(str(path), exc.message))
    if not rows:
        example = f", e.g. {Path(skipped[0].path).name}: {skipped[0].reason}" if skipped else ""
        raise InputDataError(
            NOTHING_READABLE.format(n=len(skipped), example=example), source=str(root)
        )
    table = pd.DataFrame(rows)
    table = table[[c for c in _SCAN_ORDER if c in table.columns]]
    dup = table["case_id"].duplicated(keep="first")
    for row in table.loc[dup].to_dict("records"):
        skipped.append(SkippedFile(row["path"], DUPLICATE_SOP))
        headers[row["path"]] = {**row, "case_id": path_key(row["path"], root, salt=salt)}
    table = table.loc[~dup].reset_index(drop=True)
    return Manifest(table=table, skipped=tuple(skipped), source=str(root), skipped_headers=headers)
