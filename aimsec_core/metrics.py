"""Prometheus metrics, optional: with ``prometheus_client`` installed (the ``metrics``
extra) guards count calls, findings, incidents and alerts; without it nothing breaks.

Metrics are never labelled by client (unbounded cardinality: one time series per caller).
Expose them with one line, either a scrape port::

    prometheus_client.start_http_server(9108)        # http://host:9108/metrics

or, in an ASGI app, ``app.mount("/metrics", prometheus_client.make_asgi_app())``.

=====================================  =========  ==============================
metric                                 type       labels
=====================================  =========  ==============================
``aimsec_calls_total``                 counter    model, outcome (allowed,
                                                  invalid, adversarial,
                                                  rate-limited, error)
``aimsec_guard_latency_seconds``       histogram  model
``aimsec_findings_total``              counter    model, check, severity
``aimsec_incidents_total``             counter    severity (incidents opened)
``aimsec_alerts_total``                counter    channel, status (sent,
                                                  retrying, failed, outbox)
``aimsec_alert_queue_depth``           gauge      (none)
``aimsec_alert_queue_dropped_total``   counter    severity
=====================================  =========  ==============================
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import Any, Protocol

from .forks import renew_after_fork
from .sinks import CallRecord
from .verdict import Verdict

#: checks whose findings make a call ``rate-limited`` in ``aimsec_calls_total``
ADMISSION_CHECKS = frozenset({"rate_limit", "min_interval", "lockout", "store_unavailable"})
#: checks whose findings make it ``adversarial`` (an attack on the model, not bad input)
ATTACK_CHECKS = frozenset({"adversarial", "near_duplicate", "extraction", "repeat"})
#: seconds; the guard's own cost is around a tenth of a millisecond
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)


def available() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def outcome_of(event: CallRecord) -> str:
    """The call's ``outcome`` label: ``error`` if the model or a detector raised, else what
    its findings make it (whether or not monitor mode let it through)."""
    if event.outcome == "error":
        return "error"
    checks = event.verdict.checks
    if not checks:
        return "allowed"
    if ADMISSION_CHECKS.intersection(checks):
        return "rate-limited"
    if ATTACK_CHECKS.intersection(checks):
        return "adversarial"
    return "invalid"


#: id(registry) -> its Metrics (which holds the registry, so the id is never reused)
_by_registry: dict[int, Metrics] = {}
_lock = threading.Lock()
renew_after_fork(sys.modules[__name__])  # a child forked while it was held


class Queue(Protocol):
    @property
    def depth(self) -> int: ...


class Metrics:
    """The collectors, registered once per ``registry`` (default: prometheus_client's
    global ``REGISTRY``): ``Metrics(registry)`` and :func:`metrics_for` give the same
    object for the same registry, so neither registers a name twice. Methods never
    raise."""

    def __new__(cls, registry: Any = None) -> Metrics:
        import prometheus_client as prom

        registry = registry if registry is not None else prom.REGISTRY
        with _lock:
            found = _by_registry.get(id(registry))
            if found is None or found.registry is not registry:
                found = super().__new__(cls)
                found._register(registry)
                _by_registry[id(registry)] = found
            return found

    def __init__(self, registry: Any = None) -> None:
        """Nothing to do: :meth:`__new__` registered the collectors, once."""

    def __copy__(self) -> Metrics:  # the registry's collectors: a copy is the same ones
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Metrics:
        return self

    def _register(self, registry: Any) -> None:
        import prometheus_client as prom

        self.registry = r = registry
        self.calls = prom.Counter("aimsec_calls", "Guarded calls by outcome",
                                  ["model", "outcome"], registry=r)
        self.latency = prom.Histogram("aimsec_guard_latency_seconds",
                                      "Time the guard adds to a call (seconds)", ["model"],
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.findings = prom.Counter("aimsec_findings", "Findings by check",
                                     ["model", "check", "severity"], registry=r)
        self.incidents = prom.Counter("aimsec_incidents", "Incidents opened, by severity",
                                      ["severity"], registry=r)
        self.alerts = prom.Counter("aimsec_alerts", "Alert deliveries by channel and status",
                                   ["channel", "status"], registry=r)
        self.dropped = prom.Counter("aimsec_alert_queue_dropped",
                                    "Incident/alert work dropped because the queue was full",
                                    ["severity"], registry=r)
        # computed at scrape time (below), which prometheus_client's multiprocess mode
        # skips: there it reads 0; "livesum" makes that one series, not one per process
        # id (a series more for every recycled worker, kept in the folder for ever)
        self._depth = prom.Gauge("aimsec_alert_queue_depth",
                                 "Occurrences waiting for the background worker", registry=r,
                                 multiprocess_mode="livesum")
        self._queues: weakref.WeakSet[Any] = weakref.WeakSet()
        self._depth.set_function(lambda: sum(queue.depth for queue in list(self._queues)))

    def record_call(self, event: CallRecord) -> None:
        v: Verdict = event.verdict
        self.calls.labels(v.model, outcome_of(event)).inc()
        self.latency.labels(v.model).observe(event.latency_s)
        for finding in v.findings:
            self.findings.labels(v.model, finding.check, finding.severity).inc()

    def incident_opened(self, severity: str) -> None:
        self.incidents.labels(severity).inc()

    def alert(self, channel: str, status: str) -> None:
        self.alerts.labels(channel, status).inc()

    def drop(self, severity: str) -> None:
        self.dropped.labels(severity).inc()

    def watch_queue(self, queue: Queue) -> None:
        """Add ``queue`` (held weakly) to those whose ``depth`` the gauge sums at scrape
        time."""
        self._queues.add(queue)


class NullMetrics:
    """Used when prometheus_client is missing or metrics are off: every method is a no-op."""

    def record_call(self, event: CallRecord) -> None: ...

    def incident_opened(self, severity: str) -> None: ...

    def alert(self, channel: str, status: str) -> None: ...

    def drop(self, severity: str) -> None: ...

    def watch_queue(self, queue: Queue) -> None: ...


def metrics_for(registry: Any = None) -> Metrics | NullMetrics:
    """The :class:`Metrics` of ``registry`` (one set of collectors per registry; default:
    the global one), or :class:`NullMetrics` without prometheus_client."""
    if not available():
        return NullMetrics()
    return Metrics(registry)


class MetricsSink:
    """A sink counting every call into ``metrics`` (calls, latency, findings)."""

    def __init__(self, metrics: Metrics | NullMetrics | None = None) -> None:
        self.metrics = metrics if metrics is not None else metrics_for()

    def record(self, event: CallRecord) -> None:
        self.metrics.record_call(event)
