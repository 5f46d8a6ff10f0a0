"""``medlens predict``: score the cases of a config with its model, write predictions.csv."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]

# Columns written first, in this order, when present; other case columns follow.
LEADING = ("case_id", "patient_key", "study_key", "split", "label", "score")
TRAILING = ("status", "failure_reason")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="score the cases of a config with its model and write predictions.csv",
        description="Read the cases a config describes (manifest CSV, or DICOM folder plus "
        "labels), preprocess them as the model expects, predict, and write a predictions "
        "table that `medlens validate` reads. Unreadable cases stay in the table with "
        "status 'failed' and the reason; file paths are left out unless asked for, since "
        "file names can carry identifiers.",
    )
    p.add_argument("--config", required=True, type=Path, help="medlens YAML config")
    p.add_argument(
        "--split",
        default=None,
        help="predict only this split (a value of data.split_column); default: every case",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output CSV (default: <output_dir>/predictions.csv from the config)",
    )
    p.add_argument(
        "--include-paths",
        action="store_true",
        help="add the image path column (file names may contain patient identifiers)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from .._pipeline import STATUS_OK, load_cases, predict_cases, select_split
    from ..config import load_config
    from ..model import load_model
    from ..reports._atomic import atomic_write_text

    cfg = load_config(args.config)
    cases = load_cases(cfg)
    table = select_split(cases.table, cfg, args.split)
    model = load_model(cfg.model, preprocess=cfg.preprocess)
    scored, _ = predict_cases(table, cfg, model, progress=not args.no_progress)

    def is_path(col: str) -> bool:
        return col == "path" or col.endswith("_mask")

    body = [
        c
        for c in scored.columns
        if c not in (*LEADING, *TRAILING) and (args.include_paths or not is_path(c))
    ]
    score_cols = [c for c in scored.columns if c.startswith("prob_")]
    order = [c for c in LEADING if c in scored.columns] + score_cols
    order += [c for c in body if c not in score_cols] + [c for c in TRAILING if c in scored.columns]
    out = args.out or Path(cfg.output_dir) / "predictions.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, scored[order].to_csv(index=False))
    skipped_csv = out.with_name(out.stem + "_skipped.csv")
    atomic_write_text(
        skipped_csv,
        pd.DataFrame(list(cases.skipped), columns=["path", "reason"]).to_csv(index=False),
    )

    n_failed = int((scored["status"] != STATUS_OK).sum())
    print(f"predictions  {out}  ({len(scored)} cases, {n_failed} failed to read)")
    print(f"skipped      {skipped_csv}  ({len(cases.skipped)} file(s) that are not usable images)")
    print(f"model        {cfg.model.path}  sha256 {model.weights_sha256}")
    return 0
