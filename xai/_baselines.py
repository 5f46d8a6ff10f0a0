"""Reference inputs ("baselines") for path and perturbation methods.

A baseline is the input that stands for "no evidence". What that means depends on the
modality: black (the darkest value of the image), the image mean, a blurred copy, zeros
in model-input space, or a physical value such as air (-1000 HU for CT) which the caller
converts to model-input units (``preprocess`` of the model wrapper) and passes as a float.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from medlens._errors import param_error

__all__ = ["BASELINES", "make_baseline"]

#: named baselines; a float (in model-input units) or a tensor is also accepted
BASELINES = ("black", "blur", "mean", "zeros")


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur over every spatial axis, reflect padding (2D and 3D)."""
    radius = max(1, int(round(3 * sigma)))
    k = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (k / sigma) ** 2)
    k = k / k.sum()
    nd = x.ndim - 2
    c = x.shape[1]
    out = x
    for axis in range(nd):
        shape = [1] * nd
        shape[axis] = k.numel()
        weight = k.reshape(1, 1, *shape).repeat(c, 1, *([1] * nd))
        pad = [0, 0] * nd
        pad[2 * (nd - 1 - axis)] = radius
        pad[2 * (nd - 1 - axis) + 1] = radius
        size = out.shape[2 + axis]
        mode = "reflect" if size > radius else "replicate"
        padded = F.pad(out, pad, mode=mode)
        conv = F.conv2d if nd == 2 else F.conv3d
        out = conv(padded, weight, groups=c)
    return out


def make_baseline(
    spec: Any, x: Tensor, *, blur_sigma: float = 5.0, func: str = "baseline"
) -> Tensor:
    """Build the baseline for a batch ``x`` of shape (B, C, *spatial).

    Parameters
    ----------
    spec : {"zeros", "black", "mean", "blur"}, float or Tensor
        "zeros": 0 in model-input space (captum's default); "black": each image's
        per-channel minimum; "mean": each image's per-channel mean; "blur": a Gaussian blur
        of the image with ``blur_sigma`` pixels; a float: that constant (e.g. the model-input
        value of -1000 HU); a Tensor broadcastable to ``x``.
    x : Tensor of shape (B, C, *spatial)

    Returns
    -------
    Tensor of the same shape, dtype and device as ``x``.
    """
    if isinstance(spec, Tensor):
        try:
            return torch.broadcast_to(spec.to(device=x.device, dtype=x.dtype), x.shape).clone()
        except RuntimeError as exc:
            raise param_error(
                func,
                "make_baseline",
                f"a tensor broadcastable to {tuple(x.shape)}",
                tuple(spec.shape),
            ) from exc
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return torch.full_like(x, float(spec))
    dims = tuple(range(2, x.ndim))
    if spec == "zeros":
        return torch.zeros_like(x)
    if spec == "black":
        return x.amin(dim=dims, keepdim=True).expand_as(x).clone()
    if spec == "mean":
        return x.mean(dim=dims, keepdim=True).expand_as(x).clone()
    if spec == "blur":
        return _gaussian_blur(x, blur_sigma)
    raise param_error(func, "make_baseline", f"one of {BASELINES}, a float or a Tensor", spec)


def check_baseline(spec: Any, func: str) -> Any:
    """Validate a baseline spec early (at construction); return it unchanged."""
    if isinstance(spec, Tensor) or (isinstance(spec, (int, float)) and not isinstance(spec, bool)):
        return spec
    if spec in BASELINES:
        return spec
    raise param_error("baseline", func, f"one of {BASELINES}, a float or a Tensor", spec)
