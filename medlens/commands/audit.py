"""``medlens audit``: explanation-quality audit of the test split (sanity, faithfulness,
localisation, robustness, shortcut per cohort, trust cards); writes
``DIR/explanation_audit.json``, CSV tables and PNG figures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medlens._cli_types import int_at_least

HELP = "audit explanation quality on the test split and look for shortcuts per cohort"
NO_OK_CASES = "no readable case in the test split; nothing to audit"
REGION_SYNTAX = (
    "--region {value!r}: expected NAME=x0,y0,x1,y1 with integer pixel coordinates of the "
    "original image (x = column, y = row, 0-based, x1 and y1 exclusive), e.g. "
    "text=0,0,120,40"
)
REGION_NAME = (
    "--region {name!r}: a region name must be letters, digits, '_' or '-' and not one of "
    "the built-in regions {reserved}"
)
REGION_EMPTY = "--region {name}={box}: the box is empty; need 0 <= x0 < x1 and 0 <= y0 < y1"
REGION_NEGATIVE = (
    "--region {name}={box}: {coord}={value} is negative; coordinates are 0-based pixel "
    "indices of the original image and must be >= 0"
)
#: How the user regions' boxes are given (quoted in the audit JSON)
REGION_GRID = (
    "original image pixels: x = column, y = row, 0-based; x0, y0 inclusive, x1, y1 exclusive"
)
#: Which cases each check of the audit JSON ran on (its record carries ``n_cases``)
CHECK_CASES = {
    "sanity": "the first cases of the audited sample (sanity_cases)",
    "faithfulness": "every audited case",
    "road": "every audited case",
    "localisation": "audited positive cases with a non-empty lesion mask",
    "max_sensitivity": "the first cases of the audited sample (sensitivity_cases)",
    "shortcut": "every audited case with attribution mass (n_undefined left out)",
    "trust": "every audited case",
    "agreement": "every audited case",
}
REGION_DUPLICATE = "--region {name!r} is given twice; give each region once"
REGION_OUTSIDE = (
    "--region {name}={box} reaches beyond case {case}, whose image is {width} x {height} "
    "pixels (width x height); keep x1 <= {width} and y1 <= {height}"
)
RESERVED_REGIONS = (
    "border",
    "corner_bottom_left",
    "corner_bottom_right",
    "corner_top_left",
    "corner_top_right",
    "outside_anatomy",
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help=HELP, description=HELP + ".")
    p.add_argument("--config", required=True, help="medlens config YAML")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--methods",
        default="gradcam,integrated_gradients,saliency",
        help="comma-separated explanation methods (default: gradcam,integrated_gradients,saliency)",
    )
    p.add_argument(
        "--max-cases", type=int_at_least(1), default=200, help="cases sampled (default 200)"
    )
    p.add_argument(
        "--seed", type=int_at_least(0), default=0, help="sampling and randomisation seed"
    )
    p.add_argument(
        "--region",
        action="append",
        default=[],
        metavar="NAME=x0,y0,x1,y1",
        help="a named box where a shortcut could live (burned-in text, a ruler), in pixel "
        "coordinates of the original image (x = column, y = row, x1/y1 exclusive); audited "
        "like the border and corners (repeatable)",
    )
    p.add_argument(
        "--road",
        action="store_true",
        help="also run ROAD (remove and debias, noisy linear imputation; slower)",
    )
    p.set_defaults(run=run)


def parse_regions(values) -> dict[str, tuple[int, int, int, int]]:
    """``["text=0,0,120,40", ...]`` -> ``{"text": (0, 0, 120, 40)}``, validated.

    Raises
    ------
    ConfigError
        Bad syntax, name, empty box or a duplicate name.
    """
    import re

    from medlens._errors import ConfigError

    out: dict[str, tuple[int, int, int, int]] = {}
    for value in values or ():
        name, sep, box = str(value).partition("=")
        name = name.strip()
        parts = box.split(",")
        if not sep or not name or len(parts) != 4:
            raise ConfigError(REGION_SYNTAX.format(value=value))
        try:
            x0, y0, x1, y1 = (int(p.strip()) for p in parts)
        except ValueError:
            raise ConfigError(REGION_SYNTAX.format(value=value)) from None
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or name in RESERVED_REGIONS:
            raise ConfigError(REGION_NAME.format(name=name, reserved=", ".join(RESERVED_REGIONS)))
        if name in out:
            raise ConfigError(REGION_DUPLICATE.format(name=name))
        for coord, v in (("x0", x0), ("y0", y0), ("x1", x1), ("y1", y1)):
            if v < 0:
                raise ConfigError(
                    REGION_NEGATIVE.format(name=name, box=box.strip(), coord=coord, value=v)
                )
        if not (0 <= x0 < x1 and 0 <= y0 < y1):
            raise ConfigError(REGION_EMPTY.format(name=name, box=box.strip()))
        out[name] = (x0, y0, x1, y1)
    return out


def _region_masks(regions, geometries, case_ids):
    """Per-case model-input masks of each original-grid pixel box."""
    import numpy as np

    from medlens._errors import InputDataError
    from medlens.xai._audit import mask_to_input

    out = {}
    for name, (x0, y0, x1, y1) in regions.items():
        masks = []
        for g, case in zip(geometries, case_ids, strict=True):
            shape = tuple(g.original_shape)
            height, width = shape[-2:]
            if x1 > width or y1 > height:
                raise InputDataError(
                    REGION_OUTSIDE.format(
                        name=name,
                        box=f"{x0},{y0},{x1},{y1}",
                        case=case,
                        width=width,
                        height=height,
                    )
                )
            m = np.zeros(shape, dtype=bool)
            m[..., y0:y1, x0:x1] = True
            masks.append(mask_to_input(m, g))
        out[name] = np.stack(masks)
    return out


def _road_json(road) -> dict | None:
    if road is None:
        return None
    return {
        "percentages": [float(p) for p in road.percentages],
        "morf_mean": road.morf.mean(axis=0).tolist(),
        "lerf_mean": road.lerf.mean(axis=0).tolist(),
        "lerf_minus_morf_mean": float(road.lerf_minus_morf.mean()),
        "n_cases": int(road.morf.shape[0]),
        "cases": CHECK_CASES["road"],
        "params": dict(road.params),
    }


def _checks(a, n_audited: int, has_agreement: bool) -> dict:
    """Uniform index: ``{check: {"n_cases", "cases", "computed"}}`` of one method."""
    import numpy as np

    n_defined = int(np.isfinite(a.shares.share(a.shares.primary)).sum())
    counts = {
        "sanity": int(a.sanity.spearman.shape[1]),
        "faithfulness": int(len(a.faithfulness.deletion_auc)),
        "road": None if a.road is None else int(a.road.morf.shape[0]),
        "localisation": int(len(a.localisation_cases)),
        "max_sensitivity": int(len(a.sensitivity.values)),
        "shortcut": n_defined,
        "trust": int(len(a.trust)),
        "agreement": n_audited if has_agreement else None,
    }
    return {
        k: {"n_cases": n or 0, "cases": CHECK_CASES[k], "computed": bool(n)}
        for k, n in counts.items()
    }


def _json(audit, boxes: dict[str, tuple[int, int, int, int]] | None = None) -> dict:
    """The ``explanation_audit.json`` record; every check's record carries ``n_cases``."""
    from medlens.xai._trust import TRUST_CRITERIA, trust_label

    out: dict = {
        "params": audit.params,
        "n_cases": len(audit.cases),
        "trust_criteria": TRUST_CRITERIA,
        "user_regions": {
            name: {"box": list(box), "grid": REGION_GRID}
            for name, box in sorted((boxes or {}).items())
        },
        "methods": {},
    }
    for m, a in audit.audits.items():
        checks = _checks(a, len(audit.cases), audit.agreement is not None)
        out["methods"][m] = {
            "evaluations": a.evaluations,
            "checks": checks,
            "sanity": {
                "passed": a.sanity.passed,
                "verdict": a.sanity.verdict,
                "layers": list(a.sanity.layers),
                "median_spearman": a.sanity.median_spearman.tolist(),
                "threshold": a.sanity.threshold,
                "n_cases": checks["sanity"]["n_cases"],
                "cases": CHECK_CASES["sanity"],
            },
            "faithfulness": {
                **{
                    k: float(getattr(a.faithfulness, k).mean())
                    for k in (
                        "deletion_auc",
                        "insertion_auc",
                        "deletion_auc_random",
                        "insertion_auc_random",
                    )
                },
                "n_cases": checks["faithfulness"]["n_cases"],
                "cases": CHECK_CASES["faithfulness"],
            },
            "road": _road_json(a.road),
            "localisation": None
            if a.localisation is None
            else {
                **{
                    k: float(v)
                    for k, v in a.localisation.to_frame().drop(columns="case").mean().items()
                },
                "n_cases": checks["localisation"]["n_cases"],
                "cases": CHECK_CASES["localisation"],
            },
            "max_sensitivity": {
                "mean": float(a.sensitivity.values.mean()),
                "n_cases": checks["max_sensitivity"]["n_cases"],
                "cases": CHECK_CASES["max_sensitivity"],
                "radius": a.sensitivity.radius,
            },
            "shortcut": {
                "n_cases": checks["shortcut"]["n_cases"],
                "n_undefined": int(len(a.trust)) - checks["shortcut"]["n_cases"],
                "cases": CHECK_CASES["shortcut"],
                "note": a.shares.note,
                "flagged_cohorts": [
                    {"cohort": c, "value": v, "region": r, "rule": rule}
                    for c, v, r, rule in a.flagged_cohorts
                ],
                "examples": a.examples.to_dict(orient="records"),
            },
            "trust": {
                "n_trusted": sum(c.trusted for c in a.trust),
                "n_cases": checks["trust"]["n_cases"],
                "cases": CHECK_CASES["trust"],
                "criteria": TRUST_CRITERIA,
                "cards": [{**c.to_dict(), "label": trust_label(c)} for c in a.trust],
            },
        }
    if audit.agreement is not None:
        out["agreement"] = audit.agreement.to_frame().to_dict(orient="records")
    return out


