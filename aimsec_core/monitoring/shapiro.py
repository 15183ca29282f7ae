"""The Shapiro-Wilk W statistic, with Royston's approximation of its coefficients.

Shapiro and Wilk, "An analysis of variance test for normality (complete samples)",
Biometrika 52 (1965): for a sample ``x`` of size ``n`` sorted ascending,
``W = (sum_i a_i x_(i))^2 / sum_i (x_i - mean)^2`` with coefficients ``a`` from the
expected normal order statistics. The coefficients follow Royston, "Approximating the
Shapiro-Wilk W-test for non-normality", Statistics and Computing 2 (1992), as in his
algorithm AS R94 (Applied Statistics 44, 1995):

- ``m_i = Phi^-1((i - 3/8) / (n + 1/4))``, ``c = m / |m|``, ``u = n^-1/2``;
- ``a_n = c_n + 0.221157 u - 0.147981 u^2 - 2.071190 u^3 + 4.434685 u^4 - 2.706056 u^5``
  and, for ``n > 5``, ``a_(n-1) = c_(n-1) + 0.042981 u - 0.293762 u^2 - 1.752461 u^3
  + 5.682633 u^4 - 3.582633 u^5``;
- the others ``a_i = m_i / sqrt(eps)``, where ``eps`` makes ``sum a_i^2 = 1``;
  ``a_1 = -a_n``, ``a_2 = -a_(n-1)``; for ``n = 3``, ``a = (-sqrt(1/2), 0, sqrt(1/2))``.

Only W is computed (PRADA compares it with a threshold), not its p-value. W agrees with
``scipy.stats.shapiro``'s statistic to about 1e-9 (a test checks sizes 3 to 5,000). The
coefficients depend on ``n`` only and are kept for the last few sizes, so a test of a
few hundred values costs a sort and two dot products (and needs no scipy).
"""

from __future__ import annotations

import math
import sys
import threading
from statistics import NormalDist

import numpy as np

from ..forks import renew_after_fork

_KEPT = 32  #: sample sizes whose coefficients are kept (an extraction window's sizes vary
#: by the few outliers removed before each test)
_AN = (0.221157, -0.147981, -2.071190, 4.434685, -2.706056)  #: a_n's polynomial in u
_AN1 = (0.042981, -0.293762, -1.752461, 5.682633, -3.582633)  #: a_(n-1)'s
_cache: dict[int, np.ndarray] = {}
_lock = threading.Lock()
renew_after_fork(sys.modules[__name__])  # a child forked while a thread held it


def shapiro_w(x: np.ndarray) -> float:
    """Shapiro-Wilk W of ``x`` ((n,) real, n >= 3, not all equal) as a float in (0, 1].

    Raises ``ValueError`` for fewer than three values; NaN when they are all equal (W is
    undefined) or any is NaN or infinite. Any finite magnitudes are fine (W is
    scale-invariant: values past 1e150, or all within 1e-150, are divided by the
    largest first).
    """
    values = np.sort(np.asarray(x, dtype=np.float64).ravel())
    n = len(values)
    if n < 3:
        raise ValueError(f"Shapiro-Wilk W needs at least 3 values; received {n}")
    scale = max(abs(float(values[0])), abs(float(values[-1])))  # NaN sorts last
    if not math.isfinite(scale) or math.isnan(values[-1]):
        return math.nan
    if scale == 0.0:
        return math.nan  # all zero
    if not 1e-150 < scale < 1e150:  # their squares would overflow or underflow
        values = values / scale
    a = coefficients(n)
    centred = values - np.add.reduce(values) / n  # W is shift-invariant (sum a_i = 0)
    spread = float(centred @ centred)
    if not spread > 0:
        return math.nan
    return min(1.0, float(a @ centred) ** 2 / spread)


def coefficients(n: int) -> np.ndarray:
    """Royston's Shapiro-Wilk coefficients ``a`` for ``n >= 3`` values ((n,) float64,
    ascending: ``a_i = -a_(n+1-i)``, unit length), kept for the last :data:`_KEPT`
    sizes; read-only."""
    found = _cache.get(n)
    if found is not None:
        return found
    a = _coefficients(n)
    a.flags.writeable = False
    with _lock:
        if len(_cache) >= _KEPT:
            _cache.clear()
        _cache[n] = a
    return a


def _coefficients(n: int) -> np.ndarray:
    half = n // 2
    a = np.zeros(n)
    if n == 3:
        a[-1] = math.sqrt(0.5)
    else:
        # the upper half of the expected normal order statistics (m_(n+1-i) = -m_i);
        # Phi^-1 is Wichura's AS 241 (the standard library's), to double precision
        quantile = NormalDist().inv_cdf
        m = np.array([quantile((i - 0.375) / (n + 0.25)) for i in range(n - half + 1, n + 1)])
        squares = 2.0 * float(m @ m)  # m'm over all n (the middle one is 0 for odd n)
        u = 1.0 / math.sqrt(n)
        c = m / math.sqrt(squares)
        upper = a[n - half:]  # a view: a_(n - half + 1) .. a_n
        upper[-1] = c[-1] + _poly(_AN, u)
        kept = 1
        if n > 5:
            upper[-2] = c[-2] + _poly(_AN1, u)
            kept = 2
        rest = (squares - 2.0 * float(m[-kept:] @ m[-kept:])) / (
            1.0 - 2.0 * float(upper[-kept:] @ upper[-kept:]))
        upper[:-kept] = m[:-kept] / math.sqrt(rest)
    a[:half] = -a[n - half:][::-1]
    return a


def _poly(coefficients: tuple[float, ...], u: float) -> float:
    """``sum_k coefficients[k] * u^(k+1)``."""
    total = 0.0
    for value in reversed(coefficients):
        total = (total + value) * u
    return total
