"""load_model: TorchScript, state_dict + factory, nn.Module; unsafe and broken files refused."""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medlens._errors import MedlensError, ModelLoadError
from medlens.config import HeadConfig, ModelConfig, PreprocessConfig
from medlens.model import (
    ModelWrapper,
    get_architecture,
    list_architectures,
    load_model,
    load_state_dict,
    resolve_device,
    resolve_factory,
)
from medlens.model import _loading as L
from medlens.testing import TinyCNN

HEAD = HeadConfig(type="binary_sigmoid", class_names=["normal", "lesion"])
KW = {"in_channels": 1, "num_outputs": 1, "width": 4, "depth": 2}


@pytest.fixture
def model() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN(**KW)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def _cfg(path: Path, fmt: str = "state_dict", **kw) -> ModelConfig:
    base = {"format": fmt, "path": path, "head": HEAD, "device": "cpu"}
    if fmt == "state_dict":
        base |= {"factory": "tiny_cnn", "kwargs": KW}
    return ModelConfig(**(base | kw))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _expected(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return model.eval()(x).numpy()


def _save_torchscript(model: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        # torch.jit.* is deprecated (DeprecationWarning in 2.9+, FutureWarning for trace in 2.14)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(model.eval(), torch.zeros(1, 1, 16, 16)), str(path))


# -- the three ways -----------------------------------------------------------------------


@pytest.mark.parametrize("factory", ["tiny_cnn", "medlens.testing:TinyCNN"])
def test_state_dict_with_builtin_or_dotted_factory(tmp_path, model, x, factory):
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    w = load_model(_cfg(path, factory=factory))
    assert isinstance(w, ModelWrapper) and not w.module.training
    assert w.weights_sha256 == _sha(path) and w.name == "w.pt"
    assert w.device == torch.device("cpu") and w.batch_size == 32
    np.testing.assert_array_equal(w.predict(x).logits, _expected(model, x))
    assert w.state_dict_sha256() == ModelWrapper.from_module(model, head=HEAD).state_dict_sha256()


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict"])
def test_training_checkpoint_dict_is_accepted(tmp_path, model, x, key):
    path = tmp_path / "ckpt.pt"
    torch.save({key: model.state_dict(), "epoch": 7, "note": "best"}, path)
    np.testing.assert_array_equal(load_model(_cfg(path)).predict(x).logits, _expected(model, x))


def test_data_parallel_prefix_is_stripped(tmp_path, model, x):
    path = tmp_path / "dp.pt"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    np.testing.assert_array_equal(load_model(_cfg(path)).predict(x).logits, _expected(model, x))


def test_torchscript(tmp_path, model, x):
    path = tmp_path / "m.ts"
    _save_torchscript(model, path)
    w = load_model(_cfg(path, "torchscript"), preprocess=PreprocessConfig(size=(16, 16)))
    assert w.weights_sha256 == _sha(path)
    np.testing.assert_allclose(w.predict(x).logits, _expected(model, x), rtol=1e-6, atol=1e-7)


def test_in_memory_module(model, x):
    w = ModelWrapper.from_module(model, head=HEAD, device="cpu", batch_size=3)
    assert w.weights_sha256 is None and w.name == "TinyCNN" and w.batch_size == 3
    assert w.module is model and not model.training
    np.testing.assert_array_equal(w.predict(x).logits, _expected(model, x))
    assert len(w.state_dict_sha256()) == 64


def test_state_dict_hash_changes_with_weights(model):
    a = ModelWrapper.from_module(model, head=HEAD).state_dict_sha256()
    with torch.no_grad():
        model.classifier.bias += 1e-6
    assert ModelWrapper.from_module(model, head=HEAD).state_dict_sha256() != a


def test_builtin_registry():
    assert "tiny_cnn" in list_architectures()
    assert get_architecture("tiny_cnn") is TinyCNN
    with pytest.raises(ModelLoadError, match=r"did you mean 'tiny_cnn'\?.*available: .*tiny_cnn"):
        get_architecture("tiny_cn")


# -- unsafe pickles -----------------------------------------------------------------------


class _Evil:
    """Unpickling this would create a marker file through os.system."""

    marker: str = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_without_running_code(tmp_path, writer):
    marker = tmp_path / "PWNED"
    _Evil.marker = str(marker)
    path = tmp_path / "evil.pt"
    payload = {"conv.weight": torch.zeros(1), "x": _Evil()}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ModelLoadError) as info:
        load_model(_cfg(path))
    msg = str(info.value)
    assert msg.startswith(str(path))
    assert "arbitrary code" in msg and "torch.save(model.state_dict(), path)" in msg
    if writer == "torch.save":
        assert "posix.system" in msg  # names the offending global
    assert not marker.exists()


def test_full_module_pickle_is_refused(tmp_path, model):
    path = tmp_path / "whole.pt"
    torch.save(model, path)  # pickles the class, not only tensors
    with pytest.raises(ModelLoadError, match="refused to load"):
        load_state_dict(path)


# -- broken files -------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot read the model file"):
        load_model(_cfg(tmp_path / "nope.pt"))


def test_garbage_file(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(ModelLoadError, match="not a PyTorch checkpoint"):
        load_model(_cfg(path))
    with pytest.raises(ModelLoadError, match="not a TorchScript archive"):
        load_model(_cfg(path, "torchscript"))


def test_formats_swapped(tmp_path, model):
    sd, ts = tmp_path / "w.pt", tmp_path / "m.ts"
    torch.save(model.state_dict(), sd)
    _save_torchscript(model, ts)
    with pytest.raises(ModelLoadError, match=L.TORCHSCRIPT_AS_STATE_DICT):
        load_model(_cfg(ts))
    with pytest.raises(ModelLoadError, match="not a TorchScript archive"):
        load_model(_cfg(sd, "torchscript"))


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ([torch.zeros(1)], "holds a list, not a state_dict"),
        ({}, "holds an empty mapping"),
        ({"w": torch.zeros(1), "epoch": 3}, r"non-tensor entries \('epoch'\)"),
    ],
)
def test_not_a_state_dict(tmp_path, obj, match):
    path = tmp_path / "w.pt"
    torch.save(obj, path)
    with pytest.raises(ModelLoadError, match=match):
        load_state_dict(path)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(TinyCNN(**KW).state_dict(), path)
    with pytest.raises(ModelLoadError) as info:
        load_model(_cfg(path, kwargs=KW | {"depth": 3}))
    msg = str(info.value)
    assert "2 missing key(s): 'features.6.weight', 'features.6.bias'" in msg
    assert "unexpected key" not in msg
    sd = TinyCNN(**KW).state_dict() | {"extra.weight": torch.zeros(2)}
    del sd["classifier.bias"]
    torch.save(sd, path)
    with pytest.raises(ModelLoadError) as info:
        load_model(_cfg(path))
    msg = str(info.value)
    assert "1 missing key(s): 'classifier.bias'" in msg
    assert "1 unexpected key(s): 'extra.weight'" in msg


