"""Explainer performance against the pass-count limit and the reference libraries.

For each method and setting this prints:

- evals: model evaluations of one run (rows through forward, counted by medlens), taken from
  a warm run (a CAM explainer's one-off layer probe is not in it);
- chunk: rows per forward pass medlens used (``params['batch_size_used']``; for LIME, SHAP,
  occlusion and Score-CAM the size its probe measured fastest; "all" = one pass);
- ours: median seconds of ``explain(x, target=t)`` with the default ``batch_size=None``,
  warm (the chunk size is already measured), run back to back like the limit's passes;
  ours 1st: the first run in the process, which pays for the chunk-size probe (and a CAM
  method's layer probe); ours(i): the same median when runs alternate with the reference's
  (what ref/ours compares: each run then starts after the other library's allocations,
  about 5-10 % slower than back to back on this CPU);
- limit: the pass-count limit, the evaluations times the best per-row cost over batch sizes
  1..256 measured in the same run (median of repeats per size, the lower of two measurements,
  one before and one after the methods): forward only (``torch.inference_mode``) for the
  perturbation methods and for the one scoring forward of every method, forward + backward
  for the other rows of gradient and CAM methods. Saliency, input x gradient, Grad-CAM and
  Grad-CAM++ score the image in the pass that computes the gradient (no separate scoring
  forward). DeepLift's rows are priced at captum DeepLift's own per-row cost at its best
  batch size and layout (its rescale-rule hooks on every nonlinearity make a DeepLift
  forward + backward 3-4x a plain one; no implementation built on captum's DeepLift can go
  below that, so a plain forward + backward would be a limit no DeepLift can reach).
  ours/limit: the goal is <= 1.25; ours/lim_n: the same limit with the batch sizes a job of
  that many rows can use (at most its rows, and one row for the scoring forward): for a
  one-row job (saliency of one scan) the best batch size above is out of its reach, and
  ours/lim_n says how close it comes to a single forward + backward row;
- ref: median seconds of the reference library's default usage at equal fidelity (same
  num_samples / max_evals / n_steps / window), interleaved run by run with ours; ref/ours:
  the speed-up, ref over ours(i) (goal for LIME and SHAP on CPU: >= 5); ref/limit: the
  largest speed-up any
  implementation could reach (the reference's time over the cost of the model evaluations
  alone).

Settings: TinyCNN(1 channel, 2 classes, width 16, depth 4) on a smooth blob plus noise,
target = predicted class. Two settings by default, each printed with its parameters:
128 px with 50 SLIC superpixels for LIME, and 256 px with 150 superpixels (closer to what a
scan needs). LIME: 1000 samples, hide_color=0 for both (lime's default hide_color=None needs
3 channels); the lime package gets medlens's superpixels through ``segmentation_fn`` (its
time does not include SLIC, ours does), its default batch_size=10 and a classifier function
that calls the model under ``torch.no_grad``. SHAP: max_evals=500, masker blur(size/4,
size/4); shap's Partition with its defaults (batch_size "auto"), medlens with its default
masks_per_round=64. Occlusion: window size/8, stride size/16 (captum's default
perturbations_per_eval=1). Score-CAM and the CAMs: pytorch-grad-cam on ``features``.

A second table per setting runs the one-pass methods (saliency, input x gradient, guided
backprop, Grad-CAM, Grad-CAM++) on ``--images`` different images in one call, as a report's
case gallery does: there the best batch size of the limit is open to them. Its limit is the
images times the best forward + backward per-row cost; its reference is captum (or
pytorch-grad-cam) on the same batch in one call.

Not a test; no thresholds are asserted. Timings on a shared machine are noisy: use
--repeats, and --threads 1 when other processes compete for the cores.

    python benchmarks/bench_xai.py [--sizes 128,256] [--segments 50,150] [--methods lime,shap]
        [--device cpu|cuda] [--repeats 5] [--threads N] [--images 16]
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
import types
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
os.environ.setdefault("TQDM_DISABLE", "1")  # lime's per-sample progress bar

from captum.attr import (  # noqa: E402
    DeepLift,
    GradientShap,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from lime import lime_image  # noqa: E402

lime_image.tqdm = lambda it, **_kw: it  # lime's per-sample progress bar

from medlens.testing import TinyCNN  # noqa: E402
from medlens.xai import get_explainer  # noqa: E402
from medlens.xai._chunking import clear_chunk_cache  # noqa: E402
from medlens.xai._gradient import _ChannelsLast  # noqa: E402

FORWARD_SIZES = (1, 2, 4, 8, 10, 16, 32, 64, 128, 256)
BACKWARD_SIZES = (1, 2, 4, 8, 16, 32, 64)
#: methods whose rows after the scoring forward are forward passes only
FORWARD_ONLY = {"scorecam", "occlusion", "lime", "shap"}


def _grad_cam_module():
    """pytorch_grad_cam with an inert stand-in for the torchvision utilities it imports."""
    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    trf = types.ModuleType("torchvision.transforms.functional")
    ops = types.ModuleType("torchvision.ops")
    for a in ("Compose", "Normalize", "ToTensor"):
        setattr(tr, a, None)
    trf.resize = None
    tv.transforms, tr.functional, tv.ops = tr, trf, ops
    saved = {
        n: sys.modules.get(n)
        for n in (
            "torchvision",
            "torchvision.transforms",
            "torchvision.transforms.functional",
            "torchvision.ops",
        )
    }
    sys.modules.update(
        {
            "torchvision": tv,
            "torchvision.transforms": tr,
            "torchvision.transforms.functional": trf,
            "torchvision.ops": ops,
        }
    )
    try:
        mod = importlib.import_module("pytorch_grad_cam")
        score_cam = importlib.import_module("pytorch_grad_cam.score_cam")
        score_cam.tqdm = types.SimpleNamespace(tqdm=lambda it, **_kw: it)  # no progress bar
        tgt = importlib.import_module("pytorch_grad_cam.utils.model_targets").ClassifierOutputTarget
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    return mod, tgt


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def once(fn) -> float:
    _sync()
    t0 = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t0


def back_to_back(fn, repeats: int) -> float:
    """Median seconds of ``fn`` run ``repeats`` times in a row (as the limit's passes are)."""
    fn()
    return statistics.median(once(fn) for _ in range(repeats))


def interleaved(fns, repeats: int) -> list[float]:
    """Median seconds of each function, run in turns (a, b, a, b, ...) after one warm-up."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            times[i].append(once(fn))
    return [statistics.median(t) for t in times]


def per_row_costs(model, x, *, grad: bool, repeats: int) -> dict[int, float]:
    """Median seconds per row at each batch size (forward, or forward + backward), in the
    better of the contiguous and the channels-last memory layout."""
    return {
        bs: min(_per_row(model, x, bs, cl, grad=grad, repeats=repeats) for cl in (False, True))
        for bs in (BACKWARD_SIZES if grad else FORWARD_SIZES)
    }


def _per_row(model, x, bs: int, channels_last: bool, *, grad: bool, repeats: int) -> float:
    xb = x.expand(bs, *x.shape[1:]).contiguous()
    if channels_last:
        xb = xb.to(memory_format=torch.channels_last)
    if grad:

        def run():
            xg = xb.clone().requires_grad_(True)  # clone keeps the layout
            torch.autograd.grad(model(xg)[:, 0].sum(), xg)
    else:

        def run():
            with torch.inference_mode():
                model(xb)

    run()
    reps = max(repeats, -(-64 // bs))  # at least 64 rows per size
    return statistics.median(once(run) for _ in range(reps)) / bs


def deeplift_row_costs(model, x, *, repeats: int) -> dict[int, float]:
    """Median seconds per row (input and baseline rows both count) of captum's DeepLift on
    ``bs`` copies of ``x`` with a zero baseline, in the better layout."""
    out = {}
    for bs in BACKWARD_SIZES[:5]:  # 1..16: its hooks make larger chunks only costlier
        xb = x.expand(bs, *x.shape[1:]).contiguous()
        tgt = torch.zeros(bs, dtype=torch.long, device=x.device)
        costs = []
        for net in (model, _ChannelsLast(model)):

            def run(net=net, xb=xb, tgt=tgt):
                DeepLift(net).attribute(
                    xb.clone().requires_grad_(), baselines=torch.zeros_like(xb), target=tgt
                )

            run()
            reps = max(repeats, -(-16 // bs))
            costs.append(statistics.median(once(run) for _ in range(reps)) / (2 * bs))
        out[bs] = min(costs)
    return out


def setting(size: int, segments: int, model, dev, args) -> None:
    rs = np.random.RandomState(0)
    yy, xx = np.mgrid[:size, :size]
    img = np.exp(-((yy - size / 3) ** 2 + (xx - size / 2) ** 2) / (size**2 / 60))
    x = torch.as_tensor(img + 0.1 * rs.randn(size, size), dtype=torch.float32)[None, None].to(dev)
    with torch.no_grad():
        t = int(model(x).argmax(1))
    tt = torch.tensor([t], device=dev)
    pgc, Target = _grad_cam_module()

    def prob_fn(imgs):  # lime / shap reference: (B, H, W, C) numpy -> probabilities
        with torch.no_grad():
            xb = (
                torch.from_numpy(np.ascontiguousarray(imgs))
                .permute(0, 3, 1, 2)
                .contiguous()
                .float()
                .to(dev)
            )
            return torch.softmax(model(xb), 1).double().cpu().numpy()

    x_hwc = x[0].permute(1, 2, 0).cpu().numpy()
    zeros = torch.zeros_like(x)
    lime_kw = {"num_samples": 1000, "hide_color": 0.0, "n_segments": segments}
    seg_map = get_explainer("lime", model, **lime_kw).segment(x[0].cpu().numpy())
    n_seg = int(seg_map.max()) + 1
    blur = f"blur({size // 4},{size // 4})"
    win, stride = size // 8, size // 16

    def shap_ref():
        import shap

        e = shap.explainers.Partition(prob_fn, shap.maskers.Image(blur, x_hwc.shape))
        e(x_hwc[None], max_evals=500, outputs=[t], silent=True)

    def gc(cls):
        return _grad_cam_ref(pgc, Target, model, x, [t], cls)

    cases = {
        "saliency": ({}, lambda: Saliency(model).attribute(x.clone().requires_grad_(), target=tt)),
        "input_x_gradient": (
            {},
            lambda: InputXGradient(model).attribute(x.clone().requires_grad_(), target=tt),
        ),
        "guided_backprop": (
            {},
            lambda: GuidedBackprop(model).attribute(x.clone().requires_grad_(), target=tt),
        ),
        "deeplift": (
            {},
            lambda: DeepLift(model).attribute(
                x.clone().requires_grad_(), baselines=zeros, target=tt
            ),
        ),
        "integrated_gradients": (
            {"n_steps": 50},
            lambda: IntegratedGradients(model).attribute(
                x, baselines=zeros, target=tt, n_steps=50, return_convergence_delta=True
            ),
        ),
        "smoothgrad": (
            {"nt_samples": 20},
            lambda: NoiseTunnel(Saliency(model)).attribute(
                x.clone().requires_grad_(),
                nt_type="smoothgrad",
                nt_samples=20,
                stdevs=0.15,
                target=tt,
            ),
        ),
        "gradient_shap": (
            {"n_samples": 20},
            lambda: GradientShap(model).attribute(
                x.clone().requires_grad_(), baselines=zeros, n_samples=20, target=tt
            ),
        ),
        "gradcam": ({}, gc("GradCAM")),
        "gradcam_pp": ({}, gc("GradCAMPlusPlus")),
        "scorecam": ({}, gc("ScoreCAM")),
        "occlusion": (
            {"window": win, "stride": stride},
            lambda: Occlusion(model).attribute(
                x, sliding_window_shapes=(1, win, win), strides=(1, stride, stride), target=tt
            ),
        ),
        "lime": (
            lime_kw,
            lambda: lime_image.LimeImageExplainer(random_state=0).explain_instance(
                x_hwc,
                prob_fn,
                labels=(t,),
                top_labels=None,
                hide_color=0.0,
                num_samples=1000,
                segmentation_fn=lambda _im: seg_map,
                random_seed=0,
            ),
        ),
        "shap": ({"max_evals": 500, "masker": blur}, shap_ref),
    }
    wanted = [m for m in args.methods.split(",") if m] or list(cases)
    print(
        f"\n== setting: device={dev} threads={torch.get_num_threads()} image=1x{size}x{size} "
        f"model=TinyCNN(width=16, depth=4); LIME num_samples=1000 n_segments={segments} "
        f"(SLIC gave {n_seg}) hide_color=0; SHAP max_evals=500 masker={blur}; occlusion "
        f"window={win} stride={stride}; IG n_steps=50; smoothgrad/gradient_shap 20 samples"
    )
    fwd = per_row_costs(model, x, grad=False, repeats=args.repeats)
    bwd = per_row_costs(model, x, grad=True, repeats=args.repeats)
    dl = deeplift_row_costs(model, x, repeats=args.repeats) if "deeplift" in wanted else {}
    rows = []
    for name in wanted:
        kw, ref = cases[name]
        ex = get_explainer(name, model, **kw)
        clear_chunk_cache()
        first = once(lambda ex=ex: ex.explain(x, target=t))
        res = ex.explain(x, target=t)  # warm: evaluations without one-off probes
        reps = (
            args.repeats
            if name not in ("lime", "shap") or size <= 128
            else max(3, args.repeats // 2)
        )
        ours_i, ref_s = interleaved([lambda ex=ex: ex.explain(x, target=t), ref], reps)
        ours = back_to_back(lambda ex=ex: ex.explain(x, target=t), reps)
        rows.append((name, res, first, ours, ours_i, ref_s, ex.folds_scoring))
    fwd2 = per_row_costs(model, x, grad=False, repeats=args.repeats)
    bwd2 = per_row_costs(model, x, grad=True, repeats=args.repeats)
    fwd = {k: min(v, fwd2[k]) for k, v in fwd.items()}
    bwd = {k: min(v, bwd2[k]) for k, v in bwd.items()}
    if dl:
        dl2 = deeplift_row_costs(model, x, repeats=args.repeats)
        dl = {k: min(v, dl2[k]) for k, v in dl.items()}
    best_f, best_b = min(fwd.values()), min(bwd.values())
    print(
        "per-row cost, forward (inference_mode), ms: "
        + " ".join(f"{k}:{v * 1e3:.2f}" for k, v in fwd.items())
        + f"  -> best {best_f * 1e3:.2f} at {min(fwd, key=fwd.get)}"
    )
    print(
        "per-row cost, forward+backward, ms: "
        + " ".join(f"{k}:{v * 1e3:.2f}" for k, v in bwd.items())
        + f"  -> best {best_b * 1e3:.2f} at {min(bwd, key=bwd.get)}"
    )
    if dl:
        print(
            "per-row cost, captum DeepLift (input and baseline rows), ms: "
            + " ".join(f"{k}:{v * 1e3:.2f}" for k, v in dl.items())
            + f"  -> best {min(dl.values()) * 1e3:.2f} at {min(dl, key=dl.get)}"
        )
    hdr = (
        f"{'method':22s} {'evals':>6s} {'chunk':>5s} {'ours s':>8s} {'1st s':>8s} "
        f"{'limit s':>8s} {'ours/lim':>8s} {'ours/lim_n':>10s} {'ours(i) s':>9s} {'ref s':>8s} "
        f"{'ref/ours':>8s} {'ref/lim':>7s} {'layout':>6s}"
    )
    print(hdr)
    print("-" * len(hdr))
    for name, res, first, ours, ours_i, ref_s, folded in rows:
        n_score = 0 if folded else 1
        rest = res.evaluations - n_score
        costs = fwd if name in FORWARD_ONLY else bwd
        if name == "deeplift":
            costs = dl
        limit = n_score * best_f + rest * min(costs.values())
        limit_n = n_score * fwd[1] + rest * min(v for k, v in costs.items() if k <= max(rest, 1))
        chunk, layout = _plan_cells(res)
        print(
            f"{name:22s} {res.evaluations:6d} {chunk:>5} "
            f"{ours:8.4f} {first:8.4f} {limit:8.4f} {ours / limit:8.2f} {ours / limit_n:10.2f} "
            f"{ours_i:9.4f} {ref_s:8.4f} {ref_s / ours_i:8.2f} {ref_s / limit:7.2f} {layout:>6s}",
            flush=True,
        )
    if args.images > 1:
        batch_section(model, size, dev, args, bwd)


#: one forward + backward pass per image: their cost is the per-row cost at the batch size
ONE_PASS = ("saliency", "input_x_gradient", "guided_backprop", "gradcam", "gradcam_pp")


def batch_section(model, size: int, dev, args, bwd: dict[int, float]) -> None:
    """The one-pass methods on a batch of images in one call (a report's case gallery), where
    the batch sizes of the pass-count limit are open to them."""
    n = args.images
    rs = np.random.RandomState(1)
    yy, xx = np.mgrid[:size, :size]
    imgs = [
        np.exp(-((yy - size * rs.uniform(0.3, 0.7)) ** 2 + (xx - size / 2) ** 2) / (size**2 / 60))
        + 0.1 * rs.randn(size, size)
        for _ in range(n)
    ]
    x = torch.as_tensor(np.stack(imgs), dtype=torch.float32)[:, None].to(dev)
    with torch.no_grad():
        tt = model(x).argmax(1)
    pgc, Target = _grad_cam_module()

    def gc(cls):
        return _grad_cam_ref(pgc, Target, model, x, tt, cls)

    def captum(algo):
        return lambda: algo(model).attribute(x.clone().requires_grad_(), target=tt)

    refs = {
        "saliency": captum(Saliency),
        "input_x_gradient": captum(InputXGradient),
        "guided_backprop": captum(GuidedBackprop),
        "gradcam": gc("GradCAM"),
        "gradcam_pp": gc("GradCAMPlusPlus"),
    }
    wanted = [m for m in args.methods.split(",") if m in refs] or list(refs)
    if args.methods and not wanted:
        return
    print(f"-- {n} images in one call (limit: {n} rows at the best forward + backward cost)")
    hdr = (
        f"{'method':22s} {'evals':>6s} {'chunk':>5s} {'ours s':>8s} {'1st s':>8s} "
        f"{'limit s':>8s} {'ours/lim':>8s} {'ours(i) s':>9s} {'ref s':>8s} {'ref/ours':>8s} "
        f"{'layout':>6s}"
    )
    print(hdr)
    print("-" * len(hdr))
    limit = n * min(bwd.values())
    for name in wanted:
        ex = get_explainer(name, model)
        clear_chunk_cache()
        first = once(lambda ex=ex: ex.explain(x))
        res = ex.explain(x)
        ours_i, ref_s = interleaved([lambda ex=ex: ex.explain(x), refs[name]], args.repeats)
        ours = back_to_back(lambda ex=ex: ex.explain(x), args.repeats)
        chunk, layout = _plan_cells(res)
        print(
            f"{name:22s} {res.evaluations:6d} {chunk:>5} "
            f"{ours:8.4f} {first:8.4f} {limit:8.4f} {ours / limit:8.2f} {ours_i:9.4f} "
            f"{ref_s:8.4f} {ref_s / ours_i:8.2f} {layout:>6s}",
            flush=True,
        )


def _plan_cells(res) -> tuple[str, str]:
    """The chunk ("all" for one pass) and memory layout a result records."""
    chunk = res.params.get("batch_size_used")
    layout = {True: "NHWC", False: "NCHW"}.get(res.params.get("channels_last"), "-")
    return ("all" if chunk is None else str(chunk)), layout


def _grad_cam_ref(pgc, target_cls, model, x, targets, cls: str):
    """pytorch-grad-cam's ``cls`` on ``model.features`` for the batch ``x``."""

    def run():
        cam = getattr(pgc, cls)(model=model, target_layers=[model.features])
        cam(input_tensor=x, targets=[target_cls(int(k)) for k in targets])
        cam.activations_and_grads.release()

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="128,256")
    p.add_argument("--segments", default="50,150", help="LIME superpixels, one per size")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--methods", default="")
    p.add_argument(
        "--images", type=int, default=16, help="batch for the one-pass methods (1: skip)"
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(v) for v in args.sizes.split(",")]
    segments = [int(v) for v in args.segments.split(",")]
    if len(segments) != len(sizes):
        p.error("--segments needs one value per size")
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = TinyCNN(1, 2, width=16, depth=4).to(dev).eval()
    for size, seg in zip(sizes, segments, strict=True):
        setting(size, seg, model, dev, args)


if __name__ == "__main__":
    main()
