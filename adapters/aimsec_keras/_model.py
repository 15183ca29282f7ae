"""The guarded Keras model: a transparent proxy whose predict-like calls are screened.

The proxy reports the original model's class (as ``wrapt.ObjectProxy`` does), so
``isinstance(guarded, keras.Model)`` holds, and it reads and writes every attribute it does
not guard on the original. Data given as a ``tf.data.Dataset``, a generator, a
``keras.utils.PyDataset`` or a torch ``DataLoader`` is screened batch by batch as Keras
consumes it; each batch is then one screened call in the audit trail, and Keras is handed
the copies of its arrays that screening checked. A refused batch ends
the data there (Keras warns that the input ran out) and the refusal is raised once Keras
has stopped; the batches before it were predicted, the refused one never reaches the model.
Data that yields no batch at all is refused with ``EmptyInputError`` (one ``rejected``
audit line), as an empty array is.
"""

from __future__ import annotations

import contextvars
import inspect
import itertools
import sys
import types
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import keras
import numpy as np

from aimsec_core.errors import (SecurityViolation, UncopyableError, UnguardedAttributeError,
                                UnguardedCallError)
from aimsec_core.guard import Guard
from aimsec_core.guarded import GuardedMixin
from aimsec_core.validation import Refused, native_order, shown_name
from aimsec_core.verdict import Verdict
from aimsec_core.arrays import masks_as_bytes
from aimsec_core.call_arguments import (ArgumentsError, Binder, Rule, argument_findings,
                                        arguments_error, batch_layout_error, first_leaf,
                                        first_non_tensor, flag, no_batches_error,
                                        positive_int, replaced_in, sequence_of, tensors_in,
                                        unfit_finding)

from . import KERAS_BATCH_SIZE
from ._gradients import Forward, OwnOutput

_OWN = frozenset({"_aimsec_guard"})
#: Attributes of a Keras model that run it on inputs the guard never sees -> what they are.
UNGUARDED = {
    "call": "the layer's forward computation, called directly",
    "forward": "the torch backend's forward computation, called directly",
    "predict_step": "one step of predict, on a batch it is handed",
    "test_step": "one step of evaluate, on a batch it is handed",
    "make_predict_function": "the builder of predict's compiled step",
    "make_test_function": "the builder of evaluate's compiled step",
    "predict_function": "predict's compiled step",
    "test_function": "evaluate's compiled step",
    "export": "an export of the model as an unguarded artifact",
    "stateless_call": "a forward pass on variable values it is handed",
}


