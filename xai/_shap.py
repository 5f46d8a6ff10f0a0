"""SHAP for scans: shap's Partition explainer (Owen values) with an image masker, vectorised.

The algorithm is ``shap.explainers.PartitionExplainer.owen`` with ``fixed_context=None``
over the axis-aligned partition tree of ``shap.maskers.Image`` (features are the
(row, column, channel) values of the image; each node splits its longest axis in half,
rows before columns before channels). It keeps shap's priority queue (largest
``max|f(child) - f(parent)| * weight`` first, ties broken by a normal draw), its round
structure (``masks_per_round`` masks per model call, shap's ``batch_size``) and its
``max_evals`` budget, and spreads each node's credit evenly over its pixels as
``lower_credit`` does.

What medlens changes: nodes are boxes instead of rows of a sparse mask matrix, masked
images are built on the model's device with one ``torch.where`` per round, all images of
a batch advance in lockstep so one forward pass serves every image, forward passes run under
``torch.inference_mode`` in chunks of the size measured fastest for the model, device and
input shape when ``batch_size`` is None (see ``medlens.xai._chunking``), and the tie-break
draws come from a ``RandomState(seed + index)`` instead of numpy's global generator.
Given the same ``max_evals``, masker and round size, the Shapley values equal those of
``shap.explainers.Partition(f, shap.maskers.Image(masker, shape))(x, max_evals=...,
batch_size=masks_per_round)`` after ``np.random.seed(seed)`` (tests/xai/test_shap.py
checks this to 1e-6 of the largest value).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from medlens._errors import param_error

from ._base import Explainer, _register, head_scores

__all__ = ["ShapExplainer"]

_BLUR = re.compile(r"^blur\((\d+),\s*(\d+)\)$")
Box = tuple[int, int, int, int, int, int]


def _split(box: Box) -> tuple[Box, Box]:
    """shap.maskers.Image's split rule: halve the longest of rows/columns, else channels."""
    x0, x1, y0, y1, z0, z1 = box
    xw, yw = x1 - x0, y1 - y0
    if xw >= yw and xw > 1:
        m = x0 + xw // 2
        return (x0, m, y0, y1, z0, z1), (m, x1, y0, y1, z0, z1)
    if yw > 1:
        m = y0 + yw // 2
        return (x0, x1, y0, m, z0, z1), (x0, x1, m, y1, z0, z1)
    m = z0 + (z1 - z0) // 2
    return (x0, x1, y0, y1, z0, m), (x0, x1, y0, y1, m, z1)


def _size(box: Box) -> int:
    return (box[1] - box[0]) * (box[3] - box[2]) * (box[5] - box[4])


def _sl(box: Box) -> tuple[slice, slice, slice]:
    return slice(box[0], box[1]), slice(box[2], box[3]), slice(box[4], box[5])


