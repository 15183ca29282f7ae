"""The onnxruntime adapter: a guarded session behaves as the session, inputs screened by name."""

from __future__ import annotations

import subprocess
import sys
import threading
import warnings
from functools import lru_cache
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest

import aimsec_core
from aimsec_core import (AimsecError, EmptyInputError, InputFormatError, InputTooLargeError,
                         InputSpec, NonFiniteInputError)
from aimsec_onnx import OnnxAdapter, UnguardedCallError, onnx_dtype, onnx_shape
from tests.cases import digits
from tests.cases.onnx_case import session as digits_session
from tests.cases.sklearn_case import CASE as SKLEARN


@pytest.fixture
def plain():
    return digits_session()


@pytest.fixture
def guarded(plain, sink):
    return aimsec_core.guard(plain, name="digits-onnx", sinks=[sink])


def _x(n: int = 6) -> np.ndarray:
    return digits()[0][:n].copy()


# --- the session's own shape -------------------------------------------------------------

@pytest.mark.parametrize("outputs", [None, [], ["probabilities"], ["label"],
                                     ["probabilities", "label"]])
def test_run_returns_exactly_what_the_session_returns(plain, guarded, sink, outputs):
    feed = {"X": _x()}
    got, want = guarded.run(outputs, feed), plain.run(outputs, feed)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    assert guarded.last_verdict.allowed and guarded.last_verdict.batch_size == 6
    assert sink.outcomes == ["allowed"]


def test_everything_but_run_is_the_session_s(plain, guarded):
    assert isinstance(guarded, ort.InferenceSession)
    assert type(guarded) is not ort.InferenceSession
    assert aimsec_core.unguard(guarded) is plain
    for method in ("get_inputs", "get_outputs", "get_overridable_initializers"):
        assert ([(a.name, a.type, a.shape) for a in getattr(guarded, method)()]
                == [(a.name, a.type, a.shape) for a in getattr(plain, method)()])
    meta, plain_meta = guarded.get_modelmeta(), plain.get_modelmeta()
    assert (meta.producer_name, meta.graph_name, meta.version, meta.custom_metadata_map) == (
        plain_meta.producer_name, plain_meta.graph_name, plain_meta.version,
        plain_meta.custom_metadata_map)
    assert guarded.get_providers() == plain.get_providers() == ["CPUExecutionProvider"]
    assert "get_inputs" in dir(guarded) and "last_verdict" in dir(guarded)
    assert "digits-onnx" in repr(guarded)


def test_accepts_sessions_only_and_imports_nothing(plain, monkeypatch):
    assert OnnxAdapter.accepts(plain)
    assert not OnnxAdapter.accepts(np.zeros(3))
    monkeypatch.delitem(sys.modules, "onnxruntime")
    assert not OnnxAdapter.accepts(plain)  # not imported means not an onnxruntime object
    code = "import sys, aimsec_onnx; assert 'onnxruntime' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ort_values_are_screened_and_run(plain, guarded, sink):
    x = _x()
    value = ort.OrtValue.ortvalue_from_numpy(x)
    np.testing.assert_array_equal(guarded.run(["probabilities"], {"X": value})[0],
                                  plain.run(["probabilities"], {"X": x})[0])
    got = guarded.run_with_ort_values(["probabilities"], {"X": value})[0].numpy()
    np.testing.assert_array_equal(
        got, plain.run_with_ort_values(["probabilities"], {"X": value})[0].numpy())
    x[1, 3] = np.nan
    with pytest.raises(NonFiniteInputError) as caught:
        guarded.run_with_ort_values(None, {"X": ort.OrtValue.ortvalue_from_numpy(x)})
    assert caught.value.verdict.flags == (False, True, False, False, False, False)
    with pytest.raises(InputFormatError, match="OrtValue"):
        guarded.run_with_ort_values(None, {"X": _x()})
    assert sink.outcomes == ["allowed", "allowed", "rejected", "rejected"]