class GuardedModel(GuardedMixin):
    """A Keras model whose ``predict``, ``predict_on_batch``, ``evaluate``,
    ``test_on_batch`` and ``__call__`` go through the guard; everything else is the
    original model's. ``last_verdict``, ``calibrate`` and ``save_calibration`` come with
    every guarded object.

    Keras runs on the copies the guard checked of the arrays and torch tensors in the
    data and in a call's other arguments (see ``KerasAdapter.snapshot``), never on the
    caller's objects, which another thread may still write into.

    Their arguments besides the data (``batch_size``, ``verbose``, ``steps``,
    ``callbacks``, ``return_dict``, ``training``) are checked against Keras' documented
    values (:data:`RULES`) and arguments that do not fit the method are refused too:
    ``InputFormatError`` naming the argument, before the model runs."""

    __slots__ = ("_aimsec_guard",)

    def __init__(self, guard: Guard) -> None:
        object.__setattr__(self, "_aimsec_guard", guard)

    @property  # type: ignore[override]
    def __aimsec_guard__(self) -> Guard:
        return self._aimsec_guard

    # --- guarded calls -----------------------------------------------------------------
    def predict(self, *args: Any, **kwargs: Any) -> Any:
        return self._screened("predict", args, kwargs)

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        return self._screened("evaluate", args, kwargs)

    def test_on_batch(self, *args: Any, **kwargs: Any) -> Any:
        """``evaluate`` on one batch (its loss and metrics answer the caller): screened."""
        return self._screened("test_on_batch", args, kwargs)

    def predict_on_batch(self, *args: Any, **kwargs: Any) -> Any:
        guard = self._aimsec_guard
        method = guard.model.predict_on_batch
        signature = inspect.signature(method)
        bound, findings = _bound("predict_on_batch", method, signature, args, kwargs)
        if bound is None:  # predict_on_batch(x, 2), (x=..., y=...): nothing fits
            raise guard.refuse(arguments_error(findings)) from None
        x = _native(bound.arguments.get(next(iter(signature.parameters))))
        inputs = guard.adapter.inputs_of(x)
        run = OwnOutput(lambda rebuilt: method(_checked(x, inputs, rebuilt)))
        return guard.call(inputs, run, run, rebuilt=True)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        guard = self._aimsec_guard
        model = guard.model
        # a variable beside the input is read once, now, as the input is (see _native)
        args = [args[0], *map(_value_of, args[1:])] if args else []  # type: ignore[assignment]
        kwargs = {k: v if k == "training" else _value_of(v) for k, v in kwargs.items()}
        given: dict[str, Any] = {}  # each array the call holds, by its screened name

        def others(rebuilt: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
            """The call's arguments with the copies the core checked in the caller's
            places (x too, where it holds one)."""
            return (_checked(tuple(args), given, rebuilt),
                    _checked(kwargs, given, rebuilt))

        if args:
            x = args[0] = _native(args[0])

            def run_on(t: Any, rebuilt: Mapping[str, Any]) -> Any:
                a, k = others(rebuilt)
                return model(t, *a[1:], **k)
        else:  # by keyword: Keras binds it to ``call``'s first argument, whatever its name
            name = _input_argument(model)
            if name not in kwargs:  # model(pixels=x): Keras' "missing a required argument"
                passed = [shown_name(key) for key in itertools.islice(kwargs, 10)]
                raise guard.refuse(arguments_error((unfit_finding(
                    "call", f"no input; expected it first or as {name}=...; received "
                    + (f"the keyword(s) {passed}" if passed else "no argument")),))) from None
            x = kwargs[name] = _native(kwargs[name])

            def run_on(t: Any, rebuilt: Mapping[str, Any]) -> Any:
                return model(**{**others(rebuilt)[1], name: t})
        forward = Forward(run_on, source=x if keras.ops.is_tensor(x) else None)
        if _symbolic(x):
            raise _as_is(UnguardedCallError(
                "the guarded model was called on symbolic tensors (building a larger model "
                "around it, tf.function, export): the guard cannot screen inputs that do "
                "not exist yet, and would not be in the traced graph. Build on "
                "aimsec_core.unguard(guarded) and guard the resulting model instead"))
        refusals = _call_findings(model, args, kwargs)
        # Calling the model is eager: the gradient's forward pass computes exactly what
        # the plain call does, so the two share it. Not with ``training=True`` (dropout,
        # batch statistics): that is another function than the one the detectors were
        # calibrated on, so they take their own ``training=False`` pass beside it. A
        # refused flag is never read (its truth value may raise).
        if refusals or kwargs.get("training"):
            forward = None
        inputs = guard.adapter.inputs_of(x)
        given.update(inputs)
        if any(not isinstance(value, _PLAIN) for value in (*args[1:], *kwargs.values())
               if value is not x):  # arrays beside the input (training=False is not one)
            inputs, beside = _with_other_arguments(inputs, model, args, kwargs)
            given.update(beside)

        def predict(rebuilt: Mapping[str, Any]) -> Any:
            a, k = others(rebuilt)
            return model(*a, **k)
        return guard.call(inputs, predict, forward, rebuilt=True, refusals=refusals)

    def _screened(self, method_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        guard = self._aimsec_guard
        method = getattr(guard.model, method_name)
        signature = inspect.signature(method)
        first = next(iter(signature.parameters))  # x, whatever an override calls it
        bound, findings = _bound(method_name, method, signature, args, kwargs)
        x = bound.arguments.get(first) if bound is not None else None
        pipeline = _pipeline(x)
        if bound is None or (findings and pipeline is not None):
            # nothing to screen the arguments with: refused before any input is read
            raise guard.refuse(arguments_error(findings)) from None
        if pipeline is None:
            if first in bound.arguments:
                x = bound.arguments[first] = _native(x)
            if not findings and bound.arguments.get("steps") is not None:
                # Keras reads the first steps * batch_size samples: so does the screening
                # (the detectors compare the samples with the outputs, one per sample);
                # without findings, the rules have made both positive integers
                read = int(bound.arguments["steps"]) * int(
                    bound.arguments.get("batch_size") or KERAS_BATCH_SIZE)
                for name in (first, "y", "sample_weight"):
                    if name in bound.arguments:
                        bound.arguments[name] = _first_samples(bound.arguments[name], read)
                x = bound.arguments.get(first)
            # predict's own output is returned as it is; gradient detectors take their
            # pass beside it (evaluate returns no predictions to reuse)
            size = bound.arguments.get("batch_size")
            inputs = guard.adapter.inputs_of(x)

            def checked(rebuilt: Mapping[str, Any]) -> Any:
                if first in bound.arguments:  # the copies the core checked, in x's places
                    bound.arguments[first] = _checked(x, inputs, rebuilt)
                return method(*bound.args, **bound.kwargs)
            run = OwnOutput(checked, batch_size=int(size) if not findings and size else None)
            return guard.call(inputs, run, run if method_name == "predict" else None,
                              rebuilt=True, refusals=findings)
        batches, length = pipeline
        if length == 0:  # known before reading: refused as an empty array is
            _close(x, batches)
            raise guard.refuse(no_batches_error(_kind_of(x))) from None
        steps = bound.arguments.get("steps")
        if steps is not None:  # a positive integer: the rules refused anything else
            steps = bound.arguments["steps"] = int(steps)
            # Keras reads no more than that, but TensorFlow's reader of a generator reads
            # ahead: a batch past the last step would be screened (and could be refused)
            # though the model never reads it.
            batches = itertools.islice(batches, steps)
        elif length is not None and "steps" in signature.parameters and steps is None:
            # A generator has no length: give Keras the pipeline's, as it would have read it.
            bound.arguments["steps"] = length

        def run(data: Any) -> Any:
            bound.arguments[first] = data
            return method(*bound.args, **bound.kwargs)

        try:
            return _consume_screened(guard, batches, run, _kind_of(x))
        finally:
            _close(x, pipeline[0])

    # --- everything else is the original model's ------------------------------------------
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._aimsec_guard.model)

    def __getattr__(self, name: str) -> Any:
        if name in _OWN:  # not set yet (mid-construction): never recurse into ourselves
            raise AttributeError(name)
        if name in UNGUARDED:
            raise _as_is(UnguardedAttributeError(
                f"{name} runs the model without the guard (it is {UNGUARDED[name]}); the "
                "guarded model refuses it. Use predict, predict_on_batch, evaluate, "
                "test_on_batch or call "
                "the guarded model, or use aimsec_core.unguard(guarded) to bypass the guard "
                "knowingly"))
        return getattr(self._aimsec_guard.model, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWN:
            raise AttributeError(f"{name} of a guarded model is read-only")
        setattr(self._aimsec_guard.model, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._aimsec_guard.model, name)

    def __dir__(self) -> list[str]:
        own = {name for name in dir(GuardedModel) if not name.startswith("_")}
        return sorted({*dir(self._aimsec_guard.model), *own, "__aimsec_guard__"})

    def __repr__(self) -> str:
        return f"<guarded {self._aimsec_guard.model!r}>"

    def __str__(self) -> str:
        return str(self._aimsec_guard.model)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # copy.copy, copy.deepcopy and pickle all come here. A copy sharing the Keras model
        # would be no copy, and a Keras model is only partly copyable (clone_model rebuilds
        # layers, not the compiled loss, optimizer or a subclassed model's code): refused,
        # with the way to make a guarded twin on purpose.
        raise UncopyableError(
            "a guarded Keras model cannot be pickled or copied (a copy would share the "
            "model or lose its compile state). Save the original "
            "(aimsec_core.unguard(guarded).save(path)) and guard it again on load, or "
            "clone it: twin = keras.models.clone_model(model); "
            "twin.set_weights(model.get_weights()); compile it as needed; then "
            "aimsec_core.guard(twin, calibration=aimsec_core.guard_of(guarded).calibration, "
            "...) with the same settings")


_FLAG = flag()
_INT64_MAX = 2 ** 63 - 1  # Keras' batch size is a 64-bit shape: larger ones overflow
#: What the arguments of the guarded methods that are not data must be (Keras' documented
#: values); a call breaking one is refused before the model runs.
_LOOP_OPTIONS = {"batch_size": positive_int(at_most=_INT64_MAX), "steps": positive_int(),
           # Keras reads any integer (above 1: one line per epoch) and None as quiet
           "verbose": Rule("'auto', an integer or None", lambda v: v is None or isinstance(
                           v, (int, np.integer)) or isinstance(v, str) and v == "auto"),
           # Keras flattens callbacks: a bare Callback and nested lists run too
           "callbacks": sequence_of(keras.callbacks.Callback,
                                    "a list of keras.callbacks.Callback",
                                    also=(keras.callbacks.CallbackList,), nested=True),
           # read by its truth value, as training is: 0, 1 and None too
           "return_dict": _FLAG}
RULES: dict[str, dict[str, Rule]] = {
    "predict": _LOOP_OPTIONS, "evaluate": _LOOP_OPTIONS, "test_on_batch": _LOOP_OPTIONS,
    "call": {"training": Rule(
        f"{_FLAG.expected} or a boolean scalar tensor",
        lambda v: _FLAG.accepts(v) or (
            keras.ops.is_tensor(v) and tuple(v.shape) == ()
            and keras.backend.standardize_dtype(v.dtype) == "bool"))},
}


def _bound(method_name: str, method: Any, signature: inspect.Signature,
           args: tuple[Any, ...], kwargs: dict[str, Any]
           ) -> tuple[inspect.BoundArguments | None, tuple[Any, ...]]:
    """The call bound to ``method``'s signature and the findings refusing its arguments
    (:data:`RULES`); ``None`` where the arguments do not fit the signature. Keras' own
    ``evaluate`` takes ``**kwargs`` only to refuse what it does not know: so does this."""
    try:
        bound = signature.bind_partial(*args, **kwargs)
    except TypeError as exc:
        return None, (unfit_finding(method_name, str(exc)),)
    values = dict(bound.arguments)
    for name, parameter in signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD and name in values:
            extra = values.pop(name)  # an override's **kwargs: checked by name too
            if extra and getattr(method, "__module__", "").startswith("keras."):
                unknown = [shown_name(key) for key in itertools.islice(extra, 10)]
                return bound, (unfit_finding(
                    method_name, f"unknown keyword argument(s) {unknown}; expected those "
                    f"of {method_name}{signature}"),)
            values.update(extra)
    return bound, argument_findings(method_name, values, RULES.get(method_name, {}))


def _call_findings(model: Any, args: list[Any], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """The findings refusing a call of the model for its arguments: a ``training`` that
    is not a bool (:data:`RULES`), and arguments that do not fit ``call``, bound as Keras
    binds them (a call-context argument such as ``training`` that ``call`` does not
    take is dropped, not refused)."""
    findings = argument_findings("call", {"training": kwargs["training"]},
                                 RULES["call"]) if "training" in kwargs else ()
    if len(args) > 1 and not getattr(model, "_allow_non_tensor_positional_args", False):
        # Keras takes only tensors (arrays, None) by position after the input
        odd = first_non_tensor(args[1:], _positional_tensor(model))
        if odd is not None:
            findings += (unfit_finding(
                "call", f"a value of type {type(odd).__name__} was passed by position; "
                "expected only tensors by position after the input (pass other values by "
                "keyword, training=False)"),)
    signature = _binder(model).signature
    if signature is None or (len(args) <= 1 and not kwargs):
        return findings
    context = getattr(model, "_call_context_args", ("training",))
    passed = {k: v for k, v in kwargs.items()
              if k in signature.parameters or k not in context}
    try:
        bound = signature.bind(*args, **passed)
    except TypeError as exc:
        findings += (unfit_finding("call", f"{exc}; expected call{signature}"),)
        return findings
    # Keras passes a training value it reads by keyword as well: one given by position
    # meets itself there ("got multiple values for argument 'training'")
    ordered = [p.name for p in signature.parameters.values()
               if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not findings and "training" in ordered[:len(args)] \
            and bound.arguments["training"] is not None:
        findings += (unfit_finding("call", "'training' was passed by position; expected "
                                   "it by keyword (training=False)"),)
    return findings


def _positional_tensor(model: Any) -> Callable[[Any], bool]:
    """What Keras takes by position after the input: a tensor of its backend (ragged and
    sparse ones too), a symbolic tensor, and, as the model converts its arguments (the
    default), anything with ``__array__`` (an array, a numpy scalar, a DataFrame)."""
    kinds = (*_array_types(), keras.KerasTensor)
    converts = getattr(model, "_convert_input_args", True)

    def is_tensor(value: Any) -> bool:
        return isinstance(value, kinds) or keras.ops.is_tensor(value) or (
            converts and hasattr(value, "__array__"))
    return is_tensor


def _with_other_arguments(inputs: dict[str, Any], model: Any, args: list[Any],
                          kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``inputs`` and every array or tensor in the call's other arguments (a subclassed
    model's ``call(x, bias)``, a ``mask``), named by ``call``'s parameter (``bias``,
    ``mask[0]``), as the torch adapter names a ``forward``'s; ``training`` and other
    plain values are not inputs. Arguments that do not fit ``call`` are named by position
    (``args[1]``) or keyword: Keras says what is wrong with them. Also the other
    arguments' arrays as the call holds them, by the same names (a boolean mask is
    screened as its bytes)."""
    binder = _binder(model)
    try:
        bound = binder.bind(tuple(args), kwargs)
    except ArgumentsError:
        bound = ([(f"args[{i}]", v, None) for i, v in enumerate(args)]
                 + [(k, v, None) for k, v in kwargs.items()])
    primary = bound and (bound[0][0] == binder.first_name or (args and bound[0][1] is args[0]))
    rest = bound[1:] if primary else bound
    kinds = _array_types()
    try:
        found, _ = tensors_in(rest, kinds)
    except ArgumentsError as exc:
        return {**inputs, "arguments": Refused(str(exc))}, {}
    merged = dict(inputs)
    for name, value in found.items():
        if isinstance(value, kinds):  # not tensors_in's stand-in for an array-less call
            merged[name if name not in merged else f"argument {name}"] = value
    beside = dict(itertools.islice(merged.items(), len(inputs), None))
    return masks_as_bytes(merged, keras.ops.convert_to_numpy, after=len(inputs)), beside


#: Argument values that are never arrays: a call passing only these besides its input
#: (``training=False``, ``mask=None``) skips binding its arguments.
_PLAIN = (bool, int, float, str, type(None))


def _binder(model: Any) -> Binder:
    """``model.call``'s signature, read once per ``call`` function."""
    call = model.call
    key = getattr(call, "__func__", call)
    cached = _BINDERS.get(type(model))
    if cached is None or cached[0] is not key:
        cached = _BINDERS[type(model)] = (key, Binder(call))
    return cached[1]


_BINDERS: weakref.WeakKeyDictionary[type, tuple[Any, Binder]] = weakref.WeakKeyDictionary()


def _array_types() -> tuple[type, ...]:
    """The array and tensor types a call's arguments may hold: numpy's, Keras' variables,
    and those of the backends loaded."""
    kinds: list[type] = [np.ndarray, keras.Variable]
    tf, torch, jax = (sys.modules.get(name) for name in ("tensorflow", "torch", "jax"))
    if tf is not None:
        kinds += [tf.Tensor, tf.Variable]
    if torch is not None:
        kinds.append(torch.Tensor)
    if jax is not None:
        kinds.append(jax.Array)
    return tuple(kinds)


def _checked(value: Any, given: Mapping[str, Any], rebuilt: Mapping[str, Any]) -> Any:
    """``value`` (the call's data, its ``args`` or ``kwargs``) with each array
    ``given[name]`` the core made a copy of (``rebuilt``: name -> the copy it checked)
    replaced by that copy as the model is handed it (:func:`_handed`), in its place:
    inside a list, tuple or dict that is rebuilt around it (the caller's is not changed)."""
    handed = {}
    for name, copy in rebuilt.items():
        if name in given:
            new = _handed(given[name], copy)
            if new is not given[name]:
                handed[name] = new
    return replaced_in(value, given, handed)


def _handed(value: Any, copy: Any) -> Any:
    """The copy the core checked of ``value`` as Keras is handed it in ``value``'s place:
    booleans again for a boolean mask (screened as its bytes), joined to a torch tensor's
    autograd graph where that one requires grad (``aimsec_torch.tensor_handed``).
    ``value`` itself where it is no numpy array, pandas object or torch tensor: a
    TensorFlow tensor (whose mask was read to numpy to be screened) cannot change."""
    if isinstance(value, np.ndarray):
        return copy.view(np.bool_) if value.dtype == np.bool_ and copy.dtype != np.bool_ \
            else copy
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        from aimsec_torch import tensor_handed

        return tensor_handed(value, copy)
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(value, (pandas.DataFrame, pandas.Series)):
        return copy
    return value


def _native(x: Any) -> Any:
    """``x`` with every numpy array stored in non-native byte order replaced by the
    native-order copy validation checks (the torch backend reads raw memory and refuses
    them; TensorFlow reads their values), every ``tf.Variable`` by its value read now (a
    tensor, which the variable's later assignments do not change; read on the caller's
    gradient tape, as Keras reads it), and a ``keras.Variable`` by its backend's variable
    so read (on torch, its tensor: copied when checked): an array, or a tuple (a named
    tuple too), list or dict of them."""
    if isinstance(x, (list, tuple)):
        converted = [_read(v) for v in x]
        if any(a is not b for a, b in zip(converted, x)):
            make = getattr(type(x), "_make", None)  # a named tuple
            return (make(converted) if isinstance(x, tuple) and make is not None
                    else type(x)(converted) if type(x) in (list, tuple) else x)
        return x
    if isinstance(x, dict):
        return {k: _read(v) for k, v in x.items()}
    return _read(x)


def _read(value: Any) -> Any:
    """One input as :func:`_native` hands it on."""
    return native_order(_value_of(value))


def _value_of(value: Any) -> Any:
    """A variable's value read now (see :func:`_native`); anything else as it is."""
    if isinstance(value, keras.Variable):  # its backend's variable (or tensor) under it
        value = value.value
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(value, tf.Variable):
        return tf.identity(value)
    return value


def _as_is(error: Exception) -> Exception:
    """``error``, marked so that TensorFlow's autograph (tracing a ``tf.function``)
    re-raises it as itself instead of wrapping it in a ``StagingError``."""
    error.ag_pass_through = True  # type: ignore[attr-defined]
    return error


def _symbolic(x: Any) -> bool:
    """Whether ``x`` holds symbolic tensors: Keras' own (functional models) or graph
    tensors of a ``tf.function`` being traced."""
    tf = sys.modules.get("tensorflow")

    def symbolic(leaf: Any) -> bool:
        return isinstance(leaf, keras.KerasTensor) or (
            tf is not None and isinstance(leaf, tf.Tensor) and not hasattr(leaf, "numpy"))

    # searched within the core's container bounds: a list holding itself, or one nested
    # past them, is no structure of tensors (validation refuses it), never a RecursionError
    return first_leaf(x, symbolic) is not None


def _pipeline(x: Any) -> tuple[Iterator[Any], int | None] | None:
    """The batches of ``x`` and their number, when ``x`` is a data pipeline; else ``None``."""
    if isinstance(x, types.GeneratorType):
        return x, None
    if isinstance(x, keras.utils.PyDataset):
        return _epoch_of(x), x.num_batches
    bases = [(base.__module__, base.__name__) for base in type(x).__mro__]
    if any(module.startswith("tensorflow.python.") and name == "DatasetV2"
           for module, name in bases):
        count = int(x.cardinality())  # negative: infinite or unknown
        return iter(x), count if count >= 0 else None
    if ("torch.utils.data.dataloader", "DataLoader") in bases:
        try:
            return iter(x), len(x)
        except TypeError:  # an IterableDataset without a length
            return iter(x), None
    return None


def _epoch_of(data: Any) -> Iterator[Any]:
    """The batches of a ``keras.utils.PyDataset``, read here in order (no workers: screening
    must see every batch the model sees), between its ``on_epoch_begin`` and
    ``on_epoch_end`` hooks, as Keras calls them around a ``predict`` or ``evaluate``."""
    count = data.num_batches
    data.on_epoch_begin()
    try:
        for i in range(count) if count is not None else itertools.count():
            yield data[i]
    finally:
        data.on_epoch_end()


def _input_argument(model: Any) -> str:
    """The name of the first argument of ``model.call`` (``inputs`` on Keras' own models),
    which a caller may pass by keyword."""
    try:
        parameter = next(iter(inspect.signature(model.call).parameters.values()))
    except (TypeError, ValueError, StopIteration):
        return "inputs"
    if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
        return "inputs"
    return parameter.name


def _close(x: Any, batches: Iterator[Any]) -> None:
    """End a ``keras.utils.PyDataset``'s epoch (its ``on_epoch_end``) with the call."""
    if isinstance(x, keras.utils.PyDataset):
        batches.close()  # type: ignore[attr-defined]


def _kind_of(x: Any) -> str:
    """A data pipeline's kind, as messages name it."""
    if isinstance(x, types.GeneratorType):
        return "generator"
    if isinstance(x, keras.utils.PyDataset):
        return "keras.utils.PyDataset"
    return "tf.data.Dataset" if type(x).__module__.startswith("tensorflow") else "DataLoader"


def _consume_screened(guard: Guard, batches: Iterator[Any], run: Callable[[Any], Any],
                      source: str) -> Any:
    """``run`` on a generator that screens each batch before Keras sees it.

    TensorFlow pulls generator batches on its own threads, in a fresh context: each batch
    is screened in a copy of the caller's context (client identity). A refused batch ends
    the data there and the refusal is raised here once Keras has stopped: an error raised
    inside TensorFlow's generator thread comes back wrapped, and its frames keep
    TensorFlow's generator state alive until exit, where collecting it can deadlock.
    Data that ends before its first batch (``source`` names its kind) is refused as
    empty, whatever Keras made of it (an error for a generator, an empty result for some
    datasets): the call still gets its one ``rejected`` line.
    """
    caller = contextvars.copy_context()
    refused: list[SecurityViolation] = []
    #: the latest batch's verdict (only the latest: a list of every batch's grew with the
    #: data, each with its flags per sample, until the call returned)
    seen: deque[Verdict | None] = deque(maxlen=1)

    def allowed(data: Any) -> Any:
        """``data`` with its inputs replaced by the copies screening checked, or
        ``None`` where the batch was refused."""
        x = data[0]  # already in native order
        inputs = guard.adapter.inputs_of(x)
        checked: dict[str, Any] = {}
        try:
            guard.call(inputs, checked.update, rebuilt=True)  # (the model runs later)
            return _checked(data, inputs, checked)
        except SecurityViolation as exc:
            refused.append(exc.with_traceback(None))
            return None
        finally:
            seen.append(guard.last_verdict)

    #: batches read from the source, and whether it ran out (not refused, not stopped)
    read = [0, False]

    def refuse(error: Any) -> None:
        """A batch Keras could not read: one ``rejected`` line, raised once Keras stops."""
        try:
            refused.append(guard.refuse(error).with_traceback(None))
        finally:
            seen.append(guard.last_verdict)

    def screened() -> Iterator[Any]:
        for data in batches:
            read[0] += 1
            layout = _batch_layout(data, tuples_only=source == "generator")
            if isinstance(layout, str):
                caller.copy().run(refuse, batch_layout_error(source, read[0], layout))
                return
            # Keras is handed the copies screening checked: the source's owner may still
            # write into the arrays it yielded
            data = caller.copy().run(allowed, tuple(map(_native, layout)))
            if data is None:
                return
            yield data
        read[1] = True

    try:
        output = run(screened())
    except Exception as exc:
        if not refused and not (read[1] and not read[0]):
            if not seen:  # nothing screened (the source raised first): its error line
                guard.failed_unread(exc)
            raise
        # Keras choked on data that ended before it began (the first batch refused).
    finally:
        if seen:  # screened in the reader threads' contexts: tell the caller's
            guard.remember(seen[-1])
    if refused:
        error = refused.pop()  # a traceback will hold this frame: no cycle through it
        raise error from None
    if read[1] and not read[0]:
        raise guard.refuse(no_batches_error(source)) from None
    return output


def _batch_layout(data: Any, tuples_only: bool) -> tuple[Any, ...] | str:
    """One batch of a data pipeline as the tuple Keras reads it, ``(x,)``, ``(x, y)`` or
    ``(x, y, sample_weight)``, or what is wrong with it, as a message says it. A
    ``PyDataset``, a ``tf.data.Dataset`` or a ``DataLoader`` may also yield a list (read as
    a tuple) or the inputs alone (an array, a dict); Keras refuses a generator's batch that
    is not a tuple."""
    if not isinstance(data, tuple):
        if tuples_only:
            return f"of type {type(data).__name__}, not a tuple"
        data = tuple(data) if isinstance(data, list) else (data,)
    if not 1 <= len(data) <= 3:
        return f"a tuple of {len(data)} values"
    return data


def _first_samples(data: Any, count: int) -> Any:
    """``data`` (an array or dense tensor, or a list, tuple or dict of them) cut to its
    first ``count`` samples, as Keras reads array data for a number of ``steps``; other
    values (a sparse tensor, ``None``) as they are."""
    tf, pandas = sys.modules.get("tensorflow"), sys.modules.get("pandas")

    def first(leaf: Any) -> Any:
        if pandas is not None and isinstance(leaf, (pandas.DataFrame, pandas.Series)):
            return leaf.iloc[:count] if len(leaf) > count else leaf
        ragged_or_sparse = tf is not None and isinstance(leaf, (tf.SparseTensor,
                                                                 tf.RaggedTensor))
        dense = isinstance(leaf, np.ndarray) or (keras.ops.is_tensor(leaf)
                                                 and not ragged_or_sparse)
        if dense and len(leaf.shape) and leaf.shape[0] is not None and leaf.shape[0] > count:
            return leaf[:count]
        return leaf

    return keras.tree.map_structure(first, data)
