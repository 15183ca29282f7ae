"""Indices into a table that bound only some of an input's values, or whose table is fed
with the call: what a model reads, declared (:class:`IndexBound`), and the values and
table length it names in one call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Pick:
    """Positions along one axis of an input (``axis``; a negative one counts from the
    last): ``indices`` (each may count from the axis' end, as numpy's), or, where
    ``indices`` is ``None``, those ONNX's ``Slice`` reads from ``start`` to ``stop`` by
    ``step``: a Python slice's, out-of-range bounds clamped alike, except that a ``start``
    before the axis' beginning with a negative ``step`` is clamped to position 0 (where
    Python's slice reads nothing). ``optional``: the model reads the ``indices`` only
    where the axis has them (a ``GatherND`` index tuple's later components, absent from a
    shorter tuple); otherwise a position the input lacks makes the model's pick fail."""

    axis: int
    indices: tuple[int, ...] | None = None
    start: int | None = None
    stop: int | None = None
    step: int = 1
    optional: bool = False

    def positions(self, length: int) -> list[int]:
        """The positions picked along an axis of ``length``, each from 0; an index past
        it is left out (the model's own pick fails on it first)."""
        if self.indices is None:
            start = self.start
            if self.step < 0 and start is not None and start < -length:
                start = 0  # ONNX clamps it into the axis; Python's slice reads nothing
            return list(range(length)[slice(start, self.stop, self.step)])
        return [i % length for i in self.indices if -length <= i < length]

    def describe(self) -> str:
        """The pick as numpy indexing would read it (``'0'``, ``'1:3'``, ``'::2'``)."""
        if self.indices is not None:
            return (str(self.indices[0]) if len(self.indices) == 1
                    else str(list(self.indices)))
        start, stop = ("" if end is None else end for end in (self.start, self.stop))
        return f"{start}:{stop}" + (f":{self.step}" if self.step != 1 else "")


@dataclass(frozen=True)
class IndexBound:
    """Values of an input that the model reads as indices into a table (``Gather`` and
    ``GatherND``), where the input's ``index_rows`` cannot say it: only some of its values
    are indices (``picks``, applied one after the other to the input: the other values
    may legitimately hold anything), or the table's length is known only from the call
    (``table``: the input holding the table; its length along ``table_axis`` bounds the
    indices). ``rows``: the table's length where it is fixed. ``negative``: ``-rows`` to
    ``-1`` count from the table's end (ONNX), so they pass too.

    Each picked value must be in ``[0, rows - 1]`` (from ``-rows`` with ``negative``);
    a ``min_value``/``max_value`` of the input's own set to ``None`` lifts that bound.
    """

    rows: int | None = None
    table: str | None = None
    table_axis: int = 0
    picks: tuple[Pick, ...] = ()
    negative: bool = False

    def describe(self) -> str:
        """Which values of the input the bound reads: ``'the values'``, or those at
        ``[:, 0]`` (``[..., 1]`` for a pick on the last axis)."""
        if not self.picks:
            return "the values"
        return "the values at " + " then ".join(_indexing(p) for p in self.picks)

    def length(self, arrays: Mapping[str, Any]) -> int | None:
        """The table's length in this call (``arrays``: the call's inputs by name);
        ``None`` where the table input is absent (an optional one left out) or has not
        the axis (its own shape check refuses it)."""
        if self.table is None:
            return self.rows
        shape = getattr(arrays.get(self.table), "shape", None)
        if shape is None or not -len(shape) <= self.table_axis < len(shape):
            return None
        return int(shape[self.table_axis])

    def missing(self, shape: tuple[int, ...], arrays: Mapping[str, Any]
                ) -> tuple[str, str, str] | None:
        """What this call lacks that the model reads: the axis of the table input the
        indices run along, or a position a pick names (``shape``: the indices' input's;
        ``arrays``: the call's inputs by name), as ``(what, expected, received)``;
        ``None`` where nothing is missing. The model's own lookup or pick fails on such
        a call. Read from shapes alone: no values are copied."""
        table = getattr(arrays.get(self.table), "shape", None) if self.table else None
        if table is not None and not -len(table) <= self.table_axis < len(table):
            return (f"input {self.table!r}, the table they index along axis "
                    f"{self.table_axis}, has no such axis",
                    f"an array with axis {self.table_axis}", f"shape {tuple(table)}")
        shape = tuple(shape)
        for pick in self.picks:
            if not -len(shape) <= pick.axis < len(shape):
                return (f"the model picks {_indexing(pick)} of it, an axis it lacks",
                        f"an array with axis {pick.axis}", f"shape {shape}")
            length = shape[pick.axis]
            absent = [] if pick.optional else [
                i for i in pick.indices or () if not -length <= i < length]
            if absent:
                return (f"the model picks {_indexing(pick)} of it, past its length "
                        f"{length} along axis {pick.axis}",
                        f"more than {max(i if i >= 0 else -i - 1 for i in absent)} along "
                        f"axis {pick.axis}", f"shape {shape}")
            axis = pick.axis % len(shape)
            shape = shape[:axis] + (len(pick.positions(length)),) + shape[axis + 1:]
        return None

    def values(self, array: Any) -> tuple[Any, bool] | None:
        """The picked values of ``array`` (a numpy array), axes kept, and whether axis 0
        (the batch) was picked from (they are then no longer one row per sample);
        ``None`` where a pick's axis is past the array's rank or nothing is picked."""
        batch_picked = False
        for pick in self.picks:
            if not -array.ndim <= pick.axis < array.ndim:
                return None
            axis = pick.axis % array.ndim
            batch_picked |= axis == 0
            array = np.take(array, pick.positions(array.shape[axis]), axis=axis)
        return (array, batch_picked) if array.size else None


def _indexing(pick: Pick) -> str:
    """``[:, 0]`` for a pick of 0 on axis 1; ``[..., 0, :]`` for one on axis -2."""
    if pick.axis >= 0:
        return "[" + ":, " * pick.axis + pick.describe() + "]"
    return "[..., " + ", ".join([pick.describe()] + [":"] * (-pick.axis - 1)) + "]"
