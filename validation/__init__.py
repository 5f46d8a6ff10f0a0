"""medlens.validation: clinical performance with confidence intervals, calibration, cohorts."""

from __future__ import annotations

__all__: list[str] = []