def test_run_async_is_screened_before_it_is_scheduled(plain, guarded, sink):
    done, results = threading.Event(), []

    def callback(outputs, user_data, error):
        results.append((outputs, user_data, error))
        done.set()

    guarded.run_async(["probabilities"], {"X": _x()}, callback, "token")
    assert done.wait(10)
    outputs, user_data, error = results[0]
    assert user_data == "token" and not error
    np.testing.assert_array_equal(outputs[0], plain.run(["probabilities"], {"X": _x()})[0])
    with pytest.raises(InputFormatError, match="float32"):
        guarded.run_async(None, {"X": _x().astype(np.float64)}, callback, None)
    assert len(results) == 1 and sink.outcomes == ["allowed", "rejected"]


def test_iobinding_is_refused_not_bypassed(guarded):
    with pytest.raises(UnguardedCallError, match="unguard") as caught:
        guarded.run_with_iobinding(guarded.io_binding())
    assert isinstance(caught.value, AimsecError) and isinstance(caught.value, NotImplementedError)
    with pytest.raises(UnguardedCallError):
        guarded.run_with_ortvaluevector(None, [], None, [], [])


# --- what a bad feed gives ---------------------------------------------------------------

def test_float64_into_a_float32_model(guarded, sink):
    with pytest.raises(InputFormatError, match="float32") as caught:
        guarded.run(None, {"X": _x().astype(np.float64)})
    assert (caught.value.check, caught.value.expected, caught.value.received) == (
        "dtype", "float32", "float64")
    assert sink.outcomes == ["rejected"]


# (feed, error, check, what the message must say); the adapter's own wording is quoted in
# full, the core's is only required to name the input and the mismatch.
BAD_FEEDS = [
    ({}, InputFormatError, "missing", ["'X'", "missing from input_feed (which holds [])"]),
    ({"x": _x()}, InputFormatError, "missing", ["'X'", "missing", "(which holds ['x'])"]),
    ({"X": _x(), "Y": _x()}, InputFormatError, "unknown",
     ["'Y'", "no input of the model has this name; expected one of ['X']"]),
    (_x(), InputFormatError, "format", ["input_feed is a ndarray; expected a dict"]),
    ([_x()], InputFormatError, "format", ["input_feed is a list; expected a dict"]),
    ({"X": None}, EmptyInputError, "null", ["'X'", "None"]),
    ({"X": tuple(_x()[0])}, InputFormatError, "format", ["'X'", "onnxruntime takes no tuple"]),
    ({"X": 0.5}, InputFormatError, "format", ["'X'", "onnxruntime takes no float"]),
    ({"X": [[0.5, 0.5], [0.5]]}, InputFormatError, "format", ["'X'", "ragged"]),
    ({"X": _x()[:, :8]}, InputFormatError, "shape", ["'X'", "(6, 8)", "(N, 64)"]),
]


@pytest.mark.parametrize("feed,error,check,says", BAD_FEEDS, ids=[
    "empty", "misspelt", "unknown", "array", "list", "none", "tuple", "scalar", "ragged",
    "shape"])
def test_bad_feeds_are_typed_and_recorded(guarded, sink, feed, error, check, says):
    with pytest.raises(error) as caught:
        guarded.run(None, feed)
    assert all(part in str(caught.value) for part in says), str(caught.value)
    assert not caught.value.verdict.allowed and caught.value.verdict.checks == (check,)
    assert sink.outcomes == ["rejected"]


@pytest.mark.parametrize("names,match", [
    (["nope"], r"unknown output name\(s\) \['nope'\]"),
    ("probabilities", "output_names is a str"),
    ([1], r"unknown output name\(s\) \[1\]"),
])
def test_bad_output_names_are_typed_and_recorded(guarded, sink, names, match):
    with pytest.raises(InputFormatError, match=match) as caught:
        guarded.run(names, {"X": _x()})
    assert sink.outcomes == ["rejected"]  # one record, one verdict
    assert sink.events[0].verdict is caught.value.verdict is guarded.last_verdict
    bad = _x()
    bad[2, 0] = np.nan  # the feed is screened too: both findings in the one verdict
    with pytest.raises(InputFormatError, match=match) as caught:
        guarded.run(names, {"X": bad})
    assert caught.value.verdict.checks == ("finite", "format")
    assert caught.value.verdict.flags[2] and sink.outcomes == ["rejected"] * 2


