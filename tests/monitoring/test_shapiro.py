"""The Shapiro-Wilk W behind PRADA's test gives scipy's statistic."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from aimsec_core.monitoring.shapiro import coefficients, shapiro_w

scipy_stats = pytest.importorskip("scipy.stats")

SHAPES = {
    "normal": lambda rng, n: rng.normal(size=n),
    "uniform": lambda rng, n: rng.uniform(size=n),
    "exponential": lambda rng, n: rng.exponential(size=n),
    "student t, 2 dof": lambda rng, n: rng.standard_t(2, size=n),
    "lognormal": lambda rng, n: rng.lognormal(sigma=1.5, size=n),
    "rounded": lambda rng, n: np.round(rng.normal(size=n) * 3),  # ties
    "two clusters": lambda rng, n: rng.normal(size=n) + 6 * (rng.random(n) < 0.3),
}


@settings(max_examples=120, deadline=None)
@given(n=st.integers(20, 5000), shape=st.sampled_from(sorted(SHAPES)),
       seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([1e-3, 1.0, 250.0, 1e6]),
       shift=st.sampled_from([0.0, -40.0, 1e4]))
def test_w_is_scipys_statistic(n, shape, seed, scale, shift):
    x = SHAPES[shape](np.random.default_rng(seed), n) * scale + shift
    assert shapiro_w(x) == pytest.approx(scipy_stats.shapiro(x).statistic, abs=1e-7)


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(np.float64, st.integers(3, 60),
                  elements=st.floats(-1e6, 1e6, allow_nan=False, width=32)))
def test_w_is_scipys_statistic_on_arbitrary_small_samples(x):
    if np.ptp(x) == 0:
        assert math.isnan(shapiro_w(x))  # W is undefined for equal values
        return
    # scipy gives no W below a range of 1e-19 (its "range zero" warning); W is defined
    assume(np.ptp(x) > 1e-19)
    assert shapiro_w(x) == pytest.approx(scipy_stats.shapiro(x).statistic, abs=1e-7)


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 50, 51, 5000])
def test_coefficients_are_antisymmetric_with_unit_length(n):
    a = coefficients(n)
    assert a.shape == (n,) and np.all(np.diff(a) >= 0)
    np.testing.assert_array_equal(a, -a[::-1])
    assert float(a @ a) == pytest.approx(1.0, abs=1e-12)


def test_w_does_not_depend_on_order_or_shift_and_is_one_for_normal_scores():
    rng = np.random.default_rng(0)
    x = rng.exponential(size=300)
    assert shapiro_w(x) == shapiro_w(rng.permutation(x))
    assert shapiro_w(x) == pytest.approx(shapiro_w(x + 1e3), abs=1e-12)
    assert shapiro_w(coefficients(300)) == pytest.approx(1.0)  # W of a itself


def test_fewer_than_three_values_are_refused():
    with pytest.raises(ValueError, match="at least 3"):
        shapiro_w(np.array([1.0, 2.0]))


def test_extreme_magnitudes_give_the_same_w_and_infinities_nan():
    # 1e200 squared overflowed: a raw OverflowError; subnormal values gave NaN
    x = np.random.default_rng(1).normal(size=50)
    w = shapiro_w(x)
    for scale in (1e200, 1e-310):
        assert shapiro_w(x * scale) == pytest.approx(w, abs=1e-9)
    for bad in (np.inf, -np.inf, np.nan):
        assert math.isnan(shapiro_w(np.append(x, bad)))
    assert math.isnan(shapiro_w(np.zeros(5)))
