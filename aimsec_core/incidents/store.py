"""The incident store: one SQLite file, safe for many threads and processes writing at once.

Each thread gets its own connection (WAL journal, ``busy_timeout``), and every write is one
``BEGIN IMMEDIATE`` transaction: the upsert of a batch of occurrences reads the group's
recent incident and updates it under SQLite's write lock, so two writers can never both
open an incident for the same (model, threat, client) or lose each other's counts. A write
that still finds the database locked after ``busy_timeout`` is retried until ``timeout_s``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from numbers import Real
from pathlib import Path
from typing import Any, TypeVar

from ..config import INCIDENTS_FILE, log_folder, parse_seconds, resolve
from ..errors import AimsecError, ConfigurationError
from ..severity import SEVERITIES, rank
from ..visible import visible
from .damaged import DamagedRows
from .model import (CLIENT_NAMED_ROLLUP, LAST_SECOND, MAX_NAME, MOST_COUNTED, ROLLUP_CLIENT,
                    STATUSES, Evidence, Incident, Occurrence, clip)
from .retention import UNRESOLVED, Pruned, RetentionPolicy, prune_step, pruned_tally
from .schema import VERSION, migrate, version_of

T = TypeVar("T")

log = logging.getLogger("aimsec.incidents")

DEFAULT_WINDOW_S = 3600.0
#: Damaged rows of one group passed over before a new incident is opened for it.
_DAMAGED_PASSED = 8
#: The longest evidence aimsec writes is about 75,000 characters: its bounded lists as JSON
#: writes them, each character beyond the BMP as a 12-character surrogate pair escape
#: (5 reasons of 300, 10 hashes of 64, a rolled-up incident's 20 clients of 200); far
#: longer text was not written by aimsec. (At 65,536, a roll-up whose sample held long
#: client ids of emoji could not be read back: each batch opened a new roll-up and the
#: listing and report failed.)
_LONGEST_EVIDENCE = 131_072
#: The columns an incident is read from; text is read cut one character past the longest
#: aimsec writes, so an edited row of megabytes is refused without being held whole.
_COLUMNS = (f"id, substr(model, 1, {MAX_NAME + 1}), substr(threat, 1, {MAX_NAME + 1}), "
            f"substr(client, 1, {MAX_NAME + 1}), substr(severity, 1, 20), "
            "substr(status, 1, 20), first_seen, last_seen, count, "
            f"substr(evidence, 1, {_LONGEST_EVIDENCE + 1})")


def database_path(explicit: str | Path | None = None) -> Path:
    """The incident database: ``explicit``, else ``AIMSEC_INCIDENT_DB``, else
    ``<SECURITY_LOG_PATH>/incidents.sqlite3`` (absolute). Raises
    :class:`ConfigurationError` for a path whose symbolic links lead back to themselves."""
    default = log_folder() / INCIDENTS_FILE
    path = Path(resolve(None if explicit is None else str(explicit), "AIMSEC_INCIDENT_DB",
                        str(default), str))
    try:
        return path.resolve()
    except RuntimeError:  # pathlib's "Symlink loop from ..." (before Python 3.13)
        raise ConfigurationError(
            f"the incident database {visible(str(path))}: the path leads to itself through "
            f"symbolic links; expected a file or a place for one") from None


#: The first bytes of every SQLite database file.
_SQLITE_HEADER = b"SQLite format 3\x00"


def check_writable_place(path: Path) -> None:
    """Raise :class:`ConfigurationError` when ``path`` can never hold the incident
    database: it is a folder, not a regular file (a FIFO, whose read waited for a writer
    for good; a device such as ``/dev/null``, which SQLite cannot use), a file that is
    not SQLite (an empty one is: SQLite starts it), or it would be made under a file. A
    guard built on such a path lost every incident, one logged error per round. Reads
    only (a stat and the first 16 bytes)."""
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    shown = visible(str(path))
    problem = None
    if existing == path and path.is_dir():
        problem = "is a folder"
    elif existing != path and not existing.is_dir():
        problem = f"would be made under {visible(str(existing))}, which is a file"
    elif existing == path and not path.is_file():
        problem = "is not a regular file (a FIFO, socket or device)"
    elif existing == path:
        try:
            with open(path, "rb") as stream:
                head = stream.read(len(_SQLITE_HEADER))
        except OSError:  # unreadable now: the store reports it when it opens the file
            return
        if head and head != _SQLITE_HEADER:
            problem = "is a file that is not an SQLite database"
    if problem is not None:
        raise ConfigurationError(f"the incident database {shown} {problem}; expected an "
                                 "SQLite file or a path where one can be made "
                                 "(AIMSEC_INCIDENT_DB, SECURITY_LOG_PATH or incidents=)")


def _seconds(value: Any, name: str, bound: str, *, most: float = math.inf) -> float:
    """``value`` as a finite number of seconds ``bound`` (``">= 0"`` or ``"> 0"``), and at
    most ``most`` when given; ConfigurationError naming ``name`` otherwise."""
    try:  # numpy numbers too
        number = float(value) if isinstance(value, Real) and not isinstance(value, bool) \
            else math.nan
    except OverflowError:  # an int beyond any float
        number = math.inf
    if not (0 <= number < math.inf) or (bound == "> 0" and number == 0) or number > most:
        limit = f" and at most {most:.0f}" if most < math.inf else ""
        raise ConfigurationError(f"the incident store's {name}: expected a finite number of "
                                 f"seconds {bound}{limit}; received {value!r:.40}")
    return float(number)


class _Connection:
    """A thread's connection, held by that thread's local storage alone: when the thread
    ends, its storage goes and the connection is closed with it (a service answering each
    request in a new thread kept an open database, two or three file descriptors, per
    request it had served, until the process ran out of them). Closed here, not left to
    the connection's own end: it holds itself through its statement cache, so only the
    garbage collector's next pass would close it."""

    __slots__ = ("conn", "__weakref__")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        try:
            self.conn.close()
        except Exception:  # a connection another thread is using: left to the collector
            pass


