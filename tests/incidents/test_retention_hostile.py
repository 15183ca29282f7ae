"""Retention against edited files, odd settings and operators' mistakes: what a file holds
that aimsec did not write never fails a report or a write, and a command that changes the
database refuses a file that is not one."""

from __future__ import annotations

import json
import sqlite3

import pytest

from aimsec_core import ConfigurationError
from aimsec_core.cli import main
from aimsec_core.incidents import Evidence, IncidentStore, Occurrence
from aimsec_core.incidents.model import CLIENT_NAMED_ROLLUP, MOST_COUNTED, ROLLUP_CLIENT
from aimsec_core.incidents.retention import DAY_S, RetentionPolicy
from aimsec_core.incidents.schema import migrate
from aimsec_core.reporting.incidents import load_incidents, summarise_incidents

ALL = ("open", "acknowledged", "resolved")


def occ(at, client="203.0.113.7", threat="rate_limit", count=1):
    return Occurrence("digits", threat, client, "high", at, at, count, Evidence())


def store_at(path, clock, **policy):
    return IncidentStore(path, clock=clock, window_s=3600,
                         retention=RetentionPolicy(**policy))


def pruned_once(path, clock):
    """A file whose retention deleted one resolved incident of two findings."""
    store = store_at(path, clock, retention_days=30)
    [(old, _)] = store.record([occ(clock() - 40 * DAY_S, client="old", count=2)])
    store.set_status(old.id, "resolved")
    store.record([occ(clock(), client="new")])
    assert store.prune().incidents == 1
    store.close()


def edit(path, statement, *params):
    conn = sqlite3.connect(path)
    try:
        conn.execute(statement, params)
        conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize("latest", [1e300, -1e20, 253_402_300_800.0, 1e18, "soon"])
def test_an_edited_pruned_tally_reads_as_nothing_pruned_and_the_report_still_runs(
        tmp_path, clock, latest):
    path = tmp_path / "i.sqlite3"
    pruned_once(path, clock)
    edit(path, "UPDATE pruned SET latest = ? WHERE kind = 'incidents'", latest)
    source, note = load_incidents(path)  # iso() of such a time raised out of the report
    assert note == ""
    assert summarise_incidents(source, note=note).total == 1
    assert IncidentStore(path, read_only=True).pruned().get("incidents") is None


def test_a_pruned_tally_with_negative_counts_is_left_out(tmp_path, clock):
    path = tmp_path / "i.sqlite3"
    pruned_once(path, clock)
    edit(path, "UPDATE pruned SET rows = -5 WHERE kind = 'incidents'")
    assert load_incidents(path)[1] == ""


@pytest.mark.parametrize("command", [["--prune"], ["--ack", "1"], ["--resolve", "1"]])
def test_a_command_that_changes_the_database_leaves_another_sqlite_file_as_it_was(
        tmp_path, capsys, command):
    path = tmp_path / "other.sqlite3"
    edit(path, "CREATE TABLE notes (body TEXT)")
    assert main(["incidents", "--db", str(path), *command]) == 2
    assert "is not an incident database" in capsys.readouterr().err
    conn = sqlite3.connect(path)
    try:  # it gained aimsec's incidents, deliveries and pruned tables
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    finally:
        conn.close()


def test_pruning_a_file_of_the_previous_schema_migrates_it(tmp_path, capsys):
    path = tmp_path / "v2.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, 2)
    conn.close()
    assert main(["incidents", "--db", str(path), "--prune"]) == 0
    assert "pruned 0 resolved incident(s)" in capsys.readouterr().out
    assert IncidentStore(path, read_only=True).pruned() == {}


def test_a_delivery_record_with_an_edited_time_is_pruned_by_the_cap_like_any_other(
        tmp_path, clock):
    path = tmp_path / "i.sqlite3"
    store = store_at(path, clock, retention_days=0, max_deliveries=3)
    store.pruned()  # creates the file
    edit(path, "INSERT INTO deliveries (time, group_key, channel, status, attempt) "
               "VALUES ('soon', 'g', 'smtp', 'sent', 1)")
    for _ in range(3):
        store.record_delivery(group_key="g", channel="smtp", status="sent", attempt=1)
    # the oldest record beyond the cap alone had no time to take the latest of: every
    # step raised ValueError (max() of nothing), so the cap was never kept again
    done = store.prune()
    assert done.deliveries == 1 and len(store.deliveries()) == 3
    assert store.pruned()["deliveries"] == {"rows": 1, "findings": 0, "latest": 0.0}


