"""The Shapiro-Wilk W statistic with its coefficients computed once per sample size.

The extraction check tests the same window size again and again; ``scipy.stats.shapiro``
recomputes the coefficients and wraps every call (tens of microseconds), so W is computed
here as one sorted dot product. The coefficients are Royston's approximation, the one
``scipy.stats.shapiro`` uses (Royston, "Approximating the Shapiro-Wilk W-test for
non-normality", Statistics and Computing 2(3), 1992; algorithm AS R94, Applied Statistics
44(4), 1995); the test suite checks W against scipy's.
"""

from __future__ import annotations

import math
import threading
from statistics import NormalDist

import numpy as np

#: Royston's polynomials in 1/sqrt(n) for the two outermost coefficients (AS R94)
_C1 = (0.0, 0.221157, -0.147981, -2.071190, 4.434685, -2.706056)
_C2 = (0.0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633)
_MAX_CACHED = 512
_cache: dict[int, np.ndarray] = {}
_lock = threading.Lock()


def _polynomial(coefficients: tuple[float, ...], x: float) -> float:
    return sum(c * x ** i for i, c in enumerate(coefficients))


def coefficients(n: int) -> np.ndarray:
    """The ``n // 2`` positive coefficients a_n, a_(n-1), ... for ``n >= 3`` samples."""
    found = _cache.get(n)
    if found is not None:
        return found
    half = n // 2
    if n == 3:
        a = np.array([math.sqrt(0.5)])
    else:
        inverse = NormalDist().inv_cdf
        m = np.array([-inverse((i + 1 - 0.375) / (n + 0.25)) for i in range(half)])
        squares = 2.0 * float(m @ m)
        root = math.sqrt(squares)
        u = 1.0 / math.sqrt(n)
        a = np.empty(half)
        a[0] = m[0] / root + _polynomial(_C1, u)
        if n > 5:
            a[1] = m[1] / root + _polynomial(_C2, u)
            scale = math.sqrt((squares - 2 * m[0] ** 2 - 2 * m[1] ** 2)
                              / (1 - 2 * a[0] ** 2 - 2 * a[1] ** 2))
            a[2:] = m[2:] / scale
        else:
            scale = math.sqrt((squares - 2 * m[0] ** 2) / (1 - 2 * a[0] ** 2))
            a[1:] = m[1:] / scale
    with _lock:
        if len(_cache) < _MAX_CACHED:
            _cache[n] = a
    return a


def shapiro_w(values: np.ndarray) -> float:
    """W of ``values`` (1-D float, at least 3, not all equal): near 1 for a normal
    sample, lower the less normal it looks. Raises ``ValueError`` for fewer than 3."""
    n = len(values)
    if n < 3:
        raise ValueError(f"the Shapiro-Wilk W needs at least 3 values; received {n}")
    y = np.sort(values)
    a = coefficients(n)
    half = len(a)
    numerator = float(a @ (y[:n - half - 1:-1] - y[:half]))
    centred = y - y.mean()
    return min(1.0, numerator * numerator / float(centred @ centred))
