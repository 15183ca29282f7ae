"""Model-extraction detection: PRADA's test on each client's query distances.

Juuti, Szyller, Marchal, Asokan, "PRADA: Protecting against DNN Model Stealing Attacks",
EuroS&P 2019. Per client and predicted class, a growing set of queries; each new query's
minimum L2 distance to its class's set is recorded, and the query joins the set when that
distance exceeds the class's running threshold ``max(old, mean - std)`` of the distances of
the set's members. Natural queries give minimum distances that look normally distributed;
synthetic probes (random perturbations around a few seeds, Jacobian-based augmentation)
do not. Every ``test_every`` queries (default 50), once ``min_queries`` distances exist,
the Shapiro-Wilk W of the most recent ``window`` of them (3-sigma outliers removed) is
computed; W below ``delta`` (0.9 in the reference implementation) flags the client. W is
scipy's (``scipy.stats.shapiro``, Royston's algorithm); testing every query, as PRADA
does, would cost a guarded call about 50 us more, while a flag that comes up to
``test_every`` queries late changes little against an attack of hundreds of queries.

The class comes from the model's answer, so a query is judged after the model ran; the
suspicion this raises refuses the client's next calls. State is bounded: ``set_size``
queries per class, ``window`` distances and the ``clients`` most recently seen clients.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Hashable
from typing import Any

import numpy as np


TEST_EVERY = 50  #: queries between two tests of one client (default)


class _ClientState:
    __slots__ = ("sets", "counts", "members", "sums", "thresholds", "distances",
                 "since_test", "width", "last_w")

    def __init__(self, width: int, window: int) -> None:
        self.width = width
        self.sets: dict[Hashable, np.ndarray] = {}
        self.counts: dict[Hashable, int] = {}
        self.members: dict[Hashable, deque[float]] = {}
        self.sums: dict[Hashable, tuple[float, float]] = {}  # of members: sum, squares
        self.thresholds: dict[Hashable, float] = {}
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

    def statistic(self, client: str) -> float | None:
        """The client's latest Shapiro-Wilk W (``None`` before its first test)."""
        with self._lock:
            state = self._clients.get(client)
            return None if state is None else state.last_w

    def observe(self, client: str, samples: np.ndarray, classes: list[Any]) -> float | None:
        """Learn from ``samples`` ((n, d) float) that the model labelled ``classes``.

        Returns the Shapiro-Wilk W when a test ran and fell below ``delta``, else ``None``.
        """
        x = np.asarray(samples, dtype=np.float32)
        with self._lock:
            state = self._clients.get(client)
            if state is None or state.width != x.shape[1]:
                state = self._clients[client] = _ClientState(x.shape[1], self.window)
                if len(self._clients) > self.max_clients:
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(client)
            for row, label in zip(x, classes):
                self._learn(state, row, label)
            if state.since_test >= self.test_every and len(state.distances) >= self.min_queries:
                state.since_test = 0
                state.last_w = _shapiro(np.fromiter(state.distances, dtype=np.float64))
                if state.last_w is not None and state.last_w < self.delta:
                    return state.last_w
        return None

    def _learn(self, state: _ClientState, row: np.ndarray, label: Hashable) -> None:
        members = state.sets.get(label)
        if members is None:
            if len(state.sets) >= 1024:  # labels come from the model; still bounded
                return
            state.sets[label] = members = np.empty((self.set_size, state.width), np.float32)
            state.counts[label] = 0
            state.members[label] = deque(maxlen=self.set_size)
            state.thresholds[label] = 0.0
        count = state.counts[label]
        if count:
            stored = members[:min(count, self.set_size)]
            diff = stored - row
            distance = math.sqrt(float(np.einsum("ij,ij->i", diff, diff).min()))
            if distance == 0.0:  # an exact repeat teaches an attacker nothing: not counted
                return
            state.distances.append(distance)
            state.since_test += 1
            if distance <= state.thresholds[label]:
                return
            members_d = state.members[label]
            total, squares = state.sums.get(label, (0.0, 0.0))
            if len(members_d) == members_d.maxlen:
                evicted = members_d[0]
                total, squares = total - evicted, squares - evicted * evicted
            members_d.append(distance)
            total, squares = total + distance, squares + distance * distance
            state.sums[label] = (total, squares)
            mean = total / len(members_d)
            std = max(0.0, squares / len(members_d) - mean * mean) ** 0.5
            state.thresholds[label] = max(state.thresholds[label], mean - std)
        members[count % self.set_size] = row
        state.counts[label] = count + 1


def _shapiro(distances: np.ndarray) -> float | None:
    from scipy.stats import shapiro

    mean, std = distances.mean(), distances.std()
    if std > 0:
        distances = distances[np.abs(distances - mean) <= 3 * std]
    if len(distances) < 3 or np.ptp(distances) == 0:
        return 0.0 if len(distances) >= 3 else None  # identical distances: not natural
    return float(shapiro(distances).statistic)
