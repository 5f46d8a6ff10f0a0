"""medlens.reports: figures, PDF and JSON evidence."""

from __future__ import annotations

__all__: list[str] = []
