"""The background dispatcher: a bounded queue that never blocks a prediction and drops the
oldest low-severity work first; retries with backoff; the outbox as the last resort; every
delivery recorded in the incident store and the metrics; flush on close."""

from __future__ import annotations

import email
import json
import os
import threading
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from aimsec_core.alerts import Backoff, Dispatcher, Grouper, GroupingPolicy, OutboxChannel
from aimsec_core.incidents import IncidentStore, Occurrence
from aimsec_core.metrics import Metrics

from tests.fakes import ListChannel

NOW_POLICY = GroupingPolicy(group_wait=0, group_interval=300, repeat_interval=14400,
                            floor="medium")


def occ(clock, client, severity="high", threat="adversarial"):
    return Occurrence("m", threat, client, severity, clock(), clock())


def test_a_full_queue_drops_the_oldest_lowest_severity_first(clock):
    dispatcher = Dispatcher(None, None, capacity=3, clock=clock, start=False)
    for client, severity in (("a", "medium"), ("b", "high"), ("c", "medium")):
        dispatcher.submit(occ(clock, client, severity))
    dispatcher.submit(occ(clock, "d", "high"))  # full: the oldest medium ("a") goes
    dispatcher.submit(occ(clock, "e", "low"))  # less severe than everything queued: dropped
    dispatcher.submit(occ(clock, "b", "high"))  # joins its queued group: no slot needed
    queued = {o.client: o.count for level in dispatcher._pending for o in level.values()}
    assert queued == {"b": 2, "c": 1, "d": 1}
    assert dispatcher.dropped == {"low": 1, "medium": 1, "high": 0, "critical": 0}
    assert dispatcher.depth == 3


def test_identical_occurrences_share_one_slot_and_an_escalation_moves_it(clock):
    dispatcher = Dispatcher(None, None, capacity=2, clock=clock, start=False)
    for _ in range(1000):
        dispatcher.submit(occ(clock, "a", "medium"))
    dispatcher.submit(occ(clock, "a", "critical"))
    dispatcher.submit(occ(clock, "b", "medium"))
    dispatcher.submit(occ(clock, "c", "medium"))  # full: "b", the only medium, goes
    assert dispatcher._pending[3]["m", "adversarial", "a"].count == 1001
    assert dispatcher.dropped["medium"] == 1


def test_submit_never_waits_for_a_stuck_channel(tmp_path, clock):
    entered, release = threading.Event(), threading.Event()

    class Stuck:
        name = "stuck"

        def send(self, alert):
            entered.set()
            release.wait(30)

    dispatcher = Dispatcher(IncidentStore(tmp_path / "db.sqlite3"), Grouper(NOW_POLICY,
                            clock=clock), [Stuck()], clock=clock, capacity=10)
    dispatcher.submit(occ(clock, "first"))
    assert entered.wait(30)  # the worker is now inside send() and will stay there
    for i in range(10_000):  # a prediction's submits go through regardless
        dispatcher.submit(occ(clock, f"client-{i}", "medium"))
    assert dispatcher.depth == 10 and dispatcher.dropped["medium"] == 9_990
    release.set()
    assert dispatcher.close(30)


