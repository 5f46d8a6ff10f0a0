"""Benchmark of medlens.validation against a naive scikit-learn bootstrap loop.

Workload (issue 4): 1,000,000 predictions from 300,000 patients, 20 cohorts (site 5,
manufacturer 5, sex 2, age band 8), 2000 patient-cluster bootstrap replicates stratified
by site, plus DeLong/Obuchowski AUC intervals for the overall population and every cohort.

What is timed (each in a fresh subprocess so that peak RSS belongs to that step):

* ``compile``: the numba kernels of the bootstrap compiled from scratch (an empty
  ``NUMBA_CACHE_DIR``), then loaded from that on-disk cache in a second process. The
  engine and phase steps below use that (warm) cache; the "cold" line adds the compile
  time, which is what the very first run on a machine pays.
* ``engine``: ``medlens.validation.evaluate`` end to end (checks, 21 groups, bootstrap of
  every threshold metric, Brier, ECE, AUC and average precision, clustered AUC
  variances, calibration, cohort differences with Holm/BH, evidence dict). With
  ``--no-rank-metrics`` the engine runs with ``rank_metrics: false`` and the AUC/AP
  bootstrap is timed separately (``rank``) on a subsample of replicates, scaled. The
  time spent inside ``cluster_bootstrap`` is reported separately from the rest.
* ``phases``: ``cluster_bootstrap`` alone on the same data, without and with the AUC/AP
  statistics, and the generation of the replicate weights alone.
* ``naive``: a loop that, per replicate, resamples patients within sites and calls
  scikit-learn (confusion_matrix, brier_score_loss, roc_auc_score,
  average_precision_score with sample weights) for the 21 groups; timed on a few
  replicates and scaled to 2000.

Prints wall and CPU seconds (``time.process_time``: all threads of the process), peak
RSS and the ratios. On a shared machine wall time is noisy; CPU seconds are not. Run:
``python benchmarks/bench_validation.py [--rows N --patients P --replicates B]
[--no-rank-metrics] [--no-phases]``.
Pin to two cores with ``taskset -c 0,1`` to reproduce the 2-core target.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd


def make_table(rows: int, patients: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pat = rng.integers(0, patients, rows)
    site = rng.integers(0, 5, patients)[pat]
    sex = rng.integers(0, 2, patients)[pat]
    age = rng.integers(0, 8, patients)[pat]
    manu = rng.integers(0, 5, rows)  # scanner can differ between a patient's images
    y = (rng.random(rows) < 0.2 + 0.03 * site).astype(np.int8)
    logit = -1.5 + 2.2 * y + 0.25 * rng.standard_normal(patients)[pat] + rng.standard_normal(rows)
    score = (1 / (1 + np.exp(-logit))).astype(np.float32).astype(np.float64)  # float32 model output
    return pd.DataFrame(
        {
            "case_id": np.arange(rows),
            "patient_key": pat,
            "label": y,
            "score": score,
            "site": np.array([f"S{i}" for i in range(5)])[site],
            "manufacturer": np.array(["GE", "Siemens", "Philips", "Canon", "Fuji"])[manu],
            "sex": np.array(["F", "M"])[sex],
            "age_band": np.array([f"A{i}" for i in range(8)])[age],
        }
    )


COHORTS = ["site", "manufacturer", "sex", "age_band"]


class _Timed:
    """Wraps a function and adds up the wall and CPU seconds spent in it."""

    def __init__(self, fn):
        self.fn, self.wall, self.cpu, self.calls = fn, 0.0, 0.0, 0

    def __call__(self, *a, **k):
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            return self.fn(*a, **k)
        finally:
            self.wall += time.perf_counter() - w0
            self.cpu += time.process_time() - c0
            self.calls += 1


def _time_bootstrap_calls() -> _Timed:
    """Route every module of medlens.validation that imported ``cluster_bootstrap`` through
    one timer (the engine's modules are imported first so that none is missed)."""
    import importlib
    import pkgutil

    import medlens.validation as validation
    from medlens.validation import _bootstrap

    for info in pkgutil.iter_modules(validation.__path__):
        importlib.import_module(f"medlens.validation.{info.name}")
    original = _bootstrap.cluster_bootstrap
    timed = _Timed(original)
    for name, module in list(sys.modules.items()):
        if name.startswith("medlens.validation") and (
            getattr(module, "cluster_bootstrap", None) is original
        ):
            module.cluster_bootstrap = timed
    return timed


def worker_engine(args: argparse.Namespace) -> dict:
    from medlens.validation import evaluate, parse_plan, to_evidence

    timed = _time_bootstrap_calls()
    df = make_table(args.rows, args.patients)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    plan = parse_plan(
        {
            "columns": {"cohorts": COHORTS},
            "analysis": {
                "bootstrap": {"replicates": args.replicates, "rank_metrics": args.rank_metrics}
            },
        }
    )
    w0, c0 = time.perf_counter(), time.process_time()
    ev = to_evidence(evaluate(df, plan))
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    n_groups = 1 + sum(len(v) for v in ev["cohorts"].values())
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_after_data_gb": rss0 / 1e6,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "groups": n_groups,
        "auc_method": ev["overall"]["metrics"]["auc"]["method"],
        "n_patients": ev["overall"]["n_patients"],
        "bootstrap_calls": timed.calls,
        "bootstrap_wall_s": timed.wall,
        "bootstrap_cpu_s": timed.cpu,
    }


