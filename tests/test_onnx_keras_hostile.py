"""Hostile cases for the onnxruntime and Keras adapters: odd signatures and feeds."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import aimsec_core
from aimsec_core import InputFormatError
from tests.test_onnx_adapter import _graph_session


def _session(model: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def _constant_model() -> bytes:
    """A model that declares no inputs at all: it returns a constant."""
    from onnx import TensorProto, numpy_helper

    value = numpy_helper.from_array(np.ones((2, 2), np.float32))
    return _graph_session("constant", [("Constant", [], ["y"], {"value": value})], [],
                          [("y", TensorProto.FLOAT, [2, 2])])


def test_a_model_without_inputs_refuses_a_feed_that_is_not_a_dict(sink):
    session = _session(_constant_model())
    guarded = aimsec_core.guard(session, sinks=[sink])
    np.testing.assert_array_equal(guarded.run(None, {})[0], session.run(None, {})[0])
    for feed in (None, [np.ones(2)]):
        with pytest.raises(InputFormatError, match="input_feed is a"):
            guarded.run(None, feed)
    assert sink.outcomes == ["allowed", "rejected", "rejected"]


def _optional_input_model() -> bytes:
    """``x`` a float tensor, ``o`` an optional float tensor the caller may leave out."""
    from onnx import TensorProto, helper

    tensor = helper.make_tensor_type_proto(TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph(
        [helper.make_node("OptionalHasElement", ["o"], ["given"]),
         helper.make_node("Identity", ["x"], ["y"])], "optional",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
         helper.make_value_info("o", helper.make_optional_type_proto(tensor))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("given", TensorProto.BOOL, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model.SerializeToString()


def test_an_optional_input_may_be_left_out_and_is_screened_when_given(sink):
    session = _session(_optional_input_model())
    guarded = aimsec_core.guard(session, sinks=[sink])
    x = np.ones((2, 4), np.float32)
    for feed in ({"x": x}, {"x": x, "o": x}):
        expected = session.run(None, feed)
        got = guarded.run(None, feed)
        assert [bool(v) for v in (got[1], expected[1])] == [len(feed) == 2] * 2
    with pytest.raises(aimsec_core.NonFiniteInputError):
        guarded.run(None, {"x": x, "o": x * np.nan})
    # the element type inside optional(...) is the declared one
    with pytest.raises(InputFormatError, match="has dtype float64; expected float32"):
        guarded.run(None, {"x": x, "o": x.astype(np.float64)})
    with pytest.raises(InputFormatError, match="missing"):
        guarded.run(None, {"o": x})
    assert sink.outcomes == ["allowed", "allowed", "rejected", "rejected", "rejected"]


def test_bfloat16_arrays_are_refused_typed_and_recorded(sink):
    """onnxruntime's run() takes no numpy array for a bfloat16 input (it cannot convert
    ml_dtypes' bfloat16); the guard says so, with an audit line, instead of crashing."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from onnx import TensorProto

    dims = ["N", 4]
    session = _session(_graph_session("bf16", [("Identity", ["x"], ["y"])],
                                      [("x", TensorProto.BFLOAT16, dims)],
                                      [("y", TensorProto.BFLOAT16, dims)]))
    guarded = aimsec_core.guard(session, sinks=[sink])
    for x in (np.ones((2, 4), ml_dtypes.bfloat16), np.ones((2, 4), np.float32)):
        with pytest.raises(InputFormatError, match="bfloat16"):
            guarded.run(None, {"x": x})
    assert sink.outcomes == ["rejected", "rejected"]


def test_an_ml_dtypes_array_is_hashed_by_its_bytes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from aimsec_core.arrays import content_hash

    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    a, b = x.astype(ml_dtypes.bfloat16), (x + 1).astype(ml_dtypes.bfloat16)
    assert content_hash([a]) == content_hash([a.copy()]) != content_hash([b])
    assert content_hash([a]) == content_hash([np.asfortranarray(a)])


def _string_lookup_model():
    import keras

    word = keras.Input((1,), dtype="string", name="word")
    ids = keras.layers.StringLookup(vocabulary=["a", "b", "c"])(word)
    hot = keras.layers.CategoryEncoding(num_tokens=4, output_mode="one_hot")(ids)
    return keras.Model(word, keras.layers.Dense(2, activation="softmax")(hot))


def test_a_keras_string_input_takes_text(sink):
    tf = pytest.importorskip("tensorflow")
    model = _string_lookup_model()
    guarded = aimsec_core.guard(model, sinks=[sink])
    words = np.array([["a"], ["b"], ["z"]])
    np.testing.assert_array_equal(guarded(words.astype(object)), model(words.astype(object)))
    np.testing.assert_array_equal(guarded.predict(tf.constant(words), verbose=0),
                                  model.predict(tf.constant(words), verbose=0))
    # numbers, and bytes that are not text, are refused typed (TensorFlow's own error
    # for numbers is a graph-execution traceback)
    for bad in (np.ones((3, 1), np.float32), tf.constant([[b"\xff"], [b"a"], [b"b"]])):
        with pytest.raises(InputFormatError):
            guarded.predict(bad, verbose=0)
    assert sink.outcomes == ["allowed", "allowed", "rejected", "rejected"]
