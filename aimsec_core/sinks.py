"""Where the outcome of each call goes: the audit log, and later incidents, alerts, metrics.

A sink is any object with ``record(event)``; a failing sink is logged and never breaks a
prediction or another sink.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .verdict import Verdict

log = logging.getLogger("aimsec")


@dataclass(frozen=True)
class CallRecord:
    """One finished call: its verdict, how it ended and how long the guard took."""

    verdict: Verdict
    outcome: str  #: "allowed", "flagged" (monitor), "rejected" or "error"
    latency_s: float
    arrays: dict[str, Any] | None = None  #: the raw inputs, only for sinks that opt in
    error: str | None = None


@runtime_checkable
class Sink(Protocol):
    def record(self, event: CallRecord) -> None: ...


class Sinks(list):  # type: ignore[type-arg]
    """The sinks of a guard. They are shared services (files, databases, alert channels),
    so copying a guarded model (``copy.deepcopy``, scikit-learn's ``clone``) shares them
    rather than duplicating them."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Sinks:
        return self

    def __copy__(self) -> Sinks:
        return self


def deliver(sinks: list[Sink], event: CallRecord) -> None:
    for sink in sinks:
        try:
            sink.record(event)
        except Exception:  # a broken sink must not lose the prediction or other sinks' records
            log.exception("aimsec sink %r failed to record a call", sink)