def test_a_failing_channel_is_retried_with_backoff_then_the_outbox(tmp_path, clock):
    store = IncidentStore(tmp_path / "db.sqlite3", clock=clock)
    failing = ListChannel(failures=99)
    registry = CollectorRegistry()
    outbox = OutboxChannel(tmp_path / "outbox")
    dispatcher = Dispatcher(store, Grouper(NOW_POLICY, clock=clock), [failing],
                            fallback=outbox, backoff=Backoff(base_s=1, attempts=4),
                            clock=clock, metrics=Metrics(registry), start=False)
    dispatcher.submit(occ(clock, "203.0.113.7"))
    attempts_at = []
    for _ in range(20):
        before = failing.failures
        dispatcher.pump()
        if failing.failures < before:
            attempts_at.append(clock() - 1_800_000_000.0)
        clock.advance(1)
    assert attempts_at == [0, 1, 3, 7]  # waits of 1, 2, 4 seconds
    statuses = [(d["channel"], d["status"], d["attempt"]) for d in store.deliveries()]
    assert statuses == [("list", "retrying", 1), ("list", "retrying", 2),
                        ("list", "retrying", 3), ("list", "failed", 4), ("outbox", "outbox", 1)]
    [saved] = list((tmp_path / "outbox").glob("*.eml"))
    message = email.message_from_bytes(saved.read_bytes())
    assert "HIGH: adversarial on model m from 203.0.113.7" in message["Subject"]
    assert registry.get_sample_value("aimsec_alerts_total",
                                     {"channel": "list", "status": "retrying"}) == 3
    assert registry.get_sample_value("aimsec_alerts_total",
                                     {"channel": "outbox", "status": "outbox"}) == 1


def test_a_backoff_that_grows_past_any_float_still_ends_in_the_outbox(clock):
    """Backoff(factor=1e200): the third wait, 1e400 s, raised OverflowError inside the
    failed attempt's handling, out of the round: the alert was neither retried nor handed
    to the outbox. A wait that grows past any float is the cap."""
    failing, outbox = ListChannel(failures=99), ListChannel()
    outbox.name = "outbox"
    dispatcher = Dispatcher(None, Grouper(NOW_POLICY, clock=clock), [failing],
                            fallback=outbox, backoff=Backoff(factor=1e200, cap_s=5,
                                                             attempts=4),
                            clock=clock, start=False)
    dispatcher.submit(occ(clock, "x"))
    for _ in range(30):
        dispatcher.pump()
        clock.advance(1)
    assert failing.failures == 95 and [a.client for a in outbox.sent] == ["x"]


@pytest.mark.parametrize("field, value", [
    ("base_s", float("nan")), ("base_s", -1), ("cap_s", float("nan")), ("factor", 0),
    ("factor", float("nan")), ("attempts", 0), ("attempts", 2.5), ("attempts", True),
])
def test_a_backoff_no_retry_schedule_can_follow_is_a_configuration_error(field, value):
    """Taken as given: a NaN wait made a retry that never came due (held until close),
    attempts=2.5 a comparison with a float."""
    from aimsec_core import ConfigurationError

    with pytest.raises(ConfigurationError, match=f"backoff {field}.*expected.*received"):
        Backoff(**{field: value})


def test_a_channel_back_up_gets_the_alert_and_nothing_is_sent_twice(tmp_path, clock):
    flaky = ListChannel(failures=2)
    dispatcher = Dispatcher(IncidentStore(tmp_path / "db.sqlite3"),
                            Grouper(NOW_POLICY, clock=clock), [flaky], clock=clock,
                            start=False)
    dispatcher.submit(occ(clock, "x"))
    for _ in range(10):
        dispatcher.pump()
        clock.advance(1)
    assert [a.client for a in flaky.sent] == ["x"] and dispatcher.retries == 0


def test_a_refusal_is_not_retried(tmp_path, clock):
    refused = ListChannel(failures=1, retryable=False)
    outbox = ListChannel()
    outbox.name = "outbox"
    dispatcher = Dispatcher(None, Grouper(NOW_POLICY, clock=clock), [refused],
                            fallback=outbox, clock=clock, start=False)
    dispatcher.submit(occ(clock, "x"))
    dispatcher.pump()
    assert dispatcher.retries == 0 and len(outbox.sent) == 1


def test_an_alert_sent_to_the_outbox_instead_is_logged_as_such(clock, caplog):
    # the warning read "aimsec alert via outbox outbox (attempt 1): ..."
    outbox = ListChannel()
    outbox.name = "outbox"
    dispatcher = Dispatcher(None, Grouper(NOW_POLICY, clock=clock),
                            [ListChannel(failures=1, retryable=False)], fallback=outbox,
                            clock=clock, start=False)
    dispatcher.submit(occ(clock, "x"))
    dispatcher.pump()
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("aimsec alert written to the outbox instead (attempt 1): ")
               for m in logged)
    assert not any("outbox outbox" in m for m in logged)