def worker_compile(args: argparse.Namespace) -> dict:
    """First bootstrap call on tiny data: compiles the kernels or loads them from cache."""
    w0 = time.perf_counter()
    from medlens.validation import Partition, cluster_bootstrap

    y = np.array([0, 1, 0, 1, 1, 0])
    s = np.array([0.1, 0.4, 0.4, 0.8, 0.9, 0.2])
    parts = [Partition("overall", np.zeros(6, np.int64), ("all",))]
    w1, c1 = time.perf_counter(), time.process_time()
    for rank in (True, False):
        cluster_bootstrap(y, s, (s >= 0.5).astype(int), parts, n_replicates=2, rank_metrics=rank)
    return {
        "import_wall_s": w1 - w0,
        "first_call_wall_s": time.perf_counter() - w1,
        "first_call_cpu_s": time.process_time() - c1,
    }


def worker_phases(args: argparse.Namespace) -> dict:
    """cluster_bootstrap alone (without / with AUC and AP) and the weight generation."""
    import medlens.validation._bootstrap as b
    from medlens.validation import _kernels, cluster_bootstrap

    y, s, p, cl, site, parts = _arrays(make_table(args.rows, args.patients))
    out = {}
    for rank in (False, True):
        w0, c0 = time.perf_counter(), time.process_time()
        cluster_bootstrap(
            y,
            s,
            p,
            parts,
            clusters=cl,
            strata=site,
            n_replicates=args.replicates,
            rank_metrics=rank,
        )
        key = "with_rank" if rank else "without_rank"
        out[f"{key}_wall_s"] = time.perf_counter() - w0
        out[f"{key}_cpu_s"] = time.process_time() - c0
    # weight generation alone (single thread): every tile's multiplicities
    n_cl = int(cl.max()) + 1
    cstrata = np.zeros(n_cl, np.int64)
    cstrata[cl] = site
    _, starts, sizes = b._strata_runs(cstrata)
    w0, c0 = time.perf_counter(), time.process_time()
    states = b._states(0, 0, args.replicates)
    for first in range(0, args.replicates, b._TILE):
        _kernels._tile_weights(
            np.empty(0, b._NARROW),
            b._NARROW_MAX,
            states[first : first + b._TILE],
            starts,
            sizes,
            n_cl,
        )
    out["weights_wall_s"] = time.perf_counter() - w0
    out["weights_cpu_s"] = time.process_time() - c0
    out["threads"] = b._n_threads()
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return out


def _arrays(df: pd.DataFrame):
    _, cl = np.unique(df.patient_key.to_numpy(), return_inverse=True)
    y = df.label.to_numpy()
    s = df.score.to_numpy()
    p = (s >= 0.5).astype(np.int8)
    parts = []
    from medlens.validation import Partition
    from medlens.validation._cohorts import cohort_codes

    parts.append(Partition("overall", np.zeros(len(df), np.int64), ("all",)))
    for c in COHORTS:
        codes, values = cohort_codes(df[c])
        parts.append(Partition(c, codes, values))
    site_codes, _ = cohort_codes(df.site)
    return y, s, p, cl, site_codes, parts


