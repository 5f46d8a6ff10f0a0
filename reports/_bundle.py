"""The JSON evidence bundle: deterministic JSON, provenance, hashes and the bundle layout.

Everything a report shows comes from one bundle written first; ``medlens report`` can
re-render the PDF from it without recomputing anything. The JSON written here is
deterministic: keys sorted, floats written in their shortest round-trip form (``repr``),
no locale or clock dependence, ``NaN``/``inf`` written as ``null`` (JSON has no NaN) with
an optional note saying why, and a trailing newline. The same object gives the same bytes
on every run, so the SHA-256 of a file is a stable fingerprint of its content.

Bundle layout (one folder)::

    bundle.json               schema_version, report_id, title, provenance, parts
    evidence.json             "validation": the validation engine's evidence (issue #4)
    explanation_audit.json    "audit": the explanation-quality audit (issue #5)
    cases.json                "cases": per-case explanations for the case reports

``bundle.json`` is written last and lists every part with its SHA-256, so a folder
without it is an unfinished bundle and a part edited afterwards is detected.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from medlens._errors import EvidenceError, param_error

from ._atomic import atomic_write_bytes

__all__ = [
    "BUNDLE_FILE",
    "BUNDLE_PARTS",
    "DEFAULT_PACKAGES",
    "SCHEMA_VERSION",
    "VALIDATION_KEYS",
    "EvidenceBundle",
    "dumps_json",
    "make_report_id",
    "nonfinite_pointers",
    "provenance",
    "read_bundle",
    "read_json",
    "sha256_bytes",
    "sha256_file",
    "sha256_json",
    "to_jsonable",
    "utc_timestamp",
    "write_bundle",
    "write_json",
]

SCHEMA_VERSION = "1.0"
SUPPORTED_SCHEMA_VERSIONS = frozenset({"1.0"})
BUNDLE_FILE = "bundle.json"
#: part name -> file name inside the bundle folder
BUNDLE_PARTS: Mapping[str, str] = {
    "validation": "evidence.json",
    "audit": "explanation_audit.json",
    "cases": "cases.json",
}
#: top-level keys of the validation engine's evidence.json (contract of issue #4)
VALIDATION_KEYS = (
    "acceptance",
    "calibration",
    "cohorts",
    "failed_cases",
    "overall",
    "plan",
    "provenance",
)
#: distributions whose versions go into the provenance (missing ones are recorded as null)
DEFAULT_PACKAGES = (
    "captum",
    "highdicom",
    "lime",
    "matplotlib",
    "numpy",
    "pandas",
    "pillow",
    "pydicom",
    "reportlab",
    "scikit-image",
    "scikit-learn",
    "scipy",
    "shap",
    "statsmodels",
    "torch",
)

UNSUPPORTED_TYPE = (
    "cannot write a value of type {type} to JSON at {pointer}; convert it to a number, "
    "string, list, dict, numpy array or dataclass first"
)
BAD_KEY = "JSON object keys must be str or int; got {type} at {pointer}"
DUPLICATE_KEY = "two keys become {key!r} once written to JSON at {pointer}"
NOTE_CONFLICT = "a note for {pointer} would overwrite the existing key 'note' with a different text"
NOTE_NOT_NULL = "a note was given for {pointer}, which holds no NaN/inf value (notes explain nulls)"
BUNDLE_MISSING = "no {file} in this folder; it is not an evidence bundle (write one with write_bundle or `medlens run`)"
BAD_JSON = "not valid JSON ({error}); the file is damaged or was not written by medlens"
MISSING_KEY = "missing key {key!r}; expected keys: {expected}"
BAD_SCHEMA = "schema_version {got!r} is not supported; this medlens reads {supported}"
PART_MISSING = "listed in {bundle} as part {part!r} but the file does not exist"
PART_HASH = "SHA-256 is {got} but {bundle} records {expected}; the file changed after the bundle was written"
FILE_NOT_FOUND = "file not found"
CANNOT_HASH = "cannot hash: not an existing file"
HASH_TWICE = "hash for {name!r} given twice with different values"
NOT_A_FOLDER = "not a folder; pass the evidence bundle folder"
NO_PART = "this bundle has no {name!r} part ({file}); re-run the step that produces it"
UNKNOWN_PART = "unknown part {name!r} under 'parts'; known parts: {known}"
OUTSIDE_BUNDLE = "part {name!r} names a file outside the bundle: {file!r}"
NOT_OBJECT = "expected a JSON object at {pointer}, got {type}"


def _escape_pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _float(value: float, pointer: str, nonfinite: list[str]) -> float | None:
    if math.isfinite(value):
        return value
    nonfinite.append(pointer)
    return None


def _convert(obj: Any, pointer: str, nonfinite: list[str]) -> Any:
    # order matters: bool is an int, np.bool_ is not
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return _float(float(obj), pointer, nonfinite)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        if obj.dtype.itemsize < 8:
            # shortest decimal that round-trips at the value's own precision (float32 0.1 -> 0.1)
            text = np.format_float_positional(obj, unique=True, trim="-")
            return _float(float(text), pointer, nonfinite)
        return _float(float(obj), pointer, nonfinite)
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "f" and obj.dtype.itemsize < 8:
            # element by element so each keeps its shortest float32/float16 form
            if obj.ndim == 0:
                return _convert(obj[()], pointer, nonfinite)
            return [_convert(obj[i], f"{pointer}/{i}", nonfinite) for i in range(obj.shape[0])]
        if obj.dtype.kind in "biu" or (obj.dtype.kind == "f" and np.isfinite(obj).all()):
            return obj.tolist()  # fast path: nothing to replace (bool/int/finite float64)
        if obj.dtype.kind == "f":
            return _convert(obj.tolist(), pointer, nonfinite)
        if obj.dtype.kind in "UO":
            return _convert(obj.tolist(), pointer, nonfinite)
        raise EvidenceError(
            UNSUPPORTED_TYPE.format(type=f"ndarray[{obj.dtype}]", pointer=pointer or "/")
        )
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if isinstance(key, (bool, np.bool_)) or not isinstance(key, (str, int, np.integer)):
                raise EvidenceError(BAD_KEY.format(type=type(key).__name__, pointer=pointer or "/"))
            skey = str(int(key)) if not isinstance(key, str) else key
            if skey in out:
                raise EvidenceError(DUPLICATE_KEY.format(key=skey, pointer=pointer or "/"))
            out[skey] = _convert(value, f"{pointer}/{_escape_pointer(skey)}", nonfinite)
        return out
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        to_dict = getattr(obj, "to_dict", None)
        if callable(to_dict):
            return _convert(to_dict(), pointer, nonfinite)
        return _convert(
            {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, pointer, nonfinite
        )
    if isinstance(obj, enum.Enum):
        return _convert(obj.value, pointer, nonfinite)
    if isinstance(obj, PurePath):
        return obj.as_posix()
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset)):
        items = [_convert(v, f"{pointer}/{i}", nonfinite) for i, v in enumerate(obj)]
        try:
            return sorted(items)
        except TypeError as exc:
            raise EvidenceError(
                UNSUPPORTED_TYPE.format(type="set of mixed types", pointer=pointer or "/")
            ) from exc
    if isinstance(obj, (list, tuple)):
        return [_convert(v, f"{pointer}/{i}", nonfinite) for i, v in enumerate(obj)]
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict) and not isinstance(obj, type):
        return _convert(to_dict(), pointer, nonfinite)
    raise EvidenceError(UNSUPPORTED_TYPE.format(type=type(obj).__name__, pointer=pointer or "/"))


def _apply_notes(data: Any, notes: Mapping[str, str], nonfinite: Sequence[str]) -> None:
    """Attach ``note`` keys next to the nulls they explain (in place)."""
    null_set = set(nonfinite)
    for pointer, text in notes.items():
        if pointer not in null_set:
            raise EvidenceError(NOTE_NOT_NULL.format(pointer=pointer))
        parent_pointer = pointer.rsplit("/", 1)[0]
        parent = data
        for token in [t for t in parent_pointer.split("/") if t != ""]:
            token = token.replace("~1", "/").replace("~0", "~")
            parent = parent[int(token)] if isinstance(parent, list) else parent[token]
        if not isinstance(parent, dict):
            raise EvidenceError(NOT_OBJECT.format(pointer=parent_pointer or "/", type="array"))
        if "note" in parent and parent["note"] != text:
            raise EvidenceError(NOTE_CONFLICT.format(pointer=pointer))
        parent["note"] = str(text)


def to_jsonable(obj: Any, *, notes: Mapping[str, str] | None = None) -> tuple[Any, list[str]]:
    """Convert ``obj`` to plain JSON types and list where NaN/inf became null.

    Converts numpy scalars and arrays, dataclasses (through their ``to_dict()`` when they
    define one, else field by field), enums (their value), paths (POSIX text), dates (ISO
    8601), tuples (lists) and sets (sorted lists). Integer dict keys become strings.

    Parameters
    ----------
    obj : object
        The value to convert.
    notes : mapping of str to str, optional
        JSON Pointer (RFC 6901) of a non-finite value -> why it is undefined. The text is
        stored as the key ``"note"`` of the object holding that value, e.g.
        ``{"/overall/metrics/auc/estimate": "one class only"}`` adds
        ``"note": "one class only"`` to ``/overall/metrics/auc``.

    Returns
    -------
    data : object
        Plain JSON value (dict, list, str, int, float, bool or None).
    nonfinite : list of str
        JSON Pointers of every value written as null because it was NaN or infinite.

    Raises
    ------
    EvidenceError
        For a value that has no JSON form, a non-str/int key, two keys that collide once
        written, or a note that does not point at a non-finite value.
    """
    nonfinite: list[str] = []
    data = _convert(obj, "", nonfinite)
    if notes:
        _apply_notes(data, notes, nonfinite)
    return data, nonfinite


def dumps_json(obj: Any, *, notes: Mapping[str, str] | None = None) -> str:
    """Serialise ``obj`` to deterministic JSON text (sorted keys, 2-space indent, final newline).

    See :func:`to_jsonable` for the conversions and ``notes``.
    """
    data, _ = to_jsonable(obj, notes=notes)
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(
    path: str | os.PathLike[str], obj: Any, *, notes: Mapping[str, str] | None = None
) -> str:
    """Write ``obj`` as deterministic UTF-8 JSON to ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Output file; its folder must exist.
    obj : object
        Value to write (see :func:`to_jsonable`).
    notes : mapping of str to str, optional
        Explanations for NaN/inf values written as null (see :func:`to_jsonable`).

    Returns
    -------
    str
        SHA-256 (hex) of the bytes written; equals ``sha256_json(obj, notes=notes)``.
    """
    data = dumps_json(obj, notes=notes).encode("utf-8")
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, raising :class:`EvidenceError` naming the file when it is bad."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise EvidenceError(FILE_NOT_FOUND, source=str(p)) from exc
    except UnicodeDecodeError as exc:
        raise EvidenceError(
            BAD_JSON.format(error=f"not UTF-8: {exc.reason}"), source=str(p)
        ) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EvidenceError(BAD_JSON.format(error=str(exc)), source=str(p)) from exc


def nonfinite_pointers(obj: Any) -> list[str]:
    """JSON Pointers of every NaN/inf in ``obj`` (the values :func:`write_json` writes as null)."""
    return to_jsonable(obj)[1]


def sha256_bytes(data: bytes) -> str:
    """SHA-256 hex digest of ``data``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise param_error("data", "sha256_bytes", "bytes", type(data).__name__)
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes, read in chunks (large weights files are fine).

    Raises
    ------
    EvidenceError
        If the file does not exist or is a directory.
    """
    p = Path(path)
    if not p.is_file():
        raise EvidenceError(CANNOT_HASH, source=str(p))
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        while chunk := fh.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj: Any, *, notes: Mapping[str, str] | None = None) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (the same bytes :func:`write_json` writes)."""
    return hashlib.sha256(dumps_json(obj, notes=notes).encode("utf-8")).hexdigest()


