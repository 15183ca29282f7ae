"""The in-memory fingerprint index: which stored fingerprints share a query's hashes.

Bounded in both directions, so a check costs the same with 10^3 or 10^6 fingerprints
stored and memory never grows past the cap:

- fingerprints live in a ring of at most ``capacity`` slots (the oldest is replaced) and
  count only while younger than ``ttl`` seconds;
- the index is a table of buckets of ``ways`` entries, each one 64-bit word holding the
  storing fingerprint's serial (high half) and the hash (low half); a bucket keeps its
  most recent entries. A query reads one bucket per hash: ``S * ways`` entries, whatever
  the number stored. Windows common to most inputs (a blank border) fill their bucket with
  recent entries only, which is all the near-duplicate test needs: an attack's queries
  follow each other.

Serials are 32-bit: after 2^32 stored fingerprints (weeks of a busy model) the index
starts over empty, forgetting at most ``ttl`` seconds of history once.

Per stored fingerprint: its hashes (4 bytes each), serial, time, client tag and content
tag (28 bytes), and 1.5 to 3 * S table entries of 8 bytes (the bucket count rounds up to a
power of two): 830 bytes to 1.4 KB at S = 50 (1.3 KB measured with 10^6 stored).
"""

from __future__ import annotations

import ctypes
import heapq
import sys
import threading
from collections import Counter
from collections.abc import Callable
from operator import itemgetter
from typing import NamedTuple

import numpy as np

from ..forks import renew_after_fork
from . import kernels
from .fingerprint import Query

_EMPTY = -1
_SCALAR_TRIES = 4  #: best candidates checked one by one before the vectorized fallback
_COUNTER_MAX = 48  #: candidates counted in Python below this many, with numpy above
_COUNT_THEN_SERIAL = itemgetter(1, 0)  #: ranks (serial, count) pairs
_SERIALS = 1 << 32  #: serials fit the high half of a table entry
_LOW_HALF = 0 if sys.byteorder == "little" else 1  #: index of a uint64's low uint32
_HALF = np.uint64(32)
#: Words of the packed state before the table: buckets, ways, slots, hashes, then zeros
#: (64 bytes: the table's buckets stay on cache-line boundaries)
_STATE_HEADER = 8