def test_without_channels_alerts_go_to_the_outbox(tmp_path, clock):
    dispatcher = Dispatcher(None, Grouper(NOW_POLICY, clock=clock), [],
                            fallback=OutboxChannel(tmp_path / "outbox"), clock=clock,
                            start=False)
    dispatcher.submit(occ(clock, "x"))
    dispatcher.pump()
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1


def test_close_flushes_the_queue_and_pending_groups_through_the_worker(tmp_path, channel):
    store = IncidentStore(tmp_path / "db.sqlite3")
    dispatcher = Dispatcher(store, Grouper(GroupingPolicy(group_wait=3600, floor="medium",
                                                          max_clients=0)), [channel])
    import time

    for i in range(50):
        dispatcher.submit(Occurrence("m", "range", f"c{i % 5}", "medium", time.time(),
                                     time.time()))
    assert dispatcher.close(30)
    assert sum(i.count for i in store.incidents()) == 50
    assert sorted(a.client for a in channel.sent) == [f"c{i}" for i in range(5)]


def test_clients_beyond_the_cap_share_one_roll_up_group(tmp_path, clock, channel):
    """An attacker rotating client ids gets no message per id: past max_clients, one
    roll-up group carries the rest."""
    from aimsec_core.alerts.grouping import ROLLUP

    store = IncidentStore(tmp_path / "db.sqlite3", clock=clock)
    dispatcher = Dispatcher(store, Grouper(GroupingPolicy(group_wait=30, floor="high",
                                                          max_clients=3), clock=clock),
                            [channel], clock=clock, start=False)
    for i in range(300):
        dispatcher.submit(Occurrence("m", "adversarial", f"bot-{i}", "high", clock(), clock()))
    clock.advance(31)
    dispatcher.pump()
    clients = sorted(a.client for a in channel.sent)
    assert clients == sorted([ROLLUP, "bot-0", "bot-1", "bot-2"])
    rollup = next(a for a in channel.sent if a.client == ROLLUP)
    assert rollup.count == 297
    assert len(store.incidents(limit=1000)) == 300  # incidents keep every client


