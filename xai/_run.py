"""Run several explainers over cases and write the evidence: PNG overlay, .npy map, JSON.

This is the engine of ``medlens explain``; the CLI only loads the model wrapper and the
cases and calls :func:`explain_cases`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from medlens._errors import InputDataError, param_error

from ._base import Explainer, ExplanationResult, check_images

__all__ = ["explain_cases", "result_to_json", "save_result"]

BAD_CASE_ID = (
    "case id {case!r} cannot be used in a file name; use letters, digits, '.', '_' or '-' "
    "(pseudonymised ids, never patient names)."
)
CASES_MISMATCH = "got {n_ids} case ids for {n_images} images; give one id per image."
_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, torch.Tensor):
        return f"tensor{tuple(v.shape)}"
    if v is None or isinstance(v, (bool, int, str)):
        return v
    return repr(v)


def result_to_json(result: ExplanationResult, index: int = 0, **extra: Any) -> dict[str, Any]:
    """The JSON sidecar of image ``index`` of a result: method, params, seed, targets,
    scores, cost and the display rule. Contains no patient identifiers."""
    from medlens.reports._overlay import DISPLAY_PERCENTILE, TOP_FRACTION

    diag = {}
    for k, v in result.diagnostics.items():
        if k == "segments":
            continue
        arr = np.asarray(v) if not isinstance(v, tuple) else None
        diag[k] = _jsonable(arr[index] if arr is not None and arr.ndim >= 1 else v)
    return {
        "method": result.method,
        "targets": [int(t) for t in result.targets[index]],
        "target_names": list(result.target_names[index]),
        "scores": _jsonable(result.scores[index]),
        "signed": result.signed,
        "params": _jsonable(dict(result.params)),
        "seed": result.params.get("seed"),
        "evaluations_batch": result.evaluations,
        "evaluations_per_image": result.evaluations / len(result.maps),
        "seconds_batch": round(result.seconds, 4),
        "diagnostics": diag,
        "display": {
            "rule": f"colour scale clipped at the {DISPLAY_PERCENTILE:g}th percentile of |map|; "
            + ("symmetric diverging scale" if result.signed else "sequential scale from 0")
            + f"; contour = top {TOP_FRACTION:.0%} of map values",
        },
        **_jsonable(extra),
    }


def save_result(
    result: ExplanationResult,
    out_dir: str | Path,
    *,
    stem: str,
    index: int = 0,
    scan: np.ndarray | None = None,
    window: tuple[float, float] | None = None,
) -> dict[str, Path]:
    """Write image ``index`` of a result: ``{stem}.npy``, ``{stem}.json``, ``{stem}.png``.

    The .npy holds the maps (T, *spatial) in the original grid when the result has
    ``maps_original``, else in model-input space (the JSON says which). The PNG overlays the
    first target's map on ``scan`` (default: the model input is not available here, so pass
    the scan in the map's grid); a volume shows the slice with the most positive evidence.
    """
    from medlens.reports._overlay import overlay_figure, pick_slice, save_png

    if not _SAFE.match(stem):
        raise InputDataError(BAD_CASE_ID.format(case=stem))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    original = result.maps_original is not None
    maps = result.maps_original[index] if original else result.maps[index]
    paths = {"npy": out / f"{stem}.npy", "json": out / f"{stem}.json"}
    np.save(paths["npy"], np.asarray(maps, dtype=np.float32))
    side = result_to_json(
        result,
        index,
        grid="original" if original else "model_input",
        map_file=paths["npy"].name,
        map_shape=list(maps.shape),
    )
    if scan is not None:
        amap = maps[0]
        s = np.asarray(scan)
        note = None
        if amap.ndim == 3:
            k = pick_slice(amap)
            amap = amap[k]
            s = s[..., k, :, :] if s.ndim == 4 else s[k]
            note = f"slice {k} of {maps.shape[1]}"
        fig = overlay_figure(
            s,
            amap,
            method=result.method,
            score=float(result.scores[index, 0]),
            signed=result.signed,
            target_name=result.target_names[index][0],
            window=window,
            note=note,
        )
        paths["png"] = save_png(fig, out / f"{stem}.png")
        side["png_file"] = paths["png"].name
    paths["json"].write_text(json.dumps(side, indent=2, sort_keys=True) + "\n")
    return paths


def explain_cases(
    explainers: Mapping[str, Explainer] | Sequence[Explainer],
    images: Any,
    *,
    case_ids: Sequence[str],
    out_dir: str | Path | None = None,
    target: Any = None,
    seed: int = 0,
    batch_size: int | None = None,
    inverse: Callable[[np.ndarray], np.ndarray] | Sequence[Callable] | None = None,
    scans: Sequence[np.ndarray] | None = None,
    window: tuple[float, float] | None = None,
    progress: bool = False,
) -> dict[str, dict[str, ExplanationResult]]:
    """Explain every case with every method; optionally write the files of each.

    Parameters
    ----------
    explainers : mapping name -> Explainer, or sequence of Explainer
    images : Tensor or ndarray of shape (N, C, H, W) or (N, C, D, H, W)
        Model inputs, one per case.
    case_ids : sequence of str
        Pseudonymised case ids, used as file names ``{case}_{method}.*``.
    out_dir : path, optional
        Where to write; nothing is written when None.
    target, seed, batch_size, inverse
        As in :meth:`Explainer.explain` (one case at a time, seed + 0 for each case so a
        case's maps do not depend on which other cases run with it).
    scans : sequence of ndarray, optional
        Display images in the grid of the maps written (original scans when ``inverse`` is
        given); default: the model inputs (channel mean) when no inverse is given.
    window : (centre, width), optional
        VOI window for display.
    progress : bool
        Show a tqdm progress bar over cases x methods.

    Returns
    -------
    dict case id -> {method -> ExplanationResult}
    """
    x = check_images(images, method="explain_cases")
    ids = list(case_ids)
    if len(ids) != x.shape[0]:
        raise InputDataError(CASES_MISMATCH.format(n_ids=len(ids), n_images=x.shape[0]))
    for c in ids:
        if not isinstance(c, str) or not _SAFE.match(c):
            raise InputDataError(BAD_CASE_ID.format(case=c))
    named = dict(explainers) if isinstance(explainers, Mapping) else {e.name: e for e in explainers}
    if not named:
        raise param_error("explainers", "explain_cases", "at least one explainer", explainers)
    invs = list(inverse) if isinstance(inverse, (list, tuple)) else [inverse] * len(ids)
    if scans is not None and len(scans) != len(ids):
        raise InputDataError(CASES_MISMATCH.format(n_ids=len(ids), n_images=len(scans)))
    results: dict[str, dict[str, ExplanationResult]] = {}
    bar = tqdm(total=len(ids) * len(named), disable=not progress, desc="explain", unit="map")
    try:
        for i, case in enumerate(ids):
            results[case] = {}
            for name, explainer in named.items():
                r = explainer.explain(
                    x[i : i + 1], target=target, seed=seed, batch_size=batch_size, inverse=invs[i]
                )
                results[case][name] = r
                if out_dir is not None:
                    if scans is not None:
                        scan = scans[i]
                    elif r.maps_original is None:
                        scan = x[i].numpy()
                    else:
                        scan = None
                    save_result(r, out_dir, stem=f"{case}_{name}", scan=scan, window=window)
                bar.update(1)
    finally:
        bar.close()
    return results
