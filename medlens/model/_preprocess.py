"""Invertible preprocessing: channels, resize or letterbox, mean/std normalisation.

The input is what :func:`medlens.io.read_image` returns: ``pixels`` float32 in
[0, 1], already windowed (the VOI window of :class:`~medlens.config.PreprocessConfig`
is applied by the reader, not here). Every geometric step is recorded in a
:class:`Geometry` so that a map computed in model-input space (a saliency or
Grad-CAM map) can be brought back onto the original pixel grid with
:meth:`Preprocessor.invert_map`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._errors import InputDataError, MedlensError, param_error
from ..config import PreprocessConfig

__all__ = ["LUMA_WEIGHTS", "Geometry", "Preprocessor"]

#: ITU-R BT.601 luma weights (R, G, B), as used by Pillow's "L" mode and OpenCV's
#: ``COLOR_RGB2GRAY``; applied when an RGB image meets a 1-channel model.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

BAD_PIXELS_TYPE = (
    "expected pixels as a NumPy array (or an object with a .pixels array such as "
    "medlens.io.ScanImage), got {got}"
)
BAD_DTYPE = (
    "expected floating-point pixels scaled to [0, 1], got dtype {dtype}; "
    "read images with medlens.io.read_image or scale them yourself (e.g. array / 255)"
)
BAD_RANGE = (
    "pixels have values outside [0, 1] (min={lo:.6g}, max={hi:.6g}); medlens expects "
    "windowed pixels scaled to [0, 1], e.g. from medlens.io.read_image or array / 255"
)
NON_FINITE = "pixels contain {n} NaN or infinite values; fix or mask them before preprocessing"
BAD_SHAPE_2D = (
    "expected a 2D image of shape (H, W), (H, W, 1) or (H, W, 3), got shape {shape}; "
    "for a multi-frame image pick one frame (pixels[i]) or use Preprocessor(..., spatial_dims=3)"
)
BAD_SHAPE_3D = (
    "expected a 3D volume of shape (D, H, W), (D, H, W, 1) or (D, H, W, 3), got shape {shape}"
)
EMPTY_IMAGE = "pixels have an empty axis (shape {shape}); nothing to preprocess"
MIXED_SHAPES = (
    "images preprocess to different shapes ({shapes}); set 'size' in the preprocess "
    "config so that every image becomes the same model-input shape"
)
EMPTY_BATCH = "expected at least one image, got an empty sequence"
BAD_MAP_SHAPE = (
    "expected a map of shape {expected} or (K, {expected_inner}) in model-input space, "
    "got shape {shape}"
)


@dataclass(frozen=True)
class Geometry:
    """Where an original image went inside the model input.

    All tuples are over spatial axes only: (H, W) for 2D, (D, H, W) for 3D.

    Attributes
    ----------
    original_shape : tuple of int
        Spatial shape of the image as read.
    input_shape : tuple of int
        Spatial shape of the model input (``size`` of the config, or the original
        shape when no resizing is configured).
    content_shape : tuple of int
        Spatial shape of the resized image inside the model input (equal to
        ``input_shape`` for ``resize``, smaller on the padded axis for ``letterbox``).
    scale : tuple of float
        ``content_shape / original_shape`` per axis.
    pad_before, pad_after : tuple of int
        Padding added before and after the content on each axis (letterbox only).
    mode : str
        ``"resize"``, ``"letterbox"`` or ``"none"``.
    """

    original_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    content_shape: tuple[int, ...]
    scale: tuple[float, ...]
    pad_before: tuple[int, ...]
    pad_after: tuple[int, ...]
    mode: str

    def to_input_coords(self, points: Any) -> np.ndarray:
        """Map pixel-centre coordinates from the original grid to model-input space.

        Parameters
        ----------
        points : array-like of shape (P, ndim) or (ndim,)
            Coordinates in (row, col) order (or (slice, row, col) in 3D), in pixels.

        Returns
        -------
        ndarray of float64, same shape
            ``(p + 0.5) * scale - 0.5 + pad_before``, the convention of
            ``torch.nn.functional.interpolate(..., align_corners=False)``.
        """
        p = np.asarray(points, dtype=np.float64)
        scale, pad = np.asarray(self.scale), np.asarray(self.pad_before)
        return (p + 0.5) * scale - 0.5 + pad

    def to_original_coords(self, points: Any) -> np.ndarray:
        """Inverse of :meth:`to_input_coords`."""
        p = np.asarray(points, dtype=np.float64)
        scale, pad = np.asarray(self.scale), np.asarray(self.pad_before)
        return (p - pad + 0.5) / scale - 0.5


def _interp_mode(spatial_dims: int) -> str:
    return "bilinear" if spatial_dims == 2 else "trilinear"


def _resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Resize a (B, C, *spatial) float tensor; exact no-op for an identical size."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    nd = x.dim() - 2
    shrinking = any(o < i for o, i in zip(size, x.shape[2:], strict=True))
    # antialias exists for bilinear (2D) only; it also changes pure up-sampling,
    # so it is switched on only when at least one axis shrinks.
    antialias = nd == 2 and shrinking
    return F.interpolate(
        x, size=tuple(size), mode=_interp_mode(nd), align_corners=False, antialias=antialias
    )


class Preprocessor:
    """Turn windowed pixels in [0, 1] into a normalised model input, invertibly.

    Steps, in order:

    1. channels: a grayscale image is repeated to 3 channels when ``cfg.channels == 3``;
       an RGB image becomes grayscale with :data:`LUMA_WEIGHTS` (ITU-R BT.601) when
       ``cfg.channels == 1``;
    2. geometry (only when ``cfg.size`` is set): ``resize`` stretches to ``size``;
       ``letterbox`` keeps the aspect ratio, scales the image to fit inside ``size``
       and pads symmetrically with 0 (black; the extra pixel of an odd padding goes
       after). Interpolation is bilinear (trilinear for 3D) with
       ``align_corners=False``, antialiased when a 2D axis shrinks;
    3. normalisation: ``(x - mean) / std`` per channel (padding is normalised too).

    Parameters
    ----------
    cfg : PreprocessConfig
        The ``preprocess`` section of the run config. ``window`` and
        ``use_file_window`` are applied by the image reader, not here.
    spatial_dims : {2, 3}
        2 for images (H, W[, 3]); 3 for volumes (D, H, W[, 3]), resized trilinearly
        without antialiasing.
    size : tuple of int, optional
        Overrides ``cfg.size``; needs ``spatial_dims`` entries. With
        ``spatial_dims=3`` a 2-entry ``cfg.size`` resizes in-plane (H, W) and keeps D.

    Examples
    --------
    >>> pre = Preprocessor(PreprocessConfig(size=(224, 224), channels=3))
    >>> x, geom = pre(scan.pixels)            # (3, 224, 224), Geometry
    >>> saliency = pre.invert_map(map_224, geom)   # back to (H, W)
    """

    def __init__(
        self,
        cfg: PreprocessConfig,
        *,
        spatial_dims: int = 2,
        size: Sequence[int] | None = None,
    ) -> None:
        if not isinstance(cfg, PreprocessConfig):
            raise param_error("cfg", "Preprocessor", "a PreprocessConfig", type(cfg).__name__)
        if spatial_dims not in (2, 3):
            raise param_error("spatial_dims", "Preprocessor", "2 or 3", spatial_dims)
        size = cfg.size if size is None else tuple(size)
        if size is not None:
            size = tuple(size)
            if len(size) not in (2, spatial_dims) or not all(
                isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1
                for s in size
            ):
                raise param_error(
                    "size",
                    "Preprocessor",
                    f"{spatial_dims} positive ints (or 2 for in-plane resizing)",
                    size,
                )
            size = tuple(int(s) for s in size)
        self.cfg = cfg
        self.spatial_dims = spatial_dims
        self.size: tuple[int, ...] | None = size
        self.channels = int(cfg.channels)
        shape = (-1,) + (1,) * spatial_dims
        self._mean = torch.tensor(cfg.mean, dtype=torch.float32).reshape(shape)
        self._std = torch.tensor(cfg.std, dtype=torch.float32).reshape(shape)

    def __repr__(self) -> str:
        return (
            f"Preprocessor(size={self.size}, mode={self.cfg.resize_mode!r}, "
            f"channels={self.channels}, mean={self.cfg.mean}, std={self.cfg.std})"
        )

    # -- forward -------------------------------------------------------------------------

    def _as_array(self, pixels: Any) -> np.ndarray:
        arr = getattr(pixels, "pixels", pixels)
        if isinstance(arr, torch.Tensor):
            arr = arr.detach().cpu().numpy()
        if not isinstance(arr, np.ndarray):
            raise InputDataError(BAD_PIXELS_TYPE.format(got=type(pixels).__name__))
        if not np.issubdtype(arr.dtype, np.floating):
            raise InputDataError(BAD_DTYPE.format(dtype=arr.dtype))
        nd = self.spatial_dims
        ok_shape = arr.ndim == nd or (arr.ndim == nd + 1 and arr.shape[-1] in (1, 3))
        if not ok_shape:
            msg = BAD_SHAPE_2D if nd == 2 else BAD_SHAPE_3D
            raise InputDataError(msg.format(shape=arr.shape))
        if arr.size == 0:
            raise InputDataError(EMPTY_IMAGE.format(shape=arr.shape))
        lo, hi = float(arr.min()), float(arr.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            n = int(np.count_nonzero(~np.isfinite(arr)))
            raise InputDataError(NON_FINITE.format(n=n))
        if lo < 0.0 or hi > 1.0:
            raise InputDataError(BAD_RANGE.format(lo=lo, hi=hi))
        return arr

    def _target_shape(self, original: tuple[int, ...]) -> tuple[int, ...]:
        if self.size is None:
            return original
        if len(self.size) == len(original):
            return self.size
        return (original[0], *self.size)  # 3D volume, in-plane size

    def geometry(self, original_shape: Sequence[int]) -> Geometry:
        """The :class:`Geometry` this preprocessor gives an image of ``original_shape``.

        Parameters
        ----------
        original_shape : sequence of int
            Spatial shape (H, W) or (D, H, W).
        """
        orig = tuple(int(s) for s in original_shape)
        target = self._target_shape(orig)
        nd = len(orig)
        if self.size is None or target == orig:
            mode = "none" if self.size is None else self.cfg.resize_mode
            zeros = (0,) * nd
            return Geometry(orig, orig, orig, (1.0,) * nd, zeros, zeros, mode)
        if self.cfg.resize_mode == "resize":
            content = target
        else:
            # letterbox: one scale for every resized axis (depth is kept for in-plane sizes)
            axes = range(nd) if len(self.size) == nd else range(1, nd)
            s = min(target[i] / orig[i] for i in axes)
            content = tuple(
                max(1, min(target[i], round(orig[i] * s))) if i in axes else orig[i]
                for i in range(nd)
            )
        pad_total = [t - c for t, c in zip(target, content, strict=True)]
        before = tuple(p // 2 for p in pad_total)
        after = tuple(p - b for p, b in zip(pad_total, before, strict=True))
        scale = tuple(c / o for c, o in zip(content, orig, strict=True))
        return Geometry(orig, target, content, scale, before, after, self.cfg.resize_mode)

    def __call__(self, pixels: Any) -> tuple[torch.Tensor, Geometry]:
        """Preprocess one image.

        Parameters
        ----------
        pixels : ndarray of shape (H, W), (H, W, 3), (D, H, W) or (D, H, W, 3), or ScanImage
            Float pixels in [0, 1]; any object with a ``.pixels`` array is accepted.

        Returns
        -------
        tensor : Tensor of shape (C, h, w) or (C, d, h, w), float32
        geometry : Geometry

        Raises
        ------
        InputDataError
            Wrong type, dtype, shape, non-finite values or values outside [0, 1].
        """
        arr = self._as_array(pixels)
        nd = self.spatial_dims
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        if x.dim() == nd:
            x = x.unsqueeze(0)
        else:
            x = x.movedim(-1, 0)  # channels first
        if x.shape[0] == 3 and self.channels == 1:
            w = torch.tensor(LUMA_WEIGHTS, dtype=torch.float32).reshape((3,) + (1,) * nd)
            x = (x * w).sum(0, keepdim=True)
        elif x.shape[0] == 1 and self.channels == 3:
            x = x.expand(3, *x.shape[1:])
        geom = self.geometry(x.shape[1:])
        if geom.content_shape != geom.original_shape:
            x = _resize(x.unsqueeze(0).contiguous(), geom.content_shape)[0]
            # antialiased bilinear can overshoot by a rounding error; stay inside [0, 1]
            x = x.clamp_(0.0, 1.0)
        if any(geom.pad_before) or any(geom.pad_after):
            pad: list[int] = []
            for b, a in zip(reversed(geom.pad_before), reversed(geom.pad_after), strict=True):
                pad += [b, a]
            x = F.pad(x, pad, mode="constant", value=0.0)
        x = (x - self._mean) / self._std
        return x.contiguous(), geom

    def batch(self, images: Sequence[Any]) -> tuple[torch.Tensor, list[Geometry]]:
        """Preprocess several images into one batch.

        Parameters
        ----------
        images : sequence of ndarray or ScanImage

        Returns
        -------
        batch : Tensor of shape (N, C, h, w) or (N, C, d, h, w), float32
        geometries : list of Geometry, one per image

        Raises
        ------
        InputDataError
            Empty sequence, a bad image, or images that preprocess to different shapes
            (no ``size`` configured).
        """
        if isinstance(images, (np.ndarray, torch.Tensor)) or not isinstance(images, Sequence):
            raise InputDataError(
                "expected a sequence (list or tuple) of images, got "
                f"{type(images).__name__}; wrap a single image in a list"
            )
        if len(images) == 0:
            raise InputDataError(EMPTY_BATCH)
        tensors, geoms = [], []
        for i, img in enumerate(images):
            try:
                t, g = self(img)
            except MedlensError as exc:
                raise type(exc)(f"image {i}: {exc.message}", source=exc.source) from None
            tensors.append(t)
            geoms.append(g)
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise InputDataError(MIXED_SHAPES.format(shapes=sorted(shapes)))
        return torch.stack(tensors), geoms

    # -- inverse -------------------------------------------------------------------------

    def invert_map(self, map: Any, geometry: Geometry) -> Any:
        """Bring a map from model-input space back onto the original pixel grid.

        The padding added by letterboxing is cropped, then the content is resized to
        the original shape with bilinear interpolation (trilinear in 3D),
        ``align_corners=False``, antialiased when a 2D axis shrinks. When no resize
        happened the map is only cropped, so an identity round trip is exact.

        Parameters
        ----------
        map : ndarray or Tensor of shape (h, w) or (K, h, w) (3D: (d, h, w) or (K, d, h, w))
            E.g. a saliency map for one image. Integer maps are converted to float32.
        geometry : Geometry
            The geometry returned with that image by :meth:`__call__`.

        Returns
        -------
        ndarray or Tensor of shape (H, W) or (K, H, W)
            Same kind (NumPy or torch, and device) as ``map``; floating dtype kept.

        Raises
        ------
        InputDataError
            The map shape does not match ``geometry.input_shape``.
        """
        if not isinstance(geometry, Geometry):
            raise param_error("geometry", "invert_map", "a Geometry", type(geometry).__name__)
        is_numpy = not isinstance(map, torch.Tensor)
        t = torch.as_tensor(np.asarray(map)) if is_numpy else map
        nd = len(geometry.input_shape)
        shape = tuple(t.shape)
        if not (t.dim() in (nd, nd + 1) and shape[-nd:] == geometry.input_shape):
            inner = ", ".join(str(s) for s in geometry.input_shape)
            raise InputDataError(
                BAD_MAP_SHAPE.format(
                    expected=geometry.input_shape, expected_inner=inner, shape=shape
                )
            )
        if not t.is_floating_point():
            t = t.to(torch.float32)
        squeeze = t.dim() == nd
        if squeeze:
            t = t.unsqueeze(0)
        crop = tuple(
            slice(b, b + c)
            for b, c in zip(geometry.pad_before, geometry.content_shape, strict=True)
        )
        t = t[(slice(None), *crop)]
        if geometry.content_shape != geometry.original_shape:
            t = _resize(t.unsqueeze(0).contiguous(), geometry.original_shape)[0]
        if squeeze:
            t = t[0]
        return np.array(t.numpy()) if is_numpy else t.contiguous()
