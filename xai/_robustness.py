"""Robustness of explanations to small input noise: max-sensitivity (Yeh et al. 2019)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from medlens._errors import ExplanationError, param_error

from ._faithfulness import _check_images, _check_int
from ._similarity import _as_maps, _warn_undefined

__all__ = ["MaxSensitivityResult", "max_sensitivity"]

BAD_EXPLAIN_OUTPUT = (
    "explain_fn returned maps of shape {got}; expected (B, *spatial) = {expected} for a batch "
    "of B images."
)


@dataclass(frozen=True)
class MaxSensitivityResult:
    """Max-sensitivity per case.

    Attributes
    ----------
    values : ndarray of shape (N,)
        ``max_j ||e(x + d_j) - e(x)||_2 / ||e(x)||_2``; NaN (+ warning) where ``e(x)`` is zero.
    per_sample : ndarray of shape (N, n_samples)
        The ratio for each noise draw.
    radius : float
        Half-width r of the L-infinity ball the noise is drawn from (input units).
    n_samples : int
    n_explanations : int
        Images explained (N * n_samples, plus N when ``maps`` was not given).
    params : dict
    """

    values: np.ndarray
    per_sample: np.ndarray = field(repr=False)
    radius: float
    n_samples: int
    n_explanations: int
    params: dict = field(default_factory=dict)


def _to_maps(out: Any, b: int, spatial: tuple[int, ...]) -> np.ndarray:
    if hasattr(out, "maps"):  # an ExplanationResult: its (N, T, *spatial) maps
        out = out.maps
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    arr = np.asarray(out, dtype=np.float64)
    if arr.ndim == len(spatial) + 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.shape != (b, *spatial):
        raise ExplanationError(BAD_EXPLAIN_OUTPUT.format(got=arr.shape, expected=(b, *spatial)))
    return _as_maps(arr, name="explain_fn output", func="max_sensitivity")


def max_sensitivity(
    explain_fn: Callable[[nn.Module, torch.Tensor], Any],
    model: nn.Module,
    images: Any,
    *,
    radius: float = 0.02,
    n_samples: int = 10,
    seed: int = 0,
    batch_size: int | None = None,
    maps: Any = None,
) -> MaxSensitivityResult:
    """Largest relative change of the explanation under uniform input noise.

    For each case, ``n_samples`` noise tensors ``d ~ U[-r, r]`` (independent per pixel and
    channel, i.e. uniform in the L-infinity ball of radius r) are drawn from
    ``numpy.random.default_rng(seed)`` in sample-major order (sample j for all cases, then
    sample j+1), and ``||e(x + d) - e(x)||_2 / ||e(x)||_2`` is maximised over the samples
    (Frobenius norm over all pixels of the map).

    Parameters
    ----------
    explain_fn : callable ``(model, images) -> maps``
        Explains a batch (B, C, *spatial) and returns maps (B, *spatial).
    model : torch.nn.Module
    images : Tensor or array of shape (N, C, *spatial)
    radius : float, default 0.02
        Noise half-width in input units (choose it relative to the input scale).
    n_samples : int, default 10
    seed : int
    batch_size : int, optional
        Most perturbed images per explain_fn call (default: all N * n_samples at once).
    maps : array of shape (N, *spatial), optional
        Precomputed ``e(x)``; computed with ``explain_fn`` when omitted.

    Returns
    -------
    MaxSensitivityResult

    Raises
    ------
    ExplanationError
        explain_fn returns maps of the wrong shape.
    InputDataError, MedlensError
        Bad inputs or parameters.

    References
    ----------
    Yeh C.-K., Hsieh C.-Y., Suggala A., Inouye D.I., Ravikumar P. (2019). On the (In)fidelity
    and Sensitivity of Explanations. NeurIPS.
    """
    func = "max_sensitivity"
    if not callable(explain_fn):
        raise param_error("explain_fn", func, "a callable (model, images) -> maps", explain_fn)
    images = _check_images(images, func)
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not radius > 0:
        raise param_error("radius", func, "a float > 0", radius)
    n_samples = _check_int(n_samples, "n_samples", func, 1)
    seed = _check_int(seed, "seed", func, 0)
    n, spatial = images.shape[0], tuple(images.shape[2:])
    total = n * n_samples
    if batch_size is None:
        batch_size = total
    batch_size = _check_int(batch_size, "batch_size", func, 1)
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else images.device
    x = images.to(device)
    n_expl = 0
    if maps is None:
        base = np.concatenate(
            [
                _to_maps(
                    explain_fn(model, x[i : i + batch_size].detach().clone()),
                    len(x[i : i + batch_size]),
                    spatial,
                )
                for i in range(0, n, batch_size)
            ]
        )
        n_expl += n
    else:
        base = _as_maps(maps, name="maps", func=func)
        if base.shape != (n, *spatial):
            raise ExplanationError(
                BAD_EXPLAIN_OUTPUT.format(got=base.shape, expected=(n, *spatial))
            )
    base_flat = base.reshape(n, -1)
    denom = np.linalg.norm(base_flat, axis=1)
    rng = np.random.default_rng(seed)
    per_sample = np.full((n, n_samples), np.nan)
    sample_shape = tuple(images.shape[1:])
    for start in range(0, total, batch_size):
        idx = np.arange(start, min(start + batch_size, total))
        noise = rng.uniform(-radius, radius, size=(idx.size, *sample_shape))
        case = idx % n
        xp = x[torch.as_tensor(case, device=device)] + torch.as_tensor(
            noise, dtype=x.dtype, device=device
        )
        e = _to_maps(explain_fn(model, xp), idx.size, spatial).reshape(idx.size, -1)
        n_expl += idx.size
        diff = np.linalg.norm(e - base_flat[case], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_sample[case, idx // n] = diff / denom[case]
    zero = denom == 0
    per_sample[zero] = np.nan
    _warn_undefined("max-sensitivity", zero, "the explanation of the unperturbed image is zero")
    values = np.full(n, np.nan)
    values[~zero] = per_sample[~zero].max(axis=1)
    return MaxSensitivityResult(
        values=values,
        per_sample=per_sample,
        radius=float(radius),
        n_samples=n_samples,
        n_explanations=n_expl,
        params={
            "radius": float(radius),
            "n_samples": n_samples,
            "seed": seed,
            "batch_size": batch_size,
            "norm": "fro",
            "noise": "uniform_linf",
        },
    )
