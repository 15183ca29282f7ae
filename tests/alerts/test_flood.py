"""A flood: 10,000 identical high-severity findings within a minute make one alert, one
follow-up carrying the suppressed count, and one incident whose count is 10,000."""

from __future__ import annotations

from aimsec_core.alerts import Dispatcher, Grouper, GroupingPolicy
from aimsec_core.incidents import IncidentSink, IncidentStore
from aimsec_core.sinks import CallRecord
from aimsec_core.verdict import Finding, Verdict


def adversarial_call(clock) -> CallRecord:
    finding = Finding("adversarial", "sample 0: suspicion 9.1", samples=(0,), score=9.1)
    verdict = Verdict(allowed=False, mode="enforce", model="digits", client="203.0.113.7",
                      batch_size=1, flags=(True,), findings=(finding,),
                      input_hash="ab" * 16, timestamp=clock())
    return CallRecord(verdict, "rejected", 0.0001)


def test_flood_makes_one_alert_one_follow_up_and_one_incident(tmp_path, clock, channel):
    store = IncidentStore(tmp_path / "incidents.sqlite3", clock=clock)
    dispatcher = Dispatcher(store, Grouper(GroupingPolicy(), clock=clock), [channel],
                            clock=clock, start=False)
    sink = IncidentSink(dispatcher)
    for i in range(10_000):  # 6 ms apart: one minute; the worker's round every second
        sink.record(adversarial_call(clock))
        clock.advance(0.006)
        if i % 167 == 0:
            dispatcher.pump()
    for _ in range(3600):  # the following hour, a round per second
        clock.advance(1)
        dispatcher.pump()

    first, follow_up = channel.sent
    assert (first.kind, follow_up.kind) == ("new", "update")
    assert first.count + follow_up.suppressed == 10_000
    assert first.suppressed == first.count - 1
    assert follow_up.count == 10_000
    assert first.sent_at - first.first_seen >= 30  # group_wait
    assert follow_up.sent_at - first.sent_at >= 300  # group_interval
    [incident] = store.incidents()
    assert (incident.count, incident.threat, incident.severity) == (10_000, "adversarial",
                                                                    "high")
    assert incident.evidence.input_hashes == ["ab" * 16]
    assert first.incident_id == incident.id
    assert dispatcher.dropped == {"low": 0, "medium": 0, "high": 0, "critical": 0}
