"""``medlens run``: ingest -> predict -> validate -> explain -> evidence bundle -> PDF reports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]

BAD_AUDIT = "not a JSON object; pass the explanation_audit.json written by `medlens audit`"


def register(sub: Any) -> None:
    from .._run import DEFAULT_GALLERY_METHODS

    p = sub.add_parser(
        "run",
        help="run the whole job on a config and an analysis plan; writes the evidence PDF",
        description="Predict the config's test split, validate it against the analysis plan, "
        "explain a small gallery of true positives, false positives and false negatives, "
        "write the evidence bundle (OUT/bundle), the regulatory report (OUT/report.pdf) and "
        "the clinician case reports (OUT/case_reports.pdf), then print the report's path.",
    )
    p.add_argument("--config", required=True, type=Path, help="medlens YAML config")
    p.add_argument("--plan", required=True, type=Path, help="analysis plan YAML")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--gallery",
        type=int,
        default=2,
        help="gallery cases per kind (TP, FP, FN); 0 = no explanations (default: 2)",
    )
    p.add_argument(
        "--methods",
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
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .._errors import EvidenceError
    from .._run import run_pipeline
    from ..config import load_config
    from ..reports import read_json

    cfg = load_config(args.config)
    audit = None
    if args.audit is not None:
        audit = read_json(args.audit)
        if not isinstance(audit, dict):
            raise EvidenceError(BAD_AUDIT, source=str(args.audit))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    result = run_pipeline(
        cfg,
        args.plan,
        args.out,
        gallery=args.gallery,
        methods=methods,
        audit=audit,
        progress=not args.no_progress,
        stream=sys.stderr,
    )
    print(f"medlens run: verdict {result.verdict}; bundle {result.bundle_dir}")
    if result.case_report_pdf is not None:
        print(f"case reports: {result.case_report_pdf}")
    print(result.report_pdf)
    return 0
