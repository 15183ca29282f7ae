"""Rate limits, minimum interval and lockout, driven by a controllable clock."""

from __future__ import annotations

import numpy as np
import pytest

import aimsec_core
from aimsec_core import ClientBlockedError, RateLimitedError, ValueRangeError
from aimsec_core.guard import Guard
from aimsec_core.registry import adapter_for
from tests.cases import digits


def _guard(model, clock, sink, mode="enforce", **policy):
    adapter = adapter_for(model)
    return adapter.wrap(Guard(model, adapter, name="digits", mode=mode, sinks=[sink],
                              clock=clock, policy=policy,
                              constraints={"min_value": 0.0, "max_value": 1.0}))


def _x(i: int = 0) -> np.ndarray:
    return digits()[0][i:i + 1]


def test_the_101st_call_in_a_minute_is_refused_with_retry_after(digits_model, clock, sink):
    guarded = _guard(digits_model, clock, sink, max_requests_per_minute=100)
    with aimsec_core.client("alice"):
        for i in range(100):
            guarded.predict(_x(i))
            clock.advance(0.5)
        with pytest.raises(RateLimitedError) as caught:
            guarded.predict(_x(100))
    # the first call was at t0; the window frees a slot at t0 + 60, now is t0 + 50
    assert caught.value.retry_after == pytest.approx(10.0)
    verdict = caught.value.verdict
    assert verdict.checks == ("rate_limit",) and verdict.client == "alice"
    assert sink.outcomes[-1] == "rejected" and len(sink.events) == 101
    with aimsec_core.client("bob"):  # quotas are per client
        guarded.predict(_x(0))
    clock.advance(10.5)
    with aimsec_core.client("alice"):  # the moving window has room again
        guarded.predict(_x(1))


def test_minimum_interval(digits_model, clock, sink):
    guarded = _guard(digits_model, clock, sink, min_request_interval=1.0)
    with aimsec_core.client("alice"):
        guarded.predict(_x())
        clock.advance(0.25)
        with pytest.raises(RateLimitedError) as caught:
            guarded.predict(_x())
        assert caught.value.retry_after == pytest.approx(0.75)
        assert caught.value.verdict.checks == ("min_interval",)
        clock.advance(0.75)
        guarded.predict(_x())


def test_lockout_after_refused_calls_lasts_session_timeout(digits_model, clock, sink):
    guarded = _guard(digits_model, clock, sink, max_failed_attempts=3, session_timeout=600,
                     failure_window=60)
    bad = _x().copy()
    bad[0, 5] = 7.0
    with aimsec_core.client("mallory"):
        for _ in range(3):
            with pytest.raises(ValueRangeError):
                guarded.predict(bad)
            clock.advance(1)
        with pytest.raises(ClientBlockedError) as caught:
            guarded.predict(_x())  # even a valid call: the input is never read
        assert caught.value.retry_after == pytest.approx(599)
        assert caught.value.verdict.checks == ("lockout",)
        assert caught.value.verdict.severity == "high"
    with aimsec_core.client("alice"):
        guarded.predict(_x())
    assert sink.events[3].verdict.input_hash == ""  # refused before validation
    clock.advance(599)
    with aimsec_core.client("mallory"):
        guarded.predict(_x())


def test_failures_spread_beyond_the_window_do_not_lock_out(digits_model, clock, sink):
    guarded = _guard(digits_model, clock, sink, max_failed_attempts=3, failure_window=60)
    bad = _x().copy()
    bad[0, 5] = 7.0
    with aimsec_core.client("clumsy"):
        for _ in range(6):
            with pytest.raises(ValueRangeError):
                guarded.predict(bad)
            clock.advance(31)
        guarded.predict(_x())


def test_client_bugs_repeats_and_detector_refusals_never_lock_a_client_out(
        digits_model, clock, sink):
    """Malformed calls (a client's bug), exact repeats (retries) and refusals by the
    calibrated detectors (which come at their false-positive rate) are not failed attempts."""
    from tests.cases import digits

    guarded = _guard(digits_model, clock, sink, max_failed_attempts=2)
    guarded.calibrate(digits()[0][900:1300], fpr=0.05)
    with aimsec_core.client("ordinary"):
        for _ in range(4):  # a 1-D row: the commonest client mistake
            with pytest.raises(aimsec_core.InputFormatError):
                guarded.predict(_x()[0])
        for _ in range(8):  # the same row again and again: repeats, refused after 5
            try:
                guarded.predict(_x())
            except aimsec_core.QueryAttackError:
                pass
        noise = np.random.default_rng(0).random((1, 64))  # refused by the detectors
        for _ in range(4):
            with pytest.raises(aimsec_core.AdversarialInputError):
                guarded.predict(noise)
        guarded.predict(_x(3))  # still served
    assert "lockout" not in {c for e in sink.events for c in e.verdict.checks}


