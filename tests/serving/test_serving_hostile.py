"""The middleware against hostile callers and awkward ASGI usage, over a real uvicorn server
on a loopback port (httpx, or raw sockets where httpx cannot say it)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import json
import socket

import anyio.to_thread
import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI, Request
from starlette.concurrency import run_in_threadpool

from aimsec_core import AimsecMiddleware, RateLimitedError, current_client
from aimsec_core import context as core_context
from aimsec_core.serving import key_identity

from .asgi import Recorder, call
from .servers import running

SECRET = "s" * 32


def middleware(app, **options) -> AimsecMiddleware:
    return AimsecMiddleware(app, key_secret=SECRET, **options)


def raw_exchange(url: str, payload: bytes, *, responses: int,
                 heads: tuple[int, ...] = ()) -> list[bytes]:
    """Send ``payload`` on one connection; read until ``responses`` complete answers (each
    framed by Content-Length, except the answers numbered in ``heads``, to HEAD requests,
    which have none) arrived or the server closed. Interim 100 answers are skipped."""
    host, port = url.removeprefix("http://").split(":")
    answers: list[bytes] = []
    buffer = b""
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(payload)
        while len(answers) < responses:
            head, sep, rest = buffer.partition(b"\r\n\r\n")
            if sep:
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if head.split(b" ", 2)[1] in (b"100",):
                    buffer = rest
                    continue
                if len(answers) in heads:
                    length = 0
                if len(rest) >= length:
                    answers.append(head + sep + rest[:length])
                    buffer = rest[length:]
                    continue
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
    return answers


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# -- API key headers ---------------------------------------------------------------------


@pytest.mark.parametrize("api_keys", [None, ["alpha"]])
@pytest.mark.parametrize("keys", [[b"alpha", b"junk"], [b"junk", b"alpha"],
                                  [b"alpha", b"beta"]])
def test_conflicting_api_keys_are_refused_not_traded_for_the_address(keys, api_keys):
    """An application reading one of several key headers (Starlette's ``headers[...]`` reads
    the first) authenticates a key whose rate limit and lockout the caller had shed: the
    middleware counted the request against the address instead."""
    app = Recorder()
    answer = call(middleware(app, api_keys=api_keys),
                  [(b"x-api-key", key) for key in keys])
    assert answer.status == 400
    assert answer.json()["error"] == "ambiguous_api_key"
    assert app.seen == []  # the application never saw the request
    for key in keys:
        assert key not in answer.body


def test_conflicting_api_keys_deny_a_websocket_handshake():
    sent = []

    async def receive():
        return {"type": "websocket.connect"}

    async def send(message):
        sent.append(message)

    from .asgi import scope
    app = Recorder()
    asyncio.run(middleware(app)(
        scope([(b"x-api-key", b"a"), (b"x-api-key", b"b")], kind="websocket"), receive, send))
    assert app.seen == []
    assert [m["type"] for m in sent] == ["websocket.close"]


@pytest.mark.parametrize("kind", ["http", "websocket"])
@pytest.mark.parametrize("peer, client", [(("203.0.113.7", 50000), "203.0.113.7"),
                                          (None, "anonymous")])
def test_conflicting_api_keys_leave_a_rejected_audit_line(kind, peer, client):
    # the 400 was answered by the middleware alone: no guard ran, and no line was written
    from tests.conftest import ListSink

    sink = ListSink()
    answer = call(middleware(Recorder(), sinks=[sink]),
                  [(b"x-api-key", b"alpha"), (b"x-api-key", b"beta"),
                   (b"x-request-id", b"req-9")], peer=peer, kind=kind)
    assert answer.status in (400, None)  # a websocket without the denial extension: closed
    (event,) = sink.events
    assert event.outcome == "rejected"
    verdict = event.verdict
    assert (verdict.model, verdict.client, verdict.request_id) == ("aimsec.serving", client,
                                                                   "req-9")
    assert not verdict.allowed and verdict.checks == ("input",)
    assert "2 different API keys" in verdict.findings[0].reason
    assert "alpha" not in repr(event) and "beta" not in repr(event)


def test_conflicting_api_keys_are_audited_in_the_default_trail(tmp_path, monkeypatch):
    monkeypatch.setenv("SECURITY_LOG_PATH", str(tmp_path / "logs"))
    guarded_app = middleware(Recorder())
    assert not (tmp_path / "logs").exists()  # opened at the first refusal, not before
    answer = call(guarded_app, [(b"x-api-key", b"alpha"), (b"x-api-key", b"beta")])
    assert answer.status == 400
    (line,) = (tmp_path / "logs" / "audit.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert (record["model"], record["client"], record["decision"]) == (
        "aimsec.serving", "203.0.113.7", "rejected")
    assert record["request_id"] == answer.headers[b"x-request-id"].decode()
    assert "alpha" not in line and "beta" not in line


def _key_echoing_app(**options) -> FastAPI:
    app = FastAPI()
    app.add_middleware(AimsecMiddleware, key_secret=SECRET, **options)

    @app.get("/key")
    async def endpoint(request: Request) -> dict[str, str]:
        # the key as the application reads it: Starlette decodes header bytes as latin-1
        return {"middleware": current_client(),
                "application": key_identity(request.headers["x-api-key"], SECRET.encode())}

    return app


@pytest.mark.parametrize("sent", [b"cl\xe9", b"cl\xc3\xa9", b"\xff\x80key"],
                         ids=["latin-1", "utf-8", "no text"])
def test_a_non_ascii_key_is_the_same_client_to_the_middleware_and_the_application(sent):
    # the middleware hashed the header's bytes, the application's text (latin-1 decoded)
    # was hashed as UTF-8: the same request was two different clients
    with running(_key_echoing_app()) as url, httpx.Client(base_url=url, timeout=60) as http:
        answer = http.get("/key", headers=[(b"X-API-Key", sent)])
    assert answer.status_code == 200, answer.text
    seen = answer.json()
    assert seen["middleware"] == seen["application"] == key_identity(sent, SECRET.encode())


@pytest.mark.parametrize("listed, sent, identifies", [
    ("cl\u00e9", b"cl\xe9", True),  # the text Starlette shows for that byte
    ("cl\u00e9", b"cl\xc3\xa9", False),  # Starlette shows "cl\u00c3\u00a9": another key
    ("cl\u00e9".encode(), b"cl\xc3\xa9", True),  # listed as the bytes UTF-8 clients send
])
def test_a_listed_non_ascii_key_is_matched_as_the_application_reads_it(listed, sent,
                                                                       identifies):
    app = _key_echoing_app(api_keys=[listed])
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        answer = http.get("/key", headers=[(b"X-API-Key", sent)])
    assert answer.status_code == 200, answer.text
    expected = key_identity(sent, SECRET.encode()) if identifies else "127.0.0.1"
    assert answer.json()["middleware"] == expected


def test_a_listed_key_no_header_text_can_hold_is_refused_unshown():
    from aimsec_core import ConfigurationError

    with pytest.raises(ConfigurationError, match="past U\\+00FF") as refused:
        middleware(Recorder(), api_keys=["cl\u00e9-\u043a\u043b\u044e\u0447"])
    assert "\u043a" not in str(refused.value)


def test_repeated_equal_api_keys_are_one_key():
    app = Recorder()
    answer = call(middleware(app), [(b"x-api-key", b"alpha"), (b"X-API-Key", b" alpha")])
    assert answer.status == 200
    assert app.client == key_identity(b"alpha", SECRET.encode())


# -- stacking ----------------------------------------------------------------------------


def test_stacked_middlewares_agree_on_the_request_id():
    """Added twice (an application and a mounted one, or a library adding its own), the
    response header, the scope and the guarded calls all name one request id."""
    seen = {}

    async def app(scope, receive, send):
        seen["context"] = core_context.current_request_id()
        seen["scope"] = scope["aimsec"]["request_id"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    outer_seen = {}

    def outer_app(inner):
        async def spy(scope, receive, send):
            outer_seen["scope"] = scope["aimsec"]["request_id"]
            await inner(scope, receive, send)
        return spy

    answer = call(middleware(outer_app(middleware(app))))
    sent = answer.headers[b"x-request-id"].decode()
    assert seen == {"context": sent, "scope": sent}
    assert outer_seen["scope"] == sent


# -- one connection, several requests ---------------------------------------------------


def _refusing_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(AimsecMiddleware, key_secret=SECRET)

    @app.api_route("/p", methods=["GET", "HEAD", "POST"])
    async def endpoint(request: Request) -> dict[str, str]:
        if request.headers.get("x-refuse"):
            raise RateLimitedError("120 calls in 60 s; limit 100", retry_after=3)
        body = await request.body()
        return {"client": current_client(), "body": body.decode()}

    return app


def test_pipelined_requests_refused_then_served_on_one_connection():
    first = (b"POST /p HTTP/1.1\r\nHost: x\r\nX-Refuse: 1\r\nX-API-Key: a\r\n"
             b"Content-Length: 5\r\n\r\nhello")
    second = (b"POST /p HTTP/1.1\r\nHost: x\r\nX-API-Key: b\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    third = b"HEAD /p HTTP/1.1\r\nHost: x\r\nX-Refuse: 1\r\n\r\n"
    fourth = b"GET /p HTTP/1.1\r\nHost: x\r\nX-API-Key: c\r\n\r\n"
    with running(_refusing_app()) as url:
        answers = raw_exchange(url, first + second + third + fourth, responses=4, heads=(2,))
    assert [status_of(a) for a in answers] == [429, 200, 429, 200]
    assert b"retry-after: 3" in answers[0].lower()
    assert json.loads(answers[1].partition(b"\r\n\r\n")[2]) == {
        "client": key_identity(b"b", SECRET.encode()), "body": "abc"}
    assert answers[2].endswith(b"\r\n\r\n")  # a HEAD answer has no body
    assert json.loads(answers[3].partition(b"\r\n\r\n")[2])["client"] \
        == key_identity(b"c", SECRET.encode())


def test_expect_100_continue_refused_before_the_body_is_read():
    payload = (b"POST /p HTTP/1.1\r\nHost: x\r\nX-Refuse: 1\r\nExpect: 100-continue\r\n"
               b"Content-Length: 5\r\n\r\n")
    with running(_refusing_app()) as url:
        answers = raw_exchange(url, payload, responses=1)
    assert status_of(answers[0]) == 429


# -- identity in threads, tasks and background tasks, over real HTTP --------------------


def test_concurrent_guarded_calls_each_audit_their_own_client():
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    import aimsec_core
    from tests.conftest import ListSink

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    sink = ListSink()
    guarded = aimsec_core.guard(model, name="m", sinks=[sink], mode="enforce", policy={})
    app = FastAPI()
    app.add_middleware(AimsecMiddleware, key_secret=SECRET, trusted_proxies=["127.0.0.1"])
    background_seen: list[tuple[str, str]] = []

    def later(expected_request: str) -> None:
        guarded.predict(x[:1])
        background_seen.append((expected_request, current_client()))

    @app.get("/{how}")
    async def predict(how: str, request: Request, tasks: BackgroundTasks) -> dict[str, str]:
        await asyncio.sleep(0)
        if how == "threadpool":
            await run_in_threadpool(guarded.predict, x[:2])
        elif how == "anyio":
            await anyio.to_thread.run_sync(guarded.predict, x[:2])
        else:
            guarded.predict(x[:2])
        tasks.add_task(later, request.scope["aimsec"]["request_id"])
        return {"client": current_client()}

    def headers(i: int) -> dict[str, str]:
        ident = {"X-API-Key": f"key-{i}"} if i % 2 else {"X-Forwarded-For": f"198.51.100.{i}"}
        return {**ident, "X-Request-ID": f"req-{i}"}

    def expected(i: int) -> str:
        return key_identity(f"key-{i}", SECRET.encode()) if i % 2 else f"198.51.100.{i}"

    async def main(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120,
                                     limits=httpx.Limits(max_connections=20)) as http:
            return await asyncio.gather(*(
                http.get(["/threadpool", "/anyio", "/inline"][i % 3], headers=headers(i))
                for i in range(60)))

    with running(app) as url:
        answers = asyncio.run(main(url))
    assert [a.json()["client"] for a in answers] == [expected(i) for i in range(60)]
    by_request = {}
    for event in sink.events:
        by_request.setdefault(event.verdict.request_id, set()).add(event.verdict.client)
    assert by_request == {f"req-{i}": {expected(i)} for i in range(60)}
    assert sorted(background_seen) == sorted((f"req-{i}", expected(i)) for i in range(60))


def test_a_refusal_in_a_background_task_after_the_answer_is_logged_not_raised(caplog):
    """A guarded call refused in a background task runs after the whole answer went out:
    the client keeps its 200, the refusal is audited, and the server is not handed an
    exception to log as the application's crash (it was: uvicorn's 'Exception in ASGI
    application' traceback for every such call)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    import aimsec_core
    from tests.conftest import ListSink

    x = np.random.default_rng(0).normal(size=(40, 3))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    sink = ListSink()
    guarded = aimsec_core.guard(model, name="m", sinks=[sink], mode="enforce",
                                policy={"max_requests_per_minute": 1})
    app = FastAPI()
    app.add_middleware(AimsecMiddleware, key_secret=SECRET)
    done = threading.Event()

    def later() -> None:
        try:
            guarded.predict(x[:1])  # the second call in the minute: refused
        finally:
            done.set()

    @app.get("/")
    async def predict(tasks: BackgroundTasks) -> dict[str, int]:
        guarded.predict(x[:1])
        tasks.add_task(later)
        return {"ok": 1}

    with caplog.at_level(logging.WARNING), running(app) as url:
        answer = httpx.get(url + "/", headers={"X-API-Key": "k"}, timeout=60)
        assert done.wait(60)
        deadline = time.monotonic() + 60
        while not any("after the response" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the refusal was never logged"
            time.sleep(0.02)
    assert answer.status_code == 200 and answer.json() == {"ok": 1}
    assert sink.outcomes == ["allowed", "rejected"]
    assert not any("Exception in ASGI application" in r.getMessage() for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)
