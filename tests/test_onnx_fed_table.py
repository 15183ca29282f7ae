"""An ONNX model whose ``Gather`` (or ``GatherND``) table is a graph input fed with each
call, without a default: the ids are checked against the fed table's length along the
axis they index, read from the call, instead of reaching onnxruntime's own
INVALID_ARGUMENT error."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

import aimsec_core  # noqa: E402
from aimsec_core import ValueRangeError  # noqa: E402
from tests.test_onnx_gather import _model  # noqa: E402


def _fed(axis: int = 0, op: str = "Gather") -> ort.InferenceSession:
    """table (R, C) fed with the call; ids (N, 2) -> Gather along ``axis`` (or
    ``GatherND``: ids (N, 2) are (row, column) pairs)."""
    attributes = {"axis": axis} if op == "Gather" else {}
    return _model([helper.make_node(op, ["table", "ids"], ["out"], **attributes)],
                  [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 2]),
                   helper.make_tensor_value_info("table", TensorProto.FLOAT, ["R", "C"])],
                  [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])


def _table(rows: int, columns: int) -> np.ndarray:
    return np.arange(rows * columns, dtype=np.float32).reshape(rows, columns)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_ids_past_the_fed_table_are_refused_naming_it(sink, axis):
    session = _fed(axis)
    table = _table(3, 7) if axis == 0 else _table(7, 3)
    for bad in (3, -4):
        feed = {"ids": np.array([[0, bad]]), "table": table}
        with pytest.raises(Exception, match="INVALID_ARGUMENT"):
            session.run(None, feed)  # what the plain session does
        with pytest.raises(ValueRangeError, match=rf"\[-3, 2\].*positions along axis "
                           rf"{axis % 2} of input 'table' \(3 long in this call\)"):
            aimsec_core.guard(session, sinks=[sink]).run(None, feed)
    assert sink.outcomes == ["rejected", "rejected"]


def test_the_bound_follows_each_call_s_table(sink):
    """The same ids are refused against a short table and run against a long one, with
    the plain session's outputs; negative ids count from the fed table's end."""
    session = _fed()
    guarded = aimsec_core.guard(session, sinks=[sink])
    ids = np.array([[0, 5], [-6, -1]])
    with pytest.raises(ValueRangeError, match="input 'table' \\(3 long"):
        guarded.run(None, {"ids": ids, "table": _table(3, 4)})
    for rows in (6, 9):
        feed = {"ids": ids, "table": _table(rows, 4)}
        np.testing.assert_array_equal(guarded.run(None, feed)[0], session.run(None, feed)[0])
    as_ort = {"ids": ort.OrtValue.ortvalue_from_numpy(ids),
              "table": ort.OrtValue.ortvalue_from_numpy(_table(4, 4))}
    with pytest.raises(ValueRangeError, match="input 'table' \\(4 long"):
        guarded.run_with_ort_values(None, as_ort)
    assert sink.outcomes == ["rejected", "allowed", "allowed", "rejected"]


def test_a_fed_gather_nd_data_bounds_each_component_by_its_own_axis(sink):
    session = _fed(op="GatherND")
    guarded = aimsec_core.guard(session, sinks=[sink])
    feed = {"ids": np.array([[2, 6], [-3, -7]]), "table": _table(3, 7)}
    np.testing.assert_array_equal(guarded.run(None, feed)[0], session.run(None, feed)[0])
    bad = {"ids": np.array([[0, 7]]), "table": _table(3, 7)}
    with pytest.raises(Exception, match="INVALID_ARGUMENT"):
        session.run(None, bad)
    with pytest.raises(ValueRangeError, match=r"\[-7, 6\].*values at \[\.\.\., 1\] up as "
                       r"positions along axis 1 of input 'table' \(7 long"):
        guarded.run(None, bad)


def test_a_table_of_another_rank_is_refused_for_its_shape_first(sink):
    guarded = aimsec_core.guard(_fed(), sinks=[sink])
    with pytest.raises(aimsec_core.InputFormatError, match="'table'"):
        guarded.run(None, {"ids": np.array([[0, 1]]), "table": np.ones(4, np.float32)})
