"""Explainer performance against the pass-count limit and the reference libraries.

For each method on one model and image size this prints: model evaluations, our time, the
pass-count limit (evaluations x the best per-row cost over batch sizes, measured in the same
run: forward for perturbation methods, forward + backward for gradient/CAM methods), the
reference library's default usage at equal fidelity, and the ratios. Not a test; no
thresholds are asserted.

    python benchmarks/bench_xai.py [--size 128] [--device cpu|cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
import types
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")

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

from medlens.testing import TinyCNN  # noqa: E402
from medlens.xai import get_explainer  # noqa: E402

BATCH = 64


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
        tgt = importlib.import_module("pytorch_grad_cam.utils.model_targets").ClassifierOutputTarget
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    return mod, tgt


def timed(fn, repeats: int, warm: bool = True) -> float:
    if warm:
        fn()
    out = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def per_row_cost(model, x, *, grad: bool, repeats: int) -> float:
    """Best seconds per row over batch sizes (forward, or forward + backward)."""
    best = float("inf")
    for bs in (1, 16, 64, 128):
        xb = x.expand(bs, *x.shape[1:]).contiguous()
        if grad:

            def run(xb=xb):
                xg = xb.clone().requires_grad_(True)
                torch.autograd.grad(model(xg)[:, 0].sum(), xg)
        else:

            def run(xb=xb):
                with torch.no_grad():
                    model(xb)

        best = min(best, timed(run, repeats) / bs)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", default="")
    args = p.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = TinyCNN(1, 2, width=16, depth=4).to(dev).eval()
    rs = np.random.RandomState(0)
    yy, xx = np.mgrid[: args.size, : args.size]
    img = np.exp(-((yy - args.size / 3) ** 2 + (xx - args.size / 2) ** 2) / (args.size**2 / 60))
    x = torch.as_tensor(img + 0.1 * rs.randn(args.size, args.size), dtype=torch.float32)[
        None, None
    ].to(dev)
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
    lime_ex = get_explainer("lime", model)
    segments = lime_ex.segment(x[0].cpu().numpy())

    def shap_ref():
        import shap

        e = shap.explainers.Partition(
            prob_fn, shap.maskers.Image(f"blur({args.size // 4},{args.size // 4})", x_hwc.shape)
        )
        e(x_hwc[None], max_evals=500, outputs=[t], silent=True)

    def gc(cls):
        def run():
            cam = getattr(pgc, cls)(model=model, target_layers=[model.features])
            cam(input_tensor=x, targets=[Target(t)])
            cam.activations_and_grads.release()

        return run

    head = None
    cases = {
        "saliency": (
            {},
            False,
            lambda: Saliency(model).attribute(x.clone().requires_grad_(), target=tt),
        ),
        "input_x_gradient": (
            {},
            False,
            lambda: InputXGradient(model).attribute(x.clone().requires_grad_(), target=tt),
        ),
        "guided_backprop": (
            {},
            False,
            lambda: GuidedBackprop(model).attribute(x.clone().requires_grad_(), target=tt),
        ),
        "deeplift": (
            {},
            False,
            lambda: DeepLift(model).attribute(
                x.clone().requires_grad_(), baselines=zeros, target=tt
            ),
        ),
        "integrated_gradients": (
            {"n_steps": 50},
            False,
            lambda: IntegratedGradients(model).attribute(
                x, baselines=zeros, target=tt, n_steps=50, return_convergence_delta=True
            ),
        ),
        "smoothgrad": (
            {"nt_samples": 20},
            False,
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
            False,
            lambda: GradientShap(model).attribute(
                x.clone().requires_grad_(), baselines=zeros, n_samples=20, target=tt
            ),
        ),
        "gradcam": ({}, False, gc("GradCAM")),
        "gradcam_pp": ({}, False, gc("GradCAMPlusPlus")),
        "scorecam": ({}, True, gc("ScoreCAM")),
        "occlusion": (
            {"window": args.size // 8},
            True,
            lambda: Occlusion(model).attribute(
                x,
                sliding_window_shapes=(1, args.size // 8, args.size // 8),
                strides=(1, args.size // 16, args.size // 16),
                target=tt,
            ),
        ),
        "lime": (
            {"num_samples": 1000, "hide_color": 0.0},
            True,
            lambda: lime_image.LimeImageExplainer(random_state=0).explain_instance(
                x_hwc,
                prob_fn,
                labels=(t,),
                top_labels=None,
                hide_color=0.0,
                num_samples=1000,
                segmentation_fn=lambda _im: segments,
                random_seed=0,
            ),
        ),
        "shap": (
            {"max_evals": 500, "masker": f"blur({args.size // 4},{args.size // 4})"},
            True,
            shap_ref,
        ),
    }
    wanted = [m for m in args.methods.split(",") if m] or list(cases)
    print(
        f"device={dev} image=1x{args.size}x{args.size} model=TinyCNN(width=16, depth=4) batch_size={BATCH}"
    )
    print("limit = evaluations x best per-row cost over batch sizes 1/16/64/128, measured right")
    print("before each method (forward only for perturbation methods, else forward + backward)\n")
    hdr = f"{'method':22s} {'evals':>6s} {'ours s':>9s} {'limit s':>9s} {'ours/limit':>10s} {'ref s':>9s} {'ref/ours':>8s}"
    print(hdr)
    print("-" * len(hdr))
    for name in wanted:
        kw, forward_only, ref = cases[name]
        ex = get_explainer(name, model, head=head, **kw)
        res = ex.explain(x, target=t, batch_size=BATCH)
        ours = timed(lambda ex=ex: ex.explain(x, target=t, batch_size=BATCH), args.repeats)
        cost = per_row_cost(model, x, grad=not forward_only, repeats=args.repeats)
        limit = res.evaluations * cost
        ref_s = timed(ref, 1, warm=False) if name in ("lime", "shap") else timed(ref, args.repeats)
        print(
            f"{name:22s} {res.evaluations:6d} {ours:9.4f} {limit:9.4f} {ours / limit:10.2f} {ref_s:9.4f} {ref_s / ours:8.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
