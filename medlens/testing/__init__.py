"""Tiny models and synthetic cohorts for tests, benchmarks and the demo."""

from __future__ import annotations

from ._cohort import (
    GROUND_TRUTH_COLUMNS,
    SITES,
    ShortcutSpec,
    SiteProfile,
    SyntheticCohort,
    make_synthetic_cohort,
)
from ._models import TinyCNN

__all__ = [
    "GROUND_TRUTH_COLUMNS",
    "SITES",
    "ShortcutSpec",
    "SiteProfile",
    "SyntheticCohort",
    "TinyCNN",
    "make_synthetic_cohort",
]
