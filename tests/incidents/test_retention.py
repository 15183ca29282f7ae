"""Retention of the incident database: resolved incidents and delivery records older than
the retention go (exactly those), unresolved ones never; a flood of rotating client ids
rolls up beyond ``max_open`` instead of adding a row per client; pruning runs in bounded
steps on the writes, driven by the store's clock; bad settings are refused by name."""

from __future__ import annotations

import json
import logging
import multiprocessing
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from aimsec_core import ConfigurationError
from aimsec_core.cli import main
from aimsec_core.incidents import Evidence, IncidentStore, IncidentStoreError, Occurrence
from aimsec_core.incidents.model import MAX_CLIENTS, ROLLUP_CLIENT
from aimsec_core.incidents.retention import DAY_S, RetentionPolicy
from aimsec_core.incidents.schema import MIGRATIONS
from aimsec_core.reporting.incidents import load_incidents, summarise_incidents

from tests.fakes import FakeClock
from tests.incidents import in_threads

ALL = ("open", "acknowledged", "resolved")


def occ(at, client="203.0.113.7", threat="rate_limit", count=1, model="digits",
        severity="high", reason=None):
    evidence = Evidence()
    evidence.add(reason=reason)
    return Occurrence(model, threat, client, severity, at, at, count, evidence)


def store_at(path, clock, **policy):
    policy.setdefault("every_s", 60.0)
    return IncidentStore(path, clock=clock, window_s=3600,
                         retention=RetentionPolicy(**policy))


def rows(path, table):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


# -- what goes and what stays ------------------------------------------------------------

def test_pruning_deletes_exactly_the_resolved_incidents_and_deliveries_older_than_retention(
        tmp_path, clock):
    store = store_at(tmp_path / "i.sqlite3", clock, retention_days=30)
    now = clock()
    cutoff = now - 30 * DAY_S
    ages = {"older": cutoff - 1, "at": cutoff, "newer": cutoff + 1}
    ids = {}
    for name, at in ages.items():
        for status in ALL:
            [(incident, _)] = store.record([occ(at, client=f"{name}-{status}")])
            store.set_status(incident.id, status)
            ids[name, status] = incident.id
        store.record_delivery(group_key=name, channel="smtp", status="sent", attempt=1,
                              time_s=at)
    [(last, _)] = store.record([occ(now, client="latest")])  # the highest id is kept anyway
    done = store.prune()
    assert (done.incidents, done.findings, done.deliveries) == (1, 1, 1)
    left = {i.id for i in store.incidents(statuses=ALL, limit=100)}
    assert left == set(ids.values()) - {ids["older", "resolved"]} | {last.id}
    assert [d["group_key"] for d in store.deliveries()] == ["at", "newer"]
    assert store.pruned() == {
        "incidents": {"rows": 1, "findings": 1, "latest": ages["older"]},
        "deliveries": {"rows": 1, "findings": 0, "latest": ages["older"]}}
    assert store.prune().incidents == 0  # nothing left to delete: a second run is a no-op


def test_open_and_acknowledged_incidents_are_kept_however_old(tmp_path, clock):
    store = store_at(tmp_path / "i.sqlite3", clock, retention_days=1)
    [(opened, _)] = store.record([occ(clock(), client="a")])
    [(acked, _)] = store.record([occ(clock(), client="b")])
    store.set_status(acked.id, "acknowledged")
    clock.advance(1000 * DAY_S)
    assert store.prune().incidents == 0
    assert {i.id for i in store.incidents(statuses=ALL)} == {opened.id, acked.id}


def test_the_incident_with_the_highest_id_is_kept_so_its_id_is_never_given_again(
        tmp_path, clock):
    """SQLite gives a new row the highest id + 1: deleting the newest incident let the
    next one take its id, which delivery records and alerts still named."""
    store = store_at(tmp_path / "i.sqlite3", clock, retention_days=1)
    [(first, _)] = store.record([occ(clock(), client="a")])
    [(second, _)] = store.record([occ(clock(), client="b")])
    store.set_status(first.id, "resolved")
    store.set_status(second.id, "resolved")
    clock.advance(2 * DAY_S)
    assert store.prune().incidents == 1
    [(third, _)] = store.record([occ(clock(), client="c")])
    assert third.id > second.id


