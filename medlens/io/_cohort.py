"""Pseudonymous keys and cohort attributes (age band, sex, site ...) from DICOM headers.

Identifiers (PatientID, InstitutionName, dates) are read here and only here;
what leaves is a salted HMAC key or a coarse band.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .._errors import param_error

__all__ = ["MISSING", "age_band", "cohort_attributes", "pseudonymize"]

MISSING = "missing"
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$", re.IGNORECASE)
_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def pseudonymize(value: Any, *, salt: str, prefix: str = "p-") -> str | None:
    """Salted HMAC-SHA256 pseudonym of ``value``: ``prefix`` + 16 hex digits.

    Deterministic for a given salt; without the salt a key cannot be traced
    back to the value. Empty or missing values (None, NaN, blank) give None.

    Parameters
    ----------
    value : object
        The identifier (converted with ``str`` after stripping blanks).
    salt : str
        Secret project salt (from the config's ``data.pseudonym_salt``), at
        least 8 characters.
    prefix : str, default "p-"
        Prefix of the key.

    Raises
    ------
    MedlensError
        If ``salt`` is not a string of at least 8 characters.
    """
    if not isinstance(salt, str) or len(salt) < 8:
        raise param_error(
            "salt",
            "pseudonymize",
            "a string of at least 8 characters",
            "<hidden>" if isinstance(salt, str) else salt,
        )
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
    except ImportError:  # pragma: no cover - pandas is a core dependency
        pass
    text = str(value).strip()
    if not text:
        return None
    digest = hmac.new(salt.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()
    return prefix + digest[:16]


def _check_edges(edges: Sequence[int], func: str) -> tuple[int, ...]:
    try:
        out = tuple(int(e) for e in edges)
    except (TypeError, ValueError):
        raise param_error(
            "age_band_edges", func, "increasing integers, e.g. (0, 40, 60, 80)", edges
        ) from None
    if not out or any(b <= a for a, b in zip(out, out[1:], strict=False)) or out[0] < 0:
        raise param_error(
            "age_band_edges", func, "increasing integers >= 0, e.g. (0, 40, 60, 80)", edges
        )
    return out


def age_band(age_years: float | None, edges: Sequence[int] = (0, 40, 60, 80)) -> str:
    """Coarse age band: ``"40-59"``, ``"80+"``, ``"<18"`` or ``"missing"``.

    Bands are ``[edge_i, edge_{i+1})``; the last band is open.
    """
    edges = _check_edges(edges, "age_band")
    if (
        age_years is None
        or (isinstance(age_years, float) and math.isnan(age_years))
        or age_years < 0
    ):
        return MISSING
    if age_years < edges[0]:
        return f"<{edges[0]}"
    for lo, hi in zip(edges, edges[1:], strict=False):
        if lo <= age_years < hi:
            return f"{lo}-{hi - 1}"
    return f"{edges[-1]}+"


def _parse_date(value: Any) -> _dt.date | None:
    text = str(value or "").strip()
    if len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        return _dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def _age_years(ds: Any) -> float | None:
    match = _AGE.match(str(ds.get("PatientAge", "") or ""))
    if match:
        return int(match.group(1)) * _UNIT_YEARS[match.group(2).upper()]
    birth = _parse_date(ds.get("PatientBirthDate"))
    when = None
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        when = _parse_date(ds.get(keyword))
        if when:
            break
    if birth is None or when is None or when < birth:
        return None
    years = when.year - birth.year - ((when.month, when.day) < (birth.month, birth.day))
    return float(years)


def _clean(ds: Any, keyword: str) -> str:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or MISSING


def cohort_attributes(
    ds: Any,
    *,
    salt: str | None = None,
    age_band_edges: Sequence[int] = (0, 40, 60, 80),
    site_names: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Cohort attributes of a DICOM header, with no identifier in them.

    Returns site (a mapped name or a salted key of InstitutionName; omitted
    without a salt), manufacturer, model_name, sex, age_band, modality,
    view_position and body_part; absent values are ``"missing"``.
    """
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    out: dict[str, str] = {}
    if salt is not None or site_names:
        institution = str(ds.get("InstitutionName", "") or "").strip()
        if site_names and institution in site_names:
            out["site"] = str(site_names[institution])
        elif institution and salt is not None:
            out["site"] = pseudonymize(institution, salt=salt, prefix="site-") or MISSING
        else:
            out["site"] = MISSING
    out.update(
        manufacturer=_clean(ds, "Manufacturer"),
        model_name=_clean(ds, "ManufacturerModelName"),
        sex=sex if sex in ("M", "F", "O") else MISSING,
        age_band=age_band(_age_years(ds), age_band_edges),
        modality=_clean(ds, "Modality"),
        view_position=_clean(ds, "ViewPosition"),
        body_part=_clean(ds, "BodyPartExamined"),
    )
    return out
