"""Per-device chunk size and layout for the forward-only perturbation methods.

The probe's timings are replaced by a deterministic cost model (no wall-clock in tests); the
forward passes themselves are real.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from torch import nn

from medlens._errors import ExplanationError
from medlens.xai import _chunking as chunking
from medlens.xai import get_explainer

from .conftest import FAST, blob_images, tiny

PERTURBATION = ["lime", "occlusion", "scorecam", "shap"]
#: settings whose jobs are large enough (>= PROBE_MIN_ROWS rows) to be probed
LARGE = {
    "lime": {"num_samples": 200, "n_segments": 12},
    "occlusion": {"window": 4, "stride": 2},
    "scorecam": {},
    "shap": {"max_evals": 200},
}


@pytest.fixture(autouse=True)
def fresh_cache():
    chunking.clear_chunk_cache()
    yield
    chunking.clear_chunk_cache()


def fake_timing(monkeypatch, best: int = 16, channels_last: bool = True) -> list[tuple]:
    """Per-row cost lowest at ``best`` rows, 10 % lower in the preferred layout; records
    every probe forward (size, channels_last)."""
    calls: list[tuple] = []

    def seconds(model, xb):
        model(xb)  # the real forward (out-of-memory errors propagate as on a device)
        cl = xb.stride(1) == 1  # channels-last (the images have more than one pixel)
        calls.append((xb.shape[0], cl))
        per_row = 1.0 + abs(np.log2(xb.shape[0]) - np.log2(best))
        return per_row * (0.9 if cl == channels_last else 1.0) * xb.shape[0]

    monkeypatch.setattr(chunking, "_seconds", seconds)
    return calls


def test_probe_picks_the_cheapest_size_and_layout(monkeypatch):
    calls = fake_timing(monkeypatch, best=16, channels_last=True)
    m, x = tiny(), blob_images(1)
    plan = chunking.forward_plan(m, x, 1000)
    assert plan == chunking.ForwardPlan(16, True, True)
    probed_rows = sum(size for size, _ in calls)
    assert probed_rows <= 0.15 * 1000 + 3 * 32  # climb budget + the second pass
    n = len(calls)
    assert chunking.forward_plan(m, x, 1000) == plan  # cached: no second probe
    assert chunking.forward_plan(m, x, 10).rows == 10  # never more rows than the job has
    assert len(calls) == n


def test_a_small_job_still_probes_up_to_16_rows(monkeypatch):
    calls = fake_timing(monkeypatch, best=16, channels_last=True)
    plan = chunking.forward_plan(tiny(), blob_images(1), 129)  # Score-CAM: 1 + 128 channels
    assert plan == chunking.ForwardPlan(16, True, True)
    assert sum(size for size, _ in calls) <= chunking._FORWARD_BUDGET_ROWS + 3 * 16


def test_probe_prefers_the_input_layout_when_it_is_cheaper(monkeypatch):
    fake_timing(monkeypatch, best=8, channels_last=False)
    assert chunking.forward_plan(tiny(), blob_images(1), 1000) == chunking.ForwardPlan(
        8, False, True
    )


def test_cache_is_per_model_shape_and_forgets_dead_models(monkeypatch):
    calls = fake_timing(monkeypatch)
    m = tiny()
    chunking.forward_plan(m, blob_images(1), 1000)
    n = len(calls)
    chunking.forward_plan(m, blob_images(1, size=16), 1000)  # another shape: probed again
    assert len(calls) > n
    other = tiny()
    n = len(calls)
    chunking.forward_plan(other, blob_images(1), 1000)  # another model: probed again
    assert len(calls) > n
    assert len(chunking._CACHE) == 2
    del other
    gc.collect()
    assert len(chunking._CACHE) == 1


def test_small_jobs_run_in_one_pass_without_a_probe(monkeypatch):
    calls = fake_timing(monkeypatch)
    rows = chunking.PROBE_MIN_ROWS - 1
    assert chunking.forward_plan(tiny(), blob_images(1), rows) == chunking.ForwardPlan(rows)
    assert calls == []


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


def test_probe_stops_at_out_of_memory(monkeypatch):
    fake_timing(monkeypatch, best=64)
    assert chunking.forward_plan(SmallMemory(limit=4), blob_images(1), 1000).rows == 4


@pytest.mark.parametrize("name", PERTURBATION)
def test_explain_records_the_measured_chunk_and_keeps_results(name, monkeypatch):
    calls = fake_timing(monkeypatch, best=4)
    x = blob_images(8 if name == "scorecam" else 2)  # Score-CAM: 17 rows per image
    e = get_explainer(name, tiny(), **LARGE[name])
    r = e.explain(x)
    assert calls, "a large job is probed"
    assert r.params["batch_size"] is None
    assert r.params["batch_size_used"] == 4 and r.params["channels_last"] is True
    plan = get_explainer(name, tiny(), **LARGE[name]).plan(x)
    assert r.evaluations == plan.evaluations  # the probe's rows are not evaluations
    assert plan.rows_per_forward == 4
    again = e.explain(x)  # same process, same plan: bit for bit
    np.testing.assert_array_equal(again.maps, r.maps)
    ref = get_explainer(name, tiny(), **LARGE[name]).explain(x, batch_size=1)
    scale = float(np.abs(ref.maps).max())
    np.testing.assert_allclose(r.maps, ref.maps, rtol=1e-4, atol=1e-5 * scale + 1e-7)


def fake_grad_timing(monkeypatch, best: int = 8, channels_last: bool = True) -> list[tuple]:
    """:func:`fake_timing` for the forward + backward probe; the forward probe must not run."""
    calls: list[tuple] = []

    def seconds(model, xb):
        xg = xb.clone().requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(model(xg)[:, 0].sum(), xg)  # the real passes
        cl = xb.stride(1) == 1
        calls.append((xb.shape[0], cl))
        per_row = 1.0 + abs(np.log2(xb.shape[0]) - np.log2(best))
        return per_row * (0.9 if cl == channels_last else 1.0) * xb.shape[0]

    def no_forward_probe(model, xb):
        raise AssertionError("a gradient method ran the forward-only probe")

    monkeypatch.setattr(chunking, "_seconds_grad", seconds)
    monkeypatch.setattr(chunking, "_seconds", no_forward_probe)
    return calls


def test_backward_plan_has_its_own_probe_and_cache_entry(monkeypatch):
    calls = fake_grad_timing(monkeypatch, best=8, channels_last=True)
    m, x = tiny(), blob_images(1)
    plan = chunking.backward_plan(m, x, 52)  # Integrated Gradients' default 50 + 2 rows
    assert plan == chunking.ForwardPlan(8, True, True)
    assert sum(size for size, _ in calls) <= chunking._GRAD_BUDGET_ROWS + 3 * 16
    n = len(calls)
    assert chunking.forward_plan(m, x, 52, backward=True) == plan and len(calls) == n
    small = chunking.PROBE_MIN_ROWS_GRAD - 1
    m2 = tiny()
    assert chunking.backward_plan(m2, x, small) == chunking.ForwardPlan(small, True, False)
    assert calls[n:] == [(1, False), (1, True)] * 2  # layout probe: one row per layout, twice
    assert chunking.backward_plan(m2, x, 3) == chunking.ForwardPlan(3, True, False)
    assert len(calls) == n + 4  # remembered
    fake_timing(monkeypatch, best=32, channels_last=False)  # forward-only: a separate entry
    assert chunking.forward_plan(m, x, 1000) == chunking.ForwardPlan(32, False, True)


def test_real_backward_probe_returns_a_valid_plan():
    plan = chunking.backward_plan(tiny(), blob_images(1, size=16), 40)
    assert plan.measured and 1 <= plan.rows <= 40 and isinstance(plan.channels_last, bool)


#: gradient methods with many rows per image, settings large enough to be probed
GRAD_LARGE = {
    "integrated_gradients": {"n_steps": 40},
    "smoothgrad": {"nt_samples": 40},
    "gradient_shap": {"n_samples": 40, "stdevs": 0.1},
    "deeplift": {},
}


@pytest.mark.parametrize("name", sorted(GRAD_LARGE))
def test_gradient_methods_use_the_backward_plan_and_keep_results(name, monkeypatch):
    calls = fake_grad_timing(monkeypatch, best=8, channels_last=True)
    x = blob_images(20 if name == "deeplift" else 2)  # DeepLift: 2 rows per image
    e = get_explainer(name, tiny(), **GRAD_LARGE[name])
    r = e.explain(x)
    assert calls, "a large job is probed"
    assert r.params["batch_size_used"] == 8 and r.params["channels_last"] is True
    plan = get_explainer(name, tiny(), **GRAD_LARGE[name]).plan(x)
    assert r.evaluations == plan.evaluations  # the probe's rows are not evaluations
    assert plan.rows_per_forward == 8
    np.testing.assert_array_equal(e.explain(x).maps, r.maps)  # same plan: bit for bit
    ref = get_explainer(name, tiny(), **GRAD_LARGE[name]).explain(x, batch_size=10_000)
    assert ref.params["channels_last"] is False  # an explicit batch size is not probed
    scale = float(np.abs(ref.maps).max())
    np.testing.assert_allclose(r.maps, ref.maps, rtol=1e-4, atol=1e-5 * scale + 1e-7)


class RowSpy(nn.Module):
    """Records the rows and the layout of every forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny()
        self.calls: list[tuple[int, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.shape[0], x.shape[1] > 1 and x.stride(1) == 1))
        return self.inner(x)


