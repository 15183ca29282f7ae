"""Refused calls get a status, a machine code and nothing of the guard's internals."""

from __future__ import annotations

import asyncio
import json
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aimsec_core import (AdversarialInputError, AimsecMiddleware, ClientBlockedError,
                         EmptyInputError, ExtractionSuspectedError, Finding,
                         InputFormatError, InputTooLargeError, InvalidInputError,
                         NonFiniteInputError, QueryAttackError, RateLimitedError,
                         SecurityViolation, StoreUnavailableError, StructuralAnomalyError,
                         ValueRangeError, Verdict)
from aimsec_core.serving import refusal_for

from .asgi import Recorder, call

SECRET_REASON = "suspicion 4.36 (loudest detector 'neighbours'); expected at most 4.1"


def verdict() -> Verdict:
    finding = Finding("adversarial", SECRET_REASON, score=4.36, expected=4.1)
    return Verdict(allowed=False, mode="enforce", model="fraud-scorer-v7", client="1.2.3.4",
                   batch_size=1, findings=(finding,))


@pytest.mark.parametrize("error, status, code", [
    (RateLimitedError(SECRET_REASON, verdict(), retry_after=2.2), 429, "rate_limited"),
    (ClientBlockedError(SECRET_REASON, verdict(), retry_after=59.01), 403, "client_blocked"),
    (InvalidInputError(SECRET_REASON, verdict()), 422, "invalid_input"),
    (EmptyInputError(SECRET_REASON, verdict()), 422, "empty_input"),
    (InputFormatError(SECRET_REASON, verdict()), 422, "input_format"),
    (InputTooLargeError(SECRET_REASON, verdict()), 422, "input_too_large"),
    (NonFiniteInputError(SECRET_REASON, verdict()), 422, "non_finite_input"),
    (ValueRangeError(SECRET_REASON, verdict()), 422, "value_out_of_range"),
    (StructuralAnomalyError(SECRET_REASON, verdict()), 422, "invalid_input"),
    (AdversarialInputError(SECRET_REASON, verdict()), 403, "refused"),
    (QueryAttackError(SECRET_REASON, verdict()), 403, "refused"),
    (ExtractionSuspectedError(SECRET_REASON, verdict()), 403, "refused"),
    (StoreUnavailableError(SECRET_REASON, verdict()), 503, "unavailable"),
    (SecurityViolation(SECRET_REASON), 403, "refused"),
])
def test_each_refusal_has_its_status_and_code_and_leaks_nothing(error, status, code):
    answer = refusal_for(error, request_id="req-1")
    assert (answer.status, answer.code) == (status, code)
    body = json.loads(answer.body)
    assert set(body) == {"error", "message", "request_id"}
    assert body["error"] == code and body["request_id"] == "req-1"
    for secret in ("4.36", "4.1", "neighbours", "suspicion", "fraud-scorer", "1.2.3.4"):
        assert secret not in answer.body.decode()
    headers = dict(answer.headers)
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(answer.body)


@pytest.mark.parametrize("seconds, header", [
    (2.2, b"3"), (3.0, b"3"), (0.001, b"1"), (1e12, b"86400"),
    (10**400, b"86400"),  # ints too large for a float raised before
    # 0 told a refused caller to retry at once, into the same refusal: never below 1
    (0, b"1"), (0.0, b"1"), (-0.0, b"1"), (-5, b"1"), (-(10**400), b"1"),
])
def test_retry_after_is_whole_seconds_rounded_up(seconds, header):
    for error in (RateLimitedError("x", retry_after=seconds),
                  ClientBlockedError("x", retry_after=seconds)):
        assert dict(refusal_for(error).headers)[b"retry-after"] == header


@pytest.mark.parametrize("seconds, header", [
    (np.float32(2.5), b"3"), (np.float16(0.2), b"1"), (np.int64(7), b"7"),
    (Fraction(5, 2), b"3"), (np.int64(-3), b"1"), (np.uint64(2**63), b"86400"),
    (Fraction(10**400, 3), b"86400"), (Fraction(-(10**400), 3), b"1"),
])
def test_retry_after_from_any_real_number(seconds, header):
    # a limiter computing with numpy float32 or fractions lost its Retry-After header
    for error in (RateLimitedError("x", retry_after=seconds),
                  ClientBlockedError("x", retry_after=seconds)):
        assert dict(refusal_for(error).headers)[b"retry-after"] == header


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), None, "soon", True,
                                     np.float32("nan"), np.bool_(True), 1j])
def test_retry_after_is_left_out_when_unknown(seconds):
    error = RateLimitedError("x")
    error.retry_after = seconds
    assert b"retry-after" not in dict(refusal_for(error).headers)


def test_model_name_only_when_asked_for():
    error = AdversarialInputError("x", verdict())
    assert json.loads(refusal_for(error, include_model=True).body)["model"] == "fraud-scorer-v7"
    assert "model" not in json.loads(refusal_for(error).body)


def test_middleware_answers_a_violation_raised_below_it():
    app = AimsecMiddleware(Recorder(raise_=RateLimitedError(SECRET_REASON, retry_after=1.5)),
                           key_secret="s" * 32)
    answer = call(app, [(b"x-request-id", b"abc-123")])
    assert answer.status == 429
    assert answer.headers[b"retry-after"] == b"2"
    assert answer.headers[b"x-request-id"] == b"abc-123"
    assert answer.json() == {"error": "rate_limited", "message": "Too many requests; retry later.",
                             "request_id": "abc-123"}


