"""The guarded ``InferenceSession`` (imports numpy and onnxruntime, so loaded on demand)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from typing import Any, TypeVar

import numpy as np
import onnxruntime

from aimsec_core.adapter import LaterAnswer
from aimsec_core.call_arguments import (MAX_ITEMS, argument_findings, callable_value,
                                        instance_of)
from aimsec_core.errors import UnguardedAttributeError, UnguardedCallError
from aimsec_core.guard import Guard, allowed_rows, take_rows
from aimsec_core.guarded import GuardedMixin
from aimsec_core.validation import Refused, shown_name
from aimsec_core.verdict import Finding

from . import onnx_dtype, onnx_shape

T = TypeVar("T")
#: What the arguments of the guarded runs that are not the feed must be; a run breaking
#: one is refused before the session runs (``output_names`` has its own check).
RULES = {"run_options": instance_of(onnxruntime.RunOptions, "an onnxruntime.RunOptions"),
         "callback": callable_value()}


class GuardedSession(GuardedMixin):
    """Screens and records every run of an ``InferenceSession``; passes the rest through.

    ``isinstance(guarded, onnxruntime.InferenceSession)`` holds, so serving code that
    checks the type keeps working; ``type(guarded)`` still tells the two apart.
    """

    def __init__(self, guard: Guard) -> None:
        self.__aimsec_guard__ = guard
        self._session = session = guard.model
        # element type per declared input, for feeds given as nested lists
        self._inputs = {spec.name: spec.dtype for spec in guard.adapter.signature() or ()}
        # overridable initializers: model constants a feed may replace (name -> NodeArg)
        self._constants = {arg.name: arg for arg in session.get_overridable_initializers()}
        self._table_lengths = guard.adapter.table_lengths
        # optional(...) inputs the caller may leave out of the feed or give as None, as
        # onnxruntime allows
        self._optional = frozenset(arg.name for arg in session.get_inputs()
                                   if arg.type.startswith("optional("))
        self._outputs = [arg.name for arg in session.get_outputs()]
        self._output_set = frozenset(self._outputs)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # what isinstance() consults after type()
        return type(self._session)

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any],
            run_options: Any = None) -> list[Any]:
        """``InferenceSession.run``, screened."""
        return self._call(output_names, input_feed, lambda feed: self._session.run(
            output_names, feed, run_options), "run", {"run_options": run_options})

    def run_with_ort_values(self, output_names: Sequence[str] | None,
                            input_dict_ort_values: Mapping[str, Any],
                            run_options: Any = None) -> Any:
        """``InferenceSession.run_with_ort_values``, screened (CPU ``OrtValue`` inputs)."""
        return self._call(output_names, input_dict_ort_values,
                          lambda feed: self._allowed_rows(self._session.run_with_ort_values(
                              output_names, feed, run_options)), "run_with_ort_values",
                          {"run_options": run_options}, ort_values=True)

    def run_async(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any],
                  callback: Callable[..., Any], user_data: Any,
                  run_options: Any = None) -> None:
        """``InferenceSession.run_async``, screened before it is scheduled: a refused feed
        raises here and ``callback`` is never called. Where only some samples are refused
        (``on_flagged="samples"``), this raises the ``AdversarialInputError`` naming the
        allowed samples and ``callback`` receives the outputs of those samples only. The
        recorded latency covers the screening and the scheduling, not the inference."""
        def schedule(feed: Any) -> LaterAnswer:
            later = LaterAnswer()
            self._session.run_async(output_names, feed, self._answering(later, callback),
                                    user_data, run_options)
            return later

        self._call(output_names, input_feed, schedule, "run_async",  # onnxruntime's: None
                   {"callback": callback, "run_options": run_options})

    def _answering(self, later: LaterAnswer, callback: Callable[..., Any]
                   ) -> Callable[..., Any]:
        """``callback``, after handing the outputs to the guard (``later``); for a call
        refused for some samples only (the model then runs on the whole batch) handed the
        allowed samples' rows alone."""
        kept = self._refused_rows()

        def answered(outputs: Any, user_data: Any, error: Any) -> Any:
            if outputs is not None and not error:
                later.answer(outputs)
            if kept is not None and outputs is not None:
                outputs = _rows(outputs, *kept)
            return callback(outputs, user_data, error)

        return answered

    def _allowed_rows(self, outputs: list[Any]) -> list[Any]:
        """``outputs``, or for a call refused for some samples only their allowed rows
        (the rows ``allowed_output`` holds, as ``OrtValue`` where they were)."""
        kept = self._refused_rows()
        return outputs if kept is None else _rows(outputs, *kept)

    def _refused_rows(self) -> tuple[np.ndarray, int] | None:
        """While the model runs: ``None`` for a call the guard allows; for one it refuses
        for some samples only (``on_flagged="samples"``), the rows to keep and the batch
        size, from the verdict of the call being run."""
        verdict = self.__aimsec_guard__.last_verdict
        keep = None if verdict is None else allowed_rows(verdict)
        return None if keep is None else (keep, verdict.batch_size)  # type: ignore[union-attr]

    def run_with_iobinding(self, *args: Any, **kwargs: Any) -> Any:
        raise self._unguarded("run_with_iobinding")

    def run_with_ortvaluevector(self, *args: Any, **kwargs: Any) -> Any:
        raise self._unguarded("run_with_ortvaluevector")

    def io_binding(self) -> Any:
        raise self._unguarded("io_binding")

    def _call(self, output_names: Any, feed: Any, predict: Callable[[Any], T], method: str,
              arguments: Mapping[str, Any], *, ort_values: bool = False) -> T:
        """Screen ``feed``, ``output_names`` and ``method``'s other ``arguments`` (by
        :data:`RULES`), and run ``predict`` on the feed with the arrays the core rebuilt
        in place of the caller's (native byte order, lists as arrays), so onnxruntime
        reads exactly what was checked."""
        refusals = self._check_outputs(output_names) + argument_findings(
            method, arguments, RULES)

        def run(rebuilt: Mapping[str, Any]) -> T:
            return predict({**feed, **rebuilt} if rebuilt else feed)

        return self.__aimsec_guard__.call(self._screened(feed, ort_values), run,
                                          rebuilt=True, refusals=refusals)

    def _screened(self, feed: Any, ort_values: bool) -> dict[Any, Any]:
        """The feed as the core screens it: every declared input by name, a refusal in
        place of a missing one, then the first unknown name (the core reports the first
        refusal, and a feed built from client data may hold any number of keys)."""
        declared = list(self._inputs)
        if not isinstance(feed, Mapping):  # onnxruntime reads the feed through .keys()
            return {(declared or ["input_feed"])[0]: Refused(
                f"input_feed is a {type(feed).__name__}; expected a dict mapping input "
                f"names {declared} to arrays", received=type(feed).__name__)}
        screened: dict[Any, Any] = {}
        for name in self._inputs:
            if name in self._optional and (name not in feed or (
                    feed[name] is None and not ort_values)):
                continue  # run() reads None for an optional input as no value
            if name not in feed:
                held = [shown_name(key) for key in islice(feed, 10)] + (
                    ["..."] if len(feed) > 10 else [])
                screened[name] = Refused(
                    f"missing from input_feed (which holds {held}); expected every input "
                    f"the model declares: {declared}", check="missing", received=held)
            elif ort_values and not isinstance(feed[name], onnxruntime.OrtValue):
                screened[name] = Refused(
                    f"run_with_ort_values takes onnxruntime.OrtValue values; received a "
                    f"{type(feed[name]).__name__} (use run() for numpy arrays)",
                    received=type(feed[name]).__name__)
            else:
                screened[name] = feed[name]
        if len(feed) > len(screened):  # names beyond the declared inputs
            unknown = next((name for name in feed if name not in self._inputs
                            and name not in self._constants), None)
            if unknown is not None:
                screened[unknown] = Refused(
                    f"no input of the model has this name; expected one of {declared}",
                    check="unknown", received=shown_name(unknown))
            bad = next(((name, reason) for name in self._constants if name in feed
                        for reason in [self._constant_refusal(name, feed[name], ort_values)]
                        if reason), None)
            if bad is not None:
                screened[bad[0]] = Refused(bad[1], received=type(feed[bad[0]]).__name__)
        return screened

    def _constant_refusal(self, name: str, value: Any, ort_values: bool) -> str | None:
        """Why the session cannot take ``value`` for the overridable initializer ``name``
        (a model constant, not screened as samples): a value that is not an array (an
        ``OrtValue``, which ``run`` takes too, as the plain session does; only an
        ``OrtValue`` for ``run_with_ort_values``), of another element type or shape than
        the model declares for it, or a ``Gather`` table of another length than the one
        the guard bounds indices by; ``None`` where it may be fed."""
        arg = self._constants[name]
        if isinstance(value, onnxruntime.OrtValue):
            shape, dtype = tuple(value.shape()), onnx_dtype(value.data_type())
        elif isinstance(value, np.ndarray) and not ort_values:
            shape = value.shape
            dtype = "str" if value.dtype.kind in "UO" else value.dtype.name
        else:
            takes = ("an onnxruntime.OrtValue" if ort_values
                     else "a numpy array or an onnxruntime.OrtValue")
            return (f"overridable initializer {name!r} takes {takes}; received a "
                    f"{type(value).__name__}")
        wanted = onnx_dtype(arg.type)
        declared = onnx_shape(arg.shape)
        if wanted is not None and dtype != wanted:
            return (f"overridable initializer {name!r} has dtype {dtype}; expected {wanted}"
                    f" (the model's {arg.type})")
        if declared is not None and (len(shape) != len(declared) or any(
                isinstance(d, int) and d != n for d, n in zip(declared, shape))):
            return (f"overridable initializer {name!r} has shape {shape}; the model "
                    f"declares {tuple(declared)}")
        for axis, length in self._table_lengths.get(name, {}).items():
            if len(shape) <= axis:
                return (f"overridable initializer {name!r} is a table the guard checks "
                        f"indices against along axis {axis}; received an array of shape "
                        f"{shape}, which has no axis {axis}")
            if shape[axis] != length:
                return (f"overridable initializer {name!r} is a table of {length} along axis "
                        f"{axis} that the guard checks indices against; received one of "
                        f"{shape[axis]}. A table of another length would change which "
                        f"indices the session accepts: feed one of {length}, or guard a "
                        f"session of the model exported with that table")
        return None

    def _check_outputs(self, output_names: Any) -> tuple[Finding, ...]:
        """Findings that refuse the call for its ``output_names``: checked with the feed,
        so the verdict and the audit record hold both."""
        if output_names is None:
            return ()
        if isinstance(output_names, (str, bytes)) or not isinstance(output_names, Sequence):
            return (Finding(
                "format", f"output_names is a {type(output_names).__name__}; expected a list "
                f"of output names from {self._outputs}, or None for all of them",
                expected="list of output names", received=type(output_names).__name__,
                blocking=True),)
        try:  # every name, read once (a client-built list may be long, or unreadable)
            names = list(islice(output_names, MAX_ITEMS + 1))
        except Exception as exc:
            return (Finding(
                "format", f"output_names could not be read ({type(exc).__name__}); expected "
                f"a list of output names from {self._outputs}, or None for all of them",
                expected="list of output names", received=type(output_names).__name__,
                blocking=True),)
        if len(names) > MAX_ITEMS:
            return (Finding(
                "format", f"output_names holds more than {MAX_ITEMS} names; expected output "
                f"names from {self._outputs}", expected=f"at most {MAX_ITEMS} names",
                received=f"more than {MAX_ITEMS}", blocking=True),)
        # each name as the plain string it holds (a str subclass may override __eq__)
        unknown = [n for n in names if not isinstance(n, str)
                   or str.__str__(n) not in self._output_set][:10]
        if unknown:
            return (Finding(
                "format", f"unknown output name(s) {[shown_name(n) for n in unknown]}; the "
                f"model's outputs are {self._outputs}", expected=self._outputs,
                received=[shown_name(n) for n in unknown], blocking=True),)
        return ()

    def _unguarded(self, method: str) -> UnguardedCallError:
        return UnguardedCallError(
            f"{method} runs the model on inputs aimsec cannot screen, so the guarded session "
            "refuses it; use run() or run_with_ort_values(), or call it on "
            "aimsec_core.unguard(session) to bypass the guard knowingly")

    def __getattr__(self, name: str) -> Any:
        # Only reached for what this class lacks: the session's own API and attributes.
        session = self.__dict__.get("_session")
        if session is None:
            raise AttributeError(name)
        if name.startswith("_") and not name.startswith("__"):
            # _sess is the runtime itself: its run() would take any feed unscreened
            raise UnguardedAttributeError(
                f"{name} is a private attribute of the session, which reaches the "
                "unguarded runtime; the guarded session refuses it. Use "
                "aimsec_core.unguard(session) to bypass the guard knowingly")
        return getattr(session, name)

    def __dir__(self) -> list[str]:
        # object.__dir__ would list the session's class (see __class__), not this one.
        return sorted({*dir(type(self)), *self.__dict__, *dir(self._session)})

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Copies and pickles open a session of their own on the same model and keep the
        whole guard (see ``_copies``)."""
        from ._copies import portable, restore

        return (restore, (portable(self.__aimsec_guard__),))

    def __repr__(self) -> str:
        guard = self.__aimsec_guard__
        return f"<guarded {type(self._session).__name__} {guard.name!r} ({guard.mode})>"


def _rows(outputs: list[Any], keep: np.ndarray, batch_size: int) -> list[Any]:
    """The rows ``keep`` of each output with the batch as first axis (``take_rows``), an
    ``OrtValue`` tensor's as a new ``OrtValue``; other outputs whole."""
    return [onnxruntime.OrtValue.ortvalue_from_numpy(take_rows(value.numpy(), keep, batch_size))
            if isinstance(value, onnxruntime.OrtValue) and value.is_tensor()
            else take_rows(value, keep, batch_size) for value in outputs]
