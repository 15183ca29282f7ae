"""Journal folders holding what no aimsec process wrote (a file an attacker or another
program put there, a line edited by hand): a replay skips it, counted or logged, and still
writes every journal beside it; it never waits, follows a link, or holds a huge file."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from aimsec_core.cli import main
from aimsec_core.incidents import IncidentStore, Occurrence
from aimsec_core.incidents import journal as journaling
from aimsec_core.incidents.journal import journal_folder, replay, unwritten
from aimsec_core.incidents.model import MOST_COUNTED

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32",
                                reason="the journal needs POSIX flock")


def _line(seq: int = 1, client: str = "c", **fields) -> str:
    now = time.time()  # recent: retention keeps it
    data = {"s": seq, "m": "m", "t": "range", "c": client, "v": "high", "f": now,
            "l": now, "n": 1, "e": {}}
    data.update(fields)
    return json.dumps(data) + "\n"


def _setup(tmp_path: Path) -> tuple[IncidentStore, Path]:
    db = tmp_path / "incidents.sqlite3"
    store = IncidentStore(db)
    folder = journal_folder(db)
    folder.mkdir()
    (folder / "99-good-0.jsonl").write_text(_line(client="good"))
    return store, folder


def _counts(store: IncidentStore) -> dict[str, int]:
    return {i.client: i.count for i in store.incidents(limit=100)}


def _replayed_in_time(store: IncidentStore):
    """replay(store), or a failure when it has not returned in a minute (it waits on a
    FIFO for a writer that never comes)."""
    done: list = []
    worker = threading.Thread(target=lambda: done.append(replay(store)), daemon=True)
    worker.start()
    worker.join(60)
    assert done, "the replay did not return"
    return done[0]


@pytest.mark.parametrize("poison", [
    _line(n=2**70),  # no count SQLite holds
    _line(seq=2**70),  # no sequence number SQLite holds
    "[" * 100_000 + "\n",  # deeper than the JSON parser goes
])
def test_a_poisoned_line_is_skipped_and_every_other_journal_written(tmp_path, poison):
    store, folder = _setup(tmp_path)
    (folder / "1-bad-0.jsonl").write_text(poison + _line(seq=2, client="beside"))
    assert unwritten(IncidentStore(store.path, read_only=True)).unreadable == 1
    done = replay(store)
    assert (done.journals, done.unreadable) == (2, 1)
    assert _counts(store) == {"good": 1, "beside": 1}
    assert list(folder.glob("*.jsonl")) == []


def test_counts_merged_past_what_sqlite_holds_are_capped(tmp_path):
    store, folder = _setup(tmp_path)
    (folder / "1-big-0.jsonl").write_text(_line(1, "big", n=2**62) + _line(2, "big", n=2**62))
    assert replay(store).journals == 2
    assert _counts(store) == {"good": 1, "big": MOST_COUNTED}


def test_a_line_longer_than_any_aimsec_writes_is_not_held(tmp_path, monkeypatch):
    monkeypatch.setattr(journaling, "MAX_LINE", 300)
    store, folder = _setup(tmp_path)
    long = _line(1, "long", e={"reasons": ["x" * 2000]})
    (folder / "1-long-0.jsonl").write_text(long + _line(2, "after"))
    done = replay(store)
    assert done.unreadable == 1
    assert _counts(store) == {"good": 1, "after": 1}


def test_a_fifo_named_as_a_journal_is_left_without_waiting(tmp_path, caplog):
    store, folder = _setup(tmp_path)
    os.mkfifo(folder / "1-fifo-0.jsonl")
    done = _replayed_in_time(store)
    assert done.journals == 1
    assert _counts(store) == {"good": 1}
    assert (folder / "1-fifo-0.jsonl").exists()
    assert "unread (not a regular file)" in caplog.text


def test_a_link_named_as_a_journal_is_not_followed(tmp_path):
    store, folder = _setup(tmp_path)
    elsewhere = tmp_path / "elsewhere.jsonl"  # anything this user may read
    elsewhere.write_text(_line(client="injected"))
    (folder / "1-link-0.jsonl").symlink_to(elsewhere)
    os.mkdir(folder / "2-folder-0.jsonl")
    (folder / "99-good-1.jsonl").symlink_to(elsewhere)  # beside a journal: left too
    done = _replayed_in_time(store)
    assert done.journals == 1
    assert _counts(store) == {"good": 1}
    assert (folder / "1-link-0.jsonl").is_symlink() and elsewhere.exists()
    assert (folder / "99-good-1.jsonl").is_symlink()
    assert not (folder / "99-good-0.jsonl").exists()


def test_aimsec_incidents_lists_beside_a_poisoned_journal(tmp_path, capsys):
    store, folder = _setup(tmp_path)
    (folder / "1-bad-0.jsonl").write_text(_line(n=2**70))
    store.record([Occurrence("m", "range", "before", "high", time.time(), time.time())])
    store.close()
    assert main(["incidents", "--db", str(store.path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert sorted(i["client"] for i in json.loads(out)["incidents"]) == ["before", "good"]
    assert "1 unreadable line(s) skipped" in err


def test_aimsec_incidents_replays_a_journal_whose_database_was_never_made(tmp_path, capsys):
    # a process killed within its first second: its journal is all there is
    db = tmp_path / "incidents.sqlite3"
    journal_folder(db).mkdir()
    (journal_folder(db) / "7-first-0.jsonl").write_text(_line(client="first"))
    assert main(["incidents", "--db", str(db), "--json"]) == 0
    out, err = capsys.readouterr()
    assert [i["client"] for i in json.loads(out)["incidents"]] == ["first"]
    assert "replayed 1 finding(s)" in err
    assert not journal_folder(db).exists()


def test_a_report_says_what_waits_beside_a_database_never_made(tmp_path):
    from aimsec_core.reporting.incidents import load_incidents

    db = tmp_path / "incidents.sqlite3"
    journal_folder(db).mkdir()
    (journal_folder(db) / "7-first-0.jsonl").write_text(_line(client="first", n=3))
    source, note = load_incidents(db)
    assert source is None and "no incident store" in note
    assert "3 finding(s) of 1 process(es) that ended without writing them" in note
    assert not db.exists()  # a report writes nothing


def test_a_journal_this_user_may_not_read_is_left_to_its_owner(tmp_path, monkeypatch,
                                                               caplog):
    # another user's (mode 600): simulated, as the tests may run as root
    store, folder = _setup(tmp_path)
    theirs = folder / "5-theirs-0.jsonl"
    theirs.write_text(_line(client="theirs"))
    real_open = os.open

    def open_(path, flags, *args):
        if Path(path) == theirs:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(journaling.os, "open", open_)
    done = replay(store)
    assert done.journals == 1
    assert _counts(store) == {"good": 1}
    assert theirs.exists()
    assert "unread (Permission denied)" in caplog.text


def test_journals_written_before_a_replay_failed_are_alerted(tmp_path, clock):
    # the database locked (or full) part way through a replay: the journals written
    # before are in the store, and their alerts are sent as for every replayed occurrence
    from aimsec_core.alerts import Dispatcher, Grouper, GroupingPolicy
    from aimsec_core.incidents.store import IncidentStoreError

    from tests.fakes import ListChannel

    class FailingSecond(IncidentStore):
        writes = 0

        def record(self, occurrences, **journaled):
            FailingSecond.writes += 1
            if FailingSecond.writes == 2:
                raise IncidentStoreError("database is locked")
            return super().record(occurrences, **journaled)

    db = tmp_path / "incidents.sqlite3"
    folder = journal_folder(db)
    folder.mkdir()
    (folder / "1-first-0.jsonl").write_text(_line(client="first"))
    (folder / "2-second-0.jsonl").write_text(_line(client="second"))
    store = FailingSecond(db)
    channel = ListChannel()
    policy = GroupingPolicy(group_wait=0, group_interval=300, repeat_interval=14400,
                            floor="medium")
    dispatcher = Dispatcher(store, Grouper(policy, clock=clock), [channel], clock=clock,
                            start=False, store_retry_s=0)
    dispatcher.pump()
    assert _counts(store) == {"first": 1}
    assert [a.client for a in channel.sent] == ["first"]
    assert (folder / "2-second-0.jsonl").exists()
    dispatcher._replay_at = 0.0  # the next look (a minute later): the rest
    dispatcher.pump()
    assert _counts(store) == {"first": 1, "second": 1}
    assert sorted(a.client for a in channel.sent) == ["first", "second"]


def test_aimsec_incidents_says_what_it_replayed_before_a_failure(tmp_path, monkeypatch,
                                                                 capsys):
    from aimsec_core.incidents.store import IncidentStoreError

    store, folder = _setup(tmp_path)  # "99-good" is written second
    (folder / "1-first-0.jsonl").write_text(_line(client="first"))
    store.record([Occurrence("m", "range", "before", "high", time.time(), time.time())])
    store.close()
    record = IncidentStore.record
    calls = []

    def failing_second(self, occurrences, **journaled):
        calls.append(1)
        if len(calls) == 2:
            raise IncidentStoreError("database is locked")
        return record(self, occurrences, **journaled)

    monkeypatch.setattr(IncidentStore, "record", failing_second)
    assert main(["incidents", "--db", str(store.path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert sorted(i["client"] for i in json.loads(out)["incidents"]) == ["before", "first"]
    assert ("replayed 1 finding(s) in 1 occurrence(s) from 1 journal(s) of processes that "
            "ended without writing them, then the journals") in err
    assert "were not replayed: database is locked" in err


def test_empty_journals_of_ended_processes_are_tidied_without_a_warning(tmp_path, capsys,
                                                                        caplog):
    """Processes that closed their guard and then ended through os._exit leave empty
    journals: each next process warned 'replayed 0 finding(s) in 0 occurrence(s) from N
    journal(s) of processes that ended without writing them', about nothing."""
    import logging

    from aimsec_core.alerts import Dispatcher

    db = tmp_path / "incidents.sqlite3"
    IncidentStore(db).close()
    folder = journal_folder(db)
    folder.mkdir()
    for pid in (11, 12):
        (folder / f"{pid}-gone-0.jsonl").write_text("")
    with caplog.at_level(logging.DEBUG, logger="aimsec.alerts"):
        Dispatcher(IncidentStore(db), start=False).pump()
    assert not folder.exists()  # tidied away
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                and "replayed" in r.getMessage()]
    folder.mkdir()
    (folder / "13-gone-1.jsonl").write_text("")
    assert main(["incidents", "--db", str(db), "--json"]) == 0
    assert "replayed" not in capsys.readouterr().err
    assert not folder.exists()
