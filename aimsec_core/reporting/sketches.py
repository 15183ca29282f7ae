"""Bounded-memory summaries for streams of any length.

- :class:`LogHistogram` answers percentile queries over positive values (latencies) with a
  relative error of at most ``relative_error`` (1% by default), in a fixed number of bins,
  as DDSketch does (Masson, Rim & Lee, "DDSketch: a fast and fully-mergeable quantile
  sketch with relative-error guarantees", VLDB 2019): bin ``i`` holds values in
  ``[gamma^i, gamma^(i+1))`` with ``gamma = (1 + a) / (1 - a)``, and a bin is represented
  by ``2 gamma^(i+1) / (gamma + 1)``, which is within ``a`` of every value it holds.
- :class:`HeavyHitters` counts the most frequent keys (top clients) with the Misra-Gries
  algorithm (Misra & Gries, "Finding repeated elements", 1982): at most ``capacity`` keys
  are kept; counts are exact while no more than ``capacity`` distinct keys were seen, and
  otherwise undercount by at most ``error_bound`` (total / (capacity + 1)).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class LogHistogram:
    """Percentiles of positive values within ``relative_error``, in bounded memory.

    Values at or below ``smallest`` (zero and negative ones too) count as ``smallest``,
    values above ``largest`` as ``largest``: the guarantee holds between the two.
    """

    def __init__(self, relative_error: float = 0.01, smallest: float = 1e-4,
                 largest: float = 1e7) -> None:
        if not 0 < relative_error < 1:
            raise ValueError(f"relative_error must be in (0, 1); received {relative_error}")
        self.relative_error = relative_error
        self.gamma = (1 + relative_error) / (1 - relative_error)
        self._log_gamma = math.log(self.gamma)
        self.smallest, self.largest = smallest, largest
        self._offset = math.floor(math.log(smallest) / self._log_gamma)
        self.counts = [0] * (math.floor(math.log(largest) / self._log_gamma)
                             - self._offset + 1)
        self.total = 0
        self.maximum = 0.0

    def add(self, value: float) -> None:
        if value > self.maximum:
            self.maximum = value
        if value <= self.smallest:
            index = 0
        elif value >= self.largest:
            index = len(self.counts) - 1
        else:
            index = math.floor(math.log(value) / self._log_gamma) - self._offset
        self.counts[index] += 1
        self.total += 1

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (0 ≤ q ≤ 1), ``None`` when nothing was added."""
        if self.total == 0:
            return None
        rank = q * (self.total - 1)
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen > rank:
                return min(2 * self.gamma ** (index + self._offset + 1) / (self.gamma + 1),
                           self.maximum)
        return self.maximum  # pragma: no cover (rank < total)


class HeavyHitters(Generic[K]):
    """The most frequent keys of a stream (Misra-Gries), keeping at most ``capacity``."""

    def __init__(self, capacity: int = 1024) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1; received {capacity}")
        self.capacity = capacity
        self.counts: dict[K, int] = {}
        self.total = 0
        self._subtracted = 0  # how much every surviving count may have lost

    @property
    def exact(self) -> bool:
        """True while no key was ever evicted: every count is then exact."""
        return self._subtracted == 0

    @property
    def error_bound(self) -> int:
        """The most any reported count can fall short of the true count."""
        return self._subtracted

    def add(self, key: K, count: int = 1) -> None:
        self.total += count
        if key in self.counts:
            self.counts[key] += count
            return
        self.counts[key] = count
        if len(self.counts) > self.capacity:
            self._shrink()

    def _shrink(self) -> None:
        # Subtract the smallest count from every key (Misra-Gries' decrement, batched):
        # at least one key leaves, and the decrement is paid for by the increments it undoes.
        floor = min(self.counts.values())
        self._subtracted += floor
        self.counts = {k: c - floor for k, c in self.counts.items() if c > floor}

    def top(self, n: int) -> list[tuple[K, int]]:
        """The ``n`` keys with the largest counts, largest first (ties by key order)."""
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:n]

    def update(self, keys: Iterable[K]) -> None:
        for key in keys:
            self.add(key)