def flag_summary(flagged_cohorts) -> str:
    """``"site=site_b (corner_top_left, port), manufacturer=X (corner_top_left)"`` or "none".

    ``flagged_cohorts`` holds ``(column, value, region, rule)`` tuples (or JSON records with
    those keys); each flagged cohort is listed once with the regions that flagged it.
    """
    regions: dict[tuple[str, str], list[str]] = {}
    for f in flagged_cohorts:
        c, v, r = (f["cohort"], f["value"], f["region"]) if isinstance(f, dict) else f[:3]
        names = regions.setdefault((str(c), str(v)), [])
        if str(r) not in names:
            names.append(str(r))
    return ", ".join(f"{c}={v} ({', '.join(rs)})" for (c, v), rs in regions.items()) or "none"


def road_summary(road) -> str:
    """One line: mean LeRF - MoRF over the cases and what it means."""
    return (
        f"ROAD LeRF - MoRF {float(road.lerf_minus_morf.mean()):.3f} (mean over "
        f"{int(road.morf.shape[0])} cases and {len(road.percentages)} removal fractions "
        f"{float(road.percentages[0]):g}-{float(road.percentages[-1]):g}; higher = more "
        "faithful, 0 = no better than removing the least relevant pixels first)"
    )


def _road_frame(road, case_ids):
    """ROAD per (case, removal fraction): case id, target, fraction, original, MoRF, LeRF."""
    f = road.to_frame()
    idx = f["case"].to_numpy()
    f["case"] = [str(case_ids[i]) for i in idx]
    f.insert(3, "original", road.original[idx])
    f["lerf_minus_morf"] = f["lerf"] - f["morf"]
    return f


