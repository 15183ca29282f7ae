"""The Redis store against hostile input and unlucky operations, on a real redis-server:
a flushed server, settings at the edge of their range, names Redis cannot encode,
something else answering the URL, URLs that do not say what they seem to."""

from __future__ import annotations

import numpy as np
import pytest
import redis

import aimsec_core
from aimsec_core import ConfigurationError, QueryAttackError, StoreUnavailableError
from aimsec_core.guard import Guard
from aimsec_core.monitoring.redis_store import RedisStore
from aimsec_core.monitoring.policy import Policy
from aimsec_core.monitoring.store import StoreError, open_store
from aimsec_core.registry import adapter_for
from tests.cases import digits
from tests.conftest import ListSink
from tests.servers import answering_server


def _guard(model, clock, store, sink=None, mode="enforce", name="digits", **policy):
    # a loaded machine may take longer than the default 50 ms for a round trip: the
    # tests about outages stop the server (refused at once) or name their timeout
    policy.setdefault("store_timeout", 5.0)
    adapter = adapter_for(model)
    return adapter.wrap(Guard(model, adapter, name=name, mode=mode,
                              sinks=[sink if sink is not None else ListSink()],
                              clock=clock, policy=policy, store=store))


def _step(row: np.ndarray) -> np.ndarray:
    out = row.copy()
    out[0, 27:30] = np.clip(out[0, 27:30] + 0.25, 0, 1)
    return out


def test_replicas_agree_on_the_secret_after_the_server_is_flushed(redis_server,
                                                                   digits_model, clock):
    # FLUSHALL (or eviction of the secret key) without a dropped connection: a replica
    # kept its old secret while one started afterwards wrote a new one, so their
    # fingerprints never matched again and an attack split across them went unseen
    first = _guard(digits_model, clock, redis_server.url)
    x = digits()[0]
    with aimsec_core.client("a"):
        first.predict(x[100:101])  # scripts and secret loaded
    admin = redis.Redis(port=redis_server.port)
    admin.flushall()
    admin.close()
    second = _guard(digits_model, clock, redis_server.url)
    clock.advance(1)
    with aimsec_core.client("acct-1"):
        second.predict(x[5:6])
    clock.advance(1)
    with aimsec_core.client("acct-2"), pytest.raises(QueryAttackError):
        first.predict(_step(x[5:6]))


@pytest.mark.parametrize("setting", ["session_timeout", "failure_window", "repeat_window",
                                     "near_duplicate_ttl", "min_request_interval"])
def test_long_but_valid_durations_work_on_redis(redis_server, digits_model, clock, setting):
    # 1e300 s passes validation (and works in memory), but Redis' EXPIRE / SET EX took
    # no such number: every round trip failed, and a buffered failure carrying it kept
    # failing every later one, so the store looked down for good
    sink = ListSink()
    policy = {setting: 1e300, "max_failed_attempts": 1, "max_repeats": 2,
              "store_failure": "fail_closed", "store_timeout": 10.0}  # a loaded machine
    guarded = _guard(digits_model, clock, redis_server.url, sink, **policy)
    x = digits()[0]
    with aimsec_core.client("c"):
        guarded.predict(x[:1])
        clock.advance(1)
        if setting == "min_request_interval":
            with pytest.raises(aimsec_core.SecurityViolation):
                guarded.predict(x[1:2])
            checks = [("min_interval",)]
        else:
            guarded.predict(x[:1])  # a repeat, counted
            clock.advance(1)
            guarded.predict(x[40:41])
            clock.advance(1)
            with pytest.raises(QueryAttackError):
                guarded.predict(_step(x[40:41]))  # its own near-duplicate: a failure
            clock.advance(1)
            with pytest.raises(aimsec_core.ClientBlockedError):
                guarded.predict(x[60:61])  # locked out
            checks = [(), (), ("near_duplicate",), ("lockout",)]
    assert [e.verdict.checks for e in sink.events][1:] == checks


