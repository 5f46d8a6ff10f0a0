"""``medlens run``: ingest -> predict -> validate -> explain -> evidence bundle -> PDF reports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .._cli_types import int_at_least, name_list

__all__ = ["register", "run"]

BAD_AUDIT = "not a JSON object; pass the explanation_audit.json written by `medlens audit`"


def _explainer_names() -> list[str]:
    from ..xai import list_explainers

    return list(list_explainers())


def register(sub: Any) -> None:
    from .._run import DEFAULT_GALLERY_METHODS

    p = sub.add_parser(
        "run",
        help="run the whole job on a config and an analysis plan; writes the evidence PDF",
        description="Predict the config's test split, validate it against the analysis plan, "
        "explain a small gallery of true positives, false positives and false negatives, "
        "write the evidence bundle (OUT/bundle), the regulatory report (OUT/report.pdf) and "
        "the clinician case reports (OUT/case_reports.pdf), then print the report's path. "
        "Every gallery map carries a trust card: the explanation audit's where the audit "
        "covers that case and method, else the same per-case check `medlens explain "
        "--trust` makes (same seed, same statement). "
        "Intermediate results are cached by content in OUT/.cache: a rerun with nothing "
        "changed skips prediction, validation, audit and explanations. After a successful "
        "run, older cache entries of the steps it ran (other inputs or settings) are "
        "removed and counted.",
    )
    p.add_argument("--config", required=True, type=Path, help="medlens YAML config")
    p.add_argument("--plan", required=True, type=Path, help="analysis plan YAML")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--gallery",
        type=int_at_least(0),
        default=2,
        help="gallery cases per kind (TP, FP, FN); 0 = no explanations (default: 2)",
    )
    p.add_argument(
        "--methods",
        type=name_list(_explainer_names),
        default=",".join(DEFAULT_GALLERY_METHODS),
        help="comma-separated explainers for the gallery "
        f"(default: {','.join(DEFAULT_GALLERY_METHODS)})",
    )
    p.add_argument(
        "--audit",
        type=Path,
        default=None,
        help="explanation_audit.json from `medlens audit` to include in the report",
    )
    p.add_argument(
        "--audit-methods",
        type=name_list(_explainer_names),
        default="",
        help="without --audit: run the explanation audit of the test split with these "
        "comma-separated explainers (files in OUT/audit; cached); default: no audit",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="recompute every step instead of reusing OUT/.cache (the cache is refreshed)",
    )
    p.add_argument(
        "--include-identifiers",
        action="store_true",
        help="show the patient ID and name from the DICOM headers next to the pseudonymous "
        "keys in the case reports, the report's gallery and the bundle; with --dicom-sc the "
        "DICOM objects copy the source's patient and study identity so that a PACS files "
        "them in the original study (default: pseudonymous keys only)",
    )
    p.add_argument(
        "--dicom-sc",
        action="store_true",
        help="also write each gallery overlay as a DICOM Secondary Capture into OUT/dicom: "
        "with --include-identifiers in the source study (new series), for viewing beside "
        "the scan in a PACS; otherwise de-identified, in a pseudonymous study per case",
    )
    p.add_argument(
        "--fail-on-verdict",
        action="store_true",
        help="exit with status 1 when the plan's acceptance verdict is 'fail' (the report is "
        "still written; default: exit 0 whatever the verdict, 2 on an input error)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .._errors import EvidenceError
    from .._run import run_pipeline
    from ..config import load_config
    from ..reports import read_json
    from ._plan_file import load_plan_for_cli
    from .validate import verdict_exit_code

    # cheap checks first: nothing is read or computed before the arguments are known good
    load_plan_for_cli(args.plan)
    cfg = load_config(args.config)
    audit = None
    if args.audit is not None:
        audit = read_json(args.audit)
        if not isinstance(audit, dict):
            raise EvidenceError(BAD_AUDIT, source=str(args.audit))
    methods = list(args.methods)
    audit_methods = list(args.audit_methods)
    result = run_pipeline(
        cfg,
        args.plan,
        args.out,
        gallery=args.gallery,
        methods=methods,
        audit=audit,
        audit_methods=audit_methods,
        progress=not args.no_progress,
        stream=sys.stderr,
        cache=not args.no_cache,
        include_identifiers=args.include_identifiers,
        dicom_sc=args.dicom_sc,
        config_dir=Path(args.config).resolve().parent,
    )
    print(f"medlens run: verdict {result.verdict}; bundle {result.bundle_dir}")
    if result.case_report_pdf is not None:
        print(f"case reports: {result.case_report_pdf}")
    if result.dicom_files:
        print(f"DICOM Secondary Capture: {len(result.dicom_files)} file(s) in {args.out / 'dicom'}")
    print(result.report_pdf)
    return verdict_exit_code(result.verdict, fail_on_verdict=args.fail_on_verdict)
