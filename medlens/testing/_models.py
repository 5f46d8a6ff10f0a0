"""Tiny CNNs for tests and the demo: 2D or 3D, 1 or 3 input channels."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TinyCNN"]


class TinyCNN(nn.Module):
    """A small convolutional classifier: ``depth`` conv blocks, global pooling, a linear head.

    Parameters
    ----------
    in_channels : int
        Input channels (1 for grayscale, 3 for RGB-style models).
    num_outputs : int
        Logits produced (1 for a binary sigmoid head).
    width : int
        Channels of the first block; each further block doubles it.
    depth : int
        Number of conv blocks; all but the last halve the spatial size.
    spatial_dims : int
        2 for images (N, C, H, W), 3 for volumes (N, C, D, H, W).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_outputs: int = 1,
        *,
        width: int = 8,
        depth: int = 3,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        gap = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
        layers: list[nn.Module] = []
        ch = in_channels
        for i in range(depth):
            out = width * 2**i
            layers += [conv(ch, out, 3, padding=1), nn.ReLU()]
            if i < depth - 1:
                layers.append(pool(2))
            ch = out
        self.features = nn.Sequential(*layers)
        self.pool = gap(1)
        self.classifier = nn.Linear(ch, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
