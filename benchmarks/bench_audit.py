"""Cost of a 200-case explanation audit: model evaluations and seconds, next to the
pass-count limit (evaluations x the best per-evaluation forward cost measured in this run).

Usage: python benchmarks/bench_audit.py [--methods gradcam saliency ...] [--cases 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from medlens._demo import demo_config
    from medlens._pipeline import load_cases, predict_cases, select_split
    from medlens.model import load_model
    from medlens.testing import make_synthetic_cohort
    from medlens.xai._audit import mask_to_input, run_audit

    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", nargs="+", default=["gradcam", "integrated_gradients", "saliency"])
    ap.add_argument("--cases", type=int, default=200)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        cohort = make_synthetic_cohort(Path(tmp) / "c", n_patients=700, image_size=128, seed=3)
        cfg = demo_config(shortcut=True, cohort=cohort)
        table = select_split(load_cases(cfg).table, cfg, "test")
        model = load_model(cfg.model, preprocess=cfg.preprocess)
        scored, images = predict_cases(table, cfg, model)
        x, geoms = model.preprocess.batch(images)
        anat = [
            mask_to_input(np.load(p), g) for p, g in zip(scored.anatomy_mask, geoms, strict=True)
        ]
        scored = scored.set_index("case_id")
        # reference: best per-row cost of a plain forward+backward at the audit's batch size
        xb = x[:64].clone().requires_grad_(True)
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            model.module(xb).sum().backward()
            best = min(best, (time.perf_counter() - t) / xb.shape[0])
        with torch.no_grad():
            best_fwd = float("inf")
            for _ in range(5):
                t = time.perf_counter()
                model.module(x[:64])
                best_fwd = min(best_fwd, (time.perf_counter() - t) / 64)
        res = run_audit(
            model,
            x,
            scored,
            methods=tuple(args.methods),
            anatomy_masks=anat,
            cohort_columns=["site", "manufacturer", "sex", "age_band"],
            max_cases=args.cases,
        )
    print(f"cases audited: {len(res.cases)}; audit seconds: {res.seconds:.1f}")
    print(
        f"best per-row cost: forward {best_fwd * 1e6:.1f} us, forward+backward {best * 1e6:.1f} us"
    )
    total = 0
    for m, ev in res.evaluations.items():
        total += ev["total"]
        print(f"{m}: " + ", ".join(f"{k}={v}" for k, v in ev.items()))
    limit = total * best_fwd
    print(
        f"total model evaluations: {total}; pass-count limit (evals x best forward): "
        f"{limit:.1f} s; upper reference (evals x best fwd+bwd): {total * best:.1f} s; "
        f"audit / limit = {res.seconds / limit:.1f}x"
    )


if __name__ == "__main__":
    main()