def test_zero_days_keeps_everything(tmp_path, clock):
    store = store_at(tmp_path / "i.sqlite3", clock, retention_days=0, max_deliveries=0)
    [(incident, _)] = store.record([occ(clock())])
    store.set_status(incident.id, "resolved")
    store.record_delivery(group_key="k", channel="smtp", status="sent", attempt=1,
                          time_s=0.0)
    clock.advance(10_000 * DAY_S)
    store.record([occ(clock(), client="x")])
    assert store.prune().incidents == 0
    assert len(store.incidents(statuses=ALL)) == 2 and len(store.deliveries()) == 1


# -- pruning on the writes: when, how much ------------------------------------------------

def seed_old_resolved(store, clock, n):
    """``n`` resolved incidents last seen 400 days before ``clock``'s now, and one open."""
    old = clock() - 400 * DAY_S
    for i in range(n):
        [(incident, _)] = store.record([occ(old, client=f"old{i}")])
        store.set_status(incident.id, "resolved")
    store.record([occ(clock(), client="fresh")])


def test_writes_prune_in_bounded_steps_once_the_period_has_passed(tmp_path, clock):
    path = tmp_path / "i.sqlite3"
    store = store_at(path, clock, retention_days=90, batch=4, every_s=60)
    seed_old_resolved(store, clock, 10)  # the first write pruned (nothing old yet)
    assert rows(path, "incidents") == 11
    store.record([occ(clock(), client="fresh")])  # the period has not passed: no step
    assert rows(path, "incidents") == 11
    clock.advance(61)
    store.record([occ(clock(), client="fresh")])  # one step: at most `batch` rows
    assert rows(path, "incidents") == 7
    store.record([occ(clock(), client="fresh")])  # it left rows: the next write goes on
    assert rows(path, "incidents") == 3
    store.record([occ(clock(), client="fresh")])
    assert rows(path, "incidents") == 1
    store.record([occ(clock(), client="fresh")])  # done: the period starts again
    store.record_delivery(group_key="k", channel="smtp", status="sent", attempt=1)
    assert rows(path, "incidents") == 1 and store.pruned()["incidents"]["rows"] == 10


def test_a_clock_stepped_back_does_not_hold_pruning_off_for_the_jump(tmp_path, clock):
    path = tmp_path / "i.sqlite3"
    store = store_at(path, clock, retention_days=90, every_s=60)
    store.record([occ(clock(), client="first")])  # a step; the next one a minute later
    seed_old_resolved(store_at(path, clock, retention_days=0), clock, 3)
    clock.advance(-30 * DAY_S)  # an NTP step back: the next step would be 30 days away
    store.record([occ(clock(), client="fresh")])
    assert store.pruned()["incidents"]["rows"] == 3


def test_a_failing_pruning_step_never_fails_the_write_and_is_tried_a_period_later(
        tmp_path, clock, monkeypatch, caplog):
    store = store_at(tmp_path / "i.sqlite3", clock, retention_days=1, every_s=60)
    seed_old_resolved(store, clock, 2)
    calls = []

    def broken(conn, policy, now):
        calls.append(now)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr("aimsec_core.incidents.store.prune_step", broken)
    clock.advance(61)
    with caplog.at_level(logging.WARNING, "aimsec.incidents"):
        [(incident, opened)] = store.record([occ(clock(), client="new")])
    assert opened and store.get(incident.id).count == 1
    assert "could not prune" in caplog.text and len(calls) == 1
    store.record([occ(clock(), client="new")])
    assert len(calls) == 1  # not once per write while it fails
    monkeypatch.undo()
    clock.advance(61)
    store.record([occ(clock(), client="new")])
    assert store.pruned()["incidents"]["rows"] == 2


def test_deliveries_stay_within_their_cap(tmp_path, clock):
    path = tmp_path / "i.sqlite3"
    store = store_at(path, clock, max_deliveries=50, batch=10, every_s=0)
    for i in range(1000):
        store.record_delivery(group_key=f"g{i}", channel="webhook", status="failed",
                              attempt=1)
        assert rows(path, "deliveries") <= 50
    assert [d["group_key"] for d in store.deliveries()][-1] == "g999"
    assert store.pruned()["deliveries"]["rows"] == 950