def test_client_built_output_names_keep_the_message_short(guarded, sink):
    names = ["x" * 10_000] + [f"out{i}" for i in range(10_000)]
    with pytest.raises(InputFormatError) as caught:
        guarded.run(names, {"X": _x()})
    assert len(str(caught.value)) < 1000 and sink.outcomes == ["rejected"]


def test_nested_lists_are_screened_as_the_array_onnxruntime_builds(plain, guarded, sink):
    rows = _x(3).tolist()  # Python floats: float64 for numpy, cast to float32 by onnxruntime
    np.testing.assert_array_equal(guarded.run(None, {"X": rows})[1],
                                  plain.run(None, {"X": rows})[1])
    assert guarded.last_verdict.dtype == "float32"
    rows[2][5] = float("inf")
    with pytest.raises(NonFiniteInputError):
        guarded.run(None, {"X": rows})
    small = aimsec_core.guard(digits_session(), sinks=[sink], constraints={"max_size": 64})
    with pytest.raises(InputTooLargeError):  # refused by the core, before any conversion
        small.run(None, {"X": rows})
    assert sink.outcomes == ["allowed", "rejected", "rejected"]


# --- signature and scores ----------------------------------------------------------------

@pytest.mark.parametrize("onnx_type,dtype", [
    ("tensor(float)", "float32"), ("tensor(double)", "float64"),
    ("tensor(float16)", "float16"), ("tensor(int64)", "int64"), ("tensor(int32)", "int32"),
    ("tensor(uint8)", "uint8"), ("tensor(bool)", "bool"), ("tensor(string)", "str"),
    ("tensor(bfloat16)", "bfloat16"), ("seq(map(int64,tensor(float)))", None),
])
def test_onnx_types_map_to_numpy_dtypes(onnx_type, dtype):
    assert onnx_dtype(onnx_type) == dtype


@pytest.mark.parametrize("dims,shape", [
    (["N", 64], ("N", 64)), ([None, 3, 8, 8], (None, 3, 8, 8)), ([1, 64], (1, 64)),
    ([], None),  # unknown rank (onnxruntime reports scalars the same way)
])
def test_dimensions_keep_their_symbols(dims, shape):
    assert onnx_shape(dims) == shape


def test_signature_is_the_session_s(plain):
    assert OnnxAdapter(plain).signature() == [
        InputSpec("X", "float32", (None, 64), strict_dtype=True)]  # skl2onnx names no symbol


def test_scores_are_the_probability_output(plain):
    x = _x()
    np.testing.assert_array_equal(OnnxAdapter(plain).scores(x),
                                  plain.run(["probabilities"], {"X": x})[0])


def test_detectors_calibrate_and_score_through_the_session(plain, sink, tmp_path):
    x = digits()[0]
    guarded = aimsec_core.guard(plain, sinks=[sink], mode="monitor",
                                constraints={"min_value": 0, "max_value": 1})
    calibration = guarded.calibrate(x[:600])
    assert calibration.framework == "onnx"
    saved = guarded.save_calibration(tmp_path / "digits.npz")
    reloaded = aimsec_core.guard(digits_session(), sinks=[sink], mode="monitor",
                                 calibration=saved)
    feed = {"X": x[1000:1008]}
    np.testing.assert_array_equal(reloaded.run(None, feed)[1], plain.run(None, feed)[1])
    guarded.run(None, feed)
    scores = reloaded.last_verdict.scores["suspicion"]
    assert len(scores) == 8 and scores == guarded.last_verdict.scores["suspicion"]


def _fake(*outputs: tuple[str, str, list]) -> OnnxAdapter:
    args = [SimpleNamespace(name=n, type=t, shape=s) for n, t, s in outputs]
    return OnnxAdapter(SimpleNamespace(get_outputs=lambda: args))


