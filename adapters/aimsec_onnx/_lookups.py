"""Where an ONNX graph looks a graph input's values up in a table (``Gather``,
``GatherND``): read from the ``onnx.GraphProto``, for the core's index checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aimsec_core.indices import IndexBound, Pick

#: Nodes whose output holds their first input's values (reshaped or cast).
VALUE_PRESERVING = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
                              "Cast"})
#: Nodes whose output holds every value of their first input, moved or repeated: an input
#: reaching a ``Gather``'s indices through them has each of its values read as an index.
VALUE_MOVING = VALUE_PRESERVING | {"Transpose", "Expand", "Tile"}
#: Nodes whose output holds their first input's values at the same positions: an input
#: reaching ``GatherND``'s indices through them keeps its last axis the index tuples.
SAME_PLACES = frozenset({"Identity", "Cast"})


@dataclass(frozen=True)
class Lookup:
    """Graph input ``ids`` (some of its values: ``picks``, as ``IndexBound.picks``)
    indexes axis ``axis`` of ``table``: an initializer, ``Constant`` node or ``Shape``
    output whose length along it is ``rows``, or a graph input without a default, fed
    with each call (``rows`` is then ``None``)."""

    ids: str
    table: str
    axis: int
    rows: int | None
    picks: tuple[Any, ...] = ()


class GraphFacts:
    """What the lookups are read from: each constant's shape (initializers, ``Constant``
    nodes, ``Shape`` outputs), each tensor's rank where known, each tensor's producer, and
    the graph inputs fed with each call (without a default)."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.shapes = {t.name: tuple(t.dims) for t in graph.initializer}
        self.ranks = {arg.name: len(arg.type.tensor_type.shape.dim) for arg in graph.input
                      if arg.type.HasField("tensor_type")
                      and arg.type.tensor_type.HasField("shape")}
        self.ranks.update((name, len(dims)) for name, dims in self.shapes.items())
        self.producers: dict[str, Any] = {}
        for node in graph.node:
            for name in node.output:
                self.producers[name] = node
            if node.op_type == "Constant":
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None and node.output:
                    self.shapes[node.output[0]] = tuple(value.dims)
            elif (node.op_type == "Shape" and node.input and node.output
                  and node.input[0] in self.ranks):
                bounds = {a.name: a.i for a in node.attribute if a.name in ("start", "end")}
                dims = range(self.ranks[node.input[0]])[bounds.get("start", 0):
                                                        bounds.get("end")]
                self.shapes[node.output[0]] = (len(dims),)
        self.initializers = {t.name: t for t in graph.initializer}
        self.inputs = {arg.name for arg in graph.input} - set(self.initializers)

    def trace(self, name: str, through: frozenset[str]) -> str:
        """The tensor ``name``'s values come from, up through nodes of ``through``."""
        for _ in range(len(self.graph.node)):
            source = self.producers.get(name)
            if source is None or source.op_type not in through or not source.input:
                break
            name = source.input[0]
        return name

    def ids(self, name: str, through: frozenset[str]) -> tuple[str, tuple[Pick, ...]] | None:
        """The graph input whose values the tensor ``name`` holds, up through nodes of
        ``through``, with the picks that select them where a constant ``Slice`` or
        ``Gather`` (:meth:`picks`) takes them from an input (up through
        :data:`SAME_PLACES` nodes, which keep its axes); ``None`` where they come from
        elsewhere."""
        name = self.trace(name, through)
        if name in self.inputs:
            return name, ()
        node = self.producers.get(name)
        picks = None if node is None else self.picks(node)
        if picks is None:
            return None
        name = self.trace(node.input[0], SAME_PLACES)
        return (name, picks) if name in self.inputs else None

    def picks(self, node: Any) -> tuple[Pick, ...] | None:
        """What a ``Gather`` by constant indices or a ``Slice`` by constant starts, ends,
        axes and steps (inputs from opset 10, attributes before) takes from its first
        input; ``None`` for another node, or one whose picks are not constants."""
        if node.op_type == "Gather" and len(node.input) >= 2:
            indices = self.constant(node.input[1])
            return None if indices is None else (
                Pick(_attribute(node, "axis", 0), tuple(indices)),)
        if node.op_type != "Slice" or not node.input:
            return None
        if len(node.input) == 1:  # opset 1: attributes
            given = {a.name: list(a.ints) for a in node.attribute}
            starts, ends, axes = (given.get(key) for key in ("starts", "ends", "axes"))
            steps = None
        else:
            starts, ends, axes, steps = (
                self.constant(node.input[i]) if i < len(node.input) and node.input[i]
                else None for i in range(1, 5))
            if any(value is None for value, i in ((axes, 3), (steps, 4))
                   if i < len(node.input) and node.input[i]):
                return None  # given, but not a constant
        if starts is None or ends is None or len(starts) != len(ends):
            return None
        axes = list(range(len(starts))) if axes is None else axes
        steps = [1] * len(starts) if steps is None else steps
        if not len(axes) == len(steps) == len(starts) or 0 in steps:
            return None
        return tuple(Pick(axis, start=start, stop=None if stop in _TO_THE_END else stop,
                          step=step)
                     for axis, start, stop, step in zip(axes, starts, ends, steps))

    def constant(self, name: str) -> list[int] | None:
        """The integers (flattened) of ``name`` where it is a small integer constant: an
        initializer or a ``Constant`` node's ``value``, ``value_int`` or
        ``value_ints``."""
        tensor = self.initializers.get(name)
        node = self.producers.get(name)
        if tensor is None and node is not None and node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value_int":
                    return [attribute.i]
                if attribute.name == "value_ints":
                    return list(attribute.ints)
                if attribute.name == "value":
                    tensor = attribute.t
        if tensor is None or _size(tensor.dims) > _MAX_PICKED:
            return None
        from onnx import numpy_helper

        values = numpy_helper.to_array(tensor)
        return ([int(v) for v in values.ravel()] if values.dtype.kind in "iu" else None)


