"""Train the demo checkpoints shipped in medlens/data/ (CPU, about a minute each).

    python scripts/train_demo_model.py            # both models, default settings

Two TinyCNNs (1 channel, 1 logit, binary_sigmoid) are trained on the train split of
the synthetic cohort with the same seed: ``demo_model.pt`` on the cohort WITH the
planted site shortcut (the token marks 90 % of the positives and 8 % of the negatives
at one site), ``demo_model_noshortcut.pt`` on the same images without the token. Both
are evaluated on both cohorts; the drop of the AUC at the shortcut site when the token
is removed measures how much a model relies on it.
Images are read through medlens.io and preprocessed by medlens.model.Preprocessor with
the packaged demo config, exactly as ``medlens demo`` does. The epoch with the best
tune AUC is kept. A JSON sidecar beside each checkpoint records the seed, the exact
command, the torch version, train/tune/test AUC, the AUC at the shortcut site with and
without the marker, and the cohort parameters.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medlens._demo import DEMO_IMAGE_SIZE, DEMO_SEED, demo_config
from medlens._pipeline import load_cases, read_images
from medlens.model import Preprocessor
from medlens.testing import TinyCNN, make_synthetic_cohort
from medlens.validation import roc_auc as _roc_auc

ROOT = Path(__file__).resolve().parents[1]
TRAIN_N_PATIENTS = 600


def _tensors(cfg) -> tuple[torch.Tensor, dict]:
    cases = load_cases(cfg)
    table = cases.table
    if cases.skipped or (table["status"] != "ok").any():
        raise SystemExit(f"unexpected unreadable files: {cases.skipped[:3]}")
    images, failed = read_images(list(table["path"]), cfg)
    if failed:
        raise SystemExit(f"unexpected unreadable files: {list(failed.values())[:3]}")
    x, _ = Preprocessor(cfg.preprocess).batch(images)
    return x, {
        "label": table["label"].to_numpy(),
        "split": table["split"].to_numpy(),
        "site": table["site"].to_numpy(),
        "shortcut_present": table["shortcut_present"].to_numpy(),
    }


def _build(cfg) -> nn.Module:
    model = TinyCNN(**cfg.model.kwargs)
    for m in model.modules():  # He init: the default init leaves the net on a long plateau
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return model


@torch.no_grad()
def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return _roc_auc(labels, scores, curve=False).estimate


def _scores(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return torch.sigmoid(model(x))[:, 0].double().numpy()


def _train(
    x, meta, cfg, *, epochs: int, seed: int, lr: float, batch: int, log
) -> tuple[dict, dict]:
    torch.manual_seed(seed)
    y = torch.tensor(meta["label"].astype(np.float32))
    tr = np.flatnonzero(meta["split"] == "train")
    tu = np.flatnonzero(meta["split"] == "tune")
    model = _build(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    best = (-1.0, -1, None)
    history = []
    for epoch in range(epochs):
        model.train()
        order = tr[torch.randperm(len(tr), generator=gen).numpy()]
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(model(x[idx])[:, 0], y[idx])
            loss.backward()
            opt.step()
        auc = roc_auc(meta["label"][tu], _scores(model, x[tu]))
        history.append(round(auc, 4))
        if auc > best[0]:
            best = (auc, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
        log(f"  epoch {epoch + 1:3d}/{epochs}  tune AUC {auc:.3f}")
    return best[2], {"best_epoch": best[1] + 1, "tune_auc_history": history}


def _xm(data: dict, name: str) -> tuple[torch.Tensor, dict]:
    return data[name][2], data[name][3]


def _evaluate(state, x, meta, shortcut_site, cfg) -> dict:
    model = TinyCNN(**cfg.model.kwargs)
    model.load_state_dict(state)
    s = _scores(model, x)
    out = {}
    for split in ("train", "tune", "test"):
        m = meta["split"] == split
        out[f"{split}_auc"] = round(roc_auc(meta["label"][m], s[m]), 4)
    site = (meta["split"] == "test") & (meta["site"] == shortcut_site)
    out["shortcut_site_test_auc"] = round(roc_auc(meta["label"][site], s[site]), 4)
    out["shortcut_site_test_n"] = int(site.sum())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "medlens" / "data")
    p.add_argument("--n-patients", type=int, default=TRAIN_N_PATIENTS)
    p.add_argument("--seed", type=int, default=DEMO_SEED, help="cohort and training seed")
    p.add_argument("--epochs", type=int, default=45)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: reproducible)")
    p.add_argument("--only", choices=["shortcut", "noshortcut"], default=None)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    log = (lambda *_: None) if args.quiet else (lambda msg: print(msg, flush=True))

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    command = "python scripts/train_demo_model.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    variants = [v for v in ("shortcut", "noshortcut") if args.only in (None, v)]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medlens-train-") as tmp:
        data = {}
        # the same images with the token (most positives at one site) and without it
        for name, flag, rates in (
            ("shortcut", True, (0.9, 0.08)),
            ("noshortcut", False, (0.9, 0.08)),
        ):
            cohort = make_synthetic_cohort(
                Path(tmp) / name,
                n_patients=args.n_patients,
                image_size=DEMO_IMAGE_SIZE,
                shortcut=flag,
                shortcut_rates=rates,
                seed=args.seed,
            )
            cfg = demo_config(shortcut=name == "shortcut", cohort=cohort)
            x, meta = _tensors(cfg)
            data[name] = (cohort, cfg, x, meta)
            log(f"cohort {name}: {cohort.n_images} images read in {time.perf_counter() - t0:.1f} s")
        shortcut_cohort = data["shortcut"][0]
        site = shortcut_cohort.shortcut.site
        for name in variants:
            train_on = name
            cohort, cfg, x, meta = data[train_on]
            log(f"training {name} model on the {train_on} cohort")
            t1 = time.perf_counter()
            state, info = _train(
                x,
                meta,
                cfg,
                epochs=args.epochs,
                seed=args.seed,
                lr=args.lr,
                batch=args.batch_size,
                log=log,
            )
            metrics = {
                "on_shortcut_cohort": _evaluate(state, *_xm(data, "shortcut"), site, cfg),
                "on_clean_cohort": _evaluate(state, *_xm(data, "noshortcut"), site, cfg),
            }
            metrics["shortcut_site_test_auc_drop_without_marker"] = round(
                metrics["on_shortcut_cohort"]["shortcut_site_test_auc"]
                - metrics["on_clean_cohort"]["shortcut_site_test_auc"],
                4,
            )
            ckpt = args.out / Path(cfg.model.path).name
            torch.save(state, ckpt)
            sidecar = {
                "checkpoint": ckpt.name,
                "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
                "architecture": "tiny_cnn",
                "kwargs": cfg.model.kwargs,
                "parameters": int(sum(v.numel() for v in state.values())),
                "trained_with_shortcut": name == "shortcut",
                "command": command,
                "seed": args.seed,
                "epochs": args.epochs,
                "lr": args.lr,
                "batch_size": args.batch_size,
                "threads": args.threads,
                **info,
                "metrics": metrics,
                "trained_on": train_on,
                "cohort": {
                    "generator": "medlens.testing.make_synthetic_cohort",
                    "n_patients": args.n_patients,
                    "n_images": cohort.n_images,
                    "image_size": DEMO_IMAGE_SIZE,
                    "seed": args.seed,
                    "shortcut": name == "shortcut",
                    "shortcut_rates": [0.9, 0.08],
                    "shortcut_site": site,
                },
                "preprocess": cfg.preprocess.model_dump(mode="json"),
                "torch": torch.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
                "train_seconds": round(time.perf_counter() - t1, 1),
            }
            ckpt.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
            log(f"{ckpt} ({ckpt.stat().st_size} bytes): {json.dumps(metrics)}")
    log(f"total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
