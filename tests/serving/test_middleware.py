"""The middleware as an ASGI citizen: scope types, request ids, context isolation between
concurrent requests, and hostile headers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI, Request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimsec_core import (AdversarialInputError, AimsecMiddleware, ConfigurationError,
                         RateLimitedError, StoreUnavailableError, current_client)
from aimsec_core import context as core_context
from aimsec_core.serving import key_identity, refusal_for, request_id_context

from .asgi import Recorder, call, call_async
from .servers import running

SECRET = "s" * 32
SAFE_ID = re.compile(r"[A-Za-z0-9._~:+=/-]{1,128}")


def middleware(app, **options) -> AimsecMiddleware:
    return AimsecMiddleware(app, key_secret=SECRET, **options)


def test_lifespan_passes_through_untouched():
    received = []

    async def app(scope, receive, send):
        received.append((scope, receive, send))

    async def receive():
        return {"type": "lifespan.startup"}

    async def send(message):
        pass

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    asyncio.run(middleware(app)(scope, receive, send))
    assert received == [(scope, receive, send)]
    assert "aimsec" not in scope


def test_websocket_gets_its_identity():
    app = Recorder()

    async def run():
        async def receive():
            return {"type": "websocket.connect"}

        async def send(message):
            pass

        from .asgi import scope
        await middleware(app)(scope([(b"x-api-key", b"ws-key")], kind="websocket"),
                              receive, send)

    asyncio.run(run())
    assert app.seen[0]["type"] == "websocket"
    assert app.client == key_identity(b"ws-key", SECRET.encode())


def test_request_id_is_echoed_and_reaches_the_scope():
    app = Recorder()
    answer = call(middleware(app), [(b"x-request-id", b"0af7651916cd43dd8448eb211c80319c")])
    assert answer.headers[b"x-request-id"] == b"0af7651916cd43dd8448eb211c80319c"
    assert app.seen[0]["aimsec"] == {"client": "203.0.113.7",
                                     "request_id": "0af7651916cd43dd8448eb211c80319c"}


@pytest.mark.parametrize("value", [b"", b"x" * 129, b"<script>", b"a b", b"caf\xc3\xa9",
                                   b"id\r\nSet-Cookie: x", b"\x00"])
def test_unsafe_request_id_is_replaced(value):
    app = Recorder()
    answer = call(middleware(app), [(b"x-request-id", value)])
    generated = answer.headers[b"x-request-id"]
    assert re.fullmatch(rb"[0-9a-f]{32}", generated)
    assert app.seen[0]["aimsec"]["request_id"] == generated.decode()


def test_missing_request_id_is_generated_fresh_each_time():
    app = middleware(Recorder())
    assert call(app).headers[b"x-request-id"] != call(app).headers[b"x-request-id"]


def test_downstream_request_id_header_is_not_doubled():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"X-Request-ID", b"own")]})
        await send({"type": "http.response.body", "body": b""})

    assert call(middleware(app)).headers == {b"X-Request-ID": b"own"}


def test_request_id_hook_enters_the_core_context_when_it_exists(monkeypatch):
    entered = []

    @contextlib.contextmanager
    def request_id(value: str) -> Iterator[str]:
        entered.append(("enter", value))
        yield value
        entered.append(("exit", value))

    monkeypatch.setattr(core_context, "request_id", request_id, raising=False)
    call(middleware(Recorder()), [(b"x-request-id", b"r-42")])
    assert entered == [("enter", "r-42"), ("exit", "r-42")]


def test_request_id_hook_is_a_no_op_without_core_support(monkeypatch):
    monkeypatch.delattr(core_context, "request_id", raising=False)
    with request_id_context("r-1") as value:
        assert value == "r-1"


@pytest.mark.parametrize("name", ["", "x api key", "x:key", "ключ"])
def test_invalid_header_names_are_configuration_errors(name):
    with pytest.raises(ConfigurationError, match="header name"):
        middleware(Recorder(), api_key_header=name)


@pytest.mark.parametrize("options", [
    {"api_key_header": "X-Forwarded-For"}, {"request_id_header": "x-api-key"},
    {"forwarded_header": "X-Request-ID"},
])
def test_one_header_for_two_jobs_is_a_configuration_error(options):
    # the key header shadowed the forwarded one: X-Forwarded-For was never read
    with pytest.raises(ConfigurationError, match="name the same header"):
        middleware(Recorder(), **options)


def test_rfc_7239_forwarded_is_not_read_as_x_forwarded_for():
    # 'for=198.51.100.7;proto=https' is no address: every caller became the proxy
    with pytest.raises(ConfigurationError, match="Forwarded"):
        middleware(Recorder(), forwarded_header="Forwarded")


def test_concurrent_requests_keep_their_own_identity():
    """All requests are inside the app at once; each sees its own client before and after
    the others ran, in a child task and in a worker thread."""
    n = 20
    seen: dict[str, tuple[str, str, str, str]] = {}

    async def main() -> None:
        arrived = 0
        everyone_in = asyncio.Event()

        async def app(scope, receive, send):
            nonlocal arrived
            before = current_client()
            arrived += 1
            if arrived == n:
                everyone_in.set()
            await everyone_in.wait()
            child = await asyncio.create_task(_current())
            thread = await asyncio.to_thread(current_client)
            seen[scope["aimsec"]["client"]] = (before, current_client(), child, thread)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        wrapped = middleware(app)
        await asyncio.gather(*(
            call_async(wrapped, [(b"x-api-key", f"key-{i}".encode())] if i % 2 else [],
                       peer=(f"198.51.100.{i}", 1000 + i))
            for i in range(n)))
        assert current_client() == "anonymous"

    asyncio.run(main())
    assert len(seen) == n
    for identity, views in seen.items():
        assert views == (identity,) * 4


async def _current() -> str:
    await asyncio.sleep(0)
    return current_client()


header_names = st.sampled_from([b"x-api-key", b"x-forwarded-for", b"x-request-id",
                                b"X-Forwarded-For", b"X-API-KEY", b"host", b"x-other"])
header_values = st.one_of(
    st.binary(max_size=64), st.binary(min_size=5000, max_size=20000),
    st.text(max_size=64).map(lambda t: t.encode("utf-8")),
    st.lists(st.one_of(st.ip_addresses().map(str), st.text(max_size=20)), max_size=40)
    .map(lambda hops: ", ".join(hops).encode("utf-8", "surrogatepass")),
)
peers = st.one_of(st.none(), st.tuples(st.ip_addresses().map(str), st.integers(0, 65535)),
                  st.tuples(st.text(max_size=30), st.integers()), st.just(("",)))


@pytest.mark.filterwarnings("ignore:trusted proxy .*/0:RuntimeWarning")  # trusts everything
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=st.lists(st.tuples(header_names, header_values), max_size=8),
       key=st.binary(min_size=4, max_size=200).map(lambda b: b"k!" + b),
       peer=peers, refuse=st.booleans())
def test_hostile_headers_never_crash_or_leak_the_key(headers, key, peer, refuse):
    app = Recorder(raise_=RateLimitedError(f"limit for {key!r}", retry_after=1.0)
                   if refuse else None)
    headers = [*headers, (b"x-api-key", key)]
    answer = call(middleware(app, trusted_proxies=["0.0.0.0/0", "::/0"]), headers, peer=peer)
    stripped = key.strip()
    keys = {v.strip() for n, v in headers if n.lower() == b"x-api-key"} - {b""}
    if len(keys) > 1:  # several different keys: refused before the application
        assert app.seen == [] and answer.status == 400
    else:
        identity = app.client
        assert isinstance(identity, str) and identity
        assert answer.status == (429 if refuse else 200)
        assert stripped not in identity.encode()
    assert SAFE_ID.fullmatch(answer.headers[b"x-request-id"].decode("ascii"))
    for text in (answer.body, b"".join(answer.headers.values())):
        assert stripped not in text


def test_the_core_imports_no_web_framework():
    code = ("import sys, aimsec_core; "
            "print(','.join(m for m in ('starlette', 'fastapi', 'uvicorn', 'httpx') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


# -- websocket refusals --------------------------------------------------------------------

def _websocket(app, *, extensions=None, peer_closes=False) -> list[dict]:
    """Drive ``app`` behind the middleware as one websocket connection; the messages sent."""
    from .asgi import scope as make_scope

    sent: list[dict] = []
    incoming = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "x"}]
    if peer_closes:
        incoming[1] = {"type": "websocket.disconnect", "code": 1001}

    async def receive():
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message):
        sent.append(message)

    ws_scope = make_scope(kind="websocket")
    ws_scope["extensions"] = extensions or {}
    asyncio.run(middleware(app)(ws_scope, receive, send))
    return sent


def _ws_app(error, *, accept: bool, close: bool = False):
    async def app(scope, receive, send):
        await receive()
        if accept:
            await send({"type": "websocket.accept"})
            await receive()
        if close:
            await send({"type": "websocket.close", "code": 1000})
        raise error
    return app


@pytest.mark.parametrize("error, code", [
    (RateLimitedError("limit 100 for 'k'", retry_after=3), 1013),
    (AdversarialInputError("suspicion 4.36"), 1008),
    (StoreUnavailableError("redis down at 10.0.0.9"), 1013),
])
def test_websocket_violation_after_accept_closes_with_a_policy_code(error, code):
    # it propagated: the server closed with 1011 (internal error) and logged a crash
    sent = _websocket(_ws_app(error, accept=True))
    assert sent[0] == {"type": "websocket.accept"}
    assert sent[1] == {"type": "websocket.close", "code": code,
                       "reason": refusal_for(error).code}
    assert len(sent) == 2


def test_websocket_violation_before_accept_is_denied():
    error = RateLimitedError("limit 100 for 'k'", retry_after=3)
    # the server answers a close before accept with HTTP 403
    assert _websocket(_ws_app(error, accept=False)) == [
        {"type": "websocket.close", "code": 1013, "reason": "rate_limited"}]
    # with the denial-response extension: the same JSON answer as over HTTP
    sent = _websocket(_ws_app(error, accept=False),
                      extensions={"websocket.http.response": {}})
    start, body = sent
    assert start["type"] == "websocket.http.response.start" and start["status"] == 429
    headers = dict(start["headers"])
    assert headers[b"retry-after"] == b"3" and len(headers[b"x-request-id"]) == 32
    assert body["type"] == "websocket.http.response.body"
    assert json.loads(body["body"])["error"] == "rate_limited"
    assert b"limit 100" not in body["body"]


@pytest.mark.parametrize("options", [{"close": True}, {"peer_closes": True}])
def test_websocket_violation_after_the_close_propagates(options):
    close = options.get("close", False)
    app = _ws_app(RateLimitedError("x"), accept=True, close=close)
    with pytest.raises(RateLimitedError):
        _websocket(app, peer_closes=options.get("peer_closes", False))


def test_websocket_crash_is_not_a_refusal():
    with pytest.raises(RuntimeError):
        _websocket(_ws_app(RuntimeError("boom"), accept=True))


def test_concurrent_requests_through_uvicorn_keep_their_own_identity():
    """Many requests in flight at once over real HTTP (keep-alive connections reused by
    different identities), to an async endpoint and to a sync one run in the threadpool:
    each sees only its own client and request id, however the server interleaves them."""
    app = FastAPI()
    app.add_middleware(AimsecMiddleware, key_secret=SECRET, trusted_proxies=["127.0.0.1"])

    def seen(request: Request) -> dict[str, str]:
        return {"client": current_client(), "request_id": core_context.current_request_id(),
                "scope": request.scope["aimsec"]["client"]}

    @app.get("/async")
    async def in_task(request: Request) -> dict[str, object]:
        before = seen(request)
        for _ in range(3):
            await asyncio.sleep(0)
        return {"views": [before, seen(request), await asyncio.to_thread(seen, request)]}

    @app.get("/sync")
    def in_thread(request: Request) -> dict[str, object]:
        return {"views": [seen(request)]}

    def headers(i: int) -> dict[str, str]:
        ident = {"X-API-Key": f"key-{i}"} if i % 2 else {"X-Forwarded-For": f"198.51.100.{i}"}
        return {**ident, "X-Request-ID": f"req-{i}"}

    def expected(i: int) -> str:
        return key_identity(f"key-{i}", SECRET.encode()) if i % 2 else f"198.51.100.{i}"

    async def main(url: str) -> list[tuple[int, dict]]:
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
            answers = await asyncio.gather(*(
                http.get("/async" if i % 3 else "/sync", headers=headers(i))
                for i in range(160)))
        return [(i, answer.json()) for i, answer in enumerate(answers)]

    with running(app) as url:
        results = asyncio.run(main(url))
    for i, body in results:
        for view in body["views"]:
            assert view == {"client": expected(i), "request_id": f"req-{i}",
                            "scope": expected(i)}


def test_a_guarded_stream_refused_before_its_first_chunk_is_answered_over_http():
    """A StreamingResponse fed by a guarded generator: refused at the first chunk, the
    client got a 200 and a connection cut mid-body; now the refusal."""
    from fastapi.responses import StreamingResponse

    app = FastAPI()
    app.add_middleware(AimsecMiddleware, key_secret=SECRET)

    @app.get("/stream")
    async def stream(fail_at: int) -> StreamingResponse:
        async def chunks():
            for i in range(3):
                if i == fail_at:
                    raise RateLimitedError("120 calls in 60 s; limit 100", retry_after=7)
                yield f"chunk {i}\n".encode()
        return StreamingResponse(chunks(), media_type="text/plain")

    with running(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        refused = http.get("/stream", params={"fail_at": 0})
        whole = http.get("/stream", params={"fail_at": 9})
        with pytest.raises(httpx.RemoteProtocolError):  # mid-stream: nothing else to do
            http.get("/stream", params={"fail_at": 1})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "7"
    assert refused.json()["error"] == "rate_limited" and "limit 100" not in refused.text
    assert whole.status_code == 200 and whole.text == "chunk 0\nchunk 1\nchunk 2\n"
    assert whole.headers["x-request-id"]


def test_a_stream_refused_after_an_empty_first_chunk_is_answered_over_http():
    """A generator that yields ``b""`` first (to flush the response's start) and is
    refused at its next chunk: the empty chunk let the held start go, and the client got a
    connection closed with no answer; nothing had got out, so now the refusal."""
    from fastapi.responses import StreamingResponse

    app = FastAPI()
    app.add_middleware(AimsecMiddleware, key_secret=SECRET)

    @app.get("/stream")
    async def stream(refuse: bool) -> StreamingResponse:
        async def chunks():
            yield b""
            if refuse:
                raise RateLimitedError("120 calls in 60 s; limit 100", retry_after=7)
            yield b"chunk"
        return StreamingResponse(chunks(), media_type="text/plain")

    with running(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        refused = http.get("/stream", params={"refuse": True})
        whole = http.get("/stream", params={"refuse": False})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "7"
    assert refused.json()["error"] == "rate_limited" and "limit 100" not in refused.text
    assert whole.status_code == 200 and whole.text == "chunk"