def utc_timestamp(when: _dt.datetime | int | float | None = None) -> str:
    """UTC time as ISO 8601 text with a ``Z`` suffix, second resolution.

    Parameters
    ----------
    when : datetime, int, float or None
        A datetime (naive ones are taken as UTC) or a POSIX timestamp. ``None`` uses the
        environment variable ``SOURCE_DATE_EPOCH`` when set (reproducible builds), else
        the current time.

    Raises
    ------
    MedlensError
        If ``SOURCE_DATE_EPOCH`` is set but not an integer.
    """
    if when is None:
        env = os.environ.get("SOURCE_DATE_EPOCH")
        if env is not None:
            try:
                when = int(env)
            except ValueError as exc:
                raise param_error(
                    "SOURCE_DATE_EPOCH", "utc_timestamp", "an integer (seconds since 1970)", env
                ) from exc
    if when is None:
        moment = _dt.datetime.now(_dt.timezone.utc)
    elif isinstance(when, _dt.datetime):
        moment = when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)
        moment = moment.astimezone(_dt.timezone.utc)
    elif isinstance(when, (int, float)) and not isinstance(when, bool) and math.isfinite(when):
        moment = _dt.datetime.fromtimestamp(when, _dt.timezone.utc)
    else:
        raise param_error("when", "utc_timestamp", "a datetime, POSIX seconds or None", when)
    return moment.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_info(device: str | None) -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"available": False}
    info: dict[str, Any] = {
        "available": True,
        "cuda_available": bool(torch.cuda.is_available()),
        "cuda_version": torch.version.cuda,
        "num_threads": int(torch.get_num_threads()),
        "device": device or ("cuda" if torch.cuda.is_available() else "cpu"),
    }
    if torch.cuda.is_available():
        info["cuda_devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
        info["cudnn_version"] = torch.backends.cudnn.version()
    return info


def provenance(
    *,
    seeds: Mapping[str, int] | None = None,
    files: Mapping[str, str | os.PathLike[str]] | None = None,
    hashes: Mapping[str, str] | None = None,
    config: Any = None,
    device: str | None = None,
    date: _dt.datetime | int | float | None = None,
    packages: Sequence[str] = DEFAULT_PACKAGES,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Collect what is needed to reproduce a result: versions, hardware, seeds, hashes, date.

    Parameters
    ----------
    seeds : mapping of str to int, optional
        Named seeds used by the run (e.g. ``{"run": 0, "bootstrap": 12345}``).
    files : mapping of str to path, optional
        Named input files to fingerprint, e.g. ``{"model_weights": "model.pt",
        "manifest": "manifest.csv", "plan": "plan.yaml"}``; each gets its SHA-256.
        Only the hash and the file's base name are recorded, never its folder.
    hashes : mapping of str to str, optional
        Hashes computed by the caller (added to ``sha256`` as given).
    config : object, optional
        The run configuration (anything :func:`to_jsonable` accepts, e.g. a pydantic
        model's ``model_dump()``); recorded with its SHA-256.
    device : str, optional
        The torch device the run used (``"cpu"``, ``"cuda:0"``).
    date : datetime or POSIX seconds, optional
        Fixes the recorded date; else ``SOURCE_DATE_EPOCH``, else now (UTC).
    packages : sequence of str
        Distribution names whose versions are recorded (missing -> null).
    extra : mapping, optional
        Further fields, merged last.

    Returns
    -------
    dict
        Plain-JSON provenance record.
    """
    from medlens import __version__

    if isinstance(packages, str):
        raise param_error("packages", "provenance", "a sequence of distribution names", packages)
    sha: dict[str, Any] = {}
    file_names: dict[str, str] = {}
    for name, path in (files or {}).items():
        sha[name] = sha256_file(path)
        file_names[name] = Path(path).name
    for name, value in (hashes or {}).items():
        if name in sha and sha[name] != value:
            raise EvidenceError(HASH_TWICE.format(name=name))
        sha[name] = value
    record: dict[str, Any] = {
        "medlens_version": __version__,
        "date_utc": utc_timestamp(date),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
        },
        "packages": {name: _package_version(name) for name in sorted(packages)},
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "cpu_model": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "byteorder": sys.byteorder,
        },
        "torch": _torch_info(device),
        "seeds": dict(seeds or {}),
        "sha256": sha,
        "files": file_names,
    }
    if config is not None:
        record["config"] = to_jsonable(config)[0]
        record["sha256"]["config"] = sha256_json(config)
    if extra:
        record.update(to_jsonable(dict(extra))[0])
    return record


def make_report_id(*parts: Any, prefix: str = "MLR") -> str:
    """A short, content-derived report id, e.g. ``"MLR-3F9A2C1B7D04"``.

    The same content always gives the same id (no dates, no randomness), so a re-rendered
    report keeps its id. It contains no patient information.
    """
    digest = sha256_json(list(parts))
    return f"{prefix}-{digest[:12].upper()}"


@dataclasses.dataclass(frozen=True)
class EvidenceBundle:
    """One evidence bundle: provenance plus opaque validation, audit and case sections.

    Attributes
    ----------
    report_id : str
        Content-derived id printed on every page of the reports.
    title : str
        Report title (no patient identifiers).
    provenance : dict
        See :func:`provenance`.
    validation : dict or None
        The validation engine's ``evidence.json`` (top-level keys ``VALIDATION_KEYS``).
    audit : dict or None
        The explanation audit's ``explanation_audit.json``.
    cases : dict or None
        Per-case explanation records for the case reports.
    schema_version : str
        Layout version of ``bundle.json``.
    part_sha256 : dict
        SHA-256 of each part file as written.
    """

    report_id: str
    title: str
    provenance: Mapping[str, Any]
    validation: Mapping[str, Any] | None = None
    audit: Mapping[str, Any] | None = None
    cases: Mapping[str, Any] | None = None
    schema_version: str = SCHEMA_VERSION
    part_sha256: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def part(self, name: str) -> Mapping[str, Any]:
        """Return a part, raising :class:`EvidenceError` when the bundle lacks it."""
        if name not in BUNDLE_PARTS:
            raise param_error("name", "EvidenceBundle.part", f"one of {sorted(BUNDLE_PARTS)}", name)
        value = getattr(self, name)
        if value is None:
            raise EvidenceError(
                NO_PART.format(name=name, file=BUNDLE_PARTS[name]), source=self.report_id
            )
        return value


def _check_validation(data: Any, source: str) -> None:
    if not isinstance(data, Mapping):
        raise EvidenceError(NOT_OBJECT.format(pointer="/", type=type(data).__name__), source=source)
    for key in VALIDATION_KEYS:
        if key not in data:
            raise EvidenceError(
                MISSING_KEY.format(key=key, expected=", ".join(VALIDATION_KEYS)), source=source
            )


def _check_part(name: str, data: Any, source: str) -> None:
    if not isinstance(data, Mapping):
        raise EvidenceError(NOT_OBJECT.format(pointer="/", type=type(data).__name__), source=source)
    if name == "validation":
        _check_validation(data, source)


def write_bundle(
    directory: str | os.PathLike[str],
    *,
    provenance: Mapping[str, Any],
    validation: Any = None,
    audit: Any = None,
    cases: Any = None,
    title: str = "medlens evidence report",
    report_id: str | None = None,
    notes: Mapping[str, Mapping[str, str]] | None = None,
) -> EvidenceBundle:
    """Write an evidence bundle folder (parts first, ``bundle.json`` last, all atomic).

    Parameters
    ----------
    directory : str or os.PathLike
        Bundle folder; created when missing.
    provenance : mapping
        Provenance record (see :func:`provenance`).
    validation, audit, cases : mapping or None
        The sections; ``None`` leaves a part out. ``validation`` must have the top-level
        keys of the validation engine's evidence (``VALIDATION_KEYS``).
    title : str
        Report title.
    report_id : str, optional
        Defaults to :func:`make_report_id` over the parts' hashes (content-derived, so
        re-running on the same inputs keeps the id).
    notes : mapping, optional
        Per part, notes for NaN/inf values (see :func:`to_jsonable`).

    Returns
    -------
    EvidenceBundle
        The bundle as it now reads back (plain JSON values).

    Raises
    ------
    EvidenceError
        If a part is not an object, ``validation`` lacks a required key, or a value has
        no JSON form.
    """
    folder = Path(directory)
    if not isinstance(title, str) or not title.strip():
        raise param_error("title", "write_bundle", "a non-empty str", title)
    if not isinstance(provenance, Mapping):
        raise param_error("provenance", "write_bundle", "a mapping (see provenance())", provenance)
    given = {"validation": validation, "audit": audit, "cases": cases}
    notes = notes or {}
    unknown = set(notes) - set(BUNDLE_PARTS)
    if unknown:
        raise param_error(
            "notes", "write_bundle", f"keys among {sorted(BUNDLE_PARTS)}", sorted(unknown)
        )
    converted: dict[str, Any] = {}
    for name, value in given.items():
        if value is None:
            continue
        data, _ = to_jsonable(value, notes=notes.get(name))
        _check_part(name, data, BUNDLE_PARTS[name])
        converted[name] = data
    prov, _ = to_jsonable(provenance)
    folder.mkdir(parents=True, exist_ok=True)
    digests = {name: sha256_json(data) for name, data in converted.items()}
    if report_id is None:
        report_id = make_report_id(sorted(digests.items()))
    elif not isinstance(report_id, str) or not report_id.strip():
        raise param_error("report_id", "write_bundle", "a non-empty str or None", report_id)
    for name, data in converted.items():
        write_json(folder / BUNDLE_PARTS[name], data)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "report_id": report_id,
        "title": title,
        "provenance": prov,
        "parts": {
            name: {"file": BUNDLE_PARTS[name], "sha256": digest} for name, digest in digests.items()
        },
    }
    write_json(folder / BUNDLE_FILE, manifest)
    return EvidenceBundle(
        report_id=report_id,
        title=title,
        provenance=prov,
        schema_version=SCHEMA_VERSION,
        part_sha256=digests,
        **converted,
    )


def _require(mapping: Mapping[str, Any], key: str, source: str, expected: Sequence[str]) -> Any:
    if key not in mapping:
        raise EvidenceError(
            MISSING_KEY.format(key=key, expected=", ".join(expected)), source=source
        )
    return mapping[key]


def read_bundle(directory: str | os.PathLike[str], *, verify: bool = True) -> EvidenceBundle:
    """Read and check an evidence bundle folder written by :func:`write_bundle`.

    Parameters
    ----------
    directory : str or os.PathLike
        Bundle folder.
    verify : bool, default True
        Check each part's SHA-256 against ``bundle.json``.

    Returns
    -------
    EvidenceBundle

    Raises
    ------
    EvidenceError
        Naming the file (and key) when ``bundle.json`` or a part is missing, is not valid
        JSON, lacks a required key, has an unsupported schema version or a changed hash.
    """
    folder = Path(directory)
    manifest_path = folder / BUNDLE_FILE
    if not folder.is_dir():
        raise EvidenceError(NOT_A_FOLDER, source=str(folder))
    if not manifest_path.is_file():
        raise EvidenceError(BUNDLE_MISSING.format(file=BUNDLE_FILE), source=str(folder))
    manifest = read_json(manifest_path)
    src = str(manifest_path)
    if not isinstance(manifest, Mapping):
        raise EvidenceError(
            NOT_OBJECT.format(pointer="/", type=type(manifest).__name__), source=src
        )
    top = ("schema_version", "report_id", "title", "provenance", "parts")
    version = _require(manifest, "schema_version", src, top)
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise EvidenceError(
            BAD_SCHEMA.format(got=version, supported=sorted(SUPPORTED_SCHEMA_VERSIONS)), source=src
        )
    report_id = _require(manifest, "report_id", src, top)
    title = _require(manifest, "title", src, top)
    prov = _require(manifest, "provenance", src, top)
    parts = _require(manifest, "parts", src, top)
    if not isinstance(parts, Mapping):
        raise EvidenceError(
            NOT_OBJECT.format(pointer="/parts", type=type(parts).__name__), source=src
        )
    loaded: dict[str, Any] = {}
    digests: dict[str, str] = {}
    for name, entry in parts.items():
        if name not in BUNDLE_PARTS:
            raise EvidenceError(
                UNKNOWN_PART.format(name=name, known=", ".join(BUNDLE_PARTS)), source=src
            )
        if not isinstance(entry, Mapping):
            raise EvidenceError(
                NOT_OBJECT.format(pointer=f"/parts/{name}", type=type(entry).__name__), source=src
            )
        file_name = _require(entry, "file", f"{src} /parts/{name}", ("file", "sha256"))
        expected = _require(entry, "sha256", f"{src} /parts/{name}", ("file", "sha256"))
        if Path(file_name).name != file_name:
            raise EvidenceError(OUTSIDE_BUNDLE.format(name=name, file=file_name), source=src)
        part_path = folder / file_name
        if not part_path.is_file():
            raise EvidenceError(
                PART_MISSING.format(bundle=BUNDLE_FILE, part=name), source=str(part_path)
            )
        if verify:
            got = sha256_file(part_path)
            if got != expected:
                raise EvidenceError(
                    PART_HASH.format(got=got, bundle=BUNDLE_FILE, expected=expected),
                    source=str(part_path),
                )
        data = read_json(part_path)
        _check_part(name, data, str(part_path))
        loaded[name] = data
        digests[name] = expected
    return EvidenceBundle(
        report_id=str(report_id),
        title=str(title),
        provenance=prov,
        schema_version=str(version),
        part_sha256=digests,
        **loaded,
    )