def worker_rank(args: argparse.Namespace) -> dict:
    from medlens.validation import cluster_bootstrap

    y, s, p, cl, site, parts = _arrays(make_table(args.rows, args.patients))
    b = args.rank_replicates
    w0, c0 = time.perf_counter(), time.process_time()
    cluster_bootstrap(
        y, s, p, parts, clusters=cl, strata=site, n_replicates=b, seed=0, rank_metrics=False
    )
    base_w, base_c = time.perf_counter() - w0, time.process_time() - c0
    w0, c0 = time.perf_counter(), time.process_time()
    cluster_bootstrap(
        y, s, p, parts, clusters=cl, strata=site, n_replicates=b, seed=0, rank_metrics=True
    )
    full_w, full_c = time.perf_counter() - w0, time.process_time() - c0
    scale = args.replicates / b
    return {
        "replicates_timed": b,
        "rank_extra_wall_s_scaled": (full_w - base_w) * scale,
        "rank_extra_cpu_s_scaled": (full_c - base_c) * scale,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def worker_naive(args: argparse.Namespace) -> dict:
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        confusion_matrix,
        roc_auc_score,
    )

    y, s, p, cl, site, parts = _arrays(make_table(args.rows, args.patients))
    n_cl = cl.max() + 1
    site_of = np.zeros(n_cl, np.int64)
    site_of[cl] = site
    members = [np.flatnonzero(site_of == k) for k in np.unique(site_of)]
    rng = np.random.default_rng(0)
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.naive_replicates):
        draw = np.concatenate([rng.choice(m, m.size, replace=True) for m in members])
        w = np.bincount(draw, minlength=n_cl)[cl].astype(np.float64)
        for part in parts:
            for v in range(len(part.values)):
                m = part.codes == v
                ww, yy, ss, pp = w[m], y[m], s[m], p[m]
                confusion_matrix(yy, pp, labels=[0, 1], sample_weight=ww)
                brier_score_loss(yy, ss, sample_weight=ww)
                roc_auc_score(yy, ss, sample_weight=ww)
                average_precision_score(yy, ss, sample_weight=ww)
    scale = args.replicates / args.naive_replicates
    return {
        "replicates_timed": args.naive_replicates,
        "wall_s_scaled": (time.perf_counter() - w0) * scale,
        "cpu_s_scaled": (time.process_time() - c0) * scale,
    }


