"""The end-to-end job behind ``medlens run``: config + plan -> evidence bundle -> PDF reports.

Steps: ingest (manifest / DICOM folder, labels joined) -> predict the test split ->
validate against the analysis plan (plus a pointwise ROC band) -> optionally audit the
explanations -> explain a small gallery (highest-scoring true and false positives,
lowest-scoring false negatives) with a few cheap methods -> write the evidence bundle ->
render the regulatory PDF and the clinician case-report PDF (-> DICOM Secondary Captures).

Output folder layout::

    predictions.csv          test split: pseudonymous ids, label, score, cohorts, status
    bundle/                  evidence bundle (bundle.json, evidence.json, cases.json,
                             gallery/<case>_<method>.png, explanation_audit.json if any)
    report.pdf               regulatory evidence report (re-render: `medlens report`)
    case_reports.pdf         one page per gallery case
    audit/                   files of the explanation audit (with ``audit_methods``)
    dicom/<case>_<method>.dcm  gallery overlays as DICOM Secondary Capture (``dicom_sc``)
    .cache/                  content-addressed results of the heavy steps (StageCache)

No file path or DICOM header value reaches the outputs: the configuration recorded in
the provenance gives its paths relative to the config's folder (else only their last
part), the data set is identified by its hash (``sha256.dataset``: sorted relative paths
and file hashes of the images read; ``sha256.labels``), and case ids are the manifest's
pseudonymous keys. The one
exception is ``include_identifiers=True`` (``--include-identifiers``), which the user
must ask for: the gallery cases' patient ID and name are then shown next to their keys.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np

from ._errors import InputDataError, param_error
from ._pipeline import (
    CASE_COLUMNS,
    STATUS_OK,
    case_mask,
    dataset_fingerprint,
    load_cases,
    predict_cases,
    select_split,
)
from .config import MedlensConfig

__all__ = [
    "CACHE_DIR",
    "DEFAULT_GALLERY_METHODS",
    "PREDICTION_COLUMNS",
    "PATH_WITHHELD",
    "CacheWarning",
    "RunResult",
    "StageCache",
    "recorded_path",
    "run_pipeline",
    "select_gallery",
]

DEFAULT_GALLERY_METHODS = ("gradcam", "saliency", "integrated_gradients")
PREDICTION_COLUMNS = (*CASE_COLUMNS, "status", "failure_reason")
NOT_BINARY = (
    "medlens run handles binary heads only for now (model.head.type is {head!r}); "
    "use `medlens predict` and `medlens validate` for other tasks"
)
NO_SCORED = "no case of the '{split}' split could be scored; see failure_reason in {file}"
GALLERY_KINDS = ("true positive", "false positive", "false negative")
#: Part of the gallery cache key: entries made before gallery maps had trust cards are
#: not reused
GALLERY_TRUST_VERSION = 1


@dataclass(frozen=True)
class RunResult:
    """Where :func:`run_pipeline` wrote everything.

    Attributes
    ----------
    out_dir, predictions_csv, bundle_dir, report_pdf : Path
    case_report_pdf : Path or None
        None when the gallery is empty (no case to explain).
    report_id : str
    verdict : str
        The acceptance verdict of the validation (``"pass"``/``"fail"``).
    n_cases, n_failed, n_gallery : int
    seconds : dict
        Wall-clock seconds per step (``ingest``, ``predict``, ``validate``, ``audit``,
        ``explain``, ``report``).
    stages : dict
        ``"cached"`` or ``"computed"`` for each cached step that ran (``predictions``,
        ``validation``, ``audit``, ``gallery``).
    dicom_files : tuple of Path
        The DICOM Secondary Capture objects written (``dicom_sc=True``).
    n_pruned : int
        Old cache entries removed after the run: entries of the steps this run ran whose
        key it did not use (see :meth:`StageCache.prune`).
    """

    out_dir: Path
    predictions_csv: Path
    bundle_dir: Path
    report_pdf: Path
    case_report_pdf: Path | None
    report_id: str
    verdict: str
    n_cases: int
    n_failed: int
    n_gallery: int
    seconds: Mapping[str, float]
    stages: Mapping[str, str] = field(default_factory=dict)
    dicom_files: tuple[Path, ...] = ()
    n_pruned: int = 0


def select_gallery(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    *,
    threshold: float,
    per_kind: int = 2,
) -> list[tuple[int, str]]:
    """Indices of the gallery cases: top TPs, top FPs (by score) and bottom FNs.

    Parameters
    ----------
    labels : array of 0/1
    scores : array of float (NaN = not scored, never chosen)
    threshold : float
        Positive when score >= threshold.
    per_kind : int
        Cases per kind (true positive, false positive, false negative).

    Returns
    -------
    list of (index, kind)
        Ties are broken by index (stable), so the choice is deterministic.
    """
    if isinstance(per_kind, bool) or not isinstance(per_kind, int) or per_kind < 0:
        raise param_error("per_kind", "select_gallery", "an int >= 0", per_kind)
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape:
        raise param_error("labels", "select_gallery", f"{s.size} labels like scores", y.size)
    ok = np.isfinite(s)
    pos = s >= threshold
    picks: list[tuple[int, str]] = []
    for kind, mask, descending in (
        ("true positive", ok & (y == 1) & pos, True),
        ("false positive", ok & (y == 0) & pos, True),
        ("false negative", ok & (y == 1) & ~pos, False),
    ):
        idx = np.nonzero(mask)[0]
        order = np.argsort(-s[idx] if descending else s[idx], kind="stable")
        picks += [(int(i), kind) for i in idx[order][:per_kind]]
    return picks


def _validate(predictions_csv: Path, plan_path: Path) -> dict[str, Any]:
    from .validation import UndefinedMetricWarning, evaluate, load_plan
    from .validation._evidence import to_evidence

    plan, digest = load_plan(plan_path)
    with warnings.catch_warnings():
        # undefined metrics are written as null with a note in the evidence
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        report = evaluate(predictions_csv, plan, plan_sha256=digest)
    return to_evidence(report)


def _agreement(maps: Sequence[Any]) -> float | None:
    """Mean pairwise Spearman rank correlation of |map| over pixels (None for < 2 maps)."""
    from .xai import rank_correlation

    flat = [np.abs(np.asarray(m, dtype=np.float64)).ravel() for m in maps]
    values = []
    for a in range(len(flat)):
        for b in range(a + 1, len(flat)):
            if np.ptp(flat[a]) == 0 or np.ptp(flat[b]) == 0:
                continue  # a constant map has no ranking
            values.append(float(rank_correlation(flat[a][None], flat[b][None])[0]))
    return float(np.mean(values)) if values else None


TRUST_CHECKS = ("randomisation", "faithfulness", "stability", "anatomy")
TRUST_NOT_CHECKED = "trust not checked (no explanation audit of this case and method)"
#: Where a gallery map's trust card came from. The audit's card wins when the audit
#: covers the case and method: it is the card behind the audit's own tables, so the
#: report's gallery and audit section cannot disagree. Both are computed by
#: ``case_trust_cards`` with the config's seed and the same masks, and agree (a test
#: checks it); the gallery's own card (``medlens explain --trust``'s) covers the rest.
TRUST_FROM_AUDIT = "explanation audit"
TRUST_FROM_GALLERY = "gallery trust check (as medlens explain --trust)"


def _trust_cards(audit: Mapping[str, Any] | None) -> dict[tuple[str, str], Mapping[str, Any]]:
    """(case id, method) -> trust card of a ``medlens audit`` record (empty without one)."""
    cards: dict[tuple[str, str], Mapping[str, Any]] = {}
    for method, rec in ((audit or {}).get("methods") or {}).items():
        for card in (rec.get("trust") or {}).get("cards", []):
            cards[(str(card["case"]), method)] = card
    return cards


def _explain_maps(
    cfg: MedlensConfig,
    model: Any,
    scans: list[Any],
    ids: list[str],
    methods: Sequence[str],
    progress: bool,
    masks: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[dict[tuple[str, str], np.ndarray], dict[str, Any]]:
    """Explanation maps (in the scan's geometry) of the gallery cases and their trust cards.

    Each map gets its per-case trust card (:func:`medlens.xai._audit.result_trust_card`,
    the function ``medlens explain --trust`` calls): one case at a time, the config's seed
    and ``model.batch_size`` (no timing-dependent chunk or layout choice, so reruns give the
    same bytes), the case's anatomy and lesion masks. The cards ride in ``meta``
    (``trust``), so they are cached with the maps.
    """
    from . import xai
    from .xai._audit import result_trust_card
    from .xai._trust import trust_label

    explainers = {m: xai.get_explainer(m, model.module, head=cfg.model.head) for m in methods}
    x, geometries = model.preprocess.batch(scans)
    results = xai.explain_cases(
        explainers,
        x,
        case_ids=ids,
        seed=cfg.seed,
        batch_size=cfg.model.batch_size,  # fixed chunks: evidence is bit-exact on rerun
        inverse=[partial(model.preprocess.invert_map, geometry=g) for g in geometries],
        progress=progress,
    )
    maps: dict[tuple[str, str], np.ndarray] = {}
    meta: dict[str, Any] = {}
    for i, case_id in enumerate(ids):
        paths = dict(masks[i]) if masks is not None else {}
        anatomy, lesion = (
            case_mask(paths.get(c), geometries[i], case=case_id, column=c)
            for c in ("anatomy_mask", "lesion_mask")
        )
        for method, r in results[case_id].items():
            amap = r.maps_original[0][0] if r.maps_original is not None else r.maps[0, 0]
            maps[(case_id, method)] = np.asarray(amap)
            card, ev = result_trust_card(
                model.module,
                x[i : i + 1],
                r,
                case_id=case_id,
                head=cfg.model.head,
                seed=cfg.seed,
                batch_size=cfg.model.batch_size,
                anatomy_mask=anatomy,
                lesion_mask=lesion,
            )
            meta[f"{case_id}\t{method}"] = {
                "signed": bool(r.signed),
                "evaluations": int(r.evaluations),
                "trust_evaluations": int(sum(ev.values())),
                "trust": {**card.to_dict(), "label": trust_label(card)},
            }
    return maps, meta


def _maps_to_bytes(maps: Mapping[tuple[str, str], np.ndarray], meta: Mapping[str, Any]) -> bytes:
    """One .npz holding every map (``m0``, ``m1`` ...) and a JSON index (``index``)."""
    from .reports import dumps_json

    keys = sorted(maps)
    index = {"maps": [[c, m] for c, m in keys], "meta": dict(meta)}
    arrays = {f"m{i}": np.asarray(maps[k]) for i, k in enumerate(keys)}
    arrays["index"] = np.frombuffer(dumps_json(index).encode("utf-8"), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _maps_from_bytes(data: bytes) -> tuple[dict[tuple[str, str], np.ndarray], dict[str, Any]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        index = json.loads(npz["index"].tobytes().decode("utf-8"))
        maps = {(c, m): npz[f"m{i}"] for i, (c, m) in enumerate(index["maps"])}
    return maps, index["meta"]


def _render_gallery(
    table: Any,
    scans: list[Any],
    picks: list[tuple[int, str]],
    ids: list[str],
    methods: Sequence[str],
    maps: Mapping[tuple[str, str], np.ndarray],
    meta: Mapping[str, Any],
    gallery_dir: Path,
    threshold: float,
    threshold_source: str,
    model_name: str,
    trust: Mapping[tuple[str, str], Mapping[str, Any]],
    identifiers: Mapping[str, Mapping[str, str]],
    class_names: Sequence[str] = ("negative", "positive"),
) -> tuple[list[dict[str, Any]], list[Any], dict[tuple[str, str], bytes]]:
    """Overlays (bundle PNGs), gallery entries of cases.json and case-report inputs;
    ``class_names`` = (negative, positive) names of the binary head."""
    from .reports import (
        CaseInput,
        CaseMap,
        failed_trust_reasons,
        render_heatmap_overlay,
        sha256_file,
    )
    from .reports._atomic import atomic_write_bytes

    gallery_dir.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    case_inputs: list[Any] = []
    pngs: dict[tuple[str, str], bytes] = {}
    for (i, kind), case_id, scan in zip(picks, ids, scans, strict=True):
        pixels = np.asarray(scan.pixels, dtype=np.float64)
        overlays, case_maps = [], []
        for method in methods:
            amap = maps[(case_id, method)]
            info = meta[f"{case_id}\t{method}"]
            png = render_heatmap_overlay(pixels, np.asarray(amap), method=method)
            pngs[(case_id, method)] = png
            path = atomic_write_bytes(gallery_dir / f"{case_id}_{method}.png", png)
            card, source = trust.get((case_id, method)), TRUST_FROM_AUDIT
            if card is None and info.get("trust") is not None:
                card, source = info["trust"], TRUST_FROM_GALLERY
            trusted = None if card is None else bool(card["trusted"])
            label = TRUST_NOT_CHECKED if card is None else str(card["label"])
            overlays.append(
                {
                    "method": method,
                    "file": f"{gallery_dir.name}/{path.name}",
                    "sha256": sha256_file(path),
                    "signed": bool(info["signed"]),
                    "evaluations": int(info["evaluations"]),
                    "trusted": trusted,
                    "trust_label": label,
                    "trust_source": None if card is None else source,
                }
            )
            failed = [] if card is None else [c for c in TRUST_CHECKS if card.get(c) == "fail"]
            note = f"failed: {', '.join(failed)}" if failed else ""
            reasons = () if card is None else failed_trust_reasons(card)
            case_maps.append(
                CaseMap(method=method, overlay=png, trusted=trusted, note=note, reasons=reasons)
            )
        score = float(table.at[i, "score"])
        agreement = _agreement([maps[(case_id, m)] for m in methods])
        entry: dict[str, Any] = {
            "case_id": case_id,
            "kind": kind,
            "label": int(table.at[i, "label"]),
            "score": score,
            "agreement": agreement,
            "overlays": overlays,
        }
        ident = dict(identifiers.get(case_id) or {})
        if identifiers:
            entry["identifiers"] = ident
        entries.append(entry)
        case_inputs.append(
            CaseInput(
                case_id=case_id,
                scan=pixels,
                score=score,
                threshold=threshold,
                predicted_class=class_names[int(score >= threshold)],
                maps=tuple(case_maps),
                agreement=agreement,
                threshold_source=threshold_source,
                model_name=model_name,
                notes=(
                    f"Shown in the report's gallery as a {kind} "
                    f"(reference standard: {class_names[int(table.at[i, 'label'])]}).",
                ),
                identifiers=ident,
                identifiers_requested=bool(identifiers),
            )
        )
    return entries, case_inputs, pngs


SALT_WITHHELD = "(withheld: secret)"


#: How a config path outside the config's folder is recorded (only its last part)
PATH_WITHHELD = "<withheld>/{name}"
_CONFIG_PATHS = (
    ("output_dir",),
    ("data", "manifest"),
    ("data", "dicom_dir"),
    ("data", "labels"),
    ("data", "root"),
    ("model", "path"),
)


def recorded_path(
    path: str | Path, *, config_dir: str | Path | None, include_identifiers: bool = False
) -> str:
    """A config path as the provenance records it.

    Folder names can carry identifiers (a patient's name, an accession number), so an
    absolute path is recorded only with ``include_identifiers``. Otherwise a path inside
    ``config_dir`` becomes relative to it (posix form) and any other path
    :data:`PATH_WITHHELD` (its last part only); the files' contents are fingerprinted
    separately (``sha256``).
    """
    p = Path(path)
    if include_identifiers:
        return str(p)
    if config_dir is not None:
        try:
            return p.resolve().relative_to(Path(config_dir).resolve()).as_posix() or "."
        except ValueError:
            pass
    return PATH_WITHHELD.format(name=p.name)


def _recorded_config(
    cfg: MedlensConfig,
    *,
    config_dir: str | Path | None = None,
    include_identifiers: bool = False,
) -> dict[str, Any]:
    """The config as recorded in the provenance.

    Institution names are replaced by placeholders, and the pseudonymisation salt is
    withheld: with the salt, anyone holding a list of patient IDs could re-link the
    pseudonymous keys in the report to patients. Paths are recorded by
    :func:`recorded_path` (relative to the config's folder; absolute only with
    ``include_identifiers``).
    """
    dump = cfg.model_dump(mode="json")
    dump["data"]["pseudonym_salt"] = SALT_WITHHELD
    names = dump.get("data", {}).get("site_names") or {}
    if names:
        dump["data"]["site_names"] = {
            f"institution {k + 1} (name withheld)": code
            for k, code in enumerate(v for _, v in sorted(names.items()))
        }
    for keys in _CONFIG_PATHS:
        parent = dump
        for k in keys[:-1]:
            parent = parent.get(k) or {}
        value = parent.get(keys[-1])
        if isinstance(value, str):
            parent[keys[-1]] = recorded_path(
                value, config_dir=config_dir, include_identifiers=include_identifiers
            )
    return dump


CACHE_DIR = ".cache"
CACHE_CORRUPT = (
    "cache entry {file} is damaged (SHA-256 {got}, recorded {expected}); it is ignored and "
    "the {stage} step recomputed"
)
CACHE_INCOMPLETE = (
    "cache entry {file} has no readable checksum file (interrupted write?); it is ignored "
    "and the {stage} step recomputed"
)
CACHE_UNUSABLE = "cache entry {file} cannot be used ({error}); the {stage} step is recomputed"
#: ``<stage>-<64 hex key>.<ext>`` and its ``.sha256`` companion
_CACHE_ENTRY = re.compile(
    r"^(?P<entry>(?P<stage>[A-Za-z0-9_]+)-[0-9a-f]{64}\.[A-Za-z0-9]+)(?P<check>\.sha256)?$"
)
AUDIT_RECORD_MEMBER = "record.json"
AUDIT_FILES_PREFIX = "files/"
AUDIT_ARCHIVE_BAD = "archive member {name!r} is not a plain relative file path"
NOT_DICOM_SC = (
    "--dicom-sc: case {case} is not a DICOM image, so no Secondary Capture references it; "
    "its overlays are only in the bundle"
)
BAD_PSEUDONYM_SC = (
    "case id {case!r} cannot be written as a DICOM PatientID pseudonym (1-64 characters of "
    "A-Z, a-z, 0-9, '-', '_', '.'); use manifest case ids of that form or --include-identifiers"
)
IDENTIFIERS_UNAVAILABLE = "not available (the source is not a DICOM file)"


class CacheWarning(UserWarning):
    """A cache entry of ``medlens run`` was damaged or incomplete and was not used."""


class StageCache:
    """Content-addressed cache of the steps of ``medlens run`` (``OUT/.cache``).

    An entry is ``<stage>-<key>.<ext>`` with ``<key>`` the SHA-256 of everything the step
    depends on (the input hashes, the step's parameters and the medlens version), plus a
    ``.sha256`` file holding the SHA-256 of the entry's bytes, written after it. Both are
    written atomically. An entry whose bytes do not match its checksum (or that has no
    checksum) is reported with a :class:`CacheWarning` and recomputed, never used.
    The entries a run reads or writes are remembered, so that :meth:`prune` can remove
    the older entries of the same steps after a successful run.

    Parameters
    ----------
    folder : path
        Cache folder (created on the first write).
    read : bool
        False (``--no-cache``) recomputes every step; the fresh results are still stored.
    say : callable
        Receives the warning texts as progress lines.
    """

    def __init__(self, folder: Path, *, read: bool = True, say: Callable[[str], None]) -> None:
        self.folder = Path(folder)
        self.read = bool(read)
        self.say = say
        self.used: set[tuple[str, str]] = set()  # (stage, entry file name)

    @staticmethod
    def key(stage: str, **ingredients: Any) -> str:
        """SHA-256 of the step name, the medlens version and the given ingredients."""
        from . import __version__
        from .reports import sha256_json

        return sha256_json({"stage": stage, "medlens_version": __version__, **ingredients})

    def path(self, stage: str, key: str, ext: str) -> Path:
        return self.folder / f"{stage}-{key}.{ext}"

    def _drop(self, stage: str, path: Path, text: str) -> None:
        warnings.warn(text, CacheWarning, stacklevel=3)
        self.say(f"warning: {text}")
        for p in (path, path.with_name(path.name + ".sha256")):
            p.unlink(missing_ok=True)

    def load(self, stage: str, key: str, ext: str) -> bytes | None:
        """The entry's bytes when present and intact, else None (damaged: warning)."""
        if not self.read:
            return None
        path = self.path(stage, key, ext)
        if not path.is_file():
            return None
        from .reports import sha256_bytes

        data = path.read_bytes()
        check = path.with_name(path.name + ".sha256")
        try:
            expected = check.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            self._drop(stage, path, CACHE_INCOMPLETE.format(file=path.name, stage=stage))
            return None
        got = sha256_bytes(data)
        if got != expected:
            self._drop(
                stage,
                path,
                CACHE_CORRUPT.format(file=path.name, got=got, expected=expected, stage=stage),
            )
            return None
        self.used.add((stage, path.name))
        return data

    def unusable(self, stage: str, key: str, ext: str, error: str) -> None:
        """Report and remove an entry whose checksum matched but whose content did not parse."""
        path = self.path(stage, key, ext)
        self._drop(stage, path, CACHE_UNUSABLE.format(file=path.name, error=error, stage=stage))

    def store(self, stage: str, key: str, ext: str, data: bytes) -> None:
        from .reports import sha256_bytes
        from .reports._atomic import atomic_write_bytes

        self.folder.mkdir(parents=True, exist_ok=True)
        path = atomic_write_bytes(self.path(stage, key, ext), data)
        atomic_write_bytes(
            path.with_name(path.name + ".sha256"), (sha256_bytes(data) + "\n").encode("ascii")
        )
        self.used.add((stage, path.name))

    def prune(self) -> int:
        """Remove the entries of the steps used in this run that this run did not use.

        Only steps that read or wrote an entry through this object are pruned, and only
        their other entries (older inputs, settings or medlens versions): the entries
        this run used stay, and so do the entries of steps that did not run (e.g. the
        audit of an earlier run with ``--audit-methods``). Files that are not cache
        entries (e.g. temporary files of an interrupted write) are left alone.

        Returns
        -------
        int
            The number of entries removed (an entry and its checksum file count once).
        """
        stages = {stage for stage, _ in self.used}
        if not stages or not self.folder.is_dir():
            return 0
        keep = {name for _, name in self.used}
        removed: set[str] = set()
        for path in sorted(self.folder.iterdir()):
            m = _CACHE_ENTRY.match(path.name)
            if m is None or m["stage"] not in stages or m["entry"] in keep:
                continue
            if not path.is_file():
                continue
            path.unlink(missing_ok=True)
            removed.add(m["entry"])
        return len(removed)


def _file_digest(path: Any) -> str:
    """SHA-256 of a file, or a marker when there is no such file (failed cases)."""
    from .reports import sha256_file

    if not isinstance(path, str) or not Path(path).is_file():
        return "absent"
    return sha256_file(path)


def _excluded_by_class(table: Any) -> dict[str, dict[str, int]]:
    """Failed / indeterminate cases of the test split by reference class."""
    import pandas as pd

    label = table["label"] if "label" in table.columns else None
    out: dict[str, dict[str, int]] = {}
    for status in ("failed", "indeterminate"):
        mask = (table["status"] == status).to_numpy()
        if label is None:
            lab = np.full(int(mask.sum()), np.nan)
        else:
            lab = np.asarray(pd.to_numeric(label[mask], errors="coerce"), dtype=float)
        out[status] = {
            "positive": int(np.sum(lab == 1)),
            "negative": int(np.sum(lab == 0)),
            "unknown": int(np.sum(~np.isin(lab, (0.0, 1.0)))),
        }
    return out


def _dicom_header(path: Any) -> Any:
    """The DICOM header of a case file (no pixels), or None when it is not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not isinstance(path, str) or not Path(path).is_file():
        return None
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError):
        return None


def _identifiers(table: Any, picks: list[tuple[int, str]], ids: list[str]) -> dict[str, dict]:
    """Patient ID and name from the DICOM header of each gallery case (--include-identifiers)."""
    out: dict[str, dict[str, str]] = {}
    for (i, _), case_id in zip(picks, ids, strict=True):
        ds = _dicom_header(table.at[i, "path"] if "path" in table.columns else None)
        if ds is None:
            out[case_id] = {"patient_id": IDENTIFIERS_UNAVAILABLE}
            continue
        out[case_id] = {
            "patient_id": str(ds.get("PatientID", "") or ""),
            "patient_name": str(ds.get("PatientName", "") or ""),
        }
    return out


def _png_rgb(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _write_dicom_sc(
    table: Any,
    picks: list[tuple[int, str]],
    ids: list[str],
    methods: Sequence[str],
    pngs: Mapping[tuple[str, str], bytes],
    folder: Path,
    *,
    report_id: str,
    model_name: str,
    include_identifiers: bool,
    say: Callable[[str], None],
    uid_salt: str = "",
) -> list[Path]:
    """Each gallery overlay as a DICOM Secondary Capture: in the source study (new series)
    with ``include_identifiers``, else de-identified with UIDs remapped under ``uid_salt``
    (the project's pseudonymisation salt, so holders of the source cannot link them)."""
    from .reports import SourceReference, write_secondary_capture
    from .reports._dicom_sc import _PSEUDONYM_RE

    written: list[Path] = []
    for (i, _), case_id in zip(picks, ids, strict=True):
        ds = _dicom_header(table.at[i, "path"] if "path" in table.columns else None)
        if ds is None or "SOPInstanceUID" not in ds:
            say(NOT_DICOM_SC.format(case=case_id))
            continue
        if not include_identifiers and not _PSEUDONYM_RE.fullmatch(case_id):
            raise InputDataError(BAD_PSEUDONYM_SC.format(case=case_id))
        ref = SourceReference.from_dataset(ds)
        folder.mkdir(parents=True, exist_ok=True)
        for j, method in enumerate(methods):
            written.append(
                write_secondary_capture(
                    folder / f"{case_id}_{method}.dcm",
                    _png_rgb(pngs[(case_id, method)]),
                    source=ref,
                    series_description=f"medlens {method} overlay"[:64],
                    pseudonym=None if include_identifiers else case_id,
                    include_identifiers=include_identifiers,
                    series_number=900 + j,
                    instance_number=1,
                    series_key=report_id,
                    derivation_description=(
                        f"medlens {method} explanation of model {model_name}, report {report_id}"
                    ),
                    uid_salt=uid_salt,
                )
            )
    return written


def _short(digest: str) -> str:
    return digest[:12]


def run_pipeline(
    cfg: MedlensConfig,
    plan_path: str | Path,
    out_dir: str | Path,
    *,
    gallery: int = 2,
    methods: Sequence[str] = DEFAULT_GALLERY_METHODS,
    audit: Mapping[str, Any] | None = None,
    audit_methods: Sequence[str] = (),
    title: str = "medlens regulatory evidence report",
    progress: bool = False,
    stream: IO[str] | None = None,
    log: Callable[[str], None] | None = None,
    cache: bool = True,
    include_identifiers: bool = False,
    dicom_sc: bool = False,
    config_dir: str | Path | None = None,
) -> RunResult:
    """Run ingest -> predict -> validate -> explain -> bundle -> PDF for one config.

    Intermediate results are cached by content in ``OUT/.cache`` (see
    :class:`StageCache`): predictions (keyed by the model weights, the model and
    preprocessing settings, the case table and every test image's SHA-256), the
    validation evidence with its ROC band (predictions + plan), the explanation audit
    (predictions' inputs + methods + seed) and the gallery's explanation maps (weights,
    preprocessing, the chosen cases' images, methods, seed). A rerun with nothing changed
    skips those steps and writes byte-identical outputs.

    Parameters
    ----------
    cfg : MedlensConfig
        Data, preprocessing, model (binary head) and seed.
    plan_path : path
        Analysis plan YAML (its SHA-256 is recorded).
    out_dir : path
        Output folder (created; existing files of the same names are replaced atomically).
    gallery : int
        Cases per kind in the gallery (true positive, false positive, false negative);
        0 skips the explanations and the case reports.
    methods : sequence of str
        Explainer names for the gallery (see :func:`medlens.xai.list_explainers`).
    audit : mapping, optional
        An explanation-audit record (``explanation_audit.json``) to include in the bundle.
    audit_methods : sequence of str
        When ``audit`` is not given: run the explanation audit of the test split with
        these methods (files in ``OUT/audit``; cached). Empty: no audit.
    title : str
        Report title (no patient identifiers).
    progress : bool
        Progress bars on stderr.
    stream : text stream, optional
        Where step messages go (default: none). ``log`` overrides it.
    log : callable, optional
        Called with one line per step.
    cache : bool
        Use cached results (False: ``--no-cache``, recompute every step and refresh the
        cache).
    include_identifiers : bool
        Put the patient ID and name of each gallery case (from its DICOM header) into the
        bundle, the case reports, the regulatory report and the DICOM objects. Off by
        default: outputs carry pseudonymous keys only.
    dicom_sc : bool
        Write each gallery overlay as a DICOM Secondary Capture referencing the source
        study and image into ``OUT/dicom``.
    config_dir : path, optional
        The folder of the config file. The provenance records the config's paths
        (data, model, output folder) relative to it when they lie inside it, else as
        ``<withheld>/<name>``; absolute paths only with ``include_identifiers``.

    Returns
    -------
    RunResult

    Raises
    ------
    InputDataError
        If the head is not binary or no test case could be scored.
    ExplanationError
        If a method name is unknown (checked before any heavy work).
    ConfigError
        If the analysis plan is invalid (checked before any heavy work).
    """
    import pandas as pd

    from .model import load_model
    from .reports import (
        dumps_json,
        provenance,
        sha256_bytes,
        sha256_file,
        to_jsonable,
        write_bundle,
        write_case_reports,
    )
    from .reports._atomic import atomic_write_bytes
    from .reports._regulatory import write_regulatory_report

    if not isinstance(cfg, MedlensConfig):
        raise param_error("cfg", "run_pipeline", "a MedlensConfig", type(cfg).__name__)
    if isinstance(gallery, bool) or not isinstance(gallery, int) or gallery < 0:
        raise param_error("gallery", "run_pipeline", "an int >= 0", gallery)
    if isinstance(methods, str):
        raise param_error("methods", "run_pipeline", "a sequence of explainer names", methods)
    if isinstance(audit_methods, str):
        raise param_error(
            "audit_methods", "run_pipeline", "a sequence of explainer names", audit_methods
        )
    for name, flag in (
        ("cache", cache),
        ("include_identifiers", include_identifiers),
        ("dicom_sc", dicom_sc),
    ):
        if not isinstance(flag, bool):
            raise param_error(name, "run_pipeline", "a bool", flag)
    plan_path = Path(plan_path)
    if not plan_path.is_file():
        raise InputDataError("analysis plan not found", source=str(plan_path))
    if not cfg.model.head.type.startswith("binary"):
        raise InputDataError(NOT_BINARY.format(head=cfg.model.head.type))
    # cheap checks before any heavy work: explainer names and the plan itself
    from .validation import load_plan
    from .xai import explainer_class

    for name in (*methods, *audit_methods):
        explainer_class(name)
    load_plan(plan_path)
    say = log or (
        (lambda line: print(line, file=stream, flush=True)) if stream else (lambda line: None)
    )
    methods = list(methods)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = StageCache(out / CACHE_DIR, read=cache, say=say)
    seconds: dict[str, float] = {}
    stages: dict[str, str] = {}
    keys: dict[str, str] = {}  # stage -> cache key (the entry is OUT/.cache/<stage>-<key>.*)
    models: list[Any] = []

    def get_model() -> Any:
        if not models:
            models.append(load_model(cfg.model, preprocess=cfg.preprocess))
        return models[0]

    def report(stage: str, hit: bool, digest: str, key: str | None = None) -> None:
        stages[stage] = "cached" if hit else "computed"
        how = "cached" if hit else ("recomputed (--no-cache)" if not cache else "computed")
        key = key or keys.get(stage, "")
        say(f"{stage}: {how} (cache key {_short(key)}, content SHA-256 {_short(digest)})")

    # ingest: the case table and the fingerprints of everything the predictions depend on
    t0 = time.perf_counter()
    cases = load_cases(cfg)
    test = select_split(cases.table, cfg, cfg.data.test_split)
    weights_sha = sha256_file(cfg.model.path)
    model_settings = cfg.model.model_dump(mode="json", exclude={"path"})
    preprocess_settings = cfg.preprocess.model_dump(mode="json")
    table_sha = sha256_bytes(test.to_csv(index=False, lineterminator="\n").encode("utf-8"))
    image_sha = [_file_digest(p) for p in test["path"]] if "path" in test.columns else []
    seconds["ingest"] = time.perf_counter() - t0

    # predictions
    t0 = time.perf_counter()
    pred_key = keys["predictions"] = store.key(
        "predictions",
        weights=weights_sha,
        model=model_settings,
        preprocess=preprocess_settings,
        table=table_sha,
        images=image_sha,
    )
    images: list[Any] | None = None
    data = store.load("predictions", pred_key, "csv")
    if data is not None:
        try:
            # scores as text, parsed by float(): exact round trip of what was written
            cached = pd.read_csv(
                io.BytesIO(data),
                dtype={"case_id": str, "status": str, "score": str, "failure_reason": object},
                keep_default_na=False,
                na_values={"failure_reason": [""]},
            )
            if [str(c) for c in cached["case_id"]] != [str(c) for c in test["case_id"]]:
                raise ValueError("its case ids differ from the case table")
            test = test.reset_index(drop=True).copy()
            test["score"] = np.array(
                [float(v) if v != "" else np.nan for v in cached["score"]], dtype=float
            )
            test["status"] = cached["status"].to_numpy()
            test["failure_reason"] = cached["failure_reason"].astype(object).to_numpy()
        except (ValueError, KeyError) as exc:
            store.unusable("predictions", pred_key, "csv", str(exc))
            data = None
    hit = data is not None
    if data is None:
        test, images = predict_cases(test, cfg, get_model(), progress=progress)
        data = (
            test[[c for c in PREDICTION_COLUMNS if c in test.columns]]
            .to_csv(index=False, lineterminator="\n")
            .encode("utf-8")
        )
        store.store("predictions", pred_key, "csv", data)
    predictions_csv = atomic_write_bytes(out / "predictions.csv", data)
    predictions_sha = sha256_bytes(data)
    report("predictions", hit, predictions_sha)
    scored = (test["status"] == STATUS_OK).to_numpy()
    if not scored.any():
        raise InputDataError(NO_SCORED.format(split=cfg.data.test_split, file=predictions_csv))
    seconds["predict"] = time.perf_counter() - t0
    say(f"predicted {int(scored.sum())} of {len(test)} test case(s) -> {predictions_csv}")

    # validation (+ the ROC band, computed from the same predictions and bootstrap settings)
    t0 = time.perf_counter()
    plan_sha = sha256_file(plan_path)
    val_key = keys["validation"] = store.key(
        "validation", predictions=predictions_sha, plan=plan_sha
    )
    data = store.load("validation", val_key, "json")
    evidence = None
    if data is not None:
        try:
            evidence = json.loads(data.decode("utf-8"))
            if not isinstance(evidence, dict) or "acceptance" not in evidence:
                raise ValueError("not a validation evidence record")
        except (ValueError, UnicodeDecodeError) as exc:
            store.unusable("validation", val_key, "json", str(exc))
            data, evidence = None, None
    hit = data is not None
    if evidence is None:
        evidence = to_jsonable(_validate(predictions_csv, plan_path))[0]
        band = _roc_band(test[scored], evidence)
        if band is not None:
            evidence["roc_band"] = band
        data = dumps_json(evidence).encode("utf-8")
        store.store("validation", val_key, "json", data)
    report("validation", hit, sha256_bytes(data))
    seconds["validate"] = time.perf_counter() - t0
    verdict = str(evidence["acceptance"].get("verdict"))
    say(f"validated: verdict {verdict}")

    # explanation audit (only when asked and not given)
    if audit is None and audit_methods:
        t0 = time.perf_counter()
        audit = _audit_stage(cfg, out, list(audit_methods), store, pred_key, test, report)
        seconds["audit"] = time.perf_counter() - t0

    # gallery explanations
    t0 = time.perf_counter()
    thr = evidence["plan"]["threshold"]
    threshold = float(thr["value"])
    threshold_source = f"{thr.get('rule')} rule, from the {thr.get('source')}"
    labels = test["label"].to_numpy()
    score = test["score"].to_numpy(dtype=float)
    picks = select_gallery(
        np.where(scored, labels, -1),
        np.where(scored, score, np.nan),
        threshold=threshold,
        per_kind=gallery,
    )
    bundle_dir = out / "bundle"
    entries: list[dict[str, Any]] = []
    case_inputs: list[Any] = []
    pngs: dict[tuple[str, str], bytes] = {}
    ids = [str(test.at[i, "case_id"]) for i, _ in picks]
    model_name = ""
    if picks and methods:
        pick_sha = [image_sha[i] if image_sha else "absent" for i, _ in picks]
        mask_cols = [c for c in ("anatomy_mask", "lesion_mask") if c in test.columns]
        pick_masks = [{c: test.at[i, c] for c in mask_cols} for i, _ in picks]
        gal_key = keys["gallery"] = store.key(
            "gallery",
            weights=weights_sha,
            model=model_settings,
            preprocess=preprocess_settings,
            methods=methods,
            seed=cfg.seed,
            cases=[[c, k] for c, (_, k) in zip(ids, picks, strict=True)],
            images=pick_sha,
            trust=GALLERY_TRUST_VERSION,
            batch_size=cfg.model.batch_size,
            masks=[{c: _file_digest(m[c]) for c in mask_cols} for m in pick_masks],
        )
        if images is not None:
            scans = [images[i] for i, _ in picks]
        else:
            from ._pipeline import read_images

            scans, failures = read_images([str(test.at[i, "path"]) for i, _ in picks], cfg)
            if failures:
                raise InputDataError(
                    f"gallery case(s) could not be read again: {sorted(failures.values())}"
                )
        data = store.load("gallery", gal_key, "npz")
        maps = meta = None
        if data is not None:
            try:
                maps, meta = _maps_from_bytes(data)
                if set(maps) != {(c, m) for c in ids for m in methods}:
                    raise ValueError("it holds other cases or methods")
                if any("trust" not in v for v in meta.values()):
                    raise ValueError("it has no trust cards")
            except (ValueError, KeyError, OSError) as exc:
                store.unusable("gallery", gal_key, "npz", str(exc))
                data, maps, meta = None, None, None
        hit = data is not None
        if maps is None:
            maps, meta = _explain_maps(
                cfg, get_model(), scans, ids, methods, progress, masks=pick_masks
            )
            data = _maps_to_bytes(maps, meta)
            store.store("gallery", gal_key, "npz", data)
            # read back: a fresh run uses exactly what a cached rerun will (NaN -> null)
            maps, meta = _maps_from_bytes(data)
        report("gallery", hit, sha256_bytes(data))
        model_name = _model_name(cfg, models)
        entries, case_inputs, pngs = _render_gallery(
            test,
            scans,
            picks,
            ids,
            methods,
            maps,
            meta,
            bundle_dir / "gallery",
            threshold,
            threshold_source,
            model_name,
            _trust_cards(audit),
            _identifiers(test, picks, ids) if include_identifiers else {},
            tuple(cfg.model.head.class_names[-2:]),
        )
    seconds["explain"] = time.perf_counter() - t0
    say(f"explained {len(entries)} gallery case(s) with {', '.join(methods) or 'no method'}")

    t0 = time.perf_counter()
    ok_rows = test[scored]
    cases_part = {
        "threshold": threshold,
        "methods": methods,
        "scores": {
            "case_id": [str(c) for c in ok_rows["case_id"]],
            "label": [int(v) for v in ok_rows["label"]],
            "score": [float(v) for v in ok_rows["score"]],
        },
        "gallery": entries,
        "failed_reasons": {
            str(k): int(v)
            for k, v in test.loc[~scored, "failure_reason"].fillna("unknown").value_counts().items()
        },
        "excluded_by_class": _excluded_by_class(test),
    }
    model_name = model_name or _model_name(cfg, models)
    files = {"model_weights": cfg.model.path, "predictions": predictions_csv, "plan": plan_path}
    if cfg.data.manifest is not None:
        files["manifest"] = cfg.data.manifest
    if cfg.data.labels is not None:
        files["labels"] = cfg.data.labels
    dataset = dataset_fingerprint(
        test, cfg, digests=image_sha, split=f"split {cfg.data.test_split!r}"
    )
    prov = provenance(
        seeds={"run": cfg.seed, "bootstrap": int(evidence["plan"]["bootstrap"]["seed"])},
        files=files,
        hashes={"dataset": dataset["sha256"]},
        config=_recorded_config(
            cfg, config_dir=config_dir, include_identifiers=include_identifiers
        ),
        device=str(getattr(models[0], "device", "cpu")) if models else "cpu",
        extra={
            "model": {"name": model_name, "head": cfg.model.head.type},
            "identifiers_included": include_identifiers,
            "dataset": {k: v for k, v in dataset.items() if k != "sha256"},
        },
    )
    bundle = write_bundle(
        bundle_dir, provenance=prov, validation=evidence, audit=audit, cases=cases_part, title=title
    )
    report_pdf = write_regulatory_report(
        bundle_dir, out / "report.pdf", include_identifiers=include_identifiers
    )
    case_pdf = None
    if case_inputs:
        case_pdf = write_case_reports(
            out / "case_reports.pdf", case_inputs, report_id=bundle.report_id
        )
    dicom_files: list[Path] = []
    if dicom_sc and entries:
        dicom_files = _write_dicom_sc(
            test,
            picks,
            ids,
            methods,
            pngs,
            out / "dicom",
            report_id=bundle.report_id,
            model_name=model_name,
            include_identifiers=include_identifiers,
            say=say,
            uid_salt=cfg.data.pseudonym_salt,
        )
        say(f"dicom: {len(dicom_files)} Secondary Capture object(s) -> {out / 'dicom'}")
    seconds["report"] = time.perf_counter() - t0
    say(f"report: {report_pdf}")
    n_pruned = store.prune()
    if n_pruned:
        say(f"cache: pruned {n_pruned} old entr{'y' if n_pruned == 1 else 'ies'} of the steps run")
    return RunResult(
        out_dir=out,
        predictions_csv=predictions_csv,
        bundle_dir=bundle_dir,
        report_pdf=report_pdf,
        case_report_pdf=case_pdf,
        report_id=bundle.report_id,
        verdict=verdict,
        n_cases=len(test),
        n_failed=int((~scored).sum()),
        n_gallery=len(entries),
        seconds=seconds,
        stages=stages,
        dicom_files=tuple(dicom_files),
        n_pruned=n_pruned,
    )


def _model_name(cfg: MedlensConfig, models: list[Any]) -> str:
    """The model's name (loaded model's, else the architecture from the config)."""
    if models:
        return str(models[0].name)
    from .model import load_model

    models.append(load_model(cfg.model, preprocess=cfg.preprocess))
    return str(models[0].name)


def _roc_band(rows: Any, evidence: Mapping[str, Any]) -> dict | None:
    """Pointwise ROC band with the evidence's bootstrap settings (None for one class)."""
    from .validation._roc_band import roc_band

    y = rows["label"].to_numpy(dtype=float)
    if np.unique(y).size < 2:
        return None
    boot = evidence["plan"]["bootstrap"]
    # the same resampling unit and strata as the evidence's bootstrap
    column = boot.get("stratified_by", "site" if boot.get("stratify_by_site", True) else None)
    strata = None
    if isinstance(column, str) and column in rows.columns:
        strata = rows[column].astype(str).to_numpy()
    clusters = None
    if boot.get("unit", "patient") == "patient" and "patient_key" in rows.columns:
        clusters = rows["patient_key"].astype(str).to_numpy()
    band = roc_band(
        y.astype(int),
        rows["score"].to_numpy(dtype=float),
        clusters=clusters,
        strata=strata,
        n_replicates=int(boot.get("replicates", 2000)),
        seed=int(boot.get("seed", 0)),
    )
    return band.to_dict()


def _audit_stage(
    cfg: MedlensConfig,
    out: Path,
    methods: list[str],
    store: StageCache,
    pred_key: str,
    table: Any,
    report: Callable[..., None],
) -> dict[str, Any]:
    """The explanation audit of the test split (``medlens audit``), cached with its files.

    Keyed by the predictions' inputs, the anatomy and lesion masks (file hashes), the
    cohort columns, the methods and the seed. The cache entry is a ZIP archive of the
    record (as it goes into the bundle) and every file the audit wrote (CSV tables, PNG
    figures, ``explanation_audit.json``); fresh or cached, those files are (re)written
    into ``OUT/audit`` from the archive, so a cached rerun leaves the same bytes on disk
    as a fresh run.
    """
    from .commands import audit as audit_cmd
    from .reports import dumps_json, sha256_bytes

    masks = {
        col: [_file_digest(p) for p in table[col]]
        for col in ("anatomy_mask", "lesion_mask")
        if col in table.columns
    }
    key = store.key(
        "audit",
        inputs=pred_key,
        masks=masks,
        cohort_columns=list(cfg.data.cohort_columns),
        methods=methods,
        seed=cfg.seed,
        max_cases=None,
    )
    data = store.load("audit", key, "zip")
    record = None
    files: dict[str, bytes] = {}
    if data is not None:
        try:
            raw, files = _unpack_audit(data)
            record = json.loads(raw.decode("utf-8"))
            if not isinstance(record, dict) or "methods" not in record:
                raise ValueError("not an explanation audit record")
        except (ValueError, UnicodeDecodeError, zipfile.BadZipFile, KeyError) as exc:
            store.unusable("audit", key, "zip", str(exc))
            data, record = None, None
    hit = data is not None
    if record is None:
        out.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".audit-", dir=out))
        try:
            record = audit_cmd.audit_to_folder(
                cfg,
                scratch,
                methods=tuple(methods),
                max_cases=None,
                seed=cfg.seed,
                stream=io.StringIO(),
            )
            raw = dumps_json(record).encode("utf-8")
            files = {
                p.relative_to(scratch).as_posix(): p.read_bytes()
                for p in sorted(scratch.rglob("*"))
                if p.is_file()
            }
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        record = json.loads(raw.decode("utf-8"))
        data = _pack_audit(raw, files)
        store.store("audit", key, "zip", data)
    _write_files(out / "audit", files)
    report("audit", hit, sha256_bytes(data), key)
    return record


def _pack_audit(record: bytes, files: Mapping[str, bytes]) -> bytes:
    """A deterministic ZIP of the audit record and its files (fixed dates, sorted names)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        members = [(AUDIT_RECORD_MEMBER, record)]
        members += [(AUDIT_FILES_PREFIX + name, files[name]) for name in sorted(files)]
        for name, content in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, content)
    return buf.getvalue()


def _unpack_audit(data: bytes) -> tuple[bytes, dict[str, bytes]]:
    """(record bytes, {relative path: bytes}) of an archive written by :func:`_pack_audit`."""
    files: dict[str, bytes] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        record = z.read(AUDIT_RECORD_MEMBER)
        for info in z.infolist():
            name = info.filename
            if name == AUDIT_RECORD_MEMBER:
                continue
            rel = name[len(AUDIT_FILES_PREFIX) :] if name.startswith(AUDIT_FILES_PREFIX) else ""
            parts = rel.split("/")
            if info.is_dir() or not rel or rel.startswith("/") or "" in parts or ".." in parts:
                raise ValueError(AUDIT_ARCHIVE_BAD.format(name=name))
            files[rel] = z.read(info)
    return record, files


def _write_files(folder: Path, files: Mapping[str, bytes]) -> None:
    """Write ``{relative path: bytes}`` under ``folder`` (atomically, file by file)."""
    from .reports._atomic import atomic_write_bytes

    for name in sorted(files):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, files[name])
