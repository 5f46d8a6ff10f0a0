"""Cost planner, budgets and out-of-memory halving."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medlens._errors import ExplanationError, MedlensError
from medlens.xai import get_explainer

from .conftest import FAST, blob_images, tiny


@pytest.mark.parametrize("name", sorted(FAST))
def test_plan_states_the_evaluations_explain_uses(name):
    x = blob_images()
    plan = get_explainer(name, tiny(), **FAST[name]).plan(x, batch_size=8)
    run = get_explainer(name, tiny(), **FAST[name]).explain(x, batch_size=8)
    if name == "shap":  # max_evals is a ceiling; the tree may be exhausted earlier
        assert run.evaluations <= plan.evaluations
    else:
        assert plan.evaluations == run.evaluations
    assert plan.rows_per_forward <= 8
    params_bytes = sum(p.numel() * 4 for p in tiny().parameters())
    assert plan.peak_memory_bytes > params_bytes
    assert plan.method == name


def test_peak_memory_grows_with_rows_per_forward():
    x = blob_images()
    e = get_explainer("integrated_gradients", tiny(), n_steps=32)
    assert e.plan(x, batch_size=32).peak_memory_bytes > e.plan(x, batch_size=4).peak_memory_bytes


def test_afford_an_evaluation_budget():
    x = blob_images()
    e = get_explainer("integrated_gradients", tiny())
    got = e.afford(x, evaluations=2 + 2 * (20 + 2))  # n_steps + 2 rows for the delta
    assert got == {"n_steps": 20, "evaluations": 46}
    assert e.n_steps == 50  # unchanged
    assert e.afford(x, evaluations=3) == {"n_steps": None, "evaluations": 8}
    assert get_explainer("lime", tiny()).afford(x, evaluations=1000)["num_samples"] == 499


def test_afford_a_time_budget():
    x = blob_images()
    got = get_explainer("smoothgrad", tiny()).afford(x, seconds=0.5)
    assert got["nt_samples"] is None or got["nt_samples"] >= 1
    assert get_explainer("gradcam", tiny()).afford(x, evaluations=100) == {}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one budget"),
        ({"evaluations": 5, "seconds": 1.0}, "exactly one budget"),
        ({"evaluations": 0}, "'evaluations' parameter"),
        ({"seconds": -1.0}, "'seconds' parameter"),
    ],
)
def test_afford_bad_budget(kwargs, match):
    with pytest.raises(MedlensError, match=match):
        get_explainer("saliency", tiny()).afford(blob_images(), **kwargs)


class SmallMemory(nn.Module):
    """Raises CUDA's out-of-memory error for forward passes of more than ``limit`` rows."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.inner = tiny()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("integrated_gradients", {"n_steps": 8}),
        ("occlusion", {"window": 8}),
        ("lime", {"num_samples": 40}),
    ],
)
def test_oom_halves_the_chunk_and_continues(name, kwargs):
    x = blob_images()
    r = get_explainer(name, SmallMemory(limit=4), **kwargs).explain(x, batch_size=16)
    assert r.params["batch_size"] == 16 and r.params["batch_size_used"] == 4
    ref = get_explainer(name, SmallMemory(limit=4), **kwargs).explain(x, batch_size=4)
    np.testing.assert_allclose(r.maps, ref.maps, rtol=1e-5, atol=1e-8)


def test_oom_at_a_single_row_is_a_clear_error():
    with pytest.raises(ExplanationError, match="out of device memory with a chunk of a single row"):
        get_explainer("occlusion", SmallMemory(limit=0), window=8).explain(
            blob_images(1)[:, :, :, :], batch_size=1
        )


@pytest.mark.parametrize("target", [None, 1, [0, 1]])
@pytest.mark.parametrize("name", ["saliency", "input_x_gradient", "gradcam"])
def test_plan_counts_the_scoring_forward_only_when_it_is_separate(name, target):
    x = blob_images(3)
    plan = get_explainer(name, tiny()).plan(x, target=target)
    run = get_explainer(name, tiny()).explain(x, target=target)
    assert plan.evaluations == run.evaluations
    setup = 1 if name == "gradcam" else 0  # Grad-CAM's layer probe
    assert run.evaluations == setup + (3 + 3 * 2 if isinstance(target, list) else 3)


def test_oom_halves_the_one_pass_chunk_and_continues():
    x = blob_images(6)
    r = get_explainer("saliency", SmallMemory(limit=3)).explain(x, batch_size=8)
    assert r.params["batch_size_used"] == 3 and r.evaluations == 6
    ref = get_explainer("saliency", SmallMemory(limit=3)).explain(x, batch_size=3)
    np.testing.assert_array_equal(r.maps, ref.maps)
    np.testing.assert_array_equal(r.scores, ref.scores)
