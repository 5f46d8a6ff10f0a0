"""Rows per forward pass for the forward-only perturbation methods, measured per device.

LIME, SHAP, occlusion and Score-CAM send hundreds of perturbed copies of an image through
the model. How many rows one forward pass should hold depends on the model, the device and
the input shape, not on the method: on a CPU a chunk whose activations outgrow the caches
costs two to three times more per row than a small one (TinyCNN at 128 px on 2 cores: 1.3 ms
per row at 10 rows, 2.4 ms at 64, 3.3 ms at 1000), while a GPU wants large chunks until its
memory runs out. :func:`forward_chunk` measures this once per model, device, input shape and
dtype, and remembers it for the life of the process.

The memory layout matters as much: the same TinyCNN runs about twice as fast per row on this
CPU when its input is channels-last (oneDNN's convolutions and max-pooling vectorise over
channels), and a 1-channel scan is channels-last for free. So the probe also tries the
channels-last layout.

The probe times forward passes of 1, 2, 4, 8 ... copies of the first image, in the input's
layout and channels-last, under ``torch.inference_mode``, and keeps the (size, layout) with
the lowest seconds per row. A first pass climbs the sizes until two in a row are no better
than the best, one is twice as slow, the next size exceeds the work at hand (or 256 rows on
a CPU) or the probe's budget (15 % of the work's rows, at least 64), or the device runs out
of memory; a second pass times the three best candidates again (warm, and at a different
moment of any load from other processes) and each keeps its faster time. Jobs of fewer than
:data:`PROBE_MIN_ROWS` rows are not worth a probe and run in one pass, unless an earlier,
larger job already measured this shape.

Results do not depend on the chunk size or layout beyond float rounding: a forward pass of
B rows returns the same logits as B passes of one row up to the last bit or two of float32
(the convolution and matrix kernels block the batch differently). The choice is recorded in
``ExplanationResult.params`` (``batch_size_used``, ``channels_last``).

Gradient methods with many rows per image (Integrated Gradients' path, SmoothGrad's and
GradientSHAP's samples, DeepLift's input + baseline pairs) ask for a forward + backward plan
(``backward=True``): the same probe, timing a forward pass with grad and the backward pass to
the input, with its own cache entry (the best chunk and layout with a backward pass differ
from forward-only: on this CPU channels-last forward + backward costs about half the
contiguous one). Such jobs are probed from :data:`PROBE_MIN_ROWS_GRAD` rows (SmoothGrad's
and GradientSHAP's default 20 samples), and the probe may spend at least
:data:`_GRAD_BUDGET_ROWS` rows. A smaller forward + backward job (saliency or Grad-CAM of one
scan) that finds nothing measured still gets the faster layout: a layout probe times one row
in each layout twice (four single-row passes, once per model, device, input shape and dtype)
and the job runs in one pass in the faster one (``measured`` stays False: its rows were not
measured).
"""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "PROBE_MIN_ROWS",
    "PROBE_MIN_ROWS_GRAD",
    "ForwardPlan",
    "backward_plan",
    "clear_chunk_cache",
    "forward_plan",
    "is_oom",
    "to_layout",
]

#: jobs with fewer rows than this run in one forward pass without a probe
PROBE_MIN_ROWS = 128
#: the same for forward + backward jobs (a backward pass makes a poor chunk costlier: on
#: this CPU 20 rows of SmoothGrad in one contiguous pass cost 1.9x the best chunk)
PROBE_MIN_ROWS_GRAD = 16
#: rows a forward + backward probe may always spend (small jobs still get a usable probe)
_GRAD_BUDGET_ROWS = 96
#: the same for a forward-only probe: enough to reach 16 rows in both layouts (Score-CAM's
#: 129 rows at 15 % stopped at 4, where TinyCNN at 128 px costs 1.2x its best per row)
_FORWARD_BUDGET_ROWS = 64
#: largest chunk tried on a CPU (beyond it the activations of any real model leave the caches)
CPU_MAX_ROWS = 256
#: largest chunk tried on an accelerator
GPU_MAX_ROWS = 4096
#: a size this much slower per row than the best ends the climb at once (a first run at a
#: new shape also pays for kernel set-up, up to ~1.5x on oneDNN)
_MUCH_WORSE = 2.0
#: share of the job's rows the probe may spend
_PROBE_SHARE = 0.15
#: candidates timed again in the second pass
_RETIME = 3


