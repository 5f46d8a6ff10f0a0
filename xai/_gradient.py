"""Gradient explainers backed by captum: saliency, input x gradient, guided backprop,
DeepLift, Integrated Gradients and GradientSHAP.

Each class returns exactly what the captum algorithm returns for the same settings, with
channels summed into one map per image and target (up to float32 summation order: with
``batch_size=None`` the methods with many rows per image run in the chunk size and memory
layout a forward + backward probe measured fastest, see ``_chunking``).

Saliency, input x gradient and guided backprop need one forward and one backward pass per
image, and that forward also gives the image's score: they compute the gradient themselves
(what captum's ``Saliency``, ``InputXGradient`` and ``GuidedBackprop`` compute, the gradient
of the selected logit, through clipped ReLU gradients for guided backprop) so that a run
costs one model evaluation per image instead of two. GradientSHAP draws captum's random
numbers in captum's order and then passes its rows in the measured chunk size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from captum.attr import (
    DeepLift,
    GradientShap,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    Saliency,
)
from torch import Tensor, nn

from medlens._errors import param_error

from ._base import Explainer, _register, grad_input, quiet_captum, reduce_channels, seeded
from ._baselines import check_baseline, make_baseline
from ._chunking import to_layout

__all__ = [
    "DeepLiftExplainer",
    "GradientExplainer",
    "GradientShapExplainer",
    "GuidedBackpropExplainer",
    "InputXGradientExplainer",
    "IntegratedGradientsExplainer",
    "SaliencyExplainer",
]


def _check_int(value: Any, name: str, func: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise param_error(name, func, f"an int >= {minimum}", value)
    return int(value)


class GradientExplainer(Explainer):
    """Base of the captum gradient methods: one captum algorithm, one ``attribute`` call.

    Subclasses set ``_algorithm`` and, if needed, extend ``_kwargs`` with the settings that
    captum's ``attribute`` takes. :class:`~medlens.xai.SmoothGradExplainer` wraps any of them.
    """

    _algorithm: ClassVar[type]
    #: rows each job sends through the model per evaluation (DeepLift: input + baseline)
    _rows_per_eval: ClassVar[int] = 1

    def _captum(self) -> Any:
        return self._algorithm(self._net())

    def _net(self) -> nn.Module:
        """The model, behind a channels-last conversion when the probe chose that layout."""
        if getattr(self, "_channels_last", False):
            return _ChannelsLast(self.model)
        return self.model

    def _kwargs(self, x: Tensor, batch_size: int | None) -> dict[str, Any]:
        return {}

    def _evaluations_per_job(self, n_targets: int, spatial: tuple[int, ...], channels: int) -> int:
        return self._rows_per_eval

    def _attribute(
        self, x: Tensor, targets: Tensor, *, batch_size: int | None, seeds: Sequence[int]
    ) -> Tensor:
        with quiet_captum():
            attr = self._captum().attribute(
                grad_input(x), target=targets[:, 0], **self._kwargs(x, batch_size)
            )
        return reduce_channels(attr)[:, None]


class _ChannelsLast(nn.Module):
    """Runs ``model`` on its input converted to the channels-last layout (captum's DeepLift
    hooks the wrapped model's modules as usual; the forward hook counting evaluations on
    ``model`` still sees every row)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, *args: Any) -> Tensor:
        return self.model(to_layout(x, True), *args)


def _input_gradient(model: nn.Module, x: Tensor, pick: Any) -> tuple[Tensor, Tensor]:
    """The input (requiring grad) and the gradient of the picked logit of each row."""
    xg = grad_input(x)  # a layout conversion before this keeps the gradient in that layout
    with torch.enable_grad():
        logits = model(xg)
        sel = logits.gather(1, pick(logits)[:, :1]).sum()
        (g,) = torch.autograd.grad(sel, xg)
    return xg.detach(), g


