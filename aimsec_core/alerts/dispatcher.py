"""The background worker behind incidents and alerts: a bounded queue and one thread.

The predict path only calls :meth:`Dispatcher.submit`, which folds the occurrence into the
queue under a lock and returns: identical occurrences (same model, threat and client)
share one slot and add to its count, so a flood costs one slot, not one per finding. When
the queue holds ``capacity`` groups, the oldest pending group of the lowest severity goes
first (counted in ``dropped`` and the metrics); a newcomer less severe than everything
queued is the one dropped. Nothing on the predict path waits for SQLite, SMTP or HTTP.

The worker thread runs :meth:`pump` every ``tick_s`` while there is work (and at once
when work arrives after a rest), so occurrences are written in batches: one transaction
writes a round's batch to the incident store, the grouper decides which groups send
now, channels deliver, failed deliveries wait their backoff (driven by ``clock``), and
after the last attempt go to the fallback channel (the outbox). ``flush`` and ``close``
(called by ``guarded.close()`` and at interpreter exit) deliver what is queued within a
timeout. Tests drive ``pump`` by hand with ``start=False`` and a fake clock.
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import logging
import math
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from numbers import Integral
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..incidents.journal import Journal, Replayed, journal_folder, pending, replay
from ..incidents.model import Incident, Occurrence
from ..incidents.store import IncidentStore
from ..metrics import Metrics, NullMetrics
from ..severity import SEVERITIES, rank
from ..visible import visible
from .channel import Backoff, Channel, DeliveryError
from .grouping import Grouper
from .message import Alert
from .outbox import OutboxChannel

log = logging.getLogger("aimsec.alerts")

Group = tuple[str, str, str]
_MAX_IDS = 10_000  #: group -> latest incident id, remembered for messages
#: Seconds between two looks for journals of ended processes while the worker runs.
REPLAY_EVERY_S = 60.0


@dataclass(order=True)
class _Retry:
    due: float
    seq: int
    alert: Alert = field(compare=False)
    channel: Any = field(compare=False)
    attempt: int = field(compare=False)


class Dispatcher:
    """Writes occurrences to ``store`` and sends ``grouper``'s alerts through ``channels``,
    in a background thread. Either part may be ``None`` (incidents only, alerts only).

    A store that fails (locked by another process, read-only, damaged) is left alone for
    ``store_retry_s`` seconds: alerts still go out, and the occurrences and delivery
    records wait in memory (at most ``capacity`` of each) for a later round, a flush or
    ``close``.

    With a store, every occurrence queued is first appended to this process's journal
    (``journal``: default a :class:`~aimsec_core.incidents.journal.Journal` in the
    store's ``<database>.journal`` folder; ``False``: none), so that a process killed
    before its worker wrote it loses nothing: the dispatchers of later processes (at
    their start, then every :data:`REPLAY_EVERY_S`) replay the journals of ended
    processes. Each batch is written once, by its journal's sequence numbers, however
    often it is retried."""

    def __init__(self, store: IncidentStore | None = None, grouper: Grouper | None = None,
                 channels: Sequence[Channel] = (), *, fallback: Channel | None = None,
                 capacity: int = 1024, backoff: Backoff | None = None,
                 clock: Callable[[], float] = time.time,
                 metrics: Metrics | NullMetrics | None = None, start: bool = True,
                 tick_s: float = 1.0, idle_exit_s: float = 30.0,
                 store_retry_s: float = 5.0, journal: Journal | bool = True) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, Integral) or capacity < 1:
            raise ConfigurationError("the dispatcher's capacity: expected a whole number >= 1; "
                                     f"received {capacity!r:.40}")
        self.store, self.grouper = store, grouper
        self.channels = list(channels)
        self.fallback = fallback
        self.capacity = int(capacity)  # np.int64 too
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.metrics = metrics or NullMetrics()
        self.tick_s = tick_s
        self.idle_exit_s = idle_exit_s
        self.store_retry_s = store_retry_s
        self.dropped: dict[str, int] = {s: 0 for s in SEVERITIES}
        self._pending: list[OrderedDict[Group, Occurrence]] = [OrderedDict() for _ in SEVERITIES]
        self._where: dict[Group, int] = {}
        self._cond = threading.Condition(_OwnedLock())
        self._pump_lock = threading.RLock()
        #: held while occurrences are stored (not while alerts are sent): a reader's
        #: ingest waits for the store, never for a channel
        self._ingest_lock = threading.RLock()
        #: stored by a reader's ingest, not yet counted into their groups (the worker does)
        self._unobserved: list[Occurrence] = []
        self._retries: list[_Retry] = []
        self._seq = itertools.count()
        self._incident_ids: OrderedDict[Group, int] = OrderedDict()
        self._flush_requested = False
        self._resting = False  #: the worker waits for work with nothing else to do
        self._flushed = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._unstored: list[Occurrence] = []
        #: delivery records waiting for the store (it failed): keyword arguments
        self._unnoted: list[dict[str, Any]] = []
        #: time.monotonic() before which a failed store is left alone
        self._store_retry_at = 0.0
        self._store_failure_logged = -math.inf
        self._autostart = start
        #: the journal of queued occurrences, its last sequence number handed out, and
        #: the number of the drain that took each of ``_unstored``
        self.journal: Journal | None = None
        if store is not None:
            self.journal = journal if isinstance(journal, Journal) else Journal(
                journal_folder(store.path), enabled=journal is not False)
        self._submitted = 0
        self._unstored_seqs: list[int] = []
        #: time.monotonic() of the next look for journals of ended processes
        self._replay_at = 0.0
        self._replay_pending = self.journal is not None and self.journal.enabled \
            and pending(self.journal.folder)
        self.metrics.watch_queue(self)
        if self._replay_pending and start:  # a process killed before: replayed at once
            self.start()

    # -- the predict path ----------------------------------------------------------------

    def submit(self, occurrence: Occurrence) -> None:
        """Queue ``occurrence``; never blocks on I/O, never raises for a full queue."""
        key, level = occurrence.key, rank(occurrence.severity)
        with self._cond:
            if self.journal is not None:  # on disk (the page cache) before the call returns
                self._submitted += 1
                self.journal.append(occurrence, self._submitted)
            where = self._where.get(key)
            if where is not None:
                queued = self._pending[where][key]
                queued.merge(occurrence)
                if level > where:  # escalated: it now queues among the more severe
                    del self._pending[where][key]
                    self._pending[level][key] = queued
                    self._where[key] = level
                return
            if len(self._where) >= self.capacity and not self._make_room(level):
                self._count_drop(occurrence.severity)
                return
            self._pending[level][key] = occurrence
            self._where[key] = level
            if len(self._where) == 1:
                if self._thread is None and self._autostart:
                    self._start_locked()
                elif self._resting:  # otherwise the next round (tick_s) takes it, batched
                    self._cond.notify()

    def _make_room(self, level: int) -> bool:
        for lower in range(level + 1):
            if self._pending[lower]:
                victim, dropped = self._pending[lower].popitem(last=False)
                del self._where[victim]
                self._count_drop(dropped.severity)
                return True
        return False

    def _count_drop(self, severity: str) -> None:
        self.dropped[severity] += 1
        self.metrics.drop(severity)

    @property
    def depth(self) -> int:
        """Groups of occurrences waiting for the worker."""
        return len(self._where)

    # -- the worker ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread now (``start=True`` starts it at the first occurrence;
        it stops again after ``idle_exit_s`` seconds with nothing to do)."""
        with self._cond:
            self._start_locked()

    def _start_locked(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="aimsec-alerts",
                                            daemon=True)
            self._thread.start()
            _live.add(self)
            _close_at_exit()

    def _idle(self) -> bool:
        return (not self._where and not self._retries and not self._unstored
                and not self._unnoted and not self._unobserved and not self._replay_pending
                and (self.grouper is None or self.grouper.idle))

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._flush_requested and not self._stopping:
                    idle = self._idle()
                    self._resting = idle
                    self._cond.wait(self.idle_exit_s if idle else self.tick_s)
                    self._resting = False
                    if idle and self._idle() and not self._flush_requested \
                            and not self._stopping:
                        self._thread = None  # nothing to do: the next occurrence restarts it
                        if self.store is not None:
                            self.store.release()
                        return
                flush, stopping = self._flush_requested, self._stopping
            try:
                self.pump(force=flush or stopping, final=stopping)
            except Exception:  # the worker must survive anything a backend throws
                log.exception("aimsec alert worker failed a round")
            if flush or stopping:
                with self._cond:
                    self._flush_requested = False
                self._flushed.set()
            if stopping:
                if self.store is not None:
                    self.store.release()
                with self._cond:  # a later occurrence starts a new worker, as after a rest
                    self._thread = None
                    if self._where and self._autostart:  # arrived during the final round
                        self._start_locked()
                return

    def pump(self, *, force: bool = False, final: bool = False) -> int:
        """One round: store what is queued, send what is due, retry what failed. ``force``
        sends every pending group now; ``final`` also hands undeliverable alerts to the
        fallback instead of waiting. Returns the number of occurrences processed."""
        with self._pump_lock:
            if force:  # a flush or close tries a store that failed a moment ago again
                self._store_retry_at = 0.0
            if final:
                return self._final_round(self.clock())
            processed = self._ingest()
            self._observe()
            now = self.clock()
            self._retry_due(now, force)
            if self.grouper is not None:
                for alert in self.grouper.due(now, force=force):
                    self._deliver(self._with_incident(alert), now)
            return processed

    def ingest(self) -> int:
        """Store what is queued, sending nothing (readers call it to see their latest
        incidents). It waits for a store under way, not for a round's deliveries (a
        channel that hangs held a reader for every alert of the round); the worker counts
        what it stored into its groups. Returns the number of occurrences."""
        processed = self._ingest()
        if processed and self.grouper is not None:
            with self._cond:  # the worker groups what was stored: wake or start one
                if self._thread is None and self._autostart:
                    self._start_locked()
                elif self._resting:
                    self._cond.notify()
        return processed

    def _ingest(self) -> int:
        with self._ingest_lock:
            self._replay_due()
            batch = self._drain()
            try:
                if self._unstored or self._unnoted:  # the batch, what a failed write kept
                    self._store()
            finally:  # interrupted too: the batch stays queued for the store, and its
                if self.grouper is not None and batch:  # groups count it (their alerts)
                    self._unobserved += batch
        return sum(o.count for o in batch)

    def _observe(self, batch: Sequence[Occurrence] = ()) -> None:
        """Count into their groups the occurrences stored since (the round's, a reader's
        ingest's) and ``batch``; under the pump lock, as the grouper is the worker's."""
        with self._ingest_lock:
            stored, self._unobserved = self._unobserved, []
        if self.grouper is None:
            return
        todo = [*stored, *batch]
        for index, occurrence in enumerate(todo):
            try:
                self.grouper.observe(occurrence)
            except Exception:
                raise
            except BaseException:  # interrupted: the rest (this one too: counted twice
                with self._ingest_lock:  # rather than lost) is counted by the next round
                    self._unobserved[:0] = todo[index:]
                raise

    def _drain(self) -> list[Occurrence]:
        """Take the queued occurrences, oldest first; with a store they join
        ``_unstored`` before they leave the queue, and leave it only once written (see
        :meth:`_store`): an interrupt (``KeyboardInterrupt`` in ``close``) anywhere
        between leaves them for the next round, ``close`` or exit, never lost."""
        with self._cond:
            batch = [o for level in self._pending for o in level.values()]
            batch.sort(key=lambda o: o.first_seen)
            if self.store is not None:
                self._unstored += batch
                self._unstored_seqs += [self._submitted] * len(batch)
                if self.journal is not None:
                    self.journal.seal(self._submitted)
            for level in self._pending:
                level.clear()
            self._where.clear()
        return batch

    def _store(self) -> None:
        """Write ``_unstored`` (the drained batch, what earlier writes kept) in one
        transaction; it stays there until the write returned, so an interrupt during
        the write leaves it rolled back and still queued (written twice, never lost,
        where the interrupt comes between the commit and its return)."""
        if self.store is None:
            return
        todo, seqs = self._unstored, self._unstored_seqs
        results = None
        if not self._store_resting():
            try:
                results = self.store.record(
                    todo, journal=None if self.journal is None else self.journal.name,
                    seqs=seqs)
            except Exception:
                self._store_failed(f"could not write {len(todo)} incident occurrence(s)")
        if results is None:  # kept for a later round
            for lost in todo[:-self.capacity]:
                self._count_drop(lost.severity)
            self._unstored = todo[-self.capacity:]
            self._unstored_seqs = seqs[-self.capacity:]
            return
        self._unstored, self._unstored_seqs = [], []
        if self.journal is not None and seqs:
            with self._cond:
                self.journal.committed(max(seqs))
        self._record_unnoted()
        self._remember(todo, results)

    def _remember(self, todo: Sequence[Occurrence],
                  results: Sequence[tuple[Incident, bool] | None]) -> None:
        """Count the incidents ``todo`` opened and remember their ids for the alerts;
        ``None`` in ``results``: written before (a retried or replayed batch)."""
        for occurrence, result in zip(todo, results):
            if result is None:
                continue
            incident, opened = result
            if opened:
                self.metrics.incident_opened(incident.severity)
            # by the occurrence's group: one the store rolled up (its incident cap) names
            # the rolled-up incident in its alerts
            for key in {occurrence.key, (incident.model, incident.threat, incident.client)}:
                self._incident_ids[key] = incident.id
                self._incident_ids.move_to_end(key)
        while len(self._incident_ids) > _MAX_IDS:
            self._incident_ids.popitem(last=False)

    def _close_journal(self) -> None:
        """Delete this process's journal when everything it held was written (a store
        that failed leaves it, for a later process to replay)."""
        if self.journal is None or self.store is None:
            return
        with self._cond:
            if self._where or self._unstored:
                return
            name = self.journal.close()
        if name is not None:
            try:
                self.store.forget_journal(name)
            except Exception:  # a stale number is harmless: the name is never used again
                pass

    def _replay_due(self) -> None:
        """Replay the journals of ended processes when it is time (see
        :func:`~aimsec_core.incidents.journal.replay`): written to the store, said in the
        log, and counted into the alert groups like this process's own occurrences."""
        if self.journal is None or not self.journal.enabled or self.store is None \
                or time.monotonic() < self._replay_at or self._store_resting():
            return
        self._replay_at = time.monotonic() + REPLAY_EVERY_S
        self._replay_pending = False
        done = Replayed()
        try:
            replay(self.store, self.journal.folder, own=self.journal.name, into=done)
        except Exception:
            self._store_failed("could not replay the incident journals of ended processes")
            self._replay_at = 0.0
        if not done:  # (the journals written before a failure are alerted all the same)
            return
        (log.warning if done.noteworthy else log.debug)(  # no warning about nothing
            "aimsec replayed %s into %s", done.summary(), self.store.path)
        self._remember(done.written, done.results)
        if self.grouper is not None:
            self._unobserved += done.written

    def _store_resting(self) -> bool:
        return time.monotonic() < self._store_retry_at

    def _store_failed(self, what: str) -> None:
        """After a store failure (a locked, read-only or damaged database) the store is
        left alone for ``store_retry_s``: a database locked by another process cost
        ``timeout_s`` for each write of a round (each delivery record), holding every
        alert behind it. The traceback is logged at most once a minute."""
        now = time.monotonic()
        self._store_retry_at = now + self.store_retry_s
        detailed = now - self._store_failure_logged >= 60.0
        if detailed:
            self._store_failure_logged = now
        log.error("aimsec %s in %r; kept, retried in %g s", what, self.store,
                  self.store_retry_s, exc_info=detailed)

    def _record_unnoted(self) -> None:
        while self._unnoted and self.store is not None:
            try:
                self.store.record_delivery(**self._unnoted[0])
            except Exception:
                self._store_failed("could not record an alert delivery")
                return
            self._unnoted.pop(0)

    def _with_incident(self, alert: Alert) -> Alert:
        incident_id = self._incident_ids.get((alert.model, alert.threat, alert.client))
        if incident_id is None or self.store is None or self._store_resting():
            return alert
        try:
            incident = self.store.get(incident_id)
        except Exception:
            return replace(alert, incident_id=incident_id)
        return replace(alert, incident_id=incident_id,
                       reasons=tuple(incident.evidence.reasons) or alert.reasons)

    # -- delivery ------------------------------------------------------------------------

    def _channels(self) -> list[Channel]:
        return self.channels or ([self.fallback] if self.fallback is not None else [])

    def _deliver(self, alert: Alert, now: float) -> None:
        channels = self._channels()
        if not channels:
            log.warning("aimsec alert with no channel: %s", alert.summary())
        for channel in channels:
            self._attempt(alert, channel, 1, now, False)

    def _attempt(self, alert: Alert, channel: Channel, attempt: int, now: float,
                 final: bool, *, fallback: bool = True) -> bool:
        """One try of ``alert`` on ``channel``; True when it went. A failure is retried
        later, or (last attempt, or ``final``) handed to the fallback unless
        ``fallback`` is false (the alert already has its outbox copy)."""
        try:
            channel.send(alert)
        except Exception as exc:
            retryable = isinstance(exc, DeliveryError) and exc.retryable
            if not isinstance(exc, DeliveryError):
                log.exception("aimsec alert channel %r raised", channel)
            if retryable and attempt < self.backoff.attempts and not final:
                heapq.heappush(self._retries, _Retry(now + self.backoff.delay(attempt),
                                                     next(self._seq), alert, channel,
                                                     attempt + 1))
                self._note(alert, channel, "retrying", attempt, str(exc))
                return False
            self._note(alert, channel, "failed", attempt, str(exc))
            if fallback:
                self._to_fallback(alert, channel)
            return False
        self._note(alert, channel, "sent", attempt)
        return True

    def _final_round(self, now: float) -> int:
        """The last round (``close``, interpreter exit): every alert still to go, new
        groups and waiting retries alike, is first written to the outbox, then the
        round's occurrences to the store, then each alert is tried once on its channels;
        the outbox copy is removed once every channel took the alert. Exit allows
        ``close`` a few seconds while one channel exchange may take its whole timeout and
        a write to a database another process holds locked the store's ``timeout_s``: a
        channel or store that hangs then leaves the copies of what was not sent in the
        outbox, where they were lost before. An alert sent just before the process ended
        may keep its copy too (sent twice, never lost). An alert waiting for retries on
        several channels has one copy, removed once all of them took it. Returns the
        number of occurrences processed."""
        with self._ingest_lock:
            batch = self._drain()
        self._observe(batch)
        jobs: list[tuple[Alert, list[Channel], int]] = []
        try:
            return self._final_jobs(now, batch, jobs)
        except BaseException:  # interrupted (Ctrl-C): the alerts not tried yet wait as due
            for alert, channels, attempt in jobs:  # retries for the next close or exit
                for channel in channels:
                    heapq.heappush(self._retries,
                                   _Retry(now, next(self._seq), alert, channel, attempt))
            raise

    def _final_jobs(self, now: float, batch: list[Occurrence],
                    jobs: list[tuple[Alert, list[Channel], int]]) -> int:
        """:meth:`_final_round` after its drain: ``jobs`` holds the alerts taken to go and
        not tried yet (an interrupted round puts them back)."""
        while self._retries:
            retry = heapq.heappop(self._retries)
            jobs.append((retry.alert, [retry.channel], retry.attempt))
        fresh = len(jobs)  # the alerts after this one still lack their incident id
        if self.grouper is not None:
            jobs += [(alert, self._channels(), 1)
                     for alert in self.grouper.due(now, force=True)]
        outbox = self.fallback if isinstance(self.fallback, OutboxChannel) else None
        # per alert (its retries on several channels are one alert): its copy, its jobs left
        copies: dict[int, Path | None] = {}
        left: dict[int, int] = {}
        for alert, channels, _ in jobs:
            if id(alert) not in copies:
                copies[id(alert)] = self._copy(outbox, alert, channels)
            left[id(alert)] = left.get(id(alert), 0) + 1
        with self._ingest_lock:
            if self._unstored or self._unnoted:
                self._store()
            self._close_journal()
        missed: set[int] = set()
        for index, (alert, channels, attempt) in enumerate(list(jobs)):
            key = id(alert)
            copy = copies[key]
            if index >= fresh:  # a new group's alert: its incident id, stored meanwhile
                alert = self._with_incident(alert)
            if not channels:
                log.warning("aimsec alert with no channel: %s", alert.summary())
            sent = [self._attempt(alert, channel, attempt, now, True,
                                  fallback=copy is None) for channel in channels]
            del jobs[0]  # tried (one interrupted meanwhile is tried again: twice, not lost)
            if not all(sent):
                missed.add(key)
            left[key] -= 1
            if copy is None or left[key]:
                continue
            if key in missed:
                self._note(alert, outbox, "outbox", 1)  # type: ignore[arg-type]
            else:
                copy.unlink(missing_ok=True)
        return sum(o.count for o in batch)

    def _copy(self, outbox: OutboxChannel | None, alert: Alert,
              channels: list[Channel]) -> Path | None:
        """The outbox copy of ``alert`` written before its final try, or None (no outbox,
        the outbox is its channel, or the outbox failed: then it is tried as before)."""
        if outbox is None or not channels or any(c is outbox for c in channels):
            return None
        try:
            return outbox.write(alert)
        except DeliveryError:
            return None
        except Exception:  # a copy is a safety net: it never costs the round its alerts
            log.exception("aimsec outbox %r raised writing a copy", outbox)
            return None

    def _to_fallback(self, alert: Alert, failed: Channel) -> None:
        if self.fallback is None or self.fallback is failed:
            log.error("aimsec alert lost after channel %r failed: %s", failed, alert.summary())
            return
        try:
            self.fallback.send(alert)
        except Exception as exc:
            self._note(alert, self.fallback, "failed", 1, str(exc))
            log.error("aimsec alert lost: fallback %r failed too: %s", self.fallback,
                      alert.summary())
        else:
            self._note(alert, self.fallback, "outbox", 1)

    def _retry_due(self, now: float, force: bool) -> None:
        # a retry due further ahead than the longest backoff was scheduled before the
        # clock went back: it is due now, not after the jump
        while self._retries and (force or self._retries[0].due <= now
                                 or self._retries[0].due - now > self.backoff.cap_s):
            retry = heapq.heappop(self._retries)
            self._attempt(retry.alert, retry.channel, retry.attempt, now, False)
            if force:
                break  # one more try each on a flush; the rest keep their schedule

    def _note(self, alert: Alert, channel: Channel, status: str, attempt: int,
              error: str | None = None) -> None:
        self.metrics.alert(channel.name, status)
        if status != "sent":
            # a channel's own error text may hold anything a server answered; "outbox"
            # read "aimsec alert via outbox outbox": it says where the alert went instead
            what = ("written to the outbox instead" if status == "outbox"
                    else f"via {channel.name} {status}")
            log.warning("aimsec alert %s (attempt %d): %s", what, attempt,
                        visible(error) if error else alert.summary())
        if self.store is None:
            return
        record = dict(group_key=alert.group_key, channel=channel.name, status=status,
                      attempt=attempt, incident_id=alert.incident_id, error=error,
                      time_s=self.clock())
        with self._ingest_lock:  # a reader's ingest writes the waiting records meanwhile
            self._note_stored(record)

    def _note_stored(self, record: dict[str, Any]) -> None:
        assert self.store is not None
        if not self._unnoted and not self._store_resting():
            try:
                self.store.record_delivery(**record)
                return
            except Exception:
                self._store_failed("could not record an alert delivery")
        if len(self._unnoted) >= self.capacity:  # bounded like the queue: the oldest go
            self._unnoted.pop(0)
        self._unnoted.append(record)

    @property
    def retries(self) -> int:
        """Deliveries waiting for their next attempt."""
        return len(self._retries)

    def _after_fork(self) -> None:
        """In a forked child: the parent's worker thread did not come along, and its locks
        may have been held at the fork. Start over with fresh locks and nothing queued:
        what the parent queued or holds in its groups is the parent's to send (sending
        it here too would duplicate it); the child's own findings start the child's
        worker."""
        self._cond = threading.Condition(_OwnedLock())
        self._pump_lock = threading.RLock()
        self._ingest_lock = threading.RLock()
        self._unobserved = []
        self._flushed = threading.Event()
        self._thread, self._resting = None, False
        self._flush_requested = self._stopping = False
        self._pending = [OrderedDict() for _ in SEVERITIES]
        self._where.clear()
        self._retries.clear()
        self._unstored, self._unnoted, self._unstored_seqs = [], [], []
        self._submitted = 0
        if self.journal is not None:  # the parent's journal stays the parent's
            self.journal.after_fork()
        if self.grouper is not None:
            self.grouper.forget_local()

    # -- flushing ------------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Store and send everything queued now (pending groups included, ignoring their
        timers); True when done within ``timeout`` seconds. False at once on a thread
        inside the dispatcher already (a signal handler; see :meth:`close`)."""
        if self._entered_here():
            return False
        thread = self._thread
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            self.pump(force=True)
            return True
        with self._cond:
            self._flushed.clear()
            self._flush_requested = True
            self._cond.notify()
        return self._flushed.wait(timeout)

    def _entered_here(self) -> bool:
        """Whether the calling thread is inside the dispatcher already: queueing (it holds
        the queue's lock) or in a round (storing, sending), where a signal handler can
        run and call :meth:`close`, which would wait for the locks it holds itself (the
        queue's, the incident store's)."""
        return (self._cond._lock.owned()  # type: ignore[attr-defined]
                or self._pump_lock._is_owned()  # type: ignore[attr-defined]
                or self._ingest_lock._is_owned())  # type: ignore[attr-defined]

    def close(self, timeout: float = 5.0) -> bool:
        """Flush, then stop the worker. Alerts still undeliverable go to the fallback. A
        later occurrence starts a new worker (the dispatcher may be shared by guards).

        One that times out (the worker still in a send) leaves the dispatcher to be
        closed again at exit, which waits for the worker once more.

        Called on a thread that is inside the dispatcher already (a signal handler that
        interrupted it queueing or writing), it would wait for itself: it closes nothing
        then, returns False and leaves the dispatcher to the close at exit."""
        if self._entered_here():
            log.warning("aimsec dispatcher close() called inside the dispatcher (from a "
                        "signal handler?); it closes at exit instead")
            _live.add(self)
            return False
        thread = self._thread
        _live.discard(self)
        try:
            if thread is None or not thread.is_alive():
                self.pump(force=True, final=True)
                return True
            with self._cond:
                self._flushed.clear()
                self._stopping = True
                self._cond.notify()
            thread.join(timeout)
        except BaseException:  # interrupted (Ctrl-C): what it holds is written at the next
            _live.add(self)  # close or at exit, not dropped with a daemon worker
            raise
        if thread.is_alive():  # still in a send: the close at exit waits for it again,
            _live.add(self)  # rather than let the daemon worker die mid-round
            return False
        return True


class _OwnedLock:
    """A lock that knows whether the calling thread holds it (``threading.Lock`` does
    not), for :meth:`Dispatcher._entered_here`; a ``Condition`` takes it as its lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not self._lock.acquire(blocking, timeout):
            return False
        self._owner = threading.get_ident()
        return True

    def release(self) -> None:
        self._owner = None
        self._lock.release()

    def owned(self) -> bool:
        """Whether the calling thread holds the lock."""
        return self._owner == threading.get_ident()

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()


_live: weakref.WeakSet[Dispatcher] = weakref.WeakSet()


def _forget_after_fork() -> None:
    """In a forked child, every dispatcher inherited running starts over, and none stays
    live: the child closes at exit only those whose worker it started itself (one used
    here starts it with its first finding). Closing the others would run a final pass on
    state the parent owns (its Redis connections, its stores), which can hang the child's
    exit."""
    for dispatcher in list(_live):
        dispatcher._after_fork()
    _live.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


@atexit.register
def _close_all(timeout: float = 5.0) -> None:
    """At interpreter exit, every running dispatcher delivers what it holds (bounded)."""
    deadline = time.monotonic() + timeout
    for dispatcher in list(_live):
        dispatcher.close(max(0.1, deadline - time.monotonic()))


_exit_hooked_pid = -1


def _close_at_exit() -> None:
    """Also run :func:`_close_all` on multiprocessing's exit path, once per process: its
    forked children (``multiprocessing``, ``Pool``, joblib with ``fork``) leave through
    ``os._exit``, which skips ``atexit``, so what such a child queued would be lost. A
    process that runs both paths closes once: a closed dispatcher leaves ``_live``."""
    global _exit_hooked_pid
    if _exit_hooked_pid == os.getpid():
        return
    _exit_hooked_pid = os.getpid()
    from multiprocessing import util

    util.Finalize(None, _close_all, exitpriority=10)