# -- the cap on unresolved incidents: roll-up --------------------------------------------

def test_a_flood_of_rotating_client_ids_keeps_the_rows_bounded_and_every_finding_counted(
        tmp_path, clock):
    """Before: one incident per client per window, 50,000 rows for 50,000 ids (about
    700 MB an hour at the queue's admission cap). Now: at most ``max_open`` rows, then one
    rolled-up row per (model, threat), which counts every finding and every incident it
    stands for."""
    path = tmp_path / "i.sqlite3"
    store = store_at(path, clock, max_open=100, every_s=0)
    clients = 0
    for hour in range(5):
        for _ in range(10):
            batch = [occ(clock(), client=f"10.{hour}.{clients + i}", count=3,
                         threat=("rate_limit", "repeat")[i % 2]) for i in range(1000)]
            clients += len(batch)
            store.record(batch)
            clock.advance(360)
        assert rows(path, "incidents") <= 100 + 2  # the cap, and a roll-up per threat
    found = store.incidents(limit=1000)
    assert sum(i.count for i in found) == 3 * clients == 150_000
    rolled = [i for i in found if i.rolled_up]
    assert {(i.threat, i.client) for i in rolled} == {("rate_limit", ROLLUP_CLIENT),
                                                       ("repeat", ROLLUP_CLIENT)}
    for incident in rolled:  # 24,950 distinct ids each, estimated within 15%
        assert abs(incident.evidence.rolled_up - (clients - 100) / 2) < 0.15 * clients / 2
        assert len(incident.evidence.clients) == MAX_CLIENTS
    assert rolled[0].last_seen - rolled[0].first_seen > 4 * 3600  # one row for the flood


def test_a_client_with_an_incident_still_joins_it_at_the_cap(tmp_path, clock):
    store = store_at(tmp_path / "i.sqlite3", clock, max_open=2)
    store.record([occ(clock(), client="a"), occ(clock(), client="b")])
    results = store.record([occ(clock(), client="a", count=5), occ(clock(), client="c")])
    (a, a_opened), (rolled, rolled_opened) = results
    assert (a.client, a.count, a_opened) == ("a", 6, False)
    assert (rolled.client, rolled.count, rolled_opened) == (ROLLUP_CLIENT, 1, True)
    assert rolled.evidence.clients == ["c"] and rolled.evidence.rolled_up == 1


def test_resolving_incidents_lifts_the_cap_and_a_resolved_roll_up_starts_a_new_one(
        tmp_path, clock):
    store = store_at(tmp_path / "i.sqlite3", clock, max_open=1)
    [(a, _)] = store.record([occ(clock(), client="a")])
    [(rolled, _)] = store.record([occ(clock(), client="b")])
    assert rolled.rolled_up
    store.set_status(rolled.id, "resolved")
    [(again, opened)] = store.record([occ(clock(), client="c")])
    assert opened and again.rolled_up and again.id != rolled.id
    store.set_status(a.id, "resolved")
    store.set_status(again.id, "resolved")
    [(own, _)] = store.record([occ(clock(), client="d")])
    assert own.client == "d"


def test_a_roll_up_leaves_the_occurrence_as_it_was(tmp_path, clock):
    """The dispatcher writes a batch again after a failed write: the occurrence is left as
    it was, and a client counts once however often it comes back."""
    store = store_at(tmp_path / "i.sqlite3", clock, max_open=1)
    store.record([occ(clock(), client="a")])
    late = occ(clock(), client="b", reason="too many")
    store.record([late])
    store.record([late])
    assert late.evidence.as_dict() == {"reasons": ["too many"], "scores": [],
                                       "input_hashes": []}
    [rolled] = [i for i in store.incidents() if i.rolled_up]
    assert rolled.count == 2
    assert rolled.evidence.rolled_up == 1 and rolled.evidence.clients == ["b"]


def test_rolled_up_evidence_reads_back_bounded_from_an_edited_file():
    evidence = Evidence.from_dict({"clients": ["x"] * 3 + [f"c{i}" for i in range(99)] + [7],
                                   "rolled_up": 12, "client_sketch": "Z" * 256})
    assert len(evidence.clients) == MAX_CLIENTS and evidence.clients[0] == "x"
    assert evidence.client_sketch == ""  # "Z" (61) is beyond any register: dropped
    assert evidence.rolled_up == MAX_CLIENTS  # a full sample: at least that many
    assert Evidence.from_dict({"rolled_up": 40}).as_dict() == {
        "reasons": [], "scores": [], "input_hashes": []}
    with pytest.raises(ValueError, match="'clients' is a JSON str; expected a list"):
        Evidence.from_dict({"clients": "abc"})


