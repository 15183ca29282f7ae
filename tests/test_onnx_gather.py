"""An ONNX model that looks an input's values up in a table (``Gather``: token ids into an
embedding) has out-of-range ids refused by the guard, with the table named, instead of
onnxruntime's own INVALID_ARGUMENT error from inside the session."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import aimsec_core  # noqa: E402
from aimsec_core import ValueRangeError  # noqa: E402

ROWS = 10


def _session(ids_type: int = TensorProto.INT64, via: tuple[str, ...] = (),
             constant_table: bool = False) -> ort.InferenceSession:
    """ids (N, 5) -> Gather from a (10, 4) table -> mean over the 5 -> (N, 3) logits;
    ``via``: nodes between the input and the Gather."""
    table = np.arange(ROWS * 4, dtype=np.float32).reshape(ROWS, 4) / 40
    weights = numpy_helper.from_array(np.ones((4, 3), dtype=np.float32), "w")
    nodes, initializers, name = [], [weights], "ids"
    for i, op in enumerate(via):
        out = f"moved{i}"
        attributes = {"to": TensorProto.INT64} if op == "Cast" else {}
        nodes.append(helper.make_node(op, [name], [out], **attributes))
        name = out
    if constant_table:
        nodes.append(helper.make_node("Constant", [], ["table"],
                                      value=numpy_helper.from_array(table, "t")))
    else:
        initializers.append(numpy_helper.from_array(table, "table"))
    nodes += [helper.make_node("Gather", ["table", name], ["emb"], axis=0),
              helper.make_node("ReduceMean", ["emb"], ["pooled"], axes=[1], keepdims=0),
              helper.make_node("MatMul", ["pooled", "w"], ["logits"])]
    graph = helper.make_graph(
        nodes, "gather", [helper.make_tensor_value_info("ids", ids_type, ["N", 5])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"])


def _run(guarded: Any, ids: list[list[int]], dtype: str = "int64") -> Any:
    return guarded.run(None, {"ids": np.array(ids, dtype=dtype)})[0]


@pytest.mark.parametrize("via", [(), ("Identity",), ("Cast",)],
                         ids=["direct", "identity", "cast"])
@pytest.mark.parametrize("bad", [ROWS, 50, -ROWS - 1, -(2**40)])
def test_an_id_past_the_table_is_refused_naming_it(bad, via, sink):
    guarded = aimsec_core.guard(_session(via=via), sinks=[sink])
    with pytest.raises(ValueRangeError, match=rf"\[-{ROWS}, {ROWS - 1}\].*table of {ROWS}"):
        _run(guarded, [[1, 2, 3, 4, bad]])
    assert sink.outcomes == ["rejected"]  # refused and audited, never run


def test_ids_in_the_table_run_as_on_the_plain_session_negative_ones_too(sink):
    session = _session()
    guarded = aimsec_core.guard(session, sinks=[sink])
    for ids in ([[0, 1, 2, 3, ROWS - 1]], [[-1, -ROWS, 0, 5, 9]]):
        plain = session.run(None, {"ids": np.array(ids)})[0]
        np.testing.assert_array_equal(_run(guarded, ids), plain)


def test_a_constant_node_table_and_int32_ids_are_read_too(sink):
    guarded = aimsec_core.guard(_session(TensorProto.INT32, constant_table=True),
                                sinks=[sink])
    with pytest.raises(ValueRangeError, match=f"table of {ROWS}"):
        _run(guarded, [[0, 0, 0, 0, ROWS]], "int32")
    assert _run(guarded, [[0, 0, 0, 0, ROWS - 1]], "int32").shape == (1, 3)


def test_a_constraint_narrows_the_table_range_and_none_lifts_it(sink):
    narrowed = aimsec_core.guard(_session(), sinks=[sink],
                                 constraints={"inputs": {"ids": {"min_value": 0}}})
    with pytest.raises(ValueRangeError, match=rf"\[0, {ROWS - 1}\]"):
        _run(narrowed, [[-1, 0, 0, 0, 0]])
    lifted = aimsec_core.guard(_session(), sinks=[sink],
                               constraints={"inputs": {"ids": {"max_value": None}}})
    with pytest.raises(Exception) as raised:  # onnxruntime's own error, as asked
        _run(lifted, [[0, 0, 0, 0, ROWS]])
    assert not isinstance(raised.value, ValueRangeError)


def test_a_session_whose_graph_cannot_be_read_declares_no_table(sink, monkeypatch):
    from aimsec_onnx import OnnxAdapter

    def unreadable(self: Any) -> Any:
        raise ValueError("no model kept")

    monkeypatch.setattr(OnnxAdapter, "_graph", unreadable)
    adapter = OnnxAdapter(_session())
    assert adapter.signature()[0].index_rows is None


def _model(nodes: list, inputs: list, outputs: list, initializers: list = ()) -> Any:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("bounds, length", [({}, 3), ({"start": 1}, 2), ({"end": -1}, 2)])
def test_an_index_into_a_shape_output_is_checked_against_the_rank(sink, bounds, length):
    """``Shape(x)`` then ``Gather`` by a caller's index (a dimension picked per call): the
    shape vector is a table as long as the rank the ``Shape`` node reads."""
    session = _model(
        [helper.make_node("Shape", ["x"], ["shape"], **bounds),
         helper.make_node("Gather", ["shape", "i"], ["d"], axis=0),
         helper.make_node("Cast", ["d"], ["out"], to=TensorProto.FLOAT)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 2]),
         helper.make_tensor_value_info("i", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [])])
    guarded = aimsec_core.guard(session, sinks=[sink])
    x = np.zeros((4, 3, 2), dtype=np.float32)
    for i in (length - 1, -length):
        feed = {"x": x, "i": np.array(i)}
        np.testing.assert_array_equal(guarded.run(None, feed)[0], session.run(None, feed)[0])
    with pytest.raises(ValueRangeError, match=rf"\[-{length}, {length - 1}\]"):
        guarded.run(None, {"x": x, "i": np.array(length)})
    assert sink.outcomes == ["allowed", "allowed", "rejected"]


def _overridable_table() -> ort.InferenceSession:
    """ids (N, 5) -> Gather from ``table``, a graph input (R, 4) whose initializer is its
    default: a caller may feed another table."""
    table = np.arange(ROWS * 4, dtype=np.float32).reshape(ROWS, 4)
    return _model(
        [helper.make_node("Gather", ["table", "ids"], ["emb"]),
         helper.make_node("ReduceMean", ["emb"], ["out"], axes=[1], keepdims=0)],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 5]),
         helper.make_tensor_value_info("table", TensorProto.FLOAT, ["R", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(table, "table")])


def test_a_fed_table_of_the_default_length_runs_as_on_the_plain_session(sink):
    session = _overridable_table()
    guarded = aimsec_core.guard(session, sinks=[sink])
    ids = np.array([[0, 1, 2, 3, ROWS - 1]])
    other = np.ones((ROWS, 4), dtype=np.float32)
    for feed in ({"ids": ids}, {"ids": ids, "table": other}):
        np.testing.assert_array_equal(guarded.run(None, feed)[0], session.run(None, feed)[0])
    as_ort = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in (("ids", ids), ("table", other))}
    np.testing.assert_array_equal(guarded.run_with_ort_values(None, as_ort)[0].numpy(),
                                  session.run(None, {"ids": ids, "table": other})[0])
    with pytest.raises(ValueRangeError, match=f"table of {ROWS}"):  # the default's bound
        guarded.run(None, {"ids": np.array([[0, 0, 0, 0, ROWS]])})


@pytest.mark.parametrize("table, says", [
    (np.ones((ROWS + 10, 4), np.float32), f"table of {ROWS} along axis 0.*one of {ROWS + 10}"),
    (np.ones((3, 4), np.float32), f"table of {ROWS} along axis 0.*one of 3"),
    (np.ones((ROWS, 4), np.float64), "dtype float64; expected float32"),
    (np.ones(ROWS * 4, np.float32), r"shape \(40,\); the model declares \('R', 4\)"),
    (np.ones((ROWS, 4), np.float32).tolist(),
     "takes a numpy array or an .*OrtValue; received a list"),
], ids=["longer", "shorter", "dtype", "rank", "list"])
def test_a_fed_table_the_bound_would_not_hold_for_is_refused_typed(sink, table, says):
    """A longer table made the guard refuse ids the session takes; a shorter one let ids past
    its end reach the session (onnxruntime's INVALID_ARGUMENT; on CUDA, reads out of
    bounds); the rest failed inside onnxruntime."""
    guarded = aimsec_core.guard(_overridable_table(), sinks=[sink])
    with pytest.raises(aimsec_core.InputFormatError, match=f"'table'.*{says}"):
        guarded.run(None, {"ids": np.array([[0, 1, 2, 3, 5]]), "table": table})
    assert sink.outcomes == ["rejected"]


def test_a_fed_table_as_an_ortvalue_runs_through_run_as_on_the_plain_session(sink):
    """``run`` takes an ``OrtValue`` for an overridable initializer, as the plain session
    does (it was refused as 'takes a numpy array'); one of another length is still
    refused."""
    session = _overridable_table()
    guarded = aimsec_core.guard(session, sinks=[sink])
    ids = np.array([[0, 1, 2, 3, ROWS - 1]])
    other = np.ones((ROWS, 4), dtype=np.float32)
    feed = {"ids": ids, "table": ort.OrtValue.ortvalue_from_numpy(other)}
    np.testing.assert_array_equal(guarded.run(None, feed)[0], session.run(None, feed)[0])
    short = ort.OrtValue.ortvalue_from_numpy(np.ones((3, 4), np.float32))
    with pytest.raises(aimsec_core.InputFormatError, match="table of 10 along axis 0"):
        guarded.run(None, {"ids": ids, "table": short})
    assert sink.outcomes == ["allowed", "rejected"]


@pytest.mark.parametrize("ids_type, dtype", [(TensorProto.UINT8, "uint8"),
                                             (TensorProto.INT16, "int16"),
                                             (TensorProto.UINT64, "uint64")])
def test_ids_of_another_integer_type_cast_to_indices_are_checked_too(sink, ids_type, dtype):
    """An integer input of another type than int64/int32 reaches a ``Gather`` through a
    ``Cast``: an id past the table stopped the session with onnxruntime's INVALID_ARGUMENT
    error, unchecked."""
    session = _session(ids_type, via=("Cast",))
    guarded = aimsec_core.guard(session, sinks=[sink])
    ids = [[0, 1, 2, 3, ROWS - 1]]
    np.testing.assert_array_equal(
        _run(guarded, ids, dtype), session.run(None, {"ids": np.array(ids, dtype)})[0])
    with pytest.raises(ValueRangeError, match=f"table of {ROWS}"):
        _run(guarded, [[0, 0, 0, 0, 200]], dtype)
    assert sink.outcomes == ["allowed", "rejected"]


def test_ids_moved_by_a_transpose_are_checked_and_a_picked_column_leaves_the_rest(sink):
    """Every value of an input a ``Transpose`` moves reaches the ``Gather``; one column
    picked by a constant ``Gather`` (``x[:, 0]``) leaves the other columns, which may be no
    indices at all, unbounded."""
    table = numpy_helper.from_array(np.ones((ROWS, 4), np.float32), "table")
    zero = numpy_helper.from_array(np.array(0, dtype=np.int64), "zero")
    moved = _model(
        [helper.make_node("Transpose", ["ids"], ["t"], perm=[1, 0]),
         helper.make_node("Gather", ["table", "t"], ["out"])],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, "N", 4])], [table])
    with pytest.raises(ValueRangeError, match=f"table of {ROWS}"):
        aimsec_core.guard(moved, sinks=[sink]).run(None, {"ids": np.array([[0, ROWS]])})
    picked = _model(
        [helper.make_node("Gather", ["x", "zero"], ["first"], axis=1),
         helper.make_node("Gather", ["table", "first"], ["out"])],
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4])], [table, zero])
    guarded = aimsec_core.guard(picked, sinks=[sink])
    assert guarded.run(None, {"x": np.array([[ROWS - 1, 500]])})[0].shape == (1, 4)


@pytest.mark.parametrize("op, ids", [("Gather", "ids"), ("GatherND", "ids"),
                                     ("Gather", "picked")])
def test_ids_into_a_table_of_no_rows_are_refused_as_out_of_range(sink, op, ids):
    """No index is valid in a table of length 0: each call's ids are a range finding,
    not a configuration error about min_value exceeding max_value."""
    nodes = [helper.make_node("Gather", ["x", "one"], ["picked"], axis=1)]
    table = np.zeros((0, 3) if op == "Gather" else (3, 0), dtype=np.float32)
    session = _model(
        nodes + [helper.make_node(op, ["table", ids], ["out"])],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 2]),
         helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(table, "table"),
         numpy_helper.from_array(np.array([1], dtype=np.int64), "one")])
    guarded = aimsec_core.guard(session, sinks=[sink])
    feed = {"ids": np.zeros((2, 2), np.int64), "x": np.zeros((2, 2), np.int64)}
    with pytest.raises(Exception, match="INVALID_ARGUMENT|out of data bounds|out of bounds"):
        session.run(None, feed)
    with pytest.raises(ValueRangeError, match=r"input '(ids|x)': .*table of length 0"):
        guarded.run(None, feed)
    assert sink.outcomes == ["rejected"]