def test_a_model_name_redis_cannot_encode_is_served(redis_server, digits_model, clock):
    # a lone surrogate in the name (from a decoded file name, or a name a tenant chose)
    # reached the key encoder and raised a raw UnicodeEncodeError out of every call
    guarded = _guard(digits_model, clock, redis_server.url, name="model-\udcff")
    x = digits()[0]
    with aimsec_core.client("c"):
        guarded.predict(x[:1])
    assert guarded.last_verdict.clean


def test_long_or_odd_model_names_keep_to_their_own_bounded_keys(redis_server, digits_model,
                                                                clock):
    long_name = "m" * 100_000
    guarded = _guard(digits_model, clock, redis_server.url, name=long_name,
                     max_requests_per_minute=5)
    x = digits()[0]
    with aimsec_core.client("c"):
        guarded.predict(x[:1])
    admin = redis.Redis(port=redis_server.port)
    try:
        assert max(len(k) for k in admin.keys("*")) < 200
    finally:
        admin.close()


@pytest.mark.parametrize("reply", [b"+OK\r\n", b":1\r\n", b"*1\r\n$2\r\nhi\r\n",
                                   b"%1\r\n+a\r\n+b\r\n"])
def test_a_server_answering_redis_shaped_nonsense_applies_the_failure_policy(
        digits_model, clock, reply):
    # replies in Redis' protocol but of shapes the client does not expect (another
    # service, a proxy) raised raw AttributeError / TypeError out of the guarded call
    server = answering_server(reply)
    try:
        url = f"redis://127.0.0.1:{server.getsockname()[1]}/0"
        guarded = _guard(digits_model, clock, url, store_failure="fail_closed",
                         max_requests_per_minute=10)
        with aimsec_core.client("c"), pytest.raises(StoreUnavailableError):
            guarded.predict(digits()[0][:1])
    finally:
        server.close()


@pytest.mark.parametrize("path", ["/abc", "/1/2", "/0x1", "/-1", "/ 1"])
def test_a_redis_url_whose_path_is_not_a_database_number_is_refused(path):
    # redis-py ignores a path it cannot read as a number (state silently in db 0) and
    # reads "/1/2" as db 12
    with pytest.raises(ConfigurationError) as caught:
        open_store(f"redis://:hunter2@127.0.0.1:6379{path}")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379", "redis://127.0.0.1:6379/",
                                 "redis://127.0.0.1:6379/15", "redis://127.0.0.1?db=3"])
def test_a_redis_url_with_a_database_number_or_none_is_accepted(url):
    assert isinstance(open_store(url), RedisStore)