def test_distinct_clients_are_exact_while_the_sample_holds_them_then_estimated():
    evidence = Evidence()
    for round_ in range(3):  # the same clients again: counted once
        for i in range(MAX_CLIENTS - 1):
            evidence.roll_up(f"client-{i}")
    assert evidence.rolled_up == MAX_CLIENTS - 1
    for n in (1_000, 100_000):
        big = Evidence()
        for i in range(n):
            big.roll_up(f"198.51.{i}")
        assert abs(big.rolled_up - n) < 0.15 * n
        # two processes' rows, overlapping by a third: merged, not added
        first, second = Evidence(), Evidence()
        for i in range(n):
            (first if i % 2 else second).roll_up(f"198.51.{i}")
            if i % 3 == 0:
                first.roll_up(f"198.51.{i}")
        first.merge(second)
        assert first.client_sketch == big.client_sketch


# -- two writers at once ------------------------------------------------------------------

FAR_FUTURE = 2_000_000_000.0


def write_and_prune(path: str, worker: int) -> None:
    store = IncidentStore(path, clock=lambda: FAR_FUTURE, timeout_s=60,
                          retention=RetentionPolicy(retention_days=30, max_open=40,
                                                    batch=7, every_s=0))

    def work(thread: int) -> None:
        for i in range(50):
            store.record([occ(FAR_FUTURE, client=f"w{worker}t{thread}c{i % 20}", count=2)])
            store.record_delivery(group_key=f"w{worker}", channel="smtp",
                                  status="sent", attempt=1, time_s=FAR_FUTURE)

    in_threads(store, work, 3)


def test_two_processes_writing_and_pruning_at_once(tmp_path: Path):
    path = str(tmp_path / "i.sqlite3")
    seed = IncidentStore(path, retention=RetentionPolicy(retention_days=0, max_open=0))
    old = FAR_FUTURE - 100 * DAY_S
    for i in range(60):
        [(incident, _)] = seed.record([occ(old, client=f"old{i}")])
        seed.set_status(incident.id, "resolved")
        seed.record_delivery(group_key="old", channel="smtp", status="sent", attempt=1,
                             time_s=old)
    seed.record([occ(FAR_FUTURE - 60, client="keeper")])  # newest id: the old ones can go
    seed.close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=write_and_prune, args=(path, w)) for w in range(2)]
    for w in workers:
        w.start()
    write_and_prune(path, 2)  # and a third writer in this process
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    store = IncidentStore(path, read_only=True)
    found = store.incidents(statuses=ALL, limit=10_000)
    assert not any(i.client.startswith("old") for i in found)
    assert store.pruned()["incidents"]["rows"] == 60  # each deleted once, tallied once
    assert store.pruned()["deliveries"]["rows"] == 60
    assert sum(i.count for i in found) == 3 * 3 * 50 * 2 + 1  # no finding lost
    assert len(found) <= 40 + 1
    assert [d["group_key"] for d in store.deliveries()].count("old") == 0
    assert len(store.deliveries()) == 3 * 3 * 50


# -- settings -----------------------------------------------------------------------------

@pytest.mark.parametrize("variable, raw, expected", [
    ("AIMSEC_INCIDENT_RETENTION_DAYS", "-1", "finite number of days >= 0"),
    ("AIMSEC_INCIDENT_RETENTION_DAYS", "nan", "finite number of days >= 0"),
    ("AIMSEC_INCIDENT_RETENTION_DAYS", "inf", "finite number of days >= 0"),
    ("AIMSEC_INCIDENT_RETENTION_DAYS", "a week", "finite number of days >= 0"),
    ("AIMSEC_INCIDENT_MAX_OPEN", "-5", "non-negative integer"),
    ("AIMSEC_INCIDENT_MAX_OPEN", "1.5", "non-negative integer"),
    ("AIMSEC_INCIDENT_MAX_DELIVERIES", "lots", "non-negative integer"),
])
def test_a_bad_environment_value_is_refused_naming_the_variable(tmp_path, monkeypatch,
                                                                variable, raw, expected):
    monkeypatch.setenv(variable, raw)
    with pytest.raises(ConfigurationError) as caught:
        IncidentStore(tmp_path / "i.sqlite3")
    message = str(caught.value)
    assert variable in message and expected in message and repr(raw) in message


