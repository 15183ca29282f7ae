"""The in-process store: the default, and the local state a ``fail_open`` guard falls back
on while Redis is unreachable. Bounded: entries expire with their windows (swept every few
thousand writes), each table keeps at most :data:`KEPT` entries (a client sending endless
distinct inputs, or rotating endless ids, cannot grow it), and fingerprints are capped per
model. Past the cap the least recently renewed entries go first, except lockouts and
suspicions: one in force is never dropped to make room (a client locked out could
otherwise lock out :data:`KEPT` fresh ids of its own and be admitted again); while
:data:`KEPT` are in force a new one is not kept, and a warning says so."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from ..forks import renew_after_fork
from .fingerprint import Query
from .index import FingerprintIndex, Match
from .policy import ClientRules, Policy
from .store import ADMITTED, Admission, Observation, Store

log = logging.getLogger("aimsec.monitoring")
_SWEEP_EVERY = 4096
#: Seconds (monotonic) between two scans of a full lockout or suspicion table for ended
#: entries behind the oldest (a tier's longer ``session_timeout`` keeps them from the
#: front): a scan walks the whole table, so a flood never buys one per call.
_SCAN_EVERY = 1.0
#: Seconds (monotonic) between two warnings that a lockout or suspicion was not kept.
_WARN_EVERY = 60.0
#: Entries each table keeps: past it the least recently renewed are forgotten, so an input
#: last repeated before the last KEPT distinct inputs starts its count again (lockouts and
#: suspicions in force are kept, and a new one waits for room: see :meth:`_hold`). Full, as
#: rotating ids fill them (measured): failed attempts about 240 MB (a deque each), quota
#: windows with minimum intervals 105 MB, repeats 85 MB, lockouts 60 MB, suspicions 50 MB:
#: some 540 MB in all.
KEPT = 1 << 18


class MemoryStore(Store):
    url = "memory://"

    def __init__(self, *, secret: bytes | None = None) -> None:
        """``secret``: the fingerprint salt (32 random bytes unless given, e.g. by a test
        that needs reproducible fingerprints)."""
        self._lock = threading.Lock()
        renew_after_fork(self)  # a child forked while a thread held it
        self._secret = secret if secret is not None else os.urandom(32)
        self._quota: Any = None  # limits is imported when a quota is first used
        # keyed by (model, client key); repeats by (model, client key, content hash)
        self._last: dict[tuple[str, str], float] = {}  # time of the last admitted call
        #: lockout end; read without the lock (admission without a quota or interval), so
        #: an OrderedDict: a lockout renewed moves to the end without leaving the table
        self._locked: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._repeats: dict[tuple[str, str, str], tuple[int, float]] = {}  # (count, end)
        self._suspects: dict[tuple[str, str], float] = {}
        self._indexes: dict[str, FingerprintIndex] = {}
        self._writes = 0
        #: per held table (lockouts, suspicions): when it may next be scanned whole, when
        #: one it could not keep was last logged, and how many it could not keep
        self._next_scan = {"lockout": 0.0, "suspicion": 0.0}
        self._warned = {"lockout": -_WARN_EVERY, "suspicion": -_WARN_EVERY}
        self.not_kept = {"lockout": 0, "suspicion": 0}

    def __repr__(self) -> str:
        return "MemoryStore()"

    def secret(self) -> bytes:
        return self._secret

    def index(self, model: str, policy: Policy) -> FingerprintIndex:
        index = self._indexes.get(model)
        if index is None:
            with self._lock:  # two first calls at once must not make two indexes
                index = self._indexes.get(model)
                if index is None:
                    index = self._indexes[model] = FingerprintIndex(
                        policy.near_duplicate_max_fingerprints,
                        policy.near_duplicate_hashes)
        return index

    def admit(self, model: str, client: str, now: float, rules: ClientRules, *,
              lockout: bool) -> Admission:
        key = (model, client)
        if rules.max_requests_per_minute is None and not rules.min_request_interval > 0:
            # only the lockout to read: one dict lookup (atomic), no lock to take
            locked = self._locked.get(key) if lockout else None
            if locked is not None and locked > now:
                return Admission(locked_for=self._lockout_left(key, locked, now, rules))
            return ADMITTED
        with self._lock:
            self._tick(now)
            locked = self._locked.get(key) if lockout else None
            if locked is not None and locked > now:
                return Admission(locked_for=self._lockout_left(key, locked, now, rules))
            rate_retry = None
            if rules.max_requests_per_minute is not None:
                if self._quota is None:
                    from .ratelimit import Quota

                    self._quota = Quota()
                rate_retry = self._quota.hit(rules.max_requests_per_minute, now, model, client)
            interval_retry = None
            if rules.min_request_interval > 0:
                last = self._last.get(key)
                if last is not None and last > now:  # stamped by a clock since set back
                    last = self._last[key] = now
                if last is not None and now - last < rules.min_request_interval:
                    interval_retry = last + rules.min_request_interval - now
                else:
                    _renew(self._last, key, now)
            if rate_retry is None and interval_retry is None:
                return ADMITTED
            return Admission(rate_retry=rate_retry, interval_retry=interval_retry)

    def observe(self, model: str, client: str, now: float, rules: ClientRules,
                policy: Policy, call_hash: str, query: Query | None,
                client_tag: int) -> Observation:
        key = (model, client)
        with self._lock:
            self._writes += 1  # _tick, inline: once per watched call
            if not self._writes % _SWEEP_EVERY:
                self._sweep(now)
            repeats = 0
            if rules.max_repeats and call_hash:
                rkey = (model, client, call_hash)
                first = (1, now + rules.repeat_window)
                seen = self._repeats.setdefault(rkey, first)  # one lookup for a new input
                if seen is not first:
                    if seen[1] <= now or seen[1] - now > rules.repeat_window:  # or set back
                        _renew(self._repeats, rkey, first)
                    else:
                        repeats = seen[0]
                        _renew(self._repeats, rkey, (repeats + 1, seen[1]))
            suspect = self._suspects.get(key)
            if suspect is not None and suspect - now > rules.session_timeout:  # set back
                suspect = self._suspects[key] = now + rules.session_timeout
        matches: list[Match] = []
        if query is not None:
            index = self._indexes.get(model)
            if index is None:
                index = self.index(model, policy)
            matches = index.fingerprint_match_and_add(query, client_tag, now,
                                                      policy.near_duplicate_ttl)
        # tuple.__new__: a named tuple's own __new__ is a Python function, a call more
        return tuple.__new__(Observation, (
            repeats, matches, suspect - now if suspect and suspect > now else None))

    def _lockout_left(self, key: tuple[str, str], locked: float, now: float,
                      rules: ClientRules) -> float:
        """Seconds ``key``'s lockout (ending at ``locked``) still lasts: at most
        ``session_timeout``. A lockout set by a clock that ran ahead and was set back
        would otherwise last as long as the clock's error; it is shortened to end
        ``session_timeout`` from ``now``."""
        left = locked - now
        if left > rules.session_timeout:
            left = rules.session_timeout
            self._locked[key] = now + left  # the key keeps its place: no reader misses it
        return left

    def record_failure(self, model: str, client: str, now: float, rules: ClientRules) -> None:
        if not rules.max_failed_attempts:
            return
        key = (model, client)
        with self._lock:
            failures = self._failures.pop(key, None)
            if failures is None or failures.maxlen != rules.max_failed_attempts:
                failures = deque(failures or (), maxlen=rules.max_failed_attempts)
            self._failures[key] = failures  # the most recently failed last
            failures.append(now)
            if (len(failures) == rules.max_failed_attempts
                    and failures[0] >= now - rules.failure_window
                    and self._hold(self._locked, "lockout", key, now + rules.session_timeout,
                                   now)):
                failures.clear()  # (one not kept is tried again at the next failure)
            self._tick(now)

    def mark_suspect(self, model: str, client: str, now: float, until: float) -> None:
        with self._lock:
            self._hold(self._suspects, "suspicion", (model, client), until, now)
            self._tick(now)

    def _hold(self, table: dict[Any, float], what: str, key: Any, end: float,
              now: float) -> bool:
        """Set ``key``'s lockout or suspicion (``what``) in ``table`` to end at ``end``
        (under the lock); ``False`` when it could not be kept: :data:`KEPT` others are
        in force. One in force is never dropped for a newer one: a client could otherwise
        clear its own by earning :data:`KEPT` more with ids of its own."""
        if key in table or len(table) < KEPT:
            _renew(table, key, end)
            return True
        _forget(table, lambda ends: ends <= now, live=True)  # ended ones at the front
        if len(table) >= KEPT and time.monotonic() >= self._next_scan[what]:
            self._next_scan[what] = time.monotonic() + _SCAN_EVERY
            for ended in [k for k, ends in table.items() if ends <= now]:
                del table[ended]
        if len(table) < KEPT:
            _renew(table, key, end)
            return True
        self.not_kept[what] += 1
        if time.monotonic() - self._warned[what] >= _WARN_EVERY:
            self._warned[what] = time.monotonic()
            log.warning("aimsec: %d %ss are in force, the most the memory store keeps; a new "
                        "one is not kept until one of them ends (%d not kept so far): "
                        "many clients are being refused at once, which looks like a flood "
                        "of rotating client ids", len(table), what, self.not_kept[what])
        return False

    def _tick(self, now: float) -> None:
        """Count one write (under the lock); every :data:`_SWEEP_EVERY` writes, sweep.
        Every write counts, failures and suspicions too: a stream of refused calls from
        rotating ids is admitted without the lock and never observed, and must still be
        swept."""
        self._writes += 1
        if not self._writes % _SWEEP_EVERY:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Drop expired entries and those past :data:`KEPT` (every :data:`_SWEEP_EVERY`
        writes, under the lock), oldest first, in time proportional to what is dropped.

        Windows are fixed per tier, so insertion order is about expiry order; an expired
        entry that a longer-lived one keeps from the front waits for the next sweeps (every
        read treats an expired entry as absent)."""
        if self._quota is not None:  # a window expires a minute after its newest call
            _forget(self._quota.windows.events, lambda events: not events
                    or events[0] < now - 60.0)
        _forget(self._locked, lambda end: end <= now, live=True)
        _forget(self._suspects, lambda end: end <= now, live=True)
        _forget(self._repeats, lambda seen: seen[1] <= now)
        _forget(self._last, lambda last: last < now - 3600)
        _forget(self._failures, lambda failures: not failures or failures[-1] < now - 86400)


def _renew(table: dict[Any, Any], key: Any, value: Any) -> None:
    """Set ``key`` as the newest entry of ``table`` (a dict keeps a key where it was
    first inserted; the sweep relies on the oldest entries coming first). An
    ``OrderedDict`` moves the key without removing it: a reader without the lock never
    finds it missing in between."""
    if isinstance(table, OrderedDict):
        table[key] = value
        table.move_to_end(key)
        return
    table.pop(key, None)
    table[key] = value


def _forget(table: dict[Any, Any], expired: Callable[[Any], bool], *,
            live: bool = False) -> None:
    """Drop ``table``'s entries from the oldest on while they are expired or more than
    :data:`KEPT` remain (``live``: only expired ones, whatever their number)."""
    excess = 0 if live else len(table) - KEPT
    doomed = []
    for key, value in table.items():
        if len(doomed) < excess or expired(value):
            doomed.append(key)
        else:
            break
    for key in doomed:
        del table[key]
