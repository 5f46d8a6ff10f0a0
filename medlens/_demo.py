"""The demo pipeline behind ``medlens demo``: synthetic cohort -> manifest -> predictions.

It runs the product's main job on data with known ground truth: the DICOM files are
scanned into a pseudonymous manifest by :mod:`medlens.io`, the ground truth is joined
by path, the packaged demo model is loaded by :mod:`medlens.model` and the test split
is predicted. No identifier from any DICOM header reaches an output file or the
console.
"""

from __future__ import annotations

import io
import math
import sys
import time
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import yaml

from ._errors import InputDataError, param_error
from ._pipeline import CASE_COLUMNS, STATUS_OK, load_cases, predict_cases, select_split
from .config import MedlensConfig, load_config
from .validation import UndefinedMetricWarning, roc_auc

__all__ = [
    "DEMO_IMAGE_SIZE",
    "DEMO_N_PATIENTS",
    "DEMO_SEED",
    "PREDICTION_COLUMNS",
    "DemoResult",
    "demo_config",
    "demo_model_path",
    "run_demo",
]

DEMO_SEED = 0
DEMO_N_PATIENTS = 300
DEMO_IMAGE_SIZE = 128
#: Smallest --image-size the synthetic cohort supports (its lesions and markers need room)
MIN_IMAGE_SIZE = 32
DEMO_AUDIT_METHODS = ("gradcam",)
MODEL_FILES = {True: "demo_model.pt", False: "demo_model_noshortcut.pt"}
PREDICTION_COLUMNS = (*CASE_COLUMNS, "shortcut_present", "status", "failure_reason", "path")
NO_TEST_IMAGES = (
    "the cohort has no readable image in the '{split}' split; use more patients "
    "(--n-patients) so that every split is populated"
)
OUT_NOT_EMPTY = "the output folder exists and is not empty; choose a new folder with --out"
AUC_UNDEFINED = "undefined: the test split holds only one class ({n} image(s))"


def _data_file(name: str) -> Path:
    return Path(str(resources.files("medlens") / "data" / name))


def demo_model_path(*, shortcut: bool = True) -> Path:
    """Path of the packaged demo checkpoint (trained with or without the shortcut)."""
    return _data_file(MODEL_FILES[bool(shortcut)])


def demo_config(*, shortcut: bool = True, cohort: Any = None) -> MedlensConfig:
    """The packaged demo configuration (``medlens/data/demo.yaml``).

    Parameters
    ----------
    shortcut : bool
        Use the checkpoint trained on the cohort with the planted shortcut (True) or
        the one trained on the same cohort without it.
    cohort : SyntheticCohort, optional
        Points ``data.dicom_dir`` at the cohort's DICOM folder, ``data.labels`` at its
        ground truth and ``data.site_names`` at its readable site codes.
    """
    cfg = load_config(_data_file("demo.yaml"))
    model = cfg.model.model_copy(update={"path": demo_model_path(shortcut=shortcut)})
    update: dict[str, Any] = {"model": model}
    if cohort is not None:
        update["data"] = cfg.data.model_copy(
            update={
                "dicom_dir": Path(cohort.dicom_dir).resolve(),
                "labels": Path(cohort.ground_truth).resolve(),
                "site_names": {s.institution: s.code for s in cohort.sites},
            }
        )
    return cfg.model_copy(update=update)


@dataclass(frozen=True)
class DemoResult:
    """Where ``run_demo`` wrote everything, and its sanity figures."""

    out_dir: Path
    cohort_dir: Path
    manifest_csv: Path
    predictions_csv: Path
    skipped_csv: Path
    config_yaml: Path
    model_path: Path
    model_sha256: str
    n_images: int
    n_test: int
    n_failed: int
    n_skipped: int
    test_auc: float
    seconds: float
    report_pdf: Path | None = None
    case_report_pdf: Path | None = None
    audit_dir: Path | None = None
    verdict: str | None = None
    flagged: tuple[str, ...] = ()
    trusted: tuple[str, ...] = ()


def _flagged(audit: dict) -> tuple[str, ...]:
    """'method: column=value (regions), ...' for every method whose audit flagged a cohort."""
    from .commands.audit import flag_summary

    return tuple(
        f"{method}: {flag_summary(rec['shortcut']['flagged_cohorts'])}"
        for method, rec in sorted(audit["methods"].items())
        if rec["shortcut"]["flagged_cohorts"]
    )


