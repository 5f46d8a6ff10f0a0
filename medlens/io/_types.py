"""Result types of the image readers: :class:`ScanImage` and its parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ImageMeta", "ScanImage", "SourceReferences", "Transform"]


@dataclass(frozen=True)
class Transform:
    """One step of the pixel pipeline, with the exact values it used.

    Parameters
    ----------
    name : str
        Step name, e.g. ``"modality_lut"``, ``"voi_window"``, ``"invert"``, ``"scale"``.
    params : dict
        The tag values or settings the step used (printable, JSON-friendly).
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [self.name]
        for key, value in self.params.items():
            if isinstance(value, float):
                value = f"{value:g}"
            elif isinstance(value, (list, tuple)):
                value = (
                    "["
                    + ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
                    + "]"
                )
            parts.append(f"{key}={value}")
        return " ".join(parts)


@dataclass(frozen=True)
class ImageMeta:
    """What the reader knows about an image, without any patient identifier.

    Attributes are ``None`` when the file does not say (PNG/NPY files carry
    almost none of them).
    """

    modality: str | None = None
    manufacturer: str | None = None
    model_name: str | None = None
    photometric_interpretation: str | None = None
    pixel_spacing: tuple[float, float] | None = None
    view_position: str | None = None
    body_part: str | None = None
    frame_count: int = 1
    rows: int | None = None
    columns: int | None = None
    bits_stored: int | None = None
    presentation_intent: str | None = None
    sop_class_uid: str | None = None


@dataclass(frozen=True)
class SourceReferences:
    """DICOM UIDs of the source, kept to reference it from derived objects.

    They are not shown by ``repr`` and never printed in reports.
    """

    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None


@dataclass(frozen=True)
class ScanImage:
    """An image as the model sees it before preprocessing.

    Attributes
    ----------
    pixels : ndarray of float32, shape (H, W), (H, W, 3), (F, H, W) or (F, H, W, 3)
        Values in [0, 1]; bright means dense for monochrome images.
    meta : ImageMeta
        Acquisition attributes (no patient identifiers).
    transforms : tuple of Transform
        The steps applied to the stored values, in order.
    source : str
        The file the image was read from.
    references : SourceReferences
        Study/Series/SOP Instance UIDs and SOP Class UID (hidden from ``repr``).
    warnings : tuple of str
        Warnings the decoders raised while reading (e.g. excess padding), with
        long quoted values redacted.
    """

    pixels: np.ndarray
    meta: ImageMeta
    transforms: tuple[Transform, ...]
    source: str
    references: SourceReferences = field(default_factory=SourceReferences, repr=False)
    warnings: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"ScanImage(source={self.source!r}, shape={self.pixels.shape}, "
            f"dtype={self.pixels.dtype}, meta={self.meta!r}, "
            f"transforms=[{'; '.join(str(t) for t in self.transforms)}])"
        )

    @property
    def is_color(self) -> bool:
        """True when the last axis holds RGB samples."""
        return (
            self.pixels.ndim >= 3
            and self.pixels.shape[-1] == 3
            and (self.pixels.ndim == 4 or self.meta.frame_count == 1)
        )
