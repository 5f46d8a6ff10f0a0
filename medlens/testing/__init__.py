"""Tiny models and synthetic cohorts for tests, benchmarks and the demo."""

from __future__ import annotations

from ._models import TinyCNN

__all__ = ["TinyCNN"]