def test_rate_limit_refusals_count_towards_lockout(digits_model, clock, sink):
    guarded = _guard(digits_model, clock, sink, max_requests_per_minute=2,
                     max_failed_attempts=2)
    with aimsec_core.client("flood"):
        guarded.predict(_x())
        guarded.predict(_x(1))
        for _ in range(2):
            with pytest.raises(RateLimitedError):
                guarded.predict(_x(2))
        with pytest.raises(ClientBlockedError):
            guarded.predict(_x(2))


def test_monitor_mode_records_and_lets_through(digits_model, clock, sink):
    guarded = _guard(digits_model, clock, sink, mode="monitor", max_requests_per_minute=1)
    with aimsec_core.client("alice"):
        guarded.predict(_x())
        guarded.predict(_x(1))
    assert sink.outcomes == ["allowed", "flagged"]
    assert guarded.last_verdict.checks == ("rate_limit",) and guarded.last_verdict.allowed


def test_tiers_are_chosen_per_call(digits_model, clock, sink):
    guarded = _guard(digits_model, clock, sink, max_requests_per_minute=1,
                     tiers={"internal": {"max_requests_per_minute": 5}})
    with aimsec_core.client("svc", tier="internal"):
        for i in range(5):
            guarded.predict(_x(i))
    with aimsec_core.client("web"):
        guarded.predict(_x())
        with pytest.raises(RateLimitedError):
            guarded.predict(_x(1))



@pytest.mark.parametrize("store", ["memory", "redis"])
def test_one_client_has_one_quota_whatever_tiers_its_calls_come_under(request, clock, store):
    # in memory a client had one window per quota (the limits library keys a window by
    # its amount too): calls under tiers of 2, 3 and 4 a minute made 9 in a minute, where
    # Redis (one window per client) admitted 4. Each call is judged by its own tier's
    # quota against all of the client's calls
    from aimsec_core.monitoring import build_monitor

    url = request.getfixturevalue("redis_server").url if store == "redis" else None
    monitor = build_monitor("api", {
        "max_requests_per_minute": 2, "max_failed_attempts": 0, "store_timeout": 5.0,
        "tiers": {"pro": {"max_requests_per_minute": 3},
                  "big": {"max_requests_per_minute": 4}}}, url, clock)
    admitted = []
    for tier in (None, "pro", "big", None):
        for _ in range(5):
            clock.advance(0.1)
            admitted.append(tier if not monitor.admit_client("c", tier) else "-")
    assert admitted.count(None) == 2 and admitted.count("pro") == 1
    assert admitted.count("big") == 1 and len(admitted) - admitted.count("-") == 4
    clock.advance(60)  # the minute is over: a small tier's call is judged by its quota
    assert monitor.admit_client("c") == [] and monitor.admit_client("c") == []
    assert [f.check for f in monitor.admit_client("c")] == ["rate_limit"]



@pytest.mark.parametrize("store", ["memory", "redis"])
def test_calls_refused_by_a_lockout_do_not_fill_the_quota_after_it(request, clock, store):
    # on Redis the quota's script ran after the lockout's in the same round trip, so a
    # call the lockout refused was counted against the quota: a client calling on
    # through its lockout found its quota full when it ended, was refused, and those
    # refusals locked it out again at once (the memory store never counted them)
    from aimsec_core.monitoring import build_monitor

    url = request.getfixturevalue("redis_server").url if store == "redis" else None
    monitor = build_monitor("api", {"max_requests_per_minute": 3, "max_failed_attempts": 2,
                                    "session_timeout": 100, "store_timeout": 5.0},
                            url, clock)
    checks = []
    for _ in range(5):
        checks.append([f.check for f in monitor.admit_client("c")])
        clock.advance(1)
    assert checks == [[], [], [], ["rate_limit"], ["rate_limit"]]
    clock.advance(50)
    for _ in range(10):  # retrying through the lockout's last minute
        assert [f.check for f in monitor.admit_client("c")] == ["lockout"]
        clock.advance(5)
    clock.advance(1)  # the lockout is over
    assert [monitor.admit_client("c") for _ in range(3)] == [[], [], []]


def test_anonymous_training_loop_is_never_throttled_or_flagged(digits_model, clock, sink):
    """No client identity, the same validation set every epoch, thousands of calls."""
    guarded = _guard(digits_model, clock, sink)
    x = digits()[0][:50]
    for _epoch in range(4):
        for i in range(len(x)):
            guarded.predict(x[i:i + 1])
            clock.advance(0.001)
        guarded.predict(x)  # and batches
    bad = x[:1].copy()
    bad[0, 0] = 9.0
    for _ in range(10):  # refusals never lock the anonymous caller out
        with pytest.raises(ValueRangeError):
            guarded.predict(bad)
    guarded.predict(x[:1])
    assert set(sink.outcomes) == {"allowed", "rejected"}
    assert all(e.verdict.checks in ((), ("range",)) for e in sink.events)


