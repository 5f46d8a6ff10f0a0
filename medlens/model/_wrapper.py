"""ModelWrapper: a module, its head and preprocessing, and batched prediction."""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .._errors import InputDataError, MedlensError, ModelLoadError, param_error
from ..config import HeadConfig, PreprocessConfig
from ._prediction import Prediction, check_output_width, prediction_from_logits
from ._preprocess import MIXED_SHAPES, Preprocessor

__all__ = ["ModelWrapper", "resolve_device"]

NO_PREPROCESS = (
    "got raw images but this model has no preprocessing; pass a preprocessed tensor of shape "
    "(N, C, H, W) or give preprocess= (the 'preprocess' section of the config)"
)
SINGLE_ARRAY = (
    "got a single {kind}; pass a list of images (e.g. [scan] or [pixels]) to preprocess them, "
    "or a preprocessed batch as a torch.Tensor of shape (N, C, H, W)"
)
BAD_TENSOR = (
    "expected a preprocessed float tensor of shape (N, C, H, W) or (N, C, D, H, W), got {what}"
)
CHANNEL_MISMATCH = (
    "the preprocessed batch has {got} channel(s) but the preprocess config declares {want}; "
    "preprocess with the model's Preprocessor"
)
CUDA_UNAVAILABLE = (
    "device {device!r} was requested but CUDA is not available here; use device 'auto' or 'cpu'"
)
FORWARD_FAILED = (
    "the model failed on a batch of shape {shape}: {detail}; check that the input shape, "
    "channels and size match what the model was trained on (see the preprocess config)"
)
OUT_OF_MEMORY = "out of memory at batch_size {bs} on {device}; pass a smaller batch_size"
AMP_ON_CPU = "amp=True has no effect on device {device}; automatic mixed precision is CUDA-only"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` (CUDA when available, else CPU), a name or a torch.device into a device.

    Raises
    ------
    MedlensError
        Unparseable name, or CUDA requested where it is unavailable.
    """
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise param_error(
            "device", "resolve_device", "'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device", device
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MedlensError(CUDA_UNAVAILABLE.format(device=str(device)))
    return dev


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode; restore each one's own flag afterwards."""
    flags = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        yield
    finally:
        for m, was_training in flags:
            m.training = was_training


def _state_dict_sha256(module: nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in module.state_dict().items():
        if not isinstance(value, torch.Tensor):
            continue
        t = value.detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class ModelWrapper:
    """A classifier with its declared head, optional preprocessing and batched predict.

    Build one with :func:`medlens.model.load_model` (from a config) or
    :meth:`from_module` (an ``nn.Module`` already in Python). The module is moved to
    ``device`` and put in eval mode when wrapped (both in place).

    Attributes
    ----------
    module : nn.Module
        The model, in eval mode, on ``device``.
    device : torch.device
    head : HeadConfig
    preprocess : Preprocessor or None
    weights_sha256 : str or None
        SHA-256 of the weights file exactly as read (TorchScript archive or
        checkpoint); None for a module passed in Python (see :meth:`state_dict_sha256`
        for a content hash that also works in memory).
    name : str
    batch_size : int
        Default images per forward pass.
    amp : bool
        Autocast (float16) on CUDA; ignored on CPU.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        head: HeadConfig,
        preprocess: PreprocessConfig | Preprocessor | None = None,
        device: str | torch.device = "auto",
        batch_size: int = 32,
        amp: bool = False,
        name: str | None = None,
        weights_sha256: str | None = None,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise ModelLoadError(
                f"expected a torch.nn.Module, got {type(module).__name__}; load weights "
                "into a module first or use load_model(config)"
            )
        if isinstance(head, dict):
            head = HeadConfig.model_validate(head)
        if not isinstance(head, HeadConfig):
            raise param_error("head", "ModelWrapper", "a HeadConfig", type(head).__name__)
        self.batch_size = _check_batch_size(batch_size, "ModelWrapper")
        if isinstance(preprocess, PreprocessConfig):
            preprocess = Preprocessor(preprocess)
        if preprocess is not None and not isinstance(preprocess, Preprocessor):
            raise param_error(
                "preprocess",
                "ModelWrapper",
                "a PreprocessConfig, a Preprocessor or None",
                type(preprocess).__name__,
            )
        self.device = resolve_device(device)
        self.amp = bool(amp)
        if self.amp and self.device.type != "cuda":
            warnings.warn(AMP_ON_CPU.format(device=self.device), UserWarning, stacklevel=2)
        self.head = head
        self.preprocess = preprocess
        self.name = name or type(module).__name__
        self.weights_sha256 = weights_sha256
        self.module = module.to(self.device).eval()

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        *,
        head: HeadConfig,
        preprocess: PreprocessConfig | Preprocessor | None = None,
        device: str | torch.device = "auto",
        batch_size: int = 32,
        amp: bool = False,
        name: str | None = None,
    ) -> ModelWrapper:
        """Wrap an ``nn.Module`` that is already in Python (``weights_sha256`` is None)."""
        return cls(
            module,
            head=head,
            preprocess=preprocess,
            device=device,
            batch_size=batch_size,
            amp=amp,
            name=name,
        )

    def __repr__(self) -> str:
        return (
            f"ModelWrapper(name={self.name!r}, head={self.head.type!r}, "
            f"classes={self.head.class_names}, device={str(self.device)!r}, "
            f"batch_size={self.batch_size})"
        )

    def state_dict_sha256(self) -> str:
        """SHA-256 over the module's state_dict: names, dtypes, shapes and raw bytes, in order.

        Unlike ``weights_sha256`` it does not depend on how the weights were stored, so
        an in-memory module and the same weights loaded from a file hash alike.
        """
        return _state_dict_sha256(self.module)

    # -- checks ------------------------------------------------------------------------

    def check_head(self, example: torch.Tensor | None = None) -> None:
        """Run one forward pass and check the output width against the head.

        Parameters
        ----------
        example : Tensor of shape (N, C, ...), optional
            A preprocessed batch. By default a black image of the preprocess size.

        Raises
        ------
        ModelLoadError
            The output does not match the head.
        InputDataError
            The forward pass failed (e.g. the model expects another input shape).
        """
        if example is not None and not isinstance(example, torch.Tensor):
            raise param_error("example", "check_head", "a torch.Tensor", type(example).__name__)
        if example is None:
            pre = self.preprocess
            if pre is None or pre.size is None or len(pre.size) != pre.spatial_dims:
                raise InputDataError(
                    "check_head needs an example batch when the preprocess size does not fix "
                    "the model-input shape"
                )
            example = torch.zeros((1, pre.channels, *pre.size))
        self._forward_batches(self._check_tensor(example), self.batch_size, progress=False)

    # -- prediction --------------------------------------------------------------------

    def _check_tensor(self, x: Any) -> torch.Tensor:
        if x.dim() < 3:
            raise InputDataError(BAD_TENSOR.format(what=f"shape {tuple(x.shape)}"))
        if not x.is_floating_point():
            raise InputDataError(BAD_TENSOR.format(what=f"dtype {x.dtype}"))
        if x.shape[0] == 0:
            raise InputDataError(BAD_TENSOR.format(what="an empty batch (N = 0)"))
        if self.preprocess is not None and x.shape[1] != self.preprocess.channels:
            raise InputDataError(
                CHANNEL_MISMATCH.format(got=x.shape[1], want=self.preprocess.channels)
            )
        if x.dtype != torch.float32:
            x = x.to(torch.float32)
        return x

    def _forward_batches(
        self, batches: torch.Tensor | Sequence[Any], batch_size: int, *, progress: bool
    ) -> np.ndarray:
        """Forward a preprocessed tensor, or raw images preprocessed per batch."""
        raw = not isinstance(batches, torch.Tensor)
        pre = self.preprocess
        n = len(batches)
        outputs: list[torch.Tensor] = []
        device, module, head = self.device, self.module, self.head
        use_amp = self.amp and device.type == "cuda"
        bar = tqdm(total=n, unit="image", desc=f"predict {self.name}", disable=not progress)
        shape: tuple[int, ...] | None = None
        try:
            with torch.inference_mode(), _eval_mode(module):
                for start in range(0, n, batch_size):
                    chunk = batches[start : start + batch_size]
                    if raw and pre is not None:  # predict() refuses raw images without one
                        chunk = self._preprocess_chunk(pre, chunk, start)
                        if shape is None:
                            shape = tuple(chunk.shape[1:])
                        elif tuple(chunk.shape[1:]) != shape:
                            raise InputDataError(
                                MIXED_SHAPES.format(shapes=[shape, tuple(chunk.shape[1:])])
                            )
                    xb = chunk.to(device, non_blocking=True)
                    try:
                        if use_amp:
                            with torch.autocast("cuda", dtype=torch.float16):
                                out = module(xb)
                        else:
                            out = module(xb)
                    except torch.OutOfMemoryError as exc:
                        raise MedlensError(
                            OUT_OF_MEMORY.format(bs=batch_size, device=device)
                        ) from exc
                    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                        if isinstance(exc, MedlensError):
                            raise
                        raise InputDataError(
                            FORWARD_FAILED.format(
                                shape=tuple(xb.shape),
                                detail=f"{type(exc).__name__}: {str(exc).strip()[:300]}",
                            )
                        ) from exc
                    check_output_width(out, head, batch_size=xb.shape[0])
                    outputs.append(out)
                    bar.update(xb.shape[0])
        finally:
            bar.close()
        logits = torch.cat(outputs) if len(outputs) > 1 else outputs[0]
        return logits.to(device="cpu", dtype=torch.float32).numpy()

    @staticmethod
    def _preprocess_chunk(pre: Preprocessor, chunk: Sequence[Any], offset: int) -> torch.Tensor:
        tensors = []
        for j, img in enumerate(chunk):
            try:
                tensors.append(pre(img)[0])
            except MedlensError as exc:
                raise type(exc)(f"image {offset + j}: {exc.message}", source=exc.source) from None
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise InputDataError(MIXED_SHAPES.format(shapes=sorted(shapes)))
        return torch.stack(tensors)

    def predict(
        self,
        images: torch.Tensor | Sequence[Any],
        *,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> Prediction:
        """Predict a batch of images.

        Runs under ``torch.inference_mode()`` with every submodule in eval mode
        (each module's own train/eval flag is restored afterwards; no hooks are
        added). With float32 (no AMP) the result does not depend on ``batch_size``.

        Parameters
        ----------
        images : Tensor of shape (N, C, H, W) or (N, C, D, H, W), or sequence of images
            A tensor is taken as already preprocessed (moved to ``device`` per batch,
            converted to float32). A list/tuple of arrays or ScanImage-like objects
            (``.pixels``) is preprocessed batch by batch with ``self.preprocess``.
        batch_size : int, optional
            Images per forward pass; default ``self.batch_size``.
        progress : bool
            Show a tqdm progress bar.

        Returns
        -------
        Prediction
            Arrays on the CPU as NumPy.

        Raises
        ------
        InputDataError
            Bad input (type, shape, dtype, empty, raw images without preprocessing).
        ModelLoadError
            The model output does not match the head.
        InputDataError
            The forward pass raised (shape or channel mismatch inside the model); the
            original exception is chained.
        MedlensError
            Out of memory on the device: lower ``batch_size``.
        """
        bs = self.batch_size if batch_size is None else _check_batch_size(batch_size, "predict")
        if isinstance(images, torch.Tensor):
            batches: torch.Tensor | Sequence[Any] = self._check_tensor(images)
        elif isinstance(images, np.ndarray) or hasattr(images, "pixels"):
            kind = "NumPy array" if isinstance(images, np.ndarray) else type(images).__name__
            raise InputDataError(SINGLE_ARRAY.format(kind=kind))
        elif isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
            if len(images) == 0:
                raise InputDataError("expected at least one image, got an empty sequence")
            if self.preprocess is None:
                raise InputDataError(NO_PREPROCESS)
            batches = images
        else:
            raise InputDataError(
                "expected a preprocessed torch.Tensor (N, C, H, W) or a list of images, "
                f"got {type(images).__name__}"
            )
        logits = self._forward_batches(batches, bs, progress=progress)
        return prediction_from_logits(logits, self.head)


def _check_batch_size(batch_size: Any, func: str) -> int:
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise param_error("batch_size", func, "an int >= 1", batch_size)
    return int(batch_size)