class Match(NamedTuple):
    """The best stored fingerprint for one query sample (a named tuple: one is made per
    sample of every watched call)."""

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
        renew_after_fork(self)  # a child forked while a thread held it
        self._serial = 0
        self._initial = min(capacity, initial)
        #: the next size's memory, faulted in on a background thread: slots -> packed.
        #: Handed over by single dict operations (atomic), never under ``_lock``: a
        #: process forked while that thread held the lock would keep it held for ever
        self._spares: dict[int, np.ndarray] = {}
        self._preparing: threading.Thread | None = None  #: the thread faulting it in
        self._allocate(self._initial)

    def _allocate(self, slots: int) -> None:
        self._slots = slots
        #: the serial before which to grow (under capacity) or start over (past 2^32)
        self._limit = slots if slots < self.capacity else _SERIALS
        #: the serial from which the next size's memory is prepared (half the slots)
        self._prepare_at = slots // 2 if slots < self.capacity else _SERIALS
        #: the kernels' results for a one-row call (reused under the lock)
        self._found = np.empty((3, 1), dtype=np.int64)
        buckets = self._buckets(slots)
        self._mask = buckets - 1
        # every array below is a view of one packed array, the compiled kernels' one
        # argument for the index's state (views there too: see _compiled.index_state)
        half = (slots + 1) // 2  # words holding ``slots`` uint32 values
        start = _STATE_HEADER + buckets * self.ways
        spare = self._spares.pop(slots, None)  # one taker, copies of the index included
        self._packed = packed = (spare if spare is not None
                                 else _aligned_zeros(self._words(slots)))
        packed[:4] = buckets, self.ways, slots, self.hashes
        #: (buckets, ways) entries: serial << 32 | hash; 0 is empty (no hash is 0)
        self.table = packed[_STATE_HEADER:start].reshape(buckets, self.ways)
        self.fp_serial = packed[start:start + slots].view(np.int64)
        self.fp_serial.fill(_EMPTY)
        self.fp_time = packed[start + slots:start + 2 * slots].view(np.float64)
        self.fp_content = packed[start + 2 * slots:start + 3 * slots]
        start += 3 * slots
        self.fp_client = packed[start:start + half].view(np.uint32)[:slots]
        self.fp_hashes = packed[start + half:].view(np.uint32)[:slots * self.hashes].reshape(
            slots, self.hashes)

    @property
    def t_hash(self) -> np.ndarray:
        """The table's hashes ((buckets, ways) uint32; 0 where empty)."""
        return self.table.view(np.uint32)[:, _LOW_HALF::2]

    @property
    def t_serial(self) -> np.ndarray:
        """The table's serials ((buckets, ways) int64; -1 where empty)."""
        serials = (self.table >> _HALF).astype(np.int64)
        serials[self.t_hash == 0] = _EMPTY
        return serials

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.fp_serial, self.fp_time, self.fp_client,
                                      self.fp_content, self.fp_hashes, self.table))

    def __len__(self) -> int:
        return min(self._serial, self._slots)

    def match_and_add(self, fingerprints: np.ndarray, contents: np.ndarray, client: int,
                      now: float, ttl: float) -> list[Match]:
        """For each row of ``fingerprints`` ((n, <= S) uint32, zero-padded): the best
        match among fingerprints stored within ``ttl`` seconds with other content
        (exact repeats are the repeat check's business), then store the row."""
        compiled = kernels.load()
        if compiled is not None:
            # the kernel's types whatever the caller passed, so no call compiles another
            # specialization
            rows = (kernels.kernel_array(fingerprints, np.uint32),
                    kernels.kernel_array(contents, np.uint32))
            return self._compiled(compiled.match_and_add_rows, rows, client, now, now - ttl)
        out = []
        since = now - ttl
        with self._lock:
            for row, content in zip(fingerprints, contents.tolist()):
                # rows are sorted descending: the zero padding is at the end
                hashes = row if not len(row) or row[-1] else row[:np.count_nonzero(row)]
                if not len(hashes):
                    out.append(Match(0, 0, False))
                    continue
                if self._serial >= self._limit:
                    self._make_room()
                buckets = np.bitwise_and(hashes, self._mask, dtype=np.intp)
                entries = self.table.take(buckets, axis=0)  # (len(hashes), ways)
                hit = entries.view(np.uint32)[:, _LOW_HALF::2] == hashes[:, None]
                found = entries[hit]
                out.append(self._best(found >> _HALF, len(hashes), content, client, since)
                           if len(found) else Match(0, len(hashes), False))
                self._add(hashes, buckets, entries, content, client, now)
            if self._serial >= self._prepare_at:
                self._prepare()
        return out

    def fingerprint_match_and_add(self, query: Query, client: int, now: float,
                                  ttl: float) -> list[Match]:
        """:meth:`match_and_add` of ``query``'s fingerprints and content tags, computed
        in the same compiled pass where the kernels are loaded."""
        compiled = kernels.load()
        if compiled is None:
            return self.match_and_add(*query.fingerprints(), client, now, ttl)
        x, layout = query.fingerprinter.kernel_arguments(query.samples)
        if len(x) != 1 or type(client) is not int or type(now) is not float:
            return self._compiled(compiled.fingerprint_match_and_add_rows, (x, layout),
                                  client, now, now - ttl)
        # one row (a served call): :meth:`_compiled` without its loop
        with self._lock:
            if self._serial >= self._limit:
                self._make_room()  # may allocate new arrays: read them after it
            _, self._serial, shared, size, same = compiled.fingerprint_match_and_add_rows(
                x, layout, 0, client, now, now - ttl, self._packed, self._serial,
                self._limit, self._found)
            if self._serial >= self._prepare_at:
                self._prepare()
        # tuple.__new__: a named tuple's own __new__ is a Python function, a call more
        return [tuple.__new__(Match, (shared, size, same == 1))]

    def _compiled(self, kernel: Callable[..., tuple[int, int]], rows: tuple[object, ...],
                  client: int, now: float, since: float) -> list[Match]:
        """Run ``kernel`` (a compiled match-and-store pass, its leading arguments ``rows``
        describing the rows) over every row; it stops where the index must grow or start
        over (done here, between its calls)."""
        n = len(rows[0])  # type: ignore[arg-type]
        # the kernel's types whatever the caller passed (a clock giving ints included)
        client, now, since = int(client), float(now), float(since)
        done = 0
        with self._lock:
            # shared, size, same client per row
            found = self._found if n == 1 else np.empty((3, n), dtype=np.int64)
            while done < n:
                if self._serial >= self._limit:
                    self._make_room()
                done, self._serial = kernel(*rows, done, client, now, since, self._packed,
                                            self._serial, self._limit, found)[:2]
            if self._serial >= self._prepare_at:
                self._prepare()
            shared, sizes, same = found.tolist()
        if n == 1:
            return [Match(shared[0], sizes[0], same[0] == 1)]
        return [Match(a, b, c == 1) for a, b, c in zip(shared, sizes, same)]

    def _alive(self, serial: int, content: int, since: float) -> bool:
        """Whether the fingerprint ``serial`` still counts: not overwritten, stored
        within the ttl, other content."""
        slot = serial % self._slots
        return bool(self.fp_serial[slot] == serial and self.fp_time[slot] >= since
                    and self.fp_content[slot] != content)

    def _best(self, found: np.ndarray, size: int, content: int, client: int,
              since: float) -> Match:
        """The best alive candidate among ``found`` (serials, one per shared hash): the
        one sharing most hashes, among equals the most recent (the compiled kernel's
        choice: which client stored it decides whether a near-duplicate counts as the
        client's own)."""
        # count the candidates, then read the best few one by one: usually the first is
        # alive (stored within the ttl, not overwritten, other content)
        if len(found) <= _COUNTER_MAX:
            counts = Counter(found.tolist())
            serial, count = max(counts.items(), key=_COUNT_THEN_SERIAL)
            if self._alive(serial, content, since):
                return Match(count, size, int(self.fp_client[serial % self._slots]) == client)
            ranked = heapq.nlargest(_SCALAR_TRIES, counts.items(), key=_COUNT_THEN_SERIAL)
        else:
            found.sort()
            ends, counts = _runs(found)
            top = np.lexsort((ends, counts))[:-_SCALAR_TRIES - 1:-1]  # serials ascend
            ranked = list(zip(found[ends[top]].tolist(), counts[top].tolist()))
        for serial, count in ranked:
            if self._alive(serial, content, since):
                return Match(count, size, int(self.fp_client[serial % self._slots]) == client)
        if len(ranked) < _SCALAR_TRIES:
            return Match(0, size, False)
        return self._best_alive(found.astype(np.int64), size, content, client, since)

    def _best_alive(self, found: np.ndarray, size: int, content: int, client: int,
                    since: float) -> Match:
        """The vectorized fallback of :meth:`_best` when its first candidates are dead."""
        slots = found % self._slots
        alive = ((self.fp_serial[slots] == found) & (self.fp_time[slots] >= since)
                 & (self.fp_content[slots] != np.uint64(content)))
        found = np.sort(found[alive])
        if not len(found):
            return Match(0, size, False)
        ends, counts = _runs(found)
        best = len(counts) - 1 - int(np.argmax(counts[::-1]))  # the most recent of equals
        owner = int(self.fp_client[found[ends[best]] % self._slots])
        return Match(int(counts[best]), size, owner == client)

    def _make_room(self) -> None:
        """Before storing serial ``_serial``: grow while under ``capacity``; start over
        when serials would no longer fit the table's entries."""
        if self._serial >= _SERIALS:
            self._serial = 0
            self._allocate(self._initial)
        else:
            self._grow()

    def _add(self, hashes: np.ndarray, buckets: np.ndarray, entries: np.ndarray,
             content: int, client: int, now: float) -> None:
        """Store ``hashes`` as the next serial; ``entries`` are its buckets' entries as
        read just before (the way to replace: an empty or the oldest entry)."""
        serial = self._serial
        self._serial += 1
        slot = serial % self._slots
        self.fp_serial[slot] = serial
        self.fp_time[slot] = now
        self.fp_client[slot] = client
        self.fp_content[slot] = content
        stored = self.fp_hashes[slot]
        stored[len(hashes):] = 0
        stored[:len(hashes)] = hashes
        ways = entries.argmin(axis=1)  # an empty or the oldest entry (serial is high)
        values = np.bitwise_or(hashes, np.uint64(serial << 32), dtype=np.uint64)
        self.table[buckets, ways] = values
        order = buckets.tolist()
        if len(set(order)) == len(order):
            return
        # hashes sharing a bucket go one after another into the oldest entry left, as the
        # compiled kernel stores them (past ``ways`` of them, the row's own entries are the
        # oldest left): redo those buckets from what they held before
        shared = Counter(order)
        for j, bucket in enumerate(order):
            if shared[bucket] > 1:
                self.table[bucket] = entries[j]
        for j, bucket in enumerate(order):
            if shared[bucket] > 1:
                entry = self.table[bucket]
                entry[int(entry.argmin())] = values[j]

    def _buckets(self, slots: int) -> int:
        """Table buckets for ``slots`` fingerprints: 1.5 entries per hash, a power of two."""
        return 1 << max(4, int(np.ceil(np.log2(1.5 * slots * self.hashes / self.ways))))

    def _words(self, slots: int) -> int:
        """Words of the packed state for ``slots`` fingerprints (see :meth:`_allocate`)."""
        return (_STATE_HEADER + self._buckets(slots) * self.ways + 3 * slots + (slots + 1) // 2
                + (slots * self.hashes + 1) // 2)

    def _prepare(self) -> None:
        """Start faulting in the next size's memory on a background thread (called under
        the lock once the ring is half full). A fresh allocation is mapped by the
        operating system page by page as it is first written, which for the larger sizes
        took longer than the growth itself (up to 0.1 s for 64 MB on a virtual machine):
        done here, a guarded call that grows the index only copies and re-buckets."""
        self._prepare_at = _SERIALS
        slots = min(self.capacity, self._slots * 2)
        thread = threading.Thread(target=self._fault_in, args=(slots,),
                                  name="aimsec-index-memory", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had (a limit on threads, shutting down):
            return  # the growth allocates, as without a spare
        self._preparing = thread

    def _fault_in(self, slots: int) -> None:
        """Allocate the packed state for ``slots`` and write each of its pages (zeros,
        with C's ``memset``: ctypes releases the GIL for it, so guarded calls go on), then
        offer it to the next growth (without taking the index's lock: see ``_spares``)."""
        try:
            packed = _aligned_zeros(self._words(slots))
            ctypes.memset(packed.ctypes.data, 0, packed.nbytes)
        except (MemoryError, ValueError):  # the growth allocates then, as without a spare
            return
        self._spares[slots] = packed
        if self._slots >= slots:  # grown to it meanwhile (after _allocate looked, or
            self._spares.pop(slots, None)  # before: then it took this one): not kept

    def _grow(self) -> None:
        """Double the slots (up to ``capacity``) and split each bucket of the table into
        the buckets its entries now fall in (the mask gains bits; an entry keeps its way,
        so none collides). Growing happens before the ring ever wraps, so serial ``i``
        stays in slot ``i``. Entries a crowded bucket had already dropped stay dropped."""
        slots = self._slots
        old = (self.fp_serial, self.fp_time, self.fp_client, self.fp_content, self.fp_hashes)
        old_table = self.table
        self._allocate(min(self.capacity, slots * 2))
        for new, previous in zip((self.fp_serial, self.fp_time, self.fp_client,
                                  self.fp_content, self.fp_hashes), old):
            new[:slots] = previous
        compiled = kernels.load()
        if compiled is not None:  # one pass, no temporaries the size of the table
            compiled.rebucket(old_table, self.table, np.int64(self._mask))
            return
        used = old_table != 0
        values = old_table[used]
        ways = np.nonzero(used)[1]
        hashes = values.view(np.uint32)[_LOW_HALF::2].astype(np.intp)
        self.table[hashes & self._mask, ways] = values


def _aligned_zeros(words: int, align: int = 64) -> np.ndarray:
    """A zeroed uint64 array of ``words`` whose data starts on an ``align``-byte boundary.

    numpy's allocator aligns to 16 bytes: a bucket of 8 entries (64 bytes) then straddles
    two cache lines, and every bucket read costs two memory accesses instead of one (the
    table starts :data:`_STATE_HEADER` words, 64 bytes, into the index's packed state)."""
    nbytes = words * 8
    raw = np.zeros(nbytes + align, dtype=np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + nbytes].view(np.uint64)


def _runs(ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a sorted non-empty array: the last index of each run of equal values, and the
    run lengths (slicing, not ``np.diff``'s padding, which costs more at this size)."""
    change = np.flatnonzero(ordered[1:] != ordered[:-1])
    ends = np.empty(len(change) + 1, dtype=np.int64)
    ends[:-1] = change
    ends[-1] = len(ordered) - 1
    counts = ends.copy()
    counts[1:] -= ends[:-1]
    counts[0] += 1
    return ends, counts
