"""The sink that turns a call's serious findings into incident occurrences.

It runs on the predict path, so it only filters and enqueues: a clean call costs one
length check, a call with findings one severity comparison per finding and, for those at
or above the floor, one queue insertion and one line appended to the process's journal
(:mod:`.journal`: written to the operating system before the call returns, so a killed
process loses none). Storage and alerts happen in the dispatcher's background thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..severity import rank
from ..sinks import CallRecord
from .model import Evidence, Occurrence

if TYPE_CHECKING:
    from ..alerts.dispatcher import Dispatcher


class IncidentSink:
    """Queues every finding of severity ``floor`` or above on ``dispatcher``.

    ``floor`` defaults to ``AIMSEC_INCIDENT_SEVERITY``, else ``medium``. The evidence kept
    is the finding's reason and score and the call's input hash, never the input.
    """

    def __init__(self, dispatcher: Dispatcher, *, floor: str | None = None) -> None:
        from ..alerts.settings import incident_floor

        self.dispatcher = dispatcher
        self.floor = incident_floor(floor)
        self._floor = rank(self.floor)

    def __repr__(self) -> str:
        return f"IncidentSink(floor={self.floor!r}, store={self.dispatcher.store!r})"

    def record(self, event: CallRecord) -> None:
        findings = event.verdict.findings
        if not findings:
            return
        v = event.verdict
        for finding in findings:
            severity = finding.severity or "medium"
            if rank(severity) < self._floor:
                continue
            evidence = Evidence()
            evidence.add(reason=finding.reason, score=finding.score, input_hash=v.input_hash)
            self.dispatcher.submit(Occurrence(v.model, finding.check, v.client, severity,
                                              v.timestamp, v.timestamp, 1, evidence))

    def flush(self, timeout: float = 5.0) -> bool:
        """Store and alert everything queued so far; True when done within ``timeout``."""
        return self.dispatcher.flush(timeout)
