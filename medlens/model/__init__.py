"""medlens.model: safe model loading, invertible preprocessing, batched prediction."""

from __future__ import annotations

from ._architectures import get_architecture, list_architectures, register_architecture
from ._loading import load_model, load_state_dict, resolve_factory
from ._prediction import Prediction, check_output_width, expected_outputs, prediction_from_logits
from ._preprocess import LUMA_WEIGHTS, Geometry, Preprocessor
from ._wrapper import ModelWrapper, resolve_device

__all__ = [
    "Geometry",
    "LUMA_WEIGHTS",
    "ModelWrapper",
    "Prediction",
    "Preprocessor",
    "check_output_width",
    "expected_outputs",
    "get_architecture",
    "list_architectures",
    "load_model",
    "load_state_dict",
    "prediction_from_logits",
    "register_architecture",
    "resolve_device",
    "resolve_factory",
]
