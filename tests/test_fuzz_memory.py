"""Arrays whose values are not their memory, or not the values the model will read.

For every adapter case, a model that records what it reads is guarded in enforce mode and
fed digits-shaped arrays in every dtype, with a few extreme values (NaN, infinities,
values beyond float32 or float16, large integers) and in every layout numpy allows:
non-native byte order (a copy or a byte-swapped view), negative strides, strided columns,
Fortran order, broadcast rows, masked arrays, matrices, read-only memory, structured
dtypes. Each call is either refused with a typed error, and then the model read nothing,
or allowed, and then the model read exactly the values numpy shows, cast to the dtype it
reads them in, every one of them finite. (What a framework refuses on its own, unguarded
too, such as scikit-learn's ``np.matrix``, is its own error and reaches no model.)
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aimsec_core
from aimsec_core import AimsecError
from tests.cases import AdapterCase, all_cases
from tests.conftest import ListSink

CASES = all_cases()
EXAMPLES = {"keras": 30}  # Keras' predict costs tens of milliseconds; the others run 100
DTYPES = [np.float64, np.float32, np.float16, np.longdouble, np.int8, np.int32, np.int64,
          np.uint8, np.uint64, np.bool_]
#: what goes wrong in an array: (dtypes it comes in, values put into it)
TROUBLE = {
    "none": (DTYPES, []),
    # finite where they stand, beyond float32 (or float16, or exact float32) once cast
    "narrowing": ([np.float64, np.float64, np.longdouble, np.int64, np.float32],
                  [1e39, -1e39, 1e300, 7e4, 2.0 ** 40]),
    "invalid": (DTYPES, [np.nan, np.inf, -np.inf]),
}

#: model id -> the values its latest run read, as numpy (appended by the models below)
SEEN: list[np.ndarray] = []


# --- models that record what they read, one per framework ----------------------------------

def _sklearn_model() -> Any:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.utils.validation import check_array

    class Seen(ClassifierMixin, BaseEstimator):
        def fit(self, x: Any, y: Any) -> Seen:
            self.n_features_in_ = np.asarray(x).shape[1]
            self.classes_ = np.unique(y)
            return self

        def predict_proba(self, x: Any) -> np.ndarray:
            read = check_array(x, dtype="numeric", ensure_all_finite=False)  # as estimators do
            SEEN.append(np.array(read))
            return np.full((len(read), len(self.classes_)), 1 / len(self.classes_))

        def predict(self, x: Any) -> np.ndarray:
            return self.classes_[self.predict_proba(x).argmax(axis=1)]

    return Seen().fit(np.zeros((2, 64)), [0, 1])


def _torch_model() -> Any:
    import torch

    class Seen(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.one = torch.nn.Parameter(torch.ones(()))  # the dtype the model reads

        def forward(self, x: Any) -> Any:
            SEEN.append(x.detach().numpy().copy())
            return x.reshape(len(x), -1)

    return Seen().eval()


def _keras_model() -> Any:
    import keras

    class Seen(keras.Model):
        def predict(self, *args: Any, **kwargs: Any) -> Any:
            read = super().predict(*args, **kwargs)  # an identity model: what it read
            SEEN.append(np.array(read))
            return read

    inputs = keras.Input((64,), name="pixels")
    return Seen(inputs, keras.layers.Activation("linear")(inputs))


def _onnx_model() -> Any:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    class Seen(ort.InferenceSession):
        def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
            read = super().run(output_names, input_feed, run_options)  # identity: as read
            SEEN.append(np.array(read[0]))
            return read

    graph = helper.make_graph(
        [helper.make_node("Identity", ["X"], ["probabilities"])], "seen",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return Seen(model.SerializeToString(), providers=["CPUExecutionProvider"])


RECORDING: dict[str, Callable[[], Any]] = {
    "sklearn": _sklearn_model, "torch": _torch_model, "keras": _keras_model,
    "onnx": _onnx_model}


@lru_cache(maxsize=None)
def _recording(case_id: str) -> Any:
    return RECORDING[case_id]()


# --- arrays whose memory is not their values -----------------------------------------------

def _strided(a: np.ndarray) -> np.ndarray:
    wide = np.zeros((a.shape[0], a.shape[1] * 2), a.dtype)
    wide[:, ::2] = a
    return wide[:, ::2]


LAYOUTS: dict[str, Callable[[np.ndarray, np.random.Generator], Any]] = {
    "plain": lambda a, r: a,
    "big-endian copy": lambda a, r: a.astype(a.dtype.newbyteorder(">")),
    "byte-swapped view": lambda a, r: a.byteswap().view(a.dtype.newbyteorder()),
    "negative strides": lambda a, r: np.ascontiguousarray(a[::-1])[::-1],
    "strided columns": lambda a, r: _strided(a),
    "fortran order": lambda a, r: np.asfortranarray(a),
    "broadcast row": lambda a, r: np.broadcast_to(a[:1], a.shape),
    "masked": lambda a, r: np.ma.masked_array(a, mask=r.random(a.shape) < 0.2),
    "matrix": lambda a, r: np.asmatrix(a),
    "read-only": lambda a, r: (a.setflags(write=False), a)[1],
    "structured": lambda a, r: np.ascontiguousarray(a).view(np.dtype([("v", a.dtype)])),
}


@st.composite
def tricky_arrays(draw: Any) -> np.ndarray:
    """Digits-shaped values, a kind of trouble, a dtype and a layout, chosen uniformly from a
    drawn seed (hypothesis' own choices favour the first of each list)."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    values = rng.random((2, 64))  # one batch size: each new input signature costs a retrace
    dtypes, extremes = TROUBLE[rng.choice(["narrowing", "narrowing", "none", "invalid"])]
    for _ in range(rng.integers(1, 3) if extremes else 0):
        values[rng.integers(2), rng.integers(64)] = rng.choice(extremes)
    with np.errstate(all="ignore"):  # the cast itself may overflow: that is the point
        array = values.astype(dtypes[rng.integers(len(dtypes))])
    return LAYOUTS[rng.choice(sorted(LAYOUTS))](array, rng)


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request) -> AdapterCase:
    return request.param


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable:UserWarning")
def test_what_the_model_reads_is_what_was_checked(case):
    sink = ListSink()
    constraints: dict[str, Any] = {"max_size": 100_000}
    if not case.declares_shape:
        constraints["sample_shape"] = case.sample_shape
    guarded = aimsec_core.guard(_recording(case.id), name=f"memory-{case.id}", sinks=[sink],
                                mode="enforce", constraints=constraints)
    outcomes: set[str] = set()

    @settings(max_examples=EXAMPLES.get(case.id, 100), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(array=tricky_arrays())
    def check(array):
        if case.id == "torch" and len(case.sample_shape) == 3:
            array = np.asarray(array).reshape(-1, *case.sample_shape) if (
                array.dtype.fields is None) else array
        try:
            value = case.from_numpy_any(array)
        except (TypeError, ValueError, RuntimeError):  # no such tensor: the array goes in
            value = array
        before, records = len(SEEN), len(sink.events)
        try:
            case.call_guarded(guarded, value)
        except AimsecError as exc:
            assert len(SEEN) == before, f"refused ({exc}) after the model read it"
            assert sink.outcomes[records:] == ["rejected"]
            outcomes.add("rejected")
            return
        except Exception as exc:  # the framework refused it itself, as it does unguarded
            assert len(SEEN) == before and sink.outcomes[records:] == ["error"]
            with pytest.raises(type(exc)):
                case.call_plain(_recording(case.id), value)
            SEEN[before:] = []
            return
        assert sink.outcomes[records:] == ["allowed"] and len(SEEN) == before + 1
        read = SEEN[-1]
        shown = np.asarray(array).reshape(read.shape)  # the values numpy shows the caller
        with np.errstate(all="ignore"):
            expected = shown.astype(read.dtype)
        assert np.isfinite(read.astype(np.float64)).all(), "non-finite values reached the model"
        np.testing.assert_array_equal(read, expected)
        outcomes.add("allowed")

    check()
    assert outcomes == {"allowed", "rejected"}  # the fuzzing reached both sides
