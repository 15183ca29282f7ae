"""Keras 3 adapter: a guarded model is still a ``keras.Model`` to every ``isinstance`` check.

    >>> import keras
    >>> from sklearn.datasets import load_digits
    >>> import aimsec_core
    >>> X, y = load_digits(return_X_y=True)
    >>> X = (X / 16).astype("float32")
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((64,), name="pixels"),
    ...                           keras.layers.Dense(10, activation="softmax")])
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    >>> _ = model.fit(X, y, epochs=2, verbose=0)
    >>> guarded = aimsec_core.guard(model, name="digits-keras", sinks=[],
    ...                             constraints={"min_value": 0, "max_value": 1})
    >>> isinstance(guarded, keras.Model)
    True
    >>> bool((guarded.predict(X[:5], verbose=0) == model.predict(X[:5], verbose=0)).all())
    True
    >>> guarded.predict(X[:5, :63], verbose=0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    aimsec_core.errors.InputFormatError: digits-keras: input 'pixels' has shape (5, 63); ...

``predict``, ``predict_on_batch``, ``evaluate``, ``test_on_batch`` and calling the model are
guarded; a call screens every array in its arguments (``call(x, bias)``, ``mask=``) by
parameter name, and Keras runs on the copies of the arrays the checks read (the
caller's arrays may change meanwhile). Every other attribute (``fit``, ``layers``,
``save``, ``compile`` ...) is the original model's. A ``dtype="string"`` input takes text (object arrays of ``str``, or a
TensorFlow string tensor of UTF-8 bytes, screened as the text it holds).
Works on the TensorFlow and the torch backend (``KERAS_BACKEND``); input gradients for the
detectors use ``tf.GradientTape`` or ``torch.autograd`` and leave the model untouched.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from functools import cached_property
from itertools import islice
from typing import Any

from aimsec_core.adapter import Adapter, Capabilities, host_snapshot
from aimsec_core.guard import Guard
from aimsec_core.signature import InputSpec
from aimsec_core.validation import Refused, shown_name

__all__ = ["KerasAdapter"]

#: Name of the one input of a model that declares none (Keras' own argument name).
DEFAULT_INPUT = "x"
_GRADIENT_BACKENDS = ("tensorflow", "torch")
#: ``predict``'s batch size when the call gives none (Keras' documented default).
KERAS_BATCH_SIZE = 32
#: The fewest samples a gradient pass or a score pass takes at once: the call's batch size
#: when larger. Bounds the memory a guarded call adds (see ``bench_memory.py``).
GRADIENT_CHUNK = 256


class KerasAdapter(Adapter):
    framework = "keras"
    requires = ("keras",)
    input_types = "a numpy array or backend tensor"
    # Keras' predict refuses nested lists ("Unrecognized data type"), so neither do we.
    capabilities = Capabilities(gradients=True, probabilities=True, signature=True,
                                several_inputs=True)
    # A Sequential model's input tensor is named afresh on every build or load.
    stable_input_names = False

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        self._specs: list[InputSpec] | None = None
        # A Sequential model without an Input layer learns its input on its first call:
        # until then the guard asks again on every call (cheap: the answer is cached).
        self.static_signature = self.signature() is not None
        if _keras().backend.backend() not in _GRADIENT_BACKENDS:
            self.capabilities = Capabilities(probabilities=True, signature=True,
                                             several_inputs=True)

    @classmethod
    def accepts(cls, model: Any) -> bool:
        keras = sys.modules.get("keras")
        return keras is not None and isinstance(model, keras.Model)

    def signature(self) -> list[InputSpec] | None:
        if self._specs is None:
            try:
                tensors = list(self.model.inputs)
            except (AttributeError, ValueError):  # subclassed, or not built yet
                return None
            self._specs = [
                # Any batch size: predict cuts the data into batches itself. Keras casts
                # any real dtype to the declared one, hence not strict.
                InputSpec(name, "str" if str(t.dtype) == "string" else str(t.dtype),
                          (None, *tuple(t.shape)[1:]), strict_dtype=False,
                          index_rows=self._table_rows(t))
                for name, t in zip(self._input_names(tensors), tensors)]
        return self._specs

    def _table_rows(self, tensor: Any) -> int | None:
        """The rows of the smallest table an input is looked up in by an ``Embedding``
        reading it directly (token ids: another index fails in TensorFlow's gather,
        whatever other layers read the same input); ``None`` where none does, or where
        the graph cannot be read."""
        embedding = _keras().layers.Embedding
        rows = []
        try:
            for layer in self.model.layers:
                for node in getattr(layer, "_inbound_nodes", ()):
                    if isinstance(layer, embedding) and any(
                            t is tensor for t in node.input_tensors):
                        rows.append(int(layer.input_dim))
        except (AttributeError, TypeError, ValueError):  # another Keras' graph
            return None
        return min(rows) if rows else None

    def _input_names(self, tensors: list[Any]) -> list[str]:
        """The names Keras matches dict inputs by: the keys of a model built on a dict of
        inputs (flattened in sorted order, as ``model.inputs`` is), else the tensors' names."""
        try:
            struct = self.model.input
        except (AttributeError, ValueError):  # Sequential has no single ``input`` node
            struct = None
        if isinstance(struct, Mapping) and len(struct) == len(tensors):
            return [str(key) for key in sorted(struct)]
        return [t.name for t in tensors]

    def parameters_digest(self) -> str | None:
        """SHA-256 over the model's weights (trainable and not), in order: each one's dtype,
        shape and bytes. Weight names are left out: Keras numbers them afresh per build."""
        import hashlib

        import numpy as np

        digest = hashlib.sha256()
        for weight in self.model.get_weights():
            weight = np.ascontiguousarray(weight)
            digest.update(f"{weight.dtype.str}|{weight.shape}|".encode())
            digest.update(weight.tobytes())
        return digest.hexdigest()[:32]

    def inputs_of(self, x: Any) -> dict[str, Any]:
        """Name -> raw value for everything ``x`` feeds the model, the ways Keras reads it:
        one array, a list/tuple in input order, or a dict keyed by input name. A declared
        input the call leaves out, or a name the model lacks, is refused by name."""
        specs = self.signature()
        names = [s.name for s in specs] if specs else None
        if isinstance(x, Mapping):
            given = {str(k): v for k, v in x.items()}
            if names is None:
                return given
            held = [shown_name(key) for key in islice(given, 10)] + (
                ["..."] if len(given) > 10 else [])
            screened = {n: given[n] if n in given else Refused(
                f"missing from the call's dict (which holds {held}); expected every input "
                f"the model declares: {names}", check="missing", received=held)
                for n in names}
            unknown = next((k for k in given if k not in screened), None)
            if unknown is not None:
                screened[unknown] = Refused(f"no input of the model has this name; expected "
                                            f"one of {names}", check="unknown",
                                            received=shown_name(unknown))
            return screened
        by_name = self._by_name_only()
        if by_name is not None:
            return {by_name[0]: Refused(
                f"the model is built on a dict of inputs {by_name} (not in sorted order), "
                f"which Keras takes by name only; received a {type(x).__name__}. Pass a "
                "dict of one array per input name", received=type(x).__name__)}
        if isinstance(x, (list, tuple)):
            if names is None:
                if not x or not all(self._is_array(v) for v in x):
                    return {DEFAULT_INPUT: x}  # nested numbers: refused as one value
                names = [DEFAULT_INPUT] if len(x) == 1 else [f"x[{i}]" for i in range(len(x))]
            if len(names) > 1 or len(x) == 1:
                return self._in_order(list(x), names)
        if not names:
            return {DEFAULT_INPUT: x}
        return self._in_order([x], names)

    def _by_name_only(self) -> list[str] | None:
        """The keys of a model built on a dict of inputs whose keys are not in sorted
        order (Keras refuses a list, tuple or single array for it: it would not know which
        input each is), in the dict's order; ``None`` for another model."""
        try:
            struct = self.model.input
        except (AttributeError, ValueError):  # Sequential has no single ``input`` node
            return None
        if not isinstance(struct, Mapping):
            return None
        keys = [str(key) for key in struct]
        return keys if keys != sorted(keys) else None

    @staticmethod
    def _in_order(values: list[Any], names: list[str]) -> dict[str, Any]:
        """Positional inputs by name; too few or too many are refused, by name."""
        screened: dict[str, Any] = dict(zip(names, values))
        count = f"the call gives {len(values)} input{'s' if len(values) != 1 else ''}"
        for name in names[len(values):]:
            screened[name] = Refused(f"missing: {count}; expected {len(names)}, in this "
                                     f"order: {names}", check="missing", received=len(values))
        if len(values) > len(names):
            screened[f"input {len(names)}"] = Refused(
                f"{count}; the model takes {len(names)}: {names}", check="unknown",
                received=len(values))
        return screened

    def _is_array(self, value: Any) -> bool:
        try:
            return self.native(value) is not None
        except Exception:  # an array we refuse to read: screening says why, by name
            return True

    def declared_elements(self, value: Any) -> int | None:
        # a tf.SparseTensor is read made dense: one stored value may claim 10^12 places
        tf = sys.modules.get("tensorflow")
        if tf is not None and isinstance(value, tf.SparseTensor):
            return math.prod(int(d) for d in value.shape)
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(value, torch.Tensor):
            from aimsec_torch import tensor_elements

            return tensor_elements(value)
        return None

    def native(self, value: Any) -> Any | None:
        import numpy as np

        if isinstance(value, np.ndarray):
            if value.dtype.kind == "f" and value.dtype.itemsize > 8:
                raise TypeError(f"Keras takes no {value.dtype.name} (long double) arrays; "
                                "convert them first (x.astype('float64'))")
            return value
        keras = _keras()
        if isinstance(value, keras.KerasTensor):
            raise TypeError(_SYMBOLIC)
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(value, torch.Tensor):  # read as torch's adapter
            from aimsec_torch import tensor_input  # reads it (a sign bit resolved ...)

            return tensor_input(value)  # stays on its device; the core reads it there
        tf = sys.modules.get("tensorflow")
        if tf is not None and isinstance(value, tf.RaggedTensor):  # converting pads it
            raise TypeError("a tf.RaggedTensor is not supported: the guard would check a "
                            "zero-padded copy the model never reads; pad it first "
                            "(x.to_tensor())")
        if tf is not None and isinstance(value, (tf.Tensor, tf.Variable)):
            if not hasattr(value, "numpy"):  # a graph tensor inside tf.function
                raise TypeError(_SYMBOLIC)
            if value.dtype == tf.string:  # bytes elements: screened as the text they hold
                try:
                    return _decode(value.numpy())
                except UnicodeDecodeError as exc:
                    raise TypeError(f"a string tensor holding bytes that are not UTF-8 "
                                    f"text ({exc.reason})") from None
            return value.numpy()
        if isinstance(value, keras.Variable) or keras.ops.is_tensor(value):
            return keras.ops.convert_to_numpy(value)
        pandas = sys.modules.get("pandas")
        if pandas is not None and isinstance(value, (pandas.DataFrame, pandas.Series)):
            dtypes = value.dtypes if isinstance(value, pandas.DataFrame) else [value.dtype]
            if any(isinstance(d, pandas.SparseDtype) for d in dtypes):
                raise TypeError("pandas sparse columns are not supported, as Keras refuses "
                                "them; convert them first (x.sparse.to_dense())")
            return value.to_numpy()
        return None

    def snapshot(self, value: Any, array: Any) -> Any | None:
        """A copy of what the model would read from ``value`` (see ``Adapter.snapshot``),
        which the guarded model hands Keras in its place: of a numpy array (broadcast axes
        broadcast again; a subclass, ``np.memmap`` or a masked array, as the plain array
        it is read as), of a torch tensor on the torch backend (on its device), of the
        array a pandas object is read as. ``None`` for a TensorFlow or JAX tensor, which
        nothing can write once made (``numpy()`` reads a copy), and for the variables the
        guarded model reads once before screening (a ``tf.Variable`` as a tensor)."""
        import numpy as np

        copy = host_snapshot(value, array)
        if copy is not None:
            return copy
        pandas = sys.modules.get("pandas")
        if (pandas is not None and isinstance(value, (pandas.DataFrame, pandas.Series))
                and type(array) is np.ndarray):  # to_numpy() may be a view of the frame
            return host_snapshot(array, array)
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(value, torch.Tensor):
            from aimsec_torch import tensor_snapshot

            return tensor_snapshot(value, array)
        return None

    @cached_property
    def sigmoid_output(self) -> bool:
        """Whether a sigmoid produces the model's output (a binary classifier's single
        column is then a probability, otherwise a logit), found once."""
        from ._gradients import ends_in_sigmoid

        return ends_in_sigmoid(self.model)

    def model_input(self, x: Any) -> Any:
        """``x`` as the model takes it: a list of arrays, one per declared input in
        declared order (how the core hands a model of several inputs over), becomes the
        dict by input name a model built on a dict of inputs reads (Keras warns of a list
        there); anything else is kept as it is."""
        specs = self.signature()
        if isinstance(x, list) and specs and len(x) == len(specs):
            try:
                keyed = isinstance(self.model.input, Mapping)
            except (AttributeError, ValueError):
                keyed = False
            if keyed:
                return {spec.name: value for spec, value in zip(specs, x)}
        return x

    @staticmethod
    def as_given(x: Any, gradient: Any) -> Any:
        """``gradient`` (structured as :meth:`model_input` made ``x``) as ``x`` is: a list
        of arrays in declared order for a list ``x``."""
        if isinstance(x, list):
            return _keras().tree.flatten(gradient)
        return gradient

    def scores(self, x: Any) -> Any:
        """Class probabilities, computed ``GRADIENT_CHUNK`` samples at a time, from the
        model's first output where it has several (a list or dict of heads). ``x``: an
        array, or one per declared input (:meth:`model_input`)."""
        import numpy as np

        from ._gradients import batch_length, class_probabilities

        keras = _keras()
        x = self.model_input(x)
        total = batch_length(x)
        if total is None or total <= GRADIENT_CHUNK:
            parts = [x]
        else:
            parts = [keras.tree.map_structure(lambda v, i=i: v[i:i + GRADIENT_CHUNK], x)
                     for i in range(0, total, GRADIENT_CHUNK)]
        output = np.concatenate([
            keras.ops.convert_to_numpy(keras.tree.flatten(self.model(p, training=False))[0])
            for p in parts])
        return class_probabilities(output, self.sigmoid_output)[0]

    def input_gradient(self, x: Any, labels: Any) -> Any:
        """The gradient of the loss at ``labels`` for ``x``, structured as ``x`` (a list
        of arrays, one per declared input, for a list)."""
        from ._gradients import forward_backward

        return self.as_given(x, forward_backward(
            self.model, self.model_input(x), labels, chunk=GRADIENT_CHUNK,
            sigmoid=self.sigmoid_output)[2])

    def forward_with_gradient(self, call: Any, x: Any) -> tuple[Any, Any, Any]:
        """``call`` maps the input (backend tensors, watched) to the model's output tensor,
        and that one forward pass gives the output and the gradient; ``None`` means
        ``model(x, training=False)`` with the output as numpy. An :class:`OwnOutput` is
        the guarded call itself: its output is returned untouched, and the gradient comes
        from a pass of its own. The gradient is of the loss at the predicted label,
        structured as ``x`` (a list of arrays, one per declared input, for a list)."""
        import numpy as np

        from ._gradients import OwnOutput, class_probabilities, forward_backward

        own = OwnOutput.within(call)
        if own is not None:
            output = call()  # on the copies the core checked; so is the gradient's pass
            probabilities = class_probabilities(np.asarray(output), self.sigmoid_output)[0]
            labels = probabilities.argmax(axis=1)
            chunk = max(own.batch_size or KERAS_BATCH_SIZE, GRADIENT_CHUNK)
            return output, probabilities, self.as_given(x, forward_backward(
                self.model, self.model_input(x), labels, chunk=chunk,
                sigmoid=self.sigmoid_output)[2])
        output, probabilities, gradient = forward_backward(
            self.model, self.model_input(x), None, call, sigmoid=self.sigmoid_output)
        return output, probabilities, self.as_given(x, gradient)

    def wrap(self, guard: Guard) -> Any:
        from ._model import GuardedModel

        return GuardedModel(guard)

    # -- internal features for the detectors (see _features.py) ---------------------------
    from ._features import features  # noqa: E402
    capabilities = Capabilities(**{**capabilities.__dict__, "features": True})


_SYMBOLIC = ("a symbolic tensor carries no data to screen; a guarded model runs on concrete "
             "arrays. To build a larger model around it, use aimsec_core.unguard(guarded) "
             "and guard the result")


def _decode(array: Any) -> Any:
    """An object array of ``bytes`` as an object array of the ``str`` they encode in UTF-8."""
    import numpy as np

    return np.frompyfunc(lambda item: item.decode("utf-8"), 1, 1)(array).astype(object)


def _keras() -> Any:
    import keras  # already loaded: accepts() found a keras.Model

    return keras
