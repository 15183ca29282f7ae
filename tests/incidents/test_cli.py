"""``aimsec incidents``: a table readable at 80 columns, JSON, filters, status changes."""

from __future__ import annotations

import json
import time

import pytest

from aimsec_core.cli import main
from aimsec_core.incidents import IncidentStore, Occurrence


@pytest.fixture
def db(tmp_path):
    store = IncidentStore(tmp_path / "incidents.sqlite3")
    now = time.time()
    store.record([
        Occurrence("digits-sklearn-with-a-long-name", "adversarial",
                   "api-key:analytics-team-production-eu", "high", now, now, 1234),
        Occurrence("digits-torch", "range", "203.0.113.7", "medium", now - 7200, now - 7200),
        Occurrence("digits-torch", "format", "198.51.100.23", "low", now, now),
    ])
    return store.path


def test_table_fits_80_columns(db, capsys):
    assert main(["incidents", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert all(len(line) <= 80 for line in out.splitlines()), out
    for expected in ("adversarial", "high", "1,234", "AML.T0043", "203.0.113.7"):
        assert expected in out
    assert out.index("adversarial") < out.index("range")  # most severe first


def test_json_and_filters(db, capsys):
    main(["incidents", "--db", str(db), "--json", "--severity", "medium", "--since", "1h"])
    rows = json.loads(capsys.readouterr().out)["incidents"]
    assert [r["threat"] for r in rows] == ["adversarial"]
    assert rows[0]["count"] == 1234 and rows[0]["taxonomy"]["owasp"] == ["ML01"]
    main(["incidents", "--db", str(db), "--json", "--since", "2000-01-01"])
    assert len(json.loads(capsys.readouterr().out)["incidents"]) == 3


def test_acknowledge_and_resolve(db, capsys):
    main(["incidents", "--db", str(db), "--resolve", "1"])
    main(["incidents", "--db", str(db), "--ack", "2"])
    main(["incidents", "--db", str(db), "--json"])
    listing = json.loads(capsys.readouterr().out.split("\n", 2)[2])
    assert [r["id"] for r in listing["incidents"]] == [3]
    assert main(["incidents", "--db", str(db), "--ack", "99"]) == 1


def test_no_database_yet(tmp_path, capsys):
    assert main(["incidents", "--db", str(tmp_path / "none.sqlite3"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "database": str((tmp_path / "none.sqlite3").resolve()), "incidents": [],
        "more": False, "damaged": {"count": 0, "ids": [], "reason": None}}


@pytest.mark.parametrize("flag", ["--ack", "--resolve"])
def test_marking_an_incident_without_a_database_fails_like_an_unknown_id(tmp_path, capsys,
                                                                         flag):
    # it said "nothing recorded yet" and exited 0, as if the incident had been marked
    missing = tmp_path / "none.sqlite3"
    assert main(["incidents", "--db", str(missing), flag, "3"]) == 1
    assert "no incident with id 3" in capsys.readouterr().err
    assert not missing.exists()


def test_a_bad_since_is_a_usage_error(db, capsys):
    with pytest.raises(SystemExit):
        main(["incidents", "--db", str(db), "--since", "yesterday"])
    assert "expected a span such as 30m" in capsys.readouterr().err


@pytest.mark.parametrize("column, value", [
    ("severity", "[/]"),         # rich markup: MarkupError
    ("client", b"\xff\xfe"),     # a blob: TypeError (table), not JSON serializable (--json)
    ("last_seen", 1e308),        # OverflowError: timestamp out of range
    ("severity", "extreme"),     # not a severity aimsec writes
    ("count", 1e400),            # REAL infinity: OverflowError traceback
    ("count", -3),
    ("evidence", "[" * 5000),    # RecursionError traceback
    ("evidence", "[" * 100_000),  # longer than any evidence aimsec writes
    ("evidence", "[1]"),         # AttributeError: not an object
    ("evidence", '{"reasons": 5}'),
    ("client", "x" * 1_000_000),  # printed whole; aimsec writes at most 200 characters
])
@pytest.mark.parametrize("as_json", [False, True])
def test_a_row_aimsec_did_not_write_is_skipped_and_said(db, capsys, column, value, as_json):
    """Such a row failed the whole listing ("could not be read", status 2): one damaged
    row hid every good one. It is now passed over, counted and named."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE incidents SET {column} = ? WHERE id = 1", (value,))
    argv = ["incidents", "--db", str(db), "--status", "all"] + (["--json"] if as_json else [])
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    if as_json:
        listing = json.loads(captured.out)
        assert sorted(r["id"] for r in listing["incidents"]) == [2, 3]
        assert listing["damaged"]["count"] == 1 and listing["damaged"]["ids"] == [1]
    else:
        out = captured.out.replace("\n", " ")
        assert "203.0.113.7" in out and "198.51.100.23" in out
        assert "1 damaged incident row skipped (id 1:" in out
        assert "x" * 1000 not in out  # the damaged row is not printed


def test_control_and_bidi_characters_of_an_edited_row_are_shown_as_escapes(db, capsys):
    """An edited database's client id reached the terminal with its ESC and U+202E."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE incidents SET client = ? WHERE id = 1", ("a\x1b[2J\u202eb",))
    assert main(["incidents", "--db", str(db), "--status", "all"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out
    assert "\\x1b[2J\\u202eb" in out.replace("\n", "")
