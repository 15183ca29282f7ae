"""onnxruntime adapter: a guarded model is still an ``InferenceSession``.

    >>> import numpy as np
    >>> import onnxruntime
    >>> from skl2onnx import to_onnx
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> import aimsec_core
    >>> X, y = load_digits(return_X_y=True)
    >>> X = (X / 16).astype(np.float32)
    >>> model = LogisticRegression(max_iter=2000).fit(X, y)
    >>> onx = to_onnx(model, X[:1], options={id(model): {"zipmap": False}})
    >>> session = onnxruntime.InferenceSession(onx.SerializeToString(),
    ...                                        providers=["CPUExecutionProvider"])
    >>> guarded = aimsec_core.guard(session, name="digits-onnx",
    ...                             constraints={"min_value": 0, "max_value": 1})
    >>> isinstance(guarded, onnxruntime.InferenceSession)
    True
    >>> plain = session.run(["probabilities"], {"X": X[:5]})[0]
    >>> bool((guarded.run(["probabilities"], {"X": X[:5]})[0] == plain).all())
    True

``run``, ``run_with_ort_values`` and ``run_async`` are guarded: every declared input of the
feed is screened against the element type and shape the model declares (every tensor
element type numpy has, ``str`` for ``tensor(string)``; symbolic dimensions by name: only
dimensions sharing a symbol must agree), a missing or unknown input name is refused with
the name in the message, and so are unknown ``output_names``, in the same verdict and audit
record as the feed's findings. Each numpy array of the feed is run as the copy the core checked (values another
thread writes into the caller's array meanwhile never reach the session); a big-endian
array (which onnxruntime would read as raw little-endian bytes) as the native-order copy.
``run_with_iobinding``, ``run_with_ortvaluevector`` and ``io_binding`` take inputs the guard
cannot read, and the session's private attributes (``_sess``) reach the unguarded runtime,
so they raise :class:`UnguardedCallError`; ``aimsec_core.unguard(guarded)`` gives the
plain session for callers who bypass the guard on purpose. Everything else
(``get_inputs``, ``get_outputs``, ``get_modelmeta``, ``get_providers`` ...) is the
session's own.

Overridable initializers (``get_overridable_initializers``) may be fed as with the plain
session; they are model constants, not samples: their values pass through unscreened, but
one that is not an array of the element type and shape the model declares for it is
refused (``InputFormatError``), and so is a ``Gather`` table of another length than the
default the guard checks indices against.

A model exported with a fixed batch length (``torch.onnx.export`` without
``dynamic_axes``) declares it, and the core reads it as the model's batch size: calls must
have exactly that many samples, calibration data any number, and :meth:`OnnxAdapter.scores`
is handed batches of exactly that length.
"""

from __future__ import annotations

import sys
import warnings
from functools import cached_property
from typing import Any

from aimsec_core.adapter import Adapter, Capabilities, host_snapshot
from aimsec_core.errors import UnguardedCallError
from aimsec_core.guard import Guard
from aimsec_core.signature import InputSpec

from ._lookups import VALUE_PRESERVING, Lookup, gathered_tables, index_bounds, lookups

__all__ = ["OnnxAdapter", "UnguardedCallError"]

#: ONNX element types whose numpy dtype name differs from the ONNX one; ``str`` is the
#: core's name for text (numpy str arrays, object arrays of str).
_DTYPES = {"float": "float32", "double": "float64", "string": "str"}
_FLOAT_TYPES = frozenset({"tensor(float)", "tensor(double)", "tensor(float16)"})
#: Element types of an input whose values may reach a ``Gather``'s indices (it takes int64
#: and int32; the others through a ``Cast``).
_INDEX_TYPES = frozenset({"int64", "int32", "int16", "int8", "uint64", "uint32", "uint16",
                          "uint8"})


