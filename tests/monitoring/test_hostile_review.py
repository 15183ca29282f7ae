"""Hostile settings, windows and clocks found in review: each was accepted silently or
ended in a raw traceback."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import aimsec_core
from aimsec_core.adapter import HostArrays
from aimsec_core.errors import ConfigurationError
from aimsec_core.guard import Guard
from aimsec_core.monitoring.memory import MemoryStore
from aimsec_core.monitoring.policy import Policy


def _guard(clock, sink, store=None, **policy):
    policy.setdefault("store_timeout", 5.0)  # a loaded machine: no round trip timed out
    return Guard(None, HostArrays(None), name="m", sinks=[sink], clock=clock, policy=policy,
                 store=store or MemoryStore(secret=b"s" * 32))


def _call(guard, who, x):
    with aimsec_core.client(who):
        return guard.call({"input": x}, lambda: None)


@pytest.mark.parametrize("value", [False, 0.0, np.False_])
def test_a_quota_that_is_not_an_integer_is_refused_even_when_it_equals_zero(value):
    # False and 0.0 compared equal to 0 and silently meant "no rate limit"
    with pytest.raises(ConfigurationError, match="max_requests_per_minute.*received"):
        Policy.coerce({"max_requests_per_minute": value})
    with pytest.raises(ConfigurationError, match="max_requests_per_minute"):
        Policy.coerce({"tiers": {"t": {"max_requests_per_minute": value}}})


def test_zero_and_none_still_mean_no_quota():
    assert Policy.coerce({"max_requests_per_minute": 0}).rules.max_requests_per_minute is None
    assert Policy.coerce({"max_requests_per_minute": np.int64(0)}
                         ).rules.max_requests_per_minute is None
    policy = Policy.coerce({"max_requests_per_minute": 5,
                            "tiers": {"t": {"max_requests_per_minute": None}}})
    assert policy.rules_for("t").max_requests_per_minute is None


@pytest.mark.parametrize("tiers", [0, "", False, [], ()])
def test_tiers_that_are_not_a_mapping_are_refused_even_when_empty(tiers):
    # a falsy value of any type was read as "no tiers"
    with pytest.raises(ConfigurationError, match="tiers.*received"):
        Policy.coerce({"tiers": tiers})


def test_no_tiers_is_none_or_an_empty_dict():
    assert Policy.coerce({"tiers": None}).tiers == {}
    assert Policy.coerce({"tiers": {}}).tiers == {}


@pytest.mark.parametrize("window", [1e-300, 5e-324, 0.5, np.float32(1e-45), Fraction(1, 3)])
def test_a_window_shorter_than_a_minute_reads_one_minute(clock, sink, window):
    # the counters resolve minutes: a window of 1e-300 minutes reported the current
    # minute's calls at a rate of 10^10 a minute, np.float32(1e-45) none at all
    guard = _guard(clock, sink)
    for i in range(3):
        _call(guard, "a", np.full((1, 4), float(i)))
    report = guard.monitor.request_analysis(window)
    assert report["window_minutes"] == 1.0 and type(report["window_minutes"]) is float
    assert report["total_requests"] == 3 and report["request_rate"] == 3.0


@pytest.mark.parametrize("window", [np.float16(60), np.float32(60), Fraction(60), 60])
def test_a_window_of_any_real_type_is_read_as_a_float(clock, sink, window):
    # np.float16(60) made the window's start overflow float16: a raw ValueError (NaN)
    guard = _guard(clock, sink)
    _call(guard, "a", np.ones((1, 4)))
    report = guard.monitor.request_analysis(window)
    assert report["window_minutes"] == 60.0 and type(report["window_minutes"]) is float
    assert report["total_requests"] == 1


class _NumpyClock:
    """A clock reading numpy scalars (a time computed with numpy)."""

    def __init__(self, kind: type) -> None:
        self.kind, self.now = kind, 1_700_000_000

    def __call__(self):
        return self.kind(self.now)


@pytest.mark.parametrize("kind", [np.float64, np.int64])
def test_a_clock_reading_numpy_scalars_works_on_redis(redis_server, sink, kind):
    # numpy 2 writes repr(np.float64(t)) as 'np.float64(t)': every Redis script failed on
    # it, so the store looked down for good (every call refused under fail_closed)
    clock = _NumpyClock(kind)
    guard = _guard(clock, sink, store=redis_server.url, max_requests_per_minute=2,
                   max_failed_attempts=1, store_failure="fail_closed")
    for i in range(2):
        _call(guard, "a", np.full((1, 4), float(i)))
    with pytest.raises(aimsec_core.RateLimitedError):
        _call(guard, "a", np.full((1, 4), 5.0))
    clock.now += 1
    with pytest.raises(aimsec_core.ClientBlockedError):  # the failure reached Redis
        _call(guard, "a", np.full((1, 4), 6.0))
    report = guard.monitor.request_analysis()
    assert "store_unavailable" not in report["findings"]
    assert report["active_suspicions"][0]["check"] == "lockout"


def test_a_clock_reading_float32_reports_its_lockouts(clock, sink):
    # datetime refused np.float32 times: a raw TypeError ended the call that was locked out
    clock32 = _NumpyClock(np.float32)
    guard = _guard(clock32, sink, max_failed_attempts=1, watch_anonymous=True,
                   max_requests_per_minute=1)
    _call(guard, "a", np.ones((1, 4)))
    for error in (aimsec_core.RateLimitedError, aimsec_core.ClientBlockedError):
        with pytest.raises(error):
            _call(guard, "a", np.ones((1, 4)))
    assert guard.monitor.request_analysis()["active_suspicions"][0]["client"] == "a"


@pytest.mark.parametrize("settings", [{"extraction_clients": 10**30},
                                      {"extraction_clients": 10**6},
                                      {"extraction_set_size": 65_536},
                                      {"extraction_clients": 4096, "extraction_set_size": 1024}])
def test_extraction_state_that_could_outgrow_memory_is_refused(settings):
    # each tracked client may hold set_size queries of 128 values for 16 classes (512 KB
    # at the default 64): a million clients, or 1,024 at the largest set size, let ids
    # rotating through the extraction check claim hundreds of gigabytes
    with pytest.raises(ConfigurationError,
                       match="extraction_clients.*extraction_set_size.*received"):
        Policy.coerce(settings)


@pytest.mark.parametrize("settings", [{}, {"extraction_clients": 32_768},
                                      {"extraction_clients": 32, "extraction_set_size": 65_536}])
def test_extraction_state_within_its_budget_is_accepted(settings):
    Policy.coerce(settings)


@pytest.mark.parametrize("every", [201, 2**63, 10**30])
def test_tests_further_apart_than_the_window_are_refused(every):
    # accepted: a client's distances between two tests left the window untested (and
    # 2**63 never tested anyone while extraction was on)
    with pytest.raises(ConfigurationError, match="extraction_test_every.*extraction_window"):
        Policy.coerce({"extraction_test_every": every})
    Policy.coerce({"extraction_test_every": 200})


@pytest.mark.parametrize("timeout", [1e10, 1e308, 3601])
def test_a_store_timeout_no_socket_can_wait_is_refused(timeout):
    # accepted, then every call on Redis ended in a raw OverflowError (time_t)
    with pytest.raises(ConfigurationError, match="store_timeout.*received"):
        Policy.coerce({"store_timeout": timeout})


def test_the_longest_store_timeout_works_on_redis(redis_server, clock, sink):
    guard = _guard(clock, sink, store=redis_server.url, store_timeout=3600,
                   store_failure="fail_closed")
    _call(guard, "a", np.ones((1, 4)))
    assert sink.outcomes == ["allowed"]


@pytest.mark.parametrize("settings", [
    {"near_duplicate_max_fingerprints": 10**7, "near_duplicate_hashes": 4096},
    {"near_duplicate_max_fingerprints": 10**6, "near_duplicate_hashes": 501}])
def test_a_fingerprint_index_that_could_outgrow_memory_is_refused(settings):
    # 10^7 fingerprints of 4,096 hashes: a terabyte of index in memory; on Redis its
    # bucket count overflowed uint32 and every call ended in a raw OverflowError
    with pytest.raises(ConfigurationError,
                       match="near_duplicate_max_fingerprints.*near_duplicate_hashes.*received"):
        Policy.coerce(settings)


@pytest.mark.parametrize("settings", [{}, {"near_duplicate_max_fingerprints": 10**7},
                                      {"near_duplicate_max_fingerprints": 100_000,
                                       "near_duplicate_hashes": 4096}])
def test_a_fingerprint_index_within_its_budget_is_accepted(settings):
    Policy.coerce(settings)


def test_failures_refused_during_an_outage_reach_redis_when_it_answers(redis_server, clock,
                                                                       sink):
    # refused during a fail_open outage, a client's failed attempts were counted in this
    # process's memory only: once Redis answered again its lockout was forgotten, here
    # and on every other replica
    def guard():
        return Guard(None, HostArrays(None), name="m", sinks=[sink], clock=clock,
                     store=redis_server.url, constraints={"max_value": 1.0},
                     policy={"max_failed_attempts": 3, "store_retry": 5.0,
                             "store_timeout": 10.0})  # a loaded machine: no timeout

    first, second = guard(), guard()
    _call(first, "a", np.zeros((1, 4)))  # connected
    redis_server.stop()
    for _ in range(3):
        clock.advance(1)
        with pytest.raises(aimsec_core.ValueRangeError):
            _call(first, "a", np.full((1, 4), 2.0))
    redis_server.start()
    clock.advance(10)  # past store_retry: the shared store is used again
    with pytest.raises(aimsec_core.ClientBlockedError):
        _call(first, "a", np.zeros((1, 4)))
    with pytest.raises(aimsec_core.ClientBlockedError):
        _call(second, "a", np.zeros((1, 4)))


def test_a_batch_of_many_hashed_rows_is_observed_in_slices_of_bounded_hashes(redis_server,
                                                                           clock, sink):
    # slices were 64 rows whatever the hashes per row: at 4,096 hashes one script held
    # the server for about 3 s, past every replica's store_timeout
    import redis

    from aimsec_core.monitoring.redis_store import RedisStore
    from tests.monitoring.test_redis import CountingConnection

    pool = redis.ConnectionPool(connection_class=CountingConnection, host="127.0.0.1",
                                port=redis_server.port, socket_timeout=5)
    store = RedisStore(redis_server.url, connection_pool=pool)
    guard = _guard(clock, sink, store=store, near_duplicate_hashes=500,
                   near_duplicate_window=2, near_duplicate_max_fingerprints=1000)
    rows = 10.0 ** np.random.default_rng(0).uniform(-3, 30, (20, 2048))
    _call(guard, "a", rows[:1])  # scripts and secret loaded
    before = CountingConnection.sent
    _call(guard, "a", rows[1:])
    assert CountingConnection.sent - before == 1 + 4  # admission, 19 rows by 6 (3,000 hashes)


def test_long_client_ids_sharing_their_start_stay_two_clients_in_reports(clock, sink):
    # ids were cut to their first 200 characters for findings and request_analysis: two
    # clients whose ids share them (a long common prefix) were counted as one, under
    # the name of a third id that is that prefix itself
    guard = _guard(clock, sink, max_requests_per_minute=1)
    prefix = "org-7/" + "x" * 194
    ids = [prefix, prefix + "/user-1", prefix + "/user-2"]
    for who in ids:
        _call(guard, who, np.ones((1, 4)))
    with pytest.raises(aimsec_core.RateLimitedError) as refused:
        _call(guard, ids[1], np.ones((1, 4)))
    report = guard.monitor.request_analysis()
    named = [c["client"] for c in report["top_clients"]]
    assert len(set(named)) == 3 and prefix in named
    assert all(len(name) <= 200 for name in named)
    (reason,) = [f.reason for f in refused.value.verdict.findings]
    one = next(name for name in named if name != prefix and name in reason)
    assert report["rate_per_client"][one] == 2.0 / 60
