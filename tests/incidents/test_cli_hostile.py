"""Hostile arguments and files for ``aimsec incidents``: each is one line on standard
error saying what was wrong, what was expected and what was received, and status 2;
never a traceback, never a change to a file that is not an intact incident database."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time

import pytest

from aimsec_core.cli import incidents as incidents_cli
from aimsec_core.cli import main
from aimsec_core.incidents import IncidentStore, Occurrence
from aimsec_core.incidents import store as store_module
from tests.conftest import run_cli


@pytest.fixture
def db(tmp_path):
    store = IncidentStore(tmp_path / "incidents.sqlite3")
    now = time.time()
    store.record([Occurrence("m", "range", f"c{i}", "medium", now, now) for i in range(12)])
    store.close()
    return store.path


def _damage_the_table_page(db) -> None:
    """300 more incidents, then the incidents table's root page header overwritten, as a
    disk error leaves it."""
    store = IncidentStore(db)
    store.record([Occurrence("m", "range", f"more-{i}", "medium", time.time(), time.time())
                  for i in range(300)])
    store.close()
    _damage_root_page(db, "incidents")


def _damage_root_page(db, table: str) -> None:
    """``table``'s root page header overwritten, as a disk error leaves it (the
    write-ahead log checkpointed into the file first)."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root, = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                         (table,)).fetchone()
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(db, "r+b") as f:
        f.seek(page * (root - 1))
        f.write(b"\x0d\xff\xff\x00\x50" + b"\xee" * 40)


def _refused(capsys, argv, says):
    status, err = run_cli(["incidents", *argv], capsys)
    assert status == 2, err
    assert "Traceback" not in err and err.count("aimsec incidents: ") == 1  # (argparse: usage)
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("aimsec incidents") and says in last, err
    return last


@pytest.mark.parametrize("value", ["1_0", "\u0663", "１", "+ 1", "0x1", "1.0"])
@pytest.mark.parametrize("flag", ["--ack", "--resolve", "--limit"])
def test_a_number_that_is_not_ascii_digits_is_refused(db, capsys, flag, value):
    """``int`` read ``1_0`` as 10 and ``٣`` (Arabic-Indic three) as 3: a mistyped id
    acknowledged or resolved another incident."""
    _refused(capsys, ["--db", str(db), flag, value], "expected a whole number in ASCII digits")
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM incidents WHERE status != 'open'").fetchone() \
        == (0,)
    conn.close()


@pytest.mark.parametrize("flag", ["--ack", "--limit", "--since", "--retention-days"])
def test_a_huge_argument_is_refused_and_not_echoed_whole(db, capsys, flag):
    """A 5,000-digit id was "not a whole number" (Python refuses to convert it), and was
    echoed whole."""
    argv = ["--db", str(db), flag, "9" * 5000] + (["--prune"] if "retention" in flag else [])
    last = _refused(capsys, argv, "received '99999")
    assert "(5,000 characters)" in last and len(last) < 400
    if flag in ("--ack", "--limit"):
        assert "expected a number of at least 1" in last


def test_an_empty_database_path_is_refused(capsys):
    """``--db ''`` read as the current folder: "/some/folder is not a file"."""
    _refused(capsys, ["--db", ""], "expected the path of an SQLite file; received ''")


def test_a_path_too_long_is_one_clipped_line(tmp_path, capsys):
    last = _refused(capsys, ["--db", str(tmp_path / ("x" * 5000))], "File name too long")
    assert len(last) < 600


@pytest.mark.parametrize("argv", [[], ["--ack", "1"], ["--prune", "--vacuum"]])
@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_directory_or_fifo_is_not_a_database(tmp_path, capsys, argv, kind):
    path = tmp_path / "incidents.sqlite3"
    path.mkdir() if kind == "directory" else os.mkfifo(path)
    _refused(capsys, ["--db", str(path), *argv], "is not a file; expected the incident database")


@pytest.mark.parametrize("argv", [[], ["--json"], ["--ack", "1"], ["--prune", "--vacuum"]])
def test_a_file_that_is_not_sqlite_is_refused_unchanged(tmp_path, capsys, argv):
    path = tmp_path / "incidents.sqlite3"
    path.write_bytes(b"#!/bin/sh\necho not a database\n" * 200)
    before = path.read_bytes()
    _refused(capsys, ["--db", str(path), *argv], "file is not a database")
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == [path.name]


@pytest.mark.parametrize("argv", [[], ["--json"], ["--resolve", "1"], ["--prune", "--vacuum"]])
def test_a_schema_from_the_future_is_refused_unchanged(db, capsys, argv):
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 9")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    _refused(capsys, ["--db", str(db), *argv], "schema version 9; expected 1 to 4")
    assert db.read_bytes() == before


