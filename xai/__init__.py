"""medlens.xai: explainers behind one API, and explanation-quality checks."""

from __future__ import annotations

__all__: list[str] = []
