"""Array helpers written once over the array API, so device arrays stay on their device.

Only per-sample summaries (a handful of numbers per sample) ever leave the device.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

try:  # array-api-compat covers torch and others; numpy is handled directly (faster)
    import array_api_compat
except ImportError:  # pragma: no cover - a declared dependency
    array_api_compat = None


@dataclass(frozen=True, eq=False)
class SparseValues:
    """A 2-D sparse matrix as the checks read it, never densified.

    ``data`` holds the stored values, one per stored entry and with duplicates already
    summed (as the model will sum them); every other entry is an implicit zero. The row of
    each stored value comes from ``indptr`` (compressed rows, CSR) or ``row`` (one row
    index per value, as CSC's ``indices`` or COO's ``row``). ``parts`` are the arrays that
    place the values, hashed with ``data``, ``format`` and ``shape``; two parts are the
    compressed form's ``(indices, indptr)``: by rows where ``indptr`` is set (CSR), else by
    columns (CSC), and :meth:`misplaced` checks them; in coordinate form (COO, ``col``
    set) they are ``(row, col)``, one of each per value, which it checks too. In diagonal
    form (DIA, ``offsets`` set) ``data`` is the 2-D array of diagonals, one row per offset,
    as given (not yet summed or placed), and :meth:`misplaced` checks it against ``offsets``.
    ``densify`` is how the caller makes a dense copy of the input, for refusals.
    """

    format: str
    shape: tuple[int, int]
    data: np.ndarray
    parts: tuple[np.ndarray, ...]
    indptr: np.ndarray | None = None
    row: np.ndarray | None = None
    densify: str = "x.toarray()"
    col: np.ndarray | None = None  #: the column of each value, in coordinate form
    offsets: np.ndarray | None = None  #: the diagonal of each row of ``data``, in DIA form

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @cached_property
    def rows(self) -> np.ndarray:
        """The row of every stored value (int64, one per value of ``data``)."""
        if self.row is not None:
            return np.asarray(self.row, dtype=np.int64)
        assert self.indptr is not None
        return np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))

    def misplaced(self) -> str | None:
        """Why the compressed form's ``(indices, indptr)`` do not place ``data`` inside
        ``shape`` (an index past the shape or negative, a pointer array of the wrong length
        or out of order), or ``None`` where they do (or where ``parts`` are not that pair).
        Sparse kernels trust these arrays: an index outside the shape reads memory outside
        the matrix (other values, or a crash of the process). In coordinate form: a row or
        column index outside the shape, or not one of each per value. In diagonal form: not
        one integer offset per row of ``data``, or an offset twice."""
        if self.offsets is not None:
            return _diagonals_misplaced(self.shape, self.data, self.offsets)
        if self.col is not None and self.row is not None:
            return _coordinates_misplaced(self.shape, self.data.size, self.row, self.col)
        if len(self.parts) != 2:
            return None
        indices, pointer = self.parts
        outer, inner = self.shape if self.indptr is not None else self.shape[::-1]
        for what, part in (("indices", indices), ("index pointer", pointer)):
            if part.dtype.kind not in "iu" or part.ndim != 1:
                return (f"its {what} are {part.dtype.name} of shape {part.shape}; expected "
                        "a vector of integers")
        if indices.size != self.data.size:
            return f"it has {indices.size} indices for {self.data.size} stored values"
        if pointer.size != outer + 1:
            return f"its index pointer has {pointer.size} entries; expected {outer + 1}"
        if pointer[0] != 0:
            return f"its index pointer starts at {pointer[0]}; expected 0"
        if pointer[-1] != indices.size:
            return (f"its index pointer ends at {pointer[-1]}; expected {indices.size} (the "
                    "stored values)")
        if outer > 1 and bool((pointer[1:] < pointer[:-1]).any()):
            return "its index pointer decreases"
        if indices.size:
            low, high = indices.min(), indices.max()
            if low < 0 or high >= inner:
                return f"it stores an index {low if low < 0 else high} outside [0, {inner})"
        return None

    def stored_per_row(self) -> np.ndarray:
        if self.indptr is not None:
            return np.diff(self.indptr)
        return np.bincount(self.rows, minlength=self.shape[0])

    def tolist(self) -> dict[str, Any]:
        """A JSON-able description (for audit lines that include their inputs)."""
        return {"format": self.format, "shape": list(self.shape),
                "data": self.data.tolist(), "parts": [p.tolist() for p in self.parts]}


def _coordinates_misplaced(shape: tuple[int, int], values: int, row: np.ndarray,
                           col: np.ndarray) -> str | None:
    """:meth:`SparseValues.misplaced` for coordinate form: why ``row`` and ``col`` do not
    give each of ``values`` stored values a place inside ``shape``, or ``None``."""
    for what, part, size in (("row", row, shape[0]), ("column", col, shape[1])):
        if part.dtype.kind not in "iu" or part.ndim != 1:
            return (f"its {what} indices are {part.dtype.name} of shape {part.shape}; "
                    "expected a vector of integers")
        if part.size != values:
            return f"it has {part.size} {what} indices for {values} stored values"
        if part.size:
            low, high = part.min(), part.max()
            if low < 0 or high >= size:
                return (f"it stores a {what} index {low if low < 0 else high} outside "
                        f"[0, {size})")
    return None


def _diagonals_misplaced(shape: tuple[int, int], data: np.ndarray,
                         offsets: np.ndarray) -> str | None:
    """:meth:`SparseValues.misplaced` for diagonal form: why ``data`` (one row per
    diagonal) and ``offsets`` do not describe distinct diagonals, or ``None``. scipy's
    compiled conversion reads one offset per row of ``data``, each diagonal once; a
    diagonal that misses ``shape`` places nothing (scipy builds such matrices: ``spdiags``
    with a band wider than the matrix), and the caller leaves it out before converting."""
    if offsets.dtype.kind not in "iu" or offsets.ndim != 1:
        return (f"its offsets are {offsets.dtype.name} of shape {offsets.shape}; expected a "
                "vector of integers")
    if data.ndim != 2 or data.shape[0] != offsets.size:
        return (f"its diagonals have shape {data.shape} for {offsets.size} offsets; expected "
                f"({offsets.size}, length), one row per offset")
    if offsets.size and np.unique(offsets).size != offsets.size:
        return "it stores a diagonal twice (an offset repeated)"
    return None  # a diagonal missing the matrix places nothing (as scipy reads it)


@dataclass(frozen=True, eq=False)
class ColumnBlocks:
    """A table whose columns differ in kind (a DataFrame of numbers and strings), as
    blocks of columns sharing one numpy dtype, each of shape ``(n_rows, k)``: numeric
    blocks get the numeric checks, the others the checks that apply to any value.

    ``columns``: the labels, in block order. ``kinds`` (where the adapter knows them): the
    numpy dtype kind each column is read as column by column (``"f"`` for a nullable
    integer column holding ``NA``, the categories' kind for a categorical column, ``"O"``
    for strings and other objects) and ``dtypes`` its own dtype's name, as the caller
    handed it (``"Int64"``, ``"category"``), both in ``columns`` order."""

    shape: tuple[int, int]
    blocks: tuple[np.ndarray, ...]
    columns: tuple[str, ...] = ()
    dtype: str = "mixed"
    kinds: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ()

    @property
    def ndim(self) -> int:
        return 2

    def tolist(self) -> list[list[Any]]:
        return [list(row) for row in zip(*(c for b in self.blocks for c in b.T.tolist()))]


#: Inputs the core reads through their own structure instead of as one array.
STRUCTURED = (SparseValues, ColumnBlocks)


def element_count(array: Any) -> int:
    """Elements an input holds, for ``max_size``: the stored values of a sparse matrix,
    or its rows where there are more of those (the model answers every row)."""
    if isinstance(array, SparseValues):
        return max(int(array.data.size), int(array.shape[0]))
    return math.prod(array.shape)


def namespace(array: Any) -> Any:
    """The array-API namespace of ``array`` (plain numpy for numpy arrays)."""
    if isinstance(array, np.ndarray):
        return np
    return array_api_compat.array_namespace(array)


def astype(array: Any, dtype: Any) -> Any:
    """``array`` cast to ``dtype`` (a copy) on its own device: the array API's ``astype``,
    which numpy has as a function only from 2.1 (before, only the method)."""
    if isinstance(array, np.ndarray):
        return array.astype(dtype)
    return namespace(array).astype(array, dtype)


def to_host(array: Any) -> np.ndarray:
    """A small array (per-sample summaries) as numpy, moved off its device if needed."""
    if isinstance(array, (np.ndarray, *STRUCTURED)):
        return array
    if array_api_compat.is_torch_array(array):  # torch reports a device object, not "cpu"
        host = array.detach().cpu()
        if not numpy_has_dtype(host.dtype):
            host = host.float()  # summaries of bfloat16 / float8 values, widened
        return host.numpy()
    return np.asarray(array_api_compat.to_device(array, "cpu"))


#: dtypes a framework has and numpy lacks (bfloat16, the float8 and float4 kinds, torch's
#: complex32), by a part of their name: numpy cannot take them through DLPack either
_NOT_IN_NUMPY = ("bfloat16", "float8", "float4", "complex32")


_in_numpy: dict[Any, bool] = {}


def numpy_has_dtype(dtype: Any) -> bool:
    """Whether numpy has this dtype (it lacks bfloat16, the float8 and float4 kinds and
    complex32; cached per dtype)."""
    has = _in_numpy.get(dtype)
    if has is None:
        name = str(dtype)
        has = _in_numpy[dtype] = not any(part in name for part in _NOT_IN_NUMPY)
    return has


def on_host(array: Any) -> bool:
    if isinstance(array, np.ndarray):
        return True
    return str(array_api_compat.device(array)) == "cpu"


_dtype_kinds: dict[Any, str] = {}


def dtype_kind(array: Any) -> str:
    """numpy's one-letter kind: ``f`` float, ``i``/``u`` integer, ``b`` bool, ``c`` complex,
    anything else for object, string and the like (cached per dtype)."""
    if isinstance(array, np.ndarray):
        return array.dtype.kind
    dtype = array.dtype
    kind = _dtype_kinds.get(dtype)
    if kind is None:
        xp = namespace(array)
        kind = next((k for k, name in (("b", "bool"), ("f", "real floating"),
                                       ("i", "signed integer"), ("u", "unsigned integer"),
                                       ("c", "complex floating"))
                     if xp.isdtype(dtype, name)), "O")
        _dtype_kinds[dtype] = kind
    return kind


_dtype_names: dict[Any, str] = {}


def dtype_name(array: Any) -> str:
    """``"float32"`` for numpy's and torch's float32 alike (cached: numpy's is slow)."""
    dtype = array.dtype
    name = _dtype_names.get(dtype)
    if name is None:
        name = dtype.name if isinstance(dtype, np.dtype) else str(dtype).rsplit(".", 1)[-1]
        _dtype_names[dtype] = name
    return name


def host_view(array: Any) -> np.ndarray | None:
    """A zero-copy numpy view of a host array (numpy's reductions have far less per-call
    overhead than a framework's), or ``None`` for device arrays and dtypes numpy lacks."""
    if isinstance(array, np.ndarray):
        return array
    if on_host(array) and numpy_has_dtype(array.dtype):
        return np.from_dlpack(array)
    return None


# The most axes an array may have (numpy 2's limit): a sequence nested deeper (or one that
# contains itself, ``x = []; x.append(x)``) can never become an array.
MAX_NESTING = 64


def declared_size(value: Any, limit: int) -> int:
    """Elements a nested sequence declares, read along its first elements only; an array
    met on the way (a list holding numpy arrays or tensors, which converting copies whole)
    counts with all of its elements.

    Stops as soon as the count passes ``limit``, so a list declaring 10^9 elements is
    measured in microseconds and never converted.

    Raises:
        ValueError: the sequence nests deeper than ``MAX_NESTING`` levels (a list that
            contains itself included), which no array can hold.
    """
    size = 1
    node = value
    depth = 0
    while isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
        depth += 1
        if depth > MAX_NESTING:
            raise ValueError(f"nested deeper than {MAX_NESTING} levels (an array has at "
                             f"most {MAX_NESTING} axes), or a sequence containing itself")
        size *= len(node)
        if size == 0 or size > limit:
            return size
        node = node[0]
    shape = getattr(node, "shape", None)  # a broadcast view of one value claims 10^12
    if isinstance(shape, tuple) and all(isinstance(d, int) for d in shape):
        size *= math.prod(shape)
    return size


def broadcast_index(shape: Sequence[int], strides: Sequence[int]) -> tuple[slice, ...] | None:
    """The index that keeps one entry of each broadcast axis (stride 0, longer than 1) of
    an array of ``shape`` and ``strides`` (numpy's bytes or torch's elements alike), the
    rest whole: a copy of ``array[index]`` broadcast back to ``shape`` holds its values
    without materializing them. ``None`` where no axis is broadcast."""
    index = tuple(slice(0, 1) if stride == 0 and size > 1 else slice(None)
                  for size, stride in zip(shape, strides))
    return index if any(axis.stop == 1 for axis in index) else None


def masks_as_bytes(inputs: Mapping[str, Any], read: Callable[[Any], Any] | None = None, *,
                   after: int = 1) -> dict[str, Any]:
    """``inputs`` (name -> value, the model's own inputs first) with every boolean array
    after the first ``after`` (the arguments beside the model's inputs: attention and
    padding masks) as its ``uint8`` view: the same 0/1 values, in a dtype the checks take
    as numbers. Zero-copy and on its device where the array has a dtype ``view`` (numpy,
    torch, JAX); otherwise (a TensorFlow tensor, a Keras variable) ``read`` (the adapter's
    conversion to numpy) reads it first. The model's own inputs stay as they are (a
    boolean input to a float model is a dtype error), and so does a value that cannot be
    viewed or read (validation says what is wrong with it)."""
    out = dict(inputs)
    for name in list(out)[after:]:
        value = out[name]
        if _is_boolean(value):
            out[name] = _bytes_of(value, read)
    return out


def _is_boolean(value: Any) -> bool:
    """Whether ``value`` is an array of booleans, by its dtype's name (numpy's ``bool``,
    torch's ``torch.bool``, TensorFlow's ``tf.bool``, Keras' ``"bool"``)."""
    try:
        dtype = value.dtype
        name = dtype if isinstance(dtype, str) else getattr(dtype, "name", None)
        return (name if isinstance(name, str) else str(dtype).rsplit(".", 1)[-1]) == "bool"
    except Exception:  # no dtype (None, a list), or one that cannot be read
        return False


def _bytes_of(value: Any, read: Callable[[Any], Any] | None) -> Any:
    if isinstance(value, np.ndarray):
        return value.view(np.uint8)
    try:
        return value.view(namespace(value).uint8)
    except Exception:  # not an array-API array (TensorFlow), or one without a view
        pass
    if read is None:
        return value
    try:
        host = read(value)
    except Exception:
        return value
    return host.view(np.uint8) if isinstance(host, np.ndarray) and host.dtype == np.bool_ \
        else value


def content_hash(arrays: Sequence[Any], host_bytes: Any = None,
                 names: Sequence[str] | None = None) -> str:
    """SHA-256 (first 128 bits) of the bytes, dtype and shape of every input, and of their
    names when given (never of ``str(array)``, which numpy truncates, so different large
    arrays would collide).

    The bytes are the array's values in C order, read where numpy can read them and
    otherwise asked of ``host_bytes(array)`` (an adapter's: an accelerator's array copied to
    the host once, or a dtype numpy lacks), so one content hashes the same wherever it lives.
    """
    # SHA-256: cryptographic, and on CPUs with SHA extensions about twice as fast as BLAKE2b.
    digest = hashlib.sha256()
    for i, array in enumerate(arrays):
        label = f"{names[i]!r}:" if names is not None else ""
        digest.update(f"{label}{dtype_name(array)}{tuple(array.shape)}|".encode())
        if isinstance(array, np.ndarray) and (array.dtype.isbuiltin == 2 or (
                array.dtype.kind == "V" and not array.dtype.names)):
            # dtypes numpy lacks, added by ml_dtypes (bfloat16, float8: kind 'V', but
            # float8_e5m2 kind 'f'), and raw void: no buffer protocol, read as bytes
            data = np.ascontiguousarray(array).reshape(-1).view(np.uint8).data
        elif isinstance(array, np.ndarray) and array.dtype.kind != "O":
            data = np.ascontiguousarray(array).data
        elif isinstance(array, np.ndarray):
            _digest_block(digest, array)
            continue
        elif isinstance(array, STRUCTURED):
            _digest_structured(digest, array)
            continue
        elif on_host(array) and numpy_has_dtype(array.dtype):
            data = np.ascontiguousarray(np.from_dlpack(array)).data
        else:
            data = host_bytes(array) if host_bytes is not None else None
            if data is None:
                data = np.ascontiguousarray(to_host(array)).data
        digest.update(data)
    return digest.hexdigest()[:32]


def _digest_structured(digest: Any, array: Any) -> None:
    """Sparse matrices by format, index arrays and values; tables by column names and
    blocks (object columns through their elements' text, type-tagged)."""
    if isinstance(array, SparseValues):
        digest.update(f"{array.format}|".encode())
        for part in (*array.parts, array.data):
            digest.update(f"{part.dtype.str}{part.shape}|".encode())
            digest.update(np.ascontiguousarray(part).data)
        return
    digest.update(repr(array.columns).encode())
    for block in array.blocks:
        digest.update(f"{block.dtype.str}{block.shape}|".encode())
        _digest_block(digest, block)


def _digest_block(digest: Any, block: np.ndarray) -> None:
    """A host array's values: its memory, or for Python objects their type and ``repr``
    (their memory holds only pointers)."""
    if block.dtype.kind != "O":
        digest.update(np.ascontiguousarray(block).data)
        return
    for value in block.ravel().tolist():
        digest.update(_element_text(value))


def _element_text(value: Any) -> bytes:
    """An object's type and ``repr`` as bytes to hash; an object whose ``repr`` raises
    (hostile input) is hashed by its type alone, and one whose text holds lone surrogates
    with them escaped, so no element can cost a call its hash (or its audit line)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - any object may be handed in
        text = "<no repr>"
    return f"{type(value).__name__}:{text}\x00".encode("utf-8", "backslashreplace")


def largest_jump(array: Any, n: int) -> np.ndarray:
    """Per sample, the largest absolute difference between neighbours along any axis."""
    xp = namespace(array)
    sample = xp.reshape(array, (n, -1)) if array.ndim <= 1 else array
    sample = astype(sample, xp.float64) if dtype_kind(sample) != "f" else sample
    largest = np.zeros(n)
    for axis in range(1, sample.ndim):
        if sample.shape[axis] < 2:
            continue
        lead = (slice(None),) * axis
        ahead, behind = sample[lead + (slice(1, None),)], sample[lead + (slice(None, -1),)]
        diffs = xp.reshape(xp.abs(ahead - behind), (n, -1))
        largest = np.maximum(largest, to_host(xp.max(diffs, axis=1)))
    return largest
