"""Scan output files for patient identifiers (planted markers) before anything leaves the machine.

Tests plant unique marker strings in DICOM headers (patient name, ID, birth date,
accession number, institution address), run medlens, then call
:func:`scan_for_identifiers` on every output. A marker is searched for

* in every file and folder *name* under the scanned paths;
* in the raw bytes of every file, encoded as UTF-8, UTF-16-LE and UTF-16-BE (PDF strings
  and metadata may be UTF-16), case-insensitively;
* in JSON: every key and string value after parsing (catches ``\\u00e9``-escaped text);
* in PDFs: the text of every page (pypdf), the document information (Title, Author ...),
  XMP metadata, outline titles, and every Flate-compressed stream after decompression;
* in PNGs: tEXt, zTXt and iTXt chunks (decompressed) and eXIf;
* in DICOM files: every element with a text VR, including the file meta and sequences.

Matching is case-insensitive and, for person names, also matches ``^`` written as a space
or a comma (``DOE^JANE`` finds ``DOE JANE`` and ``DOE, JANE``).
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medlens._errors import InputDataError, param_error

__all__ = ["Finding", "markers_from_dataset", "scan_for_identifiers"]

MIN_MARKER_LENGTH = 3
#: marker of a Finding for a file that could not be parsed (so it cannot be shown clean)
UNSCANNABLE = "(unscannable)"
_TEXT_VRS = frozenset(
    {
        "AE",
        "AS",
        "CS",
        "DA",
        "DS",
        "DT",
        "IS",
        "LO",
        "LT",
        "PN",
        "SH",
        "ST",
        "TM",
        "UC",
        "UI",
        "UR",
        "UT",
    }
)
_STREAM_RE = re.compile(rb"stream\r?\n(.*?)\r?\nendstream", re.S)
NOT_FOUND = "path does not exist; pass output files or the output folder"
SHORT_MARKER = "markers must be strings of at least {n} characters (shorter ones match everywhere); got {got!r}"


@dataclass(frozen=True, order=True)
class Finding:
    """One place where a marker was found.

    Attributes
    ----------
    path : str
        File (or folder) where it was found.
    where : str
        What part of it: ``"file name"``, ``"bytes (utf-8)"``, ``"pdf page 2 text"``,
        ``"pdf metadata /Title"``, ``"png tEXt 'Comment'"``, ``"dicom (0010,0010) PatientName"`` ...
    marker : str
        The marker as given.
    """

    path: str
    where: str
    marker: str

    def __str__(self) -> str:
        return f"{self.path}: {self.marker!r} in {self.where}"


def _variants(marker: str) -> list[str]:
    base = marker.casefold()
    out = [base]
    if "^" in base:
        parts = [p for p in base.split("^") if p]
        out += [" ".join(parts), ", ".join(parts), ",".join(parts), " ".join(reversed(parts))]
    return list(dict.fromkeys(out))


class _Matcher:
    def __init__(self, markers: Sequence[str]) -> None:
        self.markers = list(markers)
        self.text_variants = [(m, _variants(m)) for m in self.markers]
        self.byte_variants: list[tuple[str, str, bytes]] = []
        for m, variants in self.text_variants:
            for v in variants:
                # UTF-32: text in NumPy arrays (dtype '<U…', e.g. an .npy of case labels)
                for enc in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
                    self.byte_variants.append((m, enc[:6], v.encode(enc)))

    def in_text(self, text: str) -> list[str]:
        low = text.casefold()
        return [m for m, variants in self.text_variants if any(v in low for v in variants)]

    def in_bytes(self, data: bytes) -> list[tuple[str, str]]:
        low = data.lower()  # ASCII case folding; non-ASCII markers are matched exactly
        hits = []
        for m, enc, needle in self.byte_variants:
            if (needle in low or needle in data) and (m, enc) not in hits:
                hits.append((m, enc))
        return hits


def _iter_paths(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    for p in paths:
        path = Path(p)
        if not path.exists() and not path.is_symlink():
            raise InputDataError(NOT_FOUND, source=str(path))
        yield path
        if path.is_dir():
            yield from sorted(path.rglob("*"))


def _scan_json(data: bytes, matcher: _Matcher) -> list[tuple[str, str]]:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return []
    hits: list[tuple[str, str]] = []

    def walk(node: Any, pointer: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                for m in matcher.in_text(str(k)):
                    hits.append((f"json key at {pointer or '/'}", m))
                walk(v, f"{pointer}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{pointer}/{i}")
        elif isinstance(node, str):
            for m in matcher.in_text(node):
                hits.append((f"json value at {pointer or '/'}", m))

    walk(obj, "")
    return hits


def _scan_pdf(data: bytes, matcher: _Matcher) -> list[tuple[str, str]]:
    hits: list[tuple[str, str]] = []
    for raw in _STREAM_RE.findall(data):
        try:
            decoded = zlib.decompress(raw)
        except zlib.error:
            continue
        for m, enc in matcher.in_bytes(decoded):
            hits.append((f"pdf decompressed stream ({enc})", m))
    try:
        from pypdf import PdfReader

        reader = PdfReader(io.BytesIO(data))
        for key, value in (reader.metadata or {}).items():
            for m in matcher.in_text(str(value)):
                hits.append((f"pdf metadata {key}", m))
        xmp = reader.xmp_metadata
        if xmp is not None:
            xml = xmp.stream.get_data() if hasattr(xmp, "stream") else b""
            for m, enc in matcher.in_bytes(xml):
                hits.append((f"pdf xmp metadata ({enc})", m))

        def walk_outline(items: Any) -> None:
            for item in items:
                if isinstance(item, list):
                    walk_outline(item)
                else:
                    for m in matcher.in_text(str(getattr(item, "title", ""))):
                        hits.append(("pdf outline", m))

        walk_outline(reader.outline)
        for i, page in enumerate(reader.pages, start=1):
            for m in matcher.in_text(page.extract_text() or ""):
                hits.append((f"pdf page {i} text", m))
    except Exception as exc:  # a damaged PDF is itself worth reporting
        hits.append(
            (f"pdf unreadable by pypdf ({type(exc).__name__}); raw bytes scanned only", UNSCANNABLE)
        )
    return hits


def _scan_png(data: bytes, matcher: _Matcher) -> list[tuple[str, str]]:
    hits: list[tuple[str, str]] = []
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8].decode("latin-1")
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        text = None
        if ctype == "tEXt":
            key, _, value = body.partition(b"\0")
            text = (key + b" " + value).decode("latin-1")
        elif ctype == "zTXt":
            key, _, rest = body.partition(b"\0")
            try:
                text = key.decode("latin-1") + " " + zlib.decompress(rest[1:]).decode("latin-1")
            except zlib.error:
                text = key.decode("latin-1")
        elif ctype == "iTXt":
            key, _, rest = body.partition(b"\0")
            flag, rest = rest[:1], rest[2:]
            lang, _, rest = rest.partition(b"\0")
            translated, _, value = rest.partition(b"\0")
            if flag == b"\x01":
                try:
                    value = zlib.decompress(value)
                except zlib.error:
                    pass
            text = " ".join(x.decode("utf-8", "replace") for x in (key, lang, translated, value))
        elif ctype == "eXIf":
            for m, enc in matcher.in_bytes(body):
                hits.append((f"png eXIf ({enc})", m))
        if text is not None:
            key_name = text.split(" ", 1)[0]
            for m in matcher.in_text(text):
                hits.append((f"png {ctype} {key_name!r}", m))
        if ctype == "IEND":
            break
    return hits


def _scan_dicom(path: Path, matcher: _Matcher) -> list[tuple[str, str]]:
    import pydicom

    hits: list[tuple[str, str]] = []
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    except Exception as exc:
        return [(f"dicom unreadable ({type(exc).__name__}); raw bytes scanned only", UNSCANNABLE)]

    def check(dataset: Any) -> None:
        for elem in dataset.iterall():
            if elem.VR in _TEXT_VRS and elem.value is not None:
                values = elem.value if elem.VM > 1 else [elem.value]
                for v in values:
                    for m in matcher.in_text(str(v)):
                        hits.append((f"dicom {elem.tag} {elem.keyword or elem.name}", m))

    check(ds.file_meta)
    check(ds)
    return hits


def markers_from_dataset(ds: Any, *, min_length: int = 4) -> list[str]:
    """Identifier strings of a DICOM dataset, as markers for :func:`scan_for_identifiers`.

    Collects patient name (whole and each name component of at least ``min_length``
    characters), patient ID, other patient IDs, birth date (``YYYYMMDD`` and
    ``YYYY-MM-DD``), accession number, institution name and address, and referring
    physician. Empty values are skipped.
    """
    from pydicom import Dataset

    if not isinstance(ds, Dataset):
        raise param_error("ds", "markers_from_dataset", "a pydicom Dataset", type(ds).__name__)
    out: list[str] = []
    for keyword in ("PatientName", "ReferringPhysicianName", "OtherPatientNames"):
        value = str(ds.get(keyword) or "").strip()
        if value:
            out.append(value)
            out += [p for p in re.split(r"[\^=]", value) if len(p.strip()) >= min_length]
    for keyword in (
        "PatientID",
        "AccessionNumber",
        "InstitutionName",
        "InstitutionAddress",
        "OtherPatientIDs",
    ):
        value = ds.get(keyword)
        if value:
            out += [
                str(v).strip()
                for v in (value if isinstance(value, (list, tuple)) else [value])
                if str(v).strip()
            ]
    birth = str(ds.get("PatientBirthDate") or "").strip()
    if len(birth) == 8 and birth.isdigit():
        out += [birth, f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"]
    return [m for m in dict.fromkeys(out) if len(m) >= MIN_MARKER_LENGTH]


def scan_for_identifiers(
    paths_or_dir: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    markers: Iterable[str],
) -> list[Finding]:
    """Find marker strings (planted identifiers) in output files and their names.

    Parameters
    ----------
    paths_or_dir : path or iterable of paths
        Files and/or folders (searched recursively, hidden files included).
    markers : iterable of str
        Identifier strings, each at least 3 characters (e.g. from :func:`markers_from_dataset`).

    Returns
    -------
    list of Finding
        Sorted, without duplicates; empty when nothing leaked.

    Raises
    ------
    InputDataError
        If a path does not exist.
    MedlensError
        If a marker is not a string of at least 3 characters, or none is given.
    """
    markers = list(markers) if not isinstance(markers, str) else [markers]
    if not markers:
        raise param_error("markers", "scan_for_identifiers", "at least one marker string", markers)
    for m in markers:
        if not isinstance(m, str) or len(m.strip()) < MIN_MARKER_LENGTH:
            raise param_error(
                "markers",
                "scan_for_identifiers",
                f"strings of at least {MIN_MARKER_LENGTH} characters",
                m,
            )
    matcher = _Matcher([m.strip() for m in markers])
    if isinstance(paths_or_dir, (str, os.PathLike)):
        paths_or_dir = [paths_or_dir]
    findings: set[Finding] = set()
    for path in _iter_paths(paths_or_dir):
        for m in matcher.in_text(path.name):
            findings.add(Finding(str(path), "file name", m))
        if not path.is_file():
            continue
        data = path.read_bytes()
        hits: list[tuple[str, str]] = [(f"bytes ({enc})", m) for m, enc in matcher.in_bytes(data)]
        head = data[:1024].lstrip()
        if data.startswith(b"%PDF"):
            hits += _scan_pdf(data, matcher)
        elif data.startswith(b"\x89PNG\r\n\x1a\n"):
            hits += _scan_png(data, matcher)
        elif data[128:132] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom"):
            hits += _scan_dicom(path, matcher)
        elif head[:1] in (b"{", b"["):
            hits += _scan_json(data, matcher)
        else:
            for m in matcher.in_text(data.decode("utf-8", "replace")):
                hits.append(("text (utf-8)", m))
        for where, m in hits:
            findings.add(Finding(str(path), where, m))
    return sorted(findings)
