"""The explainer base class, its registry and the result type.

Every method is one small subclass of :class:`Explainer` that implements one hook,
``_attribute``. The base class validates the input once, resolves targets (index, class
name, predicted class, every positive finding of a multi-label head), chunks the work by
``batch_size`` (for the forward-only perturbation methods and the gradient methods with many
rows per image, ``batch_size=None`` means the chunk and layout measured fastest for this
model, device and input shape, see ``_chunking``), scores the images in the forward pass that
computes the gradient where one pass serves both (saliency, input x gradient, Grad-CAM), moves
tensors to the model's device, halves the chunk on a CUDA out-of-memory error, counts model
evaluations, restores hooks and train/eval state even when an exception is raised, and
packs a frozen :class:`ExplanationResult`.
"""

from __future__ import annotations

import abc
import contextlib
import difflib
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from medlens._errors import ExplanationError, InputDataError, param_error

from ._chunking import backward_plan, forward_plan, is_oom, to_layout

__all__ = [
    "CostPlan",
    "Explainer",
    "ExplanationResult",
    "get_explainer",
    "list_explainers",
]

UNKNOWN_METHOD = "unknown explanation method {name!r}; {hint}available: {available}"
BAD_IMAGES_NDIM = (
    "images must be a batch of shape (N, C, H, W) or (N, C, D, H, W); got shape {shape}. "
    "Add the batch axis with images[None] or the channel axis with images[:, None]."
)
BAD_IMAGES_DTYPE = (
    "images must hold floating-point values; got dtype {dtype}. Convert with .float()."
)
NONFINITE_IMAGES = "images contain {n} NaN or infinite values; fix the preprocessing first."
EMPTY_IMAGES = "images is an empty batch (shape {shape}); pass at least one image."
UNSUPPORTED_DIMS = (
    "method {method!r} explains {supported} images; got a {got}D input. "
    "Use a gradient, CAM or occlusion method for volumes."
)
BAD_TARGET = (
    "target {target!r} is not an output of this model; expected a class index in "
    "[0, {n}) or one of the class names {names}."
)
NEGATIVE_CLASS_SIGMOID = (
    "target {target!r} is the negative class of a single-logit binary_sigmoid head; maps "
    "are computed for the positive class {positive!r} (logit 0). Explain the positive class "
    "and read negative attributions as evidence for {target!r}."
)
TARGET_SHAPE = (
    "a per-image target array must have shape (N, T) = ({n}, T); got shape {shape}. "
    "Use a scalar or a list of targets to explain the same classes for every image."
)
HEAD_MISMATCH = (
    "the model returns {got} outputs per image but the head {type!r} expects {expected} "
    "(class_names={names}); check the model and the head configuration."
)
BAD_OUTPUT = (
    "the model must return logits of shape (N, K); got shape {shape}. Wrap the model so that "
    "forward() returns one row of logits per image."
)
OOM_AT_ONE = (
    "out of device memory with a chunk of a single row ({detail}); use a smaller image, a "
    "smaller model or the CPU."
)
INVERSE_FAILED = "the inverse map function failed on map {index}: {error}"

_REGISTRY: dict[str, type[Explainer]] = {}


