"""``medlens explain``: why was this scan flagged? Overlays, maps and sidecars per case.

Every overlay says whether its map may be read as evidence. With ``--trust`` each map gets
the audit's per-case trust card (:func:`medlens.xai._audit.result_trust_card`: one cascading
randomisation, the normalised LeRF - MoRF gap, a second seed for stochastic methods and the
share on the lesion / anatomy mask when the cases have masks); the PNG's trust line under
the title (``overlay_figure(trust=...)``) then says "trust: passed" (green) or "trust: FAILED
(<checks>)" (red), the footer repeats "not evidence", and the JSON sidecar carries the card,
the reasons of its failed checks and the criteria. Without ``--trust`` the trust line says
"trust: not checked". With two or more methods each case also gets ``<case>_panel.png``:
the methods side by side on the same scan (and slice), each with its own colour bar, and
with ``--trust`` each with its trust line. The cards are opt-in because they re-run the
method on a randomised model (as costly as the explanation itself: thousands of model
evaluations for LIME or SHAP), add 38 evaluations of deletion/insertion per map and, for
stochastic methods, a second run: about twice to three times the cost of ``explain``.
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path
from typing import Any

from medlens._cli_types import int_at_least

__all__ = ["register", "run", "trust_title"]

DEFAULT_METHODS = "gradcam,integrated_gradients,lime,shap"
UNKNOWN_CASES = (
    "{n} case id(s) not found: {missing}; the config's cases include e.g. {examples} "
    "(see the case_id column of predictions.csv)"
)
UNREADABLE_CASE = "case {case} cannot be explained: its image could not be read ({reason})"
TRUST_NOT_CHECKED = "trust not checked"
TRUST_NOT_CHECKED_NOTE = "not checked: run with --trust to check this map"


AUTO = "auto"


def _batch_size(text: str) -> int | str:
    """argparse type of ``--batch-size``: an integer >= 1 or ``auto``."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'auto', got {text!r}")
    return value


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
        "--out",
        type=Path,
        default=None,
        help="output folder (default: <output_dir>/explanations); per case and method a PNG "
        "overlay, the map (.npy, original grid) and a JSON sidecar, and per case with two or "
        "more methods <case>_panel.png",
    )
    p.add_argument(
        "--seed", type=int_at_least(0), default=None, help="seed (default: the config's seed)"
    )
    p.add_argument(
        "--batch-size",
        type=_batch_size,
        default=None,
        help="most images or perturbations per forward pass (default: the config's "
        "model.batch_size, bit-exact on rerun); 'auto' measures the fastest chunk and memory "
        "layout on this machine (faster for LIME/SHAP/occlusion/Score-CAM; the last float "
        "bit may then differ between processes; the choice is recorded in the sidecar)",
    )
    p.add_argument(
        "--trust",
        action="store_true",
        help="check each map with its per-case trust card (randomisation, faithfulness, "
        "stability, anatomy) and label the overlay passed/FAILED; about 2-3x the cost",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(run=run)


def trust_title(card: Any) -> str:
    """Trust line of an overlay: ``"trust: passed"``, ``"trust: FAILED (anatomy)"``,
    ``"trust: FAILED (shortcut region corner_top_left)"`` or ``"trust: not checked"``
    (``card`` None)."""
    import math

    from ..xai._trust import ANATOMY_ENRICHMENT_MIN, SHORTCUT_REGION_FACTOR

    if card is None:
        return "trust: not checked"
    if card.trusted:
        return "trust: passed"
    failed = [
        c for c in ("randomisation", "faithfulness", "stability") if getattr(card, c) == "fail"
    ]
    if card.anatomy == "fail":
        # the anatomy check fails for a low share on the lesion / anatomy, for a shortcut
        # region above its factor, or both: name what happened
        ratio = card.shortcut_region_ratio
        shortcut = math.isfinite(ratio) and ratio > SHORTCUT_REGION_FACTOR
        low = bool(card.anatomy_region) and not (
            card.inside_anatomy_share >= ANATOMY_ENRICHMENT_MIN * card.anatomy_fraction
        )
        if low or not shortcut:
            failed.append("anatomy")
        if shortcut:
            failed.append(f"shortcut region {card.shortcut_region}")
    return f"trust: FAILED ({', '.join(failed)})"


def _shown(result: Any, scan: Any, k: int | None = None) -> tuple[Any, Any, str | None, Any]:
    """The first target's map and the scan as drawn (original grid; a volume at slice ``k``,
    by default the slice with the most attribution), the slice note and the slice."""
    import numpy as np

    from ..reports._overlay import pick_slice

    maps = result.maps_original[0] if result.maps_original is not None else result.maps[0]
    amap, s, note = np.asarray(maps[0]), np.asarray(scan), None
    if amap.ndim == 3:
        k = pick_slice(amap) if k is None else k
        amap = amap[k]
        s = s[..., k, :, :] if s.ndim == 4 else s[k]
        note = f"slice {k} of {maps.shape[1]}"
    return amap, s, note, k


def _write_panel(results: dict[str, Any], cards: dict[str, Any], scan: Any, path: Path) -> Path:
    """Every method's map of one case side by side (one colour bar each), on one slice."""
    from ..reports._overlay import method_panel, save_png

    k, maps, s, note, target = None, {}, None, None, None
    for method, r in results.items():
        amap, s, note, k = _shown(r, scan, k)
        maps[method] = (amap, r.signed, float(r.scores[0, 0]))
        target = r.target_names[0][0]
    trust = {m: (trust_title(c), bool(c.trusted)) for m, c in cards.items()}
    fig = method_panel(s, maps, target_name=target, note=note, trust=trust)
    return save_png(fig, path)


def _write(result: Any, out: Path, stem: str, scan: Any, card: Any, evaluations: dict) -> None:
    """npy + JSON sidecar (:func:`medlens.xai.save_result`) and the trust-labelled PNG."""

    from ..reports._case_report import failed_trust_reasons
    from ..reports._overlay import overlay_figure, save_png
    from ..xai._run import _jsonable, save_result
    from ..xai._trust import TRUST_CRITERIA, trust_label

    paths = save_result(result, out, stem=stem)
    side = json.loads(paths["json"].read_text())
    amap, s, note, _ = _shown(result, scan)
    if card is None:
        trust_note = TRUST_NOT_CHECKED_NOTE
    elif card.trusted:
        trust_note = "map passed its trust checks"
    else:
        trust_note = "not evidence: " + trust_title(card).split("FAILED ", 1)[1]
    fig = overlay_figure(
        s,
        amap,
        method=result.method,
        score=float(result.scores[0, 0]),
        signed=result.signed,
        target_name=result.target_names[0][0],
        note=trust_note if note is None else f"{note}; {trust_note}",
        trust=trust_title(card),
        trusted=None if card is None else bool(card.trusted),
    )
    png = save_png(fig, out / f"{stem}.png")
    side["png_file"] = png.name
    side["trust"] = _jsonable(
        {
            "checked": card is not None,
            "trusted": None if card is None else bool(card.trusted),
            "label": TRUST_NOT_CHECKED if card is None else trust_label(card),
            "title": trust_title(card),
            "card": None if card is None else card.to_dict(),
            "failed_reasons": [] if card is None else list(failed_trust_reasons(card)),
            "criteria": None if card is None else TRUST_CRITERIA,
            "evaluations": evaluations,
        }
    )
    paths["json"].write_text(json.dumps(side, indent=2, sort_keys=True) + "\n")


def run(args: argparse.Namespace) -> int:

    from .. import xai
    from .._errors import InputDataError
    from .._pipeline import STATUS_OK, case_masks, load_cases, read_images
    from ..config import load_config
    from ..model import load_model
    from ..xai._audit import result_trust_card

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
    seed = cfg.seed if args.seed is None else args.seed
    batch_size = {None: cfg.model.batch_size, AUTO: None}.get(args.batch_size, args.batch_size)
    results = xai.explain_cases(
        explainers,
        x,
        case_ids=wanted,
        seed=seed,
        batch_size=batch_size,
        inverse=[partial(model.preprocess.invert_map, geometry=g) for g in geometries],
        progress=not args.no_progress,
    )
    anatomy = case_masks(rows, "anatomy_mask", geometries) if args.trust else None
    lesion = case_masks(rows, "lesion_mask", geometries) if args.trust else None
    for i, case in enumerate(wanted):
        cards = {}
        for method, r in results[case].items():
            card, ev = None, {}
            if args.trust:
                card, ev = result_trust_card(
                    model.module,
                    x[i : i + 1],
                    r,
                    case_id=case,
                    head=cfg.model.head,
                    seed=seed,
                    batch_size=batch_size,
                    anatomy_mask=None if anatomy is None else anatomy[i],
                    lesion_mask=None if lesion is None else lesion[i],
                )
                cards[method] = card
            _write(r, out, f"{case}_{method}", images[i].pixels, card, ev)
            extra = f"  trust_evaluations={sum(ev.values())}" if ev else ""
            print(
                f"{case}  {method:<22} target={r.target_names[0][0]} "
                f"score={r.scores[0, 0]:.3f} evaluations={r.evaluations}{extra}  "
                f"[{trust_title(card)}]  {out / f'{case}_{method}.png'}"
            )
        if len(results[case]) > 1:
            panel = _write_panel(results[case], cards, images[i].pixels, out / f"{case}_panel.png")
            print(f"{case}  {'panel':<22} {len(results[case])} methods  {panel}")
    return 0
