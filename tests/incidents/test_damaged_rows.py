"""Damaged incident rows (a disk error, a buggy writer, a hand edit) in a real SQLite file:
readers pass them over, count them and say so; every good row still lists; changing a
damaged row is a typed error that leaves it as it was."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from rich.console import Console

import aimsec_core
from aimsec_core.cli import main
from aimsec_core.incidents import IncidentStore, Occurrence
from aimsec_core.incidents.damaged import DamagedRows
from aimsec_core.incidents.store import DamagedIncidentError
from aimsec_core.reporting.incidents import load_incidents, summarise_incidents

#: (column, SQL value): each as a disk or a buggy writer leaves a row
DAMAGE = [
    ("evidence", "'{\"reasons\": [\"rang'"),           # truncated JSON
    ("evidence", "CAST(X'7b22ff22' AS TEXT)"),         # bytes that are not UTF-8
    ("evidence", "'not json'"),
    ("count", "'twelve'"),                             # text where a count belongs
    ("count", "2.5"),                                  # a fraction of a finding
    ("count", "NULL"),                                 # NULL where the schema wants one
    ("last_seen", "NULL"),
    ("severity", "NULL"),
    ("severity", "'catastrophic'"),                    # a severity aimsec does not know
    ("status", "'archived'"),                          # a status aimsec does not know
    ("first_seen", "'yesterday'"),
    ("model", "X'00ff'"),                              # a blob where text belongs
]


def _db(tmp_path, rows: int = 5):
    """A file of ``rows`` open incidents (ids 1..rows, client c1..) whose table accepts
    what a buggy writer would put in it: the schema's NOT NULL and CHECK constraints are
    not there, as in a file another program created."""
    path = tmp_path / "incidents.sqlite3"
    store = IncidentStore(path)
    now = time.time()
    store.record([Occurrence("m", "range", f"c{i}", "medium", now - i, now - i)
                  for i in range(1, rows + 1)])
    store.close()
    conn = sqlite3.connect(path)
    conn.executescript("""
        BEGIN;
        ALTER TABLE incidents RENAME TO old_incidents;
        CREATE TABLE incidents (id INTEGER PRIMARY KEY, model TEXT, threat TEXT,
            client TEXT, severity TEXT, severity_rank INTEGER, status TEXT,
            first_seen REAL, last_seen REAL, count INTEGER, evidence TEXT);
        INSERT INTO incidents SELECT * FROM old_incidents;
        DROP TABLE old_incidents;
        CREATE INDEX incidents_group ON incidents (model, threat, client, last_seen);
        CREATE INDEX incidents_status ON incidents (status, last_seen);
        COMMIT;""")
    conn.close()
    return path


def _damage(path, incident_id: int, column: str, value_sql: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"UPDATE incidents SET {column} = {value_sql} WHERE id = ?", (incident_id,))
    conn.commit()
    conn.close()


@pytest.mark.parametrize("column, value", DAMAGE)
def test_the_store_passes_over_a_damaged_row_and_counts_it(tmp_path, column, value):
    path = _db(tmp_path)
    _damage(path, 3, column, value)
    store = IncidentStore(path, read_only=True)
    damaged = DamagedRows()
    found = store.incidents(statuses=("open", "acknowledged", "resolved"), damaged=damaged)
    assert [i.id for i in found] == [1, 2, 4, 5]
    assert (damaged.count, damaged.ids) == (1, [3]) and damaged.reason
    assert damaged.note().startswith("1 damaged incident row skipped (id 3: ")
    with pytest.raises(aimsec_core.incidents.IncidentStoreError):  # asked not to pass over
        store.incidents(statuses=("open", "acknowledged", "resolved"))
    store.close()


def test_the_limit_counts_rows_that_could_be_read(tmp_path):
    path = _db(tmp_path)
    for incident_id in (1, 2):
        _damage(path, incident_id, "evidence", "'{'")
    store = IncidentStore(path, read_only=True)
    damaged = DamagedRows()
    assert [i.id for i in store.incidents(limit=2, damaged=damaged)] == [3, 4]
    assert damaged.as_dict() == {"count": 2, "ids": [1, 2],
                                 "reason": damaged.reason}
    assert damaged.note().startswith("2 damaged incident rows skipped (ids 1, 2; the first: ")
    store.close()


@pytest.mark.parametrize("column, value", DAMAGE)
@pytest.mark.parametrize("as_json", [False, True])
def test_the_listing_skips_counts_and_names_a_damaged_row(tmp_path, capsys, column, value,
                                                           as_json):
    """One damaged row made ``aimsec incidents`` fail (status 2, nothing listed)."""
    path = _db(tmp_path)
    _damage(path, 3, column, value)
    status = main(["incidents", "--db", str(path), "--status", "all"]
                  + (["--json"] if as_json else []))
    captured = capsys.readouterr()
    assert (status, captured.err) == (0, "")
    if as_json:
        listing = json.loads(captured.out)
        assert [r["client"] for r in listing["incidents"]] == ["c1", "c2", "c4", "c5"]
        assert listing["damaged"]["count"] == 1 and listing["damaged"]["ids"] == [3]
    else:
        for client in ("c1", "c2", "c4", "c5"):
            assert f" {client} " in captured.out
        assert "1 damaged incident row skipped (id 3: " in captured.out
        assert "4 incident(s)" in captured.out


def test_a_listing_of_nothing_but_damaged_rows_says_so(tmp_path, capsys):
    path = _db(tmp_path, rows=2)
    _damage(path, 1, "count", "NULL")
    _damage(path, 2, "evidence", "'['")
    assert main(["incidents", "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert "no open incidents" in out and "2 damaged incident rows skipped (ids 1, 2;" in out


@pytest.mark.parametrize("flag", ["--ack", "--resolve"])
@pytest.mark.parametrize("as_json", [False, True])
def test_changing_a_damaged_row_is_a_typed_error_that_changes_nothing(tmp_path, capsys, flag,
                                                                     as_json):
    path = _db(tmp_path)
    _damage(path, 3, "evidence", "'{\"reasons\": ['")
    status = main(["incidents", "--db", str(path), flag, "3"] + (["--json"] if as_json else []))
    captured = capsys.readouterr()
    assert status == 2 and captured.out == ""
    assert captured.err.startswith("aimsec incidents: incident 3 in ")
    assert "is damaged (" in captured.err and captured.err.count("\n") == 1
    store = IncidentStore(path)
    with pytest.raises(DamagedIncidentError) as raised:
        store.set_status(3, "resolved")
    assert raised.value.incident_id == 3
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT status FROM incidents WHERE id = 3").fetchone() == ("open",)
    conn.close()


def test_the_report_counts_the_good_rows_and_notes_the_damaged_ones(tmp_path):
    """One damaged row made the report's incident section "could not be read": no
    incidents at all on the page."""
    path = _db(tmp_path)
    _damage(path, 2, "severity", "'catastrophic'")
    _damage(path, 4, "evidence", "'{\"reasons'")
    source, note = load_incidents(path)
    section = summarise_incidents(source, note=note)
    assert section.available and (section.total, section.open) == (3, 3)
    assert [r.client for r in section.listed] == ["c1", "c3", "c5"]
    assert "2 damaged incident rows skipped (ids 2, 4;" in section.note
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "audit.jsonl").write_text("")
    files = aimsec_core.report(logs, out=tmp_path / "out", db=path,
                               console=Console(quiet=True))
    assert files.report.incidents.total == 3
    assert (files.report.incidents.damaged, files.report.incidents.damaged_ids) == (2, [2, 4])
    assert "2 damaged incident rows skipped" in files.html_path.read_text()
    [advice] = [r for r in files.report.recommendations if "could not be read (damaged)" in
                r.title]
    assert advice.title.startswith("2 incident rows") and advice.evidence["ids"] == [2, 4]


def test_the_summary_of_the_original_api_reads_past_damaged_counts_and_threats(tmp_path):
    """A count at SQLite's largest integer beside another row of its threat made the
    summary fail ("integer overflow"); a count that is text or NULL, or a threat that is
    a blob, adds nothing instead of failing or showing."""
    path = _db(tmp_path)
    _damage(path, 1, "count", str(2**63 - 1))
    _damage(path, 2, "count", "NULL")
    _damage(path, 3, "count", "'twelve'")
    _damage(path, 4, "threat", "X'00ff'")
    store = IncidentStore(path, read_only=True)
    summary = store.summary(0.0)
    store.close()
    assert summary["total_incidents"] == 5
    assert summary["most_common_threats"] == {"range": 2**63 - 1}
    json.dumps(summary)
