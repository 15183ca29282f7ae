"""Ids picked out of a wider integer input (``x[:, 0]`` by a constant ``Gather``,
``x[:, :2]`` by a constant ``Slice``) and looked up in a table: only the picked positions
are checked against it (the input's other values may legitimately be anything), instead
of reaching onnxruntime's own INVALID_ARGUMENT error unchecked."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import aimsec_core  # noqa: E402
from aimsec_core import ValueRangeError  # noqa: E402
from tests.test_onnx_gather import _model  # noqa: E402

ROWS = 10
WIDTH = 5
BIG = 2**63 - 1


def _table() -> Any:
    return numpy_helper.from_array(np.arange(ROWS * 3, dtype=np.float32).reshape(ROWS, 3),
                                   "table")


def _picked(nodes: list, constants: list = (), opset: int = 17) -> ort.InferenceSession:
    """x (N, 5) int64 -> ``nodes`` make ``picked`` -> Gather from the (10, 3) table."""
    graph = helper.make_graph(
        list(nodes) + [helper.make_node("Gather", ["table", "picked"], ["out"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["N", WIDTH])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [_table(), *constants])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset > 9 else 4
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _ints(name: str, values: list[int]) -> Any:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def _slice(starts: list[int], ends: list[int], steps: list[int] | None,
           as_nodes: bool) -> ort.InferenceSession:
    """x[:, starts:ends:steps] by a Slice whose arguments are initializers or, with
    ``as_nodes``, Constant nodes."""
    given = {"starts": starts, "ends": ends, "axes": [1]} | (
        {"steps": steps} if steps is not None else {})
    if as_nodes:
        nodes = [helper.make_node("Constant", [], [k], value=_ints(k, v))
                 for k, v in given.items()]
        constants = []
    else:
        nodes, constants = [], [_ints(k, v) for k, v in given.items()]
    return _picked(nodes + [helper.make_node("Slice", ["x", *given], ["picked"])], constants)


SLICES = [([0], [2], None), ([1], [BIG], None), ([-2], [-1], None), ([-1], [-BIG], [-1]),
          ([4], [0], [-2]), ([0], [WIDTH], [2])]


@pytest.mark.parametrize("as_nodes", [False, True], ids=["initializers", "constant-nodes"])
@pytest.mark.parametrize("starts, ends, steps", SLICES)
def test_only_the_sliced_positions_are_checked(sink, starts, ends, steps, as_nodes):
    session = _slice(starts, ends, steps, as_nodes)
    guarded = aimsec_core.guard(session, sinks=[sink])
    picked = list(range(WIDTH))[slice(starts[0], ends[0], (steps or [1])[0])]
    x = np.full((2, WIDTH), 10**6, dtype=np.int64)  # far past the table: never looked up
    x[:, picked] = [[ROWS - 1], [-ROWS]]
    np.testing.assert_array_equal(guarded.run(None, {"x": x})[0],
                                  session.run(None, {"x": x})[0])
    bad = x.copy()
    bad[1, picked[-1]] = ROWS
    with pytest.raises(Exception, match="INVALID_ARGUMENT"):
        session.run(None, {"x": bad})  # what the plain session does
    with pytest.raises(ValueRangeError, match=rf"sample 1: .*\[-{ROWS}, {ROWS - 1}\].*values "
                       rf"at \[:, .*\] up as rows of a table of {ROWS}"):
        guarded.run(None, {"x": bad})
    assert sink.outcomes == ["allowed", "rejected"]


# (starts, ends, steps, the positions onnxruntime's Slice reads): where a negative step
# makes ONNX's clamping differ from a Python slice's (a start before the axis is clamped
# to position 0; an end of INT32_MAX or INT64_MAX reads to the axis' beginning).
ONNX_ONLY_SLICES = [([-7], [-7], [-2], [0]), ([-(2**63)], [-(2**63)], [-1], [0]),
                    ([-1], [BIG], [-1], [4, 3, 2, 1, 0]), ([3], [2**31 - 1], [-2], [3, 1])]


@pytest.mark.parametrize("starts, ends, steps, picked", ONNX_ONLY_SLICES)
def test_a_negative_step_slice_is_read_with_onnx_clamping(sink, starts, ends, steps, picked):
    session = _slice(starts, ends, steps, as_nodes=False)
    guarded = aimsec_core.guard(session, sinks=[sink])
    x = np.full((2, WIDTH), 10**6, dtype=np.int64)
    x[:, picked] = ROWS - 1
    np.testing.assert_array_equal(guarded.run(None, {"x": x})[0],
                                  session.run(None, {"x": x})[0])
    for position in picked:
        bad = x.copy()
        bad[1, position] = ROWS
        with pytest.raises(Exception, match="INVALID_ARGUMENT"):
            session.run(None, {"x": bad})
        with pytest.raises(ValueRangeError, match=r"sample 1: .*table of"):
            guarded.run(None, {"x": bad})


def test_a_column_picked_by_a_constant_gather_is_checked_alone(sink):
    for index in (np.array(0), np.array([0]), np.array(-WIDTH)):
        session = _picked([helper.make_node("Gather", ["x", "i"], ["picked"], axis=1)],
                          [numpy_helper.from_array(index.astype(np.int64), "i")])
        guarded = aimsec_core.guard(session, sinks=[sink])
        x = np.array([[ROWS - 1, 500, -500, 7, 10**9]])
        np.testing.assert_array_equal(guarded.run(None, {"x": x})[0],
                                      session.run(None, {"x": x})[0])
        with pytest.raises(ValueRangeError, match=r"values at \[:, (0|\[0\]|-5)\] up as rows"):
            guarded.run(None, {"x": np.array([[ROWS, 0, 0, 0, 0]])})


def test_an_opset_9_slice_by_attributes_is_followed(sink):
    session = _picked([helper.make_node("Slice", ["x"], ["picked"], starts=[3], ends=[5],
                                        axes=[1])], opset=9)
    guarded = aimsec_core.guard(session, sinks=[sink])
    x = np.array([[500, 500, 500, 0, ROWS - 1]])
    np.testing.assert_array_equal(guarded.run(None, {"x": x})[0],
                                  session.run(None, {"x": x})[0])
    with pytest.raises(ValueRangeError, match=r"values at \[:, 3:5\]"):
        guarded.run(None, {"x": np.array([[0, 0, 0, 0, ROWS]])})


def test_a_slice_by_run_time_bounds_is_left_to_onnxruntime(sink):
    """Positions that depend on another input cannot be read from the graph: the ids
    stay unchecked, as documented, and onnxruntime's own check stops a bad one."""
    graph = helper.make_graph(
        [helper.make_node("Slice", ["x", "start", "end", "axes"], ["picked"]),
         helper.make_node("Gather", ["table", "picked"], ["out"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["N", WIDTH]),
         helper.make_tensor_value_info("start", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [_table(), _ints("end", [1]), _ints("axes", [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    guarded = aimsec_core.guard(
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]),
        sinks=[sink])
    with pytest.raises(Exception, match="INVALID_ARGUMENT") as raised:
        guarded.run(None, {"x": np.array([[ROWS, 0, 0, 0, 0]]), "start": np.array([0])})
    assert not isinstance(raised.value, ValueRangeError)


def test_picked_ids_into_a_fed_table_follow_its_length(sink):
    session = _model(
        [helper.make_node("Gather", ["x", "i"], ["picked"], axis=1),
         helper.make_node("Gather", ["table", "picked"], ["out"])],
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 2]),
         helper.make_tensor_value_info("table", TensorProto.FLOAT, ["R", 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(1, dtype=np.int64), "i")])
    guarded = aimsec_core.guard(session, sinks=[sink])
    feed = {"x": np.array([[999, 3]]), "table": np.ones((4, 3), np.float32)}
    np.testing.assert_array_equal(guarded.run(None, feed)[0], session.run(None, feed)[0])
    with pytest.raises(ValueRangeError, match=r"values at \[:, 1\] up as positions along "
                       r"axis 0 of input 'table' \(2 long"):
        guarded.run(None, {"x": np.array([[0, 3]]), "table": np.ones((2, 3), np.float32)})


def test_a_column_picked_from_the_batch_axis_refuses_the_whole_call(sink):
    """``x[0]`` (a constant Gather on axis 0) mixes the samples: a bad id there is a
    finding about the call, not one sample."""
    session = _picked([helper.make_node("Gather", ["x", "i"], ["picked"], axis=0)],
                      [numpy_helper.from_array(np.array(0, dtype=np.int64), "i")])
    guarded = aimsec_core.guard(session, sinks=[sink])
    x = np.array([[0, 1, 2, 3, 4], [999, 999, 999, 999, 999]])
    np.testing.assert_array_equal(guarded.run(None, {"x": x})[0],
                                  session.run(None, {"x": x})[0])
    with pytest.raises(ValueRangeError, match=r"values at \[0\]"):
        guarded.run(None, {"x": x[::-1].copy()})


@pytest.mark.xfail(strict=True, reason="lookups inside If/Loop subgraphs are not read: ids "
                   "they capture from the outer graph meet onnxruntime's own check")
def test_ids_looked_up_inside_an_if_branch_are_checked(sink):
    def branch(name: str) -> Any:
        return helper.make_graph(
            [helper.make_node("Gather", ["table", "x"], [f"{name}_out"])], name, [],
            [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)])

    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["out"], then_branch=branch("then"),
                          else_branch=branch("else"))], "g",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 2]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], [_table()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    guarded = aimsec_core.guard(
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]),
        sinks=[sink])
    with pytest.raises(ValueRangeError):
        guarded.run(None, {"x": np.array([[0, ROWS]]), "cond": np.array(True)})


