"""Shared fixtures for the explainer tests: tiny seeded models and 32x32 images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medlens.testing import TinyCNN

#: fast settings per method (few samples); every registered method must appear here
FAST: dict[str, dict] = {
    "deeplift": {},
    "gradcam": {},
    "gradcam_pp": {},
    "gradient_shap": {"n_samples": 4, "stdevs": 0.1},
    "guided_backprop": {},
    "input_x_gradient": {},
    "integrated_gradients": {"n_steps": 8},
    "lime": {"num_samples": 40, "n_segments": 12},
    "occlusion": {"window": 8},
    "saliency": {},
    "scorecam": {},
    "shap": {"max_evals": 40},
    "smoothgrad": {"nt_samples": 4},
}


def blob_images(n: int = 2, channels: int = 1, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Noisy images with one bright blob each (a lesion stand-in)."""
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        cy, cx = rs.randint(size // 4, size - size // 4, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0)
        img = blob + 0.2 * rs.randn(size, size)
        out.append(np.repeat(img[None], channels, axis=0))
    return torch.as_tensor(np.stack(out), dtype=torch.float32)


def tiny(
    in_channels: int = 1, num_outputs: int = 2, spatial_dims: int = 2, seed: int = 0
) -> nn.Module:
    torch.manual_seed(seed)
    return TinyCNN(in_channels, num_outputs, width=4, depth=3, spatial_dims=spatial_dims).eval()


class Normalising(nn.Module):
    """A model that normalises inside forward (as exported clinical models often do)."""

    def __init__(self, inner: nn.Module, mean: float = 0.2, std: float = 0.5) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner((x - self.mean) / self.std)


@pytest.fixture
def model() -> nn.Module:
    return tiny()


@pytest.fixture
def images() -> torch.Tensor:
    return blob_images()
