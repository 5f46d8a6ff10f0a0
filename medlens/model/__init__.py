"""medlens.model: safe model loading, invertible preprocessing, batched prediction."""

from __future__ import annotations

__all__: list[str] = []