class IncidentStoreError(AimsecError, RuntimeError):
    """The incident database could not be opened or written."""


class DamagedIncidentError(IncidentStoreError):
    """An incident row aimsec cannot read (a disk error, a buggy writer, a hand edit):
    ``incident_id`` names it; the row is left as it was."""

    def __init__(self, message: str, incident_id: int) -> None:
        super().__init__(message)
        self.incident_id = incident_id


class IncidentStore:
    """Incidents in the SQLite file ``path``.

    ``path`` defaults to ``AIMSEC_INCIDENT_DB``, else ``<SECURITY_LOG_PATH>/incidents.sqlite3``.
    An occurrence joins the incident of its (model, threat, client) whose last finding is
    at most ``window_s`` seconds older (default ``AIMSEC_INCIDENT_WINDOW``, else 3600) and
    that is not resolved; otherwise it opens a new one. ``timeout_s`` bounds how long a
    write waits for other writers before :class:`IncidentStoreError`.

    ``retention`` (default :meth:`RetentionPolicy.resolve`, i.e. the environment) bounds
    what the file keeps: while it holds ``max_open`` unresolved incidents, a new one joins
    its (model, threat)'s rolled-up incident instead (client ``(further clients)``); and
    the writes prune, in bounded steps, resolved incidents and delivery records older
    than ``retention_days`` (see :mod:`.retention`). ``clock`` (seconds since the epoch)
    dates delivery records and decides what is old.

    ``read_only=True`` is for readers (reports, listings): the file is opened read-only,
    never created, migrated nor switched to WAL, and a file without aimsec's schema raises
    :class:`IncidentStoreError` at the first read instead of gaining aimsec's tables.
    """

    def __init__(self, path: str | Path | None = None, *, window_s: float | None = None,
                 timeout_s: float = 30.0, clock: Callable[[], float] = time.time,
                 read_only: bool = False, retention: RetentionPolicy | None = None) -> None:
        self.path = database_path(path)
        self.read_only = read_only
        # what the code passes is checked like what the environment sets: a negative or
        # NaN window opened an incident per occurrence, text failed every write
        self.window_s = _seconds(resolve(window_s, "AIMSEC_INCIDENT_WINDOW",
                                         DEFAULT_WINDOW_S, parse_seconds),
                                 "window_s (AIMSEC_INCIDENT_WINDOW)", ">= 0")
        self.timeout_s = _seconds(timeout_s, "timeout_s", "> 0", most=threading.TIMEOUT_MAX)
        if retention is not None and not isinstance(retention, RetentionPolicy):
            raise ConfigurationError("the incident store's retention: expected a "
                                     "RetentionPolicy or None; received "
                                     f"{type(retention).__name__}")
        self.retention = retention or RetentionPolicy.resolve()
        self.clock = clock
        #: the store's clock time of the next pruning step, and who is pruning now
        self._prune_at = -math.inf
        self._pruning = threading.Lock()
        self._local = threading.local()
        #: every live thread's connection, for close(): weak, so a thread's end closes it
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._pid = os.getpid()  # the file is opened (and migrated) at its first use

    def __repr__(self) -> str:
        return f"IncidentStore({str(self.path)!r})"

    # -- connections ---------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # forked: the parent's connections are not ours, and
            # its lock may have been held by a thread that did not come along
            self._local, self._pid = threading.local(), os.getpid()
            self._connections = weakref.WeakSet()
            self._lock, self._pruning = threading.Lock(), threading.Lock()
        held: _Connection | None = getattr(self._local, "conn", None)
        conn = None if held is None else held.conn
        if conn is None and self.read_only:
            conn = self._open_read_only()
        if conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=self.timeout_s,
                                       isolation_level=None, check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
                conn.text_factory = _text
                self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL"))
                conn.execute("PRAGMA synchronous = NORMAL")
                self._retry(lambda: migrate(conn))
            except (sqlite3.Error, OSError, RuntimeError) as exc:
                why = self._why_failed(exc)
                raise IncidentStoreError(
                    f"cannot open the incident database {self.path}: " + (
                        why if why != str(exc) else f"{exc}; expected a writable SQLite "
                        "file (set AIMSEC_INCIDENT_DB or SECURITY_LOG_PATH)")) from exc
            self._hold(conn)
        return conn

    def _hold(self, conn: sqlite3.Connection) -> None:
        """Keep ``conn`` as the calling thread's connection (until it ends)."""
        held = self._local.conn = _Connection(conn)
        with self._lock:
            self._connections.add(held)

    def _open_read_only(self) -> sqlite3.Connection:
        conn = None
        try:
            conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True,
                                   timeout=self.timeout_s, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
            conn.text_factory = _text
            found = version_of(conn)
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            why = self._why_failed(exc)
            raise IncidentStoreError(f"cannot read the incident database {self.path}: " + (
                why if why != str(exc) else f"{exc}; expected an SQLite file")) from exc
        if not 1 <= found <= VERSION:
            conn.close()
            raise IncidentStoreError(
                f"{self.path} is not an incident database this aimsec can read (schema "
                f"version {found}; expected 1 to {VERSION})")
        self._hold(conn)
        return conn

    def release(self) -> None:
        """Close the calling thread's connection (the next use opens a new one)."""
        held = getattr(self._local, "conn", None)
        if held is not None:
            self._local.conn = None
            with self._lock:
                self._connections.discard(held)
            held.conn.close()

    def close(self) -> None:
        """Close every connection this store opened (in any thread)."""
        with self._lock:
            connections, self._connections = list(self._connections), weakref.WeakSet()
        for held in connections:
            try:
                held.conn.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()

    def _retry(self, action: Callable[[], Any]) -> Any:
        """Run ``action``, retrying while SQLite says the database is locked or busy."""
        deadline = time.monotonic() + self.timeout_s
        delay = 0.005
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                text = str(exc).lower()
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)  # off the predict path: only the writer thread waits here
            delay = min(delay * 2, 0.2)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        self._retry(lambda: conn.execute("BEGIN IMMEDIATE"))
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite rolls back itself on some errors (disk full):
                conn.execute("ROLLBACK")  # a second ROLLBACK would replace the reason
            raise

    def _transaction(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        def attempt() -> Any:
            with self._write() as conn:
                return work(conn)
        try:
            return self._retry(attempt)
        except sqlite3.Error as exc:
            raise IncidentStoreError(f"writing to the incident database {self.path} "
                                     f"failed: {self._why_failed(exc)}") from exc

    def _why_failed(self, exc: Exception) -> str:
        """``exc`` said for an operator: a lock held beyond ``timeout_s`` is named so."""
        text = str(exc)
        if "locked" in text.lower() or "busy" in text.lower():
            return (f"{text}: other processes kept it locked for more than "
                    f"{self.timeout_s:g} s; nothing was changed: try again")
        if "readonly" in text.lower() or "read-only" in text.lower():
            return (f"{text}; expected a file (and a folder, for its journal) this user "
                    "may write")
        return text

    # -- writes --------------------------------------------------------------------------

    def record(self, occurrences: Iterable[Occurrence], *, journal: str | None = None,
               seqs: Sequence[int] | None = None) -> list[tuple[Incident, bool] | None]:
        """Add ``occurrences`` in one transaction; returns each one's incident after the
        update (for an occurrence beyond ``max_open``, the rolled-up one after the batch)
        and whether it was opened by this call (a new roll-up: for its first occurrence).
        Then prunes a step when one is due.

        ``journal`` (a journal's name, see :mod:`.journal`) with ``seqs`` (one sequence
        number per occurrence) makes the write idempotent: an occurrence whose number is
        at most the highest one this file has written for that journal was written
        before (a batch retried after an interrupt that came after its commit, a journal
        replayed twice) and is passed over (``None`` in its place); the highest number
        is stored in the same transaction. Raises ``ValueError`` for ``seqs`` not of the
        batch's length."""
        batch = list(occurrences)
        if not batch:
            return []
        numbers = None if journal is None else [int(n) for n in (seqs or ())]
        if numbers is not None and len(numbers) != len(batch):
            raise ValueError(f"record: {len(numbers)} sequence number(s) for "
                             f"{len(batch)} occurrence(s); expected one each")
        results = self._transaction(lambda conn: self._journaled(conn, batch, journal,
                                                                 numbers))
        self._maybe_prune()
        return results

    def _journaled(self, conn: sqlite3.Connection, batch: list[Occurrence],
                   journal: str | None,
                   numbers: list[int] | None) -> list[tuple[Incident, bool] | None]:
        """:meth:`_upsert_all` of what ``journal`` has not written yet."""
        if journal is None or numbers is None:
            return self._upsert_all(conn, batch)
        row = conn.execute("SELECT seq FROM journals WHERE name = ?", (journal,)).fetchone()
        mark = -1 if row is None else int(row[0])
        fresh = [n > mark for n in numbers]
        written = iter(self._upsert_all(conn, [o for o, f in zip(batch, fresh) if f]))
        conn.execute("INSERT INTO journals (name, seq) VALUES (?, ?) ON CONFLICT (name) "
                     "DO UPDATE SET seq = max(seq, excluded.seq)", (journal, max(numbers)))
        return [next(written) if f else None for f in fresh]

    def journal_mark(self, journal: str) -> int:
        """The highest sequence number of ``journal`` this file has written; 0 if none."""
        row = self._reading(lambda conn: conn.execute(
            "SELECT seq FROM journals WHERE name = ?", (journal,)).fetchone())
        return 0 if row is None else int(row[0])

    def forget_journal(self, journal: str) -> None:
        """Delete the number of ``journal`` (its files are gone: it is never used again)."""
        self._transaction(lambda conn: conn.execute(
            "DELETE FROM journals WHERE name = ?", (journal,)))

    def _upsert_all(self, conn: sqlite3.Connection,
                    batch: list[Occurrence]) -> list[tuple[Incident, bool]]:
        """The writes of :meth:`record`. An occurrence with no incident to join while the
        store holds ``max_open`` unresolved ones is folded, with the batch's others of
        its (model, threat), into one occurrence of the roll-up client: the rolled-up
        incident is read and written once per batch, not once per client. A client
        whose id is the roll-up's name is stored as :data:`~.model.CLIENT_NAMED_ROLLUP`."""
        room = self._room(conn)
        results: list[Any] = []  # the rolled-up ones' places are filled last
        overflow: dict[tuple[str, str], tuple[Occurrence, list[int]]] = {}
        for o in batch:
            if o.client == ROLLUP_CLIENT:  # a copy: a batch written again is as it was
                o = replace(o, client=CLIENT_NAMED_ROLLUP)
            found = self._recent(conn, o.model, o.threat, o.client,
                                 o.first_seen - self.window_s)
            if found is None and room[0] == 0:
                _fold(overflow, o, len(results))
                results.append(None)
            else:
                results.append(self._upsert(conn, o, found, room))
        for joined, places in overflow.values():
            # joined however long ago it was last seen: the rows beyond the cap stay one
            # per (model, threat) until an operator resolves it
            found = self._recent(conn, joined.model, joined.threat, ROLLUP_CLIENT, 0.0)
            incident, opened = self._upsert(conn, joined, found, room)
            for n, place in enumerate(places):
                results[place] = (incident, opened and n == 0)
        return results

    def _room(self, conn: sqlite3.Connection) -> list[int | None]:
        """How many more incidents may open in this transaction (``[None]``: no cap), as a
        one-item list the transaction's inserts count down. Counting stops at the cap: the
        index makes it at most ``max_open`` entries read per batch."""
        cap = self.retention.max_open
        if not cap:
            return [None]
        held = conn.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM incidents WHERE status IN (?, ?) LIMIT ?)",
            (*UNRESOLVED, cap)).fetchone()[0]
        return [max(0, cap - int(held))]

    def _upsert(self, conn: sqlite3.Connection, o: Occurrence, found: Incident | None,
                room: list[int | None]) -> tuple[Incident, bool]:
        """``o`` joins ``found``, or opens an incident of its own when ``None``."""
        if found is None:
            if room[0] is not None:
                room[0] = max(0, room[0] - 1)
            cursor = conn.execute(
                "INSERT INTO incidents (model, threat, client, severity, severity_rank, "
                "first_seen, last_seen, count, evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (o.model, o.threat, o.client, o.severity, rank(o.severity), o.first_seen,
                 o.last_seen, o.count, json.dumps(o.evidence.as_dict())))
            return Incident(int(cursor.lastrowid or 0), o.model, o.threat, o.client,
                            o.severity, "open", o.first_seen, o.last_seen, o.count,
                            o.evidence), True
        evidence = found.evidence
        evidence.merge(o.evidence)
        severity = max(found.severity, o.severity, key=rank)
        first, last = min(found.first_seen, o.first_seen), max(found.last_seen, o.last_seen)
        conn.execute(
            "UPDATE incidents SET count = count + ?, first_seen = ?, last_seen = ?, "
            "severity = ?, severity_rank = ?, evidence = ? WHERE id = ?",
            (o.count, first, last, severity, rank(severity), json.dumps(evidence.as_dict()),
             found.id))
        return Incident(found.id, found.model, found.threat, found.client, severity,
                        found.status, first, last, found.count + o.count, evidence), False

    def _recent(self, conn: sqlite3.Connection, model: str, threat: str, client: str,
                since: float) -> Incident | None:
        """The latest unresolved incident of the group last seen at ``since`` or later. A
        row aimsec cannot read (an edited file) is passed over, logged, and left as it is:
        the occurrence joins the next readable one or opens a new incident, so one damaged
        row never blocks the writes of every batch it falls in."""
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM incidents WHERE model = ? AND threat = ? AND client = ?"
            " AND last_seen >= ? AND status != 'resolved' ORDER BY last_seen DESC LIMIT ?",
            (model, threat, client, since, _DAMAGED_PASSED + 1))
        for row in rows:
            try:
                return _incident(row)
            except (ValueError, TypeError) as exc:
                log.warning("incident row %r in %s is not one aimsec wrote (%s); a new "
                            "occurrence does not join it", row[0], self.path, exc)
        return None

    def set_status(self, incident_id: int, status: str) -> Incident:
        """Mark an incident ``acknowledged`` or ``resolved`` (or ``open`` again). Raises
        ``KeyError`` for an unknown id and ``ValueError`` for an unknown status."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; expected one of {STATUSES}")
        self.get(incident_id)  # an unknown id or an unreadable row: nothing changes
        self._transaction(lambda conn: conn.execute(
            "UPDATE incidents SET status = ? WHERE id = ?", (status, int(incident_id))))
        return self.get(incident_id)

    def record_delivery(self, *, group_key: str, channel: str, status: str, attempt: int,
                        incident_id: int | None = None, error: str | None = None,
                        time_s: float | None = None) -> None:
        """Note what happened to one alert on one channel (``sent``, ``retrying``,
        ``failed``, ``outbox``)."""
        self._transaction(lambda conn: conn.execute(
            "INSERT INTO deliveries (time, incident_id, group_key, channel, status, attempt, "
            "error) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.clock() if time_s is None else time_s, incident_id, clip(group_key, 600),
             channel, status, attempt, None if error is None else clip(error, 500))))
        self._maybe_prune()

    # -- retention -----------------------------------------------------------------------

    def _maybe_prune(self) -> None:
        """One pruning step when due (see :mod:`.retention`), after a write on the
        writer's thread; a failure is logged and tried again a period later, never
        raised into the write that was already committed. A thread that finds another
        pruning goes on without waiting."""
        if not self.retention.retention_days and not self.retention.max_deliveries:
            return  # nothing is ever pruned: not even a transaction a period
        now = self.clock()
        # a clock stepped back by more than the period: due now, not after the jump
        if now < self._prune_at and self._prune_at - now <= self.retention.every_s:
            return
        if not self._pruning.acquire(blocking=False):
            return
        try:
            done = self._prune_step(now)
        except Exception as exc:
            self._prune_at = now + self.retention.every_s
            log.warning("aimsec could not prune the incident database %s (%s: %s); tried "
                        "again in %g s", self.path, type(exc).__name__, exc,
                        self.retention.every_s)
        else:
            self._prune_at = now if done.more else now + self.retention.every_s
        finally:
            self._pruning.release()

    def _prune_step(self, now: float) -> Pruned:
        done = self._transaction(lambda conn: prune_step(conn, self.retention, now))
        if done.incidents or done.deliveries:
            log.info("aimsec pruned %d resolved incident(s) and %d delivery record(s) "
                     "from %s", done.incidents, done.deliveries, self.path)
        return done

    def prune(self, *, now: float | None = None, max_steps: int | None = None) -> Pruned:
        """Delete what retention says goes, at once: steps of at most ``batch`` rows per
        table, each its own transaction (other writers wait for one step at most), until
        none is left or ``max_steps`` were taken. ``now`` defaults to the store's clock.
        Returns what was deleted. Raises IncidentStoreError for a read-only store or a
        file that cannot be written."""
        if self.read_only:
            raise IncidentStoreError(f"the incident database {self.path} was opened "
                                     "read-only; pruning needs it writable")
        moment = self.clock() if now is None else float(now)
        total, steps = Pruned(more=True), 0
        while total.more and (max_steps is None or steps < max_steps):
            total.add(self._prune_step(moment))
            steps += 1
        return total

    def vacuum(self, *, checked: bool = False) -> tuple[int, int]:
        """Give the pages that deleted rows freed back to the disk: SQLite's ``VACUUM``
        (the file rewritten into a compact copy, in one transaction), then a checkpoint
        that moves the copy from the write-ahead log into the file and empties the log.
        Returns the bytes of the file and its log before and after.

        Safe while other processes use the file: ``VACUUM`` takes SQLite's write lock,
        so their writes wait for it (up to their own ``timeout_s``) and their readers
        keep reading; it waits up to this store's ``timeout_s`` for a writer to finish.
        It needs free disk space about the file's size, twice. A file that SQLite's
        ``quick_check`` finds damaged is left as it is: ``VACUUM`` would copy only what it
        can still read and drop the rest, which a recovery could have saved. Raises
        IncidentStoreError for a read-only store, a damaged file, a database other
        processes keep locked beyond ``timeout_s`` (nothing changed), or a disk without
        room. ``checked``: :meth:`check_intact` has just passed (not run again)."""
        if self.read_only:
            raise IncidentStoreError(f"the incident database {self.path} was opened "
                                     "read-only; compacting it needs it writable")
        before = self._bytes()
        if not checked:
            self.check_intact("it was not compacted, which would keep only what can still "
                              "be read")
        conn = self._conn()
        try:
            self._retry(lambda: conn.execute("VACUUM"))
            # TRUNCATE waits (busy_timeout) for readers still on the old pages
            self._retry(lambda: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        except sqlite3.Error as exc:
            raise IncidentStoreError(f"compacting the incident database {self.path} "
                                     f"failed: {self._why_failed(exc)}") from exc
        return before, self._bytes()

    def check_intact(self, consequence: str) -> None:
        """Raise :class:`IncidentStoreError` when SQLite's ``quick_check`` finds the file
        damaged, the message saying ``consequence`` (what was not done) and how to recover
        it; also when the check itself cannot run (locked beyond ``timeout_s``)."""
        conn = self._conn()
        try:
            found = self._retry(lambda: conn.execute("PRAGMA quick_check(1)").fetchone())
        except sqlite3.Error as exc:
            raise IncidentStoreError(f"checking the incident database {self.path} failed: "
                                     f"{self._why_failed(exc)}") from exc
        if found is None or found[0] != "ok":
            problem = " ".join(str(found and found[0]).split())[:200]
            raise IncidentStoreError(
                f"the incident database {self.path} is damaged (SQLite's quick_check: "
                f"{problem}); {consequence}: copy it and recover it (sqlite3 FILE .recover)")

    def _bytes(self) -> int:
        """The size of the file and its write-ahead log, in bytes."""
        total = 0
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                total += path.stat().st_size
            except OSError:
                pass
        return total

    def pruned(self) -> dict[str, dict[str, Any]]:
        """What retention has deleted from this file so far (see
        :func:`.retention.pruned_tally`); ``{}`` when nothing."""
        return self._reading(pruned_tally)

    # -- reads ---------------------------------------------------------------------------

    def get(self, incident_id: int) -> Incident:
        """The incident ``incident_id``. Raises ``KeyError`` when there is none,
        :class:`DamagedIncidentError` when its row cannot be read (saying why), and
        :class:`IncidentStoreError` when the file is not aimsec's."""
        rows = self._reading(lambda conn: conn.execute(
            f"SELECT {_COLUMNS} FROM incidents WHERE id = ?", (int(incident_id),)).fetchall())
        if not rows:
            raise KeyError(f"no incident with id {incident_id} in {self.path}")
        try:
            return _incident(rows[0])
        except _ROW_DAMAGE as exc:
            raise DamagedIncidentError(
                f"incident {incident_id} in {self.path} is damaged ({_why(exc)}); expected "
                "a row aimsec wrote: it was left as it was (aimsec incidents lists the "
                "others)", int(incident_id)) from exc

    def _reading(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` on the connection; a file whose tables or rows are not aimsec's
        (another schema, text where times or counts belong) raises IncidentStoreError."""
        conn = self._conn()
        try:
            return work(conn)
        except _UNREADABLE as exc:
            raise self._unreadable(exc) from exc

    def _unreadable(self, exc: Exception) -> IncidentStoreError:
        hint = ""
        if isinstance(exc, sqlite3.DatabaseError) and "malformed" in str(exc):
            hint = ("; the file is damaged (a disk error or a cut copy): copy it and recover "
                    "what can be read with sqlite3 FILE .recover")
        return IncidentStoreError(f"the incident database {self.path} could not be read "
                                  f"({type(exc).__name__}: {exc}){hint}")

    def incidents(self, *, statuses: Iterable[str] = ("open",), since: float | None = None,
                  severity: str | None = None, model: str | None = None,
                  limit: int = 1000, damaged: DamagedRows | None = None) -> list[Incident]:
        """At most ``limit`` incidents with one of ``statuses`` (all of them: any status,
        so that a row of a status aimsec does not know is seen), last seen at or after
        ``since`` (seconds since the epoch), at least as severe as ``severity``; most
        severe, then latest first (then highest id).

        A row aimsec cannot read (a disk error, a buggy writer, a hand edit) raises
        :class:`IncidentStoreError`; with ``damaged`` (a :class:`DamagedRows`) it is
        passed over and counted there instead, and ``limit`` counts readable rows."""
        return list(self.each(statuses=statuses, since=since, severity=severity,
                              model=model, limit=limit, damaged=damaged))

    def each(self, *, statuses: Iterable[str] = ("open",), since: float | None = None,
             severity: str | None = None, model: str | None = None,
             limit: int = 1000, damaged: DamagedRows | None = None) -> Iterator[Incident]:
        """:meth:`incidents`, read as they are iterated: the memory of a few rows, however
        many there are (a list of 100,000 incidents with full evidence held 580 MB).
        Raises IncidentStoreError while iterating where the file is not aimsec's. The
        order is found on the ids and sort keys alone, then the rows are read 256 at a
        time by id: passing over damaged rows never sorts whole rows without a bound."""
        where, params = _selection(statuses, since, severity, model)
        conn = self._conn()
        left = int(limit)
        try:
            order = conn.execute(
                f"SELECT id FROM incidents WHERE {where} "
                "ORDER BY severity_rank DESC, last_seen DESC, id DESC", params)
            while left > 0 and (ids := [row[0] for row in order.fetchmany(256)]):
                rows = {row[0]: row for row in conn.execute(
                    f"SELECT {_COLUMNS} FROM incidents WHERE id IN "
                    f"({','.join('?' * len(ids))})", ids)}
                for row_id in ids:
                    if row_id not in rows:  # deleted since the ids were read (pruned)
                        continue
                    try:
                        incident = _incident(rows[row_id])
                    except _ROW_DAMAGE as exc:
                        if damaged is None:
                            raise
                        damaged.add(row_id, _why(exc))
                        continue
                    yield incident
                    left -= 1
                    if left <= 0:
                        break
        except _UNREADABLE as exc:
            raise self._unreadable(exc) from exc

    def count(self, *, statuses: Iterable[str] = ("open",), since: float | None = None,
              severity: str | None = None, model: str | None = None,
              at_most: int = 2**62) -> int:
        """How many incidents :meth:`incidents` would select without its limit, counted up
        to ``at_most``."""
        where, params = _selection(statuses, since, severity, model)
        return self._reading(lambda conn: int(conn.execute(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM incidents WHERE {where} LIMIT ?)",
            (*params, int(at_most))).fetchone()[0]))

    def summary(self, since: float, model: str | None = None) -> dict[str, Any]:
        """The original tool's summary of incidents active since ``since``:
        ``total_incidents``, ``by_severity``, ``unique_ips``, ``most_common_threats``
        (occurrences per threat, most first). A rolled-up incident is one of the
        incidents; its clients count among ``unique_ips`` by its ``rolled_up``."""
        where, params = "last_seen >= ?", [since]
        if model is not None:
            where, params = where + " AND model = ?", [since, model]
        return self._reading(lambda conn: _summary(conn, where, params))

    def deliveries(self, *, since: float = 0.0) -> list[dict[str, Any]]:
        """What happened to each alert on each channel since ``since`` (seconds since the
        epoch), oldest first: dicts of time, incident_id, group_key, channel, status,
        attempt, error. Raises IncidentStoreError where the file is not aimsec's."""
        keys = ("time", "incident_id", "group_key", "channel", "status", "attempt", "error")
        return self._reading(lambda conn: [dict(zip(keys, row)) for row in conn.execute(
            "SELECT time, incident_id, group_key, channel, status, attempt, error "
            "FROM deliveries WHERE time >= ? ORDER BY id", (since,)).fetchall()])


#: What reading one row aimsec did not write (a damaged or edited one) raises.
_ROW_DAMAGE = (ValueError, TypeError, AttributeError, OverflowError)
#: What reading a file that is not aimsec's (or a row aimsec did not write) raises.
_UNREADABLE = (sqlite3.Error, *_ROW_DAMAGE)


def _why(exc: Exception) -> str:
    """Why a row could not be read, in one short line."""
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _fold(overflow: dict[tuple[str, str], tuple[Occurrence, list[int]]], o: Occurrence,
          place: int) -> None:
    """Fold ``o`` (result ``place`` of its batch) into its (model, threat)'s occurrence of
    the roll-up client in ``overflow``; ``o`` itself is left as it was (a batch written
    again after a failed write must not count twice)."""
    key = (o.model, o.threat)
    if key not in overflow:
        copy = Evidence.from_dict(o.evidence.as_dict())
        overflow[key] = (Occurrence(o.model, o.threat, ROLLUP_CLIENT, o.severity,
                                    o.first_seen, o.last_seen, o.count, copy), [])
    else:
        overflow[key][0].merge(o)
    joined, places = overflow[key]
    joined.evidence.roll_up(o.client)
    places.append(place)


def _selection(statuses: Iterable[str], since: float | None, severity: str | None,
               model: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause and parameters of :meth:`IncidentStore.incidents`."""
    wanted = [str(status) for status in statuses]  # read once: it may be a generator
    # every status: every row, so that one of a status aimsec does not know is seen
    where = ["1"] if set(STATUSES) <= set(wanted) else [
        "status IN (%s)" % ",".join("?" * len(wanted))]
    params: list[Any] = [] if where == ["1"] else list(wanted)
    if since is not None:
        where.append("last_seen >= ?")
        params.append(since)
    if severity is not None:
        where.append("severity_rank >= ?")
        params.append(rank(severity))
    if model is not None:
        where.append("model = ?")
        params.append(model)
    return " AND ".join(where), params


def _summary(conn: sqlite3.Connection, where: str, params: list[Any]) -> dict[str, Any]:
    """:meth:`IncidentStore.summary` over the incidents ``where`` selects."""
    by_severity = dict(conn.execute(
        f"SELECT severity, COUNT(*) FROM incidents WHERE {where} GROUP BY severity",
        params).fetchall())
    total, clients = conn.execute(
        "SELECT COUNT(*), COUNT(DISTINCT CASE WHEN client != ? THEN client END) FROM "
        f"incidents WHERE {where}", [ROLLUP_CLIENT, *params]).fetchone()
    # a damaged row's evidence reads as no clients rather than failing the summary
    rolled = conn.execute(
        "SELECT TOTAL(CASE WHEN json_valid(evidence) AND json_type(evidence, '$.rolled_up') "
        f"= 'integer' THEN json_extract(evidence, '$.rolled_up') END) FROM incidents WHERE "
        f"{where} AND client = ?", [*params, ROLLUP_CLIENT]).fetchone()[0]
    clients = min(int(clients) + int(max(rolled, 0.0)), MOST_COUNTED)  # TOTAL is a float
    # a damaged row's count (text, NULL, a fraction, SQLite's largest integer that a
    # second row pushes past it: "integer overflow") adds nothing, and a threat that is
    # not text is left out, rather than failing the summary
    threats = conn.execute(
        "SELECT threat, TOTAL(CASE WHEN typeof(count) = 'integer' AND count > 0 THEN count "
        f"END) AS n FROM incidents WHERE {where} AND typeof(threat) = 'text' GROUP BY "
        "threat ORDER BY n DESC, threat", params).fetchall()
    severities = {name: int(by_severity.get(name, 0)) for name in SEVERITIES[:3]}
    if by_severity.get("critical"):
        severities["critical"] = int(by_severity["critical"])
    return {"total_incidents": int(total), "by_severity": severities,
            "unique_ips": int(clients),
            "most_common_threats": {threat: min(int(n), MOST_COUNTED)
                                    for threat, n in threats}}



def _text(raw: bytes) -> str:
    """SQLite text as ``str``; bytes that are not UTF-8 (an edited file) read as U+FFFD
    instead of failing the whole query: one such row failed every write of its group."""
    return raw.decode("utf-8", errors="replace")


def _incident(row: tuple[Any, ...]) -> Incident:
    """The incident of one row; ``ValueError`` or ``TypeError`` for a row aimsec did not
    write (a foreign or edited file): names that are not text, a severity or status
    aimsec does not know, times no calendar holds."""
    (id_, model, threat, client, severity, status, first, last, count, evidence) = row
    if not all(isinstance(v, str) for v in (model, threat, client, severity, status)):
        raise TypeError("a name, severity or status that is not text")
    if max(len(model), len(threat), len(client)) > MAX_NAME:
        raise ValueError(f"a model, threat or client name longer than {MAX_NAME} characters")
    if severity not in SEVERITIES or status not in STATUSES:
        raise ValueError(f"severity {severity[:20]!r} or status {status[:20]!r} unknown")
    first, last = float(first), float(last)
    if not (0.0 <= first <= LAST_SECOND and 0.0 <= last <= LAST_SECOND):
        raise ValueError("first or last seen outside the calendar")
    if type(count) is not int or not 0 <= count <= MOST_COUNTED:
        raise ValueError(f"count {str(count)[:20]!r} is not a whole number from 0 to "
                         f"{MOST_COUNTED}")
    if not isinstance(evidence, (str, bytes)) or len(evidence) > _LONGEST_EVIDENCE:
        raise ValueError(f"evidence is not JSON text of at most {_LONGEST_EVIDENCE} bytes")
    try:
        found = json.loads(evidence)
    except RecursionError:  # arrays nested thousands deep
        raise ValueError("evidence is JSON nested too deep") from None
    return Incident(int(id_), model, threat, client, severity, status, first, last,
                    count, Evidence.from_dict(found))
