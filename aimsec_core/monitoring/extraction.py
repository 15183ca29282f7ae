"""Model-extraction detection: PRADA's test on each client's query distances.

Juuti, Szyller, Marchal, Asokan, "PRADA: Protecting against DNN Model Stealing Attacks",
EuroS&P 2019. Per client and predicted class, a growing set of queries; each new query's
minimum L2 distance to its class's set is recorded, and the query joins the set when that
distance exceeds the class's running threshold ``max(old, mean - std)`` of the distances of
the set's members. Natural queries give minimum distances that look normally distributed;
synthetic probes (random perturbations around a few seeds, Jacobian-based augmentation)
do not. Every ``test_every`` queries (default 50), once ``min_queries`` distances exist,
the Shapiro-Wilk W of the most recent ``window`` of them (3-sigma outliers removed) is
computed; W below ``delta`` (0.9 in the reference implementation) flags the client. W
uses Royston's coefficients (:mod:`.shapiro`, the statistic of ``scipy.stats.shapiro``);
testing every query, as PRADA does, would cost a guarded call a few microseconds more,
while a flag that comes up to ``test_every`` queries late changes little against an
attack of hundreds of queries.

The class comes from the model's answer, so a query is judged after the model ran; the
suspicion this raises refuses the client's next calls. State is bounded: ``set_size``
queries per class of at most :data:`MAX_WIDTH` values each, :data:`MAX_CLASSES` classes
and ``window`` distances per client, and the ``clients`` most recently seen clients.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import numpy as np

from ..forks import renew_after_fork
from . import kernels
from .shapiro import coefficients, shapiro_w

TEST_EVERY = 50  #: queries between two tests of one client (default)
_FLOAT64 = np.dtype(np.float64)
#: Stored queries are float32; values past its range (and NaN, where the policy lets it
#: through) take the nearest bound, so every distance stays finite.
_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Values of a query kept for its distances: wider inputs keep this many of their
#: positions, chosen at random (with a seed of this process, so a client cannot know
#: which) once per width. Squared distances over a random subset of positions estimate
#: the full ones up to a constant factor, which the test (normality of the minimum
#: distances) does not see; memory and time per query stay bounded for any input size.
MAX_WIDTH = 128
#: Predicted classes whose sets one client keeps (the least recently used goes first):
#: with the width bound, at most 16 x set_size x 128 x 4 bytes (512 KB at the default
#: set size) per client.
MAX_CLASSES = 16


#: Columns of a client's per-class table (float64; counts stay exact below 2^53).
COUNT, THRESHOLD, TOTAL, SQUARES, APPENDED = range(5)


class _ClientState:
    """One client's PRADA state, in arrays the compiled step updates in place.

    Per predicted class (a slot of the first axis): a growing set of queries (a ring of
    ``set_size`` rows of ``members``), the distances of the set's members (a ring in
    ``class_distances``, their sum and sum of squares in ``classes``) and the running
    threshold; per client: the most recent ``window`` minimum distances (a ring in
    ``distances``; ``ring`` holds how many were ever appended and how many since the last
    test)."""

    __slots__ = ("width", "labels", "members", "classes", "class_distances", "distances",
                 "ring", "last_w", "packed")

    def __init__(self, width: int, kept: int, window: int, set_size: int) -> None:
        self.width = width  #: of the client's inputs (a new width starts over)
        #: predicted class -> its slot, least recently used first
        self.labels: OrderedDict[Hashable, int] = OrderedDict()
        #: (slots, set_size, kept) float32: grows by doubling up to MAX_CLASSES slots
        self.members = np.zeros((1, set_size, kept), np.float32)
        #: the arrays below, views of one (the PRADA step's one argument for them)
        self.packed = np.zeros(MAX_CLASSES * (5 + set_size) + window + 2, np.float64)
        (self.classes,  #: (MAX_CLASSES, 5): columns COUNT ... APPENDED
         self.class_distances,  #: (MAX_CLASSES, set_size)
         self.distances,  #: (window,)
         self.ring,  #: (2,) int64: distances ever appended, since the last test
         ) = unpack(self.packed, set_size)
        self.last_w: float | None = None

    def slot(self, label: Hashable) -> int | None:
        """The slot of ``label``'s class, made when new; ``None`` when making it needs
        the least recently used class's slot (:meth:`evict` first)."""
        labels = self.labels
        slot = labels.get(label)
        if slot is not None:
            labels.move_to_end(label)
            return slot
        if len(labels) >= MAX_CLASSES:
            return None
        slot = labels[label] = len(labels)
        if slot >= len(self.members):
            grown = np.zeros((min(MAX_CLASSES, 2 * len(self.members)),
                              *self.members.shape[1:]), np.float32)
            grown[:len(self.members)] = self.members
            self.members = grown
        return slot

    def evict(self, label: Hashable) -> int:
        """Give the least recently used class's slot to ``label``, starting it empty."""
        _, slot = self.labels.popitem(last=False)
        self.classes[slot] = 0.0
        self.labels[label] = slot
        return slot

    def recent(self) -> np.ndarray:
        """The client's most recent minimum distances, oldest first ((<= window,))."""
        appended, size = int(self.ring[0]), len(self.distances)
        if appended <= size:
            return self.distances[:appended].copy()
        start = appended % size
        return np.concatenate((self.distances[start:], self.distances[:start]))


