"""Incidents survive a process killed with SIGKILL (the OOM killer, a container runtime
after its grace period): each occurrence queued is in its process's journal before the
guarded call returns, and the next process (or ``aimsec incidents``) replays it, once.
A batch retried after an interrupt that came after its commit is written once too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from aimsec_core.alerts import Dispatcher
from aimsec_core.cli import main
from aimsec_core.incidents import IncidentStore, Occurrence
from aimsec_core.incidents.journal import Journal, journal_folder, replay

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32",
                                reason="the journal needs POSIX flock")

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "adapters"),
                                         env.get("PYTHONPATH", "")])
    env["SECURITY_LOG_PATH"] = str(tmp_path / "logs")
    env["AIMSEC_ALERTS"] = "0"
    return env


def _killed(tmp_path: Path, script: str, *args: str) -> list[str]:
    """Run ``script`` until it prints ``ready`` (its calls returned), then SIGKILL it;
    returns what it printed before."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_env(tmp_path), cwd=tmp_path)
    said = []
    try:
        for line in child.stdout:
            if line.strip() == "ready":
                break
            said.append(line.strip())
        else:
            raise AssertionError(f"the child ended first: {child.stderr.read()}")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    return said


def _counts(db: Path) -> Counter:
    return Counter({(i.threat, i.client): i.count
                    for i in IncidentStore(db, read_only=True).incidents(limit=10_000)})


GUARDED = """
    import sys
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    import aimsec_core
    from aimsec_core.alerts import dispatcher as dispatching

    X = np.eye(4)
    guarded = aimsec_core.guard(LogisticRegression().fit(X, [0, 1, 0, 1]), name="lr",
                                mode="monitor", constraints={"max_value": 1.0})
    sink = guarded.__aimsec_guard__.sinks[-1]
    for client in ("a", "b", "c"):  # written by a flush: the replay must not add them again
        with aimsec_core.client(client):
            for _ in range(2):
                guarded.predict(X * 2)
    assert sink.flush(30)
    # the worker never writes again: what follows is in memory (and the journal) only
    dispatching.Dispatcher.pump = lambda self, **kw: 0
    for client in ("a", "b", "c"):
        with aimsec_core.client(client):
            for _ in range(3):
                guarded.predict(X * 2)
    print("ready", flush=True)
    import time
    time.sleep(600)
"""


def test_incidents_queued_when_the_process_is_killed_are_replayed_once(tmp_path, capsys):
    _killed(tmp_path, GUARDED)
    db = tmp_path / "logs" / "incidents.sqlite3"
    assert _counts(db) == {("range", c): 2 for c in "abc"}  # the 3 calls each were lost
    audit = [json.loads(line) for line in (tmp_path / "logs" / "audit.jsonl").open()]
    flagged = Counter(line["client"] for line in audit if line["findings"])
    assert flagged == {c: 5 for c in "abc"}  # the audit trail has every call
    # a report (read-only) says what waits in the journal, and changes nothing
    from aimsec_core.reporting.incidents import load_incidents

    _, note = load_incidents(db)
    assert "9 finding(s) of 1 process(es) that ended without writing them" in note
    assert len(list(journal_folder(db).glob("*.jsonl"))) == 2
    # aimsec incidents replays the journal of the killed process, and says so
    assert main(["incidents", "--db", str(db), "--json"]) == 0
    out, err = capsys.readouterr()
    listed = {(i["threat"], i["client"]): i["count"] for i in json.loads(out)["incidents"]}
    assert listed == {("range", c): 5 for c in "abc"}
    assert "replayed 9 finding(s) in 3 occurrence(s) from 1 journal(s)" in err
    assert list(journal_folder(db).glob("*.jsonl")) == []
    # replayed once: a second listing, a new dispatcher, change nothing
    assert main(["incidents", "--db", str(db), "--json"]) == 0
    assert "replayed" not in capsys.readouterr().err
    assert "journals" not in load_incidents(db)[1]
    Dispatcher(IncidentStore(db), start=False).pump()
    assert _counts(db) == {("range", c): 5 for c in "abc"}