def run(args: argparse.Namespace) -> int:
    from medlens.config import load_config

    audit_to_folder(
        load_config(args.config),
        Path(args.out),
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        max_cases=args.max_cases,
        seed=args.seed,
        regions=parse_regions(args.region),
        with_road=args.road,
        stream=sys.stdout,
    )
    return 0


def audit_to_folder(
    cfg,
    out: Path,
    *,
    methods: tuple[str, ...] = ("gradcam", "integrated_gradients", "saliency"),
    max_cases: int | None = 200,
    seed: int = 0,
    regions: dict[str, tuple[int, int, int, int]] | None = None,
    with_road: bool = False,
    stream=None,
) -> dict:
    """Audit the test split of ``cfg``; write JSON, CSV and PNG files into ``out``.

    ``regions`` maps a name to a pixel box ``(x0, y0, x1, y1)`` of the original images
    (see :func:`parse_regions`); ``with_road`` adds ROAD. Returns the
    ``explanation_audit.json`` record (what ``medlens run`` puts in the bundle).
    """

    from medlens._pipeline import STATUS_OK, case_masks, load_cases, predict_cases, select_split
    from medlens.model import load_model
    from medlens.reports._atomic import atomic_write_bytes
    from medlens.reports._audit_figures import (
        cohort_share_figure,
        deletion_insertion_figure,
        sanity_figure,
    )
    from medlens.reports._bundle import write_json
    from medlens.xai._audit import run_audit

    out.mkdir(parents=True, exist_ok=True)
    table = select_split(load_cases(cfg).table, cfg, cfg.data.test_split)
    model = load_model(cfg.model, preprocess=cfg.preprocess)
    scored, images = predict_cases(table, cfg, model)
    ok = [i for i in range(len(scored)) if scored.at[i, "status"] == STATUS_OK]
    if not ok:
        from medlens._errors import InputDataError

        raise InputDataError(NO_OK_CASES)
    scored = scored.iloc[ok].reset_index(drop=True)
    x, geoms = model.preprocess.batch([images[i] for i in ok])

    scored.index = scored["case_id"].astype(str)
    cols = [c for c in cfg.data.cohort_columns if c in scored.columns]
    audit = run_audit(
        model,
        x,
        scored,
        methods=methods,
        anatomy_masks=case_masks(scored, "anatomy_mask", geoms),
        lesion_masks=case_masks(scored, "lesion_mask", geoms),
        cohort_columns=cols,
        max_cases=max_cases,
        seed=seed,
        batch_size=cfg.model.batch_size,
        with_road=with_road,
        regions=_region_masks(regions or {}, geoms, list(scored.index)) or None,
        stream=stream,
    )
    record = _json(audit, regions)
    write_json(out / "explanation_audit.json", record)
    for m, a in audit.audits.items():
        shares = a.shares.to_frame()
        shares["case"] = list(audit.cases.index)
        shares.to_csv(out / f"shares_{m}.csv", index=False)
        import pandas as pd

        pd.concat([s.table.assign(region=r) for r, s in a.shortcut.items()]).to_csv(
            out / f"shortcut_cohorts_{m}.csv", index=False
        )
        a.case_rates.to_csv(out / f"shortcut_case_rates_{m}.csv", index=False)
        a.examples.to_csv(out / f"shortcut_examples_{m}.csv", index=False)
        a.sanity.to_frame().to_csv(out / f"sanity_{m}.csv", index=False)
        f = a.faithfulness.to_frame()
        f["case"] = list(audit.cases.index)
        f.to_csv(out / f"faithfulness_{m}.csv", index=False)
        if a.road is not None:
            _road_frame(a.road, list(audit.cases.index)).to_csv(out / f"road_{m}.csv", index=False)
        pd.DataFrame([c.to_dict() for c in a.trust]).to_csv(out / f"trust_{m}.csv", index=False)
        # show the region behind the first flag, else the primary region
        region = a.flagged_cohorts[0][2] if a.flagged_cohorts else a.shares.primary
        atomic_write_bytes(out / f"cohort_share_{m}.png", cohort_share_figure(audit, m, region))
    atomic_write_bytes(out / "deletion_insertion.png", deletion_insertion_figure(audit))
    atomic_write_bytes(out / "sanity.png", sanity_figure(audit))
    print(f"audited {len(audit.cases)} cases with {', '.join(audit.methods)}", file=stream)
    for m, a in audit.audits.items():
        n_sanity = int(a.sanity.spearman.shape[1])
        print(
            f"{m}: sanity {'passes' if a.sanity.passed else 'FAILS'} ({n_sanity} cases); "
            f"trusted maps {sum(c.trusted for c in a.trust)}/{len(a.trust)}; "
            f"flagged cohorts: {flag_summary(a.flagged_cohorts)}; "
            f"model evaluations: {a.evaluations['total']}",
            file=stream,
        )
        if a.road is not None:
            print(f"{m}: {road_summary(a.road)}", file=stream)
    print(f"wrote {out / 'explanation_audit.json'}", file=stream)
    return record
