"""Safe model loading: TorchScript, state_dict + factory, or an nn.Module in Python.

Checkpoints are read with ``torch.load(weights_only=True)`` only. A pickle that
needs anything beyond tensors and plain containers could run arbitrary code when
unpickled, so it is refused with :data:`UNSAFE_CHECKPOINT`, which says how to
re-save the weights as a plain state_dict.

TorchScript archives hold TorchScript code (a restricted language, not arbitrary
Python) and their constants are read by torch's own restricted unpickler; load only
archives from a source you trust all the same. The SHA-256 recorded for either
format is that of the exact bytes that were loaded (the file is read once).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import pickle
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._errors import MedlensError, ModelLoadError
from ..config import ModelConfig, PreprocessConfig
from ._architectures import get_architecture
from ._preprocess import Preprocessor
from ._wrapper import ModelWrapper, resolve_device

__all__ = ["load_model", "load_state_dict", "resolve_factory"]

UNSAFE_CHECKPOINT = (
    "refused to load: the checkpoint contains pickled Python objects beyond tensors and "
    "plain containers ({detail}). Unpickling them could execute arbitrary code, so medlens "
    "reads checkpoints with torch.load(weights_only=True) only. Re-save the weights as a "
    "state_dict in a trusted environment: torch.save(model.state_dict(), path)"
)
NOT_A_CHECKPOINT = (
    "not a PyTorch checkpoint ({detail}); expected a file written by "
    "torch.save(model.state_dict(), path)"
)
TORCHSCRIPT_AS_STATE_DICT = (
    "this file is a TorchScript archive, not a state_dict checkpoint; set format: torchscript"
)
NOT_TORCHSCRIPT = (
    "not a TorchScript archive ({detail}); for a file written by torch.save(state_dict) "
    "set format: state_dict and a factory"
)
NOT_A_STATE_DICT = (
    "the checkpoint holds {what}, not a state_dict (a mapping of parameter names to "
    "tensors); re-save it with torch.save(model.state_dict(), path)"
)
KEY_MISMATCH = (
    "the checkpoint does not fit the model built by {factory!r}: {details}. Check the factory "
    "and its kwargs (e.g. width, depth, num_outputs) against the model that was trained"
)
SHAPE_MISMATCH = "the checkpoint does not fit the model built by {factory!r}: {details}"
BAD_FACTORY_FORMAT = (
    "factory {factory!r} is not of the form 'package.module:callable' (nor a built-in name)"
)
FACTORY_MODULE_NOT_FOUND = (
    "factory {factory!r}: cannot import module {module!r} ({detail}); is the package installed "
    "in this environment?"
)
FACTORY_IMPORT_FAILED = "factory {factory!r}: importing module {module!r} failed: {detail}"
FACTORY_ATTR_NOT_FOUND = "factory {factory!r}: module {module!r} has no attribute {attr!r}"
FACTORY_NOT_CALLABLE = "factory {factory!r} is a {what}, not a callable"
FACTORY_CALL_FAILED = "factory {factory!r} failed when called with kwargs {kwargs}: {detail}"
FACTORY_NOT_MODULE = "factory {factory!r} returned a {what}, expected a torch.nn.Module"
FILE_UNREADABLE = "cannot read the model file ({detail})"

_STATE_DICT_KEYS = ("state_dict", "model_state_dict")
_MAX_KEYS_SHOWN = 8


def _read(path: Path) -> tuple[bytes, str]:
    """Read the whole file once, so the hash matches exactly what is loaded."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(
            FILE_UNREADABLE.format(detail=exc.strerror or exc), source=str(path)
        ) from None
    return data, hashlib.sha256(data).hexdigest()


def _is_torchscript(data: bytes) -> bool:
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return False
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return any(n.endswith("constants.pkl") for n in zf.namelist())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0][:200] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _unpickler_reason(text: str) -> str:
    """The line of torch's weights-only error that says what was refused."""
    for line in text.splitlines():
        if "GLOBAL" in line:
            return line.strip()[:300]
    _, _, tail = text.partition("WeightsUnpickler error:")
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    return lines[0][:300] if lines else "an object that is not a tensor or plain container"