def test_an_edited_tally_time_is_replaced_by_the_next_step_and_bad_counts_not_summed(
        tmp_path, clock):
    path = tmp_path / "i.sqlite3"
    pruned_once(path, clock)
    edit(path, "UPDATE pruned SET latest = 1e300 WHERE kind = 'incidents'")
    store = store_at(path, clock, retention_days=30)
    [(old, _)] = store.record([occ(clock() - 50 * DAY_S, client="older")])
    store.set_status(old.id, "resolved")
    edit(path, "UPDATE incidents SET count = -7 WHERE id = ?", old.id)
    store.record([occ(clock(), client="newest")])
    assert store.prune().findings == 0
    assert store.pruned()["incidents"] == {"rows": 2, "findings": 2,
                                           "latest": clock() - 50 * DAY_S}


def test_an_edited_sketch_at_its_top_counts_no_more_clients_than_sqlite_holds(
        tmp_path, clock):
    path = tmp_path / "i.sqlite3"
    store = store_at(path, clock, max_open=1)
    store.record([occ(clock(), client=f"c{i}") for i in range(30)])
    [rolled] = [i for i in store.incidents() if i.client == ROLLUP_CLIENT]
    evidence = rolled.evidence.as_dict()
    evidence["client_sketch"] = "V" * 256  # every register at 57, the largest rank
    edit(path, "UPDATE incidents SET evidence = ? WHERE id = ?", json.dumps(evidence),
         rolled.id)
    [(joined, _)] = store.record([occ(clock(), client="one more")])
    assert joined.evidence.rolled_up == MOST_COUNTED  # was 26,499,581,405,668,102,144
    assert store.summary(0)["unique_ips"] == MOST_COUNTED  # was 2**63
    assert summarise_incidents(load_incidents(path)[0]).rolled_up == MOST_COUNTED


def test_a_client_calling_itself_the_roll_up_neither_passes_for_one_nor_takes_its_findings(
        tmp_path, clock):
    path = tmp_path / "i.sqlite3"
    store = store_at(path, clock, max_open=2)
    [(own, opened)] = store.record([occ(clock(), client=ROLLUP_CLIENT)])
    assert opened and own.client == CLIENT_NAMED_ROLLUP and not own.rolled_up
    store.record([occ(clock(), client="c1")])
    results = store.record([occ(clock(), client=f"flood{i}") for i in range(5)]
                           + [occ(clock(), client=ROLLUP_CLIENT)])
    # the flood rolls up into a row of its own; the client keeps adding to its incident
    [rolled] = [i for i in store.incidents() if i.rolled_up]
    assert rolled.id != own.id and rolled.count == 5 and rolled.evidence.rolled_up == 5
    assert results[-1][0].id == own.id and store.get(own.id).count == 2
    assert store.summary(0)["unique_ips"] == 2 + 5  # the client counts as one


@pytest.mark.parametrize("raw, days", [("-0", 0.0), (" 90 ", 90.0), ("-0.0", 0.0)])
def test_environment_values_as_shells_write_them(monkeypatch, raw, days):
    monkeypatch.setenv("AIMSEC_INCIDENT_RETENTION_DAYS", raw)
    found = RetentionPolicy.resolve().retention_days
    assert found == days and str(found) == str(days)  # never "-0.0"


@pytest.mark.parametrize("raw", ["1e309", "90days", "0x10", "nan", "-1e-9"])
def test_retention_days_that_are_no_number_of_days_are_refused(monkeypatch, raw):
    monkeypatch.setenv("AIMSEC_INCIDENT_RETENTION_DAYS", raw)
    with pytest.raises(ConfigurationError, match="AIMSEC_INCIDENT_RETENTION_DAYS"):
        RetentionPolicy.resolve()


