"""Guards raise incidents and alerts by default, off the predict path; guard(...,
incidents=, alerts=) and the environment choose; close() delivers what is queued."""

from __future__ import annotations

import email
import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import aimsec_core
from aimsec_core.alerts import Dispatcher, default_locations, security_sinks
from aimsec_core.audit import AuditLog
from aimsec_core.incidents import IncidentSink, IncidentStore
from aimsec_core.sinks import CallRecord
from aimsec_core.verdict import Finding, Verdict

X = np.eye(4)


@pytest.fixture(scope="module")
def model():
    return LogisticRegression().fit(X, [0, 1, 0, 1])


def call(*findings: Finding) -> CallRecord:
    return CallRecord(Verdict(allowed=True, mode="monitor", model="m", client="c",
                              batch_size=1, findings=findings, input_hash="h" * 32,
                              timestamp=1_800_000_000.0), "flagged", 0.0,
                      arrays={"x": np.full((1, 4), 123456.0)})


def test_the_sink_queues_only_findings_at_or_above_the_floor(clock):
    dispatcher = Dispatcher(None, None, clock=clock, start=False)
    sink = IncidentSink(dispatcher, floor="medium")
    sink.record(call())
    sink.record(call(Finding("format", "bad shape")))  # low
    assert dispatcher.depth == 0
    sink.record(call(Finding("range", "too big"), Finding("adversarial", "odd", score=7.0)))
    queued = {o.threat: o for level in dispatcher._pending for o in level.values()}
    assert set(queued) == {"range", "adversarial"}
    evidence = queued["adversarial"].evidence
    assert evidence.scores == [7.0] and evidence.input_hashes == ["h" * 32]
    assert "123456" not in repr(queued)  # the raw input never reaches an incident


def test_default_guard_records_incidents_and_leaves_alerts_in_the_outbox(model, monkeypatch,
                                                                         tmp_path):
    monkeypatch.setenv("AIMSEC_ALERT_SEVERITY", "medium")
    guarded = aimsec_core.guard(model, name="lr", constraints={"max_value": 1.0})
    kinds = [type(s).__name__ for s in guarded.__aimsec_guard__.sinks]
    assert kinds == ["AuditLog", "MetricsSink", "IncidentSink"]
    with aimsec_core.client("203.0.113.7"):
        for _ in range(5):  # the default policy locks a client out after 5 refused calls
            with pytest.raises(aimsec_core.ValueRangeError):
                guarded.predict(X * 2)
        for _ in range(15):
            with pytest.raises(aimsec_core.ClientBlockedError):
                guarded.predict(X)
    assert guarded.predict(X).tolist() == model.predict(X).tolist()  # anonymous: served
    assert guarded.close(30)
    where = default_locations()
    assert where["incidents"] == (tmp_path / "security_logs" / "incidents.sqlite3").resolve()
    found = {i.threat: i for i in IncidentStore(where["incidents"]).incidents()}
    assert set(found) == {"range", "lockout"}
    assert (found["range"].model, found["range"].client, found["range"].count) == (
        "lr", "203.0.113.7", 5)
    assert (found["lockout"].severity, found["lockout"].count) == ("high", 15)
    messages = [email.message_from_bytes(eml.read_bytes())
                for eml in where["outbox"].glob("*.eml")]
    subjects = sorted(m["Subject"] for m in messages)
    assert any("MEDIUM: range on model lr from 203.0.113.7" in s for s in subjects)
    assert any("HIGH: lockout on model lr from 203.0.113.7" in s for s in subjects)
    counts = [m.get_payload() for m in messages if "range" in m["Subject"]]
    assert any("Count:       5 occurrence(s)" in body for body in counts)  # once, at close


def test_guards_with_the_same_settings_share_one_dispatcher(model):
    first = aimsec_core.guard(model, name="a").__aimsec_guard__.sinks[-1]
    second = aimsec_core.guard(model, name="b").__aimsec_guard__.sinks[-1]
    assert first.dispatcher is second.dispatcher


def test_incidents_and_alerts_can_be_turned_off(model, monkeypatch, tmp_path):
    guarded = aimsec_core.guard(model, incidents=False, alerts=False)
    assert [type(s) for s in guarded.__aimsec_guard__.sinks][:1] == [AuditLog]
    assert not any(isinstance(s, IncidentSink) for s in guarded.__aimsec_guard__.sinks)
    monkeypatch.setenv("AIMSEC_INCIDENTS", "0")
    monkeypatch.setenv("AIMSEC_ALERTS", "0")
    monkeypatch.setenv("AIMSEC_METRICS", "0")
    assert security_sinks() == []


def test_explicit_database_and_channels(model, tmp_path, channel):
    guarded = aimsec_core.guard(model, name="lr", constraints={"max_value": 1.0},
                                incidents=tmp_path / "mine.sqlite3", alerts=[channel])
    sink = guarded.__aimsec_guard__.sinks[-1]
    assert sink.dispatcher.store.path == (tmp_path / "mine.sqlite3").resolve()
    assert sink.dispatcher.channels == [channel]


def test_sinks_and_incidents_together_are_refused(model, sink):
    with pytest.raises(aimsec_core.ConfigurationError, match="either sinks"):
        aimsec_core.guard(model, sinks=[sink], incidents=False)
    with pytest.raises(aimsec_core.ConfigurationError, match="incidents="):
        aimsec_core.guard(model, incidents=42)


