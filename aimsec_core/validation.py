"""Input validation: turn one call's raw inputs into arrays and findings.

Cheap checks run first and a check that makes the input unusable stops the rest. The
content checks read each sample once for its minimum and maximum, which decide finiteness
and range together; the structural checks run only when configured.

What is checked is what the model reads. An array the caller could still write to (from
another thread, while the call runs) is copied once its size is known to be within
``max_size``, by the adapter that hands the model the copy (``Adapter.snapshot``); the
checks read the copy. A numpy array whose memory is not its values in native order
(big-endian data from a ``.npy`` file, say) is checked, hashed and handed on as a
native-order copy (``Validated.arrays``); a framework that casts inputs to its
declared dtype (a non-strict :class:`InputSpec`, or a nested list under a strict one) has
the values checked as that cast leaves them, so ``1e39`` on its way to ``float32`` is an
infinite value, and ``300`` on its way to ``int8`` a value out of range.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from .adapter import Adapter
from .arrays import (MAX_NESTING, STRUCTURED, ColumnBlocks, SparseValues, astype, declared_size,
                     dtype_kind, dtype_name, element_count, host_view, largest_jump, namespace,
                     to_host)
from .batches import fixed_batch
from .errors import exception_text
from .indices import IndexBound
from .signature import Constraints, InputSpec
from .verdict import Finding

_NUMERIC_KINDS = frozenset("fiu")
_TEXT_KINDS = frozenset("OUS")  # Python objects, str, bytes: taken by models that take strings
_KIND_NAMES = {"b": "bool", "c": "complex", "O": "object", "U": "str", "S": "bytes",
               "V": "void", "M": "datetime", "m": "timedelta"}


_NO_FLAGS = np.zeros(0, dtype=bool)
_NO_FLAGS.flags.writeable = False  # shared default: never written to


@dataclass(frozen=True)
class Refused:
    """Put in place of an input an adapter cannot hand to the model (a name missing from
    the call, a name the model does not know): validation records ``reason`` as a
    blocking finding of ``check`` for that input."""

    reason: str
    check: str = "format"
    received: Any = None


def shown_name(name: Any) -> Any:
    """A name as a message shows it, bounded: names a call was given (a feed's keys, a
    dict's, ``output_names``) come from clients and may be megabytes long."""
    if isinstance(name, str):
        return name[:40] + "..." if len(name) > 40 else name
    return name if isinstance(name, (int, float, type(None))) else f"<{type(name).__name__}>"


@dataclass
class Validated:
    """Arrays ready for detectors and the findings validation raised on the way."""

    arrays: dict[str, Any] = field(default_factory=dict)
    #: the same arrays as zero-copy numpy views where they live on the host
    views: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    batch_size: int = 0
    flags: np.ndarray = field(default_factory=lambda: _NO_FLAGS)
    #: every input that became an array, in order, including one refused for its format
    #: (so a refused call's line still says what it received)
    seen: dict[str, Any] = field(default_factory=dict)
    #: more elements than ``max_size``: decided from the shapes, the content was not read
    oversized: bool = False
    #: inputs whose array the core built for the model to read, in place of the caller's
    #: object: the adapter's snapshot of an array the caller could still write to, a
    #: native-order copy, or the array a nested list becomes (see Guard.call)
    replaced: set[str] = field(default_factory=set)

    @property
    def blocked(self) -> bool:
        return any(f.blocking for f in self.findings)


def validate(raw: Mapping[str, Any], adapter: Adapter, specs: Mapping[str, InputSpec | None],
             constraints: Constraints) -> Validated:
    out = Validated()
    reads_as: dict[str, np.dtype] = {}  # inputs the framework casts before the model reads
    listed: set[str] = set()  # nested lists, which the framework casts to the declared dtype
    checked: dict[str, tuple[Any, Any]] = {}  # each input's shape and dtype, as checked
    for name, value in raw.items():
        spec = specs.get(name)
        array = _coerce(name, value, adapter, spec, constraints, out, listed)
        if array is None:
            return out
        out.seen[name] = array
        try:
            if not _check_format(name, array, spec, out, cast=name in listed):
                return out
        except Exception as exc:  # an element's own methods raised (see _unreadable)
            _unreadable(out, name, exc)
            return out
        target = None if isinstance(array, STRUCTURED) else _cast_target(array, spec)
        if target is not None:
            reads_as[name] = target
        out.arrays[name] = array
        checked[name] = (array.shape, array.dtype)
    out.replaced |= listed
    batched = _batched_inputs(out.arrays, specs, out)
    if batched is None:
        return out
    total = sum(math.prod(a.shape) if isinstance(a, np.ndarray) else element_count(a)
                for a in out.arrays.values())
    if constraints.max_size is not None and total > constraints.max_size:
        # Decided from the shapes alone, before anything reads, copies or allocates per
        # sample: refusing a huge input (or a broadcast view) costs the same as a small one.
        out.oversized = True
        _add(out, Finding("size", f"input has {total} elements; expected at most "
                          f"{constraints.max_size} (max_size); its content was not read",
                          expected=constraints.max_size, received=total))
        return out
    if not _snapshot(raw, adapter, out, checked):
        return out
    out.flags = np.zeros(out.batch_size, dtype=bool)
    for name, array in out.arrays.items():
        view = array if isinstance(array, STRUCTURED) else host_view(array)
        out.views[name] = array = array if view is None else view
        target = reads_as.get(name)
        own = constraints.for_input(name)  # the call's constraints with this input's own
        spec = specs.get(name)
        indexed = _reads_indices(array, spec)
        if indexed:
            assert spec is not None and spec.index_rows is not None  # _reads_indices says so
            if not spec.index_rows:  # no index is valid: _index_range's range is empty
                _no_rows(name, "the values", out)
                indexed = False
            else:
                own, table = _index_range(constraints, name, spec.index_rows,
                                          spec.negative_indices)
                before = len(out.findings)
        try:
            if name in batched:
                _check_values(name, array, out.batch_size, own, specs.get(name), out, target)
            else:  # a call-level input (no batch axis): its findings concern the whole call
                whole = Validated(flags=np.zeros(1, dtype=bool))
                _check_values(name, array, 1, own, specs.get(name), whole, target)
                for finding in whole.findings:
                    _add(out, dataclasses.replace(finding, samples=()))
        except Exception as exc:  # an element's own methods raised (see _unreadable)
            _unreadable(out, name, exc)
            return out
        if indexed and table:
            _name_the_table(out, before, name, spec.index_rows)  # type: ignore[union-attr]
        if spec is not None and spec.index_bounds and not (
                spec.dtype is None and dtype_kind(array) in "fc"):
            try:
                for bound in spec.index_bounds:
                    _check_bound(name, array, bound, constraints, out, name in batched)
            except Exception as exc:  # an element's own methods raised (see _unreadable)
                _unreadable(out, name, exc)
                return out
    for name in listed:  # a nested list: the array the framework builds from it
        spec = specs.get(name)
        if spec is not None and _numeric(spec.dtype) and dtype_name(out.arrays[name]) != spec.dtype:
            out.arrays[name] = out.views[name] = out.seen[name] = _cast(
                out.arrays[name], np.dtype(spec.dtype))
    return out


def _snapshot(raw: Mapping[str, Any], adapter: Adapter, out: Validated,
              checked: Mapping[str, tuple[Any, Any]]) -> bool:
    """Replace each input the caller could still write to (an array handed over as it
    is) with the adapter's copy of it, named in ``out.replaced``: the content checks read
    the copy and the model is handed it, so values another thread writes into the
    caller's array after this point never reach the model unchecked. Run once the sizes
    passed ``max_size`` (copying reads every value). Returns ``False`` after refusing an
    input whose shape or dtype (``checked``: as its format was checked) changed since
    (a numpy array's are settable in place), or one the process has not the memory to
    copy (a ``size`` finding, not numpy's ``MemoryError``)."""
    for name, array in out.arrays.items():
        if name in out.replaced or isinstance(array, STRUCTURED):
            continue  # already the core's own array, or read through its own structure
        try:
            copy = adapter.snapshot(raw[name], array)
        except MemoryError:  # a memmap larger than memory, with max_size raised or off
            nbytes = getattr(array, "nbytes", None)
            out.oversized = True
            _block(out, "size", f"input {shown_name(name)!r} ({nbytes} bytes) could not be "
                   "copied for checking: this process has not the memory for it; expected "
                   "an input the guard can copy (max_size bounds it)",
                   expected="an input that fits in memory", received=f"{nbytes} bytes")
            return False
        if copy is None:
            continue
        shape, dtype = checked[name]
        if copy.shape != shape or copy.dtype != dtype:
            _block(out, "format", f"input {shown_name(name)!r} changed shape or dtype while "
                   f"it was being read (checked as {tuple(shape)} {dtype}, copied as "
                   f"{tuple(copy.shape)} {copy.dtype}); expected an input no other thread "
                   "changes during the call", expected=tuple(shape),
                   received=tuple(copy.shape))
            return False
        out.arrays[name] = out.seen[name] = copy
        out.replaced.add(name)
    return True


def _coerce(name: str, value: Any, adapter: Adapter, spec: InputSpec | None,
            constraints: Constraints, out: Validated, listed: set[str]) -> Any | None:
    """``value`` as an array, or ``None`` after recording why it cannot be one. Adds
    ``name`` to ``listed`` when the array was built from Python numbers."""
    if isinstance(value, Refused):  # its name may be one the client made up: bounded
        _block(out, value.check, f"input {shown_name(name)!r}: {value.reason}",
               expected=spec.describe() if spec else adapter.input_types,
               received=value.received)
        return None
    if value is None:
        _block(out, "null", f"input {name!r} is None; expected {adapter.input_types}",
               expected=adapter.input_types, received=None)
        return None
    limit = constraints.max_size
    if limit is not None and type(value) is not np.ndarray:
        try:
            declared = adapter.declared_elements(value)
        except Exception:  # noqa: BLE001 - native() says what is wrong with the value
            declared = None
        if declared is not None and declared > limit:  # before native() converts it
            _refuse_declared(out, name, declared, limit)
            return None
    try:
        array = adapter.native(value)
    except Exception as exc:  # an adapter refusing a value is a format finding, not a crash
        _block(out, "format", f"input {name!r} could not be read as {adapter.input_types} "
               f"({type(exc).__name__})", expected=adapter.input_types,
               received=type(value).__name__, detail=str(exc))
        return None
    if array is not None:
        if isinstance(array, np.ndarray):
            if not array.dtype.isnative and array.dtype.fields is None:
                out.replaced.add(name)  # the model must read the copy, not the caller's
            array = _as_stored(array)
        return array
    is_sequence = isinstance(value, (list, tuple))
    if not (adapter.capabilities.host_sequences and (is_sequence or np.isscalar(value))):
        _block(out, "format", f"input {name!r} is a {type(value).__name__}; expected "
               f"{adapter.input_types}", expected=adapter.input_types,
               received=type(value).__name__)
        return None
    if is_sequence and limit is not None:
        try:
            declared = declared_size(value, limit)
        except Exception as exc:  # a sequence whose len() or items fail: not readable
            _block(out, "format", f"input {name!r} is a {type(value).__name__} that could not "
                   f"be read ({type(exc).__name__}); expected a rectangular sequence of numbers",
                   expected="rectangular numeric array", received=type(value).__name__,
                   detail=str(exc))
            return None
        if declared > limit:  # counted up to the first past the limit only
            _refuse_declared(out, name, declared, limit, at_least=True)
            return None
    try:
        if spec is not None and spec.accepts_strings and _first_leaf_is_text(value):
            return np.asarray(value, dtype=object)  # a str array would pad every string
        # As is: the framework casts the numbers to the declared dtype, checked as cast.
        array = _as_stored(np.asarray(value))
        listed.add(name)
        return array
    except Exception as exc:  # ragged, non-numeric, or a sequence whose items fail to read
        _block(out, "format", f"input {name!r} is a ragged or non-numeric nested sequence; "
               "expected a rectangular array of numbers",
               expected="rectangular numeric array", received=type(value).__name__,
               detail=str(exc))
        return None


def _refuse_declared(out: Validated, name: str, declared: int, limit: int, *,
                     at_least: bool = False) -> None:
    """Refuse input ``name`` for the ``declared`` elements its shape claims (more than
    ``limit``, ``max_size``), before anything converts or reads it; ``at_least``: the
    count stopped once past the limit, so ``declared`` is a lower bound."""
    out.oversized = True
    if at_least:  # a nested sequence: converting it is what would cost
        _block(out, "size", f"input {name!r} declares more than {limit} elements; refused "
               f"before conversion (max_size={limit})", expected=limit, received=f">{limit}")
    else:
        _block(out, "size", f"input {name!r} declares {declared} elements; expected at most "
               f"{limit} (max_size); refused before it was read or converted",
               expected=limit, received=declared)


def _unreadable(out: Validated, name: str, exc: Exception) -> None:
    """Refuse an input whose values could not be read: the elements of an object array
    are the caller's objects, and reading them (for missing values, for text) runs their
    own methods, which may raise; the input is refused as a format finding, never lets
    the element's exception escape the call without its line."""
    _block(out, "format", f"input {shown_name(name)!r} holds values that could not be read "
           f"({type(exc).__name__}); expected numbers, or str where the model takes text",
           expected="numbers or str", received=dtype_name(out.seen[name]),
           detail=exception_text(exc))


def _first_leaf_is_text(value: Any) -> bool:
    for _ in range(MAX_NESTING + 1):  # bounded: a list may contain itself
        if not (isinstance(value, (list, tuple)) and value):
            break
        value = value[0]
    return isinstance(value, (str, bytes))


def _columns(array: ColumnBlocks) -> Iterator[tuple[str, str, str, str]]:
    """``(label, block kind, read kind, dtype name)`` of each column of ``array``, in
    column order: the kind of the block holding it, the kind it is read as column by
    column and its own dtype's name (the block's where the adapter gave none)."""
    i = 0
    for block in array.blocks:
        kind = block.dtype.kind
        for _ in range(block.shape[1]):
            label = array.columns[i] if i < len(array.columns) else str(i)
            yield (label, kind, array.kinds[i] if i < len(array.kinds) else kind,
                   array.dtypes[i] if i < len(array.dtypes) else block.dtype.name)
            i += 1


def _columns_not_numbers(array: ColumnBlocks, numeric: frozenset[str]
                         ) -> list[tuple[str, str]]:
    """``(label, kind)`` of each column of ``array`` the model reads as numbers
    (``numeric``: their labels) that sits in a block of another kind than numbers or
    booleans (the adapter puts a column of objects that convert to numbers among the
    numbers), in column order."""
    return [(label, _KIND_NAMES.get(kind, kind)) for label, kind, _, _ in _columns(array)
            if kind not in _CHECKED_KINDS and label in numeric]


#: What a column an encoder fitted on strings reads as, by kind, where the encoder fails
#: on it (it compares the values with its strings: TypeError for numbers, ValueError for
#: booleans, complex numbers, dates and durations); objects, strings among them, pass.
_NOT_STRINGS = {"b": "booleans", "i": "numbers", "u": "numbers", "f": "numbers",
                "c": "complex numbers", "M": "dates", "m": "durations"}


def _columns_not_strings(array: Any, strings: frozenset[str]) -> list[tuple[str, str, str]]:
    """``(label, what, dtype)`` of each column of ``array`` an encoder fitted on strings
    reads (``strings``: their labels) that it reads as another kind (``_NOT_STRINGS``),
    in column order; every one of them for an array of such a dtype (read by position)."""
    if isinstance(array, ColumnBlocks):
        return [(label, _NOT_STRINGS[kind], dtype) for label, _, kind, dtype in _columns(array)
                if kind in _NOT_STRINGS and label in strings]
    if isinstance(array, SparseValues) or dtype_kind(array) not in _NOT_STRINGS:
        return []  # (sparse matrices reach no encoder fitted on strings: refused as sparse)
    what = _NOT_STRINGS[dtype_kind(array)]
    return [(label, what, dtype_name(array)) for label in sorted(strings, key=_label_order)]


def _label_order(label: str) -> tuple[int, int | str]:
    """Positions (``"2"``, for a model fitted without column names) in numeric order."""
    return (0, int(label)) if label.isdigit() else (1, label)


def _refuse_columns_not_strings(name: str, wrong: list[tuple[str, str, str]],
                                out: Validated) -> None:
    shown = ", ".join(f"{shown_name(label)!r} ({what}, {dtype})"
                      for label, what, dtype in wrong[:5])
    more = f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""
    many = len(wrong) > 1
    _block(out, "dtype", f"input {name!r}: column{'s' if many else ''} {shown}{more} "
           f"hold{'' if many else 's'} values of another kind than the strings the model's "
           f"encoder of {'these columns' if many else 'this column'} was fitted on, which "
           "it cannot compare with them; expected strings (str, pandas string or "
           "categories of strings; missing values allowed), as fitted",
           expected="strings, as fitted", received={label: dtype for label, _, dtype in wrong})


def _refused_kinds(array: Any, spec: InputSpec | None) -> list[str]:
    """The dtype kinds in ``array`` the model does not take (usually none)."""
    accepted = _NUMERIC_KINDS if spec is None else _accepted_kinds(spec.accepts_bool,
                                                                   spec.accepts_strings)
    if isinstance(array, ColumnBlocks):
        return sorted({b.dtype.kind for b in array.blocks} - accepted)
    kind = dtype_kind(array.data if isinstance(array, SparseValues) else array)
    return [] if kind in accepted else [kind]


@functools.lru_cache(maxsize=None)
def _accepted_kinds(accepts_bool: bool, accepts_strings: bool) -> frozenset[str]:
    return (_NUMERIC_KINDS | (frozenset("b") if accepts_bool or accepts_strings else frozenset())
            | (_TEXT_KINDS if accepts_strings else frozenset()))


def _check_format(name: str, array: Any, spec: InputSpec | None, out: Validated, *,
                  cast: bool = False) -> bool:
    """Dtype and shape against ``spec``. ``cast``: the array was built from a nested list,
    which the framework converts to the declared dtype itself."""
    shape = tuple(array.shape)
    if 0 in shape:
        _block(out, "empty", f"input {name!r} is empty (shape {shape}); expected at least "
               "one sample with at least one value", expected="non-empty", received=shape)
        return False
    if isinstance(array, SparseValues) and not (spec is not None and spec.accepts_sparse):
        _block(out, "format", f"input {name!r} is a sparse matrix ({array.format}); the "
               f"model does not take sparse input. Convert it to a dense array first "
               f"({array.densify})", expected="dense array", received=f"sparse {array.format}")
        return False
    if isinstance(array, SparseValues) and (wrong := array.misplaced()) is not None:
        # scipy checks the compressed formats only (COO, DIA and LIL have no check_format)
        hint = (" (scipy's x.check_format() finds what is wrong)"
                if array.format in ("csr", "csc", "bsr") else "")
        _block(out, "format", f"input {name!r} is a sparse matrix ({array.format}) whose "
               f"indices place values outside it: {wrong}; expected a valid sparse "
               f"matrix{hint}", expected="valid sparse matrix",
               received=f"sparse {array.format}", detail=wrong)
        return False
    received = dtype_name(array)
    if spec is not None and spec.dtype == _TEXT:
        return _check_text(name, array, dtype_kind(array), received, out) and _check_shape(
            name, shape, spec, out)
    if spec is not None and spec.string_columns and (
            wrong_kinds := _columns_not_strings(array, spec.string_columns)):
        _refuse_columns_not_strings(name, wrong_kinds, out)
        return False
    if isinstance(array, ColumnBlocks) and spec is not None and spec.numeric_columns:
        wrong = _columns_not_numbers(array, spec.numeric_columns)
        if wrong:
            shown = ", ".join(f"{shown_name(label)!r} ({kind})" for label, kind in wrong[:5])
            more = f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""
            _block(out, "dtype", f"input {name!r}: column{'s' if len(wrong) > 1 else ''} "
                   f"{shown}{more} hold{'' if len(wrong) > 1 else 's'} values that are not "
                   "numbers; the model reads "
                   f"{'these columns' if len(wrong) > 1 else 'this column'} as numbers "
                   "(expected real numbers, booleans or values convertible to float)",
                   expected="real numbers", received={label: kind for label, kind in wrong})
            return False
    refused = (() if not isinstance(array, STRUCTURED) and dtype_kind(array) in _NUMERIC_KINDS
               else _refused_kinds(array, spec))  # real numbers, the common case, first
    casts = spec is not None and bool(spec.dtype) and (cast or not spec.strict_dtype)
    if refused == ["b"] and casts and _numeric(spec.dtype):  # type: ignore[union-attr]
        refused = []  # booleans the framework casts to its numeric dtype itself
    if refused and not (spec is not None and spec.dtype == received):
        names = ", ".join(_KIND_NAMES.get(k, k) for k in refused)
        wanted = ("numbers, booleans, strings or other objects" if spec and spec.accepts_strings
                  else "real numbers (float or int)"
                  + (" or booleans" if spec and spec.accepts_bool else ""))
        _block(out, "dtype", f"input {name!r} has dtype {_spelled(array, received)} "
               f"({names}); expected {wanted}",
               expected=spec.dtype if spec and spec.dtype else "real numeric",
               received=received)
        return False
    if spec is None:
        return True
    if _reads_indices(array, spec) and spec.dtype is None and received not in _INDEX_DTYPES:
        # (where the model declares a dtype, the framework casts to it: only the values
        # as the cast leaves them count)
        _block(out, "dtype", f"input {name!r} has dtype {received}; the model looks its "
               f"values up as rows of a table of {spec.index_rows} (an embedding), so they "
               f"must be integer indices, int64 or int32. Convert it first"
               f"{_conversion(array, 'int64')}, or, if it is not indices, declare its dtype "
               f"(constraints={{'inputs': {{{name!r}: {{'dtype': {received!r}}}}}}})",
               expected="int64 or int32", received=received)
        return False
    if spec.dtype and spec.strict_dtype and received != spec.dtype and not (
            cast and _numeric(spec.dtype)):
        # "expected", not "the model declares": a dtype constraint sets it too
        _block(out, "dtype", f"input {name!r} has dtype {received}; expected "
               f"{spec.dtype}. Convert it first{_conversion(array, spec.dtype)}",
               expected=spec.dtype, received=received)
        return False
    return _check_shape(name, shape, spec, out)


#: Dtypes of indices into a table (torch's embedding takes these two alone).
_INDEX_DTYPES = frozenset({"int64", "int32"})


def _reads_indices(array: Any, spec: InputSpec | None) -> bool:
    """Whether the model reads ``array`` as indices into a table (``spec.index_rows``):
    not a float or complex input where the model declares no dtype to cast it to (the
    framework takes no such index, so the table read is another input: a conditional
    model's label embedding registered before the layer reading its noise)."""
    return spec is not None and spec.index_rows is not None and not (
        spec.dtype is None and dtype_kind(array) in "fc")


@functools.lru_cache(maxsize=64)
def _index_range(constraints: Constraints, name: str, rows: int,
                 negative: bool = False) -> tuple[Constraints, bool]:
    """The constraints input ``name`` is checked against where its values index a table
    of ``rows`` rows: the table's range (from ``-rows`` where ``negative`` indices count
    from its end, else from 0), narrowed by a ``min_value``/``max_value`` (every
    input's or its own), and a bound its own overrides set to ``None`` lifted; and whether
    that range is the table's."""
    own = constraints.for_input(name)
    overrides = (constraints.inputs or {}).get(name, {})

    def bound(key: str, table: int, tighter: Any) -> Any:
        value = getattr(own, key)
        if value is None:
            return None if key in overrides else table
        return tighter(table, value)

    lowest = -rows if negative else 0
    low, high = bound("min_value", lowest, max), bound("max_value", rows - 1, min)
    return (dataclasses.replace(own, inputs=None, min_value=low, max_value=high),
            (low, high) == (lowest, rows - 1))


def _check_bound(name: str, array: Any, bound: IndexBound, constraints: Constraints,
                 out: Validated, batched: bool) -> None:
    """Range findings for the values of input ``name`` that ``bound`` reads as indices:
    its picks of ``array`` (a host array), against its table's length in this call (the
    table's range alone, a bound the input's own overrides set to ``None`` lifted: the
    input's other constraints were checked on all of it). Picks from the batch axis, or
    an input without one, make findings about the whole call."""
    if isinstance(array, np.ndarray):
        missing = bound.missing(array.shape, out.arrays)
        if missing is not None:
            what, expected, received = missing
            _block(out, "shape", f"input {name!r}: {what}", expected=expected,
                   received=received)
            return
    rows = bound.length(out.arrays)
    found = None if rows is None or not isinstance(array, np.ndarray) else bound.values(array)
    if found is None:
        return
    values, batch_picked = found
    if not rows:
        _no_rows(name, bound.describe(), out)
        return
    overrides = (constraints.inputs or {}).get(name, {})
    lowest = -rows if bound.negative else 0
    own = Constraints(min_value=None if overrides.get("min_value", 0) is None else lowest,
                      max_value=None if overrides.get("max_value", 0) is None else rows - 1,
                      max_size=None)
    if own.min_value is None and own.max_value is None:
        return
    whole = Validated(flags=np.zeros(1, dtype=bool))
    per_sample = batched and not batch_picked
    target = whole if not per_sample else out
    before = len(target.findings)
    _check_content(name, values, out.batch_size if per_sample else 1, own, target)
    table = (f"rows of a table of {rows}" if bound.table is None else
             f"positions along axis {bound.table_axis} of input {shown_name(bound.table)!r} "
             f"({rows} long in this call)")
    _name_the_table(target, before, name, rows, f"{bound.describe()} up as {table}")
    if not per_sample:
        for finding in whole.findings:
            _add(out, dataclasses.replace(finding, samples=()))


def _no_rows(name: str, lookup: str, out: Validated) -> None:
    """The range finding for input ``name``, some of whose values (``lookup``: which)
    the model looks up in a table of length 0 along the axis they index: no value is a
    valid index. A finding about the whole call."""
    _add(out, Finding("range", f"input {name!r}: the model looks {lookup} up in a table "
                      "of length 0 along the axis they index, so no value is a valid index "
                      "(any would fail inside it); expected no values",
                      expected="no values (the table is empty)", received="values"))


def _name_the_table(out: Validated, first: int, name: str, rows: int,
                    lookup: str | None = None) -> None:
    """Say in the range findings (from ``out.findings[first:]``) of input ``name`` what
    the range comes from and how to set another; ``lookup``: which values the model
    looks up in what (every value, in a table of ``rows``, where not given)."""
    lookup = lookup or f"the values up as rows of a table of {rows} (an embedding)"
    for i in range(first, len(out.findings)):
        finding = out.findings[i]
        if finding.check == "range":
            out.findings[i] = dataclasses.replace(finding, reason=(
                f"{finding.reason}: the model looks {lookup}, and another index would fail "
                f"inside it (on CUDA, for every later call too); a range constraint narrows "
                f"it, and only None lifts it (constraints={{'inputs': {{{name!r}: "
                "{'max_value': None}}})"))


def _conversion(array: Any, dtype: str) -> str:
    """How the caller converts ``array`` to ``dtype``, in its own library's words: numpy's
    ``astype`` (which torch tensors lack: ``x.to(torch.float32)``); nothing where
    neither is known (a TensorFlow tensor)."""
    if hasattr(array, "astype"):
        return f" (e.g. x.astype('{dtype}'))"
    if type(array).__module__.split(".")[0] == "torch":
        return f" (e.g. x.to(torch.{dtype}))"
    return ""


def _spelled(array: Any, name: str) -> str:
    """A dtype as its caller writes it: numpy's ``name`` gives text and record dtypes by
    their size in bits (``str96`` for ``<U3``, ``void48`` for a record), hiding the length
    and the fields (bounded: a record may have thousands)."""
    if isinstance(array, np.ndarray) and array.dtype.kind in "USV":
        return shown_name(str(array.dtype))
    return name


def _check_text(name: str, array: Any, kind: str, received: str, out: Validated) -> bool:
    """A text input takes numpy ``str`` arrays and object arrays holding only ``str``,
    each encodable as UTF-8 and free of NUL (a runtime reading C strings stops there)."""
    if kind in "UO" and isinstance(array, np.ndarray):
        bad = next((v for v in array.flat if not isinstance(v, str) or not _clean_text(v)), None)
        if bad is None:
            return True
        what = ("objects other than str" if not isinstance(bad, str)
                else "text with a NUL character or a lone surrogate")
    else:
        what = f"{_KIND_NAMES.get(kind, kind)} values"
    _block(out, "dtype", f"input {name!r} has dtype {received} holding {what}; the model "
           "declares text. Pass a numpy str array (np.asarray(values, dtype=str)) or an "
           "object array of str, in UTF-8 without NUL", expected=_TEXT, received=received)
    return False


def _clean_text(value: str) -> bool:
    if "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_shape(name: str, shape: tuple[int, ...], spec: InputSpec, out: Validated) -> bool:
    """Rank and every declared length (a symbolic dimension takes any length here; inputs
    sharing a symbol are compared in :func:`_batched_inputs`)."""
    if spec.shape is not None:
        expected = spec.shape
        if not _fits_shape(shape, expected):
            hint = (" Reshape your data: for a single sample, add the batch axis "
                    "(x.reshape(1, -1) or x[None])." if len(shape) == len(expected) - 1 else "")
            if (len(shape) == len(expected) == 2 and isinstance(expected[1], int)
                    and shape[1] != expected[1]):
                # scikit-learn's wording, which tools written for it look for
                hint = (f" ({name} has {shape[1]} features, but it is expecting "
                        f"{expected[1]} features as input.)")
            batch = fixed_batch([spec])
            if (batch is not None and len(shape) == len(expected) and shape[0] != batch
                    and _fits_shape(shape[1:], expected[1:])):
                hint = (f" The model takes batches of exactly {batch} sample"
                        f"{'s' if batch > 1 else ''} (it declares a fixed batch length): "
                        f"call it with {batch} at a time, or export it with a dynamic "
                        "batch axis.")
            _block(out, "shape", f"input {name!r} has shape {shape}; the model expects "
                   f"{spec.describe()}.{hint}", expected=spec.describe(), received=shape)
            return False
    return True


def _fits_shape(shape: tuple[int, ...], expected: tuple[int | str | None, ...]) -> bool:
    """Whether ``shape`` has the rank of ``expected`` and every length it fixes."""
    return len(shape) == len(expected) and all(
        not isinstance(e, int) or e == r for e, r in zip(expected, shape))


def _batched_inputs(arrays: Mapping[str, Any], specs: Mapping[str, InputSpec | None],
                    out: Validated) -> set[str] | None:
    """Inputs that carry the batch axis; sets ``out.batch_size`` (``None`` after a
    blocking finding: inputs that disagree on a shared dimension).

    Where the inputs declare symbolic dimensions, only dimensions sharing a symbol must
    agree, and the batch axis is the leading symbol most inputs share: ``queries [Q, 4]``
    with ``keys [K, 4]`` is a batch of queries and one set of keys. Otherwise every input
    with a free first dimension (or, if none has one, every input with an axis) carries
    the batch, and they must agree on its length; where some inputs are declared,
    undeclared ones (a torch model's extra arguments) stay out.
    """
    if len(arrays) == 1:  # the common case: one input carries the batch, nothing to agree
        (name, array), = arrays.items()
        spec = specs.get(name)
        if spec is None or not spec.shape or not spec.symbols:
            if array.ndim == 0:  # a scalar: a call-level input, no batch
                out.batch_size = 1
                return set()
            out.batch_size = _batch_size(array, spec)
            return {name}
    ranked = [name for name, a in arrays.items() if a.ndim > 0]
    declared = {name: spec for name in arrays
                if (spec := specs.get(name)) is not None and spec.shape}
    if any(spec.symbols for spec in declared.values()):
        return _by_symbol(arrays, declared, out)
    if len(ranked) > 1 and any(specs.get(name) is not None for name in ranked):
        ranked = [name for name in ranked if specs.get(name) is not None]
    free = [name for name in ranked if (spec := specs.get(name)) is None
            or spec.shape is None or not spec.shape or spec.shape[0] is None]
    batched = free or ranked
    sizes = {name: _batch_size(arrays[name], specs.get(name)) for name in batched}
    if len(set(sizes.values())) > 1:
        batched, sizes = _vectors_beside_a_batch(batched, sizes, arrays, specs)
    if len(set(sizes.values())) > 1:
        _block(out, "shape", f"inputs disagree on the batch size: {sizes}; expected one "
               "batch size shared by every input", expected="equal batch sizes", received=sizes)
        return None
    out.batch_size = next(iter(sizes.values()), 1)
    return set(batched)


def _vectors_beside_a_batch(batched: list[str], sizes: dict[str, int],
                            arrays: Mapping[str, Any], specs: Mapping[str, InputSpec | None]
                            ) -> tuple[list[str], dict[str, int]]:
    """Undeclared 1-D inputs beside inputs that agree on a batch size (a torch model's
    ``{"x": (N, 4), "mask": (N,)}``): a vector as long as that batch holds one value per
    sample (a mask, lengths, labels); one of another length is one value for the whole
    call, as a scalar is. Unchanged where the other inputs disagree among themselves."""
    vectors = {name for name in batched if specs.get(name) is None and arrays[name].ndim == 1}
    others = {sizes[name] for name in batched if name not in vectors}
    if not vectors or len(others) != 1:
        return batched, sizes
    (n,) = others
    kept = [name for name in batched if name not in vectors or arrays[name].shape[0] == n]
    return kept, {name: n if name in vectors else sizes[name] for name in kept}


def _by_symbol(arrays: Mapping[str, Any], declared: Mapping[str, InputSpec],
               out: Validated) -> set[str] | None:
    lengths: dict[str, dict[tuple[str, int], int]] = {}  # symbol -> {(input, axis): length}
    for name, spec in declared.items():
        for symbol, axes in spec.symbols.items():
            for axis in axes:
                lengths.setdefault(symbol, {})[name, axis] = int(arrays[name].shape[axis])
    for symbol, seen in lengths.items():
        if len(set(seen.values())) > 1:
            listed = ", ".join(f"{name!r} has {n} (axis {axis})"
                               for (name, axis), n in seen.items())
            _block(out, "shape", f"inputs disagree on dimension {symbol!r}: {listed}; the "
                   f"model declares these dimensions as one, {symbol!r}, so they must have "
                   "the same length", expected=f"equal lengths for {symbol!r}",
                   received={f"{name}[{axis}]": n for (name, axis), n in seen.items()})
            return None
    leading = [spec.shape[0] for spec in declared.values() if isinstance(spec.shape[0], str)]
    batch = max(leading, key=leading.count) if leading else None
    batched = {name for name, spec in declared.items() if batch is not None
               and spec.shape[0] == batch}
    out.batch_size = int(arrays[next(iter(batched))].shape[0]) if batched else 1
    return batched


def _batch_size(array: Any, spec: InputSpec | None) -> int:
    if spec is None and array.ndim <= 1:
        return 1  # no declared batch axis: a vector or scalar is one sample
    return int(array.shape[0])


def _check_values(name: str, array: Any, n: int, c: Constraints, spec: InputSpec | None,
                  out: Validated, target: np.dtype | None = None) -> None:
    """The content checks that apply to what ``array`` holds: numbers get all of them,
    Python objects and strings only the missing-value one; tables go block by block.
    ``target`` is the dtype the framework casts the input to before the model reads it."""
    allow_nan = c.allow_nan if c.allow_nan is not None else (spec is not None and spec.allow_nan)
    if isinstance(array, ColumnBlocks):
        imputed = spec.imputed_columns if spec is not None else frozenset()
        labels = [label for label, _, _, _ in _columns(array)] if imputed else []
        start = 0
        for block in array.blocks:
            width = block.shape[1]
            chosen = np.array([label in imputed for label in labels[start:start + width]],
                              dtype=bool)
            start += width
            if chosen.any():
                _check_imputed(name, block[:, chosen], np.array(labels)[start - width:start][
                    chosen].tolist(), n, c, spec, out)
                block = block[:, ~chosen]
                if not block.shape[1]:
                    continue
            _check_values(name, block, n, c, spec, out, _cast_target(block, spec))
    elif isinstance(array, SparseValues):
        _check_sparse(name, array, n, c, out, allow_nan, _cast_target(array.data, spec))
    elif (kind := dtype_kind(array)) in _TEXT_KINDS:
        if not allow_nan and kind == "O":
            _check_missing(name, array, n, out)
    else:
        _check_content(name, array, n, c, out, allow_nan, target)


def _check_imputed(name: str, block: np.ndarray, labels: list[str], n: int, c: Constraints,
                   spec: InputSpec | None, out: Validated) -> None:
    """The columns ``labels`` of one block, which an imputer reads first
    (``InputSpec.imputed_columns``): missing values pass (unless ``c.allow_nan`` is
    ``False``), pandas' NA held as an object is refused (the imputer compares each value
    with itself to find NaN, and NA's comparison has no truth value), the rest is checked
    as any other column."""
    if block.dtype.kind == "O":
        held = _pandas_na(block).astype(bool).any(axis=0)
        if held.any():
            wrong = [label for label, found in zip(labels, held) if found]
            shown = ", ".join(repr(shown_name(label)) for label in wrong[:5])
            many = len(wrong) > 1
            _block(out, "dtype", f"input {name!r}: column{'s' if many else ''} {shown} "
                   f"hold{'' if many else 's'} pandas' NA (pd.NA, as a nullable pandas "
                   "column holds a missing value), which the model's imputer of "
                   f"{'these columns' if many else 'this column'} cannot compare; expected "
                   "None or NaN for a missing value (a column of object dtype, "
                   "column.astype(object).where(column.notna(), None))",
                   expected="None or NaN for missing values", received={
                       label: "pd.NA" for label in wrong})
            return
    own = dataclasses.replace(c, allow_nan=True) if c.allow_nan is None else c
    _check_values(name, block, n, own, spec, out, _cast_target(block, spec))


_pandas_na = np.frompyfunc(lambda value: type(value).__name__ == "NAType", 1, 1)


def _extremes(xp: Any, flat: Any, skip_nan: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample minimum and maximum, as host arrays; NaN propagates into both, unless
    ``skip_nan`` (then only a sample of nothing but NaN gets NaN)."""
    if xp is np:
        if skip_nan:
            return np.fmin.reduce(flat, axis=1), np.fmax.reduce(flat, axis=1)
        return flat.min(axis=1), flat.max(axis=1)  # methods skip numpy's dispatch layer
    if not skip_nan:
        return to_host(xp.min(flat, axis=1)), to_host(xp.max(flat, axis=1))
    nan = xp.isnan(flat)
    lows = to_host(xp.min(xp.where(nan, xp.full_like(flat, math.inf), flat), axis=1))
    highs = to_host(xp.max(xp.where(nan, xp.full_like(flat, -math.inf), flat), axis=1))
    return _mark_all_missing(lows.astype(np.float64), highs.astype(np.float64))


def _mark_all_missing(lows: np.ndarray, highs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples whose minimum exceeds their maximum held nothing but NaN: NaN for both."""
    empty = lows > highs
    if empty.any():
        lows, highs = lows.copy(), highs.copy()
        lows[empty] = highs[empty] = np.nan
    return lows, highs


def _within(low: Any, high: Any, c: Constraints, target: np.dtype | None,
            allow_nan: bool) -> bool:
    """Whether one minimum and maximum (over a sample or a whole batch, in the input's own
    dtype) pass every bound, as the model reads them after the cast to ``target``."""
    if allow_nan and math.isnan(low) and math.isnan(high):
        return True  # nothing but missing values
    if target is not None:
        (low, high), lost = _as_read(np.array([low, high]), target)
        if lost.any():
            return False
    number = _number if c.allow_inf else math.isfinite
    return (number(low) and number(high)
            and (c.min_value is None or low >= c.min_value)
            and (c.max_value is None or high <= c.max_value))


def _number(value: float) -> bool:
    """Whether ``value`` is a number, infinities included (not NaN)."""
    return not math.isnan(value)


def _check_content(name: str, array: Any, n: int, c: Constraints, out: Validated,
                   allow_nan: bool = False, target: np.dtype | None = None) -> None:
    """Finiteness, range and structure; ``target`` is the dtype the framework casts the
    input to before the model reads it (``None``: read as it is)."""
    xp = namespace(array)
    flat = array.reshape(n, -1) if xp is np else xp.reshape(array, (n, -1))  # skip dispatch
    kind = array.dtype.kind if xp is np else dtype_kind(array)
    if kind == "V":  # ml_dtypes' bfloat16, float8 and int4 numpy arrays: float32 holds
        flat, kind = flat.astype(np.float32), "f"  # every value, NaN and inf as they are
    if kind == "f" or c.min_value is not None or c.max_value is not None or target is not None:
        lows = highs = None
        # .item(): Python ints for integer inputs, so bounds compare exactly beyond 2**53
        if xp is np and not allow_nan:  # one min and one max over everything
            low, high = flat.min().item(), flat.max().item()
        elif xp is np:
            low = np.fmin.reduce(flat, axis=None).item()
            high = np.fmax.reduce(flat, axis=None).item()
        else:  # on a device: per-sample summaries are all that come back to the host
            lows, highs = _extremes(xp, flat, allow_nan)
            smaller, larger = (np.fmin, np.fmax) if allow_nan else (np.minimum, np.maximum)
            low, high = smaller.reduce(lows).item(), larger.reduce(highs).item()  # NaN kept
        within = (math.isfinite(low) and math.isfinite(high)  # the clean case, inline
                  and (c.min_value is None or low >= c.min_value)
                  and (c.max_value is None or high <= c.max_value))
        if not within or target is not None or allow_nan:
            within = _within(low, high, c, target, allow_nan)
        if not within:  # the clean case stops here
            if lows is None:
                lows, highs = _extremes(xp, flat, allow_nan)
            _report_extremes(name, lows, highs, c, out, allow_nan, target)
    if c.max_gradient is not None:
        jumps = largest_jump(array, n)
        steep = jumps > c.max_gradient
        if steep.any():
            _add(out, Finding(
                "max_gradient", f"input {name!r}, {_which(steep)}: neighbouring values "
                f"jump by more than {c.max_gradient} (max_gradient)", samples=_indices(steep),
                expected=c.max_gradient, received=float(np.nanmax(jumps)),
                detail=f"largest jump {np.nanmax(jumps):.6g}"))
    if c.min_sparsity is not None:
        density = to_host(xp.sum(astype(flat != 0, xp.float32), axis=1)) / flat.shape[1]
        _report_density(name, density, c, out)


def _check_sparse(name: str, array: SparseValues, n: int, c: Constraints, out: Validated,
                  allow_nan: bool, target: np.dtype | None) -> None:
    """The numeric checks on a sparse matrix's stored values and its implicit zeros."""
    data, (rows, cols) = array.data, array.shape
    if data.dtype.kind == "f" or c.min_value is not None or c.max_value is not None:
        zeros = data.size < rows * cols  # canonical: each entry stored at most once
        if data.size == 0:
            low = high = 0.0
        elif allow_nan:
            low, high = float(np.fmin.reduce(data)), float(np.fmax.reduce(data))
        else:
            low, high = float(data.min()), float(data.max())
        if zeros and not math.isnan(low):
            low, high = min(low, 0.0), max(high, 0.0)
        if not _within(low, high, c, target, allow_nan):
            lows, highs = np.full(rows, np.inf), np.full(rows, -np.inf)
            smaller, larger = (np.fmin, np.fmax) if allow_nan else (np.minimum, np.maximum)
            with np.errstate(invalid="ignore"):  # NaN is what is being looked for
                smaller.at(lows, array.rows, data)
                larger.at(highs, array.rows, data)
            has_zero = array.stored_per_row() < cols
            lows[has_zero] = smaller(lows[has_zero], 0.0)
            highs[has_zero] = larger(highs[has_zero], 0.0)
            lows, highs = _mark_all_missing(lows, highs)
            _report_extremes(name, lows, highs, c, out, allow_nan, target)
    if c.max_gradient is not None:
        _add(out, Finding(
            "max_gradient", f"input {name!r} is a sparse matrix; the max_gradient constraint "
            "compares neighbouring values and is not checked on sparse input. Pass a dense "
            "array (x.toarray()) or drop max_gradient", expected="dense array",
            received=f"sparse {array.format}"))
    if c.min_sparsity is not None:
        nonzero = np.bincount(array.rows[data != 0], minlength=rows)
        _report_density(name, nonzero / cols, c, out)


def _report_density(name: str, density: np.ndarray, c: Constraints, out: Validated) -> None:
    assert c.min_sparsity is not None
    sparse = density < c.min_sparsity
    if sparse.any():
        _add(out, Finding(
            "min_sparsity", f"input {name!r}, {_which(sparse)}: fewer than "
            f"{c.min_sparsity} of values are non-zero (min_sparsity)",
            samples=_indices(sparse), expected=c.min_sparsity,
            received=float(density.min()),
            detail=f"least share of non-zero values {density.min():.3g}"))


#: pandas' missing-value markers (``pd.NA``, ``pd.NaT``), known by type name: the core
#: imports no pandas
_MISSING_TYPES = frozenset({"NAType", "NaTType"})


def _is_missing(value: Any) -> bool:
    """Whether an object marks a missing value: ``None``, a NaN of any float type
    (Python's, numpy's, ``Decimal``'s), numpy's NaT, pandas' NA and NaT. Reads each by
    its type, so the usual spellings of NaN all count."""
    kind = type(value)
    if kind is str:  # the common case among objects
        return False
    if value is None:
        return True
    if issubclass(kind, (float, np.floating)):
        return math.isnan(value)
    if issubclass(kind, (np.datetime64, np.timedelta64)):
        return bool(np.isnat(value))
    if issubclass(kind, Decimal):
        return value.is_nan()
    return kind.__name__ in _MISSING_TYPES


_missing = np.frompyfunc(_is_missing, 1, 1)


def _check_missing(name: str, array: np.ndarray, n: int, out: Validated) -> None:
    """Python objects (strings, categories): ``None`` or NaN marks a missing value."""
    missing = _missing(array.reshape(n, -1)).astype(bool).any(axis=1)
    if missing.any():
        _add(out, Finding("null", f"input {name!r}, {_which(missing)}: missing values (None, "
                          "NaN, NA or NaT); expected a value in every place, as the model does not "
                          "handle missing values", samples=_indices(missing),
                          expected="no missing values", received="None/NaN"))


def _report_extremes(name: str, lows: np.ndarray, highs: np.ndarray, c: Constraints,
                     out: Validated, allow_nan: bool = False,
                     target: np.dtype | None = None) -> None:
    """Findings from per-sample extremes (in the input's own dtype); with ``target``, the
    values are judged as the framework's cast to it leaves them."""
    source = lows.dtype.name
    wide_lows, wide_highs = lows.astype(np.float64), highs.astype(np.float64)
    nan = np.isnan(wide_lows) | np.isnan(wide_highs)
    inf = np.isinf(wide_lows) | np.isinf(wide_highs)
    bad_nan, bad_inf = nan & (not allow_nan), inf & (not c.allow_inf)
    bad = bad_nan | bad_inf
    if bad.any():
        if not bad_nan.any():
            what, received = "infinite values (inf)", "inf"
        else:
            what, received = ("NaN values" if not bad_inf.any() else "NaN or infinite values",
                              "NaN" if not bad_inf.any() else "NaN/Inf")
        expected = "finite numbers" + (
            " or NaN (a missing value, which the model handles)" if allow_nan else "") + (
            " or infinities (allow_inf)" if c.allow_inf else "")
        hint = ("; where infinities are values the model reads (an additive attention "
                f"mask's -inf), allow them for this input: constraints={{'inputs': "
                f"{{{name!r}: {{'allow_inf': True}}}}}}") if bad_inf.any() else ""
        _add(out, Finding("finite", f"input {name!r}, {_which(bad)}: {what}; expected "
                          f"{expected}{hint}", samples=_indices(bad), expected="finite",
                          received=received))
    finite = ~(nan | bad_inf)  # the values range bounds judge (infinities where allowed)
    if target is not None:
        (wide_lows, lost_low), (wide_highs, lost_high) = (_as_read(lows, target),
                                                          _as_read(highs, target))
        lost = finite & (lost_low | lost_high)
        if lost.any():
            _add(out, _unrepresentable(name, lost, source, target))
        finite &= ~lost
        lows, highs = wide_lows, wide_highs
    elif lows.dtype.kind not in "iu":  # integers stay exact against integer bounds
        lows, highs = wide_lows, wide_highs
    outside = np.zeros(len(lows), dtype=bool)
    if c.min_value is not None:
        outside |= finite & (lows < c.min_value)
    if c.max_value is not None:
        outside |= finite & (highs > c.max_value)
    if outside.any():
        i = int(np.argmax(outside))
        _add(out, Finding(
            "range", f"input {name!r}, {_which(outside)}: values outside the allowed range; "
            f"expected every value in [{_fmt(c.min_value, '-inf')}, "
            f"{_fmt(c.max_value, 'inf')}]",
            samples=_indices(outside), expected=(c.min_value, c.max_value),
            received=(float(lows[i]), float(highs[i])),
            detail=f"sample {i} spans [{lows[i]:.6g}, {highs[i]:.6g}]"))


_TEXT = "str"
_CHECKED_KINDS = frozenset("fiub")


def _numeric(dtype: str | None) -> bool:
    try:
        return np.dtype(dtype).kind in "fiub"
    except TypeError:  # a dtype numpy lacks (bfloat16): the framework's own
        return False


def _as_stored(array: np.ndarray) -> np.ndarray:
    """``array`` as a plain ndarray whose memory holds its values in native byte order:
    masked arrays and other subclasses give their data, other byte orders a copy."""
    return native_order(array if type(array) is np.ndarray else np.asarray(array))


def native_order(array: Any) -> Any:
    """A native-order copy of a numpy array stored in another byte order (big-endian data
    from a ``.npy`` file), else ``array`` itself. A framework reading raw memory
    (onnxruntime, torch) would read other values from it than numpy shows; validation
    checks the copy, and adapters hand the model that copy."""
    if (isinstance(array, np.ndarray) and not array.dtype.isnative
            and array.dtype.fields is None):
        return array.astype(array.dtype.newbyteorder("="))
    return array


def _cast_target(array: Any, spec: InputSpec | None) -> np.dtype | None:
    """The dtype the framework casts ``array`` to before the model reads it, when that
    cast can change values beyond rounding (narrowing: float64 to float32, int64 to int8,
    int to float16); ``None`` when it reads the array as it is."""
    if spec is None or not spec.dtype or dtype_name(array) == spec.dtype:
        return None
    try:
        target = np.dtype(spec.dtype)
        source = np.dtype(dtype_name(array))
    except TypeError:  # a dtype numpy lacks (bfloat16): nothing to compare
        return None
    if source.kind not in "fiu" or target.kind not in "fiu":
        return None  # bools become 0/1, anything becomes a bool: always representable
    if np.can_cast(source, target, "safe"):
        return None  # widening: every value survives
    return target


def _as_read(values: np.ndarray, target: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (extremes, in the input's dtype) as float64 after the framework's cast
    to ``target``, and a mask of those the cast cannot represent: beyond a float type's
    range (they become infinite) or an integer type's (they wrap around)."""
    wide = values.astype(np.float64)
    if target.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            read = values.astype(target).astype(np.float64)
        return read, np.isfinite(wide) & ~np.isfinite(read)
    info = np.iinfo(target)
    if values.dtype.kind in "iu":  # exact: numpy compares integers with Python ints exactly
        return wide, (values < info.min) | (values > info.max)
    read = np.trunc(wide)  # float to int drops the fraction
    with np.errstate(invalid="ignore"):
        lost = np.isfinite(read) & ((read < info.min) | (read >= 2.0 ** (info.bits - (
            target.kind == "i"))))
    return read, lost


def _cast(array: np.ndarray, target: np.dtype) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return array.astype(target)


def _unrepresentable(name: str, lost: np.ndarray, source: str, target: np.dtype) -> Finding:
    if target.kind == "f":
        limit = float(np.finfo(target).max)
        return Finding(
            "finite", f"input {name!r}, {_which(lost)}: values beyond {target.name}'s range "
            f"(±{limit:.6g}), which become infinite when the {source} input is cast to "
            f"{target.name}, the dtype the model reads; expected finite {target.name} "
            f"values", samples=_indices(lost), expected=f"finite {target.name}",
            received=f"{source} beyond ±{limit:.6g}")
    info = np.iinfo(target)
    return Finding(
        "range", f"input {name!r}, {_which(lost)}: values outside {target.name}'s range "
        f"[{info.min}, {info.max}], which wrap around when the {source} input is cast to "
        f"{target.name}, the dtype the model reads; expected values {target.name} can hold",
        samples=_indices(lost), expected=(info.min, info.max), received=f"{source} beyond")


def _add(out: Validated, finding: Finding) -> None:
    out.findings.append(finding)
    if finding.samples and len(out.flags):
        out.flags[list(finding.samples)] = True
    elif len(out.flags):
        out.flags[:] = True


def _block(out: Validated, check: str, reason: str, *, expected: Any, received: Any,
           detail: str = "") -> None:
    out.findings.append(Finding(check, reason, expected=expected, received=received,
                                blocking=True, detail=detail))


def _indices(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.flatnonzero(mask))


def _which(mask: np.ndarray, shown: int = 5) -> str:
    """``"sample 3"`` or ``"samples 0, 4, 9, 11, 15 and 12 more"``."""
    idx = np.flatnonzero(mask)
    if len(idx) == 1:
        return f"sample {idx[0]}"
    listed = ", ".join(str(i) for i in idx[:shown])
    more = f" and {len(idx) - shown} more" if len(idx) > shown else ""
    return f"samples {listed}{more}"


def _fmt(bound: float | None, unbounded: str) -> str:
    return unbounded if bound is None else f"{bound:g}"