def test_a_pick_past_the_inputs_width_is_a_typed_refusal(sink):
    # x's width is symbolic: x[:, 3] of a two-column x reached onnxruntime's own error
    session = _model(
        [helper.make_node("Gather", ["x", "i"], ["picked"], axis=1),
         helper.make_node("Gather", ["table", "picked"], ["out"])],
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["N", "W"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [_table(), numpy_helper.from_array(np.array(3, dtype=np.int64), "i")])
    guarded = aimsec_core.guard(session, sinks=[sink])
    x = np.array([[500, 500, 500, ROWS - 1]])
    np.testing.assert_array_equal(guarded.run(None, {"x": x})[0],
                                  session.run(None, {"x": x})[0])
    narrow = np.array([[0, 0]])
    with pytest.raises(Exception) as raised:
        session.run(None, {"x": narrow})
    assert not isinstance(raised.value, aimsec_core.AimsecError)
    with pytest.raises(aimsec_core.InputFormatError, match=r"picks \[:, 3\] of it, past "
                       r"its length 2 along axis 1"):
        guarded.run(None, {"x": narrow})


def test_a_fed_table_without_the_indexed_axis_is_a_typed_refusal(sink):
    # a table declared without a shape, fed with one axis where ids index its second
    session = _model(
        [helper.make_node("Gather", ["table", "x"], ["out"], axis=1)],
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("table", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    guarded = aimsec_core.guard(session, sinks=[sink])
    feed = {"x": np.array([0, 2]), "table": np.ones((4, 3), np.float32)}
    np.testing.assert_array_equal(guarded.run(None, feed)[0], session.run(None, feed)[0])
    flat = {"x": np.array([0]), "table": np.ones(4, np.float32)}
    with pytest.raises(Exception) as raised:
        session.run(None, flat)
    assert not isinstance(raised.value, aimsec_core.AimsecError)
    with pytest.raises(aimsec_core.InputFormatError, match="'table', the table they index "
                       "along axis 1, has no such axis"):
        guarded.run(None, flat)
