"""The end-to-end job behind ``medlens run``: config + plan -> evidence bundle -> PDF reports.

Steps: ingest (manifest / DICOM folder, labels joined) -> predict the test split ->
validate against the analysis plan -> explain a small gallery (highest-scoring true and
false positives, lowest-scoring false negatives) with a few cheap methods -> write the
evidence bundle -> render the regulatory PDF and the clinician case-report PDF.

Output folder layout::

    predictions.csv          test split: pseudonymous ids, label, score, cohorts, status
    bundle/                  evidence bundle (bundle.json, evidence.json, cases.json,
                             gallery/<case>_<method>.png, explanation_audit.json if given)
    report.pdf               regulatory evidence report (re-render: `medlens report`)
    case_reports.pdf         one page per gallery case

No file path or DICOM header value reaches the outputs apart from the configuration
recorded in the provenance; case ids are the manifest's pseudonymous keys.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np

from ._errors import InputDataError, param_error
from ._pipeline import CASE_COLUMNS, STATUS_OK, load_cases, predict_cases, select_split
from .config import MedlensConfig

__all__ = [
    "DEFAULT_GALLERY_METHODS",
    "PREDICTION_COLUMNS",
    "RunResult",
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
        Wall-clock seconds per step (``predict``, ``validate``, ``explain``, ``report``).
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


def _trust_cards(audit: Mapping[str, Any] | None) -> dict[tuple[str, str], Mapping[str, Any]]:
    """(case id, method) -> trust card of a ``medlens audit`` record (empty without one)."""
    cards: dict[tuple[str, str], Mapping[str, Any]] = {}
    for method, rec in ((audit or {}).get("methods") or {}).items():
        for card in (rec.get("trust") or {}).get("cards", []):
            cards[(str(card["case"]), method)] = card
    return cards


def _explain_gallery(
    cfg: MedlensConfig,
    model: Any,
    table: Any,
    images: list[Any],
    picks: list[tuple[int, str]],
    methods: Sequence[str],
    gallery_dir: Path,
    threshold: float,
    threshold_source: str,
    progress: bool,
    trust: Mapping[tuple[str, str], Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], list[Any]]:
    from . import xai
    from .reports import CaseInput, CaseMap, render_heatmap_overlay, sha256_file
    from .reports._atomic import atomic_write_bytes

    if not picks or not methods:
        return [], []
    explainers = {m: xai.get_explainer(m, model.module, head=cfg.model.head) for m in methods}
    chosen = [images[i] for i, _ in picks]
    ids = [str(table.at[i, "case_id"]) for i, _ in picks]
    x, geometries = model.preprocess.batch(chosen)
    results = xai.explain_cases(
        explainers,
        x,
        case_ids=ids,
        seed=cfg.seed,
        inverse=[partial(model.preprocess.invert_map, geometry=g) for g in geometries],
        progress=progress,
    )
    gallery_dir.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    case_inputs: list[Any] = []
    for (i, kind), case_id, scan in zip(picks, ids, chosen, strict=True):
        pixels = np.asarray(scan.pixels, dtype=np.float64)
        overlays, maps = [], []
        for method, r in results[case_id].items():
            amap = r.maps_original[0][0] if r.maps_original is not None else r.maps[0, 0]
            png = render_heatmap_overlay(pixels, np.asarray(amap), method=method)
            path = atomic_write_bytes(gallery_dir / f"{case_id}_{method}.png", png)
            card = trust.get((case_id, method))
            trusted = None if card is None else bool(card["trusted"])
            label = TRUST_NOT_CHECKED if card is None else str(card["label"])
            overlays.append(
                {
                    "method": method,
                    "file": f"{gallery_dir.name}/{path.name}",
                    "sha256": sha256_file(path),
                    "signed": bool(r.signed),
                    "evaluations": int(r.evaluations),
                    "trusted": trusted,
                    "trust_label": label,
                }
            )
            failed = [] if card is None else [c for c in TRUST_CHECKS if card.get(c) == "fail"]
            note = f"failed: {', '.join(failed)}" if failed else ""
            maps.append(CaseMap(method=method, overlay=png, trusted=trusted, note=note))
        score = float(table.at[i, "score"])
        agreement = _agreement(
            [
                r.maps_original[0][0] if r.maps_original is not None else r.maps[0, 0]
                for r in results[case_id].values()
            ]
        )
        entries.append(
            {
                "case_id": case_id,
                "kind": kind,
                "label": int(table.at[i, "label"]),
                "score": score,
                "agreement": agreement,
                "overlays": overlays,
            }
        )
        case_inputs.append(
            CaseInput(
                case_id=case_id,
                scan=pixels,
                score=score,
                threshold=threshold,
                predicted_class="positive" if score >= threshold else "negative",
                maps=tuple(maps),
                agreement=agreement,
                threshold_source=threshold_source,
                model_name=str(model.name),
                notes=(f"gallery: {kind} (reference label {int(table.at[i, 'label'])})",),
            )
        )
    return entries, case_inputs


SALT_WITHHELD = "(withheld: secret)"


def _recorded_config(cfg: MedlensConfig) -> dict[str, Any]:
    """The config as recorded in the provenance.

    Institution names are replaced by placeholders, and the pseudonymisation salt is
    withheld: with the salt, anyone holding a list of patient IDs could re-link the
    pseudonymous keys in the report to patients.
    """
    dump = cfg.model_dump(mode="json")
    dump["data"]["pseudonym_salt"] = SALT_WITHHELD
    names = dump.get("data", {}).get("site_names") or {}
    if names:
        dump["data"]["site_names"] = {
            f"institution {k + 1} (name withheld)": code
            for k, code in enumerate(v for _, v in sorted(names.items()))
        }
    return dump


def run_pipeline(
    cfg: MedlensConfig,
    plan_path: str | Path,
    out_dir: str | Path,
    *,
    gallery: int = 2,
    methods: Sequence[str] = DEFAULT_GALLERY_METHODS,
    audit: Mapping[str, Any] | None = None,
    title: str = "medlens regulatory evidence report",
    progress: bool = False,
    stream: IO[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Run ingest -> predict -> validate -> explain -> bundle -> PDF for one config.

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
    title : str
        Report title (no patient identifiers).
    progress : bool
        Progress bars on stderr.
    stream : text stream, optional
        Where step messages go (default: none). ``log`` overrides it.
    log : callable, optional
        Called with one line per step.

    Returns
    -------
    RunResult

    Raises
    ------
    InputDataError
        If the head is not binary or no test case could be scored.
    """
    from .model import load_model
    from .reports import provenance, write_bundle, write_case_reports
    from .reports._regulatory import write_regulatory_report

    if not isinstance(cfg, MedlensConfig):
        raise param_error("cfg", "run_pipeline", "a MedlensConfig", type(cfg).__name__)
    if isinstance(gallery, bool) or not isinstance(gallery, int) or gallery < 0:
        raise param_error("gallery", "run_pipeline", "an int >= 0", gallery)
    if isinstance(methods, str):
        raise param_error("methods", "run_pipeline", "a sequence of explainer names", methods)
    plan_path = Path(plan_path)
    if not plan_path.is_file():
        raise InputDataError("analysis plan not found", source=str(plan_path))
    if not cfg.model.head.type.startswith("binary"):
        raise InputDataError(NOT_BINARY.format(head=cfg.model.head.type))
    say = log or (
        (lambda line: print(line, file=stream, flush=True)) if stream else (lambda line: None)
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    cases = load_cases(cfg)
    test = select_split(cases.table, cfg, cfg.data.test_split)
    model = load_model(cfg.model, preprocess=cfg.preprocess)
    test, images = predict_cases(test, cfg, model, progress=progress)
    predictions_csv = out / "predictions.csv"
    from .reports._atomic import atomic_write_text

    atomic_write_text(
        predictions_csv,
        test[[c for c in PREDICTION_COLUMNS if c in test.columns]].to_csv(
            index=False, lineterminator="\n"
        ),
    )
    scored = test["status"] == STATUS_OK
    if not scored.any():
        raise InputDataError(NO_SCORED.format(split=cfg.data.test_split, file=predictions_csv))
    seconds["predict"] = time.perf_counter() - t0
    say(f"predicted {int(scored.sum())} of {len(test)} test case(s) -> {predictions_csv}")

    t0 = time.perf_counter()
    evidence = _validate(predictions_csv, plan_path)
    seconds["validate"] = time.perf_counter() - t0
    verdict = str(evidence["acceptance"].get("verdict"))
    say(f"validated: verdict {verdict}")

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
    entries, case_inputs = _explain_gallery(
        cfg,
        model,
        test,
        images,
        picks,
        list(methods),
        bundle_dir / "gallery",
        threshold,
        threshold_source,
        progress,
        _trust_cards(audit),
    )
    seconds["explain"] = time.perf_counter() - t0
    say(f"explained {len(entries)} gallery case(s) with {', '.join(methods) or 'no method'}")

    t0 = time.perf_counter()
    ok_rows = test[scored]
    cases_part = {
        "threshold": threshold,
        "methods": list(methods),
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
    }
    files = {"model_weights": cfg.model.path, "predictions": predictions_csv, "plan": plan_path}
    if cfg.data.manifest is not None:
        files["manifest"] = cfg.data.manifest
    prov = provenance(
        seeds={"run": cfg.seed, "bootstrap": int(evidence["plan"]["bootstrap"]["seed"])},
        files=files,
        config=_recorded_config(cfg),
        device=str(getattr(model, "device", "cpu")),
        extra={"model": {"name": str(model.name), "head": cfg.model.head.type}},
    )
    bundle = write_bundle(
        bundle_dir, provenance=prov, validation=evidence, audit=audit, cases=cases_part, title=title
    )
    report_pdf = write_regulatory_report(bundle_dir, out / "report.pdf")
    case_pdf = None
    if case_inputs:
        case_pdf = write_case_reports(
            out / "case_reports.pdf", case_inputs, report_id=bundle.report_id
        )
    seconds["report"] = time.perf_counter() - t0
    say(f"report: {report_pdf}")
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
    )
