"""Prometheus metrics on an injected registry, never labelled by client; without
prometheus_client nothing breaks."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sklearn.linear_model import LogisticRegression

import aimsec_core
from aimsec_core.alerts import Dispatcher, Grouper, GroupingPolicy
from aimsec_core.incidents import IncidentStore, Occurrence
from aimsec_core.metrics import Metrics, MetricsSink, outcome_of
from aimsec_core.sinks import CallRecord
from aimsec_core.verdict import Finding, Verdict

from tests.fakes import ListChannel


def record(outcome: str, *checks: str) -> CallRecord:
    findings = tuple(Finding(c, "why") for c in checks)
    return CallRecord(Verdict(allowed=outcome == "allowed", mode="enforce", model="m",
                              client="203.0.113.7", batch_size=1, findings=findings),
                      outcome, 0.0002)


@pytest.mark.parametrize("outcome, checks, label", [
    ("allowed", (), "allowed"), ("rejected", ("range",), "invalid"),
    ("rejected", ("adversarial",), "adversarial"), ("rejected", ("rate_limit",), "rate-limited"),
    ("rejected", ("lockout", "range"), "rate-limited"), ("flagged", ("extraction",), "adversarial"),
    ("error", (), "error"),
])
def test_outcome_labels(outcome, checks, label):
    assert outcome_of(record(outcome, *checks)) == label


def test_a_guard_counts_calls_latency_and_findings_without_client_labels():
    registry = CollectorRegistry()
    model = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
    guarded = aimsec_core.guard(model, name="lr", constraints={"max_value": 1.0},
                                sinks=[MetricsSink(Metrics(registry))])
    with aimsec_core.client("203.0.113.7"):
        for _ in range(3):
            guarded.predict(np.eye(4))
        with pytest.raises(aimsec_core.ValueRangeError):
            guarded.predict(np.eye(4) * 5)
    value = registry.get_sample_value
    assert value("aimsec_calls_total", {"model": "lr", "outcome": "allowed"}) == 3
    assert value("aimsec_calls_total", {"model": "lr", "outcome": "invalid"}) == 1
    assert value("aimsec_guard_latency_seconds_count", {"model": "lr"}) == 4
    assert value("aimsec_findings_total",
                 {"model": "lr", "check": "range", "severity": "medium"}) == 1
    exposition = generate_latest(registry).decode()
    assert "203.0.113.7" not in exposition and "client" not in exposition


def test_incidents_alerts_and_queue_metrics(tmp_path, clock):
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    dispatcher = Dispatcher(IncidentStore(tmp_path / "db.sqlite3"),
                            Grouper(GroupingPolicy(group_wait=0), clock=clock), [ListChannel()],
                            capacity=2, clock=clock, metrics=metrics, start=False)
    for client in ("a", "b", "c"):
        dispatcher.submit(Occurrence("m", "adversarial", client, "high", clock(), clock()))
    assert registry.get_sample_value("aimsec_alert_queue_depth") == 2
    assert registry.get_sample_value("aimsec_alert_queue_dropped_total",
                                     {"severity": "high"}) == 1
    dispatcher.pump()
    assert registry.get_sample_value("aimsec_alert_queue_depth") == 0
    assert registry.get_sample_value("aimsec_incidents_total", {"severity": "high"}) == 2
    assert registry.get_sample_value("aimsec_alerts_total",
                                     {"channel": "list", "status": "sent"}) == 2


def test_without_prometheus_client_guards_still_work(tmp_path):
    code = textwrap.dedent(f"""
        import sys, os
        sys.modules["prometheus_client"] = None  # as if it were not installed
        os.environ["SECURITY_LOG_PATH"] = {str(tmp_path)!r}
        import numpy as np, aimsec_core
        from aimsec_core.adapter import HostArrays
        from aimsec_core.guard import Guard
        from aimsec_core.metrics import metrics_for, NullMetrics
        assert isinstance(metrics_for(), NullMetrics)
        guard = Guard(None, HostArrays(None), name="m")
        print(sorted(type(s).__name__ for s in guard.sinks))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['AuditLog', 'IncidentSink']"
