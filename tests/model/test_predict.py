"""ModelWrapper.predict: heads against torch references, batch-size invariance, state restored."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from medlens._errors import InputDataError, MedlensError, ModelLoadError
from medlens.config import HeadConfig, PreprocessConfig
from medlens.model import (
    ModelWrapper,
    Prediction,
    Preprocessor,
    check_output_width,
    expected_outputs,
    prediction_from_logits,
)
from medlens.model import _prediction as PR
from medlens.model import _wrapper as W
from medlens.testing import TinyCNN

BIN_SIG = HeadConfig(type="binary_sigmoid", class_names=["normal", "lesion"])
BIN_SOFT = HeadConfig(type="binary_softmax", class_names=["normal", "lesion"])
MULTI = HeadConfig(type="multiclass", class_names=["a", "b", "c"])
MLABEL = HeadConfig(type="multilabel", class_names=["a", "b", "c"])


def _wrap(head=BIN_SIG, k=None, in_ch=1, **kw) -> ModelWrapper:
    torch.manual_seed(0)
    model = TinyCNN(in_ch, k or expected_outputs(head), width=4, depth=2)
    return ModelWrapper.from_module(model, head=head, device="cpu", **kw)


def _x(n=11, c=1, hw=16, seed=1) -> torch.Tensor:
    return torch.rand(n, c, hw, hw, generator=torch.Generator().manual_seed(seed))


def _reference_logits(w: ModelWrapper, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return w.module(x)


def _hook_count(module: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in module.modules()
    )


# -- heads against torch --------------------------------------------------------------------


def test_binary_sigmoid_against_torch():
    w, x = _wrap(BIN_SIG), _x()
    p = w.predict(x)
    z = _reference_logits(w, x).double()
    assert p.logits.shape == (11, 1) and p.logits.dtype == np.float32
    np.testing.assert_allclose(p.positive_score, torch.sigmoid(z)[:, 0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(p.probabilities[:, 1], p.positive_score)
    np.testing.assert_allclose(p.probabilities.sum(1), 1.0)
    np.testing.assert_array_equal(p.predicted, (z[:, 0] > 0).long().numpy())
    assert p.class_names == ("normal", "lesion") and p.head_type == "binary_sigmoid"
    assert len(p) == 11 and isinstance(p, Prediction)


@pytest.mark.parametrize("head", [BIN_SOFT, MULTI])
def test_softmax_heads_against_torch(head):
    w, x = _wrap(head), _x()
    p = w.predict(x)
    z = _reference_logits(w, x).double()
    np.testing.assert_allclose(p.probabilities, torch.softmax(z, 1).numpy(), rtol=1e-12)
    np.testing.assert_array_equal(p.predicted, z.argmax(1).numpy())
    if head is BIN_SOFT:
        np.testing.assert_allclose(p.positive_score, torch.softmax(z, 1)[:, 1].numpy())
    else:
        assert p.positive_score is None


def test_multilabel_against_torch():
    w, x = _wrap(MLABEL), _x()
    p = w.predict(x)
    probs = torch.sigmoid(_reference_logits(w, x).double()).numpy()
    np.testing.assert_allclose(p.probabilities, probs, rtol=1e-12)
    np.testing.assert_array_equal(p.predicted, probs > 0.5)
    assert p.predicted.dtype == bool and p.positive_score is None


def test_prediction_rules_ties_saturation_and_non_finite():
    z = np.array([0.0, 30.0, -30.0], np.float32)
    p = prediction_from_logits(z, BIN_SIG)
    np.testing.assert_array_equal(p.predicted, [0, 1, 0])  # a tie (0.5) is negative
    assert torch.sigmoid(torch.from_numpy(z))[1] == 1.0  # float32 saturates ...
    assert p.positive_score[1] < 1.0 and p.positive_score[2] > 0.0  # ... float64 does not
    assert p.probabilities[1, 0] == p.positive_score[2] > 0.0
    with pytest.warns(RuntimeWarning, match="1 of 6 logits are NaN or infinite"):
        q = prediction_from_logits(np.array([[0.1, 0.2, np.nan], [1, 2, 3]], np.float32), MULTI)
    assert q.predicted.tolist() == [-1, 2] and np.isnan(q.probabilities[0]).all()
    with pytest.raises(InputDataError, match=r"expected logits of shape \(N, 3\)"):
        prediction_from_logits(np.zeros((2, 2)), MULTI)


def test_prediction_is_frozen_and_read_only():
    p = _wrap().predict(_x(3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.logits = None
    with pytest.raises(ValueError, match="read-only"):
        p.probabilities[0, 0] = 1.0


# -- batching -------------------------------------------------------------------------------


@pytest.mark.parametrize("head", [BIN_SIG, MULTI])
def test_batch_size_invariance(head):
    w, x = _wrap(head, batch_size=4), _x(n=13)
    ref = w.predict(x, batch_size=13)
    for bs in (1, 2, 7, None):
        p = w.predict(x, batch_size=bs)
        # PyTorch CPU kernels pick their summation order by batch shape: equal to float32
        # rounding (observed <= 2e-8), never a different decision
        np.testing.assert_allclose(p.logits, ref.logits, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(p.predicted, ref.predicted)
    # the same batch size is bit-for-bit reproducible
    np.testing.assert_array_equal(
        w.predict(x, batch_size=7).logits, w.predict(x, batch_size=7).logits
    )


def test_raw_images_are_preprocessed_per_batch():
    cfg = PreprocessConfig(size=(16, 16), channels=3, mean=[0.5], std=[0.25])
    w = _wrap(MULTI, in_ch=3, preprocess=cfg, batch_size=2)
    rng = np.random.default_rng(0)
    imgs = [rng.random((20, 24)).astype(np.float32) for _ in range(4)]
    imgs.append(SimpleNamespace(pixels=rng.random((12, 12, 3)).astype(np.float32)))
    x, _ = Preprocessor(cfg).batch(imgs)
    np.testing.assert_allclose(w.predict(imgs).logits, w.predict(x).logits, rtol=1e-6, atol=1e-7)
    assert isinstance(w.preprocess, Preprocessor)


def test_volumes_3d():
    torch.manual_seed(0)
    model = TinyCNN(1, 3, width=4, depth=2, spatial_dims=3)
    pre = Preprocessor(PreprocessConfig(), spatial_dims=3, size=(8, 12, 12))
    w = ModelWrapper.from_module(model, head=MULTI, preprocess=pre, device="cpu", batch_size=2)
    rng = np.random.default_rng(0)
    vols = [rng.random((10, 16, 16)).astype(np.float32) for _ in range(3)]
    x, _ = pre.batch(vols)
    assert x.shape == (3, 1, 8, 12, 12)
    p = w.predict(vols)
    np.testing.assert_allclose(p.logits, _reference_logits(w, x).numpy(), rtol=1e-5, atol=1e-6)
    w.check_head()


def test_float64_and_half_tensors_are_run_in_float32():
    w, x = _wrap(), _x(4)
    np.testing.assert_array_equal(w.predict(x.double()).logits, w.predict(x).logits)


def test_progress_bar(capsys):
    _wrap().predict(_x(5), batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "predict TinyCNN" in err and "5/5" in err


# -- state is restored ----------------------------------------------------------------------


class _Dropper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = TinyCNN(1, 1, width=4, depth=2)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.body(x))


def test_train_eval_flags_restored_and_eval_used():
    torch.manual_seed(0)
    model = _Dropper()
    w = ModelWrapper.from_module(model, head=BIN_SIG, device="cpu")
    assert not model.training
    x = _x(6)
    expected = w.predict(x).logits
    model.train()
    model.body.eval()  # mixed flags must come back exactly
    before = [m.training for m in model.modules()]
    np.testing.assert_array_equal(w.predict(x).logits, expected)  # dropout was off
    assert [m.training for m in model.modules()] == before


class _Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x):
        raise RuntimeError("boom")


def test_state_restored_and_no_hooks_after_an_exception():
    model = _Exploding()
    w = ModelWrapper.from_module(model, head=BIN_SIG, device="cpu")
    model.train()
    with pytest.raises(
        InputDataError, match=r"failed on a batch of shape \(2, 1, 4\): RuntimeError: boom"
    ):
        w.predict(torch.zeros(2, 1, 4))
    assert model.training and model.lin.training
    assert _hook_count(model) == 0


def test_no_hooks_left_behind():
    w = _wrap(preprocess=PreprocessConfig(size=(16, 16)))
    w.check_head()
    w.predict(_x(3))
    assert _hook_count(w.module) == 0


# -- head / output mismatches ---------------------------------------------------------------


def test_output_width_mismatch_at_predict():
    w = _wrap(BIN_SOFT, k=3)
    with pytest.raises(
        ModelLoadError, match=r"produces 3 logit\(s\) per image but the binary_softmax head"
    ):
        w.predict(_x(2))


class _TupleOut(nn.Module):
    def forward(self, x):
        return x.mean((1, 2, 3))[:, None], x


def test_non_tensor_output_is_explained():
    w = ModelWrapper.from_module(_TupleOut(), head=BIN_SIG, device="cpu")
    with pytest.raises(ModelLoadError, match="returned tuple, expected one logits tensor"):
        w.predict(_x(2))


@pytest.mark.parametrize(
    ("out", "head", "match"),
    [
        (torch.zeros(4), BIN_SIG, None),
        (torch.zeros(4, 1), BIN_SIG, None),
        (torch.zeros(4, 3), MULTI, None),
        (
            torch.zeros(4),
            MULTI,
            r"shape \(4,\) for a batch of 4; expected logits of shape \(4, 3\)",
        ),
        (torch.zeros(3, 3), MULTI, "for a batch of 4"),
        (torch.zeros(4, 2, 1), BIN_SOFT, "shape"),
        (torch.zeros(4, 2), BIN_SIG, r"expects 1"),
        (torch.zeros(4, 2), MLABEL, r"expects 3"),
    ],
)
def test_check_output_width(out, head, match):
    if match is None:
        check_output_width(out, head, batch_size=4)
    else:
        with pytest.raises(ModelLoadError, match=match):
            check_output_width(out, head, batch_size=4)


def test_expected_outputs():
    assert [expected_outputs(h) for h in (BIN_SIG, BIN_SOFT, MULTI, MLABEL)] == [1, 2, 3, 3]


def test_check_head_needs_an_example_without_size():
    w = _wrap()
    with pytest.raises(InputDataError, match="needs an example batch"):
        w.check_head()
    w.check_head(_x(1))


# -- bad inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((16, 16), np.float32), "got a single NumPy array"),
        (SimpleNamespace(pixels=np.zeros((16, 16), np.float32)), "got a single SimpleNamespace"),
        ([], "empty sequence"),
        (torch.zeros(0, 1, 16, 16), r"empty batch \(N = 0\)"),
        (torch.zeros(16, 16), r"got shape \(16, 16\)"),
        (torch.zeros(2, 1, 16, 16, dtype=torch.uint8), "got dtype torch.uint8"),
        ("scan.dcm", "got str"),
        (42, "got int"),
        ([np.zeros((16, 16), np.float32)], "has no preprocessing"),
    ],
)
def test_bad_images(images, match):
    with pytest.raises(InputDataError, match=match):
        _wrap().predict(images)


def test_input_the_model_cannot_take():
    with pytest.raises(InputDataError, match=r"failed on a batch of shape \(2, 3, 16, 16\)"):
        _wrap().predict(_x(2, c=3))


def test_raw_image_errors_name_the_global_index():
    w = _wrap(preprocess=PreprocessConfig(), batch_size=2)
    good = np.zeros((16, 16), np.float32)
    with pytest.raises(InputDataError, match=r"^image 3: pixels have values outside"):
        w.predict([good, good, good, good + 5])
    # without a size, every image must give the same shape, whatever the batch size
    for bs in (1, 2, 3):
        with pytest.raises(InputDataError, match="different shapes"):
            w.predict([good, good, np.zeros((8, 8), np.float32)], batch_size=bs)


def test_check_head_rejects_a_non_tensor_example():
    with pytest.raises(MedlensError, match="'example' parameter of check_head"):
        _wrap().check_head(np.zeros((1, 1, 16, 16)))


def test_channel_mismatch_with_declared_preprocess():
    w = _wrap(preprocess=PreprocessConfig(channels=1))
    with pytest.raises(InputDataError, match="has 3 channel"):
        w.predict(_x(2, c=3))


@pytest.mark.parametrize("bs", [0, -1, True, 2.5, "8"])
def test_bad_batch_size(bs):
    with pytest.raises(MedlensError, match="'batch_size' parameter of predict must be an int >= 1"):
        _wrap().predict(_x(2), batch_size=bs)
    with pytest.raises(MedlensError, match="'batch_size' parameter of ModelWrapper"):
        _wrap(batch_size=bs)


def test_bad_constructor_arguments():
    with pytest.raises(ModelLoadError, match="expected a torch.nn.Module, got str"):
        ModelWrapper.from_module("model.pt", head=BIN_SIG)
    with pytest.raises(MedlensError, match="'head' parameter of ModelWrapper"):
        ModelWrapper.from_module(nn.Linear(2, 1), head="binary")
    with pytest.raises(MedlensError, match="'preprocess' parameter of ModelWrapper"):
        ModelWrapper.from_module(nn.Linear(2, 1), head=BIN_SIG, preprocess={"size": [8, 8]})
    w = ModelWrapper.from_module(
        nn.Linear(2, 1), head={"type": "multilabel", "class_names": ["a", "b"]}
    )
    assert w.head.type == "multilabel"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only notice")
def test_amp_on_cpu_warns():
    with pytest.warns(UserWarning, match=W.AMP_ON_CPU.format(device="cpu")):
        w = _wrap(amp=True)
    np.testing.assert_array_equal(w.predict(_x(2)).logits, _wrap().predict(_x(2)).logits)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_and_amp_match_cpu():  # pragma: no cover - runs on GPU machines only
    x = _x(9)
    cpu = _wrap().predict(x)
    gpu = _wrap(device="cuda").predict(x)
    amp = _wrap(device="cuda", amp=True).predict(x)
    np.testing.assert_allclose(gpu.logits, cpu.logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(amp.logits, cpu.logits, rtol=1e-2, atol=1e-2)


def test_message_constants_are_used():
    assert "{got}" in PR.OUTPUT_NOT_TENSOR and "{k}" in PR.OUTPUT_WIDTH_MISMATCH