@pytest.mark.parametrize("setting, value, expected", [
    ("retention_days", -1, "AIMSEC_INCIDENT_RETENTION_DAYS"),
    ("retention_days", float("nan"), "AIMSEC_INCIDENT_RETENTION_DAYS"),
    ("retention_days", True, "AIMSEC_INCIDENT_RETENTION_DAYS"),
    ("retention_days", "30", "AIMSEC_INCIDENT_RETENTION_DAYS"),
    ("max_open", -1, "AIMSEC_INCIDENT_MAX_OPEN"),
    ("max_open", 2.0, "AIMSEC_INCIDENT_MAX_OPEN"),
    ("max_open", 2**63, "AIMSEC_INCIDENT_MAX_OPEN"),
    ("max_deliveries", "many", "AIMSEC_INCIDENT_MAX_DELIVERIES"),
    ("batch", 0, "batch"),
    ("every_s", float("inf"), "every_s"),
])
def test_a_bad_explicit_value_is_refused_naming_the_setting(setting, value, expected):
    with pytest.raises(ConfigurationError, match=f"{expected}.*expected.*received"):
        RetentionPolicy(**{setting: value})


def test_settings_come_from_the_environment_and_numpy_numbers_are_accepted(monkeypatch):
    monkeypatch.setenv("AIMSEC_INCIDENT_RETENTION_DAYS", "7.5")
    monkeypatch.setenv("AIMSEC_INCIDENT_MAX_OPEN", "0")
    monkeypatch.setenv("AIMSEC_INCIDENT_MAX_DELIVERIES", "12")
    policy = RetentionPolicy.resolve()
    assert (policy.retention_days, policy.max_open, policy.max_deliveries) == (7.5, 0, 12)
    assert RetentionPolicy.resolve(retention_days=1, max_open=3).max_open == 3
    numpy = RetentionPolicy(np.float32(2), np.int64(3))
    assert type(numpy.retention_days) is float and type(numpy.max_open) is int


def test_the_store_refuses_a_retention_of_another_type(tmp_path):
    with pytest.raises(ConfigurationError, match="RetentionPolicy or None; received dict"):
        IncidentStore(tmp_path / "i.sqlite3", retention={"retention_days": 3})


# -- old files, readers, the command and the report ---------------------------------------

def test_a_schema_2_file_gains_the_pruned_table_and_a_reader_of_one_sees_no_tally(
        tmp_path, clock):
    path = tmp_path / "v2.sqlite3"
    conn = sqlite3.connect(path)
    for step in MIGRATIONS[:2]:
        for statement in step:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    assert IncidentStore(path, read_only=True).pruned() == {}
    store = store_at(path, clock, retention_days=1)
    store.record([occ(clock())])
    assert store.pruned() == {}
    assert rows(path, "pruned") == 0


def test_a_read_only_store_does_not_prune(tmp_path, clock):
    store_at(tmp_path / "i.sqlite3", clock).record([occ(clock())])
    with pytest.raises(IncidentStoreError, match="read-only; pruning needs it writable"):
        IncidentStore(tmp_path / "i.sqlite3", read_only=True).prune()