class _Owen:
    """The state of shap's ``owen`` recursion for one image."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        f00: np.ndarray,
        f11: np.ndarray,
        max_evals: int,
        seed: int,
    ) -> None:
        self.shape = shape
        self.f00, self.f11 = f00, f11
        self.max_evals = max_evals
        self.rs = np.random.RandomState(seed % 2**32)
        self.dvalues: dict[Box, np.ndarray] = {}
        root: Box = (0, shape[0], 0, shape[1], 0, shape[2])
        self.q: list[Any] = [(0, 0, (np.zeros(shape, dtype=bool), f00, f11, root, 1.0))]
        self.eval_count = 0
        self.done = False
        self.args: list[Any] = []

    def _credit(self, box: Box, value: np.ndarray) -> None:
        if box in self.dvalues:
            self.dvalues[box] = self.dvalues[box] + value
        else:
            self.dvalues[box] = value

    def next_masks(self, per_round: int) -> list[np.ndarray]:
        """Pop the next round of work; return the masks to evaluate (may be empty)."""
        self.args = []
        masks: list[np.ndarray] = []
        while self.q and not masks:
            if self.eval_count >= self.max_evals:
                while self.q:
                    m00, f00, f11, box, w = heapq.heappop(self.q)[2]
                    self._credit(box, (f11 - f00) * w)
                break
            while (
                self.q and len(masks) < per_round and self.eval_count + len(masks) < self.max_evals
            ):
                m00, f00, f11, box, w = heapq.heappop(self.q)[2]
                if _size(box) == 1:
                    self._credit(box, (f11 - f00) * w)
                    continue
                left, right = _split(box)
                m10 = m00.copy()
                m10[_sl(left)] = True
                m01 = m00.copy()
                m01[_sl(right)] = True
                self.args.append((m00, m10, m01, f00, f11, box, left, right, w))
                masks += [m10, m01]
        if not self.q and not masks:
            self.done = True
        return masks

    def take(self, fout: np.ndarray) -> None:
        """Push the children of the round's nodes given the model outputs of its masks."""
        self.eval_count += 2 * len(self.args)
        push, randn = heapq.heappush, self.rs.randn
        for i, (m00, m10, m01, f00, f11, _box, left, right, w) in enumerate(self.args):
            f10, f01 = fout[2 * i], fout[2 * i + 1]
            nw = w / 2
            push(self.q, (-np.max(np.abs(f10 - f00)) * nw, randn(), (m00, f00, f10, left, nw)))
            push(self.q, (-np.max(np.abs(f01 - f00)) * nw, randn(), (m00, f00, f01, right, nw)))
            push(self.q, (-np.max(np.abs(f11 - f01)) * nw, randn(), (m01, f01, f11, left, nw)))
            push(self.q, (-np.max(np.abs(f11 - f10)) * nw, randn(), (m10, f10, f11, right, nw)))
        self.args = []

    def values(self) -> np.ndarray:
        """Per-feature values (H, W, C, T): each node's credit spread evenly over its box."""
        out = np.zeros((*self.shape, len(self.f00)))
        for box, v in self.dvalues.items():
            out[_sl(box)] += v / _size(box)
        return out