def _register(cls: type[Explainer]) -> type[Explainer]:
    """Class decorator that adds an explainer to the registry under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise RuntimeError(f"explainer {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def list_explainers() -> list[str]:
    """Names of every registered explanation method, sorted."""
    return sorted(_REGISTRY)


def get_explainer(name: str, model: nn.Module, **kwargs: Any) -> Explainer:
    """Build the explainer registered under ``name``.

    Parameters
    ----------
    name : str
        A name from :func:`list_explainers`, e.g. ``"gradcam"``.
    model : torch.nn.Module
        The classifier; takes (N, C, H, W) or (N, C, D, H, W), returns logits (N, K).
    **kwargs
        Settings of that method (see its class), plus ``head``.

    Raises
    ------
    ExplanationError
        If the name is unknown; the message suggests the closest registered name.
    """
    cls = explainer_class(name)
    return cls(model, **kwargs)


def explainer_class(name: str) -> type[Explainer]:
    """The class registered under ``name`` (see :func:`get_explainer`)."""
    if not isinstance(name, str) or name not in _REGISTRY:
        close = difflib.get_close_matches(str(name).lower(), list(_REGISTRY), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ExplanationError(
            UNKNOWN_METHOD.format(name=name, hint=hint, available=", ".join(list_explainers()))
        )
    return _REGISTRY[name]


@dataclass(frozen=True)
class CostPlan:
    """What a run will cost before it starts.

    Attributes
    ----------
    method : str
        Registry name.
    evaluations : int
        Model evaluations (image rows through forward, each with one backward for gradient
        methods), including the one forward that scores the images (saliency, input x
        gradient and the gradient CAMs with one target per image score each image in the
        pass that computes its map, so they need no separate one).
    rows_per_forward : int
        Most rows in one forward pass with the requested ``batch_size``.
    peak_memory_bytes : int
        Estimate of the peak memory of one forward (and backward) pass: activation bytes per
        row measured by one probe forward, times rows per forward (times 2 with gradients),
        plus the parameters.
    params : Mapping
        The settings the plan is for.
    """

    method: str
    evaluations: int
    rows_per_forward: int
    peak_memory_bytes: int
    params: Mapping[str, Any]


@dataclass(frozen=True)
class ExplanationResult:
    """Maps that explain a batch of images, with everything needed to reproduce them.

    Attributes
    ----------
    method : str
        Registry name of the method.
    maps : ndarray of shape (N, T, *spatial), float32
        Attribution maps in model-input space, one per image and target; channels are summed.
        Signed for signed methods (positive = evidence for the target).
    maps_abs : ndarray of shape (N, T, *spatial), float32
        ``abs(maps)``; identical to ``maps`` for unsigned methods (Grad-CAM, saliency).
    signed : bool
        Whether ``maps`` can be negative.
    targets : ndarray of shape (N, T), int64
        Output index explained by each map.
    target_names : tuple of tuple of str
        Class names of the targets (the index as text when no head is given).
    scores : ndarray of shape (N, T), float64
        Model score of each target: the head's probability (sigmoid or softmax), or the raw
        output when no head is given.
    params : Mapping
        Exact settings, including ``seed``, ``batch_size`` and any OOM halving
        (``batch_size_used``).
    evaluations : int
        Model evaluations used (image rows through forward), measured by a forward hook.
    seconds : float
        Wall-clock time of the run.
    maps_original : tuple of ndarray or None
        ``maps[i]`` mapped back to image i's original pixel grid by the ``inverse`` given
        to :meth:`Explainer.explain`, each of shape (T, *original_spatial); None otherwise.
    diagnostics : Mapping
        Method-specific numbers, e.g. Integrated Gradients' ``convergence_delta`` (N, T) or
        LIME's ``r2`` and ``segments``.
    """

    method: str
    maps: np.ndarray
    maps_abs: np.ndarray
    signed: bool
    targets: np.ndarray
    target_names: tuple[tuple[str, ...], ...]
    scores: np.ndarray
    params: Mapping[str, Any]
    evaluations: int
    seconds: float
    maps_original: tuple[np.ndarray, ...] | None = None
    diagnostics: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


# ---------------------------------------------------------------------------- helpers
def check_images(images: Any, *, method: str = "explain") -> Tensor:
    """Validate a batch of images once, at the edge; return a float tensor."""
    if isinstance(images, np.ndarray):
        if not np.issubdtype(images.dtype, np.floating):
            raise InputDataError(BAD_IMAGES_DTYPE.format(dtype=images.dtype))
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, Tensor):
        raise param_error("images", method, "a Tensor or ndarray", type(images).__name__)
    if images.ndim not in (4, 5):
        raise InputDataError(BAD_IMAGES_NDIM.format(shape=tuple(images.shape)))
    if not images.is_floating_point():
        raise InputDataError(BAD_IMAGES_DTYPE.format(dtype=images.dtype))
    if images.shape[0] == 0 or images.numel() == 0:
        raise InputDataError(EMPTY_IMAGES.format(shape=tuple(images.shape)))
    bad = int((~torch.isfinite(images)).sum())
    if bad:
        raise InputDataError(NONFINITE_IMAGES.format(n=bad))
    return images.detach()


def head_scores(logits: Tensor, head: Any | None) -> Tensor:
    """The head's probabilities (sigmoid or softmax) or, without a head, the logits."""
    if head is None:
        return logits
    if head.type in ("binary_sigmoid", "multilabel"):
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for parameter-free models)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each one's flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    if not any(flag for _, flag in flags):  # already in eval mode: nothing to switch (the
        yield  # per-module set-and-restore costs ~10 us per module on every run)
        return
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's and numpy's global generators inside the block, then restore them.

    captum draws SmoothGrad noise from torch's global generator and GradientShap's
    baselines from numpy's; seeding both per image makes maps reproducible without leaking
    state to the caller.
    """
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(np_state)


@contextlib.contextmanager
def quiet_captum() -> Iterator[None]:
    """Silence captum's notices that it sets (and later removes) hooks on activations."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Setting forward, backward hooks", category=UserWarning
        )
        warnings.filterwarnings(
            "ignore", message="Setting backward hooks on ReLU", category=UserWarning
        )
        yield


