"""Class activation maps: Grad-CAM, Grad-CAM++ and Score-CAM, in 2D and 3D.

One small subclass per method (as in pytorch-grad-cam and MONAI): the base class finds the
target layer, captures its activations with a forward hook that is always removed, and
upsamples the layer-resolution map to the input grid (bilinear / trilinear, half-pixel
centres, i.e. ``align_corners=False`` as OpenCV's ``resize``). Maps are ReLU-ed class
evidence in the layer's units, not min-max rescaled per image.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medlens._errors import ExplanationError, param_error

from ._base import Explainer, _register, find_module, grad_input

__all__ = [
    "CamExplainer",
    "GradCamExplainer",
    "GradCamPlusPlusExplainer",
    "ScoreCamExplainer",
    "find_target_layer",
]

NO_SPATIAL_LAYER = (
    "the model has no layer with a spatial output (expected an activation of shape "
    "(N, C, H, W) or (N, C, D, H, W) with more than one position); CAM methods need one. "
    "Use a gradient or perturbation method instead (e.g. 'integrated_gradients', "
    "'occlusion'), or name a layer with target_layer=..."
)
NOT_SPATIAL = (
    "target layer {name!r} returns shape {shape}; CAM methods need a spatial activation "
    "of shape (N, C, H, W) or (N, C, D, H, W)."
)


def find_target_layer(model: nn.Module, x1: Tensor) -> str:
    """Name of the last module (in execution order) whose output is spatial.

    Spatial means the same number of dimensions as the input and more than one position,
    so global pooling is skipped. A block that finishes after its last layer wins, e.g.
    ``features`` of a ``Sequential`` or ``layer4`` of a ResNet.

    Raises
    ------
    ExplanationError
        If no module has a spatial output (``NO_SPATIAL_LAYER``).
    """
    return _probe_layers(model, x1, None)[0]


def _probe_layers(model: nn.Module, x1: Tensor, name: str | None) -> tuple[str, tuple[int, ...]]:
    """One forward of one row: the target layer (``name`` or detected) and its output shape."""
    seen: list[tuple[str, Any]] = []
    handles = []

    def make(mod_name: str) -> Any:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            seen.append(
                (mod_name, tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__)
            )

        return hook

    try:
        for mod_name, m in model.named_modules():
            if mod_name and (name is None or mod_name == name):
                handles.append(m.register_forward_hook(make(mod_name)))
        with torch.inference_mode():
            model(x1)
    finally:
        for h in handles:
            h.remove()
    if name is not None:
        shapes = [s for n, s in seen if n == name]
        if not shapes:
            raise ExplanationError(f"target layer {name!r} was not called in forward()")
        shape = shapes[-1]
        if not isinstance(shape, tuple) or len(shape) != x1.ndim:
            raise ExplanationError(NOT_SPATIAL.format(name=name, shape=shape))
        return name, shape
    spatial = [
        (n, s)
        for n, s in seen
        if isinstance(s, tuple) and len(s) == x1.ndim and int(np.prod(s[2:])) > 1
    ]
    if not spatial:
        raise ExplanationError(NO_SPATIAL_LAYER)
    return spatial[-1]


class CamExplainer(Explainer):
    """Base of the CAM methods: target-layer detection and activation capture.

    Parameters
    ----------
    model, head
        See :class:`Explainer`.
    target_layer : str, optional
        Dotted module name (from ``model.named_modules()``); default: the last spatial block
        found by :func:`find_target_layer`.
    """

    signed = False

    def __init__(
        self, model: nn.Module, *, head: Any | None = None, target_layer: str | None = None
    ) -> None:
        super().__init__(model, head=head)
        if target_layer is not None and not isinstance(target_layer, str):
            raise param_error(
                "target_layer", type(self).__name__, "a module name (str) or None", target_layer
            )
        if target_layer is not None:
            find_module(model, target_layer)
        self.target_layer = target_layer
        self._layer_used: str | None = None
        self._probed: dict[tuple[int, ...], tuple[str, tuple[int, ...]]] = {}

    def layer_info(self, x: Tensor) -> tuple[str, tuple[int, ...]]:
        """Target layer and its output shape for inputs like ``x``: found once per input
        shape by one probe forward of a single row (which counts as a model evaluation)."""
        key = tuple(x.shape[1:])
        if key not in self._probed:
            self._probed[key] = _probe_layers(self.model, x[:1], self.target_layer)
        self._layer_used = self._probed[key][0]
        return self._probed[key]

    def _setup_evaluations(self, x: Tensor) -> int:
        return 0 if tuple(x.shape[1:]) in self._probed else 1

    def layer_name(self, x: Tensor) -> str:
        """The target layer for inputs like ``x`` (see :meth:`layer_info`)."""
        return self.layer_info(x)[0]

    @contextlib.contextmanager
    def _capture(self, x: Tensor) -> Iterator[list[Tensor]]:
        """Record the target layer's output of every forward inside the block."""
        name = self.layer_name(x)
        store: list[Tensor] = []

        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            store.append(out)

        handle = find_module(self.model, name).register_forward_hook(hook)
        try:
            yield store
        finally:
            handle.remove()

    def _activation(self, store: list[Tensor], x: Tensor) -> Tensor:
        if not store:
            raise ExplanationError(f"target layer {self._layer_used!r} was not called in forward()")
        a = store[-1]
        if not isinstance(a, Tensor) or a.ndim != x.ndim or a.shape[0] != x.shape[0]:
            shape = tuple(a.shape) if isinstance(a, Tensor) else type(a).__name__
            raise ExplanationError(NOT_SPATIAL.format(name=self._layer_used, shape=shape))
        return a

    @staticmethod
    def upsample(cam: Tensor, size: Sequence[int]) -> Tensor:
        """Bilinear (2D) / trilinear (3D) upsampling with half-pixel centres."""
        mode = "bilinear" if len(size) == 2 else "trilinear"
        return F.interpolate(cam, size=tuple(size), mode=mode, align_corners=False)

    def settings(self) -> dict[str, Any]:
        return {"target_layer": self._layer_used or self.target_layer}


