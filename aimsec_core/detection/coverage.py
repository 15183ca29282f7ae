"""How far the false-positive rate on new clean data may stray from the calibrated one.

A threshold set on ``n`` clean scores, ``m`` of which exceed it, flags a new clean input
(exchangeable with those ``n``) with probability ``F``, itself random through the draw of
the calibration data: ``F ~ Beta(m + 1, n - m)`` (the distribution of an order statistic's
exceedance; the coverage result of split conformal prediction, Vovk et al. 2005;
Angelopoulos & Bates, "A gentle introduction to conformal prediction", 2021, sec. 3). On
the 44 clean samples of ``wine`` at a 5% target (2 exceeding) its central 95% interval is
1.4%-15.5%; on 1,000 samples (50 exceeding) 3.8%-6.5%.
"""

from __future__ import annotations

import math

import numpy as np


def fpr_interval(exceeding: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of ``Beta(exceeding + 1, n - exceeding)``: the range
    the false-positive rate on new clean data falls in with probability ``level``, for a
    threshold that ``exceeding`` of ``n`` calibration scores exceeded.

    ``ValueError`` unless ``0 <= exceeding < n`` and ``0 < level < 1``."""
    if not (0 <= exceeding < n) or not 0 < level < 1:
        raise ValueError(f"expected 0 <= exceeding < n and 0 < level < 1; received "
                         f"exceeding={exceeding}, n={n}, level={level}")
    tail = (1.0 - level) / 2
    return (_beta_quantile(tail, exceeding, n), _beta_quantile(1.0 - tail, exceeding, n))


def _beta_quantile(q: float, m: int, n: int) -> float:
    """The ``q`` quantile of ``Beta(m + 1, n - m)``, by bisection on its CDF, which for
    integer parameters is a binomial tail: ``P(F <= x) = P(Binomial(n, x) > m)``."""
    low, high = 0.0, 1.0
    for _ in range(60):  # 2^-60: below any rate a calibration can resolve
        middle = (low + high) / 2
        if 1.0 - _binomial_cdf(m, n, middle) < q:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _binomial_cdf(m: int, n: int, x: float) -> float:
    """``P(Binomial(n, x) <= m)``, summed in log space from the recurrence
    ``p(k + 1) = p(k) (n - k) / (k + 1) x / (1 - x)`` (exact for any ``n``)."""
    if x <= 0.0:
        return 1.0
    if x >= 1.0:
        return 1.0 if m >= n else 0.0
    k = np.arange(m, dtype=np.float64)
    steps = np.log((n - k) / (k + 1)) + (math.log(x) - math.log1p(-x))
    log_pmf = n * math.log1p(-x) + np.concatenate(([0.0], np.cumsum(steps)))
    top = log_pmf.max()
    return min(1.0, math.exp(top) * float(np.exp(log_pmf - top).sum()))
