"""Hostile settings, clocks and traffic against the in-process store and its counters."""

from __future__ import annotations

import numpy as np
import pytest

import aimsec_core
from aimsec_core import ClientBlockedError, RateLimitedError
from aimsec_core.adapter import HostArrays
from aimsec_core.compat.protector import AIModelProtector
from aimsec_core.errors import ConfigurationError, SecurityViolation
from aimsec_core.guard import Guard
from aimsec_core.monitoring import build_monitor
from aimsec_core.monitoring.analysis import RequestStats
from aimsec_core.monitoring.memory import MemoryStore

YEARS = 5 * 365 * 86400.0


def _guard(clock, sink, **policy):
    return Guard(None, HostArrays(None), name="m", sinks=[sink], clock=clock, policy=policy,
                 store=MemoryStore(secret=b"s" * 32), constraints={"max_value": 1.0})


def _call(guard, who, x):
    with aimsec_core.client(who):
        return guard.call({"input": x}, lambda: None)


def test_a_window_beyond_any_float_is_read_as_the_horizon(clock):
    monitor = build_monitor("m", {}, None, clock)
    assert monitor.request_analysis(10**400)["window_minutes"] == 24 * 60


@pytest.mark.parametrize("key", ["session_timeout", "near_duplicate_ttl",
                                 "min_request_interval", "store_timeout"])
def test_an_integer_beyond_any_float_is_a_configuration_error(clock, key):
    with pytest.raises(ConfigurationError, match=key):
        build_monitor("m", {key: 10**400}, None, clock)


@pytest.mark.parametrize("key", ["max_failed_attempts", "max_requests_per_minute",
                                 "max_repeats"])
def test_counts_past_what_the_store_can_hold_are_a_configuration_error(clock, key):
    with pytest.raises(ConfigurationError, match=key):
        build_monitor("m", {key: 2**63}, None, clock)


@pytest.mark.parametrize("key, largest", [("near_duplicate_max_fingerprints", 10**7),
                                          ("extraction_window", 5_000)])
def test_sizes_past_their_bound_are_a_configuration_error(clock, key, largest):
    build_monitor("m", {key: largest}, None, clock)
    with pytest.raises(ConfigurationError, match=key):
        build_monitor("m", {key: largest + 1}, None, clock)


def test_a_protector_policy_that_is_not_a_dict_is_a_configuration_error():
    with pytest.raises(ConfigurationError):
        AIModelProtector("m", policy=[1])  # type: ignore[arg-type]


def test_a_clock_set_back_after_a_jump_ahead_does_not_lock_clients_out_for_years(clock,
                                                                                  sink):
    guard = _guard(clock, sink, min_request_interval=1.0, max_requests_per_minute=3,
                   max_failed_attempts=2, session_timeout=60)
    rng = np.random.default_rng(0)
    clock.advance(YEARS)  # a clock running years ahead, then corrected
    for _ in range(3):
        _call(guard, "a", rng.random((1, 4)))
        clock.advance(1)
    with pytest.raises(RateLimitedError):
        _call(guard, "a", rng.random((1, 4)))
    for _ in range(3):  # out of range: failed attempts, then the lockout
        try:
            _call(guard, "b", np.full((1, 4), 5.0))
        except SecurityViolation:
            pass
    clock.advance(-YEARS)
    for who in ("a", "b"):
        with pytest.raises(SecurityViolation) as refused:
            _call(guard, who, rng.random((1, 4)))
        assert refused.value.retry_after <= 60  # never longer than a window or a lockout
    clock.advance(61)
    _call(guard, "a", rng.random((1, 4)))
    _call(guard, "b", rng.random((1, 4)))


def test_a_clock_set_back_does_not_extend_an_exact_repeat_window(clock, sink):
    guard = _guard(clock, sink, max_repeats=1, repeat_window=60)
    x = np.full((1, 4), 0.5)
    clock.advance(YEARS)
    _call(guard, "a", x)
    clock.advance(-YEARS)
    clock.advance(61)
    _call(guard, "a", x)  # the count started again: the window cannot outlast 60 s


def test_a_guard_refusing_into_a_lockout_keeps_its_lockout_exact(clock, sink):
    guard = _guard(clock, sink, max_failed_attempts=2, session_timeout=60)
    for _ in range(2):
        with pytest.raises(SecurityViolation):
            _call(guard, "b", np.full((1, 4), 5.0))
    with pytest.raises(ClientBlockedError) as blocked:
        _call(guard, "b", np.full((1, 4), 0.5))
    assert blocked.value.retry_after == 60


def test_request_counters_keep_bounded_detail_over_a_day_of_rotating_ids():
    stats = RequestStats()
    now = 1_700_000_000.0
    calls = 0
    for minute in range(90):  # 90 minutes of 5,000 distinct clients and inputs each
        for i in range(5000):
            stats.record(now + minute * 60 + i * 0.01, f"client-{minute}-{i}",
                         f"{minute:04d}{i:060d}", False, ())
            calls += 1
    report = stats.report(now + 90 * 60, 24 * 60, 5)
    assert report["total_requests"] == calls  # totals stay exact
    detail = sum(len(m.clients) + len(m.inputs) for m in stats._minutes)
    assert detail <= stats.detail_budget
    assert report["unique_inputs"] <= stats.detail_budget
    assert len(report["top_clients"]) == 10  # the recent minutes keep their detail