def test_integrated_gradients_passes_the_measured_rows_channels_last(monkeypatch):
    fake_grad_timing(monkeypatch, best=8, channels_last=True)
    m = RowSpy()
    x = blob_images(1, channels=3)  # 3 channels: the layout is visible in the strides
    m.inner = tiny(in_channels=3)
    e = get_explainer("integrated_gradients", m, n_steps=40)
    e.explain(x)
    m.calls.clear()  # the probe's passes
    e.explain(x)
    path = [c for c in m.calls if c[0] > 1]
    assert path and all(rows <= 8 and cl for rows, cl in path), m.calls


def test_small_backward_job_takes_the_faster_layout(monkeypatch):
    calls = fake_grad_timing(monkeypatch, channels_last=False)
    small = chunking.PROBE_MIN_ROWS_GRAD - 1
    assert chunking.backward_plan(tiny(), blob_images(1), small) == chunking.ForwardPlan(small)
    assert [size for size, _ in calls] == [1] * 4
    volume = torch.zeros(1, 1, 4, 8, 8)  # 5D: channels-last-3d is tried too
    assert chunking.backward_plan(tiny(spatial_dims=3), volume, 2).rows == 2
    assert len(calls) == 8


ONE_PASS = ["saliency", "input_x_gradient", "gradcam", "gradcam_pp", "guided_backprop"]


