"""Monitoring state shared through a real redis-server: replicas, round trips, outages."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
import redis

import aimsec_core
from aimsec_core import QueryAttackError, RateLimitedError, StoreUnavailableError
from aimsec_core.guard import Guard
from aimsec_core.monitoring.redis_store import RedisStore
from aimsec_core.registry import adapter_for
from tests.cases import digits
from tests.conftest import ListSink
from tests.servers import answering_server
from tests.monitoring import replica


class CountingConnection(redis.connection.Connection):
    """Counts round trips: one per command or pipeline written to the socket."""

    sent = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.sent += 1
        return super().send_packed_command(command, check_health)


def _guard(model, clock, store, sink=None, mode="enforce", **policy):
    # a loaded machine may take longer than the default 50 ms for a round trip: the
    # tests about outages stop the server (refused at once) or name their timeout
    policy.setdefault("store_timeout", 5.0)
    adapter = adapter_for(model)
    return adapter.wrap(Guard(model, adapter, name="digits", mode=mode,
                              sinks=[sink if sink is not None else ListSink()],
                              clock=clock, policy=policy, store=store))


def test_a_guarded_call_costs_at_most_two_round_trips(redis_server, digits_model, clock):
    pool = redis.ConnectionPool(connection_class=CountingConnection, host="127.0.0.1",
                                port=redis_server.port, socket_timeout=0.5)
    store = RedisStore(redis_server.url, connection_pool=pool)
    guarded = _guard(digits_model, clock, store, mode="enforce", max_requests_per_minute=1000,
                     min_request_interval=0.01, max_failed_attempts=100, max_repeats=1)
    x = digits()[0]
    refused = 0
    with aimsec_core.client("counted"):
        guarded.predict(x[:1])  # the first call also loads the scripts and the secret
        counts = []
        for i in range(1, 40):
            clock.advance(1)
            before = CountingConnection.sent
            try:  # distinct rows, batches, and exact repeats (refused: max_repeats=1)
                guarded.predict(x[i:i + 1] if i % 3 == 1 else x[i:i + 4] if i % 3 == 2
                                else x[i - 1:i + 3])  # the previous call again
            except aimsec_core.SecurityViolation:
                refused += 1  # its failure rides on the next round trip
            counts.append(CountingConnection.sent - before)
    assert refused >= 10
    assert max(counts) <= 2 and min(counts) >= 1


def test_a_large_batch_is_observed_in_slices_that_still_see_each_other(redis_server,
                                                                      digits_model, clock):
    # one script call per ROWS_PER_SCRIPT samples: a batch of thousands would otherwise
    # hold the server (and every replica's calls) past their timeout
    from aimsec_core.monitoring.redis_store import ROWS_PER_SCRIPT

    pool = redis.ConnectionPool(connection_class=CountingConnection, host="127.0.0.1",
                                port=redis_server.port, socket_timeout=0.5)
    store = RedisStore(redis_server.url, connection_pool=pool)
    sink = ListSink()
    guarded = _guard(digits_model, clock, store, sink, mode="monitor")
    x = digits()[0]
    n = 2 * ROWS_PER_SCRIPT + 20
    batch = x[:n].copy()
    batch[n - 1] = x[3]  # the first slice's sample, a step away, in the last slice
    batch[n - 1, 27:30] = np.clip(batch[n - 1, 27:30] + 0.25, 0, 1)
    with aimsec_core.client("bulk"):
        guarded.predict(x[500:501])  # scripts and secret loaded
        before = CountingConnection.sent
        guarded.predict(batch)
    assert CountingConnection.sent - before == 1 + 3  # admission, then three slices
    assert guarded.last_verdict.checks == ("near_duplicate",)
    assert guarded.last_verdict.flags[n - 1] and sum(guarded.last_verdict.flags) <= 3


def test_two_processes_share_one_clients_quota_exactly(redis_server):
    context = multiprocessing.get_context("spawn")
    start = context.Manager().Event()
    policy = {"max_requests_per_minute": 50, "near_duplicate": False, "max_repeats": 0}
    with context.Pool(2) as pool:
        jobs = [pool.apply_async(replica.send, (redis_server.url, policy, "shared-client",
                                                list(range(k, 80, 2)), start))
                for k in (0, 1)]
        start.set()
        admitted = [job.get(timeout=120) for job in jobs]
    assert sum(admitted) == 50 and all(a > 0 for a in admitted)


def test_a_near_duplicate_attack_split_across_processes_is_refused(redis_server, clock):
    x = digits()[0][5:6]
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:  # the first replica sees the seed query
        assert pool.apply(replica.first_query, (redis_server.url, x, "acct-1")) == ""
    step = x.copy()
    step[0, 27:30] = np.clip(step[0, 27:30] + 0.25, 0, 1)
    guarded = _guard(replica.model(), clock, redis_server.url)  # the second replica
    with aimsec_core.client("acct-2"), pytest.raises(QueryAttackError) as caught:
        guarded.predict(step)
    assert "another client" in caught.value.verdict.findings[0].reason


def test_redis_outage_fail_open_then_resume(redis_server, digits_model, clock):
    sink = ListSink()
    policy = {"max_requests_per_minute": 3, "store_retry": 5.0}
    first = _guard(digits_model, clock, redis_server.url, sink, **policy)
    second = _guard(digits_model, clock, redis_server.url, ListSink(), **policy)
    x = digits()[0]
    with aimsec_core.client("c"):
        first.predict(x[:1])
        redis_server.stop()
        for i in range(1, 4):  # every call answered, on local state, with the finding
            clock.advance(1)
            first.predict(x[i:i + 1])
            assert first.last_verdict.checks == ("store_unavailable",)
            assert first.last_verdict.allowed
        clock.advance(1)
        with pytest.raises(RateLimitedError):  # local state still enforces the quota
            first.predict(x[5:6])
        assert "store_unavailable" in first.last_verdict.checks
        redis_server.start()
        clock.advance(65)  # past the retry interval and the old minute
        first.predict(x[6:7])
        first.predict(x[7:8])
        assert first.last_verdict.clean  # the shared store answers again
        second.predict(x[8:9])  # the other replica shares the quota: 3 used
        with pytest.raises(RateLimitedError):
            second.predict(x[9:10])
    assert all(e.outcome in ("allowed", "flagged", "rejected") for e in sink.events)
    assert sum("store_unavailable" in e.verdict.checks for e in sink.events) == 4


def test_redis_outage_fail_closed_refuses(redis_server, digits_model, clock):
    guarded = _guard(digits_model, clock, redis_server.url, store_failure="fail_closed")
    x = digits()[0]
    with aimsec_core.client("c"):
        guarded.predict(x[:1])
        redis_server.stop()
        with pytest.raises(StoreUnavailableError) as caught:
            guarded.predict(x[1:2])
        assert "fail_closed" in str(caught.value)


def test_monitor_mode_on_redis_records_findings(redis_server, digits_model, clock):
    sink = ListSink()
    guarded = _guard(digits_model, clock, redis_server.url, sink, mode="monitor",
                     max_requests_per_minute=1)
    x = digits()[0]
    with aimsec_core.client("m"):
        guarded.predict(x[:1])
        guarded.predict(x[1:2])
    assert sink.outcomes == ["allowed", "flagged"]


def test_the_secret_is_shared_and_not_in_repr(redis_server):
    a, b = RedisStore(redis_server.url), RedisStore(redis_server.url)
    assert a.secret() == b.secret() and len(a.secret()) == 32
    assert a.secret().hex() not in repr(a)
    assert "secret" not in repr(RedisStore("redis://:hunter2@127.0.0.1:1/0")).lower()
    assert "hunter2" not in repr(RedisStore("redis://:hunter2@127.0.0.1:1/0"))


@pytest.mark.parametrize("failure", ["fail_closed", "fail_open"])
def test_a_store_failing_during_the_query_checks_applies_the_failure_policy(
        redis_server, digits_model, clock, failure):
    # admission reached Redis; the query checks' round trip did not (the server went away
    # in between): that call's verdict must carry the outage as well
    store = RedisStore(redis_server.url)
    sink = ListSink()
    guarded = _guard(digits_model, clock, store, sink, store_failure=failure)
    x = digits()[0]
    with aimsec_core.client("c"):
        guarded.predict(x[:1])
        observe = store.observe

        def stop_then_observe(*args, **kwargs):  # type: ignore[no-untyped-def]
            redis_server.stop()
            return observe(*args, **kwargs)

        store.observe = stop_then_observe  # type: ignore[method-assign]
        clock.advance(1)
        if failure == "fail_closed":
            with pytest.raises(StoreUnavailableError):
                guarded.predict(x[1:2])
        else:
            guarded.predict(x[1:2])
    assert guarded.last_verdict.checks == ("store_unavailable",)
    # fail_open serves the call with its advisory finding recorded
    assert sink.outcomes[-1] == ("rejected" if failure == "fail_closed" else "flagged")


def test_an_error_reply_from_redis_applies_the_failure_policy(redis_server, digits_model,
                                                               clock):
    # out of memory under maxmemory (likewise READONLY after a failover, BUSY behind a
    # long script): the store failed, and every call still gets an answer in policy terms
    guarded = _guard(digits_model, clock, redis_server.url, store_failure="fail_closed")
    x = digits()[0]
    with aimsec_core.client("c"):
        guarded.predict(x[:1])
        admin = redis.Redis(port=redis_server.port)
        admin.config_set("maxmemory", 1)
        try:
            clock.advance(1)
            with pytest.raises(StoreUnavailableError) as caught:
                guarded.predict(x[1:2])
        finally:
            admin.config_set("maxmemory", 0)
            admin.close()
        assert "OutOfMemoryError" in str(caught.value)
        assert "did not answer" not in str(caught.value)  # it answered, with an error
        clock.advance(2)  # past store_retry: the store answers again
        guarded.predict(x[2:3])
        assert guarded.last_verdict.clean


def test_a_url_where_something_else_answers_applies_the_failure_policy(digits_model, clock):
    # a URL pointing at an HTTP port (a typo, a proxy) gets replies that are not Redis's
    server = answering_server(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    port = server.getsockname()[1]
    try:
        guarded = _guard(digits_model, clock, f"redis://127.0.0.1:{port}/0")
        with aimsec_core.client("c"):
            guarded.predict(digits()[0][:1])
        assert guarded.last_verdict.checks == ("store_unavailable",)
    finally:
        server.close()


@pytest.mark.parametrize("serial", [2**32 - 2, 2**40])
def test_the_redis_index_keeps_matching_past_two_to_the_32_stored_fingerprints(
        redis_server, digits_model, clock, serial):
    # entries hold 32-bit serials; a counter past 2^32 (weeks of a busy model; or a store
    # written by an earlier release) once made every entry look older than the capacity
    guarded = _guard(digits_model, clock, redis_server.url, mode="monitor")
    admin = redis.Redis(port=redis_server.port)
    admin.set("aimsec:digits:fp:serial", serial)
    x = digits()[0].astype(np.float64)
    with aimsec_core.client("c"):
        for i in range(4):  # serials wrap past 2^32 within these
            clock.advance(1)
            guarded.predict(x[i:i + 1])
            assert guarded.last_verdict.clean
        for i in (3, 0):  # a small step from one stored after the wrap, and one before
            step = x[i:i + 1].copy()
            step[0, 20] += 0.05
            clock.advance(1)
            guarded.predict(step)
            assert guarded.last_verdict.checks == ("near_duplicate",), i
    assert int(admin.get("aimsec:digits:fp:serial")) < 2**32
    admin.close()


def test_a_failure_in_one_thread_never_breaks_a_call_another_thread_is_building(
        redis_server):
    # a failed command used to empty the script digests while another thread, past the
    # check, was about to read them: that call raised a raw KeyError
    import threading

    from aimsec_core.monitoring.policy import ClientRules
    from aimsec_core.monitoring.store import StoreError

    store = RedisStore(redis_server.url)
    store.connect()
    pipeline = store.client.pipeline
    entered, release = threading.Event(), threading.Event()
    raised: list[BaseException] = []

    def held_pipeline(*args, **kwargs):  # type: ignore[no-untyped-def]
        if threading.current_thread().name == "held":
            entered.set()
            release.wait(10)
        return pipeline(*args, **kwargs)

    def admit() -> None:
        try:
            store.admit("digits", "b", 1.0, ClientRules(), lockout=True)
        except BaseException as exc:  # noqa: BLE001 - what it raised is the point
            raised.append(exc)

    store.client.pipeline = held_pipeline  # type: ignore[method-assign]
    held = threading.Thread(target=admit, name="held")
    held.start()
    assert entered.wait(10)
    redis_server.stop()
    with pytest.raises(StoreError):
        store.admit("digits", "a", 1.0, ClientRules(), lockout=True)
    release.set()
    held.join(10)
    assert len(raised) == 1 and isinstance(raised[0], StoreError), raised


def test_the_store_url_shows_without_its_password():
    store = RedisStore("redis://:s3cret@127.0.0.1:1/2")
    assert repr(store) == "RedisStore('redis://***@127.0.0.1:1/2')"
