"""Gradient explainers backed by captum: saliency, input x gradient, guided backprop,
DeepLift, Integrated Gradients and GradientSHAP.

Each class returns exactly what the captum algorithm returns for the same settings, with
channels summed into one map per image and target (up to float32 summation order: with
``batch_size=None`` the methods with many rows per image run in the chunk size and memory
layout a forward + backward probe measured fastest, see ``_chunking``).

Saliency and input x gradient need one forward and one backward pass per image, and that
forward also gives the image's score: they compute the gradient themselves (what captum's
``Saliency`` and ``InputXGradient`` compute, the gradient of the selected logit) so that a
run costs one model evaluation per image instead of two.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    xg = grad_input(x)
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
        _, g = _input_gradient(self.model, x, pick)
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
        xg, g = _input_gradient(self.model, x, pick)
        return reduce_channels(xg * g)[:, None]


@_register
class GuidedBackpropExplainer(GradientExplainer):
    """Guided backpropagation (ReLU gradients clipped at zero on the way back).

    The model's ReLUs must be ``nn.ReLU`` modules (captum overrides their backward).

    References
    ----------
    Springenberg et al. Striving for Simplicity: The All Convolutional Net. ICLR 2015.
    """

    name = "guided_backprop"
    _algorithm = GuidedBackprop


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
    captum's GradientShap sends an image's ``n_samples`` rows through the model in one pass
    and draws its random numbers per pass, so medlens does not split them (that would change
    the draws); with ``batch_size=None`` only the memory layout and the images per call
    follow the forward + backward probe.

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
            x1 = x[b : b + 1]
            with seeded(seeds[b]), quiet_captum():
                attr = self._captum().attribute(
                    grad_input(x1),
                    baselines=self._baselines_for(x1),
                    n_samples=self.n_samples,
                    stdevs=self.stdevs,
                    target=targets[b : b + 1, 0],
                )
            out.append(reduce_channels(attr))
        return torch.cat(out)[:, None]

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
