"""An ONNX model that looks index tuples up in a constant tensor (``GatherND``) has each
tuple's components checked against the data's dimensions they index (from
``batch_dims``), negative ones counting from the end, instead of onnxruntime's own
INVALID_ARGUMENT error from inside the session."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import aimsec_core  # noqa: E402
from aimsec_core import ValueRangeError  # noqa: E402
from tests.test_onnx_gather import _model  # noqa: E402

DATA = np.arange(24, dtype=np.float32).reshape(3, 4, 2)


def _gather_nd(batch_dims: int = 0, via: tuple[str, ...] = (), ids_shape: list = ("N", 2),
               overridable: bool = False) -> ort.InferenceSession:
    """ids -> GatherND from the constant (3, 4, 2) ``data``; ``via``: nodes between."""
    nodes, name = [], "ids"
    for i, op in enumerate(via):
        attributes = {"to": TensorProto.INT64} if op == "Cast" else {}
        nodes.append(helper.make_node(op, [name], [f"moved{i}"], **attributes))
        name = f"moved{i}"
    nodes.append(helper.make_node("GatherND", ["data", name], ["out"], batch_dims=batch_dims))
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, list(ids_shape))]
    if overridable:
        inputs.append(helper.make_tensor_value_info("data", TensorProto.FLOAT, ["A", "B", 2]))
    return _model(nodes, inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                  [numpy_helper.from_array(DATA, "data")])


@pytest.mark.parametrize("bad, column, rows", [
    ([[0, 4]], 1, 4), ([[3, 0]], 0, 3), ([[-4, 0]], 0, 3), ([[2, -5]], 1, 4)])
@pytest.mark.parametrize("via", [(), ("Identity",), ("Cast",)],
                         ids=["direct", "identity", "cast"])
def test_a_component_past_its_dimension_is_refused_naming_it(sink, bad, column, rows, via):
    session = _gather_nd(via=via)
    with pytest.raises(Exception, match="INVALID_ARGUMENT.*invalid index"):
        session.run(None, {"ids": np.array(bad)})  # what the plain session does
    guarded = aimsec_core.guard(session, sinks=[sink])
    with pytest.raises(ValueRangeError, match=rf"\[-{rows}, {rows - 1}\].*values at "
                       rf"\[\.\.\., {column}\] up as rows of a table of {rows}"):
        guarded.run(None, {"ids": np.array(bad)})
    assert sink.outcomes == ["rejected"]


def test_tuples_within_the_data_run_as_on_the_plain_session(sink):
    """A 3 in the second column (4 long) is valid though the first (3 long) refuses it;
    a single component picks whole (4, 2) slices."""
    session = _gather_nd()
    guarded = aimsec_core.guard(session, sinks=[sink])
    for ids in ([[2, 3], [-3, -4], [0, 0]], [[1, 3]]):
        feed = {"ids": np.array(ids)}
        np.testing.assert_array_equal(guarded.run(None, feed)[0], session.run(None, feed)[0])
    one = _gather_nd(ids_shape=["N", 1])
    feed = {"ids": np.array([[2], [-3]])}
    np.testing.assert_array_equal(aimsec_core.guard(one, sinks=[sink]).run(None, feed)[0],
                                  one.run(None, feed)[0])
    with pytest.raises(ValueRangeError, match="table of 3"):
        aimsec_core.guard(one, sinks=[sink]).run(None, {"ids": np.array([[3]])})


def test_batch_dims_shift_the_dimensions_the_components_index(sink):
    """With ``batch_dims=1`` the data's first axis pairs with the ids' first, and the one
    component indexes the data's second axis (4 long), not its first (3 long)."""
    session = _gather_nd(batch_dims=1, ids_shape=[3, 1])
    guarded = aimsec_core.guard(session, sinks=[sink])
    feed = {"ids": np.array([[3], [-4], [0]])}
    np.testing.assert_array_equal(guarded.run(None, feed)[0], session.run(None, feed)[0])
    with pytest.raises(Exception, match="INVALID_ARGUMENT"):
        session.run(None, {"ids": np.array([[4], [0], [0]])})
    with pytest.raises(ValueRangeError, match=r"\[-4, 3\].*table of 4"):
        guarded.run(None, {"ids": np.array([[4], [0], [0]])})


def test_none_lifts_the_bound_and_per_sample_refusal_names_the_sample(sink):
    lifted = aimsec_core.guard(_gather_nd(), sinks=[sink],
                               constraints={"inputs": {"ids": {"max_value": None}}})
    with pytest.raises(Exception) as raised:  # onnxruntime's own error, as asked
        lifted.run(None, {"ids": np.array([[0, 4]])})
    assert not isinstance(raised.value, ValueRangeError)
    guarded = aimsec_core.guard(_gather_nd(), sinks=[sink])
    with pytest.raises(ValueRangeError, match="sample 1"):
        guarded.run(None, {"ids": np.array([[0, 0], [0, 9], [1, 1]])})


def test_an_overridable_data_tensor_must_keep_every_indexed_length(sink):
    session = _gather_nd(overridable=True)
    guarded = aimsec_core.guard(session, sinks=[sink])
    ids = np.array([[2, 3]])
    same = {"ids": ids, "data": np.ones((3, 4, 2), np.float32)}
    np.testing.assert_array_equal(guarded.run(None, same)[0], session.run(None, same)[0])
    with pytest.raises(aimsec_core.InputFormatError, match="table of 4 along axis 1"):
        guarded.run(None, {"ids": ids, "data": np.ones((3, 5, 2), np.float32)})


def test_an_overridable_table_declared_without_a_shape_fed_with_fewer_axes_is_refused(sink):
    # the length check read shape[axis] of the fed array: an IndexError for a 1-D feed
    nodes = [helper.make_node("GatherND", ["data", "ids"], ["out"])]
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 2]),
              helper.make_tensor_value_info("data", TensorProto.FLOAT, None)]
    session = _model(nodes, inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT,
                                                                   None)],
                     [numpy_helper.from_array(DATA, "data")])
    guarded = aimsec_core.guard(session, sinks=[sink])
    ids = np.array([[2, 3]])
    np.testing.assert_array_equal(guarded.run(None, {"ids": ids})[0],
                                  session.run(None, {"ids": ids})[0])
    with pytest.raises(aimsec_core.InputFormatError, match="has no axis 1"):
        guarded.run(None, {"ids": ids, "data": np.ones(3, np.float32)})