def test_one_audit_line_per_call_refused_at_admission_too(digits_model, clock, tmp_path):
    import json

    audit = aimsec_core.AuditLog(tmp_path / "logs")
    adapter = adapter_for(digits_model)
    guarded = adapter.wrap(Guard(digits_model, adapter, name="audited", sinks=[audit],
                                 clock=clock, policy={"max_requests_per_minute": 1}))
    with aimsec_core.client("203.0.113.9"):
        guarded.predict(_x())
        with pytest.raises(RateLimitedError):
            guarded.predict(_x())
    audit.flush()
    lines = [json.loads(line) for line in audit.file.read_text().splitlines()]
    assert [line["decision"] for line in lines] == ["allowed", "rejected"]
    assert lines[1]["client"] == "203.0.113.9"
    assert lines[1]["findings"][0]["check"] == "rate_limit"
    assert lines[1]["findings"][0]["severity"] == "medium"


def test_admit_client_without_a_model(clock):
    from aimsec_core.monitoring import build_monitor

    monitor = build_monitor("api", {"max_requests_per_minute": 2, "max_failed_attempts": 2},
                            None, clock)
    assert monitor.admit_client("10.0.0.1") == [] and monitor.admit_client("10.0.0.1") == []
    assert [f.check for f in monitor.admit_client("10.0.0.1")] == ["rate_limit"]
    assert [f.check for f in monitor.admit_client("10.0.0.1")] == ["rate_limit"]
    assert [f.check for f in monitor.admit_client("10.0.0.1")] == ["lockout"]
    assert monitor.admit_client("10.0.0.2") == []


def test_detector_passes_never_count_against_the_quota(digits_model, clock, sink):
    guarded = _guard(digits_model, clock, sink, mode="monitor", max_requests_per_minute=3)
    x = digits()[0]
    guarded.calibrate(x[1000:1400], fpr=0.05)  # detectors ask the model for scores
    with aimsec_core.client("alice"):
        for i in range(4):  # each call runs the detectors' own forward passes too
            guarded.predict(x[i:i + 2])
    quota = ["rate_limit" in e.verdict.checks for e in sink.events]
    assert quota == [False, False, False, True]
    assert all("suspicion" in e.verdict.scores for e in sink.events)


def test_a_request_refused_before_the_guard_is_recorded_and_counted(digits_model, clock, sink):
    """Serving code that refuses a request before it could reach the model (a body too
    large, not JSON) records it through ``refuse``: one rejected line for its client, a
    failed attempt where its check counts, and the lockout answered once it applies."""
    from aimsec_core import ConfigurationError, InputFormatError, InputTooLargeError

    guarded = _guard(digits_model, clock, sink, max_failed_attempts=3, session_timeout=60)
    guard = aimsec_core.guard_of(guarded)
    with aimsec_core.client("mallory"):
        error = guard.refuse(InputFormatError("request body is not JSON", check="format"))
        assert isinstance(error, InputFormatError) and error.verdict.checks == ("format",)
        assert sink.outcomes[-1] == "rejected" and len(sink.events) == 1
        assert error.verdict.client == "mallory" and error.verdict.batch_size == 0
        for _ in range(3):  # oversized bodies count as failed attempts; malformed ones not
            error = guard.refuse(InputTooLargeError(
                "request body exceeds 1000000 bytes", check="size", expected=1_000_000,
                received=1_000_001))
            assert error.verdict.checks == ("size",)
        blocked = guard.refuse(InputFormatError("request body is not JSON", check="format"))
        assert isinstance(blocked, ClientBlockedError)
        assert blocked.verdict.checks == ("lockout", "format")
        assert len(sink.events) == 5
        with pytest.raises(ClientBlockedError):
            guarded.predict(_x())
    with pytest.raises(ConfigurationError, match="InvalidInputError"):
        guard.refuse(RuntimeError("boom"))  # type: ignore[arg-type]


def test_in_monitor_mode_a_refused_request_is_its_own_error_not_a_rate_limit(
        digits_model, clock, sink):
    """Monitor mode lets a client past its quota; a request refused before the model
    used to come back as RateLimitedError (a 429 the monitor-mode service never sends
    for predictions), named after the quota finding instead of its own."""
    from aimsec_core import InputFormatError

    guarded = _guard(digits_model, clock, sink, mode="monitor", max_requests_per_minute=1)
    guard = aimsec_core.guard_of(guarded)
    with aimsec_core.client("mallory"):
        guarded.predict(_x())
        guarded.predict(_x(1))  # over the quota: let through, recorded
        error = guard.refuse(InputFormatError("request body is not JSON", check="format"))
    assert type(error) is InputFormatError
    assert error.verdict.checks == ("format", "rate_limit")
    assert sink.outcomes[-1] == "rejected"


def test_refusing_a_guards_own_refusal_records_nothing_more(digits_model, clock, sink):
    """Serving code that hands refuse() an error the guard raised (and recorded) used to
    write a second rejected line and count a second failed attempt."""
    guarded = _guard(digits_model, clock, sink, max_failed_attempts=2, session_timeout=60)
    guard = aimsec_core.guard_of(guarded)
    with aimsec_core.client("mallory"):
        with pytest.raises(ValueRangeError) as caught:
            guarded.predict(_x() + 5.0)
        assert guard.refuse(caught.value) is caught.value
        assert len(sink.events) == 1
        guarded.predict(_x())  # one failed attempt of two: not locked out
