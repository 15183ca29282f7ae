"""The in-memory fingerprint index: which stored fingerprints share a query's hashes.

Bounded in both directions, so a check costs the same with 10^3 or 10^6 fingerprints
stored and memory never grows past the cap:

- fingerprints live in a ring of at most ``capacity`` slots (the oldest is replaced) and
  count only while younger than ``ttl`` seconds;
- the index is a table of buckets of ``ways`` entries (hash, serial); a bucket keeps its
  most recent entries. A query reads one bucket per hash: ``S * ways`` entries, whatever
  the number stored. Windows common to most inputs (a blank border) fill their bucket with
  recent entries only, which is all the near-duplicate test needs: an attack's queries
  follow each other.

Per stored fingerprint: its hashes (4 bytes each), serial, time, client tag and content
tag (28 bytes), and 1.5 * S table entries of 12 bytes: about 1.1 KB at S = 50.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

_EMPTY = -1


@dataclass(frozen=True)
class Match:
    """The best stored fingerprint for one query sample."""

    shared: int  #: hashes it shares with the query
    size: int  #: hashes in the query's fingerprint
    same_client: bool  #: stored by the client now asking

    @property
    def share(self) -> float:
        return self.shared / self.size if self.size else 0.0


class FingerprintIndex:
    """Stores fingerprints and finds, for each new one, the stored one sharing most hashes.

    ``match_and_add`` is atomic (one lock), matches each sample of a batch against the
    store and the batch's earlier samples, then stores it.
    """

    def __init__(self, capacity: int, hashes: int, *, ways: int = 8,
                 initial: int = 1024) -> None:
        self.capacity = capacity
        self.hashes = hashes
        self.ways = ways
        self._lock = threading.Lock()
        self._serial = 0
        self._allocate(min(capacity, initial))

    def _allocate(self, slots: int) -> None:
        self._slots = slots
        self.fp_serial = np.full(slots, _EMPTY, dtype=np.int64)
        self.fp_time = np.zeros(slots, dtype=np.float64)
        self.fp_client = np.zeros(slots, dtype=np.uint32)
        self.fp_content = np.zeros(slots, dtype=np.uint64)
        self.fp_hashes = np.zeros((slots, self.hashes), dtype=np.uint32)
        buckets = 1 << max(4, int(np.ceil(np.log2(1.5 * slots * self.hashes / self.ways))))
        self._mask = np.uint32(buckets - 1)
        self.t_hash = np.zeros((buckets, self.ways), dtype=np.uint32)
        self.t_serial = np.full((buckets, self.ways), _EMPTY, dtype=np.int64)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.fp_serial, self.fp_time, self.fp_client,
                                      self.fp_content, self.fp_hashes, self.t_hash,
                                      self.t_serial))

    def __len__(self) -> int:
        return min(self._serial, self._slots)

    def match_and_add(self, fingerprints: np.ndarray, contents: np.ndarray, client: int,
                      now: float, ttl: float) -> list[Match]:
        """For each row of ``fingerprints`` ((n, <= S) uint32, zero-padded): the best
        match among fingerprints stored within ``ttl`` seconds with other content
        (exact repeats are the repeat check's business), then store the row."""
        out = []
        with self._lock:
            for row, content in zip(fingerprints, contents):
                hashes = row[row != 0]
                out.append(self._best(hashes, int(content), client, now - ttl))
                self._add(hashes, int(content), client, now)
        return out

    def _best(self, hashes: np.ndarray, content: int, client: int, since: float) -> Match:
        if not len(hashes):
            return Match(0, 0, False)
        buckets = hashes & self._mask
        found = self.t_serial[buckets][self.t_hash[buckets] == hashes[:, None]]
        if not len(found):
            return Match(0, len(hashes), False)
        slots = found % self._slots
        alive = ((self.fp_serial[slots] == found) & (self.fp_time[slots] >= since)
                 & (self.fp_content[slots] != np.uint64(content)))
        found = np.sort(found[alive])
        if not len(found):
            return Match(0, len(hashes), False)
        ends = np.append(np.flatnonzero(found[1:] != found[:-1]), len(found) - 1)
        counts = np.diff(ends, prepend=-1)  # run lengths of equal serials
        best = int(np.argmax(counts))
        owner = int(self.fp_client[found[ends[best]] % self._slots])
        return Match(int(counts[best]), len(hashes), owner == client)

    def _add(self, hashes: np.ndarray, content: int, client: int, now: float) -> None:
        if self._serial >= self._slots and self._slots < self.capacity:
            self._grow()
        serial = self._serial
        self._serial += 1
        slot = serial % self._slots
        self.fp_serial[slot] = serial
        self.fp_time[slot] = now
        self.fp_client[slot] = client
        self.fp_content[slot] = content
        self.fp_hashes[slot] = 0
        self.fp_hashes[slot, :len(hashes)] = hashes
        self._insert(hashes, serial)

    def _insert(self, hashes: np.ndarray, serial: int) -> None:
        buckets = hashes & self._mask
        ways = np.argmin(self.t_serial[buckets], axis=1)  # an empty or the oldest entry
        self.t_hash[buckets, ways] = hashes
        self.t_serial[buckets, ways] = serial
        lost = self.t_hash[buckets, ways] != hashes
        if lost.any():  # two of its hashes took the same entry of one bucket: redo them
            for bucket, value in zip(buckets[lost], hashes[lost]):
                way = int(np.argmin(self.t_serial[bucket]))
                self.t_hash[bucket, way] = value
                self.t_serial[bucket, way] = serial

    def _grow(self) -> None:
        old = (self.fp_serial, self.fp_time, self.fp_client, self.fp_content, self.fp_hashes)
        self._allocate(min(self.capacity, self._slots * 2))
        for serial, time, client, content, hashes in zip(*old):
            if serial == _EMPTY:
                continue
            slot = serial % self._slots
            self.fp_serial[slot], self.fp_time[slot] = serial, time
            self.fp_client[slot], self.fp_content[slot] = client, content
            self.fp_hashes[slot] = hashes
            self._insert(hashes[hashes != 0], int(serial))
