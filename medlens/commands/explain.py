"""``medlens explain``: why was this scan flagged? Overlays, maps and sidecars per case."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]

DEFAULT_METHODS = "gradcam,integrated_gradients,lime,shap"
UNKNOWN_CASES = (
    "{n} case id(s) not found: {missing}; the config's cases include e.g. {examples} "
    "(see the case_id column of predictions.csv)"
)
UNREADABLE_CASE = "case {case} cannot be explained: its image could not be read ({reason})"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "explain",
        help="explain the model's output for given cases with several methods",
        description="For each case and method: a PNG overlay on the windowed scan, the map "
        "as .npy in the scan's own pixel grid, and a JSON sidecar with the method's exact "
        "settings, seed, target, score and cost in model evaluations.",
    )
    p.add_argument("--config", required=True, type=Path, help="medlens YAML config")
    p.add_argument(
        "--case",
        action="append",
        required=True,
        dest="cases",
        metavar="ID",
        help="pseudonymous case id (repeatable), as in predictions.csv",
    )
    p.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help=f"comma-separated explainer names (default: {DEFAULT_METHODS}); "
        "see medlens.xai.list_explainers()",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default: <output_dir>/explanations)"
    )
    p.add_argument("--seed", type=int, default=None, help="seed (default: the config's seed)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="most images or perturbations per forward pass"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .. import xai
    from .._errors import InputDataError
    from .._pipeline import STATUS_OK, load_cases, read_images
    from ..config import load_config
    from ..model import load_model

    cfg = load_config(args.config)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    model = load_model(cfg.model, preprocess=cfg.preprocess)
    explainers = {m: xai.get_explainer(m, model.module, head=cfg.model.head) for m in methods}

    table = load_cases(cfg).table.set_index("case_id", drop=False)
    wanted = list(dict.fromkeys(args.cases))
    missing = [c for c in wanted if c not in table.index]
    if missing:
        raise InputDataError(
            UNKNOWN_CASES.format(n=len(missing), missing=missing, examples=list(table.index[:3]))
        )
    rows = table.loc[wanted]
    failed = rows[rows["status"] != STATUS_OK]
    if not failed.empty:
        case = failed.index[0]
        raise InputDataError(
            UNREADABLE_CASE.format(case=case, reason=failed.at[case, "failure_reason"])
        )
    images, failures = read_images(list(rows["path"]), cfg)
    if failures:
        i, reason = next(iter(failures.items()))
        raise InputDataError(UNREADABLE_CASE.format(case=wanted[i], reason=reason))

    x, geometries = model.preprocess.batch(images)
    out = args.out or Path(cfg.output_dir) / "explanations"
    results = xai.explain_cases(
        explainers,
        x,
        case_ids=wanted,
        out_dir=out,
        seed=cfg.seed if args.seed is None else args.seed,
        batch_size=args.batch_size,
        inverse=[partial(model.preprocess.invert_map, geometry=g) for g in geometries],
        scans=[im.pixels for im in images],
        progress=not args.no_progress,
    )
    for case, by_method in results.items():
        for method, r in by_method.items():
            print(
                f"{case}  {method:<22} target={r.target_names[0][0]} "
                f"score={r.scores[0, 0]:.3f} evaluations={r.evaluations}  "
                f"{out / f'{case}_{method}.png'}"
            )
    return 0