def run_worker(kind: str, args: argparse.Namespace, env: dict | None = None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--rows",
        str(args.rows),
        "--patients",
        str(args.patients),
        "--replicates",
        str(args.replicates),
        "--naive-replicates",
        str(args.naive_replicates),
        "--rank-replicates",
        str(args.rank_replicates),
        "--rank-metrics" if args.rank_metrics else "--no-rank-metrics",
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--patients", type=int, default=300_000)
    ap.add_argument("--replicates", type=int, default=2000)
    ap.add_argument("--naive-replicates", type=int, default=2)
    ap.add_argument("--rank-replicates", type=int, default=64)
    ap.add_argument(
        "--rank-metrics",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bootstrap AUC and average precision inside evaluate() (default: on)",
    )
    ap.add_argument(
        "--phases",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time cluster_bootstrap alone, without and with AUC/AP (default: on)",
    )
    ap.add_argument("--worker", choices=["engine", "rank", "naive", "compile", "phases"])
    args = ap.parse_args()
    if args.worker:
        fn = {
            "engine": worker_engine,
            "rank": worker_rank,
            "naive": worker_naive,
            "compile": worker_compile,
            "phases": worker_phases,
        }[args.worker]
        print(json.dumps(fn(args)))
        return
    print(
        f"workload: {args.rows:,} rows, {args.patients:,} patients, 20 cohorts, {args.replicates} replicates; cpus available: {len(os.sched_getaffinity(0))}; load avg {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        cold = run_worker("compile", args, env)
        warm = run_worker("compile", args, env)
        compile_s = cold["first_call_wall_s"] - warm["first_call_wall_s"]
        print(
            f"compile  bootstrap kernels from scratch: first call {cold['first_call_wall_s']:.1f} s wall, {cold['first_call_cpu_s']:.1f} s cpu; from the on-disk cache: {warm['first_call_wall_s']:.2f} s wall (import of medlens.validation {warm['import_wall_s']:.1f} s)"
        )
        eng = run_worker("engine", args, env)
        rank_on = "with" if args.rank_metrics else "without"
        print(
            f"engine   evaluate() {rank_on} the AUC/AP bootstrap (kernels cached): wall {eng['wall_s']:.1f} s, cpu {eng['cpu_s']:.1f} s, peak RSS {eng['peak_rss_gb']:.2f} GB (data alone {eng['rss_after_data_gb']:.2f} GB); {eng['groups']} groups, AUC by {eng['auc_method']}"
        )
        if eng["bootstrap_calls"]:
            print(
                f"         of which cluster_bootstrap ({eng['bootstrap_calls']} call(s)): wall {eng['bootstrap_wall_s']:.1f} s, cpu {eng['bootstrap_cpu_s']:.1f} s; rest of evaluate(): wall {eng['wall_s'] - eng['bootstrap_wall_s']:.1f} s, cpu {eng['cpu_s'] - eng['bootstrap_cpu_s']:.1f} s"
            )
        rank_w = rank_c = 0.0
        if not args.rank_metrics:
            rank = run_worker("rank", args, env)
            rank_w, rank_c = rank["rank_extra_wall_s_scaled"], rank["rank_extra_cpu_s_scaled"]
            print(
                f"rank     AUC/AP bootstrap on top (timed on {rank['replicates_timed']} replicates, scaled): wall +{rank_w:.1f} s, cpu +{rank_c:.1f} s"
            )
        if args.phases:
            ph = run_worker("phases", args, env)
            print(
                f"phases   cluster_bootstrap alone on {ph['threads']} thread(s): without AUC/AP wall {ph['without_rank_wall_s']:.1f} s, cpu {ph['without_rank_cpu_s']:.1f} s; with AUC/AP wall {ph['with_rank_wall_s']:.1f} s, cpu {ph['with_rank_cpu_s']:.1f} s; replicate weights alone (1 thread) wall {ph['weights_wall_s']:.1f} s, cpu {ph['weights_cpu_s']:.1f} s; peak RSS {ph['peak_rss_gb']:.2f} GB"
            )
    naive = run_worker("naive", args)
    print(
        f"naive    sklearn loop (timed on {naive['replicates_timed']} replicates, scaled): wall {naive['wall_s_scaled']:.0f} s, cpu {naive['cpu_s_scaled']:.0f} s"
    )
    full_w, full_c = eng["wall_s"] + rank_w, eng["cpu_s"] + rank_c
    cold_w, cold_c = (
        full_w + compile_s,
        full_c + cold["first_call_cpu_s"] - warm["first_call_cpu_s"],
    )
    nw, nc = naive["wall_s_scaled"], naive["cpu_s_scaled"]
    print(
        f"full     evaluation with the AUC/AP bootstrap, kernels cached: wall {full_w:.1f} s, cpu {full_c:.1f} s; ratio naive / full (wall): {nw / full_w:.1f}x, (cpu): {nc / full_c:.1f}x"
    )
    print(
        f"cold     the same on a first run (kernels compiled, +{compile_s:.1f} s): wall {cold_w:.1f} s, cpu {cold_c:.1f} s; ratio naive / cold (wall): {nw / cold_w:.1f}x, (cpu): {nc / cold_c:.1f}x"
    )
    print(
        f"targets  (judged on the first run) wall <= 30 s: {'met' if cold_w <= 30 else 'NOT met'}; peak RSS <= 4 GB: {'met' if eng['peak_rss_gb'] <= 4 else 'NOT met'}; >= 20x (wall): {'met' if nw / cold_w >= 20 else 'NOT met'}, (cpu): {'met' if nc / cold_c >= 20 else 'NOT met'}; load avg now {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