@dataclass(frozen=True)
class ForwardPlan:
    """How the perturbed rows of a job go through the model.

    Attributes
    ----------
    rows : int
        Most rows per forward pass.
    channels_last : bool
        Whether the rows are passed in the channels-last memory layout.
    measured : bool
        Whether a probe chose them (False: the job was too small to be worth one).
    """

    rows: int
    channels_last: bool = False
    measured: bool = False


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], ForwardPlan]] = (
    weakref.WeakKeyDictionary()
)


def is_oom(exc: BaseException) -> bool:
    """Whether an exception is the device running out of memory."""
    return isinstance(exc, torch.OutOfMemoryError) or "CUDA out of memory" in str(exc)


def clear_chunk_cache() -> None:
    """Forget every measured plan (the next large job measures again)."""
    _CACHE.clear()


def to_layout(x: Tensor, channels_last: bool) -> Tensor:
    """``x`` in the channels-last layout (4D or 5D tensors) when asked, else unchanged."""
    if not channels_last or x.ndim not in (4, 5):
        return x
    fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
    return x.to(memory_format=fmt)


def _key(like: Tensor) -> tuple[Any, ...]:
    return (str(like.device), tuple(like.shape[1:]), like.dtype)


def forward_plan(
    model: nn.Module, like: Tensor, total: int, *, backward: bool = False
) -> ForwardPlan:
    """Rows per forward pass and layout that minimise seconds per row for this model and input.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier, already in eval mode (the probe runs its forward pass).
    like : Tensor of shape (B, C, *spatial)
        Inputs of the job, on the model's device; the probe replicates ``like[:1]``.
    total : int
        Rows the job will send through the model; the chunk never exceeds it.
    backward : bool
        Time a forward pass with grad plus the backward pass to the input (gradient
        methods) instead of a forward pass under ``torch.inference_mode``.

    Returns
    -------
    ForwardPlan
        ``rows`` in [1, total]. Measured once per model, device, input shape, dtype and
        mode in this process; jobs of fewer than :data:`PROBE_MIN_ROWS` rows
        (:data:`PROBE_MIN_ROWS_GRAD` with ``backward``) that find nothing measured run in
        one pass, contiguous (forward only) or in the layout a single-row layout probe
        found faster (``backward``).
    """
    total = max(1, int(total))
    key = (*_key(like), bool(backward))
    known = _CACHE.get(model, {}).get(key)
    if known is None:
        try:
            if total < (PROBE_MIN_ROWS_GRAD if backward else PROBE_MIN_ROWS):
                return ForwardPlan(total, backward and _grad_layout(model, like[:1].detach()))
            known = _probe(model, like[:1].detach(), total, bool(backward))
        except Exception:  # noqa: BLE001 - a model the probe cannot run (bad output shape,
            # wrong input): the job's own first pass reports it with medlens's message
            return ForwardPlan(total)
        _CACHE.setdefault(model, {})[key] = known
    return ForwardPlan(min(known.rows, total), known.channels_last, known.measured)


def backward_plan(model: nn.Module, like: Tensor, total: int) -> ForwardPlan:
    """:func:`forward_plan` for forward + backward passes (the gradient methods)."""
    return forward_plan(model, like, total, backward=True)


