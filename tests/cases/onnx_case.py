"""onnxruntime case: the scikit-learn case's MLP exported with skl2onnx, run by a session."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from . import AdapterCase, float_batches, layouts


@lru_cache(maxsize=1)
def exported() -> bytes:
    """The digits MLP (hidden (32,), seeded) as ONNX bytes: input ``X`` float32 (N, 64),
    outputs ``label`` and ``probabilities`` (zipmap off, so a plain 2-D array)."""
    from skl2onnx import to_onnx

    from .sklearn_case import CASE as SKLEARN  # the same trained model, trained once

    mlp = SKLEARN.model()
    x = np.zeros((1, 64), dtype=np.float32)
    return to_onnx(mlp, x, options={id(mlp): {"zipmap": False}}).SerializeToString()


def session() -> Any:
    """A fresh session on the exported model (the case's own is built once and cached)."""
    from onnxruntime import InferenceSession

    return InferenceSession(exported(), providers=["CPUExecutionProvider"])


def _probabilities(session: Any, x: Any) -> np.ndarray:
    return session.run(["probabilities"], {"X": x})[0]


def valid_inputs():
    """What onnxruntime takes for a float input: float32 arrays in any layout, and nested
    lists of numbers (it builds the float32 array itself). Not big-endian arrays: the plain
    session misreads their bytes, so its answer is no reference (the guard hands it a
    native-order copy; tests/test_fuzz_memory.py covers that)."""
    return float_batches([np.float32]).flatmap(
        lambda a: layouts(a, lists=True, big_endian=False))


CASE = AdapterCase(
    id="onnx",
    build=session,
    to_native=lambda x: x,
    call_plain=_probabilities,
    call_guarded=_probabilities,
    from_numpy_any=lambda a: a,
    declares_shape=True,
    valid_inputs=valid_inputs,
)