class ExtractionTracker:
    """PRADA statistics for the clients of one model (in this process)."""

    def __init__(self, *, window: int = 200, min_queries: int = 100, delta: float = 0.9,
                 set_size: int = 64, clients: int = 1024, test_every: int = TEST_EVERY) -> None:
        self.window, self.min_queries, self.delta = window, min_queries, delta
        self.test_every = test_every
        self.set_size, self.max_clients = set_size, clients
        self._clients: OrderedDict[str, _ClientState] = OrderedDict()
        self._lock = threading.Lock()
        renew_after_fork(self)  # a child forked while a thread held it
        self._seed = int.from_bytes(os.urandom(8), "little")
        self._positions: dict[int, np.ndarray] = {}  #: width -> positions kept
        self._one = np.zeros(1, np.int64)  #: the slot of a one-row call (under the lock)
        self._sample = np.empty(0, np.float64)  #: the compiled test's working copy

    def _kept(self, samples: np.ndarray) -> np.ndarray:
        """``samples`` reduced to at most :data:`MAX_WIDTH` of their positions."""
        width = samples.shape[1]
        if width <= MAX_WIDTH:
            return samples
        positions = self._positions.get(width)
        if positions is None:
            rng = np.random.default_rng([self._seed, width])
            positions = np.sort(rng.choice(width, MAX_WIDTH, replace=False))
            if len(self._positions) < 64:
                self._positions[width] = positions
        return samples[:, positions]

    def statistic(self, client: str) -> float | None:
        """The client's latest Shapiro-Wilk W (``None`` before its first test)."""
        with self._lock:
            state = self._clients.get(client)
            return None if state is None else state.last_w

    def observe(self, client: str, samples: np.ndarray, classes: list[Any]) -> float | None:
        """Learn from ``samples`` ((n, d) float) that the model labelled ``classes``.

        Returns the Shapiro-Wilk W when a test ran and fell below ``delta``, else ``None``.
        Values past float32's range, and NaN, count as float32's largest magnitude: a
        distance to them is large and finite (an infinite or NaN one would make every
        test in whose window it lies return NaN, which flags nothing, and freeze the
        class's threshold at infinity). Raises ``ValueError`` unless ``classes`` has one
        class per row (the compiled step reads one slot per row, unchecked).
        """
        if len(classes) != len(samples):
            raise ValueError(f"one class per sample expected: {len(samples)} samples, "
                             f"{len(classes)} classes")
        width = samples.shape[1]
        x = samples
        if not (width <= MAX_WIDTH and type(x) is np.ndarray and x.dtype is _FLOAT64
                and x.flags.carray):  # carray: C order, aligned, writable
            x = kernels.kernel_array(x if width <= MAX_WIDTH else self._kept(x), np.float64)
        compiled = kernels.load()
        learn = learn_rows if compiled is None else compiled.learn_rows
        with self._lock:
            state = self._clients.get(client)
            if state is None or state.width != width:
                state = self._clients[client] = _ClientState(
                    width, x.shape[1], self.window, self.set_size)
                self._clients.move_to_end(client)  # a new width: a new state, the newest
                if len(self._clients) > self.max_clients:
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(client)
            slot = None
            if len(classes) == 1:  # the slot of its class (state.slot, inline when known)
                label = classes[0]
                slot = state.labels.get(label)
                if slot is None:
                    slot = state.slot(label)
                else:
                    state.labels.move_to_end(label)
            if slot is not None:
                one = self._one
                one[0] = slot
                since_test = learn(x, one, state.members, state.packed)
            else:
                since_test = self._learn_batch(state, x, classes, learn)
            if (since_test >= self.test_every
                    and min(state.ring[0], self.window) >= self.min_queries):
                state.ring[1] = 0
                state.last_w = (_shapiro(state.recent()) if compiled is None
                                else self._shapiro_compiled(compiled, state))
                if state.last_w is not None and state.last_w < self.delta:
                    return state.last_w
        return None

    def _shapiro_compiled(self, compiled: Any, state: _ClientState) -> float | None:
        """:func:`_shapiro` of the client's recent distances, in two compiled passes
        (the same W to rounding: the sums run in another order)."""
        if len(self._sample) < len(state.distances):
            self._sample = np.empty(len(state.distances), np.float64)
        n = compiled.prada_sample(state.distances, int(state.ring[0]), self._sample)
        if n < 3 or self._sample[0] == self._sample[n - 1]:
            return 0.0 if n >= 3 else None
        return compiled.shapiro_sorted(self._sample[:n], coefficients(n))

    @staticmethod
    def _learn_batch(state: _ClientState, x: np.ndarray, classes: list[Any],
                     learn: Any) -> int:
        """The rows of a batch in order, in runs between the evictions of a class;
        returns the distances recorded since the last test."""
        start, slots = 0, []
        for i, label in enumerate(classes):
            slot = state.slot(label)
            if slot is None:  # the rows before it learn from the class it replaces
                learn(x[start:i], np.array(slots, np.int64), state.members, state.packed)
                start, slots = i, []
                slot = state.evict(label)
            slots.append(slot)
        return learn(x[start:], np.array(slots, np.int64), state.members, state.packed)


