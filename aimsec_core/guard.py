"""The one pipeline every guarded call goes through, whatever the framework.

``Guard.call`` validates the inputs, runs the calibrated detectors, decides, returns the
real model's output only when allowed, and hands the outcome to the sinks. Validation
findings stop a call before the model runs; detectors need the model's view of the input,
so a call they refuse has run it (with gradient analysis, that is the call's own forward
pass). Adapters build the framework-shaped object around it and pass in a ``predict``
callable that runs the original model on the call's arguments (with ``rebuilt``, each
input the core copied or converted replaced by the array it checked), so a valid call
returns exactly what the unguarded model returns.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import itertools
import json
import math
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from numbers import Integral
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import numpy as np

from .adapter import Adapter, LaterAnswer, read_single_column
from .arrays import STRUCTURED, ColumnBlocks, content_hash, dtype_kind, dtype_name, to_host
from .batches import batched, fixed_batch, free_batch
from .config import resolve_mode
from .context import (ContextSlot, current_client, current_request_id, current_tier,
                      new_request_id)
from .detection import DetectorSuite, Probe, select_detectors, softmax_if_needed
from .detection.calibration import (Calibration, calibrate, model_fingerprint,
                                    per_sample_rate)
from .detection.joined import JoinedInputs, join, model_passes
from .errors import (ERROR_FOR_CHECK, AdversarialInputError, CalibrationError,
                     ClientBlockedError, ConfigurationError, InvalidInputError,
                     RateLimitedError, SecurityViolation, UncopyableError, exception_text)
from .monitoring import Monitor, Policy, Store, Visit, build_monitor
from .signature import Constraints, InputSpec, merge_specs
from .sinks import CallRecord, Sink, Sinks, deliver
from .validation import Refused, Validated, shown_name, validate
from .verdict import Finding, Verdict

T = TypeVar("T")
#: What a detector finding refuses: the whole call, or only the flagged samples.
ON_FLAGGED = ("call", "samples")
_log = logging.getLogger("aimsec")
_NOT_YET = object()
_SPEC_CACHE_SIZE = 64


class Guard:
    """Screens and records every call to one model."""

    def __init__(self, model: Any, adapter: Adapter, *, name: str | None = None,
                 mode: str | None = None,
                 constraints: Constraints | Mapping[str, Any] | None = None,
                 sinks: list[Sink] | None = None,
                 calibration: Calibration | str | Path | None = None,
                 clock: Callable[[], float] = time.time, on_flagged: str = "call",
                 policy: Policy | Mapping[str, Any] | bool | None = None,
                 store: str | Store | None = None) -> None:
        self.model = model
        self.adapter = adapter
        if name is not None and not (isinstance(name, str) and name):
            raise ConfigurationError(f"name must be a non-empty string (or None for the "
                                     f"model's class name); received {type(name).__name__} "
                                     f"{name!r:.80}")
        self.name = name or type(model).__name__
        self.mode = resolve_mode(mode)
        self.constraints = Constraints.coerce(constraints)
        self.sinks = sinks if isinstance(sinks, Sinks) else (
            Sinks(sinks) if sinks is not None else _default_sinks())
        self.clock = clock
        if on_flagged not in ON_FLAGGED:
            raise ConfigurationError(f"on_flagged must be one of {ON_FLAGGED}; received "
                                     f"{on_flagged!r}")
        self.on_flagged = on_flagged
        #: per-client monitoring (``None`` with ``policy=False``)
        self.monitor: Monitor | None = build_monitor(self.name, policy, store, clock)
        #: the store came from AIMSEC_STORE_URL: a pickle re-reads it where it is loaded
        #: instead of carrying the URL (and any password in it)
        self._store_from_environment = store is None
        self._advisory = self.monitor.advisory_checks if self.monitor else frozenset()
        #: the calibration (``None``: detection off) and the adapter reading the model's
        #: output its way, set together: a call captures both, so a calibration installed
        #: meanwhile (with another reading of a single output column) never changes how
        #: it is scored
        self._screening: tuple[Calibration | None, Adapter] = (None, adapter)
        self._calibration_id: tuple[Calibration | None, str | None] = (None, None)
        self._declared: list[InputSpec] | None = adapter.signature()
        self.constraints.check_input_names(
            self._declared if adapter.closed_signature else None, self.name)
        if adapter.static_signature:
            self.constraints.check_declared_shapes(self._declared, self.name)
        self._specs: dict[tuple[Any, ...], dict[str, InputSpec | None]] = {}
        #: this thread's or task's last verdict (a slot, not a variable of its own: a
        #: context keeps its variables after the guard is gone)
        self._last = ContextSlot()
        if calibration is not None:
            self.use_calibration(calibration)

    # -- state -------------------------------------------------------------------------

    @property
    def last_verdict(self) -> Verdict | None:
        """The verdict of the latest call made from this thread or asyncio task."""
        return self._last.get()

    def remember(self, verdict: Verdict | None) -> None:
        """Make ``verdict`` this context's ``last_verdict`` (for adapters that screen in
        another thread's context, such as a data pipeline's reader)."""
        self._last.set(verdict)

    def specs_for(self, names: tuple[str, ...]) -> dict[str, InputSpec | None]:
        declared = self._declared
        if not self.adapter.static_signature:
            declared = self.adapter.signature()
        key = (names, None if declared is None else tuple(declared))
        specs = self._specs.get(key)
        if specs is None:
            specs = merge_specs(declared, self.constraints, names)
            if len(self._specs) < _SPEC_CACHE_SIZE:  # names can come from clients: bounded
                self._specs[key] = specs
        return specs

    # -- calibration -------------------------------------------------------------------

    def calibrate(self, x_clean: Any, *, fpr: float = 0.05, detectors: list[Any] | None = None,
                  image_shape: tuple[int, int] | None = None, seed: int = 0,
                  reference: Any = None, batch_size: int | None = None) -> Calibration:
        """Fit the detectors on clean data and set one threshold for ``fpr``.

        Every sample of ``x_clean`` fits the detectors and sets the threshold, cross-fitted
        over five folds so that each is scored out of sample; the false-positive rate
        achieved on them is ``Calibration.achieved_fpr``. The detectors that learn from data
        also learn from ``reference``, if given. ``fpr`` is per sample; with ``batch_size``
        it is per call of that many samples (see ``per_sample_rate``).

        For a model of several inputs (declared, or ``Adapter.input_names``), ``x_clean``
        (and ``reference``) is a list (in their order) or a dict (by input name) of one
        array per input, as many samples in each (else :class:`CalibrationError`), where the
        adapter can run the model on them (``Capabilities.several_inputs``); the detectors
        read each sample as its inputs flattened and concatenated (``detection/joined.py``).
        """
        asked = (None if batch_size is None  # how the rate was put, for errors about it
                 else f"fpr={fpr} per call of batch_size={batch_size} samples")
        fpr = per_sample_rate(fpr, batch_size)
        if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
            raise ConfigurationError(f"seed must be a non-negative integer; received {seed!r}")
        seed = int(seed)  # a numpy integer too
        x, layout = self._clean_data(x_clean, "calibration data")
        extra = None
        if reference is not None:
            extra, extra_layout = self._clean_data(reference, "reference data")
            shapes = (tuple(x.shape[1:]),) if layout is None else layout.shapes
            given = (tuple(extra.shape[1:]),) if extra_layout is None else extra_layout.shapes
            if given != shapes:
                raise CalibrationError(
                    f"reference data must have samples shaped like the calibration data, "
                    f"{_shapes_text(shapes)}; received {_shapes_text(given)}")
        suite = DetectorSuite(select_detectors(
            detectors, self.adapter.capabilities, image_shape,
            integer_input=x.dtype.kind in "biu" if layout is None else layout.integer,
            joined=layout is not None))
        bounds = (self.constraints.min_value, self.constraints.max_value)
        value_range = bounds if None not in bounds else None
        try:
            self.calibration = calibrate(self.adapter, suite, x, fpr=fpr, model=self.name,
                                         seed=seed, value_range=value_range,
                                         reference=extra, asked=asked, layout=layout)
        except NotImplementedError as exc:  # what the adapter cannot give the detectors
            raise CalibrationError(f"the detectors cannot read this {self.adapter.framework} "
                                   f"model: {exc}") from exc
        return self.calibration

    @property
    def calibration(self) -> Calibration | None:
        """The calibration screening calls (``None``: detection is off)."""
        return self._screening[0]

    @property
    def scoring_adapter(self) -> Adapter:
        """The adapter detection reads the model's outputs through: :attr:`adapter`, or a
        copy of it reading a single output column as a probability where the calibration in
        use found a sigmoid the adapter cannot see."""
        return self._screening[1]

    @calibration.setter
    def calibration(self, calibration: Calibration | None) -> None:
        if calibration is not None and not isinstance(calibration, Calibration):
            raise CalibrationError(
                f"a guard's calibration is a Calibration (from calibrate() or "
                f"load_calibration()) or None; received {type(calibration).__name__}. To "
                f"use a calibration file, pass its path to use_calibration()")
        if calibration is not None:
            self._check_inputs(calibration)
        # read the model's output as it was calibrated; without a calibration, its own
        # way. A copy of the adapter: calls screened meanwhile keep their own reading
        reader = self.adapter
        if calibration is not None and calibration.sigmoid_output:
            reader = copy.copy(self.adapter)
            read_single_column(reader, True)
        self._screening = (calibration, reader)

    def _check_inputs(self, calibration: Calibration) -> None:
        """:class:`CalibrationError` where ``calibration`` was made on another number of
        inputs than this model declares: one made on a single input (forced onto the
        model, or set directly) would run a model of several on its first input alone
        (the framework's own error on every call), one made on several cannot read a
        model of one."""
        names = self._input_names()
        inputs = len(names) or 1
        calibrated = len(calibration.input_shapes) or 1
        if inputs != calibrated:
            made = (f"one input (samples of shape {tuple(calibration.sample_shape)})"
                    if calibrated == 1 else f"{calibrated} inputs "
                    f"{_shapes_text(calibration.input_shapes)}")
            model = f"declares {inputs} inputs {names}" if inputs > 1 else "takes one input"
            raise CalibrationError(
                f"the calibration was made on {made}; this model {model}, and the "
                "detectors read the inputs it was calibrated on: recalibrate on this "
                "model, or use it uncalibrated (every input is still validated)")
        if calibrated > 1 and not self.adapter.capabilities.several_inputs:
            raise CalibrationError(
                f"the calibration was made on {calibrated} inputs; the "
                f"{self.adapter.framework} adapter cannot run a model of several inputs for "
                "the detectors: use this model uncalibrated (every input is still "
                "validated)")

    def _input_names(self) -> list[str]:
        """The inputs every call of the model carries, in call order (the adapter's
        ``input_names``, else the declared inputs'); empty where it declares none."""
        named = self.adapter.input_names()
        if named is not None:
            return list(named)
        declared = self._declared if self.adapter.static_signature else (
            self.adapter.signature())
        return [spec.name for spec in declared or ()]

    def _clean_data(self, data: Any, what: str) -> tuple[np.ndarray, JoinedInputs | None]:
        """``data`` as a host array, refused unless it passes validation cleanly; for a
        model of several inputs, the joined rows of its arrays (one per input, a list in
        declared order or a dict by name, as many samples in each) and their layout
        (``None`` otherwise)."""
        names = self._input_names()
        if len(names) > 1:
            arrays = self._validated_clean(self._per_input(data, what, names), what)
            host = [np.asarray(to_host(arrays[name])) for name in names]
            unbatched = _unbatched(names, host)
            if unbatched:
                raise CalibrationError(f"{what} must hold as many samples in every input; "
                                       f"received {unbatched}")
            return join(host), JoinedInputs.of(host)
        name = names[0] if names else "input"
        try:
            checked = self._validated_clean({name: data}, what)[name]
        except CalibrationError as exc:
            unknown = (self.adapter.undeclared_inputs()
                       if isinstance(data, (list, tuple, Mapping)) else None)
            if unknown is None:
                raise
            raise CalibrationError(f"{what} is a {type(data).__name__} of {len(data)} (one "
                                   f"array per input?), read as one input: {unknown} "
                                   f"({exc})") from None
        return np.asarray(to_host(checked)), None

    def _per_input(self, data: Any, what: str, names: list[str]) -> dict[str, Any]:
        """``data`` for a model of the inputs ``names``: name -> one array each, from a
        list or tuple in that order or a dict by name; :class:`CalibrationError` for
        anything else, or where the adapter cannot run such a model for the detectors."""
        if not self.adapter.capabilities.several_inputs:
            given = (f"a {type(data).__name__} of {len(data)} (one per input?)"
                     if isinstance(data, (list, tuple, Mapping)) else
                     f"a {type(data).__name__}")
            raise CalibrationError(
                f"the detectors read one input of a {self.adapter.framework} model; this "
                f"one declares inputs {names}, and {what} is {given}. The "
                f"{self.adapter.framework} adapter cannot run a model of several inputs for "
                "the detectors: use it uncalibrated (every input is still validated), or "
                "guard a single-input model")
        expected = "expected a list (in this order) or a dict (by name) of one array per input"
        if isinstance(data, Mapping):
            if len(data) != len(names) or not all(name in data for name in names):
                held = [shown_name(key) for key in itertools.islice(data, 10)]
                raise CalibrationError(f"{what} for a model of inputs {names}: {expected}; "
                                       f"received a dict of {held}")
            return {name: data[name] for name in names}
        if isinstance(data, (list, tuple)) and len(data) == len(names):
            return dict(zip(names, data))
        received = (f"a {type(data).__name__} of {len(data)}"
                    if isinstance(data, (list, tuple)) else f"a {type(data).__name__}")
        raise CalibrationError(f"{what} for a model of inputs {names}: {expected}; "
                               f"received {received}")

    def _validated_clean(self, data: Mapping[str, Any], what: str) -> dict[str, Any]:
        """Each array of ``data`` (name -> raw value) as validation read it, refused
        unless it passes validation cleanly."""
        # any number of samples: a batch length the model fixes is its batch size, in
        # which the detectors run it (see batches.batched), not a length data must have
        specs = {key: free_batch(spec) for key, spec in self.specs_for(tuple(data)).items()}
        validated = validate({name: self.adapter.from_host(value)
                              for name, value in data.items()}, self.adapter, specs,
                             self.constraints)
        if validated.findings:
            raise CalibrationError(f"{what} must be clean and valid: "
                                   + "; ".join(f.message for f in validated.findings[:3]))
        return dict(validated.arrays)

    def use_calibration(self, calibration: Calibration | str | Path, *,
                        force: bool = False) -> None:
        """Turn detection on with ``calibration`` (an object or a file path).

        A calibration made for another model (its recorded fingerprint differs) is refused
        with :class:`CalibrationError`; ``force=True`` uses it anyway, with a warning.
        ``force`` must be a bool (:class:`ConfigurationError` otherwise: ``"false"``, a
        non-empty string, would have used it)."""
        if not isinstance(force, (bool, np.bool_)):
            raise ConfigurationError(f"force must be True or False; received {force!r:.80}")
        if not isinstance(calibration, Calibration):
            if not isinstance(calibration, (str, os.PathLike)):
                raise ConfigurationError(f"calibration must be a Calibration or the path of a "
                                         f"calibration file; received "
                                         f"{type(calibration).__name__}")
            calibration = Calibration.load(calibration)
        expected = calibration.model_fingerprint
        if expected is not None:
            actual = model_fingerprint(self.adapter)
            if actual != expected:
                message = (f"the calibration was made for another model (fingerprint "
                           f"{expected}, this {self.adapter.framework} model has {actual}: "
                           "its weights or declared inputs differ); recalibrate on this "
                           "model")
                if not force:
                    raise CalibrationError(message + ", or pass force=True to use it anyway")
                warnings.warn(message, RuntimeWarning, stacklevel=3)
        able = self.adapter.capabilities
        for detector in calibration.suite.detectors:
            # a forced or older file's detectors: every call would raise the adapter's error
            for needed, has, what in ((detector.needs_gradient, able.gradients, "gradients"),
                                      (detector.needs_features, able.features,
                                       "internal features")):
                if needed and not has:
                    raise CalibrationError(
                        f"the calibration uses detector {detector.name!r}, which needs "
                        f"{what}; the {self.adapter.framework} adapter has none")
        self.calibration = calibration

    # -- the pipeline ------------------------------------------------------------------

    def screen(self, inputs: Mapping[str, Any], refusals: Sequence[Finding] = (), *,
               calibration: Calibration | None | object = _NOT_YET
               ) -> tuple[Validated, Verdict]:
        """Validate ``inputs`` (name -> raw value) and build the verdict; call no model.
        ``refusals`` are blocking findings about the call's other arguments; the verdict
        names ``calibration`` (default: the one in use now), the one screening the call."""
        validated = validate(inputs, self.adapter, self.specs_for(tuple(inputs)), self.constraints)
        validated.findings.extend(refusals)
        if calibration is _NOT_YET:
            calibration = self.calibration
        return validated, self._verdict(validated, inputs,
                                        self._digest(calibration))  # type: ignore[arg-type]

    def call(self, inputs: Mapping[str, Any], predict: Callable[..., T],
             forward: Callable[..., T] | None = None, *, rebuilt: bool = False,
             refusals: Sequence[Finding] = ()) -> T:
        """Screen ``inputs``; if allowed, return the model's output; record either way.

        ``forward(x)`` runs the same call on a replacement input; adapters with autograd
        pass it so gradient analysis and the prediction share one forward pass.
        With ``rebuilt``, ``predict`` takes one argument: name -> array for each input the
        core rebuilt in place of the caller's object (the adapter's snapshot of an array
        the caller could still write to, a native-order copy of a big-endian array, the
        array a nested list becomes; see ``Validated.replaced``), which the adapter hands
        the model in place of the caller's objects, so the model reads exactly what was
        checked; ``forward`` then takes the same mapping as its keyword ``rebuilt`` (it is
        handed to the adapter as ``functools.partial(forward, rebuilt=...)``).
        ``refusals`` are blocking findings the adapter made about arguments that are not
        inputs (onnxruntime's ``output_names``): recorded with the input findings, in one
        verdict and one record.
        """
        start = time.perf_counter()
        visit = None
        if self.monitor is not None:  # admission: before the input is read
            visit = self.monitor.admit(current_client(), current_tier())
            if visit is not None and visit.findings and not self._allows(visit.findings):
                self._refuse_admission(visit, start)
        # one calibration screens the whole call, whatever another thread's calibrate,
        # use_calibration or refit sets meanwhile
        calibration, reader = self._screening
        try:
            validated, verdict = self.screen(inputs, refusals, calibration=calibration)
        except BaseException as exc:  # interrupted while reading: the call still gets its line
            self._unscreened(exc, visit, start)
        if visit is not None:
            verdict = self._query_checks(visit, validated, verdict)
        if rebuilt and forward is not None:
            forward = functools.partial(forward, rebuilt=_replacements(validated))
        output: Any = _NOT_YET
        try:
            if verdict.allowed and self._detecting(validated, calibration):
                output, verdict = self._detect(validated, verdict, forward, calibration,
                                               reader)
        except SecurityViolation:
            raise
        except BaseException as exc:  # KeyboardInterrupt too: the call still gets its line
            self._last.set(verdict)
            self._failed(exc, verdict, start, validated, visit)  # a detector broke
        self._last.set(verdict)
        if not verdict.allowed:
            error = _violation(verdict, self._advisory)
            if self._refuses_samples_only(verdict):
                if output is _NOT_YET:
                    output = self._run(predict, validated, rebuilt, verdict, start, visit)
                keep = allowed_rows(verdict)
                error.allowed = tuple(int(i) for i in np.flatnonzero(keep))
                error.allowed_output = (None if isinstance(output, LaterAnswer)  # callback's
                                        else take_rows(output, keep, verdict.batch_size))
                self._record(verdict, "partial", start, validated,
                             _message(verdict, self._advisory, False), visit)
                raise error
            # the line gets the reason without its detail (which may hold input values)
            self._record(verdict, "rejected", start, validated,
                         _message(verdict, self._advisory, False), visit)
            raise error
        if output is _NOT_YET:
            output = self._run(predict, validated, rebuilt, verdict, start, visit)
        if visit is not None:  # learning needs the model's answer: it judges later calls
            if isinstance(output, LaterAnswer):  # answered through a callback
                output.listen(lambda answer: self._learn(visit, answer))
            else:
                self._learn(visit, output)
        self._record(verdict, "allowed" if verdict.clean else "flagged", start, validated,
                     visit=visit)
        return output

    def _learn(self, visit: Visit, output: Any) -> None:
        """The monitor's learning from an admitted call's output, which must never cost
        the caller its prediction (nor an adapter's callback thread its callback)."""
        try:
            self.monitor.learn(visit, output, self.adapter.native)  # type: ignore[union-attr]
        except Exception:
            _log.exception("aimsec monitoring failed to learn from a call")

    def _run(self, predict: Callable[..., T], validated: Validated, rebuilt: bool,
             verdict: Verdict, start: float, visit: Any) -> T:
        """The model's output; when the model raises (or is interrupted), the call's
        ``error`` line is written first, then the error goes on: as it was for a clean
        call or an interruption, else as the violation the findings make (monitor mode let
        flagged input through and the model choked on it; or only some samples were to be
        refused), the model's own error as its cause."""
        try:
            return self._predict(predict, validated, rebuilt)
        except BaseException as exc:
            self._failed(exc, verdict, start, validated, visit)

    def _failed(self, exc: BaseException, verdict: Verdict, start: float,
                validated: Validated, visit: Any) -> NoReturn:
        """Write the call's ``error`` line for ``exc``, then raise: ``exc`` itself for a
        clean call or an interruption, else the violation the findings make, with ``exc``
        as its cause."""
        self._record(verdict, "error", start, validated, exception_text(exc),
                     visit)
        if verdict.clean or not isinstance(exc, Exception):
            raise exc
        raise _violation(verdict, self._advisory) from exc

    @staticmethod
    def _predict(predict: Callable[..., T], validated: Validated, rebuilt: bool) -> T:
        """Run the model: with ``rebuilt``, handing it the arrays the core rebuilt."""
        if rebuilt:
            return predict(_replacements(validated))
        return predict()

    def _refuses_samples_only(self, verdict: Verdict) -> bool:
        """With ``on_flagged="samples"``: the call is refused for its flagged samples only
        when every finding is a detector's about some samples and some samples are clean
        (validation findings always refuse the whole call: that input never reaches the
        model)."""
        return (self.on_flagged == "samples" and not all(verdict.flags)
                and all(f.check == "adversarial" and f.samples for f in verdict.findings))

    def _allows(self, findings: Any) -> bool:
        """Whether a call with ``findings`` goes ahead (monitor mode, or only advisory
        findings such as a ``fail_open`` store outage)."""
        return self.mode == "monitor" or all(f.check in self._advisory for f in findings)

    def _refuse_admission(self, visit: Visit, start: float) -> None:
        """Refuse a call at admission (quota, interval, lockout): the input is never read."""
        raise self._refused_unread(tuple(visit.findings), visit, start)

    def _unread(self, findings: tuple[Finding, ...], visit: Visit | None) -> Verdict:
        """The verdict of a call whose input was not (or not fully) read."""
        verdict = Verdict(allowed=False, mode=self.mode, model=self.name,
                          client=current_client(), batch_size=0, findings=findings,
                          timestamp=visit.now if visit is not None else self.clock(),
                          request_id=current_request_id() or new_request_id(),
                          calibration_id=self.calibration_id)
        self._last.set(verdict)
        return verdict

    def _refused_unread(self, findings: tuple[Finding, ...], visit: Visit | None,
                        start: float,
                        unknown: type[SecurityViolation] = AdversarialInputError
                        ) -> SecurityViolation:
        """Record a call refused before its input was read; the error to raise (of type
        ``unknown`` where the deciding check is none of aimsec's own)."""
        verdict = self._unread(findings, visit)
        error = _violation(verdict, self._advisory, unknown)
        self._record(verdict, "rejected", start, None, str(error), visit)
        return error

    def _unscreened(self, exc: BaseException, visit: Visit | None, start: float) -> NoReturn:
        """Write the ``error`` line of a call whose screening was interrupted (Ctrl-C, a
        signal's handler raising), then let ``exc`` go on: the model was not called."""
        self._record(self._unread((), visit), "error", start, None, exception_text(exc),
                     visit)
        raise exc

    def failed_unread(self, exc: BaseException) -> None:
        """Record the ``error`` line of a call that failed before any of its input reached
        the guard (a caller's data pipeline raising before its first batch): every call
        leaves one audit line, this one naming ``exc``. The model was not called; the
        client's quota is not charged (nothing was served)."""
        self._record(self._unread((), None), "error", time.perf_counter(), None,
                     exception_text(exc), None)

    def refuse(self, error: InvalidInputError) -> SecurityViolation:
        """Record a request that serving code refused before it could reach the model (a
        body too large to read, one that is not JSON): one ``rejected`` audit line naming
        ``error``'s check, counted for the calling client like any refused call (against
        its quota, and as a failed attempt where the check is one that counts). Returns
        the error to raise: ``error`` with the verdict attached, or the client's rate
        limit or lockout where admission refuses it first (``RateLimitedError``,
        ``ClientBlockedError``, which the middleware answers 429 / 403); in monitor mode
        admission refuses nothing, and ``error`` is returned with admission's findings
        recorded after it.

        An ``error`` that already carries a verdict (a guard raised it, and recorded it)
        is returned as it is: no second line, no second count.

        Raises :class:`ConfigurationError` when ``error`` is not an
        :class:`InvalidInputError` (the typed errors that say what was wrong)."""
        if not isinstance(error, InvalidInputError):
            raise ConfigurationError(
                f"refuse() records an InvalidInputError (what was wrong with a request); "
                f"received {type(error).__name__}")
        if error.verdict is not None:  # a guard's own refusal: recorded and counted once
            return error
        start = time.perf_counter()
        visit = None
        if self.monitor is not None:
            visit = self.monitor.admit(current_client(), current_tier())
        finding = Finding(error.check, str(error)[:500], expected=error.expected,
                          received=error.received)
        admission = tuple(visit.findings) if visit is not None else ()
        # a check of the caller's own (a third-party InvalidInputError) keeps its class
        if self._allows(admission):  # monitor mode, or advisory only: the request's own
            return self._refused_unread((finding, *admission), visit, start,  # error
                                        type(error))
        return self._refused_unread((*admission, finding), visit, start, type(error))

    def _query_checks(self, visit: Visit, validated: Validated, verdict: Verdict) -> Verdict:
        """Admission findings (monitor mode) and the repeat / near-duplicate / suspicion
        checks, on input that passed validation."""
        assert self.monitor is not None
        checked: list[Finding] = []
        if not validated.findings and verdict.input_hash:
            checked = self.monitor.check(visit, validated.views.values(),
                                         validated.batch_size, verdict.input_hash)
        # read after the checks: a store that fails during them adds its outage finding
        if not visit.findings and not checked:
            return verdict
        found = list(visit.findings) + checked
        findings = verdict.findings + tuple(found)
        flags = list(verdict.flags)
        for finding in found:
            for i in finding.samples:
                if i < len(flags):
                    flags[i] = True
        return dataclasses.replace(
            verdict, findings=findings, flags=tuple(flags),
            allowed=not validated.blocked and self._allows(findings))

    def _detecting(self, validated: Validated, calibration: Calibration | None) -> bool:
        # NaN/Inf would only break the detectors' own passes; the finding already stands.
        # Detectors read the first (primary) input, other inputs validated only; or, where
        # calibrated on a model of several declared inputs, those inputs joined.
        return (calibration is not None and len(validated.arrays) >= 1
                and not validated.oversized
                and not any(f.check == "finite" for f in validated.findings))

    def _detect(self, validated: Validated, verdict: Verdict,
                forward: Callable[[Any], Any] | None,
                calibration: Calibration, reader: Adapter) -> tuple[Any, Verdict]:
        """Run the calibrated detectors; returns the model output when it came for free.
        The verdict names ``calibration``, the one that screened it; ``reader`` is the
        adapter reading the model's output as ``calibration`` says."""
        named = self._digest(calibration)
        suite = calibration.suite
        read = self._detector_input(validated, calibration)
        if isinstance(read, Finding):
            return _NOT_YET, dataclasses.replace(verdict, allowed=False, calibration_id=named,
                                                 findings=verdict.findings + (read,))
        if read is None:  # an input is missing: its finding stands (monitor mode)
            return _NOT_YET, dataclasses.replace(verdict, calibration_id=named)
        native, x, layout = read
        output, probabilities, gradient, features = _NOT_YET, None, None, None
        # the detectors' passes (transformed copies, their own batch sizes) in batches the
        # model takes: of its fixed batch where it declares one, else whole
        batch = fixed_batch(self._declared if self.adapter.static_signature
                            else reader.signature())
        scores_of, gradient_of, features_of = model_passes(reader, layout)
        ask = batched(scores_of, batch)
        if suite.needs_gradient and forward is not None:
            output, probabilities, gradient = reader.forward_with_gradient(forward, native)
            probabilities = softmax_if_needed(probabilities)
            if layout is not None:  # one gradient per input: joined as the inputs are
                gradient = join(gradient)
        elif suite.needs_gradient:
            probabilities = softmax_if_needed(ask(x))
            gradient = batched(gradient_of, batch)(x, probabilities.argmax(axis=1))
        elif suite.needs_features and forward is not None:
            try:  # the real call, with the features captured on the way
                output, probabilities, features = reader.forward_with_features(
                    forward, native)
                probabilities = softmax_if_needed(probabilities)
            except NotImplementedError:
                pass
        probe = Probe(x, probabilities, ask,
                      None if gradient is None else np.asarray(to_host(gradient)),
                      given_features=features, ask_features=batched(features_of, batch))
        scored = suite.score(probe)
        flags = (scored.flags | np.asarray(verdict.flags, dtype=bool) if any(verdict.flags)
                 else scored.flags)
        findings = verdict.findings
        if scored.flags.any():
            findings += (_detection_finding(scored, suite),)
        scores = {"suspicion": tuple(scored.combined.tolist()),
                  **{k: tuple(v.tolist()) for k, v in scored.raw.items()}}
        allowed = self._allows(findings)
        return output, dataclasses.replace(verdict, allowed=allowed, flags=tuple(flags.tolist()),
                                           findings=findings, scores=scores,
                                           threshold=suite.threshold, fpr=suite.fpr_target,
                                           calibration_id=named)

    def _detector_input(self, validated: Validated, calibration: Calibration
                        ) -> tuple[Any, np.ndarray, JoinedInputs | None] | Finding | None:
        """What the detectors read of a call: ``(native, x, layout)``, the input as the
        model takes it (for a model of several inputs, the list of its arrays in declared
        order), the host rows the detectors read (those arrays joined, ``layout`` their
        layout; else ``layout`` is ``None``). A blocking :class:`Finding` where the
        detectors cannot read it (a sparse matrix, samples of another shape than
        calibrated, inputs of different batch lengths, an input that holds no array);
        ``None`` where an input is missing and validation has found something (its
        finding stands)."""
        if calibration.input_shapes:
            names = self._input_names()
            missing = [name for name in names if name not in validated.views]
            if missing and validated.findings:
                return None
            if missing:  # an argument holding no array (a tensor inside a tuple)
                return Finding(
                    "format", f"input {missing[0]!r} is not an array; the detectors were "
                    f"calibrated on the model's inputs {names}, each an array of samples",
                    expected="an array", received="none", blocking=True)
            shapes = calibration.input_shapes
        else:
            names = list(validated.arrays)[:1]
            shapes = (tuple(calibration.sample_shape),)
        natives = [validated.arrays[name] for name in names]
        for native in natives:
            if isinstance(native, STRUCTURED):  # never densified: the detectors can't read it
                return Finding(
                    "format", f"input is a {type(native).__name__}; the detectors were "
                    "calibrated on dense arrays and read only those. Pass a dense array "
                    "(x.toarray(), df.to_numpy())", expected="dense array",
                    received=type(native).__name__, blocking=True)
        views = [np.asarray(to_host(validated.views[name])) for name in names]
        for name, view, calibrated in zip(names, views, shapes):
            if tuple(view.shape[1:]) != tuple(calibrated):
                which = f"input {name!r}" if calibration.input_shapes else "input"
                return Finding(
                    "shape", f"{which} has samples of shape {tuple(view.shape[1:])}; the "
                    f"detectors were calibrated on samples of shape {tuple(calibrated)}",
                    expected=tuple(calibrated), received=tuple(view.shape[1:]),
                    blocking=True)
        if not calibration.input_shapes:
            return natives[0], views[0], None
        unbatched = _unbatched(names, views)
        if unbatched:
            return Finding("shape", f"inputs hold different numbers of samples: {unbatched}; "
                           "the detectors read each sample of every input together",
                           expected="equal batch sizes", received=unbatched, blocking=True)
        return natives, join(views), JoinedInputs.of(views)

    def _verdict(self, validated: Validated, inputs: Mapping[str, Any],
                 calibration_id: str | None) -> Verdict:
        findings = tuple(validated.findings)
        blocked = validated.blocked
        allowed = not blocked and self._allows(findings)
        seen = validated.seen
        first = next(iter(seen.values())) if seen else None
        raw = next(iter(inputs.values()), None) if inputs else None
        return Verdict(
            allowed=allowed, mode=self.mode, model=self.name, client=current_client(),
            batch_size=validated.batch_size, flags=tuple(validated.flags.tolist()),
            findings=findings, input_hash=self._input_hash(validated, blocked),
            shape=tuple(first.shape) if first is not None else None,
            dtype=dtype_name(first) if first is not None else None,
            timestamp=self.clock(),
            input_type=None if isinstance(raw, Refused) else type(raw).__name__,
            request_id=current_request_id() or new_request_id(),  # from serving code, or new
            calibration_id=calibration_id)

    def _input_hash(self, validated: Validated, blocked: bool) -> str:
        """The content hash of what validation read; empty when reading the bytes is not
        safe (over ``max_size``) or not meaningful (object arrays hold pointers)."""
        if blocked:  # hash what was read up to the refusal, where it is plain data
            arrays = list(validated.seen.values())
            names = list(validated.seen)
            limit = self.constraints.max_size
            if validated.oversized or not all(_hashable(a) for a in arrays) or (
                    limit is not None and sum(
                        math.prod(a.shape) for a in arrays) > limit):
                return ""  # over max_size: never read, whatever else refused the call
        else:
            if validated.oversized:
                return ""
            arrays = list(validated.views.values())
            names = list(validated.views)
        if not arrays:
            return ""
        return content_hash(arrays, self.adapter.host_bytes,
                            names if len(arrays) > 1 else None)

    @property
    def calibration_id(self) -> str | None:
        """A digest of the calibration in use (its settings, thresholds and detector
        state), ``None`` without one: audit lines name the calibration that screened them."""
        return self._digest(self.calibration)

    def _digest(self, calibration: Calibration | None) -> str | None:
        cached, digest = self._calibration_id
        if calibration is not cached:
            digest = None if calibration is None else _calibration_digest(calibration)
            self._calibration_id = (calibration, digest)
        return digest

    def _record(self, verdict: Verdict, outcome: str, start: float,
                validated: Validated | None, error: str | None = None,
                visit: Visit | None = None) -> None:
        if self.monitor is not None:
            checks = verdict.checks if verdict.findings else ()
            if outcome in ("rejected", "partial"):
                self.monitor.refused(visit, checks)
            self.monitor.seen(verdict.client, verdict.input_hash, outcome, checks, visit)
        event = CallRecord(verdict, outcome, time.perf_counter() - start,
                           validated.arrays if validated is not None else None, error)
        deliver(self.sinks, event)


    # -- copies and pickles ------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """What a copy or a pickle of the guard carries: the model, the adapter's class,
        the settings, the calibration (its arrays travel inside the pickle), the monitoring
        policy and where its state lives, and the sinks. A ``memory://`` store belongs to
        its process (a copy starts a fresh one); any other store is re-opened by its URL.
        Sinks are shared by ``copy.deepcopy`` and re-opened by a pickle
        (:class:`~aimsec_core.sinks.Sinks`), which raises ``UncopyableError`` for one that
        cannot travel. The per-context ``last_verdict`` and the caches start empty."""
        return self._state(portable=True)

    def _state(self, *, portable: bool) -> dict[str, Any]:
        """The state of :meth:`__getstate__`; without ``portable``, the store object itself
        (a guard in this process for another model shares its monitoring state)."""
        monitor = self.monitor
        store: Store | str | None = None
        if monitor is not None and not portable:
            store = monitor.store
        elif monitor is not None:
            url = getattr(monitor.store, "url", None)
            if not isinstance(url, str) or not url:
                raise UncopyableError(
                    f"the monitoring store {monitor.store!r} has no URL to re-open it by, so a "
                    "copy of the guarded model cannot share its state; use "
                    "store='memory://' or a 'redis://...' URL")
            store = "memory://" if url.startswith("memory://") else url
            if self._store_from_environment and store != "memory://":
                store = None  # AIMSEC_STORE_URL where the copy is loaded
        return {"model": self.model, "adapter": type(self.adapter), "name": self.name,
                "mode": self.mode, "constraints": self.constraints, "sinks": self.sinks,
                "calibration": self.calibration, "clock": self.clock,
                "on_flagged": self.on_flagged,
                "policy": monitor.policy if monitor is not None else False, "store": store}

    def __setstate__(self, state: dict[str, Any]) -> None:
        model = state["model"]
        self.__init__(model, state["adapter"](model),  # type: ignore[misc]
                      name=state["name"], mode=state["mode"], constraints=state["constraints"],
                      sinks=state["sinks"], clock=state["clock"],
                      on_flagged=state["on_flagged"], policy=state["policy"],
                      store=state["store"])
        self.calibration = state["calibration"]  # made for this very model: no re-check

    def copied_for(self, model: Any) -> Guard:
        """This guard for a copy of its model (``copy.deepcopy`` of a guarded module): the
        same settings, calibration, sinks, policy and monitoring store."""
        return self._rebuilt(model=model)

    def with_settings(self, **settings: Any) -> Guard:
        """This guard for the same model with other settings (``name``, ``mode``,
        ``constraints``, ``sinks``; ``mode=None``: the configured default), built as the
        constructor builds one; the calibration, policy, store, ``on_flagged`` and clock
        kept as :meth:`copied_for` keeps them (a guarded estimator's ``set_params``).
        Like :meth:`refitted`, it keeps each thread's ``last_verdict`` and, under the same
        name, the monitor (``request_analysis``'s counts, the extraction statistics), so
        calls still running on this guard in other threads are counted and remembered
        where the next calls are; a new ``name`` is another model to the monitoring state
        and starts its own.
        Raises :class:`ConfigurationError` for an invalid setting or another key."""
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ConfigurationError(f"with_settings takes {list(SETTINGS)}; received "
                                     f"{unknown}")
        guard = self._rebuilt(**settings)
        if guard.name == self.name:
            guard.monitor = self.monitor
        guard._last = self._last
        return guard

    def _rebuilt(self, **changes: Any) -> Guard:
        """A new guard from this one's state with ``changes``."""
        state = self._state(portable=False)
        state.update(changes)
        guard = Guard.__new__(Guard)
        guard.__setstate__(state)
        # the same store, from the same place: a pickle of the copy re-reads the variable too
        guard._store_from_environment = self._store_from_environment
        return guard

    def rebound(self, model: Any) -> Guard:
        """A guard like this one for another model (a refitted estimator): as
        :meth:`copied_for`, without the calibration (it described the old model; calibrate
        again)."""
        guard = self.copied_for(model)
        guard.calibration = None
        return guard

    def refitted(self, model: Any) -> Guard:
        """This guard for its model trained again (a refit or ``partial_fit`` of the same
        guarded object): as :meth:`rebound`, keeping what describes the calls rather than
        the model: the monitor (the counters behind ``request_analysis``, the extraction
        statistics) and each thread's ``last_verdict``. So calls still running on this
        guard, in other threads, are counted and remembered where the next calls are."""
        guard = self.rebound(model)
        guard.monitor = self.monitor
        guard._last = self._last
        return guard


#: The settings :meth:`Guard.with_settings` changes (the constructor's parameters of those
#: names).
SETTINGS = ("name", "mode", "constraints", "sinks")


def allowed_rows(verdict: Verdict) -> np.ndarray | None:
    """``None`` for a call allowed whole; for one refused (``(batch,)`` bool), the samples
    whose outputs a refusal of the flagged samples only hands back: the unflagged ones."""
    if verdict.allowed:
        return None
    return ~np.asarray(verdict.flags, dtype=bool)


def take_rows(output: Any, keep: np.ndarray, batch_size: int) -> Any:
    """The rows ``keep`` of a model's output: arrays and tensors with the batch as first
    axis are indexed, lists/tuples/dicts of them element-wise, anything else kept whole
    (an onnxruntime ``OrtValue``, whose ``shape`` is a method: its adapter hands over only
    the allowed rows itself)."""
    if isinstance(output, Mapping):
        return {k: take_rows(v, keep, batch_size) for k, v in output.items()}
    if isinstance(output, (list, tuple)):
        return type(output)(take_rows(v, keep, batch_size) for v in output)
    shape = getattr(output, "shape", None)
    if shape is not None and not callable(shape) and len(shape) > 0 \
            and shape[0] == batch_size:
        return output[keep]
    return output


def _replacements(validated: Validated) -> dict[str, Any]:
    """Name -> the array the core made for each input it replaced (see ``Guard.call``)."""
    return {name: validated.arrays[name] for name in validated.replaced}


def _detection_finding(scored: Any, suite: DetectorSuite) -> Finding:
    flagged = scored.flags.nonzero()[0]
    indices = flagged.tolist()
    worst = indices[int(scored.combined[flagged].argmax())]
    suspicion = float(scored.combined[worst])
    loudest = max(scored.rarity, key=lambda name: scored.rarity[name][worst])
    samples = ", ".join(map(str, indices[:5])) + (
        f" and {len(indices) - 5} more" if len(indices) > 5 else "")
    return Finding(
        "adversarial",
        (f"samples {samples}: highest suspicion {suspicion:.3g} (sample "
         f"{worst}, loudest detector {loudest!r}); " if len(indices) > 1 else
         f"sample {samples}: suspicion {suspicion:.3g} (loudest detector "
         f"{loudest!r}); ") +
        f"expected at most {suite.threshold:.3g}, the threshold calibrated for "
        f"{suite.fpr_target:.2%} false positives on clean data",
        samples=tuple(indices), expected=suite.threshold, received=suspicion,
        score=suspicion)


_HASHABLE_KINDS = frozenset("biufcSU")  # datetimes: numpy cannot export their buffer


def _hashable(array: Any) -> bool:
    """Whether a refused input's content can be hashed: plain data, or a table whose
    blocks are plain data or Python objects (hashed through their text)."""
    if isinstance(array, ColumnBlocks):
        return all(b.dtype.kind in _HASHABLE_KINDS or b.dtype.kind == "O"
                   for b in array.blocks)
    return isinstance(array, STRUCTURED) or dtype_kind(array) in _HASHABLE_KINDS


def _calibration_digest(calibration: Calibration) -> str:
    hasher = hashlib.sha256(json.dumps(calibration.summary(), sort_keys=True,
                                       default=str).encode())
    states = [(d.name, d.state()) for d in calibration.suite.detectors]
    for owner, state in states + [("suite", calibration.suite.state())]:
        for key, value in sorted(state.items()):
            if value is not None:
                array = np.ascontiguousarray(value)
                hasher.update(f"{owner}.{key}:{array.dtype}{array.shape}|".encode())
                if array.dtype.kind != "O":
                    hasher.update(array.data)
    return hasher.hexdigest()[:32]


def _deciding(verdict: Verdict, advisory: frozenset[str]) -> Finding:
    """The finding a refusal is named after: the first blocking one, else the first that
    is not advisory (a ``fail_open`` store outage never names a refusal)."""
    return next((f for f in verdict.findings if f.blocking), None) or next(
        (f for f in verdict.findings if f.check not in advisory), verdict.findings[0])


def _message(verdict: Verdict, advisory: frozenset[str] = frozenset(),
             detail: bool = True) -> str:
    """The refused call's message, with the deciding finding's detail (input values) only
    when ``detail``: audit lines get it without."""
    finding = _deciding(verdict, advisory)
    extra = len(verdict.findings) - 1
    message = f"{verdict.model}: {finding.message if detail else finding.reason}"
    if extra:
        message += f" (+{extra} more finding{'s' if extra > 1 else ''}; see .verdict)"
    return message


def _violation(verdict: Verdict, advisory: frozenset[str] = frozenset(),
               unknown: type[SecurityViolation] = AdversarialInputError) -> SecurityViolation:
    """The typed error for a refused call, named after :func:`_deciding`'s finding
    (``unknown`` for a check :data:`ERROR_FOR_CHECK` does not name: the detectors')."""
    finding = _deciding(verdict, advisory)
    message = _message(verdict, advisory)
    error_type = ERROR_FOR_CHECK.get(finding.check, unknown)
    if error_type is AdversarialInputError:
        return AdversarialInputError(message, verdict)
    if issubclass(error_type, (RateLimitedError, ClientBlockedError)):
        return error_type(message, verdict, retry_after=finding.score or 0.0)
    if not issubclass(error_type, InvalidInputError):
        return error_type(message, verdict)
    try:
        return error_type(message, verdict, check=finding.check, expected=finding.expected,
                          received=finding.received)
    except TypeError:  # a caller's subclass whose constructor takes other arguments
        return InvalidInputError(message, verdict, check=finding.check,
                                 expected=finding.expected, received=finding.received)


def _unbatched(names: Sequence[str], arrays: Sequence[np.ndarray]) -> dict[str, int]:
    """Each input's number of samples where the inputs of a model of several hold
    different numbers (validation checks batch agreement among declared inputs only);
    empty where they agree."""
    lengths = {name: int(array.shape[0]) if array.ndim else 1
               for name, array in zip(names, arrays)}
    return lengths if len(set(lengths.values())) > 1 else {}


def _shapes_text(shapes: Sequence[tuple[int, ...]]) -> str:
    """Per-sample shapes in a message: ``(64,)``, or ``(64,) and (3,)`` for several inputs."""
    return " and ".join(str(tuple(shape)) for shape in shapes)


def _default_sinks(incidents: Any = None, alerts: Any = None) -> Sinks:
    """The audit log, then metrics, incidents and alerts as configured (explicit argument,
    else environment; see :func:`aimsec_core.alerts.security_sinks`). On the predict path
    incidents and alerts cost a clean call one length check; metrics, when
    prometheus_client is installed, a counter update and a histogram observation."""
    from .alerts.wiring import security_sinks
    from .audit import AuditLog

    return Sinks([AuditLog(), *security_sinks(incidents=incidents, alerts=alerts)],
                 settings={"incidents": incidents, "alerts": alerts})