@_register
class SaliencyExplainer(GradientExplainer):
    """Gradient magnitude of the target logit with respect to the input.

    Parameters
    ----------
    model, head
        See :class:`Explainer`.
    abs : bool
        Take the absolute gradient (captum's default, Simonyan et al.); then the map is
        unsigned.

    References
    ----------
    Simonyan, Vedaldi, Zisserman. Deep Inside Convolutional Networks. ICLR Workshop 2014.
    """

    name = "saliency"
    signed = False
    folds_scoring = True
    _algorithm = Saliency

    def __init__(self, model: nn.Module, *, head: Any | None = None, abs: bool = True) -> None:
        super().__init__(model, head=head)
        if not isinstance(abs, bool):
            raise param_error("abs", "SaliencyExplainer", "a bool", abs)
        self.abs = abs
        self.signed = not abs  # instance attribute: signed only without abs

    def _kwargs(self, x: Tensor, batch_size: int | None) -> dict[str, Any]:
        return {"abs": self.abs}

    def _scored_attribute(self, x: Tensor, pick: Any) -> Tensor:
        _, g = _input_gradient(self.model, self._in_layout(x), pick)
        return reduce_channels(g.abs() if self.abs else g)[:, None]

    def settings(self) -> dict[str, Any]:
        return {"abs": self.abs}


@_register
class InputXGradientExplainer(GradientExplainer):
    """Input times gradient of the target logit.

    References
    ----------
    Shrikumar et al. Not Just a Black Box. arXiv:1605.01713, 2016.
    """

    name = "input_x_gradient"
    folds_scoring = True
    _algorithm = InputXGradient

    def _scored_attribute(self, x: Tensor, pick: Any) -> Tensor:
        xg, g = _input_gradient(self.model, self._in_layout(x), pick)
        return reduce_channels(xg * g)[:, None]


@_register
class GuidedBackpropExplainer(GradientExplainer):
    """Guided backpropagation (ReLU gradients clipped at zero on the way back).

    The model's ReLUs must be ``nn.ReLU`` modules (their backward is overridden, as in
    captum). Like saliency, one forward + backward pass per image gives both the map and
    the score (1 model evaluation per image); with several targets per image captum's
    ``GuidedBackprop`` runs.

    References
    ----------
    Springenberg et al. Striving for Simplicity: The All Convolutional Net. ICLR 2015.
    """

    name = "guided_backprop"
    folds_scoring = True
    _algorithm = GuidedBackprop

    def _scored_attribute(self, x: Tensor, pick: Any) -> Tensor:
        with _guided_relus(self.model):
            _, g = _input_gradient(self.model, self._in_layout(x), pick)
        return reduce_channels(g)[:, None]