def unpack(packed: np.ndarray, set_size: int) -> tuple[np.ndarray, ...]:
    """A client's per-class table ((MAX_CLASSES, 5)), the distances of each class's
    members ((MAX_CLASSES, set_size)), its recent distances ((window,)) and their ring
    counters ((2,) int64): views of ``packed`` ((MAX_CLASSES * (5 + set_size) + window +
    2,) float64), in which the compiled kernel reads them the same way."""
    table, members_end = MAX_CLASSES * 5, MAX_CLASSES * (5 + set_size)
    return (packed[:table].reshape(MAX_CLASSES, 5),
            packed[table:members_end].reshape(MAX_CLASSES, set_size),
            packed[members_end:-2], packed[-2:].view(np.int64))


def learn_rows(x: np.ndarray, slots: np.ndarray, members: np.ndarray,
               packed: np.ndarray) -> int:
    """PRADA's step for each row of ``x`` ((n, d) float64) in turn, whose predicted class
    has slot ``slots[i]`` ((n,) int64); the numpy form of the compiled kernel. The arrays
    are those of :class:`_ClientState` (``packed`` holds the others: :func:`unpack`),
    updated in place; returns the distances recorded since the last test (``ring[1]``).

    The row's least L2 distance to its class's set (:func:`distance_and_join`) joins the
    client's distances, unless the set was empty or the row repeats a member exactly (a
    repeat teaches an attacker nothing); when it exceeds the class's threshold, the row
    joins the set, the distance joins the members' distances, and the threshold becomes
    ``max(old, mean - std)`` of those."""
    classes, class_distances, distances, ring = unpack(packed, members.shape[1])
    set_size, window = members.shape[1], len(distances)
    for row, slot in zip(x, slots.tolist()):
        state = classes[slot]
        count, threshold = int(state[COUNT]), float(state[THRESHOLD])
        distance = distance_and_join(members[slot], count, row, threshold)
        if count and distance == 0.0:
            continue
        if count:
            distances[ring[0] % window] = distance
            ring += 1
            if distance <= threshold:
                continue
            appended = int(state[APPENDED])
            if appended >= set_size:
                evicted = class_distances[slot, appended % set_size]
                state[TOTAL] -= evicted
                state[SQUARES] -= evicted * evicted
            class_distances[slot, appended % set_size] = distance
            state[APPENDED] = appended + 1
            state[TOTAL] += distance
            state[SQUARES] += distance * distance
            length = min(appended + 1, set_size)
            mean = state[TOTAL] / length
            std = max(0.0, state[SQUARES] / length - mean * mean) ** 0.5
            state[THRESHOLD] = max(threshold, mean - std)
        state[COUNT] = count + 1
    return int(ring[1])


def distance_and_join(members: np.ndarray, count: int, row: np.ndarray,
                      threshold: float) -> float:
    """PRADA's step for one query of one class (the numpy form of the compiled kernel):
    the least L2 distance from ``row`` ((d,) float64, rounded to float32; values past
    float32's range and NaN take its largest magnitude) to the first
    ``min(count, len(members))`` of ``members`` ((m, d) float32), summed in float64:
    finite for any values; -1.0 when ``count`` is 0. The query joins the set, as row
    ``count % m``, when ``count`` is 0 or the distance exceeds ``threshold``."""
    query = np.fmin(row, _FLOAT32_MAX)  # NaN becomes the bound too
    query = np.fmax(query, -_FLOAT32_MAX, out=query).astype(np.float32)
    distance = -1.0
    if count:
        diff = members[:min(count, len(members))].astype(np.float64) - query
        distance = math.sqrt(float(np.einsum("ij,ij->i", diff, diff).min()))
    if count == 0 or distance > threshold:
        members[count % len(members)] = query
    return distance


def _shapiro(distances: np.ndarray) -> float | None:
    """PRADA's test statistic: Shapiro-Wilk W of ``distances`` ((n,) float64) without
    their 3-sigma outliers; 0.0 when the rest are all equal (not natural), ``None`` when
    fewer than three remain."""
    # mean and std as numpy's methods compute them (the same sums), without their
    # Python-level overhead
    centred = distances - np.add.reduce(distances) / len(distances)
    std = math.sqrt(np.add.reduce(centred * centred) / len(distances))
    if std > 0:
        distances = distances[np.abs(centred) <= 3 * std]
    if len(distances) < 3 or distances.max() == distances.min():
        return 0.0 if len(distances) >= 3 else None  # identical distances: not natural
    return shapiro_w(distances)
