"""Output heads: logits -> probabilities, scores and predicted classes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import expit, softmax

from .._errors import InputDataError, ModelLoadError
from ..config import HeadConfig

__all__ = ["Prediction", "check_output_width", "expected_outputs", "prediction_from_logits"]

OUTPUT_NOT_TENSOR = (
    "the model returned {got}, expected one logits tensor of shape (N, K); wrap the model so "
    "that forward() returns the logits (e.g. take out['logits'] or out[0])"
)
OUTPUT_BAD_SHAPE = (
    "the model returned an output of shape {shape} for a batch of {n}; expected logits of "
    "shape ({n}, {k}) for a {head} head"
)
OUTPUT_WIDTH_MISMATCH = (
    "the model produces {got} logit(s) per image but the {head} head with {n_names} class_names "
    "expects {k}; fix model.head in the config (binary_sigmoid = 1 logit, binary_softmax = 2, "
    "multiclass / multilabel = one per class name) or the model's last layer"
)
NON_FINITE_LOGITS = "{n} of {total} logits are NaN or infinite; their probabilities are NaN"


def expected_outputs(head: HeadConfig) -> int:
    """Number of logits per image a model must produce for ``head``.

    1 for ``binary_sigmoid``, 2 for ``binary_softmax``, ``len(class_names)`` otherwise.
    """
    if head.type == "binary_sigmoid":
        return 1
    if head.type == "binary_softmax":
        return 2
    return len(head.class_names)


def check_output_width(output: Any, head: HeadConfig, *, batch_size: int | None = None) -> None:
    """Check that a model output is a logits tensor that matches ``head``.

    Parameters
    ----------
    output : Tensor of shape (N, K)
        A model output (``(N,)`` is accepted for a ``binary_sigmoid`` head).
    head : HeadConfig
    batch_size : int, optional
        N of the batch that produced ``output``; checked when given.

    Raises
    ------
    ModelLoadError
        Not a tensor, wrong rank or batch size, or K does not match the head.
    """
    if not isinstance(output, torch.Tensor):
        raise ModelLoadError(OUTPUT_NOT_TENSOR.format(got=type(output).__name__))
    k = expected_outputs(head)
    n = output.shape[0] if output.dim() else None
    rank_ok = output.dim() == 2 or (output.dim() == 1 and head.type == "binary_sigmoid")
    if not rank_ok or (batch_size is not None and n != batch_size):
        raise ModelLoadError(
            OUTPUT_BAD_SHAPE.format(
                shape=tuple(output.shape), n=batch_size if batch_size else "N", k=k, head=head.type
            )
        )
    got = 1 if output.dim() == 1 else output.shape[1]
    if got != k:
        raise ModelLoadError(
            OUTPUT_WIDTH_MISMATCH.format(
                got=got, head=head.type, n_names=len(head.class_names), k=k
            )
        )


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class Prediction:
    """Model outputs for N images under a declared head. Arrays are read-only.

    Attributes
    ----------
    logits : ndarray of shape (N, K), float32
        Raw model outputs (K = 1 for ``binary_sigmoid``).
    probabilities : ndarray of shape (N, len(class_names)), float64
        One column per class name, in ``class_names`` order: ``[sigmoid(-z), sigmoid(z)]``
        for ``binary_sigmoid``; softmax over the logits for
        ``binary_softmax`` and ``multiclass``; independent sigmoids for ``multilabel``
        (rows need not sum to 1). Computed in float64 from the float32 logits.
    positive_score : ndarray of shape (N,), float64, or None
        Probability of ``class_names[1]`` for binary heads; None otherwise.
    predicted : ndarray of int64, shape (N,) -- or bool, shape (N, K) for multilabel
        Index of the most probable class (ties go to the lower index, so a binary
        score of exactly 0.5 is negative); -1 for a row with non-finite logits; for
        ``multilabel``, ``probabilities > 0.5``.
    class_names : tuple of str
    head_type : str
    """

    logits: np.ndarray
    probabilities: np.ndarray
    positive_score: np.ndarray | None
    predicted: np.ndarray
    class_names: tuple[str, ...]
    head_type: str

    def __len__(self) -> int:
        return int(self.logits.shape[0])


def prediction_from_logits(logits: Any, head: HeadConfig) -> Prediction:
    """Build a :class:`Prediction` from logits of shape (N, K) (or (N,) for binary_sigmoid).

    Raises
    ------
    InputDataError
        Logits of the wrong shape for ``head``.
    """
    z = np.asarray(logits, dtype=np.float32)
    if z.ndim == 1 and head.type == "binary_sigmoid":
        z = z[:, None]
    k = expected_outputs(head)
    if z.ndim != 2 or z.shape[1] != k:
        raise InputDataError(
            f"expected logits of shape (N, {k}) for a {head.type} head, got shape {z.shape}"
        )
    bad = int(np.count_nonzero(~np.isfinite(z)))
    if bad:
        warnings.warn(NON_FINITE_LOGITS.format(n=bad, total=z.size), RuntimeWarning, stacklevel=3)
    z64 = z.astype(np.float64)
    positive = None
    if head.type == "binary_sigmoid":
        p = expit(z64[:, 0])
        probs = np.stack([expit(-z64[:, 0]), p], axis=1)  # not 1 - p: keeps the small tail
        positive = p.copy()
    elif head.type == "multilabel":
        probs = expit(z64)
    else:
        probs = softmax(z64, axis=1)
        if head.type == "binary_softmax":
            positive = probs[:, 1].copy()
    if head.type == "multilabel":
        predicted = probs > 0.5
    else:
        predicted = np.argmax(probs, axis=1).astype(np.int64)
        predicted[np.isnan(probs).any(axis=1)] = -1
    return Prediction(
        logits=_readonly(np.array(z, dtype=np.float32)),
        probabilities=_readonly(probs),
        positive_score=None if positive is None else _readonly(positive),
        predicted=_readonly(predicted),
        class_names=tuple(head.class_names),
        head_type=head.type,
    )
