"""The one pipeline every guarded call goes through, whatever the framework.

``Guard.call`` validates the inputs, runs the calibrated detectors, decides, returns the
real model's output only when allowed, and hands the outcome to the sinks. Validation
findings stop a call before the model runs; detectors need the model's view of the input,
so a call they refuse has run it (with gradient analysis, that is the call's own forward
pass). Adapters build the framework-shaped object around it and pass in a ``predict``
callable that runs the original model on the original arguments, so a valid call returns
exactly what the unguarded model returns.
"""

from __future__ import annotations

import contextvars
import dataclasses
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .adapter import Adapter
from .arrays import content_hash, dtype_name, to_host
from .config import resolve_mode
from .context import current_client
from .detection import DetectorSuite, Probe, select_detectors, softmax_if_needed
from .detection.calibration import (Calibration, calibrate, model_fingerprint,
                                    per_sample_rate)
from .errors import (ERROR_FOR_CHECK, AdversarialInputError, CalibrationError,
                     ConfigurationError, SecurityViolation)
from .signature import Constraints, InputSpec, merge_specs
from .sinks import CallRecord, Sink, Sinks, deliver
from .validation import Validated, validate
from .verdict import Finding, Verdict

T = TypeVar("T")
#: What a detector finding refuses: the whole call, or only the flagged samples.
ON_FLAGGED = ("call", "samples")
_NOT_YET = object()
_SPEC_CACHE_SIZE = 64


