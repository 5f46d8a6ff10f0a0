"""``medlens report``: re-render the regulatory PDF from an evidence bundle (no recomputation)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="render the regulatory evidence PDF from an evidence bundle folder",
        description="Read the evidence bundle (bundle.json and its parts, SHA-256 checked) "
        "and write the regulatory report. Nothing is recomputed; the same bundle gives a "
        "byte-identical PDF.",
    )
    p.add_argument(
        "--evidence", required=True, type=Path, help="evidence bundle folder (OUT/bundle)"
    )
    p.add_argument("--out", required=True, type=Path, help="PDF to write")
    p.add_argument(
        "--include-identifiers",
        action="store_true",
        help="show the patient identifiers held by a bundle from "
        "`medlens run --include-identifiers` (default: pseudonymous case ids only)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..reports._regulatory import write_regulatory_report

    path = write_regulatory_report(
        args.evidence, args.out, include_identifiers=args.include_identifiers
    )
    print(path)
    return 0