def _grad_layout(model: nn.Module, x1: Tensor) -> bool:
    """Whether one forward + backward row runs faster channels-last (measured once per
    model, device, input shape and dtype; False for inputs without a channels-last layout)."""
    if x1.ndim not in (4, 5):
        return False
    key = (*_key(x1), "layout")
    known = _CACHE.get(model, {}).get(key)
    if known is None:
        costs = {cl: math.inf for cl in (False, True)}
        for _ in range(2):  # the first round also warms each layout's kernels up
            for cl in costs:
                cost = _per_row(model, x1, 1, cl, True)
                costs[cl] = min(costs[cl], math.inf if cost is None else cost)
        known = ForwardPlan(1, bool(costs[True] < costs[False]), False)
        _CACHE.setdefault(model, {})[key] = known
    return known.channels_last


def _probe(model: nn.Module, x1: Tensor, total: int, backward: bool = False) -> ForwardPlan:
    cap = min(total, GPU_MAX_ROWS if x1.device.type != "cpu" else CPU_MAX_ROWS)
    budget = max(_PROBE_SHARE * total, _GRAD_BUDGET_ROWS if backward else _FORWARD_BUDGET_ROWS)
    layouts = (False, True) if x1.ndim in (4, 5) else (False,)
    costs: dict[tuple[int, bool], float] = {}
    best, spent, worse = math.inf, 0, 0
    for size in (2**k for k in range(int(math.log2(cap)) + 1)):  # pass 1: climb
        if costs and spent + len(layouts) * size > budget:
            break
        here = {(size, cl): _per_row(model, x1, size, cl, backward) for cl in layouts}
        here = {k: v for k, v in here.items() if v is not None}
        if not here:  # out of memory: the sizes tried so far are the candidates
            break
        costs.update(here)
        spent += len(layouts) * size
        cost = min(here.values())
        if cost < best:
            best, worse = cost, 0
        else:
            worse += 1
            if worse >= 2 or cost > _MUCH_WORSE * best:
                break
    if not costs:
        return ForwardPlan(1, False, True)
    for cand in sorted(costs, key=costs.get)[:_RETIME]:  # pass 2: the best, once more
        cost = _per_row(model, x1, *cand, backward)
        if cost is not None:
            costs[cand] = min(costs[cand], cost)
    size, cl = min(costs, key=lambda k: (costs[k], k))
    return ForwardPlan(size, cl, True)


def _per_row(
    model: nn.Module, x1: Tensor, size: int, channels_last: bool, backward: bool = False
) -> float | None:
    """Seconds per row of one forward (+ backward) pass of ``size`` copies of ``x1``; None
    when out of memory."""
    try:
        xb = to_layout(x1.expand(size, *x1.shape[1:]).contiguous(), channels_last)
        return (_seconds_grad(model, xb) if backward else _seconds(model, xb)) / size
    except RuntimeError as exc:
        if not is_oom(exc):
            raise
        if x1.device.type == "cuda":
            torch.cuda.empty_cache()
        return None


def _seconds(model: nn.Module, xb: Tensor) -> float:
    cuda = xb.device.type == "cuda"
    with torch.inference_mode():
        if cuda:
            torch.cuda.synchronize(xb.device)
        t0 = time.perf_counter()
        model(xb)
        if cuda:
            torch.cuda.synchronize(xb.device)
        return time.perf_counter() - t0


def _seconds_grad(model: nn.Module, xb: Tensor) -> float:
    """Seconds of a forward pass with grad and the backward pass of the first output to the
    input (as captum's gradient methods do)."""
    cuda = xb.device.type == "cuda"
    xg = xb.detach().clone().requires_grad_(True)  # clone keeps the layout
    with torch.enable_grad():
        if cuda:
            torch.cuda.synchronize(xb.device)
        t0 = time.perf_counter()
        out = model(xg)
        torch.autograd.grad(out[:, 0].sum(), xg)
        if cuda:
            torch.cuda.synchronize(xb.device)
        return time.perf_counter() - t0