@_register
class ShapExplainer(Explainer):
    """Shapley values of image regions by shap's Partition (Owen) algorithm, 2D images.

    Parameters
    ----------
    model, head
        See :class:`Explainer`. SHAP explains the head's probability (the raw output without
        a head).
    max_evals : int
        Model evaluations per image, including the all-masked and unmasked ones (shap's
        default 500).
    masker : "blur", "blur(kh,kw)" or float
        Hidden features take a box-blurred copy of the image (OpenCV ``blur``; "blur" uses a
        kernel of a quarter of the image size) or a constant in model-input units.
    masks_per_round : int
        Nodes are expanded in rounds of this many masks: shap's ``batch_size``, which is part
        of the algorithm (which nodes are expanded before which results are known), unlike
        ``batch_size`` which only chunks forward passes. shap's default is 10; medlens uses
        64 because forward passes of 10 rows cost 2-3x more per row on CPU (measured in
        benchmarks/bench_xai.py); pass 10 to reproduce shap's default ordering exactly.

    Notes
    -----
    ``diagnostics['base_value']`` (N, T) is the output with everything masked; the values of
    each image add up to ``score - base_value``.

    References
    ----------
    Lundberg, Lee. A Unified Approach to Interpreting Model Predictions. NeurIPS 2017.
    """

    name = "shap"
    shares_targets = True
    uses_gradients = False
    spatial_dims = (2,)
    fidelity_param = "max_evals"
    auto_chunk = True

    def __init__(
        self,
        model: nn.Module,
        *,
        head: Any | None = None,
        max_evals: int = 500,
        masker: str | float = "blur",
        masks_per_round: int = 64,
    ) -> None:
        super().__init__(model, head=head)
        if (
            isinstance(max_evals, bool)
            or not isinstance(max_evals, (int, np.integer))
            or max_evals < 3
        ):
            raise param_error("max_evals", "ShapExplainer", "an int >= 3", max_evals)
        if (
            isinstance(masks_per_round, bool)
            or not isinstance(masks_per_round, int)
            or masks_per_round < 2
        ):
            raise param_error("masks_per_round", "ShapExplainer", "an int >= 2", masks_per_round)
        ok = (
            (isinstance(masker, (int, float)) and not isinstance(masker, bool))
            or masker == "blur"
            or (isinstance(masker, str) and _BLUR.match(masker))
        )
        if not ok:
            raise param_error("masker", "ShapExplainer", "'blur', 'blur(kh,kw)' or a float", masker)
        self.max_evals = int(max_evals)
        self.masker = masker
        self.masks_per_round = masks_per_round

    def _evaluations_per_job(self, n_targets: int, spatial: tuple[int, ...], channels: int) -> int:
        return self.max_evals

    def kernel(self, spatial: Sequence[int]) -> tuple[int, int] | None:
        """The blur kernel (kh, kw) for an image size, or None for a constant masker."""
        if not isinstance(self.masker, str):
            return None
        if self.masker == "blur":
            return max(1, spatial[0] // 4), max(1, spatial[1] // 4)
        m = _BLUR.match(self.masker)
        return int(m.group(1)), int(m.group(2))

    def background(self, image_hwc: np.ndarray) -> np.ndarray:
        """Values of hidden features (H, W, C), as shap.maskers.Image computes them."""
        k = self.kernel(image_hwc.shape[:2])
        if k is None:
            return np.full_like(image_hwc, float(self.masker))
        return cv2.blur(image_hwc, k).reshape(image_hwc.shape)

    def _reset(self, n_images: int, n_targets: int) -> None:
        self._base = np.full((n_images, n_targets), np.nan)
        self._pending: list[np.ndarray] = []

    def _attribute(
        self, x: Tensor, targets: Tensor, *, batch_size: int | None, seeds: Sequence[int]
    ) -> Tensor:
        b, c = x.shape[:2]
        hw = tuple(x.shape[2:])
        x_hwc = x.permute(0, 2, 3, 1).contiguous()
        bg = torch.stack(
            [
                torch.as_tensor(self.background(x_hwc[i].cpu().numpy()), device=x.device)
                for i in range(b)
            ]
        ).to(x.dtype)
        tg = targets.cpu().numpy()

        def evaluate(owners: list[int], masks: list[np.ndarray]) -> np.ndarray:
            m = torch.as_tensor(np.stack(masks), device=x.device)
            idx = torch.as_tensor(owners, device=x.device)
            step = m.shape[0] if batch_size is None else batch_size
            with torch.inference_mode():
                imgs = torch.where(m, x_hwc[idx], bg[idx]).permute(0, 3, 1, 2)  # channels-last
                if not self._channels_last:
                    imgs = imgs.contiguous()
                out = torch.cat(
                    [
                        head_scores(self._forward_rows(imgs[i : i + step]), self.head)
                        .double()
                        .cpu()
                        for i in range(0, imgs.shape[0], step)
                    ]
                ).numpy()
            return np.stack([out[r, tg[o]] for r, o in enumerate(owners)])

        shape = (*hw, c)
        ends = evaluate(
            [i for i in range(b) for _ in range(2)],
            [np.zeros(shape, bool), np.ones(shape, bool)] * b,
        )
        states = [
            _Owen(shape, ends[2 * i], ends[2 * i + 1], self.max_evals - 2, seeds[i])
            for i in range(b)
        ]
        while True:
            owners, masks, spans = [], [], []
            for i, st in enumerate(states):
                if st.done:
                    continue
                ms = st.next_masks(self.masks_per_round)
                spans.append((i, len(masks), len(masks) + len(ms)))
                owners += [i] * len(ms)
                masks += ms
            if not masks:
                if all(st.done for st in states):
                    break
                continue
            fout = evaluate(owners, masks)
            for i, lo, hi in spans:
                if hi > lo:
                    states[i].take(fout[lo:hi])
        self._pending = [ends[2 * i] for i in range(b)]
        maps = np.stack([st.values().sum(axis=2) for st in states])  # (B, H, W, T)
        return torch.as_tensor(np.moveaxis(maps, -1, 1), dtype=torch.float32)

    def _store(self, rows: Sequence[int], cols: Sequence[int]) -> None:
        for r, base in zip(rows, self._pending, strict=True):
            self._base[r, : len(base)] = base

    def _diagnostics(self) -> dict[str, Any]:
        return {"base_value": self._base.copy()}

    def settings(self) -> dict[str, Any]:
        return {
            "max_evals": self.max_evals,
            "masker": self.masker,
            "masks_per_round": self.masks_per_round,
            "fixed_context": None,
            "tie_break": "RandomState(seed + image index).randn",
        }
