"""4 processes x 4 threads raising incidents into one SQLite file: every count right, no
"database is locked" escaping."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

from aimsec_core.incidents import IncidentStore, Occurrence
from tests.incidents import in_threads

PROCESSES, THREADS, ROUNDS = 4, 4, 60
SHARED = ("alpha", "beta", "gamma")  #: clients every thread hits (contended groups)


def raise_incidents(path: str, process: int) -> None:
    store = IncidentStore(path, timeout_s=60)

    def work(thread: int) -> None:
        for i in range(ROUNDS):
            now = time.time()
            batch = [Occurrence("m", "adversarial", c, "high", now, now) for c in SHARED]
            batch.append(Occurrence("m", "range", f"p{process}t{thread}", "medium", now,
                                    now, count=2))
            if i % 2:
                store.record(batch)  # one transaction
            else:
                for occurrence in batch:  # one transaction each
                    store.record([occurrence])

    in_threads(store, work, THREADS)


def test_processes_and_threads_writing_at_once(tmp_path: Path):
    path = str(tmp_path / "incidents.sqlite3")
    IncidentStore(path).incidents()  # created first, so every writer finds the schema
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=raise_incidents, args=(path, p))
               for p in range(PROCESSES)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0] * PROCESSES
    incidents = IncidentStore(path).incidents(limit=10_000)
    shared = {i.client: i.count for i in incidents if i.threat == "adversarial"}
    assert shared == {c: PROCESSES * THREADS * ROUNDS for c in SHARED}
    own = [i for i in incidents if i.threat == "range"]
    assert len(own) == PROCESSES * THREADS
    assert all(i.count == 2 * ROUNDS for i in own)


def test_a_fresh_file_opened_by_many_threads_at_once_migrates_once(tmp_path: Path):
    path = tmp_path / "fresh.sqlite3"
    start, errors = threading.Barrier(8), []

    def open_and_write() -> None:
        try:
            start.wait()
            store = IncidentStore(path)
            now = time.time()
            store.record([Occurrence("m", "range", "c", "medium", now, now)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_and_write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    [incident] = IncidentStore(path).incidents()
    assert incident.count == 8