def test_the_command_says_why_rows_went(tmp_path, capsys, monkeypatch):
    path = tmp_path / "i.sqlite3"
    store = IncidentStore(path, retention=RetentionPolicy(retention_days=0,
                                                          max_deliveries=0))
    for _ in range(5):
        store.record_delivery(group_key="g", channel="smtp", status="sent", attempt=1)
    store.close()
    monkeypatch.setenv("AIMSEC_INCIDENT_RETENTION_DAYS", "0")
    monkeypatch.setenv("AIMSEC_INCIDENT_MAX_DELIVERIES", "2")
    assert main(["incidents", "--db", str(path), "--prune"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    # it said "3 delivery record(s) kept forever"
    assert "and 3 delivery record(s) (beyond the 2 delivery records kept) from" in out
    monkeypatch.setenv("AIMSEC_INCIDENT_RETENTION_DAYS", "30")
    assert main(["incidents", "--db", str(path), "--prune"]) == 0
    assert "(older than 30 day(s) or beyond the 2 delivery records kept)" in " ".join(
        capsys.readouterr().out.split())


def test_the_delivery_cap_counts_records_not_ids(tmp_path, clock):
    path = tmp_path / "i.sqlite3"
    store = store_at(path, clock, retention_days=30, max_deliveries=5)
    late = clock() - 40 * DAY_S  # written late: the alert worker's store was resting
    for group, at in (["a", clock()], ["b", clock()], ["c", clock()], ["old1", late],
                      ["old2", late], ["old3", late], ["d", clock()], ["e", clock()]):
        store.record_delivery(group_key=group, channel="smtp", status="sent", attempt=1,
                              time_s=at)
    done = store.prune()
    # retention deletes the three late records (ids 4 to 6), leaving five: the cap's
    # MAX(id) - 5 deleted a, b and c as well
    assert done.deliveries == 3
    assert [d["group_key"] for d in store.deliveries()] == ["a", "b", "c", "d", "e"]
    store.record_delivery(group_key="f", channel="smtp", status="sent", attempt=1)
    assert store.prune().deliveries == 1
    assert [d["group_key"] for d in store.deliveries()] == ["b", "c", "d", "e", "f"]


def fat(client, reason):
    evidence = Evidence()
    evidence.add(reason=reason, input_hash="ab" * 32)
    return Occurrence("digits", "rate_limit", client, "high", 1.8e9, 1.8e9, 1, evidence)


def test_a_roll_up_of_long_emoji_client_ids_reads_back_and_keeps_being_joined(
        tmp_path, clock, capsys):
    path = tmp_path / "i.sqlite3"
    store = store_at(path, clock, max_open=1)
    store.record([fat("first", "x")])
    # JSON writes each emoji as a 12-character escape: 20 clients of 200 and 5 reasons of
    # 300 made about 66,000 characters, beyond what the store read back (65,536)
    results = store.record([fat(f"{i:02d}" + "\U0001F600" * 198, f"{i}" + "\U0001F600" * 299)
                            for i in range(25)])
    rolled = results[0][0]
    conn = sqlite3.connect(path)
    written = conn.execute("SELECT length(evidence) FROM incidents WHERE id = ?",
                           (rolled.id,)).fetchone()[0]
    conn.close()
    assert written > 65536
    [(joined, opened)] = store.record([fat("one more", "y")])
    assert joined.id == rolled.id and not opened  # it opened a new roll-up each batch
    assert store.get(rolled.id).evidence.rolled_up == 26
    store.close()
    assert main(["incidents", "--db", str(path)]) == 0  # "could not be read"
    section = summarise_incidents(load_incidents(path)[0])
    assert section.available and section.rolled_up == 26


def test_the_longest_evidence_aimsec_writes_is_read_back():
    from aimsec_core.incidents import store as store_module
    from aimsec_core.incidents.model import MAX_CLIENTS, MAX_HASHES, MAX_REASONS, MAX_TEXT

    evidence = Evidence()
    for i in range(MAX_REASONS):
        evidence.add(reason=f"{i}" + "\U0001F600" * MAX_TEXT)
    for i in range(MAX_HASHES):
        evidence.add(input_hash=f"{i}" + "\U0001F600" * 64, score=-1.2345678901234567e-300)
    for i in range(MAX_CLIENTS):
        evidence.roll_up(f"{i}" + "\U0001F600" * 200)
    assert len(json.dumps(evidence.as_dict())) <= store_module._LONGEST_EVIDENCE


def test_a_report_of_one_model_says_the_pruned_tally_is_of_every_model(tmp_path, clock):
    path = tmp_path / "i.sqlite3"
    pruned_once(path, clock)  # the deleted incident was of "digits"
    assert "retention deleted 1 resolved incident(s) (2 finding(s))" in load_incidents(path)[1]
    note = load_incidents(path, model="another")[1]
    assert "retention deleted 1 resolved incident(s) of every model (2 finding(s))" in note


def test_a_schema_2_file_migrates_while_a_writer_of_that_schema_keeps_writing(tmp_path):
    """The previous release's writer holds its connection open across the migration: its
    writes go on, none is lost, and the file ends at version 3 with the tally table."""
    path = tmp_path / "v2.sqlite3"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("PRAGMA journal_mode = WAL")
    migrate(old, 2)
    insert = ("INSERT INTO incidents (model, threat, client, severity, severity_rank, "
              "first_seen, last_seen, count) VALUES ('m', 't', ?, 'high', 2, ?, ?, 1)")
    old.executemany(insert, [(f"old{i}", 1.8e9, 1.8e9) for i in range(1000)])
    store = IncidentStore(path, clock=lambda: 1.8e9 + 10,
                          retention=RetentionPolicy(max_open=0))
    store.record([Occurrence("m", "t", "new", "high", 1.8e9 + 10, 1.8e9 + 10)])
    old.execute(insert, ("old-after", 1.8e9 + 20, 1.8e9 + 20))  # its schema is unchanged
    old.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
        assert conn.execute("SELECT COUNT(*), SUM(count) FROM incidents").fetchone() == (
            1002, 1002)
    finally:
        conn.close()
    assert store.count(statuses=ALL) == 1002 and store.pruned() == {}