#: Ends of a ``Slice`` that onnxruntime reads as "to the axis' end in the step's direction"
#: (numpy's ``None``): with a negative step too, where the clamp to the last position
#: would otherwise read nothing.
_TO_THE_END = frozenset({2**31 - 1, 2**63 - 1})
#: Constants larger than this are not read as picks (indices or slice bounds).
_MAX_PICKED = 4096


def _size(dims: Any) -> int:
    size = 1
    for dim in dims:
        size *= dim
    return size


def lookups(graph: Any) -> list[Lookup]:
    """Each place ``graph`` (an ``onnx.GraphProto``) looks a graph input's values up in a
    table of a known length, or in a graph input fed with the call:

    * ``Gather``: every value of an input reaching its indices through
      :data:`VALUE_MOVING` nodes indexes the table along the node's ``axis``; so do the
      values a constant ``Slice`` or ``Gather`` picks out of an input on the way (their
      positions then go with the lookup: the input's other values are left alone);
    * the table (``Gather``'s or ``GatherND``'s data) may be a graph input without a
      default, fed with each call: the lookup then says which of its axes the ids index,
      and the core reads its length from the call;
    * ``GatherND``: an input reaching its indices through :data:`SAME_PLACES` nodes holds
      index tuples along its last axis, whose ``j``-th component indexes the data's axis
      ``batch_dims + j``.
    """
    facts = GraphFacts(graph)
    found = []
    for node in graph.node:
        if node.op_type == "Gather" and len(node.input) >= 2:
            found += _gather(facts, node)
        elif node.op_type == "GatherND" and len(node.input) >= 2:
            found += _gather_nd(facts, node)
    return found


def _gather(facts: GraphFacts, node: Any) -> list[Lookup]:
    table, axis = node.input[0], _attribute(node, "axis", 0)
    source = facts.ids(node.input[1], VALUE_MOVING)
    if source is None:
        return []
    ids, picks = source
    if table in facts.inputs:  # fed with the call: its length is read then
        rank = facts.ranks.get(table)
        return [Lookup(ids, table, axis if rank is None else axis % max(rank, 1), None,
                       picks)]
    dims = facts.shapes.get(table)
    if dims is None or not -len(dims) <= axis < len(dims):
        return []
    return [Lookup(ids, table, axis % len(dims), dims[axis], picks)]


def _gather_nd(facts: GraphFacts, node: Any) -> list[Lookup]:
    table, batch = node.input[0], _attribute(node, "batch_dims", 0)
    ids = facts.trace(node.input[1], SAME_PLACES)
    fed = table in facts.inputs
    rank = facts.ranks.get(table) if fed else len(facts.shapes.get(table, ()))
    if ids not in facts.inputs or not rank:
        return []
    return [Lookup(ids, table, batch + j, None if fed else facts.shapes[table][batch + j],
                   (Pick(-1, (j,), optional=True),))
            for j in range(rank - batch)]


def index_bounds(found: list[Lookup]) -> dict[str, tuple[IndexBound, ...]]:
    """Graph input name -> the bounds the core checks at each call for the lookups of
    ``found`` that a table's fixed length cannot bound every value of (see
    :func:`gathered_tables` for those): some values only, or a table fed with the call.
    ONNX counts a negative index from the table's end."""
    bounds: dict[str, tuple[IndexBound, ...]] = {}
    for lookup in found:
        if lookup.rows is not None and not lookup.picks:
            continue
        bound = (IndexBound(rows=lookup.rows, picks=lookup.picks, negative=True)
                 if lookup.rows is not None else
                 IndexBound(table=lookup.table, table_axis=lookup.axis, picks=lookup.picks,
                            negative=True))
        if bound not in bounds.get(lookup.ids, ()):
            bounds[lookup.ids] = bounds.get(lookup.ids, ()) + (bound,)
    return bounds


def gathered_tables(found: list[Lookup]) -> dict[str, int]:
    """Graph input name -> rows of the smallest table a lookup of ``found`` reads every
    value of it in (along its ``axis``), where that table's length is fixed."""
    tables: dict[str, int] = {}
    for lookup in found:
        if lookup.rows is not None and not lookup.picks:
            tables[lookup.ids] = min(tables.get(lookup.ids, lookup.rows), lookup.rows)
    return tables


def _attribute(node: Any, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)
