"""One case per adapter: how to build a small trained digits model and call it both ways.

The conformance suite and the fuzz tests are written once against :class:`AdapterCase`;
each framework contributes one module here that defines ``CASE``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np


@dataclass(frozen=True)
class AdapterCase:
    id: str
    #: Builds and trains the model (called once per process, result cached).
    build: Callable[[], Any]
    #: A float32 batch of shape (n, 64), digits scaled to [0, 1] -> the framework's input.
    to_native: Callable[[np.ndarray], Any]
    #: Calls the plain model on a native input; returns numpy.
    call_plain: Callable[[Any, Any], np.ndarray]
    #: Calls the guarded model the way its framework's users do; returns numpy.
    call_guarded: Callable[[Any, Any], np.ndarray]
    #: Any numpy array (any dtype/shape) -> the framework's input type, or the array itself
    #: when the framework has no array type of its own. Used by the fuzz tests.
    from_numpy_any: Callable[[np.ndarray], Any]
    #: Shape of one sample as the model takes it, e.g. (64,) or (1, 8, 8).
    sample_shape: tuple[int, ...] = (64,)
    #: The model declares its input shape, so a wrong shape is caught without constraints.
    declares_shape: bool = True
    #: A function returning a hypothesis strategy of inputs the PLAIN model accepts, in
    #: the framework's own forms (every dtype, container and layout it takes), for the
    #: "valid for the framework" fuzz test: through the guard each must give exactly the
    #: plain model's result. ``None`` until the adapter's case provides one.
    valid_inputs: Callable[[], Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def model(self) -> Any:
        return _built(self.id, self.build)


@lru_cache(maxsize=None)
def _built_cached(case_id: str, build: Callable[[], Any]) -> Any:
    return build()


def _built(case_id: str, build: Callable[[], Any]) -> Any:
    return _built_cached(case_id, build)


CASE_MODULES = ("sklearn_case", "torch_case", "keras_case", "onnx_case")


def all_cases() -> list[AdapterCase]:
    cases = []
    for name in CASE_MODULES:
        try:
            module = importlib.import_module(f"tests.cases.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"tests.cases.{name}":
                raise
            continue  # TEMPORARY while adapters are being written
        cases.append(module.CASE)
    return cases


@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    """``load_digits`` scaled to [0, 1] as float32 (n, 64), and labels."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int64)


def digits_logistic() -> Any:
    """scikit-learn's LogisticRegression fitted on the first 600 digits."""
    from sklearn.linear_model import LogisticRegression

    x, y = digits()
    return LogisticRegression(max_iter=200).fit(x[:600], y[:600])


def audit_lines(audit: Any) -> list[dict[str, Any]]:
    """The JSON lines an ``AuditLog`` wrote so far (none before its first line)."""
    import json

    if not audit.file.exists():
        return []
    return [json.loads(line) for line in audit.file.read_text().splitlines()]


def float_batches(dtypes):
    """Batches of (n, 64) finite values in the float32 range, in the given dtypes."""
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    def arrays(dtype):
        dtype = np.dtype(dtype)
        elements = (hnp.from_dtype(dtype, min_value=-1000, max_value=1000, allow_nan=False,
                                   allow_infinity=False) if dtype.kind == "f"
                    else hnp.from_dtype(dtype))
        return hnp.arrays(dtype, st.tuples(st.integers(1, 6), st.just(64)), elements=elements)

    return st.sampled_from(dtypes).flatmap(arrays)


def layouts(array: np.ndarray, *, lists: bool, big_endian: bool):
    """The same values in the layouts numpy users hand over."""
    from hypothesis import strategies as st

    forms = [array, np.asfortranarray(array), np.repeat(array, 2, axis=0)[::2]]
    if big_endian:  # a big-endian .npy, say
        forms.append(array.astype(array.dtype.newbyteorder(">")))
    if lists:
        forms.append(array.tolist())
    return st.sampled_from(forms)
