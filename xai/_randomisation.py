"""Model-parameter randomisation sanity check (Adebayo et al. 2018).

A heatmap is evidence about a model only if it changes when the model's learned weights are
destroyed. :func:`randomised_models` yields deep copies of a model whose layers are re-initialised
one after the other (cascading, from the output layer down, cumulative) or one at a time
(independent); :func:`sanity_check` explains the same images with every copy and measures how
similar the maps stay. The original model is never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from medlens._errors import ExplanationError, InputDataError, param_error

from ._similarity import _as_maps, rank_correlation, ssim, top_k_overlap

__all__ = [
    "MAPS_INDEPENDENT_OF_WEIGHTS",
    "SANITY_SPEARMAN_THRESHOLD",
    "RandomisedModel",
    "SanityCheckResult",
    "randomisable_layers",
    "randomised_models",
    "sanity_check",
]

#: A method fails when, after randomisation, the median (over cases) Spearman correlation of
#: ``|map|`` with the original maps is still above this value (see :func:`sanity_check`).
SANITY_SPEARMAN_THRESHOLD = 0.5
#: Verdict text of a failed check.
MAPS_INDEPENDENT_OF_WEIGHTS = (
    "maps do not depend on the model's weights: not fit for clinical explanation"
)
#: Verdict text of a passed check.
MAPS_DEPEND_ON_WEIGHTS = "maps change when the model's weights are randomised: passes the check"

NO_LAYERS = (
    "{model} has no layer with its own parameters and a reset_parameters() method, so it cannot "
    "be randomised; sanity checks need a trainable torch model."
)
UNKNOWN_LAYERS = "layers {names} are not randomisable layers of the model; available: {available}"
BAD_EXPLAIN_OUTPUT = (
    "explain_fn returned maps of shape {got}; expected (N, *spatial) = {expected} "
    "(one map per image on the input grid; pick one target and reduce channels before "
    "returning)."
)
IMAGES_NOT_TENSOR = (
    "images of {func} must be a float tensor or array of shape (N, C, *spatial); got {got}."
)

_MODES = ("cascading", "independent")
_SIMILARITIES = ("spearman", "ssim", "top_k")


def _layer_seed(seed: int, position: int) -> int:
    """Seed used to re-initialise the layer at ``position`` in forward order.

    Each layer gets its own seed, ``seed + position``, so a layer receives the same random
    weights in cascading and in independent mode. (Quantus 0.6 MPRT instead re-seeds every layer
    with ``seed + 1``; the agreement test swaps this function to show that is the only
    difference.)
    """
    return seed + position


@dataclass(frozen=True)
class RandomisedModel:
    """One step of a randomisation sequence.

    Attributes
    ----------
    layer : str
        Name (as in ``model.named_modules()``) of the layer randomised at this step.
    randomised : tuple of str
        All layers whose weights are random in ``model`` (cumulative in cascading mode).
    model : torch.nn.Module
        A deep copy of the original model with those layers re-initialised.
    """

    layer: str
    randomised: tuple[str, ...]
    model: nn.Module = field(repr=False)


def randomisable_layers(
    model: nn.Module, example_inputs: torch.Tensor | None = None
) -> list[tuple[str, nn.Module]]:
    """Layers that own parameters and can be re-initialised, in forward order.

    Parameters
    ----------
    model : torch.nn.Module
        The model.
    example_inputs : Tensor, optional
        When given, one forward pass under ``torch.no_grad`` traces the order in which layers are
        first called (layers never called are dropped: randomising them changes nothing). Without
        it, module registration order (``named_modules()``) is used, as in Quantus.

    Returns
    -------
    list of (name, module)
        Modules with parameters of their own and a ``reset_parameters()`` method.
    """
    if not isinstance(model, nn.Module):
        raise param_error("model", "randomisable_layers", "a torch.nn.Module", type(model).__name__)
    layers = [
        (name, m)
        for name, m in model.named_modules()
        if callable(getattr(m, "reset_parameters", None))
        and any(True for _ in m.parameters(recurse=False))
    ]
    if example_inputs is None or not layers:
        return layers
    called: list[int] = []
    by_id = {id(m): i for i, (_, m) in enumerate(layers)}

    def hook(module: nn.Module, _inp: Any, _out: Any) -> None:
        i = by_id[id(module)]
        if i not in called:
            called.append(i)

    handles = [m.register_forward_hook(hook) for _, m in layers]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [layers[i] for i in called]


def _reset(module: nn.Module, seed: int) -> None:
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        module.reset_parameters()


def randomised_models(
    model: nn.Module,
    *,
    mode: str = "cascading",
    seed: int = 0,
    layers: Sequence[str] | None = None,
    example_inputs: torch.Tensor | None = None,
) -> Iterator[RandomisedModel]:
    """Yield deep copies of ``model`` with layers re-initialised, one step per layer.

    Parameters
    ----------
    model : torch.nn.Module
        The trained model; never modified.
    mode : {"cascading", "independent"}
        ``"cascading"``: from the output layer down, cumulatively (step i has the top i+1 layers
        random). ``"independent"``: one layer at a time, all others trained.
    seed : int
        Each layer is re-initialised by its own ``reset_parameters()`` right after
        ``torch.manual_seed(seed + position)`` (position in forward order) inside
        ``torch.random.fork_rng``, so the global RNG state is untouched and a layer gets the same
        random weights in both modes. Weights drawn on CUDA differ from weights drawn on CPU.
    layers : sequence of str, optional
        Names of the layers to randomise (default: every randomisable layer).
    example_inputs : Tensor, optional
        Input used to trace the forward order (see :func:`randomisable_layers`).

    Yields
    ------
    RandomisedModel
        A fresh deep copy per step (safe to keep), in randomisation order.

    Raises
    ------
    ExplanationError
        The model has no randomisable layer, or ``layers`` names unknown layers.

    References
    ----------
    Adebayo J. et al. (2018). Sanity Checks for Saliency Maps. NeurIPS.
    """
    func = "randomised_models"
    if mode not in _MODES:
        raise param_error("mode", func, "one of 'cascading', 'independent'", mode)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise param_error("seed", func, "an int", seed)
    ordered = randomisable_layers(model, example_inputs)
    if not ordered:
        raise ExplanationError(NO_LAYERS.format(model=type(model).__name__))
    position = {name: i for i, (name, _) in enumerate(ordered)}
    if layers is not None:
        unknown = [n for n in layers if n not in position]
        if unknown or not layers:
            raise ExplanationError(
                UNKNOWN_LAYERS.format(names=unknown or "[]", available=list(position))
            )
        selected = [n for n, _ in ordered if n in set(layers)]
    else:
        selected = [n for n, _ in ordered]
    if mode == "cascading":
        selected = selected[::-1]

    def generate() -> Iterator[RandomisedModel]:
        working = copy.deepcopy(model) if mode == "cascading" else None
        done: list[str] = []
        for name in selected:
            target = working if working is not None else copy.deepcopy(model)
            _reset(target.get_submodule(name), _layer_seed(int(seed), position[name]))
            if mode == "cascading":
                done.append(name)
                yield RandomisedModel(name, tuple(done), copy.deepcopy(target))
            else:
                yield RandomisedModel(name, (name,), target)

    return generate()


@dataclass(frozen=True)
class SanityCheckResult:
    """Outcome of a model-parameter randomisation check for one explanation method.

    Attributes
    ----------
    method : str
        Name of the explanation method checked.
    mode : str
        ``"cascading"`` or ``"independent"``.
    layers : tuple of str
        Layer randomised at each step, in randomisation order (rows of the arrays below).
    spearman, ssim, top_k_overlap : ndarray of shape (L, N)
        Similarity of each case's map after each step to its original map (Spearman of
        ``|map|``, SSIM of max-normalised ``|map|``, top-k IoU). A metric not requested is all
        NaN.
    median_spearman : ndarray of shape (L,)
        Median over cases of ``spearman`` per step (NaN cases ignored).
    passed : bool
        False when the maps stay similar (see ``verdict`` and :func:`sanity_check`).
    verdict : str
        :data:`MAPS_INDEPENDENT_OF_WEIGHTS` or :data:`MAPS_DEPEND_ON_WEIGHTS`.
    threshold : float
        The Spearman threshold used.
    n_explanations : int
        Images explained in total (original + every step), i.e. the cost in explain calls x N.
    params : dict
        Exact settings (seed, k, similarities, layers, mode).
    """

    method: str
    mode: str
    layers: tuple[str, ...]
    spearman: np.ndarray = field(repr=False)
    ssim: np.ndarray = field(repr=False)
    top_k_overlap: np.ndarray = field(repr=False)
    median_spearman: np.ndarray
    passed: bool
    verdict: str
    threshold: float
    n_explanations: int
    params: dict = field(default_factory=dict)

    def to_frame(self):
        """Tidy table: one row per (step, case) with layer, step index and each similarity."""
        import pandas as pd

        n_layers, n_cases = self.spearman.shape
        return pd.DataFrame(
            {
                "method": self.method,
                "mode": self.mode,
                "step": np.repeat(np.arange(n_layers), n_cases),
                "layer": np.repeat(np.array(self.layers, dtype=object), n_cases),
                "case": np.tile(np.arange(n_cases), n_layers),
                "spearman": self.spearman.ravel(),
                "ssim": self.ssim.ravel(),
                "top_k_overlap": self.top_k_overlap.ravel(),
            }
        )


def _to_numpy_maps(maps: Any, n: int, spatial: tuple[int, ...]) -> np.ndarray:
    if hasattr(maps, "maps"):  # an ExplanationResult: its (N, T, *spatial) maps
        maps = maps.maps
    if hasattr(maps, "detach"):
        maps = maps.detach().cpu().numpy()
    arr = np.asarray(maps, dtype=np.float64)
    if arr.ndim == len(spatial) + 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.shape != (n, *spatial):
        raise ExplanationError(BAD_EXPLAIN_OUTPUT.format(got=arr.shape, expected=(n, *spatial)))
    return _as_maps(arr, name="explain_fn output", func="sanity_check")


def sanity_check(
    explain_fn: Callable[[nn.Module, torch.Tensor], Any],
    model: nn.Module,
    images: Any,
    *,
    mode: str = "cascading",
    seed: int = 0,
    similarity: Sequence[str] = _SIMILARITIES,
    k: float = 0.1,
    method: str | None = None,
    layers: Sequence[str] | None = None,
    threshold: float = SANITY_SPEARMAN_THRESHOLD,
) -> SanityCheckResult:
    """Model-parameter randomisation test of an explanation method, with a verdict.

    Parameters
    ----------
    explain_fn : callable ``(model, images) -> maps``
        Explains ``images`` (Tensor (N, C, *spatial)) with the given model and returns maps of
        shape (N, *spatial) (Tensor or array; a singleton channel axis is squeezed). It is called
        once with the original model and once per randomisation step, with the same images.
    model : torch.nn.Module
        Trained model; never modified.
    images : Tensor or array of shape (N, C, *spatial)
        Cases to explain (a few dozen is enough for a median).
    mode : {"cascading", "independent"}
        See :func:`randomised_models`.
    seed : int
        Seed of the re-initialisation (see :func:`randomised_models`).
    similarity : sequence of {"spearman", "ssim", "top_k"}
        Similarities to compute; Spearman is always computed because the verdict uses it.
    k : float, default 0.1
        Top-k fraction for the overlap.
    method : str, optional
        Name recorded in the result (default: ``explain_fn.__name__``).
    layers : sequence of str, optional
        Restrict randomisation to these layers.
    threshold : float, default :data:`SANITY_SPEARMAN_THRESHOLD`
        Verdict rule. Cascading: the method fails when the median Spearman of ``|map|`` after
        randomising *all* selected layers is above ``threshold``. Independent: it fails when the
        median stays above ``threshold`` for *every* layer (no layer's weights matter).

    Returns
    -------
    SanityCheckResult

    Raises
    ------
    ExplanationError
        The model cannot be randomised or explain_fn returns maps of the wrong shape.
    MedlensError
        Bad parameter values.

    References
    ----------
    Adebayo J., Gilmer J., Muelly M., Goodfellow I., Hardt M., Kim B. (2018). Sanity Checks for
    Saliency Maps. NeurIPS.
    """
    func = "sanity_check"
    if not callable(explain_fn):
        raise param_error("explain_fn", func, "a callable (model, images) -> maps", explain_fn)
    if not isinstance(model, nn.Module):
        raise param_error("model", func, "a torch.nn.Module", type(model).__name__)
    if isinstance(images, np.ndarray):
        images = torch.as_tensor(images, dtype=torch.float32)
    if not isinstance(images, torch.Tensor) or images.ndim < 3 or images.shape[0] == 0:
        got = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise InputDataError(IMAGES_NOT_TENSOR.format(func=func, got=got))
    sims = tuple(similarity)
    if not sims or any(s not in _SIMILARITIES for s in sims):
        raise param_error("similarity", func, f"a non-empty subset of {_SIMILARITIES}", similarity)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise param_error("threshold", func, "a float in [-1, 1]", threshold)
    if not -1.0 <= float(threshold) <= 1.0:
        raise param_error("threshold", func, "a float in [-1, 1]", threshold)
    if not 0.0 < float(k) <= 1.0:
        raise param_error("k", func, "a float in (0, 1]", k)
    name = method or getattr(explain_fn, "__name__", type(explain_fn).__name__)
    n, spatial = images.shape[0], tuple(images.shape[2:])
    device = next((p.device for p in model.parameters()), images.device)
    images = images.to(device)

    steps = list(
        randomised_models(model, mode=mode, seed=seed, layers=layers, example_inputs=images[:1])
    )
    # every call gets its own copy: explainers may set requires_grad or write into inputs
    original = _to_numpy_maps(explain_fn(model, images.detach().clone()), n, spatial)
    shape = (len(steps), n)
    rho, s_ssim, s_top = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    for i, step in enumerate(steps):
        maps = _to_numpy_maps(explain_fn(step.model, images.detach().clone()), n, spatial)
        rho[i] = rank_correlation(original, maps)
        if "ssim" in sims:
            s_ssim[i] = ssim(original, maps)
        if "top_k" in sims:
            s_top[i] = top_k_overlap(original, maps, k=k)
    median = np.array([np.nanmedian(r) if np.isfinite(r).any() else np.nan for r in rho])
    if mode == "cascading":
        failed = bool(median[-1] > threshold)
    else:
        failed = bool(np.all(median > threshold))
    return SanityCheckResult(
        method=name,
        mode=mode,
        layers=tuple(s.layer for s in steps),
        spearman=rho,
        ssim=s_ssim,
        top_k_overlap=s_top,
        median_spearman=median,
        passed=not failed,
        verdict=MAPS_INDEPENDENT_OF_WEIGHTS if failed else MAPS_DEPEND_ON_WEIGHTS,
        threshold=float(threshold),
        n_explanations=n * (len(steps) + 1),
        params={
            "mode": mode,
            "seed": int(seed),
            "similarity": sims,
            "k": float(k),
            "layers": tuple(s.layer for s in steps),
            "threshold": float(threshold),
        },
    )
