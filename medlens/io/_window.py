"""VOI windows: parsing the caller's window and the DICOM window functions.

All window functions here map to the output range [0, 1] (``y_min = 0``,
``y_max = 1`` in the notation of DICOM PS3.3 C.11.2.1.2).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._errors import MedlensError, param_error

__all__ = ["WINDOW_FUNCTIONS", "affine_window", "apply_affine", "as_window"]

WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
BAD_FILE_WINDOW = "the file's window is invalid (center={center!r}, width={width!r}, function={function!r}): {why}"


def as_window(window: Any, func: str = "read_image") -> tuple[float, float] | None:
    """Return ``(center, width)`` from a tuple or an object with ``.center``/``.width``.

    Raises
    ------
    MedlensError
        If the window is not two finite numbers with width > 0.
    """
    if window is None:
        return None
    expected = "None, a (center, width) pair or an object with .center and .width (width > 0)"
    try:
        if hasattr(window, "center") and hasattr(window, "width"):
            center, width = window.center, window.width
        else:
            center, width = window
        center, width = float(center), float(width)
    except (TypeError, ValueError):
        raise param_error("window", func, expected, window) from None
    if not (math.isfinite(center) and math.isfinite(width) and width > 0):
        raise param_error("window", func, expected, window)
    return center, width


def affine_window(
    center: float, width: float, function: str, *, source: str | None = None
) -> tuple[float, float]:
    """Linear window as ``y = (x - x0) * gain`` (clipped to [0, 1]).

    For ``SIGMOID`` the pair is the argument of the logistic function instead:
    ``y = 1 / (1 + exp(-(x - x0) * gain))``.

    References
    ----------
    DICOM PS3.3 C.11.2.1.2 (Window Center and Window Width) and C.11.2.1.3
    (VOI LUT Function).
    """
    if function == "LINEAR":
        if width < 1:
            raise MedlensError(
                BAD_FILE_WINDOW.format(
                    center=center, width=width, function=function, why="LINEAR needs width >= 1"
                ),
                source=source,
            )
        if width == 1:  # a step at center - 0.5 (PS3.3 C.11.2.1.2.1)
            return center - 0.5, math.inf
        return center - 0.5 - (width - 1) / 2, 1.0 / (width - 1)
    if function == "LINEAR_EXACT":
        return center - width / 2, 1.0 / width
    if function == "SIGMOID":
        return center, 4.0 / width
    raise MedlensError(
        BAD_FILE_WINDOW.format(
            center=center,
            width=width,
            function=function,
            why=f"VOI LUT function must be one of {', '.join(WINDOW_FUNCTIONS)}",
        ),
        source=source,
    )


def apply_affine(
    values: np.ndarray,
    x0: float,
    gain: float,
    *,
    sigmoid: bool = False,
    invert: bool = False,
    out: np.ndarray | None = None,
    dtype: type = np.float32,
) -> np.ndarray:
    """Compute ``clip((values - x0) * gain, 0, 1)`` (or its logistic) in one buffer.

    ``invert`` returns ``1 - y``. Work happens in ``out`` (allocated as
    ``dtype`` when not given) with in-place ufuncs: no temporary copies.
    """
    if out is None:
        out = np.empty(values.shape, dtype=dtype)
    if math.isinf(gain):  # LINEAR window of width 1: a step function at x0
        if gain > 0:
            step = np.less_equal if invert else np.greater
        else:
            step = np.greater_equal if invert else np.less
        step(values, x0, out=out)
        return out
    # (x - x0) g computed as x g - x0 g with scalars of out's dtype: cast the stored
    # values into out, then multiply, add and clip in place (no temporaries). The
    # plain cast plus an in-place multiply is faster than a casting multiply and
    # gives the same bits (the ufunc casts its input to out's dtype first too).
    g = out.dtype.type(-gain if invert else gain)
    offset = out.dtype.type((1.0 if invert else 0.0) - x0 * (-gain if invert else gain))
    np.copyto(out, values, casting="unsafe")
    np.multiply(out, g, out=out)
    if sigmoid:
        # 1 / (1 + exp(-z)); inverted: 1 / (1 + exp(z))
        out += out.dtype.type(-x0 * (-gain if invert else gain))
        np.negative(out, out=out)
        with np.errstate(over="ignore"):  # exp -> inf gives exactly 0, as it should
            np.exp(out, out=out)
        out += 1.0
        np.reciprocal(out, out=out)
        return out
    out += offset
    np.clip(out, 0.0, 1.0, out=out)
    return out