def grad_input(x: Tensor) -> Tensor:
    """A detached copy of ``x`` that requires grad (captum otherwise warns and sets it)."""
    return x.detach().clone().requires_grad_(True)


def reduce_channels(attr: Tensor) -> Tensor:
    """Sum attributions (B, C, *spatial) over channels to (B, *spatial)."""
    return attr.sum(dim=1)


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (dotted path), with a did-you-mean error."""
    modules = dict(model.named_modules())
    if name not in modules:
        names = [n for n in modules if n]
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ExplanationError(
            f"the model has no module named {name!r}; {hint}modules: {', '.join(names[:40])}"
        )
    return modules[name]


class _Counter:
    """Counts rows through the model (a forward hook on the output, which also sees the
    input+baseline batches that captum's DeepLift builds in its own pre-hook)."""

    def __init__(self) -> None:
        self.rows = 0
        self.paused = False  # while the chunk-size probe runs

    def __call__(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        if not self.paused and isinstance(out, Tensor) and out.ndim >= 1:
            self.rows += int(out.shape[0])


_is_oom = is_oom


# ---------------------------------------------------------------------------- base class
class Explainer(abc.ABC):
    """One explanation method behind the common API.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier taking (N, C, H, W) or (N, C, D, H, W) and returning logits (N, K). A
        model that normalises inside ``forward`` works as is.
    head : medlens.config.HeadConfig, optional
        What the outputs mean; lets targets be given by class name and scores be reported
        as probabilities. Default target without a head: the largest output (the single
        logit of a one-output model).
    """

    name: ClassVar[str]
    #: maps can be negative
    signed: ClassVar[bool] = True
    #: spatial dimensionalities supported (2 = images, 3 = volumes)
    spatial_dims: ClassVar[tuple[int, ...]] = (2, 3)
    #: one set of model evaluations serves every target of an image (perturbation methods)
    shares_targets: ClassVar[bool] = False
    #: uses gradients (for the memory estimate)
    uses_gradients: ClassVar[bool] = True
    #: the settings knob that trades fidelity for cost, used by :meth:`afford`
    fidelity_param: ClassVar[str | None] = None
    #: forward-only perturbation method: ``batch_size=None`` uses the measured chunk size
    auto_chunk: ClassVar[bool] = False
    #: gradient method with many rows per image: ``batch_size=None`` uses the chunk size and
    #: layout measured fastest for forward + backward passes
    auto_chunk_grad: ClassVar[bool] = False
    #: one forward + backward per image whose forward also scores it (see
    #: ``_scored_attribute``): one model evaluation per image instead of two
    folds_scoring: ClassVar[bool] = False

    def __init__(self, model: nn.Module, *, head: Any | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise param_error(
                "model", type(self).__name__, "a torch.nn.Module", type(model).__name__
            )
        self.model = model
        self.head = head

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def _attribute(
        self, x: Tensor, targets: Tensor, *, batch_size: int | None, seeds: Sequence[int]
    ) -> Tensor:
        """Maps for a chunk of jobs.

        Parameters
        ----------
        x : Tensor of shape (B, C, *spatial)
            Images on the model's device.
        targets : Tensor of shape (B, T), int64
            Targets per image (T = 1 unless ``shares_targets``).
        batch_size : int or None
            Most rows per forward pass.
        seeds : sequence of int
            One seed per image of the chunk (``seed + index in the batch``).

        Returns
        -------
        Tensor of shape (B, T, *spatial)
        """

    def _evaluations_per_job(self, n_targets: int, spatial: tuple[int, ...], channels: int) -> int:
        """Model evaluations for one job (one image with its targets)."""
        return 1

    def _scored_attribute(self, x: Tensor, pick: Callable[[Tensor], Tensor]) -> Tensor:
        """Maps for a chunk of images from one forward pass that also scores them.

        For methods with ``folds_scoring``: run the model on ``x`` with grad, call
        ``pick(logits)`` to get the targets (B, 1) on the model's device (it checks and
        records the logits), and return the maps (B, 1, *spatial) for those targets.
        """
        raise NotImplementedError

    def _setup_evaluations(self, x: Tensor) -> int:
        """Evaluations spent once per input shape before the jobs (e.g. a layer probe)."""
        return 0

    def settings(self) -> dict[str, Any]:
        """The method's settings, recorded in ``params``."""
        return {}

    def _diagnostics(self) -> dict[str, Any]:
        """Per-run diagnostics collected by ``_attribute`` (reset at each run)."""
        return {}

    def _reset(self, n_images: int, n_targets: int) -> None:
        """Called once before a run."""
        return None

    def _store(self, rows: Sequence[int], cols: Sequence[int]) -> None:
        """Called after each chunk with the (image, target) positions it filled."""
        return None

    def _forward_rows(self, rows: Tensor) -> Tensor:
        """One forward pass of perturbed rows (call under ``torch.inference_mode``), in the
        memory layout measured fastest for this run (see ``_chunking``)."""
        return self.model(self._in_layout(rows))

    def _in_layout(self, x: Tensor) -> Tensor:
        """``x`` in the memory layout measured fastest for this run (see ``_chunking``)."""
        return to_layout(x, getattr(self, "_channels_last", False))

    # ------------------------------------------------------------------ public API
    @property
    def device(self) -> torch.device:
        """The device of the model."""
        return model_device(self.model)

    def explain(
        self,
        images: Any,
        *,
        target: Any = None,
        batch_size: int | None = None,
        seed: int = 0,
        inverse: Callable[[np.ndarray], np.ndarray] | Sequence[Callable] | None = None,
    ) -> ExplanationResult:
        """Explain a batch of images.

        Parameters
        ----------
        images : Tensor or ndarray of shape (N, C, H, W) or (N, C, D, H, W)
            Model inputs (after preprocessing).
        target : None, int, str, sequence of int/str, or array of shape (N, T)
            What to explain. None: the predicted class; for a single-logit binary model the
            positive class; for a multi-label head every positive finding (probability >=
            0.5; the top finding when none is positive), batched in one call. A scalar or a
            list applies to every image; an (N, T) array gives per-image targets.
        batch_size : int, optional
            Most images or perturbations per forward pass. None: for the forward-only
            perturbation methods (LIME, SHAP, occlusion, Score-CAM) the chunk that a short
            probe, timed once per model, device and input shape in this process, found
            cheapest per row; for the gradient methods with many rows per image (Integrated
            Gradients, SmoothGrad, GradientSHAP, DeepLift) the same with forward + backward
            passes, once the job has enough rows to be worth a probe, and likewise for the
            methods with one forward + backward pass per image (saliency, input x
            gradient, guided backprop, Grad-CAM, Grad-CAM++) over the images of the
            call, which below :data:`~medlens.xai._chunking.PROBE_MIN_ROWS_GRAD` images
            go in one pass in the layout a single-row probe found faster. Results do not
            depend on it beyond float32 rounding of the model outputs (the measured choice
            is kept for the process, so repeated runs are bit-identical); the chunk used is
            recorded in ``params['batch_size_used']`` and the layout in
            ``params['channels_last']``. On a CUDA out-of-memory error it is halved and the
            run continues (also recorded in ``params['batch_size_used']``).
        seed : int
            Seeds everything random; image i of the batch uses ``seed + i``.
        inverse : callable or sequence of callables, optional
            Maps a (T, *spatial) array in model-input space back to the original pixel grid
            (e.g. the model wrapper's ``preprocess.invert_map``); one callable for all
            images or one per image. Fills ``maps_original``.

        Returns
        -------
        ExplanationResult

        Raises
        ------
        InputDataError
            Bad images or targets.
        ExplanationError
            The method cannot explain this model or input.
        """
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise param_error("batch_size", "explain", "an int >= 1 or None", batch_size)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise param_error("seed", "explain", "an int", seed)
        seed = int(seed)
        x_all = check_images(images, method=f"{self.name}.explain")
        self._check_dims(x_all)
        start = time.perf_counter()
        device = self.device
        counter = _Counter()
        handle = self.model.register_forward_hook(counter)
        self._channels_last = False
        try:
            with eval_mode(self.model):
                folded = None
                if self._folds(target):
                    folded = self._explain_folded(x_all, target, batch_size, device, counter)
                if folded is not None:
                    scores_all, targets, maps, used = folded
                else:
                    scores_all, targets = self._resolve(x_all, target, batch_size, device)
                    n, t = targets.shape
                    self._reset(n, t)
                    maps, used = self._run_jobs(x_all, targets, batch_size, seed, device, counter)
        finally:
            handle.remove()
        maps_np = maps.numpy().astype(np.float32, copy=False)
        idx = torch.as_tensor(targets)
        scores = torch.gather(scores_all, 1, idx).numpy().astype(np.float64)
        params = {
            **self.settings(),
            "method": self.name,
            "seed": seed,
            "batch_size": batch_size,
            "batch_size_used": used,
            **(
                {"channels_last": self._channels_last}
                if self.auto_chunk or self.auto_chunk_grad or self.folds_scoring
                else {}
            ),
            "score": "logit" if self.head is None else "probability",
        }
        original = None
        if inverse is not None:
            original = self._invert(maps_np, inverse)
        return ExplanationResult(
            method=self.name,
            maps=maps_np,
            maps_abs=np.abs(maps_np) if self.signed else maps_np.copy(),
            signed=self.signed,
            targets=targets.astype(np.int64),
            target_names=tuple(tuple(self._name_of(int(k)) for k in row) for row in targets),
            scores=scores,
            params=MappingProxyType(params),
            evaluations=counter.rows,
            seconds=time.perf_counter() - start,
            maps_original=original,
            diagnostics=MappingProxyType(self._diagnostics()),
        )

    def plan(self, images: Any, *, target: Any = None, batch_size: int | None = None) -> CostPlan:
        """State the model evaluations and peak memory of :meth:`explain` before running it.

        One probe forward of a single row measures activation bytes per row; the default
        target is resolved by one forward of the batch (counted in ``evaluations``).
        """
        x = check_images(images, method=f"{self.name}.plan")
        self._check_dims(x)
        device = self.device
        with torch.no_grad(), eval_mode(self.model):
            _, targets = self._resolve(x, target, batch_size, device)
            act = _activation_bytes_per_row(self.model, x[:1].to(device))
        n, t = targets.shape
        spatial = tuple(x.shape[2:])
        setup = self._setup_evaluations(x)
        per_job = self._evaluations_per_job(t if self.shares_targets else 1, spatial, x.shape[1])
        jobs = n if self.shares_targets else n * t
        folds = self._folds(target)
        scoring = 0 if folds else n
        evaluations = scoring + setup + jobs * per_job
        if batch_size is None and (self.auto_chunk or self.auto_chunk_grad or folds):
            with eval_mode(self.model):
                rows = forward_plan(
                    self.model,
                    x[:1].to(device),
                    jobs * per_job,
                    backward=self.auto_chunk_grad or folds,
                ).rows
        elif batch_size is None:
            rows = evaluations - scoring
        elif folds:  # whole images per pass
            rows = min(batch_size, n)
        else:
            rows = min(batch_size, max(per_job, 1))
        rows = max(1, rows)
        params_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        factor = 2 if self.uses_gradients else 1
        peak = int(rows * act * factor + params_bytes)
        return CostPlan(
            method=self.name,
            evaluations=int(evaluations),
            rows_per_forward=int(rows),
            peak_memory_bytes=peak,
            params=MappingProxyType({**self.settings(), "batch_size": batch_size}),
        )

    def afford(
        self,
        images: Any,
        *,
        evaluations: int | None = None,
        seconds: float | None = None,
        target: Any = None,
        batch_size: int | None = None,
    ) -> dict[str, Any]:
        """The highest fidelity a budget of model evaluations or seconds can buy.

        Seconds are converted to evaluations with the per-row time of one timed forward of
        ``batch_size`` rows (or 16). Returns ``{fidelity_param: value, 'evaluations': int}``;
        the value is None when even the cheapest setting is over budget, and ``{}`` for
        methods whose cost is fixed.
        """
        if (evaluations is None) == (seconds is None):
            raise param_error("evaluations/seconds", "afford", "exactly one budget", None)
        x = check_images(images, method=f"{self.name}.afford")
        if seconds is not None:
            if not seconds > 0:
                raise param_error("seconds", "afford", "a number > 0", seconds)
            rows = batch_size or 16
            probe = x[:1].to(self.device).expand(rows, *x.shape[1:]).contiguous()
            with torch.no_grad(), eval_mode(self.model):
                self.model(probe)
                t0 = time.perf_counter()
                self.model(probe)
                per_row = (time.perf_counter() - t0) / rows
            evaluations = int(seconds / (per_row * (2.5 if self.uses_gradients else 1.0)))
        if not isinstance(evaluations, int) or evaluations < 1:
            raise param_error("evaluations", "afford", "an int >= 1", evaluations)
        knob = self.fidelity_param
        if knob is None:
            return {}
        plan_at = _PlanAt(self, x, target, batch_size)
        lo, hi = 1, 1
        if plan_at(1) > evaluations:
            return {knob: None, "evaluations": plan_at(1)}
        while plan_at(hi * 2) <= evaluations and hi < 2**20:
            hi *= 2
        lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if plan_at(mid) <= evaluations:
                lo = mid
            else:
                hi = mid
        return {knob: lo, "evaluations": plan_at(lo)}

    # ------------------------------------------------------------------ internals
    def _check_dims(self, x: Tensor) -> None:
        nd = x.ndim - 2
        if nd not in self.spatial_dims:
            supported = " and ".join(f"{d}D" for d in self.spatial_dims)
            raise ExplanationError(
                UNSUPPORTED_DIMS.format(method=self.name, supported=supported, got=nd)
            )

    def _class_names(self) -> list[str] | None:
        return None if self.head is None else list(self.head.class_names)

    def _name_of(self, k: int) -> str:
        names = self._class_names()
        if names is None:
            return str(k)
        if self.head.type == "binary_sigmoid":
            return names[1]
        return names[k]

    def _n_outputs_expected(self) -> int | None:
        if self.head is None:
            return None
        return 1 if self.head.type == "binary_sigmoid" else len(self.head.class_names)

    def _forward_scores(self, x: Tensor, batch_size: int | None, device: torch.device) -> Tensor:
        outs: list[Tensor] = []
        step = x.shape[0] if batch_size is None else batch_size
        i = 0
        with torch.inference_mode():
            while i < x.shape[0]:
                chunk = x[i : i + step]
                try:
                    out = self.model(chunk.to(device))
                except RuntimeError as exc:
                    if not _is_oom(exc):
                        raise
                    if step == 1:
                        raise ExplanationError(OOM_AT_ONE.format(detail=str(exc)[:200])) from exc
                    step = max(1, min(step, x.shape[0]) // 2)
                    continue
                i += chunk.shape[0]
                outs.append(self._check_logits(out))
        return torch.cat(outs)

    def _check_logits(self, out: Any) -> Tensor:
        """The model's output as float32 logits on the CPU, checked against the head."""
        if not isinstance(out, Tensor) or out.ndim != 2:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ExplanationError(BAD_OUTPUT.format(shape=shape))
        logits = out.detach().float().cpu()
        expected = self._n_outputs_expected()
        if expected is not None and logits.shape[1] != expected:
            raise ExplanationError(
                HEAD_MISMATCH.format(
                    got=logits.shape[1],
                    type=self.head.type,
                    expected=expected,
                    names=self.head.class_names,
                )
            )
        return logits

    def _folds(self, target: Any) -> bool:
        """Whether one forward pass per image can both score it and give its map: the
        method supports it and every image has exactly one target that does not depend on
        the other images (a multi-label head's default targets are the union of the
        batch's findings)."""
        if not self.folds_scoring:
            return False
        if target is None:
            return self.head is None or self.head.type != "multilabel"
        if isinstance(target, (list, tuple)):
            return len(target) == 1
        if isinstance(target, (np.ndarray, Tensor)):
            return target.ndim == 0 or (target.ndim == 2 and target.shape[1] == 1)
        return True

    def _explain_folded(
        self,
        x_all: Tensor,
        target: Any,
        batch_size: int | None,
        device: torch.device,
        counter: _Counter,
    ) -> tuple[Tensor, np.ndarray, Tensor, int | None] | None:
        """Scores, targets and maps from one forward + backward pass per chunk of images
        (None: the per-image target array has the wrong shape; the usual path reports it).

        With ``batch_size=None`` the chunk and layout follow the forward + backward plan
        (``_chunking.backward_plan``: probed from PROBE_MIN_ROWS_GRAD images; below that all
        images in one pass, in the layout a single-row probe found faster)."""
        n = x_all.shape[0]
        per_image = isinstance(target, np.ndarray) and target.ndim == 2
        if per_image and target.shape[0] != n:
            return None
        self._reset(n, 1)
        step = n if batch_size is None else batch_size
        used = batch_size
        if batch_size is None:
            counter.paused = True  # the probe's rows are not the method's evaluations
            try:
                fp = backward_plan(self.model, x_all[:1].to(device), n)
            finally:
                counter.paused = False
            self._channels_last = fp.channels_last
            if fp.measured:
                step = used = fp.rows
        logits_parts: list[Tensor] = []
        target_parts: list[np.ndarray] = []
        map_parts: list[Tensor] = []
        i = 0
        while i < n:
            xb = x_all[i : i + step].to(device)
            sub = target[i : i + step] if per_image else target
            picked: list[tuple[Tensor, np.ndarray]] = []

            def pick(out: Any, sub: Any = sub, picked: list = picked) -> Tensor:
                logits = self._check_logits(out)
                _, tg = self._targets_from(logits, sub)
                picked.append((logits, tg))
                return torch.as_tensor(tg, device=out.device)

            try:
                maps = self._scored_attribute(xb, pick)
            except RuntimeError as exc:
                if not _is_oom(exc):
                    raise
                if step == 1:
                    raise ExplanationError(OOM_AT_ONE.format(detail=str(exc)[:200])) from exc
                step = used = max(1, min(step, n) // 2)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            logits, tg = picked[-1]
            logits_parts.append(logits)
            target_parts.append(tg)
            map_parts.append(maps.detach().float().cpu())
            i += xb.shape[0]
        logits = torch.cat(logits_parts)
        return (
            head_scores(logits, self.head),
            np.concatenate(target_parts),
            torch.cat(map_parts),
            used,
        )

    def _target_index(self, t: Any, k: int) -> int:
        names = self._class_names()
        if isinstance(t, str):
            if names is None or t not in names:
                raise InputDataError(BAD_TARGET.format(target=t, n=k, names=names))
            if self.head.type == "binary_sigmoid":
                if t == names[0]:
                    raise ExplanationError(
                        NEGATIVE_CLASS_SIGMOID.format(target=t, positive=names[1])
                    )
                return 0
            return names.index(t)
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
            raise InputDataError(BAD_TARGET.format(target=t, n=k, names=names))
        t = int(t)
        if not 0 <= t < k:
            raise InputDataError(BAD_TARGET.format(target=t, n=k, names=names))
        return t

    def _resolve(
        self, x: Tensor, target: Any, batch_size: int | None, device: torch.device
    ) -> tuple[Tensor, np.ndarray]:
        return self._targets_from(self._forward_scores(x, batch_size, device), target)

    def _targets_from(self, logits: Tensor, target: Any) -> tuple[Tensor, np.ndarray]:
        """Scores and the (N, T) target indices for a batch's logits."""
        scores = head_scores(logits, self.head)
        n, k = logits.shape
        if target is None:
            if self.head is not None and self.head.type == "multilabel":
                pos = (scores >= 0.5).numpy()
                cols = sorted(set(np.nonzero(pos)[1].tolist()))
                if not cols:
                    cols = sorted(set(scores.argmax(1).tolist()))
                targets = np.tile(np.asarray(cols, dtype=np.int64), (n, 1))
            else:
                targets = logits.argmax(1).numpy().astype(np.int64)[:, None]
        elif isinstance(target, np.ndarray) and target.ndim == 2:
            if target.shape[0] != n or target.shape[1] < 1:
                raise InputDataError(TARGET_SHAPE.format(n=n, shape=target.shape))
            targets = np.asarray(
                [
                    [self._target_index(v.item() if hasattr(v, "item") else v, k) for v in row]
                    for row in target.tolist()
                ],
                dtype=np.int64,
            )
        elif isinstance(target, (list, tuple)):
            if not target:
                raise InputDataError(
                    BAD_TARGET.format(target=target, n=k, names=self._class_names())
                )
            row = [self._target_index(v, k) for v in target]
            targets = np.tile(np.asarray(row, dtype=np.int64), (n, 1))
        else:
            if isinstance(target, (np.ndarray, Tensor)):
                if target.ndim != 0:
                    raise InputDataError(TARGET_SHAPE.format(n=n, shape=tuple(target.shape)))
                target = target.item()
            targets = np.full((n, 1), self._target_index(target, k), dtype=np.int64)
        return scores, targets

    def _run_jobs(
        self,
        x_all: Tensor,
        targets: np.ndarray,
        batch_size: int | None,
        seed: int,
        device: torch.device,
        counter: _Counter | None = None,
    ) -> tuple[Tensor, int | None]:
        n, t = targets.shape
        spatial = tuple(x_all.shape[2:])
        maps = torch.zeros((n, t, *spatial), dtype=torch.float32)
        if self.shares_targets:
            jobs = [(i, list(range(t))) for i in range(n)]
            per_job = self._evaluations_per_job(t, spatial, x_all.shape[1])
        else:
            jobs = [(i, [j]) for i in range(n) for j in range(t)]
            per_job = self._evaluations_per_job(1, spatial, x_all.shape[1])
        bs = batch_size
        # all jobs in one call (images advance in lockstep) until a chunk size is imposed
        whole = batch_size is None
        self._channels_last = False
        self._rows_measured = False
        if whole and (self.auto_chunk or self.auto_chunk_grad):
            if counter is not None:
                counter.paused = True  # the probe's rows are not the method's evaluations
            try:
                fp = forward_plan(
                    self.model,
                    x_all[:1].to(device),
                    len(jobs) * per_job,
                    backward=self.auto_chunk_grad,
                )
            finally:
                if counter is not None:
                    counter.paused = False
            if self.auto_chunk:
                bs, self._channels_last = fp.rows, fp.channels_last
            elif fp.measured:  # gradient methods: whole images per call, ``bs`` rows per pass
                bs, self._channels_last, whole = fp.rows, fp.channels_last, False
                self._rows_measured = True
            else:  # a small gradient job: one pass, in the faster layout
                self._channels_last = fp.channels_last
        pos = 0
        while pos < len(jobs):
            take = len(jobs) if whole else max(1, bs // max(per_job, 1))
            chunk = jobs[pos : pos + take]
            rows = [i for i, _ in chunk]
            tg = torch.as_tensor(np.stack([targets[i, cols] for i, cols in chunk]))
            xb = x_all[rows].to(device)
            try:
                out = self._attribute(
                    xb, tg.to(device), batch_size=bs, seeds=[seed + i for i in rows]
                )
            except RuntimeError as exc:
                if not _is_oom(exc):
                    raise
                if bs == 1:
                    raise ExplanationError(OOM_AT_ONE.format(detail=str(exc)[:200])) from exc
                rows_now = len(chunk) * per_job if bs is None else bs
                bs = max(1, min(rows_now, 2**31) // 2)
                whole = False
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            out = out.detach().float().cpu()
            for b, (i, cols) in enumerate(chunk):
                maps[i, cols] = out[b]
            self._store(rows, [c for _, cols in chunk for c in cols])
            pos += len(chunk)
        return maps, bs

    def _invert(self, maps: np.ndarray, inverse: Any) -> tuple[np.ndarray, ...]:
        fns = list(inverse) if isinstance(inverse, (list, tuple)) else [inverse] * len(maps)
        if len(fns) != len(maps):
            raise param_error("inverse", "explain", f"one callable or {len(maps)}", len(fns))
        out = []
        for i, (fn, m) in enumerate(zip(fns, maps, strict=True)):
            try:
                out.append(np.asarray(fn(m), dtype=np.float32))
            except Exception as exc:  # the caller's function: report which map failed
                raise ExplanationError(INVERSE_FAILED.format(index=i, error=exc)) from exc
        return tuple(out)


class _PlanAt:
    """Evaluations of ``explainer`` with its fidelity knob set to a value (for afford)."""

    def __init__(self, explainer: Explainer, x: Tensor, target: Any, batch_size: int | None):
        self.e = explainer
        with torch.no_grad(), eval_mode(explainer.model):
            _, targets = explainer._resolve(x, target, batch_size, explainer.device)
        self.n, self.t = targets.shape
        self.spatial = tuple(x.shape[2:])
        self.c = x.shape[1]

    def __call__(self, value: int) -> int:
        knob = self.e.fidelity_param
        old = getattr(self.e, knob)
        try:
            setattr(self.e, knob, value)
            t = self.t if self.e.shares_targets else 1
            jobs = self.n if self.e.shares_targets else self.n * self.t
            return self.n + jobs * self.e._evaluations_per_job(t, self.spatial, self.c)
        finally:
            setattr(self.e, knob, old)


def _activation_bytes_per_row(model: nn.Module, x1: Tensor) -> int:
    """Bytes of every leaf module's output for one row (a probe forward)."""
    total = [0]

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        if isinstance(out, Tensor):
            total[0] += out.numel() * out.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        model(x1)
    finally:
        for h in handles:
            h.remove()
    return max(total[0], x1.numel() * x1.element_size())


def ceil_div(a: int, b: int) -> int:
    """Integer ceiling of a / b."""
    return -(-a // b)


def n_windows(spatial: Sequence[int], window: Sequence[int], stride: Sequence[int]) -> int:
    """Number of sliding-window positions (captum's Occlusion count)."""
    return math.prod((s - w) // st + 1 for s, w, st in zip(spatial, window, stride, strict=True))
