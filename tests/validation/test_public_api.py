from __future__ import annotations

import dataclasses

import pytest

import medlens.validation as v


def test_all_unique_and_importable():
    # sorting of __all__ is checked for every package in tests/test_packaging.py
    assert len(set(v.__all__)) == len(v.__all__)
    for name in v.__all__:
        assert hasattr(v, name), name


def test_results_are_frozen():
    est = v.ProportionEstimate(0.5, 0.1, 0.9, "wilson", 1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        est.estimate = 1.0  # type: ignore[misc]