class OnnxAdapter(Adapter):
    framework = "onnx"
    requires = ("onnxruntime",)
    input_types = "a numpy array"
    # onnxruntime's run takes nested lists too, cast to the declared element type.
    capabilities = Capabilities(probabilities=True, signature=True, host_sequences=True,
                                several_inputs=True)
    closed_signature = True  # the feed holds the declared inputs and nothing else

    @classmethod
    def accepts(cls, model: Any) -> bool:
        ort = sys.modules.get("onnxruntime")
        return ort is not None and isinstance(model, ort.InferenceSession)

    def signature(self) -> list[InputSpec] | None:
        """Each declared input, with the element type onnxruntime insists on (hence
        ``strict_dtype``); an integer input that a ``Gather`` node reads as indices into a
        constant table (token ids into an embedding, directly or through nodes that only
        move values) declares that table's rows, from ``-rows`` (ONNX counts negative
        indices from the end): another index stops the session with onnxruntime's own
        ``INVALID_ARGUMENT`` error, so the core refuses it first (values a ``Cast`` would
        wrap into the table are refused too). An integer input a ``GatherND`` node reads
        as index tuples into a constant tensor (directly or through ``Identity``/``Cast``)
        declares ``index_bounds``: each tuple's ``j``-th component indexes the data's axis
        ``batch_dims + j``, and is checked against its length. Where the table (either
        node's data) is a graph input without a default, fed with each call, the ids are
        checked against the fed table's length along the axis they index, read from the
        call (``IndexBound.table``). Ids a ``Gather`` of constant indices or a ``Slice``
        of constant bounds picks out of a wider input on the way are checked at those
        positions only (``IndexBound.picks``). Tables are read from the
        model the session was opened from, where onnxruntime keeps it and ``onnx`` is
        installed; otherwise no input declares one."""
        specs = []
        for arg in self.model.get_inputs():
            dtype = onnx_dtype(arg.type)
            indices = dtype in _INDEX_TYPES
            rows = self._tables.get(arg.name) if indices else None
            specs.append(InputSpec(arg.name, dtype, onnx_shape(arg.shape), strict_dtype=True,
                                   index_rows=rows, negative_indices=rows is not None,
                                   index_bounds=self._bounds.get(arg.name, ()) if indices
                                   else ()))
        return specs

    def parameters_digest(self) -> str | None:
        """SHA-256 over the model the session was opened from (its bytes, or its file's);
        ``None`` where onnxruntime keeps neither."""
        import hashlib

        model = self.model.__dict__.get("_model_bytes") or self.model.__dict__.get(
            "_model_path")
        if isinstance(model, str):
            try:
                with open(model, "rb") as file:
                    model = file.read()
            except OSError:
                return None
        if not isinstance(model, bytes):
            return None
        return hashlib.sha256(model).hexdigest()[:32]

    def native(self, value: Any) -> Any | None:
        import numpy as np

        if isinstance(value, np.ndarray):
            if value.dtype.kind == "V" and not value.dtype.names:
                # ml_dtypes' bfloat16, float8...: onnxruntime cannot convert them
                raise TypeError(
                    f"onnxruntime converts no numpy {value.dtype.name} arrays (an ml_dtypes "
                    "type numpy lacks), so the guarded session cannot run this input")
            return value
        ort = sys.modules.get("onnxruntime")
        if ort is not None and isinstance(value, ort.OrtValue):
            if value.device_name().lower() != "cpu":
                raise TypeError(f"an OrtValue on {value.device_name()} cannot be screened "
                                "without a copy to the host; pass a CPU OrtValue or a numpy "
                                "array")
            return value.numpy()
        # The core would convert these, but onnxruntime refuses them: say so up front.
        if isinstance(value, tuple) or np.isscalar(value):
            raise TypeError(f"onnxruntime takes no {type(value).__name__}; expected a numpy "
                            "array (or a nested list), e.g. np.asarray(value, dtype=...)")
        return None

    def snapshot(self, value: Any, array: Any) -> Any | None:
        """A numpy array of the feed as a copy, which the session runs on (see
        ``Adapter.snapshot``); ``None`` for an ``OrtValue``, which it runs as given."""
        return host_snapshot(value, array)

    def scores(self, x: Any) -> Any:
        """The class probabilities of :attr:`probability_output` for ``x``: an array, or
        for a session of several inputs a list of one per input in declared order (the
        feed is built by name)."""
        import numpy as np

        inputs = self.model.get_inputs()
        given = x if isinstance(x, list) else [x]
        if len(inputs) != len(given):
            raise NotImplementedError(
                f"class scores need one array per input of {[arg.name for arg in inputs]}; "
                f"received {len(given)}")
        feed = {}
        for arg, value in zip(inputs, given):
            dtype = onnx_dtype(arg.type)
            # detectors may hand in float64 copies; onnxruntime is strict
            feed[arg.name] = value if dtype is None else np.asarray(value, dtype=dtype)
        scores = self.model.run([self.probability_output], feed)[0]
        ndim = getattr(scores, "ndim", 0)
        if ndim == 1 or (ndim == 2 and scores.shape[1] == 1):  # a binary classifier's column
            from aimsec_core.detection import binary_probabilities

            return binary_probabilities(scores, self.sigmoid_output)
        return scores

    @cached_property
    def sigmoid_output(self) -> bool:
        """Whether a Sigmoid node produces :attr:`probability_output` (a binary
        classifier's single column is then a probability, otherwise a logit), directly or
        through nodes that only move values (``Identity``, ``Reshape``, ``Flatten``,
        ``Squeeze``, ``Unsqueeze``, ``Cast``: what exporters put at a graph's end); read
        from the model the session was opened from, where onnxruntime keeps it and ``onnx``
        is installed. Where it cannot be read, a ``RuntimeWarning`` says the column is
        taken for a logit."""
        try:
            graph = self._graph()
        except Exception as exc:  # no onnx package, no model kept, or one onnx cannot parse
            warnings.warn(
                f"cannot read the ONNX graph ({type(exc).__name__}: {exc}) to tell whether "
                f"the single column of output {self.probability_output!r} is a sigmoid's "
                "probability; it is read as a logit. Install the onnx package and keep the "
                "model file (or open the session from its bytes)", RuntimeWarning,
                stacklevel=2)
            return False
        producers = {name: node for node in graph.node for name in node.output}
        name = self.probability_output
        for _ in range(len(graph.node)):
            node = producers.get(name)
            if node is None or not node.input:
                return False
            if node.op_type == "Sigmoid":
                return True
            if node.op_type not in VALUE_PRESERVING:
                return False
            name = node.input[0]
        return False

    @cached_property
    def _tables(self) -> dict[str, int]:
        """:func:`gathered_tables` of the session's graph, found once; none where the graph
        cannot be read."""
        return gathered_tables(self._lookups)

    @cached_property
    def _bounds(self) -> dict[str, tuple[Any, ...]]:
        """:func:`index_bounds` of the session's graph, found once."""
        return index_bounds(self._lookups)

    @cached_property
    def table_lengths(self) -> dict[str, dict[int, int]]:
        """Table name -> ``{axis: length}`` for each table of a fixed length that a
        ``Gather`` or ``GatherND`` node bounds an input's indices by (see :func:`lookups`):
        a caller feeding another value for one that is an overridable initializer must
        keep those lengths, or the bound checked would not be the one the session
        applies."""
        lengths: dict[str, dict[int, int]] = {}
        for lookup in self._lookups:
            if lookup.rows is not None:
                lengths.setdefault(lookup.table, {})[lookup.axis] = lookup.rows
        return lengths

    @cached_property
    def _lookups(self) -> list[Lookup]:
        try:
            return lookups(self._graph())
        except Exception:  # no onnx package, no model kept, or one onnx cannot parse
            return []

    def _graph(self) -> Any:
        """The ONNX graph the session was opened from (``onnx.GraphProto``, external data
        left unread); raises where onnxruntime kept no model, ``onnx`` is missing or cannot
        parse it."""
        model = self.model.__dict__.get("_model_bytes") or self.model.__dict__.get(
            "_model_path")
        import onnx

        return (onnx.load_model_from_string(model) if isinstance(model, bytes)
                else onnx.load(model, load_external_data=False)).graph

    @cached_property
    def probability_output(self) -> str:
        """The output holding class probabilities: one named ``probabilities`` (what
        skl2onnx exports with ``zipmap=False``), else the only 2-D float output, else the
        only 1-D one (a binary classifier's single column, shape ``(N,)``)."""
        outputs = self.model.get_outputs()
        for rank in (2, 1):
            matrices = [arg.name for arg in outputs
                        if arg.type in _FLOAT_TYPES and len(arg.shape) == rank]
            if "probabilities" in matrices:
                return "probabilities"
            if len(matrices) == 1:
                return matrices[0]
            if matrices:
                break
        raise NotImplementedError(
            f"cannot tell which output holds class probabilities among "
            f"{[(arg.name, arg.type, arg.shape) for arg in outputs]}; expected one named "
            "'probabilities' or a single 2-D float output (export scikit-learn classifiers "
            "with options={id(model): {'zipmap': False}}; name a torch model's class-score "
            "output 'probabilities' with torch.onnx.export(..., output_names=[...]))")

    def wrap(self, guard: Guard) -> Any:
        from ._session import GuardedSession

        return GuardedSession(guard)


