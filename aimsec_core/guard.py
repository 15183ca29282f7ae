"""The one pipeline every guarded call goes through, whatever the framework.

``Guard.call`` validates the inputs, decides, calls the real model only when allowed, and
hands the outcome to the sinks. Adapters build the framework-shaped object around it and
pass in a ``predict`` callable that runs the original model on the original arguments, so a
valid call returns exactly what the unguarded model returns.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .adapter import Adapter
from .arrays import content_hash, dtype_name
from .config import resolve_mode
from .context import current_client
from .errors import ERROR_FOR_CHECK, AdversarialInputError, SecurityViolation
from .signature import Constraints, InputSpec, merge_specs
from .sinks import CallRecord, Sink, deliver
from .validation import Validated, validate
from .verdict import Finding, Verdict

T = TypeVar("T")


class Guard:
    """Screens and records every call to one model."""

    def __init__(self, model: Any, adapter: Adapter, *, name: str | None = None,
                 mode: str | None = None, constraints: Constraints | Mapping[str, Any] | None = None,
                 sinks: list[Sink] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.model = model
        self.adapter = adapter
        self.name = name or type(model).__name__
        self.mode = resolve_mode(mode)
        self.constraints = Constraints.coerce(constraints)
        self.sinks: list[Sink] = list(sinks) if sinks is not None else _default_sinks()
        self.clock = clock
        self._declared: list[InputSpec] | None = adapter.signature()
        self._specs: dict[tuple[str, ...], dict[str, InputSpec | None]] = {}
        self._last: contextvars.ContextVar[Verdict | None] = contextvars.ContextVar(
            f"aimsec_last_verdict_{id(self)}", default=None)

    @property
    def last_verdict(self) -> Verdict | None:
        """The verdict of the latest call made from this thread or asyncio task."""
        return self._last.get()

    def specs_for(self, names: tuple[str, ...]) -> dict[str, InputSpec | None]:
        if not self.adapter.static_signature:
            return merge_specs(self.adapter.signature(), self.constraints, names)
        specs = self._specs.get(names)
        if specs is None:
            specs = self._specs[names] = merge_specs(self._declared, self.constraints, names)
        return specs

    def screen(self, inputs: Mapping[str, Any]) -> tuple[Validated, Verdict]:
        """Validate ``inputs`` (name -> raw value) and build the verdict; call no model."""
        validated = validate(inputs, self.adapter, self.specs_for(tuple(inputs)), self.constraints)
        return validated, self._verdict(validated)

    def call(self, inputs: Mapping[str, Any], predict: Callable[[], T]) -> T:
        """Screen ``inputs``; if allowed, return ``predict()``; record the outcome either way."""
        start = time.perf_counter()
        validated, verdict = self.screen(inputs)
        self._last.set(verdict)
        if not verdict.allowed:
            error = _violation(verdict)
            self._record(verdict, "rejected", start, validated, str(error))
            raise error
        try:
            output = predict()
        except Exception as exc:
            self._record(verdict, "error", start, validated, f"{type(exc).__name__}: {exc}")
            if verdict.clean:
                raise
            # Monitor mode let flagged input through and the model choked on it: say why
            # in our terms, keeping the model's own error as the cause.
            raise _violation(verdict) from exc
        self._record(verdict, "allowed" if verdict.clean else "flagged", start, validated)
        return output

    def _verdict(self, validated: Validated) -> Verdict:
        findings = tuple(validated.findings)
        blocked = validated.blocked
        allowed = not blocked and (self.mode == "monitor" or not findings)
        arrays = list(validated.arrays.values())
        first = arrays[0] if arrays else None
        return Verdict(
            allowed=allowed, mode=self.mode, model=self.name, client=current_client(),
            batch_size=validated.batch_size, flags=tuple(validated.flags.tolist()),
            findings=findings,
            input_hash=content_hash(arrays, self.adapter.device_digest) if arrays and not blocked else "",
            shape=tuple(first.shape) if first is not None else None,
            dtype=dtype_name(first) if first is not None else None,
            timestamp=self.clock())

    def _record(self, verdict: Verdict, outcome: str, start: float, validated: Validated,
                error: str | None = None) -> None:
        event = CallRecord(verdict, outcome, time.perf_counter() - start,
                           validated.arrays, error)
        deliver(self.sinks, event)


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
