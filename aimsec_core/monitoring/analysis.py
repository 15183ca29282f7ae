"""What the monitor saw: per-minute counters behind ``request_analysis()``.

Bounded: one bucket per minute for the last ``horizon_minutes`` (24 h), each counting at
most ``cap`` distinct clients and (client, input) pairs; near-duplicate matches and
suspicions are kept in short bounded lists. These counters describe the calls this
process served; the decisions they report (quotas, lockouts, suspicions, fingerprints)
come from the shared store.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import chain
from typing import Any

from ..forks import renew_after_fork

HORIZON_MINUTES = 24 * 60
_CAP = 4096
#: Distinct clients and (client, input) pairs kept over the whole horizon: past it the
#: oldest minutes lose their detail (their totals stay). Bounds memory (a few MB, where
#: 24 h of rotating ids at the per-minute cap would hold gigabytes) and the cost of a
#: report, which merges the detail of its minutes.
_DETAIL = 4 * _CAP
_EVENTS = 256
#: Sample indices a near-duplicate match keeps (the audit line's ``first``): a batch of
#: 10^5 near-duplicate rows would otherwise hold 10^5 of them in each of :data:`_EVENTS`.
_SAMPLES_KEPT = 10
_PENDING = 256  #: calls kept before they are counted into their minutes


@dataclass
class _Minute:
    minute: int
    total: int = 0
    refused: int = 0
    clients: Counter[str] = field(default_factory=Counter)
    inputs: Counter[tuple[str, str]] = field(default_factory=Counter)  # (client, hash)
    checks: Counter[str] = field(default_factory=Counter)
    flat: int = 0  #: samples too flat to fingerprint


class RequestStats:
    """Counts calls per minute; thread-safe; O(1) per call."""

    def __init__(self, horizon_minutes: int = HORIZON_MINUTES, cap: int = _CAP) -> None:
        self.cap = cap
        self.detail_budget = max(_DETAIL, 2 * cap)  #: the newest minute always fits
        self._detail = 0  #: distinct entries in the buckets' clients and inputs
        self._minutes: deque[_Minute] = deque(maxlen=horizon_minutes)
        self._matches: deque[dict[str, Any]] = deque(maxlen=_EVENTS)
        self._suspicions: dict[tuple[str, str], dict[str, Any]] = {}
        #: no kept suspicion ends before this (a lower bound: a renewal may end later)
        self._earliest_end = float("inf")
        self._lock = threading.Lock()
        renew_after_fork(self)  # a child forked while a thread held it
        #: calls not yet counted: (time, client, input hash, refused, checks)
        #: (a deque: appended without the lock, atomically; drained under it)
        self._pending: deque[tuple[float, str, str, bool, tuple[str, ...]]] = deque()

    def record(self, now: float, client: str, input_hash: str, refused: bool,
               checks: tuple[str, ...]) -> None:
        """Count one finished call. Calls are kept as they come and counted into their
        minutes :data:`_PENDING` at a time (and before any report): one tuple per call on
        the guarded path instead of four counter updates spread over memory."""
        pending = self._pending
        pending.append((now, client, input_hash, refused, checks))
        if len(pending) >= _PENDING:
            with self._lock:
                self._count()

    def _count(self) -> None:
        """Count the pending calls into their minutes' buckets (under the lock)."""
        queue = self._pending  # calls appended meanwhile wait for the next count
        pending = [queue.popleft() for _ in range(len(queue))]
        if not pending:
            return
        times, clients, hashes, refusals, checks = zip(*pending)
        if min(times) // 60 == max(times) // 60:  # one minute (the usual case): counted
            bucket = self._bucket(times[0])      # by the counters' own loops
            bucket.total += len(pending)
            bucket.refused += sum(refusals)
            self._count_keys(bucket.clients, clients)
            self._count_keys(bucket.inputs, [pair for pair in zip(clients, hashes) if pair[1]])
            bucket.checks.update(chain.from_iterable(checks))
        else:
            self._count_calls(pending)
        minutes = iter(self._minutes)
        while self._detail > self.detail_budget:  # the oldest minutes' detail goes first
            oldest = next(minutes)
            self._detail -= len(oldest.clients) + len(oldest.inputs)
            oldest.clients, oldest.inputs = Counter(), Counter()

    def _count_keys(self, counter: Counter[Any], keys: Sequence[Any]) -> None:
        """Count ``keys`` into ``counter``, each new key only while ``counter`` holds
        fewer than ``cap`` (in order: the first ``cap`` distinct keys are kept)."""
        if len(counter) + len(keys) <= self.cap:  # every key fits
            before = len(counter)
            counter.update(keys)
            self._detail += len(counter) - before
            return
        for key in keys:
            count = counter.get(key)
            if count is not None or len(counter) < self.cap:
                counter[key] = (count or 0) + 1
                self._detail += count is None

    def _count_calls(self, pending: list[tuple[float, str, str, bool, tuple[str, ...]]]
                     ) -> None:
        """Count ``pending`` calls one by one, into the minute of each (under the lock)."""
        bucket = None
        for now, client, input_hash, refused, checks in pending:
            if bucket is None or bucket.minute != now // 60:
                bucket = self._bucket(now)
            bucket.total += 1
            bucket.refused += refused
            self._count_keys(bucket.clients, (client,))
            if input_hash:
                self._count_keys(bucket.inputs, ((client, input_hash),))
            bucket.checks.update(checks)

    def flat(self, now: float, samples: int) -> None:
        """Count samples that got no fingerprint (flat: every value within one step)."""
        with self._lock:
            self._count()  # the minutes stay in order
            self._bucket(now).flat += samples

    def _bucket(self, now: float) -> _Minute:
        """The bucket of ``now``'s minute (a new one when the minute changed); under the
        lock."""
        minute = int(now // 60)
        bucket = self._minutes[-1] if self._minutes else None
        if bucket is None or bucket.minute != minute:
            bucket = _Minute(minute)
            if len(self._minutes) == self._minutes.maxlen:
                dropped = self._minutes.popleft()
                self._detail -= len(dropped.clients) + len(dropped.inputs)
            self._minutes.append(bucket)
        return bucket

    def match(self, now: float, client: str, samples: list[int], share: float,
              same_client: bool) -> None:
        """Keep one near-duplicate match: its first :data:`_SAMPLES_KEPT` sample indices
        and their count."""
        with self._lock:
            self._matches.append({"time": _iso(now), "client": client,
                                  "samples": samples[:_SAMPLES_KEPT],
                                  "sample_count": len(samples),
                                  "shared": round(share, 3),
                                  "with": "same client" if same_client else "another client",
                                  "_t": now})

    def suspect(self, now: float, client: str, check: str, until: float, reason: str) -> None:
        """Keep (or renew) ``client``'s suspicion by ``check`` until ``until``; at most
        :data:`_CAP` at once. Every call a lockout refuses renews one, so the expired ones
        are looked for only when a new one finds the table full and the earliest end has
        passed (not once per call)."""
        key = (client, check)
        with self._lock:
            suspicions = self._suspicions
            if (key not in suspicions and len(suspicions) >= _CAP
                    and now >= self._earliest_end):
                for old in [k for k, v in suspicions.items() if v["_until"] <= now]:
                    del suspicions[old]
                self._earliest_end = min((v["_until"] for v in suspicions.values()),
                                         default=float("inf"))
            if len(suspicions) < _CAP or key in suspicions:
                suspicions[key] = {
                    "client": client, "check": check, "since": _iso(now),
                    "until": _iso(until), "reason": reason, "_until": until}
                self._earliest_end = min(self._earliest_end, until)

    def report(self, now: float, window_minutes: float, max_repeats: int) -> dict[str, Any]:
        """The ``request_analysis`` dictionary over the last ``window_minutes``."""
        first = int((now - window_minutes * 60) // 60)
        clients: Counter[str] = Counter()
        inputs: Counter[tuple[str, str]] = Counter()
        checks: Counter[str] = Counter()
        total = refused = flat = 0
        with self._lock:
            self._count()
            for bucket in self._minutes:
                if bucket.minute < first:
                    continue
                total += bucket.total
                refused += bucket.refused
                flat += bucket.flat
                clients.update(bucket.clients)
                inputs.update(bucket.inputs)
                checks.update(bucket.checks)
            since = now - window_minutes * 60
            matches = [{k: v for k, v in m.items() if k != "_t"} for m in self._matches
                       if m["_t"] >= since]
            suspicions = [{k: v for k, v in s.items() if k != "_until"}
                          for s in self._suspicions.values() if s["_until"] > now]
        per_input: Counter[str] = Counter()
        for (_, digest), count in inputs.items():
            per_input[digest] += count
        repeated = {f"{digest}": count for (client, digest), count in inputs.most_common(50)
                    if count > max(1, max_repeats)}
        patterns: list[dict[str, Any]] = []
        if repeated:
            patterns.append({"type": "repeated_inputs", "details": repeated})
        if matches:
            patterns.append({"type": "near_duplicates", "details": {
                "matches": len(matches),
                "clients": sorted({m["client"] for m in matches})[:50]}})
        for check in ("rate_limit", "min_interval", "lockout", "extraction",
                      "store_unavailable"):
            if checks.get(check):
                patterns.append({"type": check, "details": {"calls": checks[check]}})
        minutes = max(window_minutes, 1e-9)
        return {
            "total_requests": total,
            "unique_inputs": len(per_input),
            "request_rate": total / minutes,
            "suspicious_patterns": patterns,
            "window_minutes": window_minutes,
            "refused_requests": refused,
            "rate_per_client": {c: n / minutes for c, n in clients.most_common(100)},
            "top_clients": [{"client": c, "requests": n} for c, n in clients.most_common(10)],
            "repeated_inputs": [{"client": c, "input_hash": h, "count": n}
                                for (c, h), n in inputs.most_common(20) if n > 1],
            "near_duplicate_matches": matches[-50:],
            "flat_samples": flat,
            "findings": dict(checks.most_common()),
            "active_suspicions": suspicions,
        }


def _iso(seconds: float) -> str:
    """UTC ISO 8601; a time past what ``datetime`` holds (a lockout of 1e300 s, which the
    policy allows) reads as its last or first representable instant."""
    try:
        return datetime.fromtimestamp(float(seconds), timezone.utc).isoformat()  # numpy too
    except (OverflowError, OSError, ValueError):
        edge = datetime.max if seconds > 0 else datetime.min
        return edge.replace(tzinfo=timezone.utc).isoformat()