def test_a_broken_store_loses_neither_the_alert_nor_the_occurrences(tmp_path, clock,
                                                                      channel):
    (tmp_path / "file").write_text("not a folder")
    broken = IncidentStore(tmp_path / "file" / "db.sqlite3", timeout_s=0.1)
    dispatcher = Dispatcher(broken, Grouper(NOW_POLICY, clock=clock), [channel],
                            clock=clock, start=False)
    dispatcher.submit(occ(clock, "x"))
    dispatcher.pump()
    assert len(channel.sent) == 1
    assert len(dispatcher._unstored) == 1  # kept for the next round


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_must_be_positive(capacity):
    with pytest.raises(ValueError, match="capacity"):
        Dispatcher(None, None, capacity=capacity, start=False)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_a_worker_of_its_own_and_does_not_resend_the_parents(clock,
                                                                                channel):
    # pre-fork servers (gunicorn --preload) fork after the parent's worker started: the
    # child inherited a dead thread object, never started its own, and its findings
    # stayed queued until dropped
    dispatcher = Dispatcher(None, Grouper(NOW_POLICY, clock=clock), [channel], clock=clock,
                            tick_s=0.01)
    dispatcher.submit(occ(clock, "parent"))
    assert dispatcher.flush(30) and [a.client for a in channel.sent] == ["parent"]
    dispatcher.submit(occ(clock, "parent-later"))  # queued in the parent at the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what its own worker sent, then leave at once
        try:
            channel.sent.clear()
            dispatcher.submit(occ(clock, "child"))
            deadline = time.monotonic() + 30
            while not channel.sent and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)  # anything the child would wrongly resend goes in this round
            os.write(write, json.dumps([a.client for a in channel.sent]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        sent_by_child = json.loads(pipe.read() or b"null")
    os.waitpid(pid, 0)
    assert sent_by_child == ["child"]
    assert dispatcher.close(30)
    assert [a.client for a in channel.sent] == ["parent", "parent-later"]


def test_a_retry_is_not_held_back_by_a_clock_that_went_back(tmp_path, clock):
    failing = ListChannel(failures=1)
    dispatcher = Dispatcher(None, Grouper(NOW_POLICY, clock=clock), [failing], clock=clock,
                            backoff=Backoff(base_s=1, attempts=3), start=False)
    dispatcher.submit(occ(clock, "a"))
    dispatcher.pump()
    assert dispatcher.retries == 1 and failing.sent == []
    clock.advance(-3600)  # the retry was due in 1 s; now the clock says an hour earlier
    dispatcher.pump()
    assert dispatcher.retries == 0 and [a.client for a in failing.sent] == ["a"]


def test_an_occurrence_after_close_starts_the_worker_again(tmp_path):
    """close() left its finished thread in place, and submit() only started a worker when
    there was none: every later occurrence (a shared dispatcher keeps serving other guards)
    stayed queued for good, neither stored nor alerted."""
    arrived = threading.Event()

    class Signalling(ListChannel):
        def send(self, alert):
            super().send(alert)
            if len(self.sent) == 2:
                arrived.set()

    channel = Signalling()
    store = IncidentStore(tmp_path / "db.sqlite3")
    dispatcher = Dispatcher(store, Grouper(NOW_POLICY), [channel], tick_s=0.01)
    dispatcher.submit(occ(time.time, "a"))
    assert dispatcher.close(timeout=30)
    dispatcher.submit(occ(time.time, "b"))
    assert arrived.wait(60), f"still queued: {dispatcher.depth}"
    assert [a.client for a in channel.sent] == ["a", "b"]
    assert {i.client for i in store.incidents()} == {"a", "b"}
    assert dispatcher.close(timeout=30)


def test_occurrences_kept_after_a_failed_write_are_written_without_new_ones(tmp_path, clock,
                                                                             channel):
    """A round whose write failed (the database locked by another process) kept its
    occurrences for the next round, but only a round with new occurrences wrote them: with
    none coming, they waited for good and were lost at exit."""
    import sqlite3

    store = IncidentStore(tmp_path / "db.sqlite3", timeout_s=0.2)
    store.record([occ(clock, "earlier")])
    locker = sqlite3.connect(store.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    dispatcher = Dispatcher(store, Grouper(NOW_POLICY, clock=clock), [channel],
                            clock=clock, start=False, store_retry_s=0)
    dispatcher.submit(occ(clock, "x"))
    dispatcher.pump()
    assert len(dispatcher._unstored) == 1 and len(channel.sent) == 1
    locker.execute("ROLLBACK")
    locker.close()
    dispatcher.pump()
    assert not dispatcher._unstored
    assert {i.client for i in store.incidents()} == {"earlier", "x"}


class CountingStore(IncidentStore):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = {"record": 0, "record_delivery": 0, "get": 0}

    def record(self, occurrences, **journaled):
        self.calls["record"] += 1
        return super().record(occurrences, **journaled)

    def record_delivery(self, **kwargs):
        self.calls["record_delivery"] += 1
        return super().record_delivery(**kwargs)

    def get(self, incident_id):
        self.calls["get"] += 1
        return super().get(incident_id)


def test_a_locked_database_costs_one_wait_not_one_per_delivery_and_loses_no_record(
        tmp_path, clock, channel, caplog):
    """With the incident database locked by another process, each delivery record of a
    round waited the store's whole timeout (30 s by default), one after the other, before
    the next alert went out; and every round logged a traceback."""
    import logging
    import sqlite3

    store = CountingStore(tmp_path / "db.sqlite3", timeout_s=0.2, clock=clock)
    store.record([occ(clock, "earlier")])
    store.calls["record"] = 0
    locker = sqlite3.connect(store.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    dispatcher = Dispatcher(store, Grouper(NOW_POLICY, clock=clock), [channel],
                            clock=clock, start=False, store_retry_s=3600)
    for client in "abc":
        dispatcher.submit(occ(clock, client))
    with caplog.at_level(logging.ERROR, logger="aimsec.alerts"):
        for _ in range(5):
            dispatcher.pump()
    assert len(channel.sent) == 3
    assert store.calls == {"record": 1, "record_delivery": 0, "get": 0}
    assert sum(1 for r in caplog.records if r.exc_info) == 1
    locker.execute("ROLLBACK")
    locker.close()
    dispatcher.flush()  # a flush tries the store again at once
    assert {i.client for i in store.incidents()} == {"earlier", "a", "b", "c"}
    assert sorted(d["group_key"] for d in store.deliveries() if d["status"] == "sent") == \
        sorted(a.group_key for a in channel.sent)


def test_a_channel_hanging_at_close_leaves_every_alert_of_the_last_round_in_the_outbox(
        tmp_path):
    """Exit gives close() a few seconds, a channel exchange may take its whole timeout:
    alerts of the final round behind a hanging channel were lost when the process ended.
    They are now written to the outbox before the round sends them; each copy goes once
    its alert went out."""
    entered, release = threading.Event(), threading.Event()

    class Hanging:
        name = "hanging"

        def __init__(self):
            self.sent = []

        def send(self, alert):
            entered.set()
            release.wait(30)
            self.sent.append(alert)

    channel, outbox = Hanging(), OutboxChannel(tmp_path / "outbox")
    dispatcher = Dispatcher(None, Grouper(GroupingPolicy(group_wait=3600, floor="medium")),
                            [channel], fallback=outbox)
    for client in ("a", "b", "c"):
        dispatcher.submit(Occurrence("m", "range", client, "high", time.time(),
                                     time.time()))
    assert not dispatcher.close(0.2)  # the hanging channel holds the final round
    assert entered.wait(30)  # the final round is inside its first send, and stays there
    copies = sorted((tmp_path / "outbox").glob("*.eml"))
    subjects = sorted(email.message_from_bytes(p.read_bytes())["Subject"] for p in copies)
    assert len(copies) == 3 and all("range on model m" in s for s in subjects), subjects
    release.set()  # the channel answers after all: the copies of what it sent go
    thread = dispatcher._thread
    if thread is not None:
        thread.join(30)
    assert sorted(a.client for a in channel.sent) == ["a", "b", "c"]
    assert not list((tmp_path / "outbox").glob("*.eml"))


def test_a_close_that_times_out_is_closed_again_at_exit(tmp_path, clock):
    """close(timeout) returning False (the worker still in a slow send) dropped the
    dispatcher from those closed at exit: the exit then waited for nothing, and the daemon
    worker died with the interpreter mid-send, its pending groups neither sent nor in the
    outbox, where a process that never called close() had them all sent. It now stays
    among those closed at exit until a close finds the worker done."""
    from aimsec_core.alerts import dispatcher as dispatching

    dispatcher = Dispatcher(IncidentStore(tmp_path / "db.sqlite3"), None, clock=clock,
                            start=False)

    class Busy:  # a worker still in a send when close's wait ends
        def is_alive(self):
            return True

        def join(self, timeout=None):
            pass

    dispatcher._thread = Busy()  # type: ignore[assignment]
    try:
        assert not dispatcher.close(0.1)
        assert dispatcher in dispatching._live
    finally:
        dispatcher._thread = None
    assert dispatcher.close()
    assert dispatcher not in dispatching._live


def test_copies_of_alerts_a_channel_refuses_at_close_stay_as_their_outbox_delivery(
        tmp_path, clock):
    store = IncidentStore(tmp_path / "db.sqlite3", clock=clock)
    refusing = ListChannel(failures=5, retryable=False)
    dispatcher = Dispatcher(store, Grouper(GroupingPolicy(group_wait=3600, floor="medium"),
                                           clock=clock), [refusing],
                            fallback=OutboxChannel(tmp_path / "outbox"), clock=clock,
                            start=False)
    dispatcher.submit(occ(clock, "x"))
    assert dispatcher.close(30)
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1  # one copy, not two
    statuses = [(d["channel"], d["status"]) for d in store.deliveries()]
    assert statuses == [("list", "failed"), ("outbox", "outbox")]


@pytest.mark.parametrize("second_failures, copies", [(99, 1), (0, 1)])
def test_an_alert_retried_on_two_channels_at_close_has_one_outbox_copy(
        tmp_path, clock, second_failures, copies):
    """An alert both channels failed has a retry on each; the final round wrote a copy per
    retry (the same alert twice in the outbox when both failed again), and the first
    channel to take it removed only its own copy. One copy per alert now, removed only
    once every channel took it."""

    class Named(ListChannel):
        def __init__(self, name, failures):
            super().__init__(failures=failures)
            self.name = name

    first, second = Named("first", 99), Named("second", 1 + second_failures)
    dispatcher = Dispatcher(None, Grouper(NOW_POLICY, clock=clock), [first, second],
                            fallback=OutboxChannel(tmp_path / "outbox"), clock=clock,
                            start=False)
    dispatcher.submit(occ(clock, "x"))
    dispatcher.pump()  # both fail: one retry each, same alert
    assert dispatcher.retries == 2
    dispatcher.close(30)
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == copies


def test_a_store_stuck_at_close_leaves_every_alert_of_the_last_round_in_the_outbox(
        tmp_path):
    """The final round wrote the round's occurrences to the store before it wrote a single
    outbox copy: a database another process holds locked makes that write wait up to
    the store's timeout_s (30 s), far past exit's 5 s, and the process ended with the
    pending alerts neither sent nor in the outbox. The copies are now written first."""
    entered, release = threading.Event(), threading.Event()

    class StuckStore:
        path = tmp_path / "db.sqlite3"
        def record(self, occurrences, **journaled):
            entered.set()
            release.wait(30)
            return []

        def record_delivery(self, **record):
            pass

        def release(self):
            pass

    store, outbox = StuckStore(), OutboxChannel(tmp_path / "outbox")
    channel = ListChannel()
    dispatcher = Dispatcher(store, Grouper(GroupingPolicy(group_wait=3600, floor="medium")),
                            [channel], fallback=outbox, tick_s=3600)  # no round but the last
    for client in ("a", "b"):
        dispatcher.submit(Occurrence("m", "range", client, "high", time.time(), time.time()))
    try:
        assert not dispatcher.close(0.2)  # the store holds the final round
        assert entered.wait(30)
        copies = sorted((tmp_path / "outbox").glob("*.eml"))
        subjects = sorted(email.message_from_bytes(p.read_bytes())["Subject"]
                          for p in copies)
        assert len(copies) == 2 and all("range on model m" in s for s in subjects), subjects
    finally:
        release.set()
        thread = dispatcher._thread
        if thread is not None:
            thread.join(30)
    assert sorted(a.client for a in channel.sent) == ["a", "b"]
    assert not list((tmp_path / "outbox").glob("*.eml"))


@pytest.mark.parametrize("capacity", ["5", 2.5, None, True])
def test_a_capacity_that_is_not_a_whole_number_is_a_configuration_error(capacity):
    from aimsec_core import ConfigurationError

    with pytest.raises(ConfigurationError, match="capacity"):
        Dispatcher(None, None, capacity=capacity, start=False)


def test_an_outbox_that_raises_at_close_costs_its_copies_not_the_alerts(tmp_path, clock):
    """The final round's copies are a safety net: an outbox raising something other than
    a DeliveryError (here an address the email library refuses) ended the round before a
    single alert was sent."""
    channel = ListChannel()
    dispatcher = Dispatcher(None, Grouper(GroupingPolicy(group_wait=3600, floor="medium"),
                                          clock=clock), [channel],
                            fallback=OutboxChannel(tmp_path / "outbox", sender="a@b\u2028c"),
                            clock=clock, start=False)
    for client in ("a", "b"):
        dispatcher.submit(occ(clock, client))
    assert dispatcher.close(30)
    assert sorted(a.client for a in channel.sent) == ["a", "b"]


def test_a_channel_error_that_is_not_a_delivery_error_is_logged_as_one_printable_line(
        clock, caplog):
    # a third-party channel raising with a server's answer in its message: the warning
    # carried its line breaks and escape sequences raw (forged log lines, a driven terminal)
    class Raising(ListChannel):
        def send(self, alert):
            raise RuntimeError("refused\nFAKE LOG LINE \x1b[2J")

    dispatcher = Dispatcher(None, Grouper(NOW_POLICY, clock=clock), [Raising()],
                            clock=clock, start=False)
    dispatcher.submit(occ(clock, "x"))
    dispatcher.pump()
    warnings = [r.getMessage() for r in caplog.records if "alert via" in r.getMessage()]
    assert warnings and all("\n" not in w and "\x1b" not in w for w in warnings)
    assert "FAKE LOG LINE" in warnings[0]  # the text is kept, made visible


def test_a_numpy_capacity_is_a_whole_number():
    # since the capacity was checked, np.int64(8) was refused as 'expected a whole number'
    dispatcher = Dispatcher(None, None, capacity=np.int64(8), start=False)
    assert dispatcher.capacity == 8 and type(dispatcher.capacity) is int


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs setrlimit")
def test_an_outbox_on_a_full_disk_fails_the_copy_and_leaves_no_partial_file(tmp_path):
    """A disk that fills up while an alert is written (here: a file size limit, so the
    write fails with EFBIG as it would with ENOSPC) fails that outbox write with
    DeliveryError and leaves nothing behind: each failed try left a .tmp file."""
    import subprocess
    import sys

    script = f"""
import resource, signal
from aimsec_core.alerts import DeliveryError, OutboxChannel
from tests.alerts.test_smtp import alert
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
outbox = OutboxChannel({str(tmp_path / "outbox")!r})
for _ in range(3):
    try:
        outbox.write(alert())
    except DeliveryError as exc:
        print("refused", "File too large" in str(exc))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              sys.path)})
    assert done.stdout.split() == ["refused", "True"] * 3, done.stderr
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == []


def test_a_reader_sees_its_incidents_without_waiting_for_a_stuck_channel(tmp_path, clock):
    """A reader's ingest (the original API's get_incident_summary) stores what is queued
    while the worker's round is stuck in a send: it waited for the whole round, a hung
    mail server's timeout for every alert of it (30 s for three at the default 10 s).
    What it stored is grouped and sent by the worker all the same."""
    entered, release = threading.Event(), threading.Event()

    class Stuck:
        name = "stuck"

        def __init__(self):
            self.sent = []

        def send(self, alert):
            entered.set()
            release.wait(60)
            self.sent.append(alert.client)

    store, channel = IncidentStore(tmp_path / "db.sqlite3"), Stuck()
    dispatcher = Dispatcher(store, Grouper(NOW_POLICY, clock=clock), [channel], clock=clock,
                            tick_s=0.01)
    dispatcher.submit(occ(clock, "first"))
    assert entered.wait(30)  # the worker is inside send() and stays there
    dispatcher.submit(occ(clock, "second"))
    read = threading.Event()
    reader = threading.Thread(target=lambda: (dispatcher.ingest(), read.set()), daemon=True)
    reader.start()
    try:
        assert read.wait(30)  # the old code waited here until the channel was released
        assert sorted(i.client for i in store.incidents()) == ["first", "second"]
    finally:
        release.set()
    assert dispatcher.close(30)
    assert sorted(channel.sent) == ["first", "second"]
