"""onnxruntime adapter: a guarded model is still an ``InferenceSession``.

    >>> import numpy as np
    >>> import onnxruntime
    >>> from skl2onnx import to_onnx
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> import aimsec_core
    >>> X, y = load_digits(return_X_y=True)
    >>> X = (X / 16).astype(np.float32)
    >>> model = LogisticRegression(max_iter=2000).fit(X, y)
    >>> onx = to_onnx(model, X[:1], options={id(model): {"zipmap": False}})
    >>> session = onnxruntime.InferenceSession(onx.SerializeToString(),
    ...                                        providers=["CPUExecutionProvider"])
    >>> guarded = aimsec_core.guard(session, name="digits-onnx",
    ...                             constraints={"min_value": 0, "max_value": 1})
    >>> isinstance(guarded, onnxruntime.InferenceSession)
    True
    >>> plain = session.run(["probabilities"], {"X": X[:5]})[0]
    >>> bool((guarded.run(["probabilities"], {"X": X[:5]})[0] == plain).all())
    True

``run``, ``run_with_ort_values`` and ``run_async`` are guarded: every declared input of the
feed is screened against the dtype and shape the model declares, a missing or unknown input
name is refused with the name in the message. ``run_with_iobinding`` and
``run_with_ortvaluevector`` take inputs the guard cannot read, so they raise
:class:`UnguardedCallError`; ``aimsec_core.unguard(guarded)`` gives the plain session for
callers who bypass the guard on purpose. Everything else (``get_inputs``, ``get_outputs``,
``get_modelmeta``, ``get_providers`` ...) is the session's own.

Overridable initializers (``get_overridable_initializers``) may be fed as with the plain
session; they are model constants, not samples, and pass through unscreened.
"""

from __future__ import annotations

import sys
from functools import cached_property
from typing import Any

from aimsec_core.adapter import Adapter, Capabilities
from aimsec_core.errors import UnguardedCallError
from aimsec_core.guard import Guard
from aimsec_core.signature import InputSpec

__all__ = ["OnnxAdapter", "UnguardedCallError"]

#: ONNX element types whose numpy dtype name differs from the ONNX one.
_DTYPES = {"float": "float32", "double": "float64"}
#: ONNX element types with no numpy dtype of the same name: no dtype check for them.
_NO_NUMPY_DTYPE = frozenset({"string", "bfloat16", "float8e4m3fn", "float8e4m3fnuz",
                             "float8e5m2", "float8e5m2fnuz", "int4", "uint4", "float4e2m1"})
_FLOAT_TYPES = frozenset({"tensor(float)", "tensor(double)", "tensor(float16)"})


class OnnxAdapter(Adapter):
    framework = "onnx"
    input_types = "a numpy array"
    # onnxruntime's run takes nested lists too, cast to the declared element type.
    capabilities = Capabilities(probabilities=True, signature=True, host_sequences=True)

    @classmethod
    def accepts(cls, model: Any) -> bool:
        ort = sys.modules.get("onnxruntime")
        return ort is not None and isinstance(model, ort.InferenceSession)

    def signature(self) -> list[InputSpec] | None:
        # onnxruntime refuses any dtype but the declared one, hence strict_dtype.
        return [InputSpec(arg.name, onnx_dtype(arg.type), onnx_shape(arg.shape),
                          strict_dtype=True) for arg in self.model.get_inputs()]

    def native(self, value: Any) -> Any | None:
        import numpy as np

        if isinstance(value, np.ndarray):
            return value
        ort = sys.modules.get("onnxruntime")
        if ort is not None and isinstance(value, ort.OrtValue):
            if value.device_name().lower() != "cpu":
                raise TypeError(f"an OrtValue on {value.device_name()} cannot be screened "
                                "without a copy to the host; pass a CPU OrtValue or a numpy "
                                "array")
            return value.numpy()
        # The core would convert these, but onnxruntime refuses them: say so up front.
        if isinstance(value, tuple) or np.isscalar(value):
            raise TypeError(f"onnxruntime takes no {type(value).__name__}; expected a numpy "
                            "array (or a nested list), e.g. np.asarray(value, dtype=...)")
        return None

    def scores(self, x: Any) -> Any:
        inputs = self.model.get_inputs()
        if len(inputs) != 1:
            raise NotImplementedError(
                f"class scores need a single-input model; this one takes "
                f"{[arg.name for arg in inputs]}")
        dtype = onnx_dtype(inputs[0].type)
        if dtype is not None:  # detectors may hand in float64 copies; onnxruntime is strict
            import numpy as np

            x = np.asarray(x, dtype=dtype)
        return self.model.run([self.probability_output], {inputs[0].name: x})[0]

    @cached_property
    def probability_output(self) -> str:
        """The output holding class probabilities: one named ``probabilities`` (what
        skl2onnx exports with ``zipmap=False``), else the only 2-D float output."""
        outputs = self.model.get_outputs()
        matrices = [arg.name for arg in outputs
                    if arg.type in _FLOAT_TYPES and len(arg.shape) == 2]
        if "probabilities" in matrices:
            return "probabilities"
        if len(matrices) == 1:
            return matrices[0]
        raise NotImplementedError(
            f"cannot tell which output holds class probabilities among "
            f"{[(arg.name, arg.type, arg.shape) for arg in outputs]}; expected one named "
            "'probabilities' or a single 2-D float output (export scikit-learn classifiers "
            "with options={id(model): {'zipmap': False}})")

    def wrap(self, guard: Guard) -> Any:
        from ._session import GuardedSession

        return GuardedSession(guard)


def onnx_dtype(onnx_type: str) -> str | None:
    """numpy dtype name of an ONNX tensor type (``'tensor(float)'`` -> ``'float32'``);
    ``None`` for non-tensor types and element types numpy has no dtype for."""
    if not (onnx_type.startswith("tensor(") and onnx_type.endswith(")")):
        return None  # sequences, maps, optionals
    element = onnx_type[len("tensor("):-1]
    if element in _NO_NUMPY_DTYPE:
        return None
    return _DTYPES.get(element, element)


def onnx_shape(dims: list[Any]) -> tuple[int | None, ...] | None:
    """Declared shape with symbolic or unknown dimensions as ``None``.

    onnxruntime reports an input of unknown rank as ``[]``, like a scalar, so an empty
    shape declares nothing."""
    if not dims:
        return None
    return tuple(d if isinstance(d, int) else None for d in dims)
