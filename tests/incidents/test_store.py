"""The SQLite incident store: repeats update one incident, evidence stays bounded, the
schema migrates, the original summary, statuses."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimsec_core import ConfigurationError
from aimsec_core.incidents import Evidence, IncidentStore, IncidentStoreError, Occurrence
from aimsec_core.incidents.schema import MIGRATIONS, VERSION

from tests.fakes import FakeClock


def occ(clock, client="203.0.113.7", threat="adversarial", severity="high", count=1,
        reason=None, score=None, input_hash=None, model="digits"):
    evidence = Evidence()
    evidence.add(reason=reason, score=score, input_hash=input_hash)
    return Occurrence(model, threat, client, severity, clock(), clock(), count, evidence)


@pytest.fixture
def store(tmp_path, clock):
    return IncidentStore(tmp_path / "incidents.sqlite3", clock=clock, window_s=3600)


def test_repeats_within_the_window_update_one_incident(store, clock):
    [(first, opened)] = store.record([occ(clock, reason="a")])
    assert opened and first.count == 1
    for _ in range(3):
        clock.advance(600)
        [(same, opened)] = store.record([occ(clock, count=10, reason="b")])
        assert not opened and same.id == first.id
    incident = store.get(first.id)
    assert incident.count == 31 and incident.evidence.reasons == ["a", "b"]
    assert incident.last_seen - incident.first_seen == 1800
    clock.advance(3601)  # the group went quiet longer than the window: a new incident
    [(later, opened)] = store.record([occ(clock)])
    assert opened and later.id != first.id


def test_model_threat_and_client_each_make_their_own_incident(store, clock):
    store.record([occ(clock), occ(clock, client="other"), occ(clock, threat="range"),
                  occ(clock, model="other")])
    assert len(store.incidents()) == 4


def test_a_resolved_incident_is_not_reopened(store, clock):
    [(incident, _)] = store.record([occ(clock)])
    assert store.set_status(incident.id, "resolved").status == "resolved"
    [(fresh, opened)] = store.record([occ(clock)])
    assert opened and fresh.id != incident.id
    assert [i.id for i in store.incidents()] == [fresh.id]
    assert len(store.incidents(statuses=("open", "resolved"))) == 2


def test_status_errors(store):
    with pytest.raises(ValueError, match="expected one of"):
        store.set_status(1, "closed")
    with pytest.raises(KeyError, match="no incident with id 99"):
        store.set_status(99, "resolved")


def test_severity_rises_never_falls(store, clock):
    store.record([occ(clock, severity="medium")])
    store.record([occ(clock, severity="critical")])
    store.record([occ(clock, severity="low")])
    [incident] = store.incidents()
    assert incident.severity == "critical" and incident.count == 3


def test_evidence_is_bounded_and_holds_no_input(store, clock):
    store.record([occ(clock, reason=f"reason {i}" * 100, score=float(i),
                      input_hash=f"{i:032x}") for i in range(1000)])
    [incident] = store.incidents()
    e = incident.evidence
    assert incident.count == 1000
    assert len(e.reasons) == 5 and all(len(r) <= 300 for r in e.reasons)
    assert e.scores == [float(i) for i in range(999, 989, -1)]
    assert len(e.input_hashes) == 10


def test_filters_and_order(store, clock):
    store.record([occ(clock, client="old", severity="critical")])
    clock.advance(100)
    store.record([occ(clock, client="low", severity="low"),
                  occ(clock, client="new", severity="high")])
    assert [i.client for i in store.incidents()] == ["old", "new", "low"]
    assert [i.client for i in store.incidents(severity="high")] == ["old", "new"]
    assert [i.client for i in store.incidents(since=clock() - 1)] == ["new", "low"]


def test_summary_is_the_original_dictionary(store, clock):
    store.record([occ(clock, client="1.1.1.1", threat="rate_limit_exceeded",
                      severity="medium", count=7),
                  occ(clock, client="2.2.2.2", threat="extreme_values", count=2),
                  occ(clock, client="1.1.1.1", threat="extreme_values", model="other")])
    assert store.summary(clock() - 60, model="digits") == {
        "total_incidents": 2, "by_severity": {"low": 0, "medium": 1, "high": 1},
        "unique_ips": 2, "most_common_threats": {"rate_limit_exceeded": 7,
                                                 "extreme_values": 2}}
    assert store.summary(clock() + 1)["total_incidents"] == 0


def test_reopening_keeps_everything(tmp_path, clock):
    path = tmp_path / "incidents.sqlite3"
    IncidentStore(path, clock=clock).record([occ(clock, count=5)])
    [incident] = IncidentStore(path, clock=clock).incidents()
    assert incident.count == 5


def test_an_old_schema_is_migrated_in_place(tmp_path, clock):
    path = tmp_path / "v1.sqlite3"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO incidents (model, threat, client, severity, severity_rank, "
                 "first_seen, last_seen, count, evidence) VALUES "
                 "('m', 'range', 'c', 'medium', 1, 1, 1, 4, ?)", (json.dumps({}),))
    conn.commit()
    conn.close()
    store = IncidentStore(path, clock=clock)
    [incident] = store.incidents()
    assert incident.count == 4
    store.record_delivery(group_key="k", channel="smtp", status="sent", attempt=1)
    assert store.deliveries()[0]["status"] == "sent"
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == VERSION == 4


def test_a_newer_schema_or_a_bad_path_is_a_clear_error(tmp_path, clock):
    path = tmp_path / "future.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(IncidentStoreError, match="schema version 99.*upgrade aimsec"):
        IncidentStore(path).incidents()
    (tmp_path / "file").write_text("x")
    with pytest.raises(IncidentStoreError, match="cannot open the incident database"):
        IncidentStore(tmp_path / "file" / "db.sqlite3").incidents()


def test_default_path_is_under_security_log_path(tmp_path, monkeypatch):
    monkeypatch.setenv("SECURITY_LOG_PATH", str(tmp_path / "logs"))
    assert IncidentStore().path == (tmp_path / "logs" / "incidents.sqlite3").resolve()
    monkeypatch.setenv("AIMSEC_INCIDENT_DB", str(tmp_path / "elsewhere.db"))
    assert IncidentStore().path == (tmp_path / "elsewhere.db").resolve()


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(client=st.text(max_size=400), model=st.text(max_size=50), reason=st.text(max_size=600))
def test_hostile_names_are_stored_clipped_and_printable(store, client, model, reason):
    clock = FakeClock()
    [(incident, _)] = store.record([occ(clock, client=client, model=model, reason=reason)])
    stored = store.get(incident.id)
    for text in (stored.client, stored.model, *stored.evidence.reasons):
        assert len(text) <= 300 and text.isprintable()
    assert stored.client == incident.client


def test_statuses_may_be_any_iterable(store, clock):
    store.record([Occurrence("m", "range", "c", "medium", clock(), clock())])
    wanted = (status for status in ("open", "acknowledged"))  # read twice, it was empty
    assert [i.client for i in store.incidents(statuses=wanted)] == ["c"]


@pytest.mark.parametrize("column, value", [
    ("count", 1e400),                     # OverflowError escaped the writer
    ("evidence", "[" * 5000),             # RecursionError
    ("evidence", "[1]"),                  # AttributeError
    ("severity", "extreme"),
])
def test_a_damaged_row_never_blocks_the_writes_of_its_group(store, clock, column, value):
    """A row of an edited database used to make every batch holding an occurrence of its
    group raise (so the whole batch was retried and finally dropped); the occurrence now
    opens a new incident, and the damaged row is left as it was."""
    store.record([occ(clock)])
    with sqlite3.connect(store.path) as conn:
        conn.execute(f"UPDATE incidents SET {column} = ? WHERE id = 1", (value,))
    clock.advance(60)
    results = store.record([occ(clock, score=2.0), occ(clock, client="other")])
    assert [(i.id, i.client, i.count, opened) for i, opened in results] == [
        (2, "203.0.113.7", 1, True), (3, "other", 1, True)]
    clock.advance(60)
    [(again, opened)] = store.record([occ(clock)])
    assert (again.id, again.count, opened) == (2, 2, False)
    with sqlite3.connect(store.path) as conn:
        assert conn.execute(f"SELECT {column} FROM incidents WHERE id = 1").fetchone()[0] \
            == (value if column != "count" else float("inf"))


def test_a_text_score_in_edited_evidence_is_dropped_not_merged(store, clock):
    """``{"scores": ["x"]}`` made the next merge raise TypeError (str < float)."""
    store.record([occ(clock, score=1.0)])
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE incidents SET evidence = ?", ('{"scores": ["x", 3, true]}',))
    [(incident, opened)] = store.record([occ(clock, score=2.0)])
    assert (incident.count, opened, incident.evidence.scores) == (2, False, [3.0, 2.0])


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["reasons", "scores", "input_hashes", "x"]), inner, max_size=4),
    max_leaves=12)


@given(data=JSON_VALUES)
def test_evidence_read_back_is_bounded_typed_or_refused(data):
    try:
        evidence = Evidence.from_dict(data)
    except ValueError:
        return
    assert all(isinstance(r, str) for r in evidence.reasons)
    assert all(isinstance(h, str) for h in evidence.input_hashes)
    assert all(type(s) is float and s - s == 0 for s in evidence.scores)
    assert evidence.scores == sorted(evidence.scores, reverse=True)
    assert len(evidence.reasons) <= 5 and len(evidence.scores) <= 10
    evidence.merge(Evidence(["r"], [1.0], ["h"]))  # a merge never raises


@pytest.mark.parametrize("first, last, count", [
    (float("nan"), float("nan"), 1),   # NOT NULL failed the whole batch, retried forever
    (float("inf"), float("inf"), 1),
    (1e12, 1e12, 1),                   # stored, then every listing failed to read it back
    (-1e12, -1e12, 1),
    (10.0, 5.0, 1),                    # first after last
    (10.0, 10.0, 0),
    (10.0, 10.0, -3),                  # a negative count made its row unreadable
    (10.0, 10.0, 1.5),
    (10.0, 10.0, True),
    ("10", "10", 1),
])
def test_an_occurrence_no_store_can_hold_is_refused_when_built(first, last, count):
    with pytest.raises(ValueError, match="occurrence (first_seen|last_seen|count)"):
        Occurrence("m", "adversarial", "c", "high", first, last, count)


def test_numpy_times_and_counts_are_taken_as_numbers():
    np = pytest.importorskip("numpy")
    o = Occurrence("m", "adversarial", "c", "high", np.float64(5.0), np.float32(6.0),
                   np.int64(3))
    assert (type(o.first_seen), type(o.last_seen), type(o.count)) == (float, float, int)


def test_text_that_is_not_utf8_in_a_row_never_blocks_the_writes_of_its_group(store, clock):
    """An edited row whose evidence held bytes that are not UTF-8 made SQLite fail the
    group's lookup, so every batch holding that group (and every other occurrence in it)
    failed to write, round after round."""
    store.record([occ(clock)])
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE incidents SET evidence = CAST(X'7bff7d' AS TEXT) WHERE id = 1")
    clock.advance(60)
    results = store.record([occ(clock), occ(clock, client="other")])
    assert [(i.id, i.client, opened) for i, opened in results] == [
        (2, "203.0.113.7", True), (3, "other", True)]


def test_a_name_that_is_not_utf8_reads_with_replacement_characters(store, clock):
    store.record([occ(clock)])
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE incidents SET client = CAST(X'41ff42' AS TEXT) WHERE id = 1")
    [incident] = store.incidents()
    assert incident.client == "A\ufffdB"


def _edit(path, sql):
    conn = sqlite3.connect(path)
    conn.execute(sql)
    conn.commit()
    conn.close()


def test_summary_and_deliveries_of_a_foreign_table_are_store_errors(tmp_path, clock):
    """Tables that are not aimsec's (without its columns) gave raw sqlite3 tracebacks from
    summary() and deliveries()."""
    path = tmp_path / "edited.sqlite3"
    store = IncidentStore(path, clock=clock)
    store.record([occ(clock)])
    store.close()
    _edit(path, "DROP TABLE incidents")
    _edit(path, "CREATE TABLE incidents (id INTEGER PRIMARY KEY)")
    _edit(path, "DROP TABLE deliveries")
    _edit(path, "CREATE TABLE deliveries (id INTEGER PRIMARY KEY)")
    again = IncidentStore(path, clock=clock)
    with pytest.raises(IncidentStoreError, match="could not be read"):
        again.summary(0.0)
    with pytest.raises(IncidentStoreError, match="could not be read"):
        again.deliveries()
    again.close()


def test_acknowledging_an_unreadable_incident_changes_nothing(tmp_path, clock):
    path = tmp_path / "edited.sqlite3"
    store = IncidentStore(path, clock=clock)
    (incident, _), = store.record([occ(clock)])
    store.close()
    _edit(path, "UPDATE incidents SET evidence = 'not json'")
    again = IncidentStore(path, clock=clock)
    with pytest.raises(IncidentStoreError):
        again.set_status(incident.id, "acknowledged")
    again.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT status FROM incidents").fetchone() == ("open",)
    conn.close()


@pytest.mark.parametrize("argument, value", [
    ("window_s", -5), ("window_s", float("nan")), ("window_s", float("inf")),
    ("window_s", "an hour"), ("timeout_s", float("nan")), ("timeout_s", -1),
    ("timeout_s", 0), ("timeout_s", None), ("timeout_s", 1e308),
])
def test_a_window_or_timeout_given_in_code_is_checked_like_the_environment(
        tmp_path, argument, value):
    """AIMSEC_INCIDENT_WINDOW=-5 is refused, but window_s=-5 was taken as given: every
    occurrence then opened an incident of its own (NaN the same); text failed every write
    in the worker with a TypeError, a NaN timeout every connection with a ValueError, a
    timeout of 1e308 s every connection with an OverflowError (its busy_timeout in ms)."""
    with pytest.raises(ConfigurationError, match=argument) as error:
        IncidentStore(tmp_path / "db.sqlite3", **{argument: value})
    assert "expected" in str(error.value) and "received" in str(error.value)
    assert not (tmp_path / "db.sqlite3").exists()


def test_a_full_disk_is_reported_as_such(tmp_path, clock):
    """SQLite rolls a transaction back itself when the disk is full; the store's own
    ROLLBACK then failed, and its "cannot rollback - no transaction is active" replaced
    the reason in the error and the logs."""
    store = IncidentStore(tmp_path / "db.sqlite3", clock=clock)
    store.record([Occurrence("m", "range", "c", "high", clock(), clock())])
    conn = store._conn()
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(IncidentStoreError, match="database or disk is full"):
        store.record([Occurrence("m", "range", f"c{i}" * 50, "high", clock(), clock())
                      for i in range(2000)])
    assert [i.client for i in store.incidents()] == ["c"]  # the batch left nothing behind


def test_a_database_path_that_loops_on_its_own_links_is_a_configuration_error(tmp_path):
    # pathlib's resolve() raised RuntimeError ("Symlink loop from ...") from the Python
    # API (the CLI caught it; report(db=...) and IncidentStore did not)
    from aimsec_core.incidents.store import database_path

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(ConfigurationError, match="symbolic links"):
        database_path(loop)
    with pytest.raises(ConfigurationError, match="symbolic links"):
        IncidentStore(loop)


@pytest.mark.parametrize("settings", [{"window_s": np.int64(60)}, {"timeout_s": np.int64(5)},
                                      {"window_s": np.float32(60)}])
def test_numpy_numbers_are_seconds_like_any_other(tmp_path, settings):
    # since settings given in code were checked, a numpy number (read from a config
    # array) was refused as 'expected a finite number of seconds'
    store = IncidentStore(tmp_path / "db.sqlite3", **settings)
    assert type(store.window_s) is float and type(store.timeout_s) is float
    store.close()


def test_a_thread_that_ends_takes_its_connection_with_it(store, clock):
    """A service answering each request in a new thread (reading summaries, recording)
    kept one open database per thread it had ever run, until out of file descriptors."""
    import threading

    store.record([occ(clock)])  # this thread's own connection stays open
    opened = []

    def request():
        store.summary(0.0)
        opened.append(store._conn())

    for _ in range(20):
        thread = threading.Thread(target=request)
        thread.start()
        thread.join()
    assert len(store._connections) == 1
    for conn in opened:  # closed when its thread ended, without waiting for a gc pass
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")
    assert store.summary(0.0)["total_incidents"] == 1
    store.close()
    assert len(store._connections) == 0
