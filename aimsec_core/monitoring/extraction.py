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
from collections import OrderedDict, deque
from collections.abc import Hashable
from typing import Any

import numpy as np

from . import kernels
from .shapiro import shapiro_w

TEST_EVERY = 50  #: queries between two tests of one client (default)
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


class _ClassState:
    """One client's queries of one predicted class: PRADA's growing set."""

    __slots__ = ("members", "count", "distances", "total", "squares", "threshold")

    def __init__(self, size: int, width: int) -> None:
        self.members = np.empty((size, width), np.float32)  #: a ring of the set's queries
        self.count = 0  #: queries ever added (the ring holds the last ``size``)
        self.distances: deque[float] = deque(maxlen=size)  #: the members' distances
        self.total = self.squares = 0.0  #: sum and sum of squares of ``distances``
        self.threshold = 0.0


class _ClientState:
    __slots__ = ("classes", "distances", "since_test", "width", "last_w")

    def __init__(self, width: int, window: int) -> None:
        self.width = width  #: of the client's inputs (a new width starts over)
        self.classes: OrderedDict[Hashable, _ClassState] = OrderedDict()
        self.distances: deque[float] = deque(maxlen=window)
        self.since_test = 0
        self.last_w: float | None = None


class ExtractionTracker:
    """PRADA statistics for the clients of one model (in this process)."""

    def __init__(self, *, window: int = 200, min_queries: int = 100, delta: float = 0.9,
                 set_size: int = 64, clients: int = 1024, test_every: int = TEST_EVERY) -> None:
        self.window, self.min_queries, self.delta = window, min_queries, delta
        self.test_every = test_every
        self.set_size, self.max_clients = set_size, clients
        self._clients: OrderedDict[str, _ClientState] = OrderedDict()
        self._lock = threading.Lock()
        self._seed = int.from_bytes(os.urandom(8), "little")
        self._positions: dict[int, np.ndarray] = {}  #: width -> positions kept

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
        class's threshold at infinity).
        """
        width = samples.shape[1]
        x = kernels.kernel_array(samples if width <= MAX_WIDTH else self._kept(samples),
                                 np.float64)
        compiled = kernels.load()
        join = distance_and_join if compiled is None else compiled.distance_and_join
        with self._lock:
            state = self._clients.get(client)
            if state is None or state.width != width:
                state = self._clients[client] = _ClientState(width, self.window)
                if len(self._clients) > self.max_clients:
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(client)
            for row, label in zip(x, classes):
                self._learn(state, row, label, join)
            if state.since_test >= self.test_every and len(state.distances) >= self.min_queries:
                state.since_test = 0
                state.last_w = _shapiro(np.fromiter(state.distances, dtype=np.float64))
                if state.last_w is not None and state.last_w < self.delta:
                    return state.last_w
        return None

    def _learn(self, state: _ClientState, row: np.ndarray, label: Hashable,
               join: Any) -> None:
        group = state.classes.get(label)
        if group is None:
            if len(state.classes) >= MAX_CLASSES:
                state.classes.popitem(last=False)
            group = state.classes[label] = _ClassState(self.set_size, len(row))
        else:
            state.classes.move_to_end(label)
        count = group.count
        threshold = group.threshold
        distance = join(group.members, count, row, threshold)  # stores row if it joins
        if count:
            if distance == 0.0:  # an exact repeat teaches an attacker nothing: not counted
                return
            state.distances.append(distance)
            state.since_test += 1
            if distance <= threshold:
                return
            ring = group.distances
            if len(ring) == ring.maxlen:
                evicted = ring[0]
                group.total -= evicted
                group.squares -= evicted * evicted
            ring.append(distance)
            group.total += distance
            group.squares += distance * distance
            mean = group.total / len(ring)
            std = max(0.0, group.squares / len(ring) - mean * mean) ** 0.5
            group.threshold = max(threshold, mean - std)
        group.count = count + 1


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
    # mean and std as numpy's methods compute them (the same sums), without their
    # Python-level overhead
    centred = distances - np.add.reduce(distances) / len(distances)
    std = math.sqrt(np.add.reduce(centred * centred) / len(distances))
    if std > 0:
        distances = distances[np.abs(centred) <= 3 * std]
    if len(distances) < 3 or distances.max() == distances.min():
        return 0.0 if len(distances) >= 3 else None  # identical distances: not natural
    return shapiro_w(distances)
