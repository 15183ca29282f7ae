"""Several worker processes sharing one audit trail, one incident database and one alert
state: processes forked from a parent that already used them, killed mid-write, or leaving
through multiprocessing's exit path (which skips ``atexit``)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from aimsec_core.alerts import Dispatcher
from aimsec_core.audit import verify_trail
from aimsec_core.audit.writer import writer_for
from aimsec_core.incidents import IncidentStore, Occurrence

needs_fork = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32",
                                reason="needs os.fork and fcntl.flock")


def _in_a_fresh_interpreter(scenario: str, *args: object) -> None:
    """Run ``scenario`` (a function of this module) in a fresh interpreter, which must
    exit 0. The scenarios fork: forked from this test process, which holds the threads of
    torch, TensorFlow and earlier tests' servers, a child may hang on a lock one of those
    held at the fork, whatever aimsec does."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(root), str(root / "adapters"), os.environ.get("PYTHONPATH", "")])}
    code = (f"import sys; from tests.test_replicas_hostile import {scenario}; "
            f"{scenario}(*sys.argv[1:])")
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _submit(dispatcher: Dispatcher, client: str) -> None:
    now = time.time()
    dispatcher.submit(Occurrence("m", "range", client, "medium", now, now))


def _multiprocessing_child_queues_then_exits(path: str) -> None:
    import multiprocessing

    dispatcher = Dispatcher(IncidentStore(path), None, tick_s=1.0)
    _submit(dispatcher, "parent")
    assert dispatcher.flush(30)
    child = multiprocessing.get_context("fork").Process(target=_submit,
                                                        args=(dispatcher, "child"))
    child.start()
    child.join(60)
    assert child.exitcode == 0, child.exitcode
    dispatcher.close(30)


@needs_fork
def test_a_forked_multiprocessing_child_stores_its_findings_before_it_exits(tmp_path):
    # multiprocessing's forked children leave through os._exit, which skips atexit: the
    # occurrences a child queued just before returning were never written
    path = tmp_path / "incidents.sqlite3"
    _in_a_fresh_interpreter("_multiprocessing_child_queues_then_exits", path)
    assert sorted(i.client for i in IncidentStore(path).incidents()) == ["child", "parent"]


def _fork_then_die_holding_the_lock(file: str, ready: int, go: int, done: int) -> None:
    """A process that wrote to the trail, forked a child, and is then killed in the middle
    of a write (while it holds the trail's lock)."""
    writer = writer_for(Path(file), 0, 0, False)
    writer.write(b'{"who":"parent"')
    if os.fork() == 0:  # the child: waits until its parent is dead, then writes
        try:
            os.read(go, 1)
            signal.alarm(20)  # a child stuck on the lock ends here, with SIGALRM
            writer.write(b'{"who":"child"')
            os.write(done, b"1")
        finally:
            os._exit(0)
    import fcntl

    fcntl.flock(writer._lock_fd, fcntl.LOCK_EX)  # as inside write(), then killed
    os.write(ready, b"1")
    time.sleep(600)


def _a_child_outlives_a_parent_killed_holding_the_trail_lock(file: str) -> None:
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()  # (a multiprocessing parent could not be joined: its child holds
    if pid == 0:     # the sentinel pipe open)
        try:
            _fork_then_die_holding_the_lock(str(file), ready_w, go_r, done_w)
        finally:
            os._exit(1)
    os.close(ready_w)
    os.close(done_w)
    assert os.read(ready_r, 1) == b"1"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.write(go_w, b"1")
    assert os.read(done_r, 1) == b"1"  # empty (b"") when the child died on its alarm
    for fd in (ready_r, go_r, go_w, done_r):
        os.close(fd)
    result = verify_trail(file)
    assert result.intact and result.lines == 2, result.reason


@needs_fork
def test_a_child_outlives_a_parent_killed_while_it_held_the_trail_lock(tmp_path):
    _in_a_fresh_interpreter("_a_child_outlives_a_parent_killed_holding_the_trail_lock",
                            tmp_path / "audit.jsonl")


class _SilentServer:
    """A TCP server that reads requests and never answers: a Redis that hangs (paused,
    partitioned away). ``connections`` counts the connections made to it (a client gives
    up a connection whose answer timed out)."""

    def __init__(self) -> None:
        import socket
        import threading

        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn) -> None:
        with conn:
            while True:
                try:
                    if not conn.recv(65536):
                        return
                except OSError:
                    return


