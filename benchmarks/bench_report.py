"""Regulatory report rendering at scale: a 10,000-case evidence bundle with a 24-case gallery.

Goal (issue #6): the PDF renders in at most 20 s on this machine. The evidence comes from
the real validation engine on a synthetic 10,000-row predictions table (the validation time
is printed separately: it is not part of the rendering goal); the gallery holds 24 cases x
3 overlays rendered by the case-report overlay code. Prints the rendering time, its ratio
to the 20 s goal, the page count and the file size.

    python benchmarks/bench_report.py [--cases 10000] [--gallery 24] [--replicates 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from medlens.reports import (
    provenance,
    render_heatmap_overlay,
    sha256_file,
    write_bundle,
    write_regulatory_report,
)
from medlens.validation import evaluate, load_plan, to_evidence

GOAL_SECONDS = 20.0
METHODS = ("gradcam", "saliency", "integrated_gradients")


def predictions(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    patients = rng.integers(0, n // 2, n)
    label = (rng.random(n) < 0.3).astype(int)
    score = 1 / (1 + np.exp(-(rng.normal(0, 1.2, n) + 2.2 * (label - 0.5) * 2)))
    return pd.DataFrame(
        {
            "case_id": [f"case-{i:06d}" for i in range(n)],
            "patient_key": [f"p-{p:08d}" for p in patients],
            "split": "test",
            "label": label,
            "score": score,
            "site": rng.choice(["site_a", "site_b", "site_c", "site_d"], n),
            "manufacturer": rng.choice(["A", "B", "C"], n),
            "sex": rng.choice(["F", "M"], n),
            "age_band": rng.choice(["0-39", "40-59", "60-79", "80+"], n),
            "status": np.where(rng.random(n) < 0.01, "failed", "ok"),
        }
    )


def gallery(folder: Path, table: pd.DataFrame, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    (folder / "gallery").mkdir(parents=True)
    yy, xx = np.mgrid[:224, :224]
    entries = []
    for k, i in enumerate(rng.choice(len(table), n, replace=False)):
        scan = np.clip(
            0.5 + 0.2 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + rng.normal(0, 0.05, (224, 224)), 0, 1
        )
        overlays = []
        for m in METHODS:
            cy, cx = rng.integers(40, 184, 2)
            heat = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 800.0)
            path = folder / "gallery" / f"{table.case_id[i]}_{m}.png"
            path.write_bytes(render_heatmap_overlay(scan, heat, method=m))
            overlays.append(
                {
                    "method": m,
                    "file": f"gallery/{path.name}",
                    "sha256": sha256_file(path),
                    "signed": False,
                    "evaluations": 1,
                    "trusted": None,
                    "trust_label": "trust not checked",
                }
            )
        entries.append(
            {
                "case_id": table.case_id[i],
                "kind": ("true positive", "false positive", "false negative")[k % 3],
                "label": int(table.label[i]),
                "score": float(table.score[i]),
                "agreement": 0.5,
                "overlays": overlays,
            }
        )
    return entries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--gallery", type=int, default=24)
    ap.add_argument(
        "--replicates", type=int, default=200, help="bootstrap replicates (validation only)"
    )
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_report_"))
    table = predictions(args.cases, seed=0)
    pred_csv = root / "predictions.csv"
    table.to_csv(pred_csv, index=False)
    plan_src = Path(__file__).resolve().parents[1] / "medlens" / "data" / "demo_plan.yaml"
    plan_raw = yaml.safe_load(plan_src.read_text())
    plan_raw["analysis"]["bootstrap"]["replicates"] = args.replicates
    plan_path = root / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(plan_raw))

    t0 = time.perf_counter()
    plan, digest = load_plan(plan_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evidence = to_evidence(evaluate(pred_csv, plan, plan_sha256=digest))
    t_validate = time.perf_counter() - t0

    bundle_dir = root / "bundle"
    ok = table[table.status == "ok"].reset_index(drop=True)
    cases = {
        "threshold": 0.5,
        "methods": list(METHODS),
        "scores": {
            "case_id": list(ok.case_id),
            "label": [int(v) for v in ok.label],
            "score": [float(v) for v in ok.score],
        },
        "gallery": gallery(bundle_dir, ok, args.gallery, seed=1),
        "failed_reasons": {"unreadable": int((table.status != "ok").sum())},
    }
    write_bundle(
        bundle_dir,
        provenance=provenance(seeds={"bench": 0}),
        validation=evidence,
        audit=None,
        cases=cases,
        title="bench_report",
    )

    t0 = time.perf_counter()
    out = write_regulatory_report(bundle_dir, root / "report.pdf")
    t_render = time.perf_counter() - t0
    from pypdf import PdfReader

    pages = len(PdfReader(str(out)).pages)
    size = out.stat().st_size / 1e6
    print(
        f"cases {args.cases}, gallery {args.gallery} x {len(METHODS)} overlays, "
        f"validation ({args.replicates} replicates) {t_validate:.1f} s"
    )
    print(
        f"render  {t_render:.2f} s for {pages} pages, {size:.1f} MB  "
        f"-> {t_render / GOAL_SECONDS:.2f} x the {GOAL_SECONDS:.0f} s goal "
        f"({'met' if t_render <= GOAL_SECONDS else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