def test_a_new_guard_replays_the_journal_of_a_killed_process_at_its_start(tmp_path):
    _killed(tmp_path, GUARDED)
    db = tmp_path / "logs" / "incidents.sqlite3"
    script = """
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        import aimsec_core
        X = np.eye(4)
        guarded = aimsec_core.guard(LogisticRegression().fit(X, [0, 1, 0, 1]), name="lr")
        guarded.predict(X)  # a clean call: the replay does not wait for a finding
        assert guarded.close(30)
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=_env(tmp_path),
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "aimsec replayed 9 finding(s)" in done.stderr
    assert _counts(db) == {("range", c): 5 for c in "abc"}


THREADS = """
    import sys, threading
    from aimsec_core.alerts import Dispatcher
    from aimsec_core.incidents import IncidentStore, Occurrence
    db, tag, threads, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    # the worker writes every few milliseconds meanwhile: journals switch files and empty
    # them while the threads queue
    dispatcher = Dispatcher(IncidentStore(db), tick_s=0.002)
    def queue(n):
        for i in range(calls):
            dispatcher.submit(Occurrence("m", "range", f"{tag}{n}-{i % 3}", "medium",
                                         1.8e9 + i, 1.8e9 + i))
    workers = [threading.Thread(target=queue, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print("ready", flush=True)
    import time
    time.sleep(600)
"""


def test_threads_of_two_killed_processes_lose_and_double_nothing(tmp_path):
    db = tmp_path / "incidents.sqlite3"
    IncidentStore(db).incidents()  # the file exists before both start
    children = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(THREADS), str(db),
                                  tag, "4", "150"], stdout=subprocess.PIPE, text=True,
                                 env=_env(tmp_path)) for tag in "pq"]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    for child in children:  # both at once: their journals and writes interleaved
        os.kill(child.pid, signal.SIGKILL)
    for child in children:
        child.wait(30)
    store = IncidentStore(db)
    done = replay(store)
    expected = {("range", f"{tag}{n}-{k}"): 50 for tag in "pq" for n in range(4)
                for k in range(3)}
    assert _counts(db) == expected
    assert done.journals <= 2 and sum(_counts(db).values()) == 1200
    assert not replay(store)  # nothing left: the journals are gone
    assert store.journal_mark("anything") == 0


def test_a_live_process_journal_is_left_to_it(tmp_path):
    db = tmp_path / "incidents.sqlite3"
    store = IncidentStore(db)
    store.incidents()  # the file exists
    live = Dispatcher(store, start=False)
    live.submit(Occurrence("m", "range", "c", "medium", 1.8e9, 1.8e9))
    assert len(list(journal_folder(db).glob("*.jsonl"))) == 2
    assert not replay(IncidentStore(db))  # locked by its (living) process
    assert _counts(db) == {}
    assert live.close()
    assert _counts(db) == {("range", "c"): 1}
    assert not journal_folder(db).exists()  # closed: its files (and the folder) are gone
    assert sqlite3_rows(db, "SELECT * FROM journals") == []


def sqlite3_rows(db: Path, query: str) -> list:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


class CommittedThenInterrupted(IncidentStore):
    """Raises ``KeyboardInterrupt`` after its first write of occurrences committed, before
    ``record`` returns (Ctrl-C arriving between SQLite's commit and the return)."""

    interrupted = False

    def _maybe_prune(self):
        if not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        super()._maybe_prune()


def test_a_batch_interrupted_after_its_commit_is_written_once(tmp_path, clock):
    store = CommittedThenInterrupted(tmp_path / "incidents.sqlite3", clock=clock)
    dispatcher = Dispatcher(store, clock=clock, start=False)
    for _ in range(2):
        dispatcher.submit(Occurrence("m", "range", "c", "medium", clock(), clock()))
    with pytest.raises(KeyboardInterrupt):
        dispatcher.pump()
    assert _counts(store.path) == {("range", "c"): 2}  # committed, yet still queued
    dispatcher.submit(Occurrence("m", "range", "c", "medium", clock(), clock()))
    dispatcher.submit(Occurrence("m", "range", "d", "medium", clock(), clock()))
    assert dispatcher.close()
    assert _counts(store.path) == {("range", "c"): 3, ("range", "d"): 1}  # was c: 5


def test_the_journal_switches_files_and_empties_what_was_committed(tmp_path, clock):
    store = IncidentStore(tmp_path / "incidents.sqlite3", clock=clock)
    dispatcher = Dispatcher(store, clock=clock, start=False)
    journal = dispatcher.journal
    first, second = journal.paths()
    dispatcher.submit(Occurrence("m", "range", "c", "medium", clock(), clock()))
    assert first.stat().st_size > 0 and second.stat().st_size == 0
    dispatcher.pump()  # drained (writes now go to the second file), then committed
    assert first.stat().st_size == 0
    dispatcher.submit(Occurrence("m", "range", "c", "medium", clock(), clock()))
    assert second.stat().st_size > 0
    dispatcher.pump()
    assert first.stat().st_size == second.stat().st_size == 0
    assert _counts(store.path) == {("range", "c"): 2}


def test_a_journal_over_its_bound_holds_the_rest_in_memory_and_counts_it(tmp_path, clock):
    store = IncidentStore(tmp_path / "incidents.sqlite3", clock=clock)
    journal = Journal(journal_folder(store.path), max_bytes=400)
    dispatcher = Dispatcher(store, clock=clock, start=False, journal=journal)
    for i in range(5):
        dispatcher.submit(Occurrence("m", "range", f"c{i}", "medium", clock(), clock()))
    assert 0 < journal.paths()[0].stat().st_size <= 400 and journal.skipped >= 3
    assert dispatcher.close()
    assert sum(_counts(store.path).values()) == 5


def test_unreadable_journal_lines_are_skipped_and_counted(tmp_path, clock):
    db = tmp_path / "incidents.sqlite3"
    folder = journal_folder(db)
    folder.mkdir()
    line = json.dumps({"s": 1, "m": "m", "t": "range", "c": "c", "v": "medium", "f": 1.8e9,
                       "l": 1.8e9, "n": 2, "e": {"reasons": ["too big"]}})
    (folder / "4242-dead-0.jsonl").write_text(line + "\n" + line[:30] + "\n")
    done = replay(IncidentStore(db, clock=clock))
    assert (done.journals, done.findings, done.unreadable) == (1, 2, 1)
    [incident] = IncidentStore(db).incidents()
    assert (incident.count, incident.evidence.reasons) == (2, ["too big"])


def test_record_refuses_sequence_numbers_not_one_per_occurrence(tmp_path):
    store = IncidentStore(tmp_path / "incidents.sqlite3")
    o = Occurrence("m", "range", "c", "medium", 1.8e9, 1.8e9)
    with pytest.raises(ValueError, match="expected one each"):
        store.record([o, o], journal="j", seqs=[1])
    assert store.record([o], journal="j", seqs=[1]) != [None]
    assert store.record([o], journal="j", seqs=[1]) == [None]  # written before
    assert _counts(store.path) == {("range", "c"): 1}


FORKED = """
    import os, sys, time
    from aimsec_core.alerts import Dispatcher
    from aimsec_core.incidents import IncidentStore, Occurrence
    dispatcher = Dispatcher(IncidentStore(sys.argv[1]), start=False)
    dispatcher.submit(Occurrence("m", "range", "parent", "medium", 1.8e9, 1.8e9))
    done, said = os.pipe()
    child = os.fork()
    if child == 0:  # the child lives on after its parent is killed
        dispatcher.submit(Occurrence("m", "range", "child", "medium", 1.8e9, 1.8e9))
        os.write(said, b"x")
        time.sleep(600)
    os.read(done, 1)
    print("child", child, flush=True)
    print("ready", flush=True)
    time.sleep(600)
"""


def test_a_forked_child_does_not_hold_its_killed_parents_journal(tmp_path):
    db = tmp_path / "incidents.sqlite3"
    said = _killed(tmp_path, FORKED, str(db))
    [child] = [int(line.split()[1]) for line in said if line.startswith("child")]
    try:
        done = replay(IncidentStore(db))
        assert (done.journals, done.findings) == (1, 1)  # the parent's, not the child's
        assert _counts(db) == {("range", "parent"): 1}
    finally:
        os.kill(child, signal.SIGKILL)
    assert _wait_gone(child)
    replay(IncidentStore(db))
    assert _counts(db) == {("range", "parent"): 1, ("range", "child"): 1}


def _wait_gone(pid: int) -> bool:
    """Whether process ``pid`` (not our child: its parent was killed) has ended."""
    import time

    for _ in range(600):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie awaiting its reaper has ended too
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split(") ")[-1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_a_journal_that_cannot_be_written_never_fails_the_call(tmp_path, clock, caplog):
    import logging

    db = tmp_path / "incidents.sqlite3"
    journal_folder(db).write_text("a file where the folder goes")
    dispatcher = Dispatcher(IncidentStore(db, clock=clock), clock=clock, start=False)
    with caplog.at_level(logging.ERROR, logger="aimsec.incidents"):
        for client in "ab":
            dispatcher.submit(Occurrence("m", "range", client, "medium", clock(), clock()))
    assert dispatcher.journal.skipped == 2
    assert sum("cannot write the incident journal" in r.message for r in caplog.records) == 1
    journal_folder(db).unlink()  # the disk is writable again: tried after RETRY_S
    dispatcher.journal._failed_until = 1e-9  # (as if RETRY_S had passed)
    dispatcher.submit(Occurrence("m", "range", "c", "medium", clock(), clock()))
    assert dispatcher.journal.skipped == 2
    assert len(list(journal_folder(db).glob("*.jsonl"))) == 2
    assert dispatcher.close()
    assert _counts(db) == {("range", c): 1 for c in "abc"}


def test_a_journal_replayed_but_not_deleted_is_not_written_again(tmp_path, clock,
                                                                 monkeypatch):
    """A replay whose journal could not be deleted (or whose process was killed after
    its commit) forgot the journal's number: the next replay wrote it all again."""
    db = tmp_path / "incidents.sqlite3"
    folder = journal_folder(db)
    folder.mkdir()
    line = json.dumps({"s": 7, "m": "m", "t": "range", "c": "c", "v": "medium", "f": 1.8e9,
                       "l": 1.8e9, "n": 3, "e": {}})
    (folder / "4242-dead-0.jsonl").write_text(line + "\n")
    store = IncidentStore(db, clock=clock)
    real = Path.unlink

    def refused(path, missing_ok=False):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "unlink", refused)
    assert replay(store).findings == 3
    monkeypatch.setattr(Path, "unlink", real)
    again = replay(store)
    assert (again.journals, again.findings) == (1, 0)  # taken, nothing written twice
    assert _counts(db) == {("range", "c"): 3}
    assert not list(folder.glob("*.jsonl"))


def test_close_empties_the_journal_and_a_normal_exit_deletes_it(tmp_path):
    """As the README says: ``guarded.close()`` writes the journal's occurrences and leaves
    its files empty (the shared worker lives on); the process's exit deletes them."""
    script = """
        import os
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        import aimsec_core
        X = np.eye(4)
        guarded = aimsec_core.guard(LogisticRegression().fit(X, [0, 1, 0, 1]), name="lr",
                                    mode="monitor", constraints={"max_value": 1.0})
        guarded.predict(X * 5)
        folder = "logs/incidents.sqlite3.journal"
        assert sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
        assert guarded.close(30)
        print(sorted(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)))
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=_env(tmp_path),
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[0,", "0]"]
    assert not journal_folder(tmp_path / "logs" / "incidents.sqlite3").exists()
    assert _counts(tmp_path / "logs" / "incidents.sqlite3") == {("range", "anonymous"): 1}
