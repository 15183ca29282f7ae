"""What the compiled kernels cost grows no faster than their input allows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aimsec_core.monitoring import _compiled


class _CountingWrites:
    """A 1-D array as the kernel's Python form reads it, counting the values written."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values.tolist()
        self.shape = values.shape
        self.writes = 0

    def __getitem__(self, i: int) -> int:
        return self.values[i]

    def __setitem__(self, i: int, value: int) -> None:
        self.writes += 1
        self.values[i] = value


@pytest.mark.parametrize("order", ["random", "descending"])
def test_sorting_a_wide_rows_hashes_grows_as_n_log_n_not_n_squared(order):
    """A row's window hashes are sorted one per value of the row; with Ciura's gaps alone
    (none past 701) the sort grew as n^2 / 701, so a single row of 6 * 10^6 values took
    14 s to fingerprint and one of max_size values hours: a request that hangs the guard.
    Counted in values moved, on the kernel's Python form (no clock)."""
    n = 60_000
    values = (np.random.default_rng(0).integers(0, 2**32, n, dtype=np.uint32)
              if order == "random" else np.arange(n, 0, -1, dtype=np.uint32))
    counted = _CountingWrites(values)
    _compiled._sort.py_func(counted)
    assert counted.values == sorted(values.tolist())
    assert counted.writes <= 2 * n * math.log2(n)  # Ciura's alone: 2.6 and 3.2 million