@contextlib.contextmanager
def _guided_relus(model: nn.Module) -> Iterator[None]:
    """Inside the block, the gradient reaching each ``nn.ReLU`` module's output is clipped
    at zero before the ReLU's own backward: ``(x > 0) * relu(g)``, which is captum's
    ``relu((x > 0) * g)`` bit for bit (captum clips the ReLU's input gradient instead)."""

    def clip(_m: nn.Module, _i: Any, out: Any) -> None:
        if isinstance(out, Tensor) and out.requires_grad:
            out.register_hook(torch.relu)

    handles = [m.register_forward_hook(clip) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@_register
class DeepLiftExplainer(GradientExplainer):
    """DeepLift (rescale rule) relative to a baseline.

    Parameters
    ----------
    baseline : {"zeros", "black", "mean", "blur"}, float or Tensor
        Reference input (see :func:`medlens.xai.make_baseline`).

    References
    ----------
    Shrikumar, Greenside, Kundaje. Learning Important Features Through Propagating
    Activation Differences. ICML 2017.
    """

    name = "deeplift"
    _algorithm = DeepLift
    _rows_per_eval = 2
    auto_chunk_grad = True

    def __init__(
        self, model: nn.Module, *, head: Any | None = None, baseline: Any = "zeros"
    ) -> None:
        super().__init__(model, head=head)
        self.baseline = check_baseline(baseline, "DeepLiftExplainer")

    def _kwargs(self, x: Tensor, batch_size: int | None) -> dict[str, Any]:
        return {"baselines": make_baseline(self.baseline, x)}

    def settings(self) -> dict[str, Any]:
        return {"baseline": _describe(self.baseline)}


@_register
class IntegratedGradientsExplainer(GradientExplainer):
    """Integrated Gradients along the straight path from a baseline to the image.

    Parameters
    ----------
    baseline : {"zeros", "black", "mean", "blur"}, float or Tensor
        Reference input; "black" is each image's minimum, "blur" a Gaussian-blurred copy,
        "mean" its mean; for CT pass the model-input value of air (-1000 HU).
    n_steps : int
        Integration steps (model evaluations per image and target).
    method : str
        captum's quadrature ("gausslegendre", "riemann_trapezoid", ...).

    Notes
    -----
    ``diagnostics['convergence_delta']`` (N, T) holds captum's completeness error
    ``sum(attributions) - (f(x) - f(baseline))``; large values call for more steps.

    References
    ----------
    Sundararajan, Taly, Yan. Axiomatic Attribution for Deep Networks. ICML 2017.
    """

    name = "integrated_gradients"
    _algorithm = IntegratedGradients
    auto_chunk_grad = True
    fidelity_param = "n_steps"

    def __init__(
        self,
        model: nn.Module,
        *,
        head: Any | None = None,
        baseline: Any = "zeros",
        n_steps: int = 50,
        method: str = "gausslegendre",
    ) -> None:
        super().__init__(model, head=head)
        self.baseline = check_baseline(baseline, "IntegratedGradientsExplainer")
        self.n_steps = _check_int(n_steps, "n_steps", "IntegratedGradientsExplainer")
        self.method = method

    def _evaluations_per_job(self, n_targets: int, spatial: tuple[int, ...], channels: int) -> int:
        return self.n_steps + 2  # the path, plus f(x) and f(baseline) for the delta

    def _kwargs(self, x: Tensor, batch_size: int | None) -> dict[str, Any]:
        return {
            "baselines": make_baseline(self.baseline, x),
            "n_steps": self.n_steps,
            "method": self.method,
            "internal_batch_size": batch_size,
        }

    def _reset(self, n_images: int, n_targets: int) -> None:
        self._delta = np.zeros((n_images, n_targets))
        self._last: Tensor | None = None

    def _attribute(
        self, x: Tensor, targets: Tensor, *, batch_size: int | None, seeds: Sequence[int]
    ) -> Tensor:
        kwargs = self._kwargs(x, batch_size)
        if batch_size is not None and batch_size < x.shape[0]:
            kwargs["internal_batch_size"] = x.shape[0]  # captum needs >= one row per image
        attr, delta = self._captum().attribute(
            grad_input(x), target=targets[:, 0], return_convergence_delta=True, **kwargs
        )
        self._last = delta.detach().cpu()
        return reduce_channels(attr)[:, None]

    def _store(self, rows: Sequence[int], cols: Sequence[int]) -> None:
        for r, c, d in zip(rows, cols, self._last.tolist(), strict=True):
            self._delta[r, c] = d

    def _diagnostics(self) -> dict[str, Any]:
        return {"convergence_delta": self._delta.copy()}

    def settings(self) -> dict[str, Any]:
        return {
            "baseline": _describe(self.baseline),
            "n_steps": self.n_steps,
            "integration_method": self.method,
        }


@_register
class GradientShapExplainer(GradientExplainer):
    """GradientSHAP: expected gradients between random baselines and noisy copies of the image.

    Parameters
    ----------
    baseline : {"zeros", "black", "mean", "blur"}, float or Tensor
        Baseline distribution: a Tensor of shape (K, C, *spatial) gives K baselines to draw
        from; a named baseline gives one per image.
    n_samples : int
        Random samples per image and target (model evaluations).
    stdevs : float
        Standard deviation of the Gaussian noise added to the image samples.

    Notes
    -----
    captum draws the baselines and path positions from numpy's global generator and the
    noise from torch's; medlens seeds both per image (``seed + index``) and restores them.
    medlens makes captum's draws in captum's order (baseline indices, noise, path positions,
    all ``n_samples`` at once) and combines the gradients as captum does, so the maps equal
    captum's ``GradientShap`` for the same seed; only the gradient rows are passed in chunks
    (``batch_size``, or with ``batch_size=None`` the chunk and layout the forward + backward
    probe measured fastest), which changes nothing beyond float32 rounding.

    References
    ----------
    Lundberg, Lee. A Unified Approach to Interpreting Model Predictions. NeurIPS 2017.
    """

    name = "gradient_shap"
    _algorithm = GradientShap
    auto_chunk_grad = True
    fidelity_param = "n_samples"

    def __init__(
        self,
        model: nn.Module,
        *,
        head: Any | None = None,
        baseline: Any = "zeros",
        n_samples: int = 20,
        stdevs: float = 0.0,
    ) -> None:
        super().__init__(model, head=head)
        self.baseline = check_baseline(baseline, "GradientShapExplainer")
        self.n_samples = _check_int(n_samples, "n_samples", "GradientShapExplainer")
        if not isinstance(stdevs, (int, float)) or isinstance(stdevs, bool) or stdevs < 0:
            raise param_error("stdevs", "GradientShapExplainer", "a float >= 0", stdevs)
        self.stdevs = float(stdevs)

    def _evaluations_per_job(self, n_targets: int, spatial: tuple[int, ...], channels: int) -> int:
        return self.n_samples

    def _baselines_for(self, x1: Tensor) -> Tensor:
        if isinstance(self.baseline, Tensor) and self.baseline.ndim == x1.ndim:
            return self.baseline.to(device=x1.device, dtype=x1.dtype)
        return make_baseline(self.baseline, x1)

    def _attribute(
        self, x: Tensor, targets: Tensor, *, batch_size: int | None, seeds: Sequence[int]
    ) -> Tensor:
        out = []
        for b in range(x.shape[0]):
            with seeded(seeds[b]):
                out.append(self._one(x[b : b + 1], targets[b : b + 1, :1], batch_size))
        return torch.cat(out)[:, None]

    def _one(self, x1: Tensor, target: Tensor, rows: int | None) -> Tensor:
        """captum's GradientShap for one image (its draws, in its order, from the global
        generators), with the gradient rows passed ``rows`` at a time."""
        n = self.n_samples
        base = self._baselines_for(x1)
        drawn = base[np.random.choice(base.shape[0], n).tolist()]
        std = torch.tensor(self.stdevs, device=x1.device).repeat((n, *x1.shape[1:]))
        noisy = x1.repeat_interleave(n, dim=0) + torch.normal(0, std)
        coef = torch.tensor(np.random.uniform(0.0, 1.0, n), device=x1.device, dtype=x1.dtype)
        coef = coef.view(n, *([1] * (x1.ndim - 1)))
        scaled = coef * noisy + (1.0 - coef) * drawn
        step = n if rows is None else max(1, rows)
        grads = torch.cat(
            [
                _input_gradient(
                    self.model,
                    self._in_layout(scaled[i : i + step]),
                    lambda logits: target.expand(logits.shape[0], 1),
                )[1]
                for i in range(0, n, step)
            ]
        )
        attr = (noisy - drawn) * grads
        return reduce_channels(attr.view(1, n, *attr.shape[1:]).sum(dim=1) * 1 / n)

    def settings(self) -> dict[str, Any]:
        return {
            "baseline": _describe(self.baseline),
            "n_samples": self.n_samples,
            "stdevs": self.stdevs,
        }


def _describe(spec: Any) -> Any:
    if isinstance(spec, Tensor):
        return f"tensor{tuple(spec.shape)}"
    return spec