def _short(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_MAX_KEYS_SHOWN])
    more = len(keys) - _MAX_KEYS_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def load_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read a checkpoint safely and return ``(state_dict, sha256 of the file)``.

    Accepts a plain state_dict or a dict holding one under ``"state_dict"`` or
    ``"model_state_dict"`` (as training loops often save). Tensors are mapped to CPU.

    Raises
    ------
    ModelLoadError
        Unreadable file, not a checkpoint, a TorchScript archive, a pickle that needs
        arbitrary code (:data:`UNSAFE_CHECKPOINT`) or content that is not a state_dict.
    """
    path = Path(path)
    data, sha = _read(path)
    src = str(path)
    if _is_torchscript(data):
        raise ModelLoadError(TORCHSCRIPT_AS_STATE_DICT, source=src)
    try:
        with warnings.catch_warnings():
            # a plain pickle (not torch.save) triggers a protocol notice before the refusal
            warnings.filterwarnings("ignore", message=r"Detected pickle protocol")
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "weights only" in text.lower() or "weights_only" in text:
            # keep the one line that names the offending global
            detail = _unpickler_reason(text)
            raise ModelLoadError(UNSAFE_CHECKPOINT.format(detail=detail), source=src) from None
        raise ModelLoadError(NOT_A_CHECKPOINT.format(detail=_first_line(exc)), source=src) from None
    except Exception as exc:  # torch.load raises many types on a corrupt or foreign file
        raise ModelLoadError(NOT_A_CHECKPOINT.format(detail=_first_line(exc)), source=src) from None
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        what = "an empty mapping" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
        raise ModelLoadError(NOT_A_STATE_DICT.format(what=what), source=src)
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        what = f"non-tensor entries ({_short(bad)})"
        raise ModelLoadError(NOT_A_STATE_DICT.format(what=what), source=src)
    return {str(k): v for k, v in obj.items()}, sha


def resolve_factory(factory: str) -> Callable[..., nn.Module]:
    """Turn ``"package.module:callable"`` (or a built-in name) into a callable.

    The attribute part may be dotted (``"pkg.mod:Class.build"``). Importing the
    module runs its code: only name factories you trust, as with any import.

    Raises
    ------
    ModelLoadError
        Bad format, module not found, import failure, missing attribute, not callable,
        or an unknown built-in name.
    """
    if not isinstance(factory, str) or not factory.strip():
        raise ModelLoadError(BAD_FACTORY_FORMAT.format(factory=factory))
    if ":" not in factory:
        return get_architecture(factory)
    module_name, _, attr = factory.partition(":")
    if not module_name or not attr or ":" in attr or any(not p for p in attr.split(".")):
        raise ModelLoadError(BAD_FACTORY_FORMAT.format(factory=factory))
    try:
        mod = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ModelLoadError(
            FACTORY_MODULE_NOT_FOUND.format(factory=factory, module=module_name, detail=exc)
        ) from None
    except Exception as exc:  # the factory's own module failed; report, do not swallow
        raise ModelLoadError(
            FACTORY_IMPORT_FAILED.format(
                factory=factory, module=module_name, detail=f"{type(exc).__name__}: {exc}"
            )
        ) from exc
    obj: Any = mod
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ModelLoadError(
                FACTORY_ATTR_NOT_FOUND.format(factory=factory, module=module_name, attr=attr)
            ) from None
    if not callable(obj):
        raise ModelLoadError(FACTORY_NOT_CALLABLE.format(factory=factory, what=type(obj).__name__))
    return obj


def _build(factory: str, kwargs: Mapping[str, Any]) -> nn.Module:
    fn = resolve_factory(factory)
    try:
        module = fn(**kwargs)
    except Exception as exc:
        raise ModelLoadError(
            FACTORY_CALL_FAILED.format(
                factory=factory, kwargs=dict(kwargs), detail=f"{type(exc).__name__}: {exc}"
            )
        ) from exc
    if not isinstance(module, nn.Module):
        raise ModelLoadError(FACTORY_NOT_MODULE.format(factory=factory, what=type(module).__name__))
    return module


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], factory: str, src: str) -> None:
    expected = module.state_dict()
    if all(k.startswith("module.") for k in state) and not any(
        k.startswith("module.") for k in expected
    ):
        # saved from nn.DataParallel / DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_short(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_short(unexpected)}")
        raise ModelLoadError(
            KEY_MISMATCH.format(factory=factory, details="; ".join(parts)), source=src
        )
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if isinstance(v, torch.Tensor) and tuple(state[k].shape) != tuple(v.shape)
    ]
    if shapes:
        raise ModelLoadError(
            SHAPE_MISMATCH.format(factory=factory, details="; ".join(shapes[:_MAX_KEYS_SHOWN])),
            source=src,
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(
            SHAPE_MISMATCH.format(factory=factory, details=str(exc).strip()[:500]), source=src
        ) from None


def _load_torchscript(path: Path, device: torch.device) -> tuple[nn.Module, str]:
    data, sha = _read(path)
    if not _is_torchscript(data):
        raise ModelLoadError(
            NOT_TORCHSCRIPT.format(detail="no TorchScript constants in the archive"),
            source=str(path),
        )
    try:
        with warnings.catch_warnings():
            # torch >= 2.9 deprecates TorchScript in favour of torch.export; archives
            # remain the common deployment format, so loading them stays supported.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated")
            module = torch.jit.load(io.BytesIO(data), map_location=device)
    except Exception as exc:  # torch.jit.load raises many types on a broken archive
        raise ModelLoadError(
            NOT_TORCHSCRIPT.format(detail=_first_line(exc)), source=str(path)
        ) from None
    return module, sha


def load_model(cfg: ModelConfig, *, preprocess: PreprocessConfig | None = None) -> ModelWrapper:
    """Load the model a config describes and wrap it for prediction.

    Parameters
    ----------
    cfg : ModelConfig
        ``format: torchscript`` loads ``path`` with ``torch.jit.load``; ``format:
        state_dict`` builds ``factory(**kwargs)`` (``"package.module:callable"`` or a
        built-in name such as ``"tiny_cnn"``) and loads ``path`` into it strictly.
    preprocess : PreprocessConfig, optional
        The ``preprocess`` section. When it sets ``size``, one black image is run
        through the model to check its output width against ``cfg.head`` at load time.

    Returns
    -------
    ModelWrapper
        ``weights_sha256`` is the SHA-256 of the file exactly as read.

    Raises
    ------
    ModelLoadError
        Missing or unreadable file, wrong format, unsafe pickle, bad factory,
        missing/unexpected keys or shapes, or an output that does not fit the head.
    """
    if not isinstance(cfg, ModelConfig):
        raise MedlensError(
            f"load_model expects a ModelConfig (the 'model' section), got {type(cfg).__name__}"
        )
    device = resolve_device(cfg.device)
    path = Path(cfg.path)
    if cfg.format == "torchscript":
        module, sha = _load_torchscript(path, device)
    else:
        factory = cfg.factory or ""
        state, sha = load_state_dict(path)
        module = _build(factory, cfg.kwargs)
        _load_into(module, state, factory, str(path))
    wrapper = ModelWrapper(
        module,
        head=cfg.head,
        preprocess=None if preprocess is None else Preprocessor(preprocess),
        device=device,
        batch_size=cfg.batch_size,
        amp=cfg.amp,
        name=path.name,
        weights_sha256=sha,
    )
    if wrapper.preprocess is not None and wrapper.preprocess.size is not None:
        try:
            wrapper.check_head()
        except ModelLoadError as exc:
            raise ModelLoadError(exc.message, source=str(path)) from None
    return wrapper
