"""Benchmark: ModelWrapper.predict vs a plain ``model(x)`` loop on the same tensor.

Both sides get the same preprocessed float32 tensor and the same model. The plain
loop is timed at several batch sizes and its best is the reference; ``predict``
is timed at that same batch size (the overhead figure) and at its default of 32.
Runs are interleaved and repeated; medians are reported. Goal: overhead <= 5 %.

Run: python benchmarks/bench_predict.py [--n 2000] [--size 64] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medlens.config import HeadConfig
from medlens.model import ModelWrapper
from medlens.testing import TinyCNN


def plain_loop(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    outs = []
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch_size):
            outs.append(model(x[i : i + batch_size]))
    return torch.cat(outs)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(name: str, model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    head = HeadConfig(type="binary_sigmoid", class_names=["negative", "positive"])
    wrapper = ModelWrapper.from_module(model, head=head, device="cpu")
    model = wrapper.module
    plain_loop(model, x[:64], 32)  # warm-up
    wrapper.predict(x[:64])

    candidates = [16, 32, 64, 128, 256]
    plain = {b: [] for b in candidates}
    for _ in range(3):
        for b in candidates:
            plain[b].append(timed(lambda b=b: plain_loop(model, x, b)))
    best_bs = min(candidates, key=lambda b: statistics.median(plain[b]))

    ref_t, ours_t, ours_default_t, ratios = [], [], [], []
    for r in range(repeats):
        # interleaved, alternating order: load from other processes hits both sides alike
        ref = lambda: plain_loop(model, x, best_bs)  # noqa: E731
        ours = lambda: wrapper.predict(x, batch_size=best_bs)  # noqa: E731
        if r % 2:
            t_ours, t_ref = timed(ours), timed(ref)
        else:
            t_ref, t_ours = timed(ref), timed(ours)
        ref_t.append(t_ref)
        ours_t.append(t_ours)
        ratios.append(t_ours / t_ref)
        ours_default_t.append(timed(lambda: wrapper.predict(x)))
    ref, ours, ours_def = (statistics.median(t) for t in (ref_t, ours_t, ours_default_t))
    n = x.shape[0]
    overhead = statistics.median(ratios) - 1.0
    print(f"{name}: {n} images {tuple(x.shape[1:])}, threads={torch.get_num_threads()}")
    print(
        "  plain loop medians by batch size: "
        + ", ".join(f"{b}: {statistics.median(plain[b]) * 1e3:.0f} ms" for b in candidates)
    )
    print(
        f"  plain model(x) loop, best batch {best_bs}: {ref * 1e3:8.1f} ms ({n / ref:,.0f} img/s)"
    )
    print(
        f"  ModelWrapper.predict, batch {best_bs}:     {ours * 1e3:8.1f} ms ({n / ours:,.0f} img/s)"
    )
    print(f"  ModelWrapper.predict, default batch 32: {ours_def * 1e3:8.1f} ms")
    print(
        f"  overhead at the same batch size (median of {repeats} paired ratios): "
        f"{overhead * 100:+.1f} % (goal <= 5 %)"
    )
    return overhead


def fixed_cost(repeats: int) -> None:
    """Wrapper cost per call and per batch, measured on a near-free model (2000 x 8x8, batch 8)."""
    head = HeadConfig(type="binary_sigmoid", class_names=["negative", "positive"])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1))
    wrapper = ModelWrapper.from_module(model, head=head, device="cpu")
    x = torch.rand(2000, 1, 8, 8)
    bs, n_batches = 8, 250
    diffs = []
    for _ in range(repeats):
        t_ref = timed(lambda: plain_loop(wrapper.module, x, bs))
        t_ours = timed(lambda: wrapper.predict(x, batch_size=bs))
        diffs.append(t_ours - t_ref)
    per_batch = statistics.median(diffs) / n_batches
    print(
        f"near-free model, {n_batches} batches: wrapper cost {statistics.median(diffs) * 1e3:.1f} ms "
        f"per predict call = {per_batch * 1e6:.1f} us per batch (model + plain loop excluded)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="images (default 2000)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: steadier timings)"
    )
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats (default 9)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.n, 1, args.size, args.size)
    models = {
        "TinyCNN (width 8, depth 3)": TinyCNN(1, 1),
        "larger CNN (width 16, depth 4)": TinyCNN(1, 1, width=16, depth=4),
    }
    worst = max(bench(name, m, x, args.repeats) for name, m in models.items())
    fixed_cost(args.repeats)
    verdict = "OK" if worst <= 0.05 else "ABOVE GOAL"
    print(f"worst overhead: {worst * 100:+.1f} % -> {verdict}")


if __name__ == "__main__":
    main()