def onnx_dtype(onnx_type: str) -> str | None:
    """The dtype name the core checks for an ONNX tensor type (``'tensor(float)'`` ->
    ``'float32'``, ``'tensor(string)'`` -> ``'str'``); element types numpy lacks keep their
    ONNX name (``'bfloat16'``), so a numpy array is refused for them by name. An optional
    tensor (``'optional(tensor(float))'``) is its tensor's; ``None`` for sequences and maps."""
    if onnx_type.startswith("optional(") and onnx_type.endswith(")"):
        onnx_type = onnx_type[len("optional("):-1]
    if not (onnx_type.startswith("tensor(") and onnx_type.endswith(")")):
        return None
    element = onnx_type[len("tensor("):-1]
    return _DTYPES.get(element, element)


def onnx_shape(dims: list[Any]) -> tuple[int | str | None, ...] | None:
    """Declared shape: fixed lengths as ``int``, symbolic dimensions (``dim_param``) by
    name, unnamed free ones as ``None``.

    onnxruntime reports an input of unknown rank as ``[]``, exactly as it reports a scalar
    (and it runs a scalar input fed an array of any rank), so an empty shape declares
    nothing: a 0-d array is fed as is and never counted as a batch."""
    if not dims:
        return None
    return tuple(d if isinstance(d, (int, str)) else None for d in dims)