@pytest.mark.parametrize("name", ONE_PASS)
def test_one_pass_gradient_methods_follow_the_backward_plan(name, monkeypatch):
    calls = fake_grad_timing(monkeypatch, best=8, channels_last=True)
    x = blob_images(40)
    r = get_explainer(name, tiny()).explain(x)
    assert calls, "40 images are worth a probe"
    assert r.params["batch_size_used"] == 8 and r.params["channels_last"] is True
    ref = get_explainer(name, tiny()).explain(x, batch_size=10_000)
    assert ref.params["channels_last"] is False
    # one per image (+ a CAM's one-off layer probe); the plan's probe rows are not counted
    assert r.evaluations == ref.evaluations == 40 + ("cam" in name)
    e = get_explainer(name, tiny())
    assert e.plan(x).rows_per_forward == 8 and e.plan(x, batch_size=5).rows_per_forward == 5
    scale = float(np.abs(ref.maps).max())
    np.testing.assert_allclose(r.maps, ref.maps, rtol=1e-4, atol=1e-5 * scale + 1e-7)
    np.testing.assert_allclose(r.scores, ref.scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ONE_PASS)
def test_one_image_runs_in_one_pass_in_the_faster_layout(name, monkeypatch):
    calls = fake_grad_timing(monkeypatch, channels_last=True)
    m = RowSpy()
    m.inner = tiny(in_channels=3)
    r = get_explainer(name, m).explain(blob_images(1, channels=3))
    assert {size for size, _ in calls} == {1}  # the layout probe only
    assert r.params["batch_size_used"] is None and r.params["channels_last"] is True
    assert r.evaluations == 1 + ("cam" in name) and m.calls[-1] == (1, True)


class Spy(nn.Module):
    """Records, per forward pass, its rows and whether inference mode was on."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny()
        self.calls: list[tuple[int, bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.shape[0], torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
        return self.inner(x)


@pytest.mark.parametrize("name", PERTURBATION)
def test_perturbation_forwards_run_in_inference_mode(name):
    m = Spy()
    get_explainer(name, m, **FAST[name]).explain(blob_images(2), batch_size=4)
    assert len(m.calls) > 2
    assert all(inference and not grad for _, inference, grad in m.calls), m.calls


def test_oom_halves_a_cached_chunk_and_continues(monkeypatch):
    fake_timing(monkeypatch, best=16)
    m = SmallMemory(limit=10_000)
    x = blob_images(1)
    e = get_explainer("lime", m, num_samples=600, n_segments=12)
    assert e.explain(x).params["batch_size_used"] == 16
    m.limit = 8  # memory got tighter since the probe
    r = e.explain(x)
    assert r.params["batch_size_used"] == 8
    ref = get_explainer("lime", m, num_samples=600, n_segments=12).explain(x, batch_size=8)
    scale = float(np.abs(ref.maps).max())
    np.testing.assert_allclose(r.maps, ref.maps, rtol=1e-4, atol=1e-5 * scale + 1e-7)


def test_to_layout():
    x = torch.randn(2, 1, 8, 8)
    assert chunking.to_layout(x, False) is x
    cl = chunking.to_layout(x, True)
    assert cl.is_contiguous(memory_format=torch.channels_last) and cl.stride(1) == 1
    torch.testing.assert_close(cl, x, rtol=0, atol=0)
    v = torch.randn(1, 2, 4, 8, 8)
    assert chunking.to_layout(v, True).is_contiguous(memory_format=torch.channels_last_3d)
    flat = torch.randn(3, 5)
    assert chunking.to_layout(flat, True) is flat


@pytest.mark.parametrize("n", [1, 40])  # the layout probe, the full probe
def test_a_model_the_probe_cannot_run_gets_the_jobs_own_error(n):
    class Flat(nn.Module):
        def forward(self, x):
            return x.sum()

    with pytest.raises(ExplanationError, match="logits of shape"):
        get_explainer("saliency", Flat()).explain(blob_images(n))
