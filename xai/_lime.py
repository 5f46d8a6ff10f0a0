"""LIME for scans: the lime package's algorithm with seeded, batched, on-device sampling.

What is kept from ``lime.lime_image.LimeImageExplainer.explain_instance``: the random
on/off matrix over superpixels drawn from a ``RandomState`` (first sample all on), hidden
superpixels filled with ``hide_color`` (or each superpixel's per-channel mean), the cosine
distance to the all-on sample, the kernel ``sqrt(exp(-d**2 / kernel_width**2))``, and the
weighted ridge regression with feature selection by ``lime.lime_base.LimeBase`` itself.

What medlens changes: superpixels are SLIC on intensity with a configurable count (sensible
for grayscale scans), the sampling ``RandomState`` is seeded per image (lime's
``random_seed`` only seeds the segmentation, lime #477), and the perturbed images are built
and scored as whole chunks on the model's device under ``torch.inference_mode`` (one gather
and one ``torch.where`` per chunk) instead of one deep copy and one boolean mask per hidden
superpixel per sample; with ``batch_size=None`` the chunk is the size measured fastest for
the model, device and input shape (see ``medlens.xai._chunking``).
Given the same segmentation, seed and ``num_samples``, the superpixel weights equal those
of ``LimeImageExplainer(random_state=seed).explain_instance(..., random_seed=seed)``
(tests/xai/test_lime.py checks this to 1e-5 of the largest weight; the float32
model outputs differ by 1 ulp between the two call paths).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import sklearn.metrics
import torch
from lime import lime_base
from skimage.segmentation import slic
from torch import Tensor, nn

from medlens._errors import ExplanationError, param_error

from ._base import Explainer, _register, head_scores

__all__ = ["LimeExplainer", "slic_segments"]

BAD_SEGMENTS = "segmentation_fn must return an int array of shape {expected}; got {got}."
FEATURE_SELECTIONS = ("auto", "none", "forward_selection", "highest_weights", "lasso_path")


def slic_segments(
    image: np.ndarray, *, n_segments: int = 50, compactness: float = 0.1, sigma: float = 0.0
) -> np.ndarray:
    """SLIC superpixels on intensity, labelled 0..S-1.

    Parameters
    ----------
    image : ndarray of shape (C, H, W)
        Model input; channels are averaged into one intensity image, which is min-max scaled
        to [0, 1] for the segmentation only (so ``compactness`` means the same for every
        scan).
    n_segments, compactness, sigma
        Passed to :func:`skimage.segmentation.slic` (``channel_axis=None``).

    Returns
    -------
    ndarray of shape (H, W), int64
    """
    gray = np.asarray(image, dtype=np.float64).mean(axis=0)
    lo, hi = float(gray.min()), float(gray.max())
    gray = (gray - lo) / (hi - lo) if hi > lo else np.zeros_like(gray)
    seg = slic(
        gray,
        n_segments=n_segments,
        compactness=compactness,
        sigma=sigma,
        channel_axis=None,
        start_label=0,
    )
    return np.unique(seg, return_inverse=True)[1].reshape(seg.shape).astype(np.int64)


def _kernel(d: np.ndarray, kernel_width: float) -> np.ndarray:
    return np.sqrt(np.exp(-(d**2) / kernel_width**2))


@_register
class LimeExplainer(Explainer):
    """Local surrogate model over superpixels (LIME), 2D images.

    Parameters
    ----------
    model, head
        See :class:`Explainer`. LIME explains the head's probability (the raw output
        without a head).
    num_samples : int
        Perturbed images per image (model evaluations); the first is the unperturbed image.
    n_segments : int
        Target number of SLIC superpixels.
    compactness : float
        SLIC compactness on the [0, 1]-scaled intensity.
    hide_color : float or None
        Value of hidden superpixels in model-input units; None fills each superpixel with
        its own per-channel mean (lime's default).
    kernel_width : float
        Width of the exponential kernel on the cosine distance (lime's 0.25).
    feature_selection : str
        As in lime ("auto" = forward selection up to 6 features, else highest weights).
    num_features : int or None
        Superpixels kept by the feature selection; None keeps all (lime's 100000).
    segmentation_fn : callable, optional
        ``(C, H, W) ndarray -> (H, W) int labels 0..S-1``, replacing SLIC.

    Notes
    -----
    ``diagnostics`` holds ``segments`` (per image), ``r2`` and ``intercept`` (N, T).

    References
    ----------
    Ribeiro, Singh, Guestrin. "Why Should I Trust You?": Explaining the Predictions of Any
    Classifier. KDD 2016.
    """

    name = "lime"
    shares_targets = True
    uses_gradients = False
    spatial_dims = (2,)
    fidelity_param = "num_samples"
    auto_chunk = True

    def __init__(
        self,
        model: nn.Module,
        *,
        head: Any | None = None,
        num_samples: int = 1000,
        n_segments: int = 50,
        compactness: float = 0.1,
        hide_color: float | None = None,
        kernel_width: float = 0.25,
        feature_selection: str = "auto",
        num_features: int | None = None,
        segmentation_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        super().__init__(model, head=head)
        for pname, v, lo in (("num_samples", num_samples, 2), ("n_segments", n_segments, 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise param_error(pname, "LimeExplainer", f"an int >= {lo}", v)
        if num_features is not None and (not isinstance(num_features, int) or num_features < 1):
            raise param_error("num_features", "LimeExplainer", "an int >= 1 or None", num_features)
        if hide_color is not None and (
            isinstance(hide_color, bool) or not isinstance(hide_color, (int, float))
        ):
            raise param_error("hide_color", "LimeExplainer", "a float or None", hide_color)
        if not isinstance(kernel_width, (int, float)) or kernel_width <= 0:
            raise param_error("kernel_width", "LimeExplainer", "a float > 0", kernel_width)
        if feature_selection not in FEATURE_SELECTIONS:
            raise param_error(
                "feature_selection",
                "LimeExplainer",
                f"one of {FEATURE_SELECTIONS}",
                feature_selection,
            )
        if segmentation_fn is not None and not callable(segmentation_fn):
            raise param_error(
                "segmentation_fn", "LimeExplainer", "a callable or None", segmentation_fn
            )
        self.num_samples = int(num_samples)
        self.n_segments = int(n_segments)
        self.compactness = float(compactness)
        self.hide_color = hide_color
        self.kernel_width = float(kernel_width)
        self.feature_selection = feature_selection
        self.num_features = num_features
        self.segmentation_fn = segmentation_fn

    def _evaluations_per_job(self, n_targets: int, spatial: tuple[int, ...], channels: int) -> int:
        return self.num_samples

    def segment(self, image: np.ndarray) -> np.ndarray:
        """Superpixels of one image (C, H, W) -> (H, W) labels 0..S-1."""
        if self.segmentation_fn is None:
            return slic_segments(image, n_segments=self.n_segments, compactness=self.compactness)
        seg = np.asarray(self.segmentation_fn(image))
        if seg.shape != image.shape[1:] or not np.issubdtype(seg.dtype, np.integer):
            raise ExplanationError(
                BAD_SEGMENTS.format(expected=image.shape[1:], got=f"{seg.dtype} {seg.shape}")
            )
        return seg

    def fill_image(self, image_hwc: np.ndarray, segments: np.ndarray) -> np.ndarray:
        """The image whose superpixels replace hidden ones (lime's ``fudged_image``).

        With ``hide_color=None`` every superpixel takes its own per-channel mean, computed
        as lime does (``np.mean`` over the superpixel's pixels in raster order, in the
        image's dtype, so the values are bit-identical) but in one pass over the pixels
        instead of one boolean mask per superpixel.
        """
        if self.hide_color is not None:
            return np.full_like(image_hwc, self.hide_color)
        flat_seg = segments.ravel()
        order = np.argsort(flat_seg, kind="stable")  # superpixel by superpixel, raster order
        labels, starts = np.unique(flat_seg[order], return_index=True)
        ends = np.append(starts[1:], order.size)
        channels = np.ascontiguousarray(image_hwc.reshape(-1, image_hwc.shape[-1]).T[:, order])
        means = np.empty((int(labels.max()) + 1, channels.shape[0]), dtype=image_hwc.dtype)
        for label, lo, hi in zip(labels.tolist(), starts.tolist(), ends.tolist(), strict=True):
            for c in range(channels.shape[0]):
                means[label, c] = np.mean(channels[c, lo:hi])
        return means[segments]

    def _reset(self, n_images: int, n_targets: int) -> None:
        self._r2 = np.full((n_images, n_targets), np.nan)
        self._intercept = np.full((n_images, n_targets), np.nan)
        self._segments: list[np.ndarray | None] = [None] * n_images
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def _attribute(
        self, x: Tensor, targets: Tensor, *, batch_size: int | None, seeds: Sequence[int]
    ) -> Tensor:
        out = []
        self._pending = []
        for b in range(x.shape[0]):
            out.append(self._one(x[b], targets[b], batch_size, seeds[b]))
        return torch.stack(out)

    def _one(self, x1: Tensor, targets: Tensor, batch_size: int | None, seed: int) -> Tensor:
        image = x1.detach().cpu().numpy()
        segments = self.segment(image)
        rs = np.random.RandomState(seed % 2**32)
        n_features = np.unique(segments).shape[0]
        data = rs.randint(0, 2, self.num_samples * n_features).reshape(
            (self.num_samples, n_features)
        )
        data[0, :] = 1
        labels = self._scores(x1, segments, data, batch_size)
        distances = sklearn.metrics.pairwise_distances(
            data, data[0].reshape(1, -1), metric="cosine"
        ).ravel()
        base = lime_base.LimeBase(
            partial(_kernel, kernel_width=self.kernel_width), False, random_state=rs
        )
        num_features = 100000 if self.num_features is None else self.num_features
        weights = np.zeros((targets.shape[0], n_features))
        r2, icpt = [], []
        for j, t in enumerate(targets.tolist()):
            intercept, local_exp, score, _ = base.explain_instance_with_data(
                data, labels, distances, t, num_features, feature_selection=self.feature_selection
            )
            for f, w in local_exp:
                weights[j, f] = w
            r2.append(score)
            icpt.append(intercept)
        self._pending.append((segments, np.asarray(r2), np.asarray(icpt)))
        return torch.as_tensor(weights[:, segments], dtype=torch.float32)

    def _scores(
        self, x1: Tensor, segments: np.ndarray, data: np.ndarray, batch_size: int | None
    ) -> np.ndarray:
        """Model scores (num_samples, K) of the perturbed images, built chunk by chunk.

        Sample i keeps the pixels of the superpixels it switches on and takes the filled
        image elsewhere: one gather of its on/off row by the segment map and one
        ``torch.where`` per chunk, in the input's dtype and on its device, under
        ``torch.inference_mode``; the same pixels as lime's per-sample masked copies.
        """
        dev = x1.device
        image_hwc = np.moveaxis(x1.detach().cpu().numpy(), 0, -1)
        fudged = np.moveaxis(self.fill_image(image_hwc, segments), -1, 0)
        fudged_t = torch.as_tensor(np.ascontiguousarray(fudged), device=dev, dtype=x1.dtype)
        seg_flat = torch.as_tensor(segments.ravel(), device=dev)
        data_t = torch.as_tensor(data, device=dev, dtype=torch.bool)
        x_row = x1.reshape(1, x1.shape[0], -1)
        fill_row = fudged_t.reshape(1, x1.shape[0], -1)
        step = self.num_samples if batch_size is None else batch_size
        preds = []
        with torch.inference_mode():
            for i in range(0, self.num_samples, step):
                keep = data_t[i : i + step].index_select(1, seg_flat)  # (B, H*W) on/off
                imgs = torch.where(keep[:, None], x_row, fill_row).reshape(-1, *x1.shape)
                preds.append(head_scores(self._forward_rows(imgs), self.head).double().cpu())
        return torch.cat(preds).numpy()

    def _store(self, rows: Sequence[int], cols: Sequence[int]) -> None:
        for r, (seg, r2, icpt) in zip(rows, self._pending, strict=True):
            self._segments[r] = seg
            self._r2[r, : len(r2)] = r2
            self._intercept[r, : len(icpt)] = icpt

    def _diagnostics(self) -> dict[str, Any]:
        return {
            "segments": tuple(self._segments),
            "r2": self._r2.copy(),
            "intercept": self._intercept.copy(),
        }

    def settings(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "n_segments": self.n_segments,
            "compactness": self.compactness,
            "hide_color": self.hide_color,
            "kernel_width": self.kernel_width,
            "feature_selection": self.feature_selection,
            "num_features": self.num_features,
            "segmentation": "slic" if self.segmentation_fn is None else "custom",
            "sampling": "RandomState(seed + image index)",
        }