def test_middleware_include_model_option():
    app = AimsecMiddleware(Recorder(raise_=AdversarialInputError("x", verdict())),
                           key_secret="s" * 32, include_model=True)
    assert call(app).json()["model"] == "fraud-scorer-v7"


def test_violation_between_the_start_and_the_first_body_chunk_is_answered():
    # Starlette's StreamingResponse sends its start before asking a (guarded) generator
    # for the first chunk: the violation came after the start, so the client got a 200
    # cut short. Nothing of the start has reached the client yet (ASGI lets a server send
    # nothing before the first body message), so the refusal replaces it.
    sent_start = []

    async def streaming(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        sent_start.append(True)
        raise RateLimitedError(SECRET_REASON, retry_after=4)

    answer = call(AimsecMiddleware(streaming, key_secret="s" * 32))
    assert sent_start == [True]
    assert answer.status == 429 and answer.headers[b"retry-after"] == b"4"
    assert answer.headers[b"content-type"] == b"application/json"
    assert answer.json()["error"] == "rate_limited"


def test_a_response_start_reaches_the_server_with_the_first_body_chunk():
    sent: list[str] = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 204, "headers": []})
        sent.append("start")
        await send({"type": "http.response.body", "body": b""})
        sent.append("body")

    async def main():
        seen = []

        async def server_send(message):
            seen.append((message["type"], list(sent)))

        from .asgi import scope
        await AimsecMiddleware(app, key_secret="s" * 32)(scope(), None, server_send)
        return seen

    assert asyncio.run(main()) == [("http.response.start", ["start"]),
                                   ("http.response.body", ["start"])]


def test_violation_after_the_response_started_propagates():
    app = AimsecMiddleware(Recorder(raise_=RateLimitedError("x"), started=True),
                           key_secret="s" * 32)
    with pytest.raises(RateLimitedError):
        call(app)


def test_other_errors_are_not_the_middlewares_business():
    app = AimsecMiddleware(Recorder(raise_=RuntimeError("model crashed")), key_secret="s" * 32)
    with pytest.raises(RuntimeError, match="model crashed"):
        call(app)


def _group(*errors: BaseException) -> BaseException:
    return BaseExceptionGroup("unhandled errors in a TaskGroup", list(errors))


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups are builtin from 3.11")
def test_violation_inside_an_exception_group_is_answered():
    # a violation raised in a task group's child task reaches the middleware wrapped in an
    # exception group (anyio, asyncio.TaskGroup): it was a 500
    error = RateLimitedError(SECRET_REASON, retry_after=1.5)
    for raised in (_group(error), _group(_group(error), AdversarialInputError("x"))):
        answer = call(AimsecMiddleware(Recorder(raise_=raised), key_secret="s" * 32))
        assert answer.status == 429 and answer.json()["error"] == "rate_limited"
        assert answer.headers[b"retry-after"] == b"2"
        assert SECRET_REASON.encode() not in answer.body


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups are builtin from 3.11")
def test_exception_group_with_a_crash_in_it_stays_a_crash():
    raised = _group(RateLimitedError("x"), RuntimeError("model crashed"))
    with pytest.raises(BaseExceptionGroup) as info:
        call(AimsecMiddleware(Recorder(raise_=raised), key_secret="s" * 32))
    assert info.value is raised
    started = _group(RateLimitedError("x"))
    with pytest.raises(BaseExceptionGroup):
        call(AimsecMiddleware(Recorder(raise_=started, started=True), key_secret="s" * 32))


_raised = st.sampled_from([None, RateLimitedError("x", retry_after=2),
                           AdversarialInputError("x"), RuntimeError("crash")])


@settings(max_examples=200, deadline=None)
@given(start=st.booleans(), chunks=st.integers(0, 2), end=st.booleans(), raised=_raised)
def test_a_refusal_exactly_when_nothing_got_out(start, chunks, end, raised):
    """Whatever an application sends before it raises, the server gets the app's messages
    unchanged but for the request id header, or, when a violation came before any body
    message got out, only the refusal: never two starts, never a refusal after a chunk;
    a violation once the whole answer is out goes no further (it is logged)."""
    steps = ["start"] * start + ["chunk"] * chunks + ["end"] * end

    async def app(scope, receive, send):
        for step in steps:
            if step == "start":
                await send({"type": "http.response.start", "status": 200, "headers": []})
            else:
                await send({"type": "http.response.body", "body": b"x",
                            "more_body": step == "chunk"})
        if raised is not None:
            raise raised

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def run():
        from .asgi import scope
        await AimsecMiddleware(app, key_secret="s" * 32)(scope(), None, send)

    body_got_out = chunks + end > 0
    if isinstance(raised, SecurityViolation) and not body_got_out:
        asyncio.run(run())
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        assert sent[0]["status"] in (429, 403)
        return
    if raised is None:
        asyncio.run(run())
        expected = steps
    elif isinstance(raised, SecurityViolation) and end:
        asyncio.run(run())  # after the whole answer: logged, not handed to the server
        expected = steps
    else:
        with pytest.raises(type(raised)):
            asyncio.run(run())
        expected = steps if body_got_out else []  # a start alone is held back: a 500 follows
    assert [m["type"].rsplit(".", 1)[1] for m in sent] \
        == [{"start": "start"}.get(step, "body") for step in expected]
