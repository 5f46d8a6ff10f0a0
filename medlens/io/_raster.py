"""Readers for plain raster files (PNG, JPEG, TIFF via Pillow) and NumPy ``.npy`` arrays.

Integer images are scaled by their dtype's range (8-bit by 255, 16-bit by
65535), never by the image's own min/max. Float arrays are taken as they are
when already in [0, 1]; otherwise the caller must give a window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._errors import UnreadableImageError, UnsupportedImageError
from ._types import ImageMeta, ScanImage, Transform
from ._window import affine_window, apply_affine

__all__ = ["read_npy", "read_pillow"]

NOT_AN_IMAGE_FILE = "cannot read the file as an image ({reason})"
BAD_SHAPE = (
    "array of shape {shape} is not an image; expected (H, W), (H, W, 3), (F, H, W) or (F, H, W, 3)"
)
BAD_DTYPE = (
    "array dtype {dtype} cannot be scaled to [0, 1] without a window; save 8- or 16-bit "
    "integers, floats in [0, 1], or pass window=(center, width)"
)
FLOAT_RANGE = (
    "float values lie outside [0, 1] (min={lo:g}, max={hi:g}); rescale them to [0, 1] "
    "before saving, or pass window=(center, width) in the array's units"
)
NON_FINITE = "the array holds NaN or infinite values"
UNSUPPORTED_MODE = "unsupported Pillow image mode {mode!r}; save as 8/16-bit grey or RGB"


def _check_shape(arr: np.ndarray, src: str) -> None:
    ok = arr.ndim == 2 or (arr.ndim == 3) or (arr.ndim == 4 and arr.shape[-1] == 3)
    if not ok or 0 in arr.shape:
        raise UnsupportedImageError(BAD_SHAPE.format(shape=arr.shape), source=src)


def _is_color(arr: np.ndarray) -> bool:
    return arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] == 3)


def _to_unit(
    arr: np.ndarray, window: tuple[float, float] | None, src: str, steps: list[Transform]
) -> np.ndarray:
    """Scale ``arr`` to float32 [0, 1] by dtype range, as-is floats, or the caller's window."""
    color = _is_color(arr)
    if window is not None and not color:
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise UnreadableImageError(NON_FINITE, source=src)
        if arr.dtype.kind not in "biuf":
            raise UnsupportedImageError(BAD_DTYPE.format(dtype=arr.dtype), source=src)
        x0, gain = affine_window(window[0], window[1], "LINEAR_EXACT", source=src)
        steps.append(
            Transform(
                "voi_window",
                {
                    "center": window[0],
                    "width": window[1],
                    "function": "LINEAR_EXACT",
                    "source": "config",
                },
            )
        )
        steps.append(Transform("scale", {"range": [0.0, 1.0], "clip": True}))
        return apply_affine(arr, x0, gain)
    if window is not None:
        steps.append(
            Transform(
                "voi_skipped",
                {"reason": "colour image", "ignored_center": window[0], "ignored_width": window[1]},
            )
        )
    kind = arr.dtype.kind
    if kind == "b":
        steps.append(Transform("scale", {"from": "bool", "range": [0.0, 1.0]}))
        return arr.astype(np.float32)
    if kind in "iu" and arr.dtype.itemsize <= 2:
        info = np.iinfo(arr.dtype)
        steps.append(
            Transform(
                "scale", {"from": str(arr.dtype), "low": float(info.min), "high": float(info.max)}
            )
        )
        out = np.subtract(arr, info.min, dtype=np.float32)
        out *= np.float32(1.0 / (info.max - info.min))
        return out
    if kind == "f":
        if not np.isfinite(arr).all():
            raise UnreadableImageError(NON_FINITE, source=src)
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise UnsupportedImageError(FLOAT_RANGE.format(lo=lo, hi=hi), source=src)
        steps.append(
            Transform("scale", {"from": str(arr.dtype), "note": "already in [0, 1]; unchanged"})
        )
        return arr.astype(np.float32)
    raise UnsupportedImageError(BAD_DTYPE.format(dtype=arr.dtype), source=src)


