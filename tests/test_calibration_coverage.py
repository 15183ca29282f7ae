"""The interval of the false-positive rate new clean data will see, from how many
calibration samples the threshold flagged (``detection/coverage.py``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aimsec_core
from aimsec_core.detection.coverage import fpr_interval
from tests.cases import digits


@given(n=st.integers(1, 20_000), share=st.floats(0, 0.999), level=st.floats(0.5, 0.995))
@settings(max_examples=60, deadline=None)
def test_interval_is_the_beta_quantiles(n, share, level):
    scipy_stats = pytest.importorskip("scipy.stats")
    m = min(n - 1, int(share * n))
    low, high = fpr_interval(m, n, level)
    tail = (1 - level) / 2
    expected = scipy_stats.beta.ppf([tail, 1 - tail], m + 1, n - m)
    np.testing.assert_allclose([low, high], expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("m", "n", "level"), [(-1, 10, 0.95), (10, 10, 0.95), (0, 0, 0.95),
                                               (1, 10, 1.0), (1, 10, 0.0)])
def test_interval_refuses_impossible_counts(m, n, level):
    with pytest.raises(ValueError, match="expected 0 <= exceeding < n"):
        fpr_interval(m, n, level)


def test_the_interval_covers_the_rate_on_new_clean_data():
    """Over many calibrations of 60 samples, the rate on a large clean set lands inside
    the 95% interval about 95% of the time (here: at least 85 of 100 draws)."""
    rng = np.random.default_rng(0)
    inside = 0
    for _ in range(100):
        calibration = rng.normal(size=60)
        threshold = np.quantile(calibration, 0.95, method="higher")
        m = int((calibration > threshold).sum())
        low, high = fpr_interval(m, 60)
        new_rate = float((rng.normal(size=20_000) > threshold).mean())
        inside += low <= new_rate <= high
    assert inside >= 85


def _model():
    from sklearn.linear_model import LogisticRegression

    x, y = digits()
    return LogisticRegression(max_iter=300).fit(x[:600], y[:600]), x


def test_small_calibrations_warn_and_report_their_interval():
    model, x = _model()
    guarded = aimsec_core.guard(model, sinks=[])
    with pytest.warns(UserWarning, match=r"calibrated on 60 clean samples.*95% interval"):
        calibration = guarded.calibrate(x[600:660], detectors=["margin", "density"])
    low, high = calibration.fpr_interval
    assert 0 < low < calibration.suite.fpr_target < high
    assert calibration.summary()["fpr_interval"] == [round(low, 6), round(high, 6)]


def test_large_calibrations_do_not_warn():
    model, x = _model()
    guarded = aimsec_core.guard(model, sinks=[])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        calibration = guarded.calibrate(x[600:1100], detectors=["margin", "density"])
    low, high = calibration.fpr_interval
    assert high < 2 * calibration.suite.fpr_target


@pytest.mark.parametrize(("m", "n"), [(70_000, 1_400_000), (70_000, 70_001), (5, 2**40),
                                      (2**39, 2**40), (2**40 - 2, 2**40 - 1)])
def test_interval_of_huge_counts_is_quick_and_close(m, n):
    """Counts past what a sum over every term handles (a file's counts are untrusted:
    2**40 samples took a 4 TiB allocation) give the Beta quantiles in constant time."""
    scipy_stats = pytest.importorskip("scipy.stats")
    low, high = fpr_interval(m, n)
    expected = scipy_stats.beta.ppf([0.025, 0.975], m + 1, n - m)
    np.testing.assert_allclose([low, high], expected, rtol=1e-6, atol=1e-12)