@pytest.mark.parametrize("url, why", [
    # redis-py reads the query's db over the path's: the URL read as db 0, the state
    # went to db 3
    ("redis://:hunter2@127.0.0.1/0?db=3", "database is given twice"),
    ("redis://:hunter2@127.0.0.1?db=1&db=2", "database is given twice"),
    # redis-py reads port 0 as 6379: another server than the URL names
    ("redis://:hunter2@127.0.0.1:0/0", "port 0"),
])
def test_a_redis_url_redis_py_would_read_as_another_is_refused(url, why):
    with pytest.raises(ConfigurationError, match=why) as caught:
        open_store(url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("url", ["redis://127.0.0.1/0?db=3", "redis://127.0.0.1:0",
                                 "redis://127.0.0.1/abc"])
def test_the_alert_groups_redis_url_is_checked_the_same_way(url):
    from aimsec_core.alerts.state import RedisGroupState

    with pytest.raises(ConfigurationError):
        RedisGroupState.from_url(url)


@pytest.mark.parametrize("url", ["redis://user:pa/ss@127.0.0.1:6379/0",
                                 "redis://pa/ss@127.0.0.1:6379/0"])
def test_a_password_that_splits_the_url_is_not_echoed(url):
    # an unescaped "/" in the password makes the rest of it look like the URL's path
    with pytest.raises(ConfigurationError) as caught:
        open_store(url)
    assert "ss@" not in str(caught.value) and "pa/" not in str(caught.value)


def _losing_one_reply(store: RedisStore) -> list[int]:
    """Make the store's next round trip run on the server and then fail as a timeout
    would (the reply lost); returns a list that counts the round trips."""
    run, trips, lost = store._run, [], [False]

    def run_then_lose(build):
        trips.append(1)
        replies = run(build)
        if not lost[0]:
            lost[0] = True
            raise StoreError("TimeoutError: the reply did not come in time")
        return replies

    store._run = run_then_lose
    return trips


def test_failures_sent_again_after_a_lost_reply_count_once(redis_server, clock):
    # the buffered failures went out with a round trip that ran on the server but whose
    # reply timed out; kept for the next round trip, they were counted twice there, so a
    # client was locked out after fewer refused calls than max_failed_attempts
    rules = Policy.coerce({"max_failed_attempts": 3}).rules
    store = RedisStore(redis_server.url, timeout=2.0)
    now = clock()
    for _ in range(2):
        store.record_failure("m", "client", now, rules)
    trips = _losing_one_reply(store)
    with pytest.raises(StoreError):
        store.flush()  # applied on the server; the reply lost
    store.flush()  # what was buffered is sent again
    assert len(trips) == 2
    assert store.admit("m", "client", now + 1, rules, lockout=True).locked_for is None
    store.record_failure("m", "client", now + 2, rules)  # the third: locked out now
    store.flush()
    assert store.admit("m", "client", now + 3, rules, lockout=True).locked_for > 0
    store.close()


def test_failures_buffered_through_a_long_outage_are_bounded():
    # refused calls served on local state during an outage are buffered for Redis too;
    # the buffer had no bound (an hour of refused calls held millions of failures, and
    # the first round trip after the outage sent them all in one script, which timed
    # out and was put back whole, so nothing was ever sent again)
    from aimsec_core.monitoring.redis_store import PENDING_FAILURES

    rules = Policy.coerce({"max_failed_attempts": 3}).rules
    store = RedisStore("redis://127.0.0.1:1/0")  # never reached: record_failure buffers
    for i in range(3 * PENDING_FAILURES):
        store.record_failure("m", f"client{i}", float(i), rules)
    keys, args = store._take_pending()
    assert len(keys) == 2 * PENDING_FAILURES and args[0] == PENDING_FAILURES
    assert keys[-2].endswith(f"client{3 * PENDING_FAILURES - 1}:failed")  # the newest kept
    store.record_failure("m", "late", 0.0, rules)
    store._restore_pending((keys, args))  # a round trip failed: kept, within the bound
    keys, args = store._take_pending()
    assert len(keys) == 2 * PENDING_FAILURES and args[0] == PENDING_FAILURES
    assert len(args) == 1 + 5 * PENDING_FAILURES
    assert keys[-2].endswith("late:failed")


@pytest.mark.parametrize("fraction", [0.0, 0.12344, 0.12346, 0.5, 0.99999999])
def test_the_failure_that_began_a_lockout_does_not_count_again_at_any_time(redis_server,
                                                                          fraction):
    # the lost reply carried the lockout itself; sent again, the failures that made it
    # must not count towards the next one. The lockout's end was stored as Lua's tostring
    # (14 significant digits), so the start read back from it could fall just before the
    # failure that began it, which then counted again
    rules = Policy.coerce({"max_failed_attempts": 2, "session_timeout": 10}).rules
    store = RedisStore(redis_server.url, timeout=2.0)
    now = 1_700_000_000 + fraction
    store.record_failure("m", "client", now - 1, rules)
    store.record_failure("m", "client", now, rules)
    _losing_one_reply(store)
    with pytest.raises(StoreError):
        store.flush()
    store.flush()
    assert store.admit("m", "client", now + 1, rules, lockout=True).locked_for > 0
    after = now + 11  # the lockout is over: one new failure is one, not two
    assert store.admit("m", "client", after, rules, lockout=True).locked_for is None
    store.record_failure("m", "client", after, rules)
    store.flush()
    assert store.admit("m", "client", after + 1, rules, lockout=True).locked_for is None
    store.close()


YEARS = 5 * 365 * 86400.0


def _hosted(redis_server, clock, **policy):
    from aimsec_core.adapter import HostArrays

    policy.setdefault("store_timeout", 5.0)
    return Guard(None, HostArrays(None), name="m", sinks=[ListSink()], clock=clock,
                 policy=policy, store=redis_server.url, constraints={"max_value": 1.0})


def _hosted_call(guard, who, x):
    with aimsec_core.client(who):
        return guard.call({"input": x}, lambda: None)


def test_a_clock_set_back_after_a_jump_ahead_does_not_refuse_clients_for_years_on_redis(
        redis_server, clock):
    # the memory store's test, on Redis: the lock's end, the last call's time and the
    # quota's entries were kept as the clock had read them, so once it was set back a
    # client was refused with a Retry-After of years (and, on a clock that does not run
    # on by itself, for as long)
    guard = _hosted(redis_server, clock, min_request_interval=1.0, max_requests_per_minute=3,
                    max_failed_attempts=2, session_timeout=60)
    rng = np.random.default_rng(0)
    clock.advance(YEARS)  # a clock running years ahead, then corrected
    for _ in range(3):
        _hosted_call(guard, "a", rng.random((1, 4)))
        clock.advance(1)
    with pytest.raises(aimsec_core.RateLimitedError):
        _hosted_call(guard, "a", rng.random((1, 4)))
    for _ in range(3):  # out of range: failed attempts, then the lockout
        try:
            _hosted_call(guard, "b", np.full((1, 4), 5.0))
        except aimsec_core.SecurityViolation:
            pass
    clock.advance(-YEARS)
    for who in ("a", "b"):
        with pytest.raises(aimsec_core.SecurityViolation) as refused:
            _hosted_call(guard, who, rng.random((1, 4)))
        assert refused.value.retry_after <= 60  # never longer than a window or a lockout
    clock.advance(61)
    _hosted_call(guard, "a", rng.random((1, 4)))
    _hosted_call(guard, "b", rng.random((1, 4)))


def test_a_failure_stamped_by_a_clock_since_set_back_does_not_hide_later_ones(redis_server,
                                                                              clock):
    # the failures were ranked by time and the newest max_failed_attempts kept: one from
    # a clock that ran ahead stayed the newest, so the oldest kept was never within the
    # failure window of it and the client, failing on, was never locked out again
    rules = Policy.coerce({"max_failed_attempts": 3, "failure_window": 600}).rules
    store = RedisStore(redis_server.url, timeout=2.0)
    now = clock()
    store.record_failure("m", "client", now + YEARS, rules)
    store.flush()
    for i in range(3):
        store.record_failure("m", "client", now + i, rules)
    store.flush()
    assert store.admit("m", "client", now + 3, rules, lockout=True).locked_for is not None
    store.close()


def test_a_suspicion_set_by_a_clock_since_set_back_lasts_at_most_its_timeout(redis_server,
                                                                             clock):
    rules = Policy.coerce({"session_timeout": 60}).rules
    policy = Policy.coerce({})
    store = RedisStore(redis_server.url, timeout=2.0)
    now = clock()
    store.mark_suspect("m", "client", now + YEARS, now + YEARS + 60)
    store.flush()
    seen = store.observe("m", "client", now, rules, policy, "", None, 0)
    assert 0 < seen.suspect_for <= 60
    assert store.observe("m", "client", now + 61, rules, policy, "", None, 0).suspect_for \
        is None
    store.close()


def test_a_clock_set_back_during_an_outage_does_not_put_off_the_next_try(redis_server,
                                                                         clock):
    # the next try of a failed store was due store_retry after the failure as the clock
    # read it: set back a day, the store answering again was not tried for a day, and
    # under fail_closed every call was refused meanwhile
    guard = _hosted(redis_server, clock, store_failure="fail_closed", store_retry=1.0,
                    max_requests_per_minute=100)
    x = np.full((1, 4), 0.5)
    _hosted_call(guard, "a", x)
    redis_server.stop()
    clock.advance(YEARS)
    with pytest.raises(StoreUnavailableError):
        _hosted_call(guard, "a", x)
    redis_server.start()
    clock.advance(-YEARS)
    clock.advance(2)
    _hosted_call(guard, "a", x)
    assert guard.last_verdict.clean