@pytest.mark.parametrize("argv", [["--ack", "1"], ["--prune", "--vacuum"]])
def test_a_read_only_file_is_a_clear_error(db, capsys, monkeypatch, argv):
    """As a file this user may not write opens (SQLite falls back to read-only): the
    writes fail with SQLITE_READONLY, said with what was expected."""
    real = sqlite3.connect

    def read_only(path, *args, **kwargs):
        if kwargs.get("uri"):
            return real(path, *args, **kwargs)
        return real(f"{db.as_uri()}?mode=ro", *args, uri=True, **kwargs)

    monkeypatch.setattr(store_module.sqlite3, "connect", read_only)
    _refused(capsys, ["--db", str(db), *argv], "this user may write")
    monkeypatch.undo()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM incidents WHERE status = 'open'").fetchone() \
        == (12,)
    conn.close()


@pytest.mark.parametrize("argv", [[], ["--json"], ["--ack", "1"], ["--prune", "--vacuum"]])
def test_a_file_another_process_keeps_locked_is_a_clear_error(db, capsys, monkeypatch, argv):
    """A file in rollback-journal mode held under an exclusive lock (readers wait too)
    said "database is locked; expected an SQLite file"."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    monkeypatch.setattr(incidents_cli, "WAIT_S", 0.2)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        _refused(capsys, ["--db", str(db), *argv],
                 "other processes kept it locked for more than 0.2 s; nothing was changed")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_compacting_a_damaged_file_is_refused_and_leaves_it_as_it_was(db, capsys):
    """VACUUM of a file with a damaged table page "succeeded": it kept what it could
    still read, shrank the file from 180 kB to 64 kB, and the damage stayed."""
    _damage_the_table_page(db)
    _refused_as_damaged_and_unchanged(db, capsys)


def _refused_as_damaged_and_unchanged(db, capsys) -> None:
    """``--prune --vacuum`` of the damaged ``db`` is refused naming the check, and leaves
    the file byte for byte as it was."""
    copy = db.with_name("copy.sqlite3")
    shutil.copy(db, copy)
    last = _refused(capsys, ["--db", str(db), "--prune", "--vacuum", "--retention-days", "1"],
                    "nothing was pruned or compacted")
    assert "quick_check" in last
    assert db.read_bytes() == copy.read_bytes()


@pytest.mark.parametrize("value", ["\udcff", "\u0663h", "1e3h", "nan", "2026-02-30",
                                   "2026-01-01T00:00+25:00", "7d" * 3000])
def test_an_odd_since_is_refused(db, capsys, value):
    """A span in another script's digits (``٣h``) was read as 3 hours."""
    last = _refused(capsys, ["--db", str(db), "--since", value],
                    "expected a span such as 30m, 24h, 7d or an ISO date")
    assert "\udcff" not in last and len(last) < 400


@pytest.mark.parametrize("value, listed", [("9999-12-31", 0), ("0001-01-01T00:00+14:00", 12),
                                           ("9" * 400 + "w", 12)])
def test_a_since_at_the_ends_of_the_calendar_lists(db, capsys, value, listed):
    import json

    assert main(["incidents", "--db", str(db), "--since", value, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["incidents"]) == listed


def test_a_database_whose_name_is_not_utf8_lists(tmp_path, capsys):
    import json

    name = os.fsdecode(b"inc\xff.sqlite3")
    store = IncidentStore(tmp_path / name)
    store.record([Occurrence("m", "range", "c", "medium", time.time(), time.time())])
    store.close()
    assert main(["incidents", "--db", str(tmp_path / name), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["incidents"][0]["client"] == "c"
    status, err = run_cli(["incidents", "--db", str(tmp_path / name), "--ack", "99"], capsys)
    assert status == 1 and "inc\\udcff.sqlite3" in err


@pytest.mark.parametrize("argv", [["--status", "all"], ["--json"]])
def test_a_damaged_page_is_one_line_naming_the_damage(db, capsys, argv):
    """A page SQLite cannot read fails the listing as a whole (rows cannot be read past
    it): said in one line, with how to recover what can be read."""
    _damage_the_table_page(db)
    _refused(capsys, ["--db", str(db), *argv], "database disk image is malformed); the file "
                                               "is damaged")


def test_pruning_and_compacting_a_damaged_file_prunes_nothing(db, capsys):
    """With --vacuum, a damaged file was pruned first (old resolved incidents deleted),
    and only then refused by the compaction's integrity check: a damaged file is now
    refused before anything is deleted, and left byte for byte as it was."""
    old = time.time() - 10 * 86400
    store = IncidentStore(db)
    store.record([Occurrence("m", "range", f"old-{i}", "medium", old, old) for i in range(5)])
    store.close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE incidents SET status = 'resolved' WHERE client LIKE 'old-%'")
    conn.commit()
    conn.close()
    _damage_root_page(db, "journals")  # a table pruning does not read
    _refused_as_damaged_and_unchanged(db, capsys)


def test_the_help_says_what_the_command_changes(capsys):
    """The help described a read-only listing, while every form first writes the journals
    of killed processes into the database, and said nothing of ``--vacuum`` refusing a
    damaged file."""
    with pytest.raises(SystemExit):
        main(["incidents", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "journals of processes killed before writing their incidents" in text
    assert "quick_check finds damaged is refused before anything is pruned" in text
