"""Built-in model architectures, addressable by name from a config ``factory``."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

from .._errors import ModelLoadError
from ..testing import TinyCNN

__all__ = ["get_architecture", "list_architectures", "register_architecture"]

UNKNOWN_ARCHITECTURE = (
    "unknown built-in architecture {name!r}{hint}; available: {available}. "
    "For your own model use 'package.module:callable'."
)

_REGISTRY: dict[str, Callable[..., nn.Module]] = {"tiny_cnn": TinyCNN}


def register_architecture(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``factory`` available as a built-in ``factory: name`` in configs.

    Parameters
    ----------
    name : str
        Registry key; must not contain ':' (that form means 'package.module:callable').
    factory : callable
        Called with the config ``kwargs``; must return an ``nn.Module``.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"architecture names are non-empty strings without ':', got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    _REGISTRY[name] = factory


def list_architectures() -> list[str]:
    """Names of the built-in architectures, sorted."""
    return sorted(_REGISTRY)


def get_architecture(name: str) -> Callable[..., nn.Module]:
    """Return the factory registered as ``name`` (e.g. ``"tiny_cnn"`` -> TinyCNN).

    Raises
    ------
    ModelLoadError
        Unknown name; the message suggests the closest names and lists all.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ModelLoadError(
            UNKNOWN_ARCHITECTURE.format(
                name=name, hint=hint, available=", ".join(list_architectures())
            )
        ) from None
