"""SmoothGrad: a wrapper that averages any gradient explainer over noisy copies of the image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from captum.attr import NoiseTunnel
from torch import Tensor, nn

from medlens._errors import param_error

from ._base import _register, explainer_class, grad_input, quiet_captum, reduce_channels, seeded
from ._gradient import GradientExplainer, _check_int

__all__ = ["SmoothGradExplainer"]

NOT_GRADIENT = "SmoothGrad wraps a gradient method; {name!r} is not one. Choose one of: {choices}."
NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


@_register
class SmoothGradExplainer(GradientExplainer):
    """Average a gradient method's maps over Gaussian-noised copies of the image.

    A wrapper, not a flag: ``base`` is any gradient explainer (an instance or a registry
    name), and captum's ``NoiseTunnel`` runs it.

    Parameters
    ----------
    model, head
        See :class:`Explainer`.
    base : str or GradientExplainer
        The gradient method to smooth (default "saliency"); ``**base_kwargs`` configure it
        when it is given by name.
    nt_samples : int
        Noisy samples per image and target.
    noise_level : float
        Noise standard deviation as a fraction of each image's value range (max - min), as
        in the paper (10-20 % works well).
    nt_type : {"smoothgrad", "smoothgrad_sq", "vargrad"}

    Notes
    -----
    Noise comes from torch's global generator seeded per image with ``seed + index`` (and
    restored), so results do not depend on ``batch_size``. With ``base="saliency"`` the
    base keeps captum's default ``abs=True``. ``batch_size=None`` passes the noisy samples
    in the chunk size and layout a forward + backward probe measured fastest, except when an
    image's value count is not a multiple of 16: torch draws normal noise in blocks of 16,
    so only then do chunked draws equal captum's single draw, and otherwise all samples go
    in one pass as in captum's default.

    References
    ----------
    Smilkov et al. SmoothGrad: removing noise by adding noise. arXiv:1706.03825, 2017.
    """

    name = "smoothgrad"
    fidelity_param = "nt_samples"
    auto_chunk_grad = True

    def __init__(
        self,
        model: nn.Module,
        *,
        head: Any | None = None,
        base: Any = "saliency",
        nt_samples: int = 20,
        noise_level: float = 0.15,
        nt_type: str = "smoothgrad",
        **base_kwargs: Any,
    ) -> None:
        super().__init__(model, head=head)
        if isinstance(base, str):
            cls = explainer_class(base)
            if not issubclass(cls, GradientExplainer) or cls is SmoothGradExplainer:
                raise param_error("base", "SmoothGradExplainer", "a gradient method", base)
            base = cls(model, head=head, **base_kwargs)
        if not isinstance(base, GradientExplainer) or isinstance(base, SmoothGradExplainer):
            raise param_error("base", "SmoothGradExplainer", "a gradient explainer", base)
        self.base = base
        self.nt_samples = _check_int(nt_samples, "nt_samples", "SmoothGradExplainer")
        if (
            isinstance(noise_level, bool)
            or not isinstance(noise_level, (int, float))
            or noise_level < 0
        ):
            raise param_error("noise_level", "SmoothGradExplainer", "a float >= 0", noise_level)
        self.noise_level = float(noise_level)
        if nt_type not in NT_TYPES:
            raise param_error("nt_type", "SmoothGradExplainer", f"one of {NT_TYPES}", nt_type)
        self.nt_type = nt_type
        self.signed = base.signed and nt_type == "smoothgrad"

    def _evaluations_per_job(self, n_targets: int, spatial: tuple[int, ...], channels: int) -> int:
        return self.nt_samples * self.base._evaluations_per_job(n_targets, spatial, channels)

    def stdev_for(self, x1: Tensor) -> float:
        """The absolute noise standard deviation for one image (noise_level x range)."""
        return float(self.noise_level * (x1.max() - x1.min()))

    def _attribute(
        self, x: Tensor, targets: Tensor, *, batch_size: int | None, seeds: Sequence[int]
    ) -> Tensor:
        out = []
        per_sample = self.base._evaluations_per_job(1, tuple(x.shape[2:]), x.shape[1])
        nt_batch = None if batch_size is None else max(1, batch_size // per_sample)
        if getattr(self, "_rows_measured", False) and x[0].numel() % 16:
            nt_batch = None  # chunked noise draws would differ from captum's one draw
        self.base._channels_last = getattr(self, "_channels_last", False)
        for b in range(x.shape[0]):
            x1 = x[b : b + 1]
            kwargs = self.base._kwargs(x1, batch_size)
            with seeded(seeds[b]), quiet_captum():
                attr = NoiseTunnel(self.base._captum()).attribute(
                    grad_input(x1),
                    nt_type=self.nt_type,
                    nt_samples=self.nt_samples,
                    nt_samples_batch_size=nt_batch,
                    stdevs=self.stdev_for(x1),
                    target=targets[b : b + 1, 0],
                    **kwargs,
                )
            out.append(reduce_channels(attr))
        return torch.cat(out)[:, None]

    def settings(self) -> dict[str, Any]:
        return {
            "base": self.base.name,
            "base_params": self.base.settings(),
            "nt_samples": self.nt_samples,
            "noise_level": self.noise_level,
            "nt_type": self.nt_type,
        }