@pytest.mark.parametrize("alerts", [42, 1.5, "webhook"])
def test_alerts_of_the_wrong_kind_are_a_configuration_error(model, alerts):
    """``alerts=42`` ended in a bare TypeError: 'int' object is not iterable."""
    with pytest.raises(aimsec_core.ConfigurationError, match="alerts= takes True, False"):
        aimsec_core.guard(model, incidents=False, alerts=alerts)


def test_a_broken_incident_database_never_reaches_a_prediction(model, tmp_path):
    guarded = aimsec_core.guard(model, constraints={"max_value": 1.0},
                                incidents=tmp_path / "db.sqlite3", alerts=False)
    (tmp_path / "db.sqlite3").mkdir()  # broken after the guard was built: no file opens
    with pytest.raises(aimsec_core.ValueRangeError):
        guarded.predict(X * 2)
    assert guarded.predict(X).tolist() == model.predict(X).tolist()
    guarded.close(5)


@pytest.mark.parametrize("place", ["folder", "text file", "under a file"])
@pytest.mark.parametrize("given", ["argument", "environment"])
def test_a_path_that_can_never_hold_the_database_is_refused_when_built(model, tmp_path,
                                                                       monkeypatch, place,
                                                                       given):
    """``AIMSEC_INCIDENT_DB`` naming a folder (or a text file, or a path under a file) was
    accepted: every incident was then lost, one logged error per round, and the last
    ones at exit with "kept, retried in 5 s"."""
    (tmp_path / "notes.txt").write_text("not a database\n")
    path = {"folder": tmp_path, "text file": tmp_path / "notes.txt",
            "under a file": tmp_path / "notes.txt" / "db.sqlite3"}[place]
    if given == "environment":
        monkeypatch.setenv("AIMSEC_INCIDENT_DB", str(path))
    with pytest.raises(aimsec_core.ConfigurationError, match="the incident database .*; "
                       "expected an SQLite file or a path where one can be made"):
        aimsec_core.guard(model, incidents=path if given == "argument" else None,
                          alerts=False)


@pytest.mark.parametrize("place", ["fifo", "device"])
def test_a_path_that_is_not_a_regular_file_is_refused_when_built(model, tmp_path, place):
    """``AIMSEC_INCIDENT_DB`` naming a FIFO hung ``guard()`` for good (the check read its
    first bytes, waiting for a writer), and one naming a device (``/dev/null``) was taken:
    every incident was then lost ("disk I/O error" each round). Here the FIFO holds an
    SQLite header, so that the old check returned instead of hanging the test."""
    if place == "fifo":
        path = tmp_path / "incidents.sqlite3"
        os.mkfifo(path)
        held = os.open(path, os.O_RDWR | os.O_NONBLOCK)  # a writer, with a header waiting
        os.write(held, b"SQLite format 3\x00")
    else:
        path, held = Path(os.devnull), None
    try:
        with pytest.raises(aimsec_core.ConfigurationError, match="is not a regular file.*"
                           "expected an SQLite file or a path where one can be made"):
            aimsec_core.guard(model, incidents=path, alerts=False)
    finally:
        if held is not None:
            os.close(held)


def test_an_empty_file_or_an_existing_database_is_taken(model, tmp_path):
    (tmp_path / "empty.sqlite3").touch()  # SQLite starts an empty file as a database
    IncidentStore(tmp_path / "db.sqlite3").incidents()
    for name in ("empty.sqlite3", "db.sqlite3"):
        aimsec_core.guard(model, incidents=tmp_path / name, alerts=False).close(5)


def test_a_demo_can_alert_on_medium_findings(model, tmp_path):
    from aimsec_core.alerts import GroupingPolicy

    sinks = security_sinks(policy=GroupingPolicy.resolve(floor="medium"), metrics=False)
    guarded = aimsec_core.guard(model, name="demo", constraints={"max_value": 1.0},
                                sinks=[AuditLog(), *sinks])
    with pytest.raises(aimsec_core.ValueRangeError):
        guarded.predict(X * 2)
    assert guarded.close(30)
    assert len(list(default_locations()["outbox"].glob("*.eml"))) == 1


@pytest.mark.parametrize("score", ["0.9", b"1", np.array([1.0, 2.0]), 10**400, object(),
                                   True])
def test_a_score_that_is_not_one_number_loses_no_finding(clock, score):
    """A third-party check's score of another type (text, an array, an int no float can
    hold) raised from the evidence, failing the sink: that finding and every later one of
    the call made no incident. The score is now left out of the evidence."""
    dispatcher = Dispatcher(None, None, clock=clock, start=False)
    sink = IncidentSink(dispatcher, floor="medium")
    sink.record(call(Finding("third_party", "odd", score=score),
                     Finding("adversarial", "odd", score=np.float32(3.5))))
    queued = {o.threat: o for level in dispatcher._pending for o in level.values()}
    assert set(queued) == {"third_party", "adversarial"}
    assert queued["third_party"].evidence.scores == []
    assert queued["adversarial"].evidence.scores == [3.5]


@pytest.mark.parametrize("floor", ["bogus", "HIGH", 3])
def test_a_floor_given_in_code_is_a_configuration_error(clock, floor):
    """AIMSEC_INCIDENT_SEVERITY=bogus is a ConfigurationError naming the setting;
    IncidentSink(floor="bogus") was a bare ValueError from the severity scale."""
    with pytest.raises(aimsec_core.ConfigurationError, match="AIMSEC_INCIDENT_SEVERITY"):
        IncidentSink(Dispatcher(None, None, clock=clock, start=False), floor=floor)