def test_a_hung_redis_is_waited_for_once_per_round_not_once_per_alert_group(clock):
    # every group's add waited out the socket timeout: a round of N groups held the
    # worker N timeouts long, past the exit flush's bound, so the alerts were lost
    import redis

    from aimsec_core.alerts import Grouper, GroupingPolicy
    from aimsec_core.alerts.state import RedisGroupState

    from tests.fakes import ListChannel

    hung = _SilentServer()
    state = RedisGroupState(redis.Redis.from_url(  # as from_url builds it, waiting less
        f"redis://127.0.0.1:{hung.port}/0", socket_timeout=0.2, socket_connect_timeout=0.2))
    policy = GroupingPolicy(group_wait=0, group_interval=300, repeat_interval=14400,
                            floor="medium", max_clients=0)
    channel = ListChannel()
    dispatcher = Dispatcher(None, Grouper(policy, state, clock=clock), [channel],
                            clock=clock, start=False)
    for client in range(6):
        dispatcher.submit(Occurrence("m", "adversarial", f"c{client}", "high", clock(),
                                     clock()))
    dispatcher.pump()
    assert sorted(a.client for a in channel.sent) == [f"c{i}" for i in range(6)]
    deadline = time.monotonic() + 10  # the server's accept thread may lag on a busy machine
    while hung.connections < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hung.connections == 1  # the first add; the rest of the round grouped here
    hung.server.close()


def _child_finishes_despite_a_lock_held_at_fork(lock, work) -> bool:
    """Fork while a parent thread holds ``lock``; whether the child finishes ``work()``
    (a child stuck on the lock it inherited held ends with SIGALRM after 20 s)."""
    import threading

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(30)
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            signal.alarm(20)
            work()
            os.write(done_w, b"1")
        finally:
            os._exit(0)
    os.close(done_w)
    release.set()
    holder.join()
    finished = os.read(done_r, 1)
    os.close(done_r)
    os.waitpid(pid, 0)
    return finished == b"1"


def _a_child_writes_incidents_despite_the_store_lock_held_at_fork(path: str) -> None:
    # the child reset its connections after a fork but kept the parent's lock (held, as
    # release() or a first connection does, by a thread that was not forked along)
    store = IncidentStore(path)
    store.incidents()  # the parent's connection is open

    def write() -> None:
        now = time.time()
        store.record([Occurrence("m", "range", "child", "medium", now, now)])

    assert _child_finishes_despite_a_lock_held_at_fork(store._lock, write)
    assert [i.client for i in store.incidents()] == ["child"]


@needs_fork
def test_a_child_forked_while_a_parent_thread_held_the_incident_store_lock_can_write(
        tmp_path):
    _in_a_fresh_interpreter("_a_child_writes_incidents_despite_the_store_lock_held_at_fork",
                            tmp_path / "incidents.sqlite3")


def _a_child_builds_sinks_despite_the_wiring_lock_held_at_fork(folder: str) -> None:
    from aimsec_core.alerts import wiring

    # held as security_sinks() holds it while it builds a dispatcher
    assert _child_finishes_despite_a_lock_held_at_fork(
        wiring._shared_lock, lambda: wiring.security_sinks(
            incidents=Path(folder) / "incidents.sqlite3", alerts=False, metrics=False))


@needs_fork
def test_a_child_forked_while_a_parent_thread_built_a_guards_sinks_can_build_its_own(
        tmp_path):
    _in_a_fresh_interpreter("_a_child_builds_sinks_despite_the_wiring_lock_held_at_fork",
                            tmp_path)


def test_a_replica_leaving_sends_its_own_pending_groups_not_the_other_replicas(clock):
    # its exit flush forced every group in Redis: each worker recycled (gunicorn
    # max_requests) sent the groups of every model and client at once, group_wait or not
    import redis

    from aimsec_core.alerts import Grouper, GroupingPolicy
    from aimsec_core.alerts.state import RedisGroupState

    from tests.servers import RedisServer

    server = RedisServer().start()
    try:
        policy = GroupingPolicy(group_wait=30, group_interval=300, repeat_interval=14400,
                                floor="medium")
        staying, leaving = (Grouper(policy, RedisGroupState(redis.Redis.from_url(
            server.url)), clock=clock) for _ in range(2))
        for grouper, model in ((staying, "a"), (leaving, "b")):
            grouper.observe(Occurrence(model, "adversarial", "c", "high", clock(), clock()))
        assert [a.model for a in leaving.due(force=True)] == ["b"]  # its own, at once
        assert staying.due() == []  # the other replica's group still collects
        clock.advance(30)
        assert [(a.model, a.kind) for a in staying.due()] == [("a", "new")]
    finally:
        server.stop()
