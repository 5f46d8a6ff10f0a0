"""Ingest overhead: medlens.io.read_image vs raw pydicom decode of the same files.

Writes synthetic 512x512 16-bit CT-like DICOM files to a temporary folder: a set
of uncompressed files (``--n``, 200 by default), a set of RLE Lossless files and a
set of JPEG 2000 Lossless files. For each set it times, on the same files:

* reference: ``pydicom.dcmread(path).pixel_array`` (raw decode, stored values)
* medlens:   ``read_image(path, window=(40, 400))`` (modality LUT + window +
  scaling to float32 [0, 1]) and ``read_image(path)`` (fixed stored range)

Every call starts from the path (a cold ``dcmread``, nothing cached between
calls or repeats; the OS file cache is warm for both sides alike), with the
garbage collector paused while timing. Two schedules, each repeated:

* interleaved file by file: the three functions take turns on each file, in an
  order that rotates from file to file and repeat to repeat;
* one block per function: each function reads every file in turn (its steady
  state), the block order rotating from repeat to repeat.

They differ by cache effects: in blocks each side reuses the memory its own
previous call just freed, which helps pydicom's smaller footprint (it returns
int16, we return float32). Each repeat gives a total time per function; the
printed ms/file is the median over repeats and the overhead is the median of
the per-repeat paired ratios medlens / reference (measured in the same repeat,
so slow phases of a shared machine hit both), with their min..max. Before
timing, ``read_image`` is checked against the window computed independently
from pydicom's array, so the benchmark cannot time a reader that does nothing.

Goal (issue 2): overhead <= 10 % in both schedules.

Usage: python benchmarks/bench_ingest.py [--n 200] [--rle 50] [--j2k 10] [--repeats 7]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from medlens.io import read_image

WINDOW = (40.0, 400.0)
SLOPE, INTERCEPT = 1.0, -1024.0


def _write(path: Path, pixels: np.ndarray, compress: str | None = None) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.Manufacturer = "CT", "Bench"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
    ds.PixelData = pixels.astype("<i2").tobytes()
    if compress == "rle":
        ds.compress(RLELossless)
    elif compress == "j2k":
        ds.compress(JPEG2000Lossless)
    ds.save_as(path, enforce_file_format=True)


def make_files(folder: Path, counts: dict[str, int], size: int) -> dict[str, list[Path]]:
    """Write ``counts[kind]`` CT-like files of each kind ('uncompressed', 'rle', 'j2k')."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.4 * size) ** 2
    files: dict[str, list[Path]] = {}
    for kind, n in counts.items():
        files[kind] = []
        for i in range(n):
            img = np.where(body, 1024 + 40, 0) + rng.normal(0, 20, (size, size))
            img = np.clip(img, 0, 4095).astype(np.int16)
            path = folder / f"{kind}_{i:04d}.dcm"
            _write(path, img, None if kind == "uncompressed" else kind)
            files[kind].append(path)
    return files


def reference(p: Path) -> np.ndarray:
    return pydicom.dcmread(p).pixel_array


def medlens_window(p: Path) -> np.ndarray:
    return read_image(p, window=WINDOW).pixels


def medlens_range(p: Path) -> np.ndarray:
    return read_image(p).pixels


FUNCTIONS: dict[str, Callable[[Path], np.ndarray]] = {
    "reference": reference,
    "window": medlens_window,
    "range": medlens_range,
}


def check(path: Path) -> None:
    """read_image must give the window computed independently from pydicom's array."""
    stored = pydicom.dcmread(path).pixel_array.astype(np.float64)
    center, width = WINDOW
    expected = np.clip((stored * SLOPE + INTERCEPT - (center - width / 2)) / width, 0, 1)
    got = read_image(path, window=WINDOW).pixels
    if got.dtype != np.float32 or got.shape != expected.shape:
        raise SystemExit(f"{path.name}: read_image gave {got.dtype} {got.shape}")
    if not np.allclose(got, expected, rtol=0, atol=1e-6):
        raise SystemExit(f"{path.name}: read_image pixels differ from the reference window")


def time_set(paths: list[Path], repeats: int, *, per_file: bool) -> dict[str, list[float]]:
    """Per-repeat total seconds of each function over ``paths``.

    ``per_file``: the functions take turns on each file (who goes first rotates
    from file to file). Otherwise each function reads all files in one block
    (its steady state: memory and caches recycled by its own previous call),
    with the block order rotating from repeat to repeat.
    """
    names = list(FUNCTIONS)
    totals: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter
    for r in range(repeats):
        spent = dict.fromkeys(names, 0.0)
        gc.collect()
        gc.disable()
        try:
            if per_file:
                for i, path in enumerate(paths):
                    k = (r + i) % len(names)
                    for name in names[k:] + names[:k]:
                        fn = FUNCTIONS[name]
                        t0 = clock()
                        fn(path)
                        spent[name] += clock() - t0
            else:
                k = r % len(names)
                for name in names[k:] + names[:k]:
                    fn = FUNCTIONS[name]
                    t0 = clock()
                    for path in paths:
                        fn(path)
                    spent[name] += clock() - t0
        finally:
            gc.enable()
        for name in names:
            totals[name].append(spent[name])
    return totals


def report(label: str, n: int, totals: dict[str, list[float]]) -> str:
    per_file = {k: 1e3 * statistics.median(v) / n for k, v in totals.items()}
    line = f"{label:>12} ({n:3d} files): pydicom {per_file['reference']:7.3f} ms"
    for name, title in (("window", "read_image(window)"), ("range", "read_image()")):
        ratios = [o / r for o, r in zip(totals[name], totals["reference"], strict=True)]
        med = statistics.median(ratios)
        line += (
            f" | {title} {per_file[name]:7.3f} ms, overhead {100 * (med - 1):+5.1f} % "
            f"({100 * (min(ratios) - 1):+.1f}..{100 * (max(ratios) - 1):+.1f})"
        )
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="uncompressed files")
    parser.add_argument("--rle", type=int, default=50, help="RLE Lossless files")
    parser.add_argument("--j2k", type=int, default=10, help="JPEG 2000 Lossless files")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    counts = {"uncompressed": args.n, "rle": args.rle, "j2k": args.j2k}
    labels = {"uncompressed": "uncompressed", "rle": "RLE", "j2k": "JPEG 2000"}

    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp), {k: n for k, n in counts.items() if n > 0}, args.size)
        for paths in files.values():
            check(paths[0])
            for path in paths:  # warm-up: imports, decoder plugins, OS file cache
                for fn in FUNCTIONS.values():
                    fn(path)
        print(
            f"{args.size}x{args.size} int16 CT files, window={WINDOW}, {args.repeats} repeats; "
            "median ms/file; overhead = median (min..max) over repeats of medlens / pydicom"
        )
        for per_file, title in (
            (True, "calls interleaved file by file"),
            (False, "one block per function"),
        ):
            print(f"-- {title}")
            for kind, paths in files.items():
                totals = time_set(paths, args.repeats, per_file=per_file)
                print(report(labels[kind], len(paths), totals))


if __name__ == "__main__":
    main()
