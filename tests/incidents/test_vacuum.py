"""``aimsec incidents --prune --vacuum``: the file shrinks after pruning (it kept its size:
SQLite reuses freed pages rather than returning them), while other writers keep
writing, and a database kept locked is a clear error that changes nothing."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest

from aimsec_core.cli import incidents as incidents_cli
from aimsec_core.cli import main
from aimsec_core.incidents import (IncidentStore, IncidentStoreError, Occurrence,
                                  RetentionPolicy)
from aimsec_core.incidents.model import Evidence

NOW = time.time()  # the command prunes by the real clock
DAY = 86400.0


def _filled(path, old: int = 2000):
    """``old`` resolved incidents last seen 30 days before NOW, with long evidence, and one
    open one of today; returns the open one's id."""
    store = IncidentStore(path, clock=lambda: NOW)
    reasons = [f"reason {n} " + "x" * 280 for n in range(5)]
    store.record([Occurrence("m", "range", f"client-{i}", "medium", NOW - 30 * DAY,
                             NOW - 30 * DAY, 1, Evidence(reasons=list(reasons)))
                  for i in range(old)])
    conn = sqlite3.connect(path)
    conn.execute("UPDATE incidents SET status = 'resolved'")
    conn.commit()
    conn.close()
    [(kept, _)] = store.record([Occurrence("m", "adversarial", "today", "high", NOW, NOW)])
    store.close()
    return kept.id


def _size(path) -> int:
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def test_pruning_with_vacuum_gives_the_space_back(tmp_path, capsys, monkeypatch):
    path = tmp_path / "incidents.sqlite3"
    kept = _filled(path)
    assert main(["incidents", "--db", str(path), "--prune", "--retention-days", "7",
                 "--json"]) == 0
    pruned = _size(path)
    assert json.loads(capsys.readouterr().out)["incidents"] == 2000
    assert main(["incidents", "--db", str(path), "--prune", "--vacuum", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["vacuum"]["bytes_after"] == _size(path) < pruned // 4
    assert found["vacuum"]["bytes_before"] >= pruned
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    assert conn.execute("SELECT id FROM incidents").fetchall() == [(kept,)]
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    assert main(["incidents", "--db", str(path), "--prune", "--vacuum"]) == 0
    assert "compacted" in capsys.readouterr().out


def test_a_writer_keeps_writing_while_the_file_is_compacted(tmp_path):
    """Another store (its own connection, as another process has) records batch after
    batch while the file is pruned and compacted: every finding it recorded is there."""
    path = tmp_path / "incidents.sqlite3"
    _filled(path, old=500)
    writer = IncidentStore(path, clock=lambda: NOW)
    recorded, errors = [], []
    started, done = threading.Event(), threading.Event()

    def write() -> None:
        try:
            n = 0
            while not done.is_set() or n < 20:
                writer.record([Occurrence("m", "range", f"w{n % 50}", "medium", NOW, NOW, 2)])
                recorded.append(2)
                n += 1
                started.set()
        except BaseException as exc:  # reported below
            errors.append(exc)
            started.set()
        finally:
            writer.release()

    thread = threading.Thread(target=write)
    thread.start()
    started.wait()
    compactor = IncidentStore(path, clock=lambda: NOW,
                              retention=RetentionPolicy.resolve(retention_days=7))
    try:
        compactor.prune()
        for _ in range(3):
            before, after = compactor.vacuum()
            assert after >= 0 and before >= 0
    finally:
        done.set()
        thread.join()
        compactor.close()
        writer.close()
    assert not errors
    conn = sqlite3.connect(path)
    written = conn.execute("SELECT SUM(count) FROM incidents WHERE client LIKE 'w%'")
    assert written.fetchone()[0] == sum(recorded)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


def test_a_database_kept_locked_is_a_clear_error_that_changes_nothing(tmp_path, capsys,
                                                                     monkeypatch):
    path = tmp_path / "incidents.sqlite3"
    _filled(path, old=50)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    holder.execute("INSERT INTO deliveries (time, group_key, channel, status, attempt) "
                   "VALUES (1, 'g', 'webhook', 'sent', 1)")
    try:
        store = IncidentStore(path, timeout_s=0.2)
        with pytest.raises(IncidentStoreError, match="kept it locked for more than 0.2 s"):
            store.vacuum()
        store.close()
        monkeypatch.setattr(incidents_cli, "WAIT_S", 0.2)
        assert main(["incidents", "--db", str(path), "--prune", "--vacuum"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("aimsec incidents: ") and err.count("\n") == 1
        assert "kept it locked for more than 0.2 s" in err
        holder.execute("COMMIT")  # the other write still goes through
    finally:
        holder.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM incidents").fetchone() == (51,)
    assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone() == (1,)
    conn.close()


def test_vacuum_goes_with_prune_and_a_read_only_store_refuses_it(tmp_path, capsys):
    path = tmp_path / "incidents.sqlite3"
    _filled(path, old=1)
    assert main(["incidents", "--db", str(path), "--vacuum"]) == 2
    assert "--vacuum goes with --prune" in capsys.readouterr().err
    store = IncidentStore(path, read_only=True)
    with pytest.raises(IncidentStoreError, match="read-only"):
        store.vacuum()
    store.close()