class _GradientCam(CamExplainer):
    """Grad-CAM style: channel weights from the gradient of the target logit.

    The forward pass that captures the activations also scores the image, so a run with
    one target per image costs one model evaluation per image.
    """

    folds_scoring = True

    @abc.abstractmethod
    def _weights(self, a: Tensor, g: Tensor) -> Tensor:
        """Channel weights (B, K) from activations and gradients (B, K, *layer_spatial)."""

    def _attribute(
        self, x: Tensor, targets: Tensor, *, batch_size: int | None, seeds: Sequence[int]
    ) -> Tensor:
        return self._scored_attribute(x, lambda _logits: targets)

    def _scored_attribute(self, x: Tensor, pick: Any) -> Tensor:
        shape = x.shape[2:]
        x = grad_input(self._in_layout(x))
        with self._capture(x) as store, torch.enable_grad():
            logits = self.model(x)
            a = self._activation(store, x)
            sel = logits.gather(1, pick(logits)[:, :1]).sum()
            (g,) = torch.autograd.grad(sel, a)
        a = a.detach()
        w = self._weights(a, g.detach())
        w = w.reshape(*w.shape, *([1] * (a.ndim - 2)))
        cam = torch.relu((w * a).sum(dim=1, keepdim=True))
        return self.upsample(cam, shape)


@_register
class GradCamExplainer(_GradientCam):
    """Grad-CAM: activations weighted by the spatially averaged gradient, then ReLU.

    References
    ----------
    Selvaraju et al. Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization. ICCV 2017.
    """

    name = "gradcam"

    def _weights(self, a: Tensor, g: Tensor) -> Tensor:
        return g.mean(dim=tuple(range(2, g.ndim)))


@_register
class GradCamPlusPlusExplainer(_GradientCam):
    """Grad-CAM++: pixel-wise weighted positive gradients (closed form of eq. 19).

    References
    ----------
    Chattopadhay et al. Grad-CAM++: Generalized Gradient-based Visual Explanations for Deep
    Convolutional Networks. WACV 2018.
    """

    name = "gradcam_pp"

    def _weights(self, a: Tensor, g: Tensor) -> Tensor:
        axes = tuple(range(2, g.ndim))
        g2 = g**2
        g3 = g2 * g
        sum_a = a.sum(dim=axes, keepdim=True)
        aij = g2 / (2 * g2 + sum_a * g3 + 1e-6)
        aij = torch.where(g != 0, aij, torch.zeros_like(aij))
        return (torch.relu(g) * aij).sum(dim=axes)


@_register
class ScoreCamExplainer(CamExplainer):
    """Score-CAM: channel weights from the model's score on the image masked by each channel.

    Each activation channel is upsampled (bilinear, corners aligned), min-max scaled to
    [0, 1] and multiplied with the input; the softmax over channels of the target logits
    gives the weights. The masked inputs do not depend on the target, so every target of
    an image shares one set of K forward passes.

    References
    ----------
    Wang et al. Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks. CVPR Workshops 2020.
    """

    name = "scorecam"
    shares_targets = True
    uses_gradients = False
    auto_chunk = True

    def _evaluations_per_job(self, n_targets: int, spatial: tuple[int, ...], channels: int) -> int:
        probe = torch.zeros((1, channels, *spatial), device=self.device)
        return 1 + int(self.layer_info(probe)[1][1])  # one forward for A, one per channel

    def _attribute(
        self, x: Tensor, targets: Tensor, *, batch_size: int | None, seeds: Sequence[int]
    ) -> Tensor:
        with torch.inference_mode():
            with self._capture(x) as store:
                self.model(x)
                a = self._activation(store, x)
            b, k = a.shape[:2]
            spatial = x.shape[2:]
            mode = "bilinear" if len(spatial) == 2 else "trilinear"
            up = F.interpolate(a, size=tuple(spatial), mode=mode, align_corners=True)
            flat = up.reshape(b, k, -1)
            lo = flat.min(dim=-1).values.reshape(b, k, *([1] * len(spatial)))
            hi = flat.max(dim=-1).values.reshape(b, k, *([1] * len(spatial)))
            up = (up - lo) / (hi - lo + 1e-8)
            masked = (x[:, None] * up[:, :, None]).reshape(b * k, *x.shape[1:])
            step = masked.shape[0] if batch_size is None else batch_size
            logits = torch.cat(
                [self._forward_rows(masked[i : i + step]) for i in range(0, masked.shape[0], step)]
            )
            logits = logits.reshape(b, k, -1)
            scores = torch.gather(logits, 2, targets[:, None, :].expand(b, k, targets.shape[1]))
            w = torch.softmax(scores, dim=1)  # (B, K, T)
            cam = torch.relu(torch.einsum("bkt,bk...->bt...", w, a))
            return self.upsample(cam, spatial)