def test_shape_mismatch_is_reported(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(TinyCNN(**KW).state_dict(), path)
    with pytest.raises(
        ModelLoadError,
        match=r"features.0.weight: checkpoint \(4, 1, 3, 3\) vs model \(8, 1, 3, 3\)",
    ):
        load_model(_cfg(path, kwargs=KW | {"width": 8}))


# -- factories ----------------------------------------------------------------------------


@pytest.fixture
def factory_pkg(tmp_path, monkeypatch):
    pkg = tmp_path / "fpkg"
    pkg.mkdir()
    (pkg / "good.py").write_text(
        "from medlens.testing import TinyCNN\n"
        "class Builders:\n"
        "    @staticmethod\n"
        "    def tiny(**kw):\n"
        "        return TinyCNN(**kw)\n"
        "def not_a_module(**kw):\n"
        "    return 42\n"
        "NUMBER = 3\n"
    )
    (pkg / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "fpkg"
    for name in [m for m in sys.modules if m.startswith("fpkg")]:
        del sys.modules[name]


def test_dotted_attribute_factory(factory_pkg, tmp_path, model, x):
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    w = load_model(_cfg(path, factory="fpkg.good:Builders.tiny"))
    np.testing.assert_array_equal(w.predict(x).logits, _expected(model, x))


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        ("fpkg.good:", "not of the form 'package.module:callable'"),
        (":TinyCNN", "not of the form 'package.module:callable'"),
        ("a:b:c", "not of the form 'package.module:callable'"),
        ("fpkg.good:Builders..tiny", "not of the form 'package.module:callable'"),
        ("no_such_pkg_xyz.mod:f", "cannot import module 'no_such_pkg_xyz.mod'"),
        ("fpkg.broken:f", "importing module 'fpkg.broken' failed: RuntimeError: boom at import"),
        ("fpkg.good:missing", "module 'fpkg.good' has no attribute 'missing'"),
        ("fpkg.good:NUMBER", "is a int, not a callable"),
        ("resnet50", "unknown built-in architecture 'resnet50'"),
    ],
)
def test_bad_factory_strings(factory_pkg, factory, match):
    with pytest.raises(ModelLoadError, match=match) as info:
        resolve_factory(factory)
    assert repr(factory) in str(info.value) or factory == "resnet50"


def test_factory_call_errors(factory_pkg, tmp_path, model):
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ModelLoadError, match="returned a int, expected a torch.nn.Module"):
        load_model(_cfg(path, factory="fpkg.good:not_a_module"))
    with pytest.raises(ModelLoadError, match=r"failed when called with kwargs \{'colour': 'red'\}"):
        load_model(_cfg(path, kwargs={"colour": "red"}))


# -- head check and devices ---------------------------------------------------------------


def test_head_mismatch_detected_at_load_with_preprocess_size(tmp_path, model):
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    head = HeadConfig(type="binary_softmax", class_names=["a", "b"])
    with pytest.raises(
        ModelLoadError, match=r"produces 1 logit\(s\) .* binary_softmax .* expects 2"
    ) as info:
        load_model(_cfg(path, head=head), preprocess=PreprocessConfig(size=(16, 16)))
    assert str(info.value).startswith(str(path))


def test_device_resolution():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(MedlensError, match="'device' parameter of resolve_device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(MedlensError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_load_model_rejects_non_config(tmp_path):
    with pytest.raises(MedlensError, match="expects a ModelConfig"):
        load_model({"format": "state_dict", "path": str(tmp_path)})
