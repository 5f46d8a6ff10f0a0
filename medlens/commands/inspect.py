"""``medlens inspect FILE``: show what the reader sees (no patient identifiers)."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from .._cli_types import WindowAction

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "inspect",
        help="show how medlens reads an image: shape, value range, transforms, cohort attributes",
        description="Read one image as medlens does and print what it sees. "
        "No patient identifier is printed.",
    )
    p.add_argument("file", help="DICOM, PNG, JPEG, TIFF or NPY file")
    p.add_argument(
        "--window",
        nargs=2,
        type=float,
        action=WindowAction,
        metavar=("CENTER", "WIDTH"),
        help="VOI window in modality units (e.g. --window 40 400 for CT soft tissue)",
    )
    p.add_argument(
        "--use-file-window",
        action="store_true",
        help="use the DICOM file's own Window Center/Width or VOI LUT",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..io import read_image
    from ..io._cohort import cohort_attributes

    image = read_image(args.file, window=args.window, use_file_window=args.use_file_window)
    px = image.pixels
    lines = [
        f"file:       {image.source}",
        f"shape:      {px.shape}",
        f"dtype:      {px.dtype}",
        f"range:      min={float(np.min(px)):.6g} max={float(np.max(px)):.6g} mean={float(np.mean(px)):.6g}",
        "meta:",
    ]
    for key, value in vars(image.meta).items():
        if value is not None:
            lines.append(f"  {key}: {value}")
    lines.append("transforms:")
    lines.extend(f"  {i}. {t}" for i, t in enumerate(image.transforms, 1))
    if image.meta.sop_class_uid is not None:
        import warnings

        import pydicom

        with warnings.catch_warnings():  # already reported under "reader warnings"
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(args.file, stop_before_pixels=True)
        lines.append("cohort attributes:")
        for key, value in cohort_attributes(ds).items():
            lines.append(f"  {key}: {value}")
    if image.warnings:
        lines.append("reader warnings:")
        lines.extend(f"  - {w}" for w in image.warnings)
    print("\n".join(lines))
    return 0
