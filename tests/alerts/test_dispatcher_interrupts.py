"""An interrupt (Ctrl-C: ``KeyboardInterrupt``, any ``BaseException``) while the
dispatcher writes its incidents in ``close`` or ``flush`` loses none of them: the batch
is rolled back and still queued, and the next ``close`` (or the one at interpreter exit)
writes it."""

from __future__ import annotations

import pytest

from aimsec_core.alerts import Dispatcher, Grouper, GroupingPolicy, OutboxChannel
from aimsec_core.alerts import dispatcher as dispatching
from aimsec_core.incidents import IncidentStore, Occurrence
from tests.fakes import ListChannel

NOW_POLICY = GroupingPolicy(group_wait=0, group_interval=300, repeat_interval=14400,
                            floor="medium")


class InterruptedStore(IncidentStore):
    """Raises ``KeyboardInterrupt`` inside its first write's transaction, after one
    occurrence of the batch was written (as Ctrl-C arriving mid-write)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.upserts = 0

    def _upsert(self, conn, o, *rest):
        self.upserts += 1
        if self.upserts == 2:
            raise KeyboardInterrupt
        return super()._upsert(conn, o, *rest)


class InterruptedOutbox(OutboxChannel):
    """Raises ``KeyboardInterrupt`` writing its first copy (before the incidents are
    written in close's final round)."""

    interrupted = False

    def write(self, alert):
        if not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return super().write(alert)


def _occurrences(dispatcher: Dispatcher, clock) -> None:
    for client in ("x", "y"):
        dispatcher.submit(Occurrence("m", "adversarial", client, "high", clock(), clock()))


def _clients(store: IncidentStore) -> list[str]:
    return sorted(i.client for i in IncidentStore(store.path).incidents())


def _loaded(store, channel, fallback, clock, grouper=Grouper) -> Dispatcher:
    """A dispatcher (no worker thread) with the occurrences of clients x and y queued."""
    dispatcher = Dispatcher(store, grouper(NOW_POLICY, clock=clock), [channel],
                            fallback=fallback, clock=clock, start=False)
    _occurrences(dispatcher, clock)
    return dispatcher


def _interrupted_then_closed(action, dispatcher: Dispatcher) -> None:
    """``action()`` is interrupted (Ctrl-C); a second ``close()`` then finishes."""
    try:
        with pytest.raises(KeyboardInterrupt):
            action()
    finally:
        assert dispatcher.close()


@pytest.mark.parametrize("how", ["close", "flush"])
def test_an_interrupted_incident_write_keeps_its_batch_for_the_next_close(tmp_path, clock,
                                                                          channel, how):
    # the old code took the batch out of the queue into a local list: an interrupt during
    # the write rolled the transaction back and the batch was gone (only the alerts'
    # outbox copies stayed); guarded.close() flushes through the same write
    store = InterruptedStore(tmp_path / "db.sqlite3")
    dispatcher = _loaded(store, channel, OutboxChannel(tmp_path / "outbox"), clock)
    try:
        with pytest.raises(KeyboardInterrupt):
            getattr(dispatcher, how)()
        assert _clients(store) == []  # rolled back: nothing half written
        if how == "close":  # the close at exit writes it, if nobody closes again
            assert dispatcher in dispatching._live
    finally:
        assert dispatcher.close()
    assert _clients(store) == ["x", "y"]
    assert [i.count for i in store.incidents()] == [1, 1]  # each written once
    assert dispatcher not in dispatching._live


def test_an_interrupted_close_waiting_for_the_worker_is_closed_again_at_exit(tmp_path,
                                                                              clock):
    # Ctrl-C while close() waited for the worker's final round dropped the dispatcher
    # from those closed at exit: the daemon worker then died with the interpreter
    # in the middle of its round
    dispatcher = Dispatcher(IncidentStore(tmp_path / "db.sqlite3"), None, clock=clock,
                            start=False)

    class Worker:
        def is_alive(self):
            return True

        def join(self, timeout=None):
            raise KeyboardInterrupt

    dispatcher._thread = Worker()  # type: ignore[assignment]
    try:
        with pytest.raises(KeyboardInterrupt):
            dispatcher.close()
        assert dispatcher in dispatching._live
    finally:
        dispatcher._thread = None
        dispatching._live.discard(dispatcher)


def test_an_interrupted_flush_still_alerts_on_its_batch(tmp_path, clock, channel):
    # flush stores the batch before the grouper counts it: the batch stayed queued for
    # the store, but was never counted into its groups, so the next close wrote its
    # incidents and sent no alert for them
    store = InterruptedStore(tmp_path / "db.sqlite3")
    dispatcher = _loaded(store, channel, OutboxChannel(tmp_path / "outbox"), clock)
    _interrupted_then_closed(dispatcher.flush, dispatcher)
    assert _clients(store) == ["x", "y"]
    assert sorted(alert.client for alert in channel.sent) == ["x", "y"]


def _interrupted_once(method):
    """``method`` raising ``KeyboardInterrupt`` at its first call on an instance."""

    def first_interrupted(self, *args):
        if not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return method(self, *args)

    return first_interrupted


class InterruptedChannel(ListChannel):
    """Raises ``KeyboardInterrupt`` at its first send."""

    interrupted = False
    send = _interrupted_once(ListChannel.send)


class InterruptedGrouper(Grouper):
    """Raises ``KeyboardInterrupt`` counting its first occurrence (a group state in
    Redis counts it in a round trip)."""

    interrupted = False
    observe = _interrupted_once(Grouper.observe)


@pytest.mark.parametrize("where", ["grouping", "outbox copy", "incident write",
                                   "channel send"])
def test_an_interrupted_close_loses_no_alert(tmp_path, clock, where):
    # close's final round writes the alerts' outbox copies first, then the incidents: an
    # interrupt writing a copy lost the batch already taken from the queue; and it took
    # the alerts to go (due groups, waiting retries) out of the grouper and the retry
    # queue before writing their copies: an interrupt before a copy was written lost the
    # alert, neither sent nor in the outbox; one while the batch was counted into its
    # groups lost the alerts of the batch
    channel = InterruptedChannel() if where == "channel send" else ListChannel()
    outbox_class = InterruptedOutbox if where == "outbox copy" else OutboxChannel
    store_class = InterruptedStore if where == "incident write" else IncidentStore
    grouper_class = InterruptedGrouper if where == "grouping" else Grouper
    store = store_class(tmp_path / "db.sqlite3")
    outbox = outbox_class(tmp_path / "outbox")
    dispatcher = _loaded(store, channel, outbox, clock, grouper=grouper_class)
    _interrupted_then_closed(dispatcher.close, dispatcher)
    assert _clients(store) == ["x", "y"]
    kept = {client for copy in (tmp_path / "outbox").glob("*.eml")
            for client in ("x", "y") if f"Client:      {client}\n" in copy.read_text()}
    sent = {alert.client for alert in channel.sent}
    assert sent | kept == {"x", "y"}, (sent, kept)


# run in a child: on the old code the signal handler's close waited for itself forever
_SIGNALLED = r"""
import signal, sys, tempfile
from pathlib import Path
from aimsec_core.alerts import Dispatcher, Grouper, GroupingPolicy
from aimsec_core.alerts import dispatcher as dispatching
from aimsec_core.incidents import IncidentStore, Occurrence
from tests.fakes import ListChannel

where = sys.argv[1]
folder = Path(tempfile.mkdtemp())
closed = []
signal.signal(signal.SIGUSR1, lambda *_: closed.append(dispatcher.close()))

class Signalling(Occurrence):  # merged into its queued twin under the queue's lock
    def merge(self, other):
        signal.raise_signal(signal.SIGUSR1)
        super().merge(other)

class SignallingStore(IncidentStore):  # inside the store's write, under its lock
    def _upsert(self, *args):
        if not closed:
            signal.raise_signal(signal.SIGUSR1)
        return super()._upsert(*args)

store = (SignallingStore if where == "store" else IncidentStore)(folder / "db.sqlite3")
channel = ListChannel()
policy = GroupingPolicy(group_wait=0, group_interval=300, repeat_interval=14400,
                        floor="medium")
dispatcher = Dispatcher(store, Grouper(policy), [channel], start=False)
kind = Signalling if where == "queue" else Occurrence
dispatcher.submit(kind("m", "adversarial", "x", "high", 1.0, 1.0))
dispatcher.submit(Occurrence("m", "adversarial", "x", "high", 2.0, 2.0))
if where == "store":
    dispatcher.flush()
assert closed == [False], closed
assert dispatcher in dispatching._live  # closed at exit instead
dispatching._close_all()
assert [i.count for i in IncidentStore(store.path).incidents()] == [2]
assert [a.client for a in channel.sent] == ["x"]
print("ok")
"""


@pytest.mark.parametrize("where", ["queue", "store"])
def test_close_from_a_signal_handler_inside_the_dispatcher_defers_to_exit(where):
    # a SIGTERM handler calling guarded.close() while the main thread was queueing a
    # finding (holding the queue's lock) or writing incidents (holding the store's)
    # waited for that lock forever: the process hung
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _SIGNALLED, where], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