def test_the_command_prunes_on_demand(tmp_path, capsys):
    path = tmp_path / "i.sqlite3"
    clock = FakeClock(time.time())  # the command's clock is the real one
    store = store_at(path, clock, retention_days=0)
    seed_old_resolved(store, clock, 3)
    store.close()
    assert main(["incidents", "--db", str(path), "--prune", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["incidents"] == 3
    with pytest.raises(SystemExit, match="2"):
        main(["incidents", "--db", str(path), "--prune", "--retention-days", "0"])
    assert "expected a finite number of days > 0; received '0'" in capsys.readouterr().err
    assert main(["incidents", "--db", str(path), "--retention-days", "3"]) == 2
    assert "--retention-days goes with --prune" in capsys.readouterr().err
    assert main(["incidents", "--db", str(path), "--prune", "--ack", "1"]) == 2
    for change in (["--prune"], ["--ack", "1"], ["--resolve", "1"]):
        for listing in (["--since", "1h"], ["--severity", "high"], ["--status", "all"],
                        ["--limit", "5"]):  # ignored, they let an operator think the
            # change was limited to what they select
            assert main(["incidents", "--db", str(path), *change, *listing]) == 2
            assert "expected no listing filter" in capsys.readouterr().err
    assert main(["incidents", "--db", str(tmp_path / "none.sqlite3"), "--prune"]) == 0
    assert "nothing to prune" in capsys.readouterr().out
    assert not (tmp_path / "none.sqlite3").exists()


def test_the_listing_shows_what_a_rolled_up_incident_stands_for(tmp_path, clock, capsys):
    path = tmp_path / "i.sqlite3"
    store = store_at(path, clock, max_open=1)
    store.record([occ(clock(), client=f"10.0.0.{i}") for i in range(5)])
    store.close()
    assert main(["incidents", "--db", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the cell wraps beside count and age
    assert f"{ROLLUP_CLIENT}: 4" in out and "incidents (10.0.0.1," in out
    assert "10.0.0.3, …)" in out and "10.0.0.4" not in out


def test_the_report_counts_roll_ups_and_says_what_retention_deleted(tmp_path, clock):
    path = tmp_path / "i.sqlite3"
    store = store_at(path, clock, retention_days=90, max_open=2)
    seed_old_resolved(store, clock, 4)
    store.record([occ(clock(), client=f"c{i}", count=2) for i in range(6)])
    assert store.prune().incidents == 4
    store.close()
    source, note = load_incidents(path, since=clock() - 500 * DAY_S)
    assert "retention deleted 4 resolved incident(s) (4 finding(s)) last seen up to" in note
    section = summarise_incidents(source, note=note)
    # "fresh", "c0" (the cap's second row) and one roll-up standing for c1 .. c5
    assert (section.total, section.rolled_up_rows, section.rolled_up) == (3, 1, 5)
    [rolled] = [r for r in section.listed if r.rolled_up]
    assert rolled.client == ROLLUP_CLIENT and rolled.clients == [f"c{i}" for i in range(1, 6)]
    assert rolled.count == 10
    # a period that starts after what was deleted was last seen misses nothing: no note
    assert load_incidents(path, since=clock() - 365 * DAY_S)[1] == ""


def test_the_report_page_shows_a_roll_up(tmp_path, clock):
    from aimsec_core.reporting.html import _environment

    store = store_at(tmp_path / "i.sqlite3", clock, max_open=1)
    store.record([occ(clock(), client=f"c{i}") for i in range(3)])
    store.close()
    source, note = load_incidents(tmp_path / "i.sqlite3")
    section = summarise_incidents(source, note=note)
    template = _environment().from_string(
        "{% for i in r.listed %}{% if i.rolled_up %}{{ i.client }}: {{ i.rolled_up | num }} "
        "incidents, e.g. {{ i.clients[:5] | join(', ') }}{% endif %}{% endfor %}")
    assert template.render(r=section) == f"{ROLLUP_CLIENT}: 2 incidents, e.g. c1, c2"


def test_the_original_summary_counts_a_roll_up_s_clients(tmp_path, clock):
    store = store_at(tmp_path / "i.sqlite3", clock, max_open=2)
    store.record([occ(clock(), client=f"10.0.0.{i}") for i in range(7)])
    summary = store.summary(since=clock() - 60)
    assert summary["total_incidents"] == 3  # two of their own, one roll-up
    assert summary["unique_ips"] == 7  # not 3 with "(further clients)" among them
    assert summary["most_common_threats"] == {"rate_limit": 7}


def test_a_flood_through_the_guard_s_sink_and_worker_stays_bounded(tmp_path, clock,
                                                                   channel):
    """The path a guard takes: the sink queues, the worker writes a batch a round and
    sends the alerts; 20,000 rotating ids over two hours leave the cap's rows, a roll-up,
    and delivery records within their cap."""
    from aimsec_core.alerts import Dispatcher, Grouper, GroupingPolicy
    from aimsec_core.incidents import IncidentSink
    from aimsec_core.sinks import CallRecord
    from aimsec_core.verdict import Finding, Verdict

    path = tmp_path / "i.sqlite3"
    store = store_at(path, clock, max_open=50, max_deliveries=30, batch=10, every_s=0)
    policy = GroupingPolicy(group_wait=0, max_clients=0, floor="medium")
    dispatcher = Dispatcher(store, Grouper(policy, clock=clock), [channel], clock=clock,
                            start=False)
    sink = IncidentSink(dispatcher)
    for i in range(20_000):
        verdict = Verdict(allowed=False, mode="enforce", model="digits",
                          client=f"198.51.{i // 250}.{i % 250}", batch_size=1,
                          flags=(True,), findings=(Finding("rate_limit", "over the rate"),),
                          timestamp=clock())
        sink.record(CallRecord(verdict, "rejected", 0.0001))
        if i % 100 == 99:
            clock.advance(36)
            dispatcher.pump()
    dispatcher.pump(force=True)
    assert rows(path, "incidents") == 51
    assert rows(path, "deliveries") <= 30
    assert len(channel.sent) > 30  # an alert per id (no client cap): records pruned
    found = store.incidents(limit=100)
    assert sum(i.count for i in found) == 20_000
    [rolled] = [i for i in found if i.rolled_up]
    assert abs(rolled.evidence.rolled_up - 19_950) < 0.15 * 19_950


def test_the_report_recommends_triage_when_incidents_roll_up(tmp_path, clock):
    from datetime import datetime, timezone

    from aimsec_core.reporting.aggregate import Aggregator
    from aimsec_core.reporting.model import build_report
    from aimsec_core.reporting.reader import ReadStats
    from aimsec_core.reporting.recommend import recommend

    store = store_at(tmp_path / "i.sqlite3", clock, max_open=1)
    store.record([occ(clock(), client=f"c{i}", severity="medium") for i in range(4)])
    store.close()
    source, note = load_incidents(tmp_path / "i.sqlite3")
    section = summarise_incidents(source, note=note)
    report = build_report(Aggregator(), ReadStats(), section, since=None, until=None,
                          model=None, generated=datetime.now(timezone.utc))
    [advice] = [r for r in recommend(report) if "rolled_up_incidents" in r.evidence]
    assert advice.evidence == {"rolled_up_incidents": 1, "clients_rolled_up": 3}
    assert "AIMSEC_INCIDENT_MAX_OPEN" in advice.title and "--resolve" in advice.action


def test_an_alert_of_a_client_whose_incident_rolled_up_names_the_rolled_up_incident(
        tmp_path, clock, channel):
    from aimsec_core.alerts import Dispatcher, Grouper, GroupingPolicy

    store = store_at(tmp_path / "i.sqlite3", clock, max_open=1)
    policy = GroupingPolicy(group_wait=0, max_clients=5)  # the alert groups are per client
    dispatcher = Dispatcher(store, Grouper(policy, clock=clock), [channel], clock=clock,
                            start=False)
    dispatcher.submit(occ(clock(), client="first", severity="high"))
    dispatcher.submit(occ(clock(), client="second", severity="high"))
    dispatcher.pump()
    clock.advance(1)
    dispatcher.pump()
    [rolled] = [i for i in store.incidents() if i.rolled_up]
    sent = {alert.client: alert.incident_id for alert in channel.sent}
    assert sent["second"] == rolled.id and sent["first"] != rolled.id


def test_a_batch_beyond_the_cap_writes_its_roll_up_once_and_opens_it_once(tmp_path, clock):
    store = store_at(tmp_path / "i.sqlite3", clock, max_open=1)
    results = store.record([occ(clock(), client=c, count=2, severity=s)
                            for c, s in (("a", "medium"), ("b", "medium"), ("c", "high"),
                                         ("d", "medium"))])
    assert [(i.client, opened) for i, opened in results] == [
        ("a", True), (ROLLUP_CLIENT, True), (ROLLUP_CLIENT, False), (ROLLUP_CLIENT, False)]
    rolled = store.get(results[1][0].id)
    assert (rolled.count, rolled.severity, rolled.evidence.clients) == (6, "high",
                                                                        ["b", "c", "d"])
    assert results[3][0] == rolled
