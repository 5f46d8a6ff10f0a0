"""Occlusion (captum): the drop in the target logit when a sliding patch is replaced."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from captum.attr import Occlusion
from torch import Tensor, nn

from medlens._errors import param_error

from ._base import Explainer, _register, n_windows, reduce_channels
from ._baselines import check_baseline, make_baseline

__all__ = ["OcclusionExplainer"]


@_register
class OcclusionExplainer(Explainer):
    """Slide a patch over the image, replace it by the baseline, record the logit drop.

    Parameters
    ----------
    model, head
        See :class:`Explainer`.
    window : int or tuple of int
        Patch size per spatial axis (all channels are occluded together).
    stride : int or tuple of int
        Step per spatial axis; default half the window.
    baseline : {"zeros", "black", "mean", "blur"}, float or Tensor
        Replacement value (see :func:`medlens.xai.make_baseline`).

    Notes
    -----
    ``batch_size`` is captum's ``perturbations_per_eval`` times the images per chunk, so
    one forward pass never holds more than ``batch_size`` rows (at least one row per image);
    None uses the chunk measured fastest for the model, device and input shape (see
    ``medlens.xai._chunking``). Forward passes run under ``torch.inference_mode``.

    References
    ----------
    Zeiler, Fergus. Visualizing and Understanding Convolutional Networks. ECCV 2014.
    """

    name = "occlusion"
    uses_gradients = False
    auto_chunk = True

    def __init__(
        self,
        model: nn.Module,
        *,
        head: Any | None = None,
        window: int | Sequence[int] = 8,
        stride: int | Sequence[int] | None = None,
        baseline: Any = "zeros",
    ) -> None:
        super().__init__(model, head=head)
        self.window = _spatial_tuple(window, "window")
        self.stride = None if stride is None else _spatial_tuple(stride, "stride")
        self.baseline = check_baseline(baseline, "OcclusionExplainer")

    def _shapes(self, spatial: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        nd = len(spatial)
        window = self.window * nd if len(self.window) == 1 else self.window
        if self.stride is None:
            stride = tuple(max(1, w // 2) for w in window)
        else:
            stride = self.stride * nd if len(self.stride) == 1 else self.stride
        if len(window) != nd or len(stride) != nd:
            raise param_error(
                "window/stride", "OcclusionExplainer", f"{nd} values", (window, stride)
            )
        if any(w > s for w, s in zip(window, spatial, strict=True)):
            raise param_error(
                "window", "OcclusionExplainer", f"at most the image size {tuple(spatial)}", window
            )
        return window, stride

    def _evaluations_per_job(self, n_targets: int, spatial: tuple[int, ...], channels: int) -> int:
        window, stride = self._shapes(spatial)
        return 1 + n_windows(spatial, window, stride)

    def _attribute(
        self, x: Tensor, targets: Tensor, *, batch_size: int | None, seeds: Sequence[int]
    ) -> Tensor:
        window, stride = self._shapes(x.shape[2:])
        total = n_windows(x.shape[2:], window, stride)
        ppe = total if batch_size is None else max(1, batch_size // x.shape[0])
        with torch.inference_mode():
            attr = Occlusion(self._forward_rows).attribute(
                x,
                sliding_window_shapes=(x.shape[1], *window),
                strides=(x.shape[1], *stride),
                baselines=make_baseline(self.baseline, x),
                target=targets[:, 0],
                perturbations_per_eval=ppe,
            )
        return reduce_channels(attr)[:, None]

    def settings(self) -> dict[str, Any]:
        return {"window": self.window, "stride": self.stride, "baseline": str(self.baseline)}


def _spatial_tuple(value: Any, name: str) -> tuple[int, ...]:
    vals = (
        (value,)
        if isinstance(value, int) and not isinstance(value, bool)
        else tuple(value)
        if isinstance(value, (tuple, list))
        else None
    )
    if not vals or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in vals):
        raise param_error(name, "OcclusionExplainer", "an int >= 1 or a tuple of them", value)
    return vals