class Guard:
    """Screens and records every call to one model."""

    def __init__(self, model: Any, adapter: Adapter, *, name: str | None = None,
                 mode: str | None = None,
                 constraints: Constraints | Mapping[str, Any] | None = None,
                 sinks: list[Sink] | None = None,
                 calibration: Calibration | str | Path | None = None,
                 clock: Callable[[], float] = time.time, on_flagged: str = "call") -> None:
        self.model = model
        self.adapter = adapter
        self.name = name or type(model).__name__
        self.mode = resolve_mode(mode)
        self.constraints = Constraints.coerce(constraints)
        self.sinks = sinks if isinstance(sinks, Sinks) else Sinks(
            sinks if sinks is not None else _default_sinks())
        self.clock = clock
        if on_flagged not in ON_FLAGGED:
            raise ConfigurationError(f"on_flagged must be one of {ON_FLAGGED}; received "
                                     f"{on_flagged!r}")
        self.on_flagged = on_flagged
        self.calibration: Calibration | None = None
        self._declared: list[InputSpec] | None = adapter.signature()
        self._specs: dict[tuple[Any, ...], dict[str, InputSpec | None]] = {}
        self._last: contextvars.ContextVar[Verdict | None] = contextvars.ContextVar(
            f"aimsec_last_verdict_{id(self)}", default=None)
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
        """
        fpr = per_sample_rate(fpr, batch_size)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigurationError(f"seed must be a non-negative integer; received {seed!r}")
        x = self._clean_data(x_clean, "calibration data")
        extra = None if reference is None else self._clean_data(reference, "reference data")
        if extra is not None and extra.shape[1:] != x.shape[1:]:
            raise CalibrationError(
                f"reference data must have samples shaped like the calibration data, "
                f"{tuple(x.shape[1:])}; received {tuple(extra.shape[1:])}")
        suite = DetectorSuite(select_detectors(detectors, self.adapter.capabilities,
                                               image_shape))
        bounds = (self.constraints.min_value, self.constraints.max_value)
        value_range = bounds if None not in bounds else None
        self.calibration = calibrate(self.adapter, suite, x, fpr=fpr, model=self.name,
                                     seed=seed, value_range=value_range, reference=extra)
        return self.calibration

    def _clean_data(self, data: Any, what: str) -> np.ndarray:
        """``data`` as a host array, refused unless it passes validation cleanly."""
        name = self._declared[0].name if self._declared else "input"
        validated = validate({name: data}, self.adapter, self.specs_for((name,)),
                             self.constraints)
        if validated.findings:
            raise CalibrationError(f"{what} must be clean and valid: "
                                   + "; ".join(f.reason for f in validated.findings[:3]))
        return np.asarray(to_host(validated.arrays[name]))

    def use_calibration(self, calibration: Calibration | str | Path, *,
                        force: bool = False) -> None:
        """Turn detection on with ``calibration`` (an object or a file path).

        A calibration made for another model (its recorded fingerprint differs) is refused
        with :class:`CalibrationError`; ``force=True`` uses it anyway, with a warning."""
        if not isinstance(calibration, Calibration):
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
        for detector in calibration.suite.detectors:
            if detector.needs_gradient and not self.adapter.capabilities.gradients:
                raise CalibrationError(
                    f"the calibration uses detector {detector.name!r}, which needs "
                    f"gradients; the {self.adapter.framework} adapter has none")
        self.calibration = calibration

    # -- the pipeline ------------------------------------------------------------------

    def screen(self, inputs: Mapping[str, Any]) -> tuple[Validated, Verdict]:
        """Validate ``inputs`` (name -> raw value) and build the verdict; call no model."""
        validated = validate(inputs, self.adapter, self.specs_for(tuple(inputs)), self.constraints)
        return validated, self._verdict(validated)

    def call(self, inputs: Mapping[str, Any], predict: Callable[[], T],
             forward: Callable[[Any], T] | None = None) -> T:
        """Screen ``inputs``; if allowed, return the model's output; record either way.

        ``forward(x)`` runs the same call on a replacement input; adapters with autograd
        pass it so gradient analysis and the prediction share one forward pass.
        """
        start = time.perf_counter()
        validated, verdict = self.screen(inputs)
        output: Any = _NOT_YET
        try:
            if verdict.allowed and self._detecting(validated):
                output, verdict = self._detect(validated, verdict, forward)
        except SecurityViolation:
            raise
        except Exception as exc:
            self._last.set(verdict)
            self._record(verdict, "error", start, validated, f"{type(exc).__name__}: {exc}")
            if verdict.clean:
                raise
            raise _violation(verdict) from exc  # monitor mode: flagged input broke a detector
        self._last.set(verdict)
        if not verdict.allowed:
            error = _violation(verdict)
            if self._refuses_samples_only(verdict):
                output = predict() if output is _NOT_YET else output
                keep = ~np.asarray(verdict.flags, dtype=bool)
                error.allowed = tuple(int(i) for i in np.flatnonzero(keep))
                error.allowed_output = take_rows(output, keep, verdict.batch_size)
                self._record(verdict, "partial", start, validated, str(error))
                raise error
            self._record(verdict, "rejected", start, validated, str(error))
            raise error
        if output is _NOT_YET:
            try:
                output = predict()
            except Exception as exc:
                self._record(verdict, "error", start, validated, f"{type(exc).__name__}: {exc}")
                if verdict.clean:
                    raise
                # Monitor mode let flagged input through and the model choked on it: say
                # why in our terms, keeping the model's own error as the cause.
                raise _violation(verdict) from exc
        self._record(verdict, "allowed" if verdict.clean else "flagged", start, validated)
        return output

    def _refuses_samples_only(self, verdict: Verdict) -> bool:
        """With ``on_flagged="samples"``: the call is refused for its flagged samples only
        when every finding is a detector's about some samples and some samples are clean
        (validation findings always refuse the whole call: that input never reaches the
        model)."""
        return (self.on_flagged == "samples" and not all(verdict.flags)
                and all(f.check == "adversarial" and f.samples for f in verdict.findings))

    def _detecting(self, validated: Validated) -> bool:
        # NaN/Inf would only break the detectors' own passes; the finding already stands.
        return (self.calibration is not None and len(validated.arrays) == 1
                and not any(f.check == "finite" for f in validated.findings))

    def _detect(self, validated: Validated, verdict: Verdict,
                forward: Callable[[Any], Any] | None) -> tuple[Any, Verdict]:
        """Run the calibrated detectors; returns the model output when it came for free."""
        assert self.calibration is not None
        suite = self.calibration.suite
        native = next(iter(validated.arrays.values()))
        x = np.asarray(to_host(next(iter(validated.views.values()))))
        calibrated = tuple(self.calibration.sample_shape)
        if tuple(x.shape[1:]) != calibrated:
            finding = Finding(
                "shape", f"input has samples of shape {tuple(x.shape[1:])}; the detectors were "
                f"calibrated on samples of shape {calibrated}", expected=calibrated,
                received=tuple(x.shape[1:]), blocking=True)
            return _NOT_YET, dataclasses.replace(verdict, allowed=False,
                                                 findings=verdict.findings + (finding,))
        output, probabilities, gradient, features = _NOT_YET, None, None, None
        if suite.needs_gradient and forward is not None:
            output, probabilities, gradient = self.adapter.forward_with_gradient(forward, native)
            probabilities = softmax_if_needed(probabilities)
        elif suite.needs_gradient:
            probabilities = softmax_if_needed(self.adapter.scores(x))
            gradient = self.adapter.input_gradient(x, probabilities.argmax(axis=1))
        elif suite.needs_features and forward is not None:
            try:  # the real call, with the features captured on the way
                output, probabilities, features = self.adapter.forward_with_features(
                    forward, native)
                probabilities = softmax_if_needed(probabilities)
            except NotImplementedError:
                pass
        probe = Probe(x, probabilities, self.adapter.scores,
                      None if gradient is None else np.asarray(to_host(gradient)),
                      given_features=features, ask_features=self.adapter.features)
        scored = suite.score(probe)
        flags = np.asarray(verdict.flags, dtype=bool) | scored.flags
        findings = verdict.findings
        if scored.flags.any():
            findings += (_detection_finding(scored, suite),)
        scores = {"suspicion": tuple(scored.combined.tolist()),
                  **{k: tuple(v.tolist()) for k, v in scored.raw.items()}}
        allowed = self.mode == "monitor" or not findings
        return output, dataclasses.replace(verdict, allowed=allowed, flags=tuple(flags.tolist()),
                                           findings=findings, scores=scores)

    def _verdict(self, validated: Validated) -> Verdict:
        findings = tuple(validated.findings)
        blocked = validated.blocked
        allowed = not blocked and (self.mode == "monitor" or not findings)
        arrays = list(validated.views.values())
        first = arrays[0] if arrays else None
        names = list(validated.views) if len(arrays) > 1 else None
        return Verdict(
            allowed=allowed, mode=self.mode, model=self.name, client=current_client(),
            batch_size=validated.batch_size, flags=tuple(validated.flags.tolist()),
            findings=findings,
            input_hash=(content_hash(arrays, self.adapter.device_digest, names)
                        if arrays and not blocked else ""),
            shape=tuple(first.shape) if first is not None else None,
            dtype=dtype_name(first) if first is not None else None,
            timestamp=self.clock())

    def _record(self, verdict: Verdict, outcome: str, start: float, validated: Validated,
                error: str | None = None) -> None:
        event = CallRecord(verdict, outcome, time.perf_counter() - start,
                           validated.arrays, error)
        deliver(self.sinks, event)


def take_rows(output: Any, keep: np.ndarray, batch_size: int) -> Any:
    """The rows ``keep`` of a model's output: arrays and tensors with the batch as first
    axis are indexed, lists/tuples/dicts of them element-wise, anything else kept whole."""
    if isinstance(output, Mapping):
        return {k: take_rows(v, keep, batch_size) for k, v in output.items()}
    if isinstance(output, (list, tuple)):
        return type(output)(take_rows(v, keep, batch_size) for v in output)
    shape = getattr(output, "shape", None)
    if shape is not None and len(shape) > 0 and shape[0] == batch_size:
        return output[keep]
    return output


def _detection_finding(scored: Any, suite: DetectorSuite) -> Finding:
    flagged = np.flatnonzero(scored.flags)
    worst = int(flagged[np.argmax(scored.combined[flagged])])
    loudest = max(scored.rarity, key=lambda name: scored.rarity[name][worst])
    samples = ", ".join(str(i) for i in flagged[:5]) + (
        f" and {len(flagged) - 5} more" if len(flagged) > 5 else "")
    return Finding(
        "adversarial",
        f"sample{'s' if len(flagged) > 1 else ''} {samples}: suspicion "
        f"{scored.combined[worst]:.3g} (sample {worst}, loudest detector {loudest!r}); "
        f"expected at most {suite.threshold:.3g}, the threshold calibrated for "
        f"{suite.fpr_target:.2%} false positives on clean data",
        samples=tuple(int(i) for i in flagged), expected=suite.threshold,
        received=float(scored.combined[worst]), score=float(scored.combined[worst]))


def _violation(verdict: Verdict) -> SecurityViolation:
    """The typed error for a refused call: the first blocking finding, else the first one."""
    finding: Finding = next((f for f in verdict.findings if f.blocking), verdict.findings[0])
    extra = len(verdict.findings) - 1
    message = f"{verdict.model}: {finding.reason}"
    if extra:
        message += f" (+{extra} more finding{'s' if extra > 1 else ''}; see .verdict)"
    error_type = ERROR_FOR_CHECK.get(finding.check)
    if error_type is None:
        return AdversarialInputError(message, verdict)
    return error_type(message, verdict, check=finding.check, expected=finding.expected,
                      received=finding.received)


def _default_sinks() -> list[Sink]:
    from .audit import AuditLog

    return [AuditLog()]
