"""Where the outcome of each call goes: the audit log, and later incidents, alerts, metrics.

A sink is any object with ``record(event)``; a failing sink is logged and never breaks a
prediction or another sink.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigurationError, UncopyableError
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


def _checked(sinks: Any) -> list[Any]:
    """``sinks`` as a list, each with a callable ``record``; raises
    :class:`ConfigurationError` otherwise (a string's letters, or a number, would each
    fail every call, and with no audit log among them every call's record is lost)."""
    if isinstance(sinks, (str, bytes)) or not isinstance(sinks, Iterable):
        raise ConfigurationError(f"sinks must be a list of objects with record(event); "
                                 f"received {type(sinks).__name__}")
    found = list(sinks)
    for sink in found:
        if not callable(getattr(sink, "record", None)):
            raise ConfigurationError(f"sinks must be objects with record(event); received "
                                     f"{type(sink).__name__} {sink!r:.60}")
    return found


class Sinks(list):  # type: ignore[type-arg]
    """The sinks of a guard. They are shared services (files, databases, alert channels),
    so copying a guarded model (``copy.deepcopy``, scikit-learn's ``clone``) shares them
    rather than duplicating them.

    A pickle (joblib, a worker process) carries each sink that pickles (an ``AuditLog``
    carries its file: the copy writes to the same trail). The security sinks a guard built
    from settings (``guard(model)``, ``guard(model, incidents=..., alerts=...)``: metrics,
    incidents, alerts) hold threads and connections; ``settings`` records how they were
    made, and the unpickled copy builds its own with the same incident database and alert
    options. Any other sink that cannot be pickled raises :class:`UncopyableError` naming
    it: a copy never silently loses a destination.
    """

    def __init__(self, sinks: Iterable[Sink] = (), *,
                 settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(_checked(sinks))
        #: ``security_sinks`` keyword arguments the built sinks came from, and which they are
        self.settings = dict(settings) if settings is not None else None
        self._built = [s for s in self if not _is_audit_log(s)] if settings is not None else []

    def __deepcopy__(self, memo: dict[int, Any]) -> Sinks:
        return self

    def __copy__(self) -> Sinks:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        built = {id(s) for s in self._built}
        own = [s for s in self if id(s) not in built]
        for sink in own:
            _check_picklable(sink)
        settings = self._portable_settings() if self._built else None
        at = next((i for i, s in enumerate(self) if id(s) in built), len(own))
        return (_restore_sinks, (own, settings, at))

    def _portable_settings(self) -> dict[str, Any]:
        """The settings of the built sinks, resolved where this process's environment
        decided them (the incident database path), so the copy uses the same ones."""
        from .incidents.sink import IncidentSink

        settings = dict(self.settings or {})
        incidents = next((s for s in self._built if isinstance(s, IncidentSink)), None)
        store = incidents.dispatcher.store if incidents is not None else None
        settings["incidents"] = store.path if store is not None else False
        alerting = incidents is not None and incidents.dispatcher.grouper is not None
        if not alerting:
            settings["alerts"] = False
        elif settings.get("alerts") not in (None, True):
            for channel in _as_list(settings["alerts"]):
                _check_picklable(channel)
        return settings


def _restore_sinks(own: list[Sink], settings: dict[str, Any] | None, at: int) -> Sinks:
    if settings is None:
        return Sinks(own)
    from .alerts.wiring import security_sinks

    built = security_sinks(incidents=settings.get("incidents"), alerts=settings.get("alerts"))
    restored = Sinks([*own[:at], *built, *own[at:]], settings=settings)
    restored._built = built
    return restored


def _is_audit_log(sink: Any) -> bool:
    from .audit.log import AuditLog

    return isinstance(sink, AuditLog)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check_picklable(sink: Any) -> None:
    """Raise :class:`UncopyableError` naming ``sink`` when it cannot be pickled."""
    try:
        pickle.dumps(sink)
    except Exception as exc:  # pickle raises TypeError, PicklingError, AttributeError...
        raise UncopyableError(
            f"the guard's sink {sink!r} ({type(sink).__qualname__}) cannot be pickled "
            f"({type(exc).__name__}: {exc}), so a pickled copy of the guarded model would "
            "lose it; give the sink __getstate__/__setstate__ (or __reduce__) that re-open "
            "its destination in the new process, or guard the model with sinks that pickle "
            "(AuditLog does; guard(model, incidents=..., alerts=...) rebuilds its security "
            "sinks in the new process)") from exc


def deliver(sinks: list[Sink], event: CallRecord) -> None:
    for sink in sinks:
        try:
            sink.record(event)
        except Exception:  # a broken sink must not lose the prediction or other sinks' records
            log.exception("aimsec sink %r failed to record a call", sink)