def _finish(
    arr: np.ndarray, path: Path, fmt: str, steps: list[Transform], window: Any
) -> ScanImage:
    src = str(path)
    _check_shape(arr, src)
    pixels = _to_unit(arr, window, src, steps)
    color = _is_color(arr)
    frames = arr.shape[0] if (arr.ndim == 4 or (arr.ndim == 3 and not color)) else 1
    spatial = arr.shape[-3:-1] if color else arr.shape[-2:]
    meta = ImageMeta(
        photometric_interpretation="RGB" if color else "MONOCHROME2",
        frame_count=frames,
        rows=int(spatial[0]),
        columns=int(spatial[1]),
        bits_stored=arr.dtype.itemsize * 8 if arr.dtype.kind in "iu" else None,
    )
    steps.insert(
        0, Transform("read", {"format": fmt, "dtype": str(arr.dtype), "shape": list(arr.shape)})
    )
    return ScanImage(
        pixels=np.ascontiguousarray(pixels, dtype=np.float32),
        meta=meta,
        transforms=tuple(steps),
        source=src,
    )


def read_npy(path: Path, fh: Any, *, window: tuple[float, float] | None) -> ScanImage:
    """Read a ``.npy`` array (no pickles)."""
    try:
        arr = np.load(fh, allow_pickle=False)
    except MemoryError:
        raise
    except Exception as exc:
        raise UnreadableImageError(
            NOT_AN_IMAGE_FILE.format(reason=f"NPY: {exc}"), source=str(path)
        ) from exc
    if not isinstance(arr, np.ndarray):  # pragma: no cover - np.load of .npy gives arrays
        raise UnsupportedImageError(BAD_SHAPE.format(shape="?"), source=str(path))
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return _finish(arr, path, "NPY", [], window)


def _pil_frame(img: Any, steps: list[Transform], src: str) -> np.ndarray:
    mode = img.mode
    if mode in ("1", "L", "RGB"):
        arr = np.asarray(img)
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        arr = np.asarray(img).astype(np.uint16)
    elif mode == "I":
        arr = np.asarray(img)
        if arr.min() >= 0 and arr.max() <= 65535:
            # Pillow opens 16-bit PNG/TIFF as 32-bit "I"; the file itself was 16-bit
            arr = arr.astype(np.uint16)
    elif mode == "F":
        arr = np.asarray(img)
    elif mode in ("LA", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        target = "L" if mode in ("LA",) else "RGB"
        if not any(s.name == "convert_mode" for s in steps):
            steps.append(Transform("convert_mode", {"from": mode, "to": target, "by": "Pillow"}))
        arr = np.asarray(img.convert(target))
    else:
        raise UnsupportedImageError(UNSUPPORTED_MODE.format(mode=mode), source=src)
    return arr


def read_pillow(path: Path, fh: Any, *, window: tuple[float, float] | None) -> ScanImage:
    """Read PNG / JPEG / TIFF (all frames of a multi-page TIFF) with Pillow."""
    from PIL import Image, UnidentifiedImageError

    src = str(path)
    steps: list[Transform] = []
    try:
        with Image.open(fh) as img:
            fmt = img.format or "image"
            n = int(getattr(img, "n_frames", 1))
            frames = []
            for i in range(n):
                img.seek(i)
                frames.append(_pil_frame(img, steps, src))
    except (UnreadableImageError, UnsupportedImageError):
        raise
    except MemoryError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise UnreadableImageError(
            NOT_AN_IMAGE_FILE.format(reason=str(exc) or type(exc).__name__), source=src
        ) from exc
    if len({(f.shape, f.dtype) for f in frames}) != 1:
        raise UnsupportedImageError(
            "the frames of this multi-page file differ in size or type", source=src
        )
    arr = frames[0] if n == 1 else np.stack(frames)
    return _finish(arr, path, fmt, steps, window)