def test_the_probability_output_rule():
    label = ("label", "tensor(int64)", ["N"])
    assert _fake(label, ("probabilities", "tensor(float)", ["N", 10]),
                 ("logits", "tensor(float)", ["N", 10])).probability_output == "probabilities"
    assert _fake(label, ("output_0", "tensor(double)", ["N", 3])).probability_output == (
        "output_0")
    with pytest.raises(NotImplementedError, match="zipmap"):
        _ = _fake(label, ("output_probability", "seq(map(int64,tensor(float)))",
                          [])).probability_output
    with pytest.raises(NotImplementedError, match="'a'.*'b'"):
        _ = _fake(("a", "tensor(float)", ["N", 2]), ("b", "tensor(float)", ["N", 2])
                  ).probability_output


# --- a model with two inputs -------------------------------------------------------------

def _graph_session(name: str, nodes: list, inputs: list, outputs: list,
                   weights: dict[str, np.ndarray] | None = None) -> bytes:
    """An ONNX model built node by node; inputs/outputs are (name, element type, dims)."""
    from onnx import helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node(*node[:3], **(node[3] if len(node) > 3 else {})) for node in nodes],
        name, [helper.make_tensor_value_info(*arg) for arg in inputs],
        [helper.make_tensor_value_info(*arg) for arg in outputs],
        [numpy_helper.from_array(v, k) for k, v in (weights or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by older onnxruntime releases too
    return model.SerializeToString()


@lru_cache(maxsize=1)
def _two_input_model() -> bytes:
    """The digits MLP split at the first layer: ``upper`` takes rows 0-3 as float32 in
    [0, 1], ``lower`` rows 4-7 as int64 pixel counts 0-16; same weights, same output."""
    from onnx import TensorProto

    mlp = SKLEARN.model()
    w1, w2 = (w.astype(np.float32) for w in mlp.coefs_)
    b1, b2 = (b.astype(np.float32) for b in mlp.intercepts_)
    return _graph_session(
        "digits_two_inputs",
        [("Cast", ["lower"], ["lower_f"], {"to": TensorProto.FLOAT}),
         ("Mul", ["lower_f", "sixteenth"], ["lower_s"]),
         ("MatMul", ["upper", "w_upper"], ["h_upper"]),
         ("MatMul", ["lower_s", "w_lower"], ["h_lower"]),
         ("Sum", ["h_upper", "h_lower", "b1"], ["h_pre"]),
         ("Relu", ["h_pre"], ["h"]),
         ("MatMul", ["h", "w2"], ["z_pre"]),
         ("Add", ["z_pre", "b2"], ["z"]),
         ("Softmax", ["z"], ["probabilities"], {"axis": 1})],
        [("upper", TensorProto.FLOAT, ["N", 32]), ("lower", TensorProto.INT64, ["N", 32])],
        [("probabilities", TensorProto.FLOAT, ["N", 10])],
        {"w_upper": w1[:32], "w_lower": w1[32:], "b1": b1, "w2": w2, "b2": b2,
         "sixteenth": np.array(1 / 16, np.float32)})


@pytest.fixture
def two_inputs(sink):
    session = ort.InferenceSession(_two_input_model(), providers=["CPUExecutionProvider"])
    return session, aimsec_core.guard(session, name="digits-split", sinks=[sink])


def _split(n: int = 4) -> dict[str, np.ndarray]:
    x = _x(n)
    return {"upper": x[:, :32].copy(), "lower": np.rint(x[:, 32:] * 16).astype(np.int64)}


def test_two_input_model_runs_unchanged(two_inputs, sink):
    session, guarded = two_inputs
    feed = _split()
    out = guarded.run(None, feed)[0]
    np.testing.assert_array_equal(out, session.run(None, feed)[0])
    np.testing.assert_allclose(out, SKLEARN.model().predict_proba(_x(4)), rtol=1e-4,
                               atol=1e-6)  # a real trained model, not random weights
    assert OnnxAdapter(session).signature() == [
        InputSpec("upper", "float32", ("N", 32), strict_dtype=True),
        InputSpec("lower", "int64", ("N", 32), strict_dtype=True)]
    assert sink.outcomes == ["allowed"]


# (what replaces part of a clean feed, the error, the check, what the message must name)
BAD_SECOND_INPUT = [
    ({"lower": _split()["upper"]}, InputFormatError, "dtype", ["'lower'", "int64"]),
    ({"lower": _split()["lower"][:, :16]}, InputFormatError, "shape", ["'lower'", "(4, 16)"]),
    ({"lower": _split(3)["lower"]}, InputFormatError, "shape", ["'lower'", "3", "'N'"]),
    ({"lower": None}, EmptyInputError, "null", ["'lower'"]),
    ({"lower": _split()["lower"].tolist()}, None, None, []),  # a list of ints is fine
    ({"extra": _split()["upper"]}, InputFormatError, "unknown",
     ["'extra'", "no input of the model has this name", "['upper', 'lower']"]),
]


@pytest.mark.parametrize("change,error,check,names", BAD_SECOND_INPUT,
                         ids=["dtype", "shape", "batch", "none", "list", "unknown"])
def test_each_input_is_validated_by_name(two_inputs, sink, change, error, check, names):
    session, guarded = two_inputs
    feed = {**_split(), **change}
    if error is None:
        np.testing.assert_array_equal(guarded.run(None, feed)[0], session.run(None, feed)[0])
        assert sink.outcomes == ["allowed"]
        return
    with pytest.raises(error) as caught:
        guarded.run(None, feed)
    assert caught.value.verdict.checks == (check,)
    assert all(name in str(caught.value) for name in names), str(caught.value)
    assert sink.outcomes == ["rejected"]


def test_a_missing_input_is_named(two_inputs, sink):
    _, guarded = two_inputs
    with pytest.raises(InputFormatError) as caught:
        guarded.run(None, {"upper": _split()["upper"]})
    assert "'lower'" in str(caught.value)
    assert "missing from input_feed (which holds ['upper'])" in str(caught.value)
    assert caught.value.check == "missing" and caught.value.received == ["upper"]
    crowded = {"upper": _split()["upper"], **{f"key{i}": i for i in range(10_000)}}
    with pytest.raises(InputFormatError, match="'lower'") as caught:
        guarded.run(None, crowded)  # a feed built from client data: the message stays short
    assert len(str(caught.value)) < 400
    assert sink.outcomes == ["rejected", "rejected"]


@pytest.mark.parametrize("mode", ["monitor", "enforce"])
def test_per_sample_flags_span_the_inputs(two_inputs, sink, mode):
    session, _ = two_inputs
    guarded = aimsec_core.guard(session, mode=mode, sinks=[sink],
                                constraints={"min_value": 0, "max_value": 16})
    feed = _split()
    feed["upper"][1, 0] = np.nan  # sample 1 spoilt in the first input
    feed["lower"][3, 7] = 40  # sample 3 spoilt in the second
    if mode == "enforce":
        with pytest.raises(NonFiniteInputError):
            guarded.run(None, feed)
    else:
        np.testing.assert_array_equal(guarded.run(None, feed)[0], session.run(None, feed)[0])
    verdict = guarded.last_verdict
    assert verdict.flags == (False, True, False, True)
    assert verdict.checks == ("finite", "range")
    assert sink.outcomes == ["flagged" if mode == "monitor" else "rejected"]


# --- per-call inputs -----------------------------------------------------------------

def _scaled_model(scale_type: int, scale_dims: list) -> ort.InferenceSession:
    """``y = x * scale``: a batch ``x`` and one per-call parameter ``scale``."""
    from onnx import TensorProto

    model = _graph_session(
        "scaled", [("Cast", ["scale"], ["scale_f"], {"to": TensorProto.FLOAT}),
                   ("Mul", ["x", "scale_f"], ["y"])],
        [("x", TensorProto.FLOAT, ["N", 64]), ("scale", scale_type, scale_dims)],
        [("y", TensorProto.FLOAT, ["N", 64])])
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("scale", [np.array(2.0, np.float32), np.array([2.0], np.float32)],
                         ids=["0-d", "1-d"])
def test_a_per_call_scalar_input(sink, scale):
    from onnx import TensorProto

    session = _scaled_model(TensorProto.FLOAT, [] if scale.ndim == 0 else [1])
    guarded = aimsec_core.guard(session, sinks=[sink])
    feed = {"x": _x(), "scale": scale}
    np.testing.assert_array_equal(guarded.run(None, feed)[0], session.run(None, feed)[0])


def test_a_bool_input(sink):
    from onnx import TensorProto

    session = _scaled_model(TensorProto.BOOL, ["N", 64])
    guarded = aimsec_core.guard(session, sinks=[sink])
    feed = {"x": _x(), "scale": _x() > 0.5}
    np.testing.assert_array_equal(guarded.run(None, feed)[0], session.run(None, feed)[0])


def test_client_chosen_feed_names_do_not_grow_the_guard_without_bound(two_inputs):
    _, guarded = two_inputs
    guard = aimsec_core.guard_of(guarded)
    for i in range(200):
        with pytest.raises(InputFormatError):
            guarded.run(None, {**_split(), f"probe{i}": _split()["upper"]})
    assert len(guard._specs) <= 64


def test_the_content_hash_tells_inputs_apart_by_name(two_inputs, sink):
    _, guarded = two_inputs
    feed = _split()
    guarded.run(None, feed)
    first = guarded.last_verdict.input_hash
    guarded.run(None, {"upper": feed["upper"], "lower": feed["lower"] + 1})
    assert guarded.last_verdict.input_hash != first


# --- every element type, symbols by name ---------------------------------------------------

def _identity(element: int, dims: list | None = ["N", 4]) -> ort.InferenceSession:
    return ort.InferenceSession(_graph_session(
        "identity", [("Identity", ["x"], ["y"])], [("x", element, dims)],
        [("y", element, dims)]), providers=["CPUExecutionProvider"])


def _element_types() -> list[tuple[str, type]]:
    return [("BOOL", np.bool_), ("INT8", np.int8), ("INT16", np.int16), ("INT32", np.int32),
            ("INT64", np.int64), ("UINT8", np.uint8), ("UINT16", np.uint16),
            ("UINT32", np.uint32), ("UINT64", np.uint64), ("FLOAT16", np.float16),
            ("FLOAT", np.float32), ("DOUBLE", np.float64)]


@pytest.mark.parametrize("element,dtype", _element_types(), ids=[e for e, _ in _element_types()])
def test_every_numeric_element_type_is_accepted_when_it_matches(sink, element, dtype):
    from onnx import TensorProto

    session = _identity(getattr(TensorProto, element))
    guarded = aimsec_core.guard(session, sinks=[sink])
    x = (np.arange(8).reshape(2, 4) % 2).astype(dtype)
    np.testing.assert_array_equal(guarded.run(None, {"x": x})[0], session.run(None, {"x": x})[0])
    other = np.float32 if dtype is not np.float32 else np.float64
    with pytest.raises(InputFormatError, match=np.dtype(dtype).name):
        guarded.run(None, {"x": x.astype(other)})
    assert sink.outcomes == ["allowed", "rejected"]


def test_string_inputs_take_text_and_refuse_the_rest(sink):
    from onnx import TensorProto

    session = _identity(TensorProto.STRING)
    guarded = aimsec_core.guard(session, sinks=[sink])
    words = [["a", "bc", "d", "é"], ["x", "y", "", "z"]]
    for feed in (np.array(words), np.array(words, dtype=object), words):
        np.testing.assert_array_equal(guarded.run(None, {"x": feed})[0],
                                      session.run(None, {"x": feed})[0])
    assert guarded.last_verdict.input_hash  # hashed, as text
    # bytes arrays are read as raw memory by onnxruntime; objects that are not str
    # would be turned into text behind the caller's back
    # and it reads text only up to a NUL, and cannot encode lone surrogates
    for bad in (np.array([[b"a", b"b", b"c", b"d"]]), np.array([[1, 2, 3, 4]], dtype=object),
                np.ones((2, 4), np.float32), np.array([["a\x00b", "b", "c", "d"]]),
                np.array([["\ud800", "b", "c", "d"]], dtype=object)):
        with pytest.raises(InputFormatError, match="declares text"):
            guarded.run(None, {"x": bad})
    assert sink.outcomes == ["allowed"] * 3 + ["rejected"] * 5


def test_equal_text_in_object_arrays_hashes_alike(sink):
    from onnx import TensorProto

    guarded = aimsec_core.guard(_identity(TensorProto.STRING), sinks=[sink])
    hashes = []
    for _ in range(2):  # equal strings, distinct objects
        feed = np.array([["".join(["a", str(i)]) for i in range(4)]], dtype=object)
        guarded.run(None, {"x": feed})
        hashes.append(guarded.last_verdict.input_hash)
    assert hashes[0] == hashes[1]


@lru_cache(maxsize=1)
def _attention() -> bytes:
    """``scores = queries @ keys^T``: queries ``[Q, 4]``, keys ``[K, 4]``."""
    from onnx import TensorProto

    return _graph_session(
        "attention", [("Transpose", ["keys"], ["keys_t"], {"perm": [1, 0]}),
                      ("MatMul", ["queries", "keys_t"], ["scores"])],
        [("queries", TensorProto.FLOAT, ["Q", 4]), ("keys", TensorProto.FLOAT, ["K", 4])],
        [("scores", TensorProto.FLOAT, ["Q", "K"])])


def test_dimensions_with_different_symbols_need_not_agree(sink):
    session = ort.InferenceSession(_attention(), providers=["CPUExecutionProvider"])
    guarded = aimsec_core.guard(session, sinks=[sink])
    rng = np.random.default_rng(0)
    feed = {"queries": rng.random((2, 4), np.float32), "keys": rng.random((5, 4), np.float32)}
    np.testing.assert_array_equal(guarded.run(None, feed)[0], session.run(None, feed)[0])
    assert guarded.last_verdict.batch_size == 2  # the first input's leading symbol
    feed["keys"][3, 1] = np.nan  # keys are not the batch: the whole call is flagged
    with pytest.raises(NonFiniteInputError, match="'keys'") as caught:
        guarded.run(None, feed)
    assert caught.value.verdict.flags == (True, True)
    assert sink.outcomes == ["allowed", "rejected"]


def test_dimensions_sharing_a_symbol_must_agree_wherever_they_are(sink):
    from onnx import TensorProto

    session = ort.InferenceSession(_graph_session(
        "pair", [("Add", ["a", "b"], ["y"])],
        [("a", TensorProto.FLOAT, ["N", "T"]), ("b", TensorProto.FLOAT, ["N", "T"])],
        [("y", TensorProto.FLOAT, ["N", "T"])]), providers=["CPUExecutionProvider"])
    guarded = aimsec_core.guard(session, sinks=[sink])
    ok = {"a": np.ones((2, 3), np.float32), "b": np.ones((2, 3), np.float32)}
    np.testing.assert_array_equal(guarded.run(None, ok)[0], session.run(None, ok)[0])
    with pytest.raises(InputFormatError, match=r"dimension 'T': 'a' has 3 \(axis 1\), 'b' has 4"):
        guarded.run(None, {"a": ok["a"], "b": np.ones((2, 4), np.float32)})
    assert sink.outcomes == ["allowed", "rejected"]


def test_a_scalar_declared_as_empty_shape_is_not_a_batch(sink):
    from onnx import TensorProto

    session = _scaled_model(TensorProto.FLOAT, [])
    assert OnnxAdapter(session).signature()[1].shape is None  # [] may also be unknown rank
    guarded = aimsec_core.guard(session, sinks=[sink])
    feed = {"x": _x(3), "scale": np.array(0.5, np.float32)}
    np.testing.assert_array_equal(guarded.run(None, feed)[0], session.run(None, feed)[0])
    assert guarded.last_verdict.batch_size == 3


# --- the values checked are the values onnxruntime reads -----------------------------------

def test_a_big_endian_feed_runs_as_the_values_numpy_shows(plain, guarded, sink):
    x = _x()
    big = x.astype(">f4")  # what np.load gives for a .npy written on a big-endian machine
    wrong = plain.run(["probabilities"], {"X": big})[0]  # the raw bytes, misread
    assert not np.allclose(wrong, plain.run(["probabilities"], {"X": x})[0], equal_nan=True)
    np.testing.assert_array_equal(guarded.run(["probabilities"], {"X": big})[0],
                                  plain.run(["probabilities"], {"X": x})[0])
    big[4, 2] = np.nan
    with pytest.raises(NonFiniteInputError) as caught:
        guarded.run(None, {"X": big})
    assert caught.value.verdict.flags[4]
    assert sink.outcomes == ["allowed", "rejected"]


def test_big_endian_and_native_inputs_hash_alike(guarded):
    x = _x()
    guarded.run(None, {"X": x})
    native = guarded.last_verdict.input_hash
    guarded.run(None, {"X": x.astype(">f4")})
    assert guarded.last_verdict.input_hash == native


def test_list_numbers_beyond_the_declared_dtype_are_refused_naming_both(guarded, sink):
    rows = _x(2).tolist()
    rows[1][3] = 1e39  # a Python float: finite, but infinite once cast to float32
    with pytest.raises(NonFiniteInputError, match="float64 input is cast to float32") as caught:
        guarded.run(None, {"X": rows})
    assert caught.value.verdict.flags == (False, True)
    assert sink.outcomes == ["rejected"]


def test_calibrating_a_two_input_model_takes_one_array_per_input(two_inputs):
    # a feed of both inputs was refused as "input 'upper' is a dict; expected a numpy
    # array", as if the data were malformed, then as "the detectors read one input"; it
    # now calibrates (tests/test_onnx_multi_input.py), and one array alone is refused
    _, guarded = two_inputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # few samples
        made = guarded.calibrate(_split(40), detectors=["margin"])
    assert made.input_shapes == ((32,), (32,))
    with pytest.raises(aimsec_core.CalibrationError,
                       match=r"\['upper', 'lower'\].*one array per input; received a ndarray"):
        guarded.calibrate(_split(40)["upper"])


def test_per_input_constraints_name_the_sessions_inputs(plain, sink):
    # constraints for a name the feed cannot carry would never apply: refused when guarding
    with pytest.raises(aimsec_core.ConfigurationError, match=r"names \['input'\], which the "
                                                             r"model does not take"):
        aimsec_core.guard(plain, sinks=[sink], constraints={"inputs": {"input": {"max_value": 1}}})
    name = plain.get_inputs()[0].name
    assert aimsec_core.guard(plain, sinks=[sink], constraints={"inputs": {name: {"max_value": 1}}})


class _RaisingName(str):
    """An output name whose comparisons raise."""

    def __eq__(self, other):
        raise RuntimeError("hostile name")

    __hash__ = str.__hash__


class _UnreadableNames(Sequence):
    """output_names whose items cannot be read."""

    def __len__(self):
        return 2

    def __getitem__(self, index):
        raise RuntimeError("hostile sequence")


@pytest.mark.parametrize("names,match", [
    ([_RaisingName("label")], None),
    (_UnreadableNames(), "output_names could not be read"),
    (["label"] * 1000 + ["nope"], r"unknown output name\(s\) \['nope'\]"),
], ids=["name-eq-raises", "unreadable-sequence", "bad-name-past-1000"])
def test_hostile_output_names_are_refused_or_run_with_one_line(plain, guarded, sink, names,
                                                               match):
    """output_names are read once, each name as the string it holds, every one of them:
    a name whose ``__eq__`` raises is still the name it spells; names that cannot be read,
    or an unknown one however far down the list, are refused before the session runs."""
    if match is None:
        np.testing.assert_array_equal(guarded.run(names, {"X": _x()})[0],
                                      plain.run(["label"], {"X": _x()})[0])
        assert sink.outcomes == ["allowed"]
        return
    with pytest.raises(InputFormatError, match=match):
        guarded.run(names, {"X": _x()})
    assert sink.outcomes == ["rejected"]
