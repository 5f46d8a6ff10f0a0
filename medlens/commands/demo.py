"""``medlens demo``: build the synthetic cohort, predict its test split, say where it all is."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._cli_types import int_at_least

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    from .._demo import DEMO_IMAGE_SIZE, DEMO_N_PATIENTS, DEMO_SEED, MIN_IMAGE_SIZE

    p = sub.add_parser(
        "demo",
        help="run medlens end to end on a synthetic DICOM cohort with a packaged model",
        description="Write a synthetic chest-radiograph cohort as DICOM files (four sites, "
        "one storing MONOCHROME1, a burned-in shortcut at one site), scan it into a "
        "pseudonymous manifest, predict the test split with the packaged demo model, write "
        "predictions.csv, audit the explanations (shortcut per cohort), validate against "
        "the packaged analysis plan and write the regulatory and clinician PDF reports. "
        "No patient identifier is written or printed.",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("medlens-demo"),
        help="output folder, new or empty (default: ./medlens-demo)",
    )
    p.add_argument(
        "--n-patients",
        type=int_at_least(1),
        default=DEMO_N_PATIENTS,
        help=f"patients in the cohort, 1-3 images each (default: {DEMO_N_PATIENTS})",
    )
    p.add_argument(
        "--no-shortcut",
        action="store_true",
        help="build the cohort without the planted shortcut and use the model trained without it",
    )
    p.add_argument(
        "--seed",
        type=int_at_least(0),
        default=DEMO_SEED,
        help=f"cohort seed (default: {DEMO_SEED}, the seed the demo models were trained with; "
        "their test patients are held out)",
    )
    p.add_argument(
        "--image-size",
        type=int_at_least(MIN_IMAGE_SIZE),
        default=DEMO_IMAGE_SIZE,
        help=f"rows = columns of the generated images, at least {MIN_IMAGE_SIZE} "
        f"(default: {DEMO_IMAGE_SIZE})",
    )
    p.add_argument(
        "--no-report",
        action="store_true",
        help="stop after predictions.csv (no audit, validation or PDF reports)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .._demo import run_demo

    run_demo(
        args.out,
        n_patients=args.n_patients,
        shortcut=not args.no_shortcut,
        seed=args.seed,
        image_size=args.image_size,
        progress=not args.no_progress,
        report=not args.no_report,
    )
    return 0