def _trusted(audit: dict) -> tuple[str, ...]:
    """'method n_trusted/n_cases' for every audited method (maps passing their trust card)."""
    return tuple(
        f"{method} {rec['trust']['n_trusted']}/{rec['trust']['n_cases']}"
        for method, rec in sorted(audit["methods"].items())
    )


def _check_demo_args(n_patients: Any, seed: Any, image_size: Any) -> None:
    for name, value, low in (
        ("n_patients", n_patients, 1),
        ("seed", seed, 0),
        ("image_size", image_size, MIN_IMAGE_SIZE),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise param_error(name, "run_demo", f"an int >= {low}", value)


def run_demo(
    out_dir: str | Path,
    *,
    n_patients: int = DEMO_N_PATIENTS,
    shortcut: bool = True,
    seed: int = DEMO_SEED,
    image_size: int = DEMO_IMAGE_SIZE,
    progress: bool = True,
    report: bool = True,
    stream: IO[str] | None = None,
) -> DemoResult:
    """Build the synthetic cohort, predict its test split with the demo model, write CSVs.

    Writes into ``out_dir`` (new or empty): ``cohort/`` (DICOM files, masks, ground
    truth), ``manifest.csv`` (pseudonymous, every readable image), ``predictions.csv``
    (test split: :data:`PREDICTION_COLUMNS`), ``skipped.csv`` (unreadable files and
    why) and ``config.yaml`` (the effective configuration, absolute paths).

    Parameters
    ----------
    out_dir : path
        Output folder; must not exist or be empty.
    n_patients : int
        Patients in the cohort (about 1.7 images each).
    shortcut : bool
        Plant the site shortcut and use the model trained with it (True), or build the
        clean cohort and use the model trained without it.
    seed : int
        Cohort seed. The default is the seed the demo models were trained with; their
        test patients are held out whatever ``n_patients`` is.
    image_size : int
        Rows = columns of the generated images.
    progress : bool
        Show progress bars (stderr).
    report : bool
        Go on after ``predictions.csv``: explanation audit of the test split
        (``audit/``), validation against the packaged analysis plan, evidence bundle,
        regulatory report and clinician case reports (``run/``).
    stream : text stream, optional
        Where the summary is printed (default stdout).

    Returns
    -------
    DemoResult
    """
    from .model import load_model
    from .testing import make_synthetic_cohort

    _check_demo_args(n_patients, seed, image_size)
    out = sys.stdout if stream is None else stream
    start = time.perf_counter()
    root = Path(out_dir)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InputDataError(OUT_NOT_EMPTY, source=str(root))
    root.mkdir(parents=True, exist_ok=True)
    cohort = make_synthetic_cohort(
        root / "cohort", n_patients=n_patients, image_size=image_size, shortcut=shortcut, seed=seed
    )
    cfg = demo_config(shortcut=shortcut, cohort=cohort)
    cases = load_cases(cfg)
    skipped_rows = list(cases.skipped)
    test = select_split(cases.table, cfg, cfg.data.test_split)
    model = load_model(cfg.model, preprocess=cfg.preprocess)
    test, _ = predict_cases(test, cfg, model, progress=progress)
    failed = test[test["status"] != STATUS_OK]
    if len(failed) == len(test):
        raise InputDataError(NO_TEST_IMAGES.format(split=cfg.data.test_split), source=str(root))

    def relative(paths: pd.Series) -> list[str]:
        return [str(Path(p).relative_to(root.resolve())) for p in paths]

    test["path"] = relative(test["path"])
    manifest_out = cases.table.copy()
    for col in ("path", "lesion_mask", "anatomy_mask"):
        manifest_out[col] = relative(manifest_out[col])

    manifest_csv = root / "manifest.csv"
    predictions_csv = root / "predictions.csv"
    skipped_csv = root / "skipped.csv"
    config_yaml = root / "config.yaml"
    manifest_out.to_csv(manifest_csv, index=False)
    test[[c for c in PREDICTION_COLUMNS if c in test.columns]].to_csv(predictions_csv, index=False)
    pd.DataFrame(skipped_rows, columns=["path", "reason"]).to_csv(skipped_csv, index=False)
    effective = cfg.model_copy(update={"output_dir": root.resolve()}).model_dump(mode="json")
    config_yaml.write_text(
        "# effective configuration of this `medlens demo` run\n"
        + yaml.safe_dump(effective, sort_keys=False),
        encoding="utf-8",
    )

    scored = test[test["status"] == STATUS_OK]
    run = None
    if report:
        from ._run import run_pipeline
        from .commands.audit import audit_to_folder

        audit = audit_to_folder(
            cfg,
            root / "audit",
            methods=DEMO_AUDIT_METHODS,
            max_cases=None,
            seed=seed,
            stream=io.StringIO(),
        )
        run = run_pipeline(
            cfg.model_copy(update={"output_dir": root.resolve()}),  # as in config.yaml
            _data_file("demo_plan.yaml"),
            root / "run",
            gallery=2,
            audit=audit,
            title="medlens demo: synthetic chest radiographs",
            progress=progress,
            config_dir=root,
        )
    labels = scored["label"].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # the summary says why
        auc = roc_auc(labels, scored["score"].to_numpy(), curve=False).estimate
    seconds = time.perf_counter() - start
    result = DemoResult(
        out_dir=root,
        cohort_dir=cohort.root,
        manifest_csv=manifest_csv,
        predictions_csv=predictions_csv,
        skipped_csv=skipped_csv,
        config_yaml=config_yaml,
        model_path=Path(cfg.model.path),
        model_sha256=str(model.weights_sha256),
        n_images=len(cases.table),
        n_test=len(test),
        n_failed=len(failed),
        n_skipped=len(skipped_rows),
        test_auc=auc,
        seconds=seconds,
        report_pdf=None if run is None else run.report_pdf,
        case_report_pdf=None if run is None else run.case_report_pdf,
        audit_dir=None if run is None else root / "audit",
        verdict=None if run is None else run.verdict,
        flagged=() if run is None else _flagged(audit),
        trusted=() if run is None else _trusted(audit),
    )
    _print_summary(result, cohort, skipped_rows, failed, labels, out)
    return result


def _print_summary(
    result: DemoResult,
    cohort: Any,
    skipped: list,
    failed: pd.DataFrame,
    labels: np.ndarray,
    out: IO[str],
) -> None:
    shortcut = cohort.shortcut
    lines = [
        "medlens demo",
        f"  cohort       {result.cohort_dir}  ({cohort.n_patients} patients, "
        f"{cohort.n_images} DICOM images, seed {cohort.seed})",
        "  shortcut     "
        + (
            f"'{shortcut.text}' token burned in at {shortcut.site} "
            f"(ground truth column shortcut_present)"
            if shortcut
            else "none (clean cohort)"
        ),
        f"  manifest     {result.manifest_csv}  ({result.n_images} images, pseudonymous keys)",
        f"  predictions  {result.predictions_csv}  ({result.n_test} test images, "
        f"{result.n_failed} failed to read)",
        f"  model        {result.model_path}",
        f"  sha256       {result.model_sha256}",
        f"  config       {result.config_yaml}",
        f"  skipped      {result.skipped_csv}  ({result.n_skipped} file(s))",
    ]
    for path, reason in zip(failed["path"], failed["failure_reason"], strict=True):
        lines.append(f"    failed: {Path(path).name}: {reason}")
    for path, reason in skipped[:20]:
        lines.append(f"    - {Path(path).name}: {reason}")
    if len(skipped) > 20:
        lines.append(f"    ... {len(skipped) - 20} more in skipped.csv")
    if math.isnan(result.test_auc):
        lines.append("  test AUC     " + AUC_UNDEFINED.format(n=len(labels)))
    else:
        n_pos = int(np.sum(labels))
        lines.append(
            f"  test AUC     {result.test_auc:.3f}  (sanity check; {n_pos} positive / "
            f"{len(labels) - n_pos} negative)"
        )
    if result.report_pdf is not None:
        flags = "; ".join(result.flagged) or "none"
        lines += [
            f"  audit        {result.audit_dir}  (shortcut flags: {flags})",
            f"  trusted maps {', '.join(result.trusted)}  (maps passing their trust card)",
            f"  verdict      {result.verdict} (analysis plan: acceptance on the 95 % CI bound)",
            f"  case report  {result.case_report_pdf}",
            f"  report       {result.report_pdf}",
        ]
    lines.append(f"  time         {result.seconds:.1f} s")
    print("\n".join(lines), file=out)
