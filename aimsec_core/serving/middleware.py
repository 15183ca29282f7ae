"""The ASGI middleware: who is calling, per request, and the HTTP answer to a refused call.

A plain ASGI callable (no framework import), so the identity it sets with
:func:`aimsec_core.client` is a ``contextvars`` value of the task serving the request, seen
by the endpoint, by the tasks it starts and by the worker threads frameworks copy the
context into (``run_in_threadpool``, ``anyio.to_thread.run_sync``, ``asyncio.to_thread``,
background tasks). ``loop.run_in_executor`` and a ``ThreadPoolExecutor`` copy nothing: a
guarded call there is ``"anonymous"`` unless submitted through
``contextvars.copy_context().run``. (Starlette's ``BaseHTTPMiddleware`` runs the endpoint
in another task, where values set by the middleware are lost; this class is not built on
it.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from ..config import resolve
from ..context import ANONYMOUS, client, unidentified
from ..errors import ConfigurationError, SecurityViolation
from ..sinks import CallRecord, Sink, Sinks, deliver
from ..verdict import Finding, Verdict
from .addresses import (Address, Network, TrustedProxies, checked_prefix, client_network,
                        parse_address)
from .keys import key_bytes, key_identity, resolve_secret
from .refusals import Refusal, ambiguous_key_refusal, refusal_for, violation_in
from .request_ids import is_safe_request_id, request_id_context, request_id_from
from .websocket import deny_websocket, serve_websocket

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("aimsec.serving")

#: API keys longer than this are not taken as keys (the peer address identifies instead).
MAX_KEY_BYTES = 4096
#: Default prefix length an IPv6 caller is counted by (one subscriber's /64).
DEFAULT_IPV6_PREFIX = 64
#: Key under which the downstream scope carries ``{"client": ..., "request_id": ...}``.
SCOPE_KEY = "aimsec"
#: The ``model`` of the audit line of a request the middleware refuses itself: no model
#: was called.
AUDIT_MODEL = "aimsec.serving"


class AimsecMiddleware:
    """Sets the client identity and request id for every HTTP and websocket request, and
    answers :class:`~aimsec_core.SecurityViolation` raised below it with a small JSON
    refusal (429, 403, 422 or 503; see :mod:`aimsec_core.serving.refusals`).

    Identity, first that applies:

    1. ``key:<16 hex>`` when the request carries exactly one non-empty ``api_key_header``
       (at most 4,096 bytes): a keyed hash of the key (:mod:`aimsec_core.serving.keys`;
       ``key_secret`` else ``AIMSEC_CLIENT_KEY_SECRET`` else generated per process). Any
       key identifies unless ``api_keys`` lists the accepted ones: then another key is
       ignored (the address identifies), so a caller inventing a fresh key per request
       cannot shed its rate limit or lockout. Checking keys stays the application's job.
       The hash is over the header's bytes; a key listed as text stands for its latin-1
       bytes, as Starlette's ``request.headers`` reads them
       (:func:`~aimsec_core.serving.keys.key_bytes`), so an application hashing the key
       it reads gets the same identity.
       A request with several different keys is answered 400 ``ambiguous_api_key`` and
       never reaches the application: which one the application would read is its
       framework's choice, so a locked-out key sent along with an invented one would be
       served as the one and counted as the other. It leaves one ``rejected`` line in
       ``sinks`` (default: the audit log under ``SECURITY_LOG_PATH``, opened at the first
       such request; where it cannot be, the ``aimsec.serving`` logger says so), model
       :data:`AUDIT_MODEL`, check ``input``, for the address's identity (as
       :meth:`identify` gives it; ``"anonymous"`` without one), under its request id.
    2. The direct peer's address, or, when the peer is one of ``trusted_proxies``
       (addresses or CIDR networks; else ``AIMSEC_TRUSTED_PROXIES``), the right-most
       untrusted hop of ``X-Forwarded-For`` (:mod:`aimsec_core.serving.addresses`). An
       IPv6 address counts as its ``/ipv6_prefix`` network (else ``AIMSEC_IPV6_PREFIX``,
       else 64; 128 keeps single addresses), e.g. ``2001:db8:0:1::/64``: one subscriber
       holds a whole /64 and could use a new address per request (NAT64's
       ``64:ff9b::/96`` counts as the IPv4 address it carries).
    3. ``"anonymous"`` when the server gives no peer address (a Unix socket) and no
       forwarded one is believed (``"unix"`` among ``trusted_proxies`` trusts the proxy
       in front of a Unix socket).

    The application's ``http.response.start`` is passed on with its first body message
    that is not an empty chunk with more to come (the ASGI specification lets a server
    send nothing before the first body message), so a violation
    raised between the two, as when a guarded generator feeds Starlette's
    ``StreamingResponse``, is still answered as a refusal; one raised after the first body
    chunk propagates (the answer is on its way: the server cuts it short); one raised once
    the whole answer is sent (a background task's guarded call) is logged as a warning of
    the ``aimsec.serving`` logger and goes no further.

    ``X-Request-ID`` is kept when safe (:mod:`aimsec_core.serving.request_ids`), else one is
    generated; it is returned in the response's ``X-Request-ID`` header and the refusal
    body. Downstream, ``scope["aimsec"]`` holds ``{"client", "request_id"}``; a second
    ``AimsecMiddleware`` below keeps the request id the first one chose.

    Other scope types (``lifespan``) pass through untouched. A websocket request refused
    before its accept is denied (the JSON answer where the server offers the denial
    extension, else HTTP 403), after it closed with code 1013 or 1008
    (:mod:`aimsec_core.serving.websocket`). With Starlette or FastAPI add it with
    ``app.add_middleware(AimsecMiddleware, ...)``: wrapped around the whole application it
    would sit outside Starlette's error handler, which answers 500 first.

    Raises :class:`ConfigurationError` for an invalid proxy, secret or header name, for
    one header named for two jobs, for ``forwarded_header="Forwarded"`` (RFC 7239's
    syntax is not ``X-Forwarded-For``'s), and for ``sinks`` that are not objects
    with ``record(event)``.
    """

    def __init__(self, app: ASGIApp, *, api_key_header: str | None = "X-API-Key",
                 trusted_proxies: Iterable[str | Address | Network] | str | None = None,
                 key_secret: str | bytes | None = None,
                 forwarded_header: str = "X-Forwarded-For",
                 request_id_header: str = "X-Request-ID",
                 include_model: bool = False, api_keys: Iterable[str | bytes] | None = None,
                 ipv6_prefix: int | None = None, sinks: Iterable[Sink] | None = None) -> None:
        self.app = app
        self.trusted_proxies = TrustedProxies(trusted_proxies)
        self._secret = resolve_secret(key_secret)
        self._key_header = None if api_key_header is None else _header_name(api_key_header)
        self._accepted = _accepted_identities(api_keys, self._secret)
        self.ipv6_prefix = checked_prefix(
            resolve(ipv6_prefix, "AIMSEC_IPV6_PREFIX", DEFAULT_IPV6_PREFIX, int),
            "ipv6_prefix" if ipv6_prefix is not None else "AIMSEC_IPV6_PREFIX")
        self._forwarded_header = _header_name(forwarded_header)
        self._request_id_header = _header_name(request_id_header)
        _check_distinct(self._key_header, self._forwarded_header, self._request_id_header)
        self.include_model = include_model
        self._warned_unix = False
        # where the requests the middleware refuses itself are recorded; the default audit
        # log is opened at the first (an application that never meets one writes nothing)
        self._sinks = Sinks(sinks) if sinks is not None else None

    def __repr__(self) -> str:  # the secret stays out of reprs and tracebacks
        return (f"AimsecMiddleware(app={self.app!r}, trusted_proxies={self.trusted_proxies!r},"
                f" api_key_header={self._key_header!r})")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        keys, forwarded, request_ids = self._read_headers(scope)
        request_id = _outer_request_id(scope) or request_id_from(request_ids)
        id_header = (self._request_id_header, request_id.encode("ascii"))
        if len(_distinct_keys(keys)) > 1:
            refusal = ambiguous_key_refusal(request_id)
            log.debug("refused request %s: %s (HTTP %d)", request_id, refusal.code,
                      refusal.status)
            self._record_ambiguous(scope, keys, forwarded, request_id, refusal)
            if kind == "websocket":
                await deny_websocket(scope, send, refusal, id_header)
            else:
                await _send_refusal(send, refusal, id_header)
            return
        identity = self._identity(scope, keys, forwarded)
        scope = {**scope, SCOPE_KEY: {"client": identity, "request_id": request_id}}
        who = unidentified() if identity == ANONYMOUS else client(identity)
        with who, request_id_context(request_id):
            if kind == "websocket":
                await serve_websocket(
                    self.app, scope, receive, send,
                    lambda error: self._refusal(error, identity, request_id), id_header)
                return
            await self._serve_http(scope, receive, send, identity, request_id)

    def identify(self, scope: Scope) -> tuple[str, str]:
        """``(client identity, request id)`` of the request described by ``scope`` (the
        address's identity for a request carrying several different API keys, which
        the middleware refuses)."""
        keys, forwarded, request_ids = self._read_headers(scope)
        request_id = _outer_request_id(scope) or request_id_from(request_ids)
        return self._identity(scope, keys, forwarded), request_id

    def _record_ambiguous(self, scope: Scope, keys: list[bytes], forwarded: list[bytes],
                          request_id: str, refusal: Refusal) -> None:
        """The ``rejected`` line of a request refused for carrying several different API
        keys (never the keys themselves)."""
        start = time.perf_counter()
        count = len(_distinct_keys(keys))
        header = (self._key_header or b"").decode("ascii")
        finding = Finding("input", f"the request carried {count} different API keys in "
                          f"{header}; expected one", expected=1, received=count)
        verdict = Verdict(allowed=False, mode="enforce", model=AUDIT_MODEL,
                          client=self._identity(scope, keys, forwarded), batch_size=0,
                          findings=(finding,), timestamp=time.time(), request_id=request_id)
        if self._sinks is None:
            try:
                self._sinks = _audit_log()
            except ConfigurationError:  # the answer still goes out: say why no line did
                log.exception("aimsec: request %s was refused (%s) but the audit log "
                              "could not be opened", request_id, refusal.code)
                return
        deliver(self._sinks, CallRecord(verdict, "rejected", time.perf_counter() - start,
                                        error=f"{refusal.code}: {finding.reason}"))

    def _read_headers(self, scope: Scope) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """The values of the API key, forwarded-for and request id headers, in order."""
        keys: list[bytes] = []
        forwarded: list[bytes] = []
        request_ids: list[bytes] = []
        for name, value in _headers(scope):
            if name == self._key_header:
                keys.append(value)
            elif name == self._forwarded_header:
                forwarded.append(value)
            elif name == self._request_id_header:
                request_ids.append(value)
        return keys, forwarded, request_ids

    def _identity(self, scope: Scope, keys: list[bytes], forwarded: list[bytes]) -> str:
        distinct = _distinct_keys(keys)
        if len(distinct) == 1:
            (key,) = distinct
            if len(key) <= MAX_KEY_BYTES:
                identity = key_identity(key, self._secret)
                if self._accepted is None or identity in self._accepted:
                    return identity
        peer = _peer(scope)
        address = self.trusted_proxies.client(peer, forwarded)
        if address is None:
            if forwarded and not self.trusted_proxies.unix and not self._warned_unix:
                self._warned_unix = True
                log.warning(
                    "aimsec: requests whose peer has no IP address (a Unix socket) carry "
                    "X-Forwarded-For, which is not believed: every such caller is "
                    "'anonymous', which the default policy does not throttle. If a proxy "
                    "forwards to this Unix socket, add 'unix' to trusted_proxies")
            return ANONYMOUS
        return str(client_network(address, self.ipv6_prefix))

    async def _serve_http(self, scope: Scope, receive: Receive, send: Send, identity: str,
                          request_id: str) -> None:
        started = False  # whether anything of the response has gone to the server
        finished = False  # whether its last body chunk has
        pending: Message | None = None  # the app's start, held until its first body chunk
        id_header = (self._request_id_header, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            nonlocal started, finished, pending
            if message.get("type") == "http.response.start" and not started:
                headers = list(message.get("headers") or ())
                if not any(name.lower() == id_header[0] for name, _ in headers):
                    headers.append(id_header)
                pending = {**message, "headers": headers}
                return
            if pending is not None and _carries_nothing(message):
                return  # an empty chunk with more to come: nothing has got out yet
            started = True
            if pending is not None:
                held, pending = pending, None
                await send(held)
            await send(message)
            if message.get("type") == "http.response.body" and not message.get("more_body"):
                finished = True

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException as raised:
            error = violation_in(raised)
            if error is not None and finished:
                # raised after the whole answer went out (a background task's guarded
                # call): the guard has audited the refusal and the client has its answer,
                # so the server is not handed an error to log as the application's crash
                log.warning("aimsec: request %s from %s: a guarded call after the response "
                            "was sent was refused (%s: %s)", request_id, identity,
                            type(error).__name__, error)
                return
            if error is None or started:  # started: nothing left to say the refusal with
                raise
            await _send_refusal(send, self._refusal(error, identity, request_id), id_header)
            return
        if pending is not None:  # a start with no body after it: the server's to judge
            await send(pending)

    def _refusal(self, error: SecurityViolation, identity: str, request_id: str) -> Refusal:
        refusal = refusal_for(error, request_id=request_id, include_model=self.include_model)
        log.debug("refused request %s from %s: %s (HTTP %d)", request_id, identity,
                  refusal.code, refusal.status)
        return refusal


def _audit_log() -> Sinks:
    from ..audit import AuditLog

    return Sinks([AuditLog()])


def _accepted_identities(keys: Iterable[str | bytes] | None,
                         secret: bytes) -> frozenset[str] | None:
    if keys is None:
        return None
    if isinstance(keys, (str, bytes)):
        raise ConfigurationError("api_keys must be a collection of keys, not one string; "
                                 "expected e.g. ['key-1', 'key-2']")
    accepted = set()
    for key in keys:
        raw = key_bytes(key) if isinstance(key, (str, bytes)) else None
        if not isinstance(raw, bytes) or not raw.strip() or len(raw.strip()) > MAX_KEY_BYTES:
            raise ConfigurationError(
                f"api_keys holds an unusable key (a {type(key).__name__}); expected "
                f"non-empty strings of at most {MAX_KEY_BYTES} bytes")
        accepted.add(key_identity(raw.strip(), secret))
    return frozenset(accepted)


async def _send_refusal(send: Send, refusal: Refusal, id_header: tuple[bytes, bytes]) -> None:
    await send({"type": "http.response.start", "status": refusal.status,
                "headers": [*refusal.headers, id_header]})
    await send({"type": "http.response.body", "body": refusal.body})


def _carries_nothing(message: Message) -> bool:
    """Whether ``message`` is an empty body chunk with more to come (a streamed response's
    ``b""``, sent to flush its start): one the server would write nothing for."""
    return message.get("type") == "http.response.body" and not message.get("body") \
        and bool(message.get("more_body"))


def _distinct_keys(keys: list[bytes]) -> set[bytes]:
    return {key.strip() for key in keys} - {b""}


def _outer_request_id(scope: Scope) -> str | None:
    """The request id an enclosing ``AimsecMiddleware`` already chose (the middleware added
    twice, or around a mounted application that adds it too): one request, one id."""
    outer = scope.get(SCOPE_KEY)
    value = outer.get("request_id") if isinstance(outer, dict) else None
    return value if is_safe_request_id(value) else None


def _headers(scope: Scope) -> Iterable[tuple[bytes, bytes]]:
    for pair in scope.get("headers") or ():
        try:
            name, value = pair
        except (TypeError, ValueError):
            continue
        if isinstance(name, bytes) and isinstance(value, bytes):
            yield name.lower(), value


def _peer(scope: Scope) -> Address | None:
    peer = scope.get("client")
    if not peer:
        return None
    try:
        host = peer[0]
    except (TypeError, IndexError, KeyError):
        return None
    return parse_address(host)


def _check_distinct(key: bytes | None, forwarded: bytes, request_id: bytes) -> None:
    names = [n for n in (key, forwarded, request_id) if n is not None]
    if len(set(names)) < len(names):
        raise ConfigurationError(
            "api_key_header, forwarded_header and request_id_header name the same header "
            f"twice ({[n.decode() for n in names]}); each needs its own")
    if forwarded == b"forwarded":
        raise ConfigurationError(
            "forwarded_header 'Forwarded' (RFC 7239: 'for=192.0.2.7;proto=https') is not "
            "read: its syntax differs from X-Forwarded-For's list of addresses. Have the "
            "proxy set X-Forwarded-For")


def _header_name(name: str) -> bytes:
    try:
        encoded = name.strip().lower().encode("ascii")
    except (AttributeError, UnicodeEncodeError):
        encoded = b""
    if not encoded or any(c in encoded for c in b" \t:,;\"()/<>?@[\\]{}="):
        raise ConfigurationError(
            f"header name {name!r} is not a valid HTTP header name; expected e.g. "
            "'X-API-Key'")
    return encoded
